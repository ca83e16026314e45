//! `dapr-injector` binary.

use std::process::ExitCode;

use clap::Parser;
use dapr_injector::{app, cli::Args};

fn main() -> ExitCode {
    // ring is the only TLS crypto provider of dapr-rs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_as_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
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
