//! `dapr-placement`: the actor placement service of the dapr-rs control plane.
//! Not implemented yet beyond its command line (tracked by the placement issue).

use clap::Parser;

/// Raft-replicated service telling sidecars which host owns which actor.
#[derive(Parser, Debug)]
#[command(name = "dapr-placement", version, about)]
struct Args {
    /// Raft node id.
    #[arg(long, default_value = "dapr-placement-0")]
    id: String,
    /// Raft peers as `id=host:port,...`.
    #[arg(long, default_value = "dapr-placement-0=127.0.0.1:8201")]
    initial_cluster: String,
    /// gRPC port sidecars connect to.
    #[arg(long, default_value_t = 50005)]
    port: u16,
    /// Port of the healthz endpoint.
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.as_str())
        .init();
    anyhow::bail!("dapr-placement is not implemented yet in this build (args: {args:?})")
}
