//! `dapr-injector`: the sidecar injector webhook of the dapr-rs control plane.
//! Not implemented yet beyond its command line (tracked by the Kubernetes issue).

use clap::Parser;

/// Mutating admission webhook that adds the `daprd` container to annotated pods.
#[derive(Parser, Debug)]
#[command(name = "dapr-injector", version, about)]
struct Args {
    /// Port of the TLS webhook.
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Port of the healthz endpoint.
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.as_str())
        .init();
    anyhow::bail!("dapr-injector is not implemented yet in this build (args: {args:?})")
}
