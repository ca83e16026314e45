//! `dapr-operator`: the Kubernetes operator of the dapr-rs control plane.

use std::process::ExitCode;

use clap::Parser;
use dapr_operator::cli::Args;

fn init_logging(args: &Args) {
    let level = match args.log_level.as_str() {
        "fatal" => "error",
        l => l,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_as_json {
        builder.json().init();
    } else {
        builder.init();
    }
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
    init_logging(&args);
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
