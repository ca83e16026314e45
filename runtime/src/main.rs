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
        Ok(()) => match daprd::kubernetes::restart_requested() {
            // Kubernetes mode: a Configuration/Resiliency change restarts
            // daprd in place once the old instance has drained.
            Some(reason) => {
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
                tracing::info!(%reason, "re-executing daprd");
                let e = daprd::kubernetes::exec_self();
                eprintln!("daprd: in-place restart failed: {e}");
                std::process::ExitCode::FAILURE
            }
            None => std::process::ExitCode::SUCCESS,
        },
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("daprd: fatal: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
