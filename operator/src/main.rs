//! `dapr-operator`: the Kubernetes operator of the dapr-rs control plane.

use std::process::ExitCode;

use clap::Parser;
use dapr_operator::cli::Args;

/// `--log-level` / `--log-as-json` with Dapr's JSON fields (scope
/// `dapr.operator`).
fn init_logging(args: &Args) -> Result<(), dapr_observability::logging::LogError> {
    dapr_observability::logging::init_control_plane(
        "dapr.operator",
        &args.log_level,
        args.log_as_json,
        "",
    )
}

async fn run(args: Args) -> Result<(), dapr_operator::StartError> {
    let client = dapr_operator::kube_client(args.kubeconfig.as_deref()).await?;
    let running = dapr_operator::start(args, client).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.abort();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    // ring is the only TLS crypto provider of dapr-rs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("dapr-operator: {e}");
        return ExitCode::FAILURE;
    }
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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator failed");
            ExitCode::FAILURE
        }
    }
}
