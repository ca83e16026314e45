//! Command line, named and defaulted as Dapr's `sentry` binary.

use clap::{ArgAction, Parser, ValueEnum};

/// Runtime mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Standalone,
    Kubernetes,
}

/// Certificate authority issuing SPIFFE workload certificates to Dapr
/// sidecars and control-plane services.
#[derive(Parser, Debug, Clone)]
#[command(name = "dapr-sentry", version, about)]
pub struct Args {
    /// gRPC port of the CA service.
    #[arg(long, default_value_t = 50001)]
    pub port: u16,
    /// Address the CA service listens on (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub listen_address: String,
    /// Directory holding the root certificate, issuer certificate and issuer key.
    #[arg(long, default_value = "/var/run/secrets/dapr.io/credentials")]
    pub issuer_credentials: String,
    /// File name (in --issuer-credentials) or absolute path of the root certificate(s).
    #[arg(long, default_value = "ca.crt")]
    pub issuer_ca_filename: String,
    /// File name (in --issuer-credentials) or absolute path of the issuer certificate.
    #[arg(long, default_value = "issuer.crt")]
    pub issuer_certificate_filename: String,
    /// File name (in --issuer-credentials) or absolute path of the issuer private key.
    #[arg(long, default_value = "issuer.key")]
    pub issuer_key_filename: String,
    /// Trust domain of the control plane (Sentry's own identity and the
    /// trust domain given to control-plane services).
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// Port of the healthz endpoint.
    #[arg(long, default_value_t = 8080)]
    pub healthz_port: u16,
    /// Address the healthz endpoint listens on (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub healthz_listen_address: String,
    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the metrics endpoint listens on (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub metrics_listen_address: String,
    /// Serve Prometheus metrics.
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1, default_missing_value = "true")]
    pub enable_metrics: bool,
    /// Log level: debug, info, warn, error (fatal is treated as error).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long, action = ArgAction::Set, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Runtime mode.
    #[arg(long, value_enum, default_value_t = Mode::Standalone)]
    pub mode: Mode,
    /// Standalone: path to a Configuration YAML file. Kubernetes: name of a
    /// Configuration object in the control-plane namespace.
    #[arg(long, default_value = "daprsystem")]
    pub config: String,
    /// Kubeconfig file (Kubernetes mode, outside a cluster). Defaults to the
    /// in-cluster configuration or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// How often the issuer credentials are checked for changes (Go
    /// duration). In Kubernetes mode the trust-bundle Secret is polled at
    /// max(this, 5s).
    #[arg(long, default_value = "1s")]
    pub credentials_poll_interval: String,
}
