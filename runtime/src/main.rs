//! `daprd`: the dapr-rs sidecar.

mod api;
mod components;
mod error;
mod hotreload;
mod options;
mod resources;
mod run;
mod sidecar;
mod state;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let opts = options::Options::parse();
    if let Err(e) = run::init_logging(&opts) {
        eprintln!("daprd: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daprd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("daprd: fatal: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
