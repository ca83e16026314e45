//! Command line, named and defaulted as Dapr's `operator` binary where Dapr
//! has the flag.

use clap::{ArgAction, Parser};

/// Serves `dapr.io` resources to sidecars and reconciles `<app-id>-dapr` Services.
#[derive(Parser, Debug, Clone)]
#[command(name = "dapr-operator", version, about)]
pub struct Args {
    /// gRPC port of the `dapr.proto.operator.v1.Operator` API.
    #[arg(long, default_value_t = 6500)]
    pub port: u16,
    /// Address the gRPC API listens on (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub listen_address: String,
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
    /// Name of the Configuration holding the control plane's settings.
    #[arg(long, default_value = "daprsystem")]
    pub config: String,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long, action = ArgAction::Set, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Disable leader election (single replica): the reconciler always runs.
    #[arg(long)]
    pub disable_leader_election: bool,
    /// Do not reconcile `<app-id>-dapr` Services.
    #[arg(long)]
    pub disable_service_reconciler: bool,
    /// Namespace to watch (all when empty).
    #[arg(long, default_value = "")]
    pub watch_namespace: String,
    /// Kubeconfig file (outside a cluster). Defaults to the in-cluster
    /// configuration or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// Namespace of the control plane (the Lease lives there). Defaults to
    /// $NAMESPACE, else `default`.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Identity of this replica in the leader Lease. Defaults to $POD_NAME,
    /// else the host name.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "operator.dapr.io")]
    pub leader_election_id: String,
    /// Trust anchors (PEM) that callers' certificates must chain to.
    #[arg(long, default_value = dapr_security::CONTROL_PLANE_TRUST_ANCHORS_PATH)]
    pub trust_anchors_file: String,
    /// Sentry address (`host:port`) to obtain the operator's certificate from.
    #[arg(
        long,
        env = "DAPR_SENTRY_ADDRESS",
        default_value = "dapr-sentry.dapr-system.svc.cluster.local:443"
    )]
    pub sentry_address: String,
    /// Trust domain of the control plane (the operator's own identity).
    #[arg(
        long,
        env = "DAPR_CONTROLPLANE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub trust_domain: String,
    /// Serve with this certificate chain (PEM) instead of asking Sentry.
    /// Together with --tls-key-file. The files are read once at start.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<String>,
    /// Private key (PEM) for --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<String>,
    /// Port of the Subscription conversion webhook (HTTPS, `POST /convert`),
    /// behind the `dapr-webhook` Service. Served with the operator's
    /// certificate, so not with --disable-mtls.
    #[arg(long, default_value_t = 19443)]
    pub webhook_port: u16,
    /// Address the conversion webhook listens on (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub webhook_listen_address: String,
    /// CRD whose conversion `caBundle` (and `service.namespace`) the operator
    /// keeps current, when its strategy is `Webhook`.
    #[arg(long, default_value = crate::conversion::SUBSCRIPTIONS_CRD)]
    pub conversion_crd: String,
    /// Do not serve the conversion webhook nor touch the CRD.
    #[arg(long)]
    pub disable_conversion_webhook: bool,
    /// Development only: serve the gRPC API in plaintext. Callers are then
    /// unauthenticated; the namespace in each request is trusted and
    /// component scopes are not filtered (daprd filters them itself).
    #[arg(long)]
    pub disable_mtls: bool,
}

impl Args {
    /// Parses a command line (the first item is the program name), for
    /// embedding the operator in tests without depending on clap there.
    pub fn from_argv<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(argv)
    }

    /// `addr:port`, with an empty address meaning all interfaces.
    pub fn socket(address: &str, port: u16) -> String {
        if address.is_empty() {
            format!("0.0.0.0:{port}")
        } else if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        }
    }
}
