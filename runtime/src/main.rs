//! `daprd`: the dapr-rs sidecar.

use clap::Parser;
use daprd::{options::Options, run};

fn main() -> std::process::ExitCode {
    let opts = Options::parse();
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
