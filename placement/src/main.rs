//! `dapr-placement`: the actor placement service of the dapr-rs control
//! plane. Raft (openraft) replicates which sidecars host which actor types;
//! the leader streams per-namespace placement tables to every sidecar with
//! Dapr's lock/update/unlock protocol.

mod app;
mod grpc;
mod http;
mod leader;
mod membership;
mod metrics;
mod options;
mod raft;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::options::Options;

fn init_logging(opts: &Options) -> Result<(), String> {
    let level = opts.log_level.to_ascii_lowercase();
    // openraft is chatty at info; keep it at warn unless debugging.
    let directives = if level == "debug" || level == "trace" {
        level.clone()
    } else {
        format!("{level},openraft=warn")
    };
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let res = if opts.log_as_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|e| e.to_string())
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
