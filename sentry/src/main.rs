//! `dapr-sentry`: the certificate authority of the dapr-rs control plane.

use std::process::ExitCode;

use clap::Parser;
use dapr_sentry::{cli::Args, server};

fn main() -> ExitCode {
    // ring is the only TLS crypto provider of dapr-rs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    server::init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(args)) {
        Ok(()) => {
            tracing::info!("Sentry shut down gracefully");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Sentry failed");
            ExitCode::FAILURE
        }
    }
}
