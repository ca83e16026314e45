//! `dapr-operator`: the Kubernetes operator of the dapr-rs control plane.
//! Not implemented yet beyond its command line (tracked by the Kubernetes issue).

use clap::Parser;

/// Serves `dapr.io` resources to sidecars and reconciles `<app-id>-dapr` Services.
#[derive(Parser, Debug)]
#[command(name = "dapr-operator", version, about)]
struct Args {
    /// Port of the healthz endpoint.
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Name of the Configuration holding the control plane's settings.
    #[arg(long, default_value = "daprsystem")]
    config: String,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Disable leader election (single replica).
    #[arg(long)]
    disable_leader_election: bool,
    /// Namespace to watch (all when empty).
    #[arg(long, default_value = "")]
    watch_namespace: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.as_str())
        .init();
    anyhow::bail!("dapr-operator is not implemented yet in this build (args: {args:?})")
}
