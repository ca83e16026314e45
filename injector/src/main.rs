//! `dapr-injector` binary.

use std::process::ExitCode;

use clap::Parser;
use dapr_injector::{app, cli::Args};

fn main() -> ExitCode {
    // ring is the only TLS crypto provider of dapr-rs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Err(e) = dapr_observability::logging::init_control_plane(
        "dapr.injector",
        &args.log_level,
        args.log_as_json,
        "",
    ) {
        eprintln!("dapr-injector: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting Dapr sidecar injector"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "dapr-injector failed");
            ExitCode::FAILURE
        }
    }
}
