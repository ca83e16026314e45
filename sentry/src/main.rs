//! `dapr-sentry`: the certificate authority of the dapr-rs control plane.
//! Not implemented yet beyond its command line (tracked by the Sentry issue).

use clap::Parser;

/// Certificate authority issuing SPIFFE workload certificates to sidecars.
#[derive(Parser, Debug)]
#[command(name = "dapr-sentry", version, about)]
struct Args {
    /// gRPC port of the CA service.
    #[arg(long, default_value_t = 50001)]
    port: u16,
    /// Directory holding ca.crt, issuer.crt and issuer.key.
    #[arg(long, default_value = "/var/run/secrets/dapr.io/credentials")]
    issuer_credentials: String,
    /// Trust domain of issued certificates.
    #[arg(long, default_value = "localhost")]
    trust_domain: String,
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
    anyhow::bail!("dapr-sentry is not implemented yet in this build (args: {args:?})")
}
