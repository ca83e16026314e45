//! `dapr-placement`: the actor placement service of the dapr-rs control
//! plane. Raft (openraft) replicates which sidecars host which actor types;
//! the leader streams per-namespace placement tables to every sidecar with
//! Dapr's lock/update/unlock protocol.

mod app;
mod grpc;
mod http;
mod leader;
mod membership;
mod memory;
mod metrics;
mod options;
mod raft;
mod serve;

use std::process::ExitCode;

use crate::options::Options;

/// `--log-level` / `--log-as-json` with Dapr's JSON fields (scope
/// `dapr.placement`).
fn init_logging(opts: &Options) -> Result<(), String> {
    // openraft is chatty at info; keep it at warn unless debugging.
    dapr_observability::logging::init_control_plane(
        "dapr.placement",
        &opts.log_level,
        opts.log_as_json,
        "openraft=warn",
    )
    .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let opts = Options::from_env();
    if let Err(e) = init_logging(&opts) {
        eprintln!("dapr-placement: {e}");
        return ExitCode::FAILURE;
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dapr-placement: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(id = %opts.id, port = opts.port, "starting dapr-placement");
    match rt.block_on(app::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dapr-placement failed");
            ExitCode::FAILURE
        }
    }
}
