//! daprd's command line, with Dapr's flag names and defaults.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Standalone,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppProtocol {
    Http,
    Https,
    H2c,
    Grpc,
    Grpcs,
}

/// The Dapr sidecar, rebuilt in Rust.
#[derive(Debug, Clone, Parser)]
#[command(name = "daprd", version, about)]
pub struct Options {
    /// Runtime mode.
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// Unique id of the application.
    #[arg(long, default_value = "")]
    pub app_id: String,
    /// Port the application listens on.
    #[arg(long)]
    pub app_port: Option<u16>,
    /// Protocol of the application channel.
    #[arg(long, value_enum, default_value = "http")]
    pub app_protocol: AppProtocol,
    /// Address the application listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Maximum concurrent calls to the app (-1 = unlimited).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub app_max_concurrency: i64,
    /// HTTP API port.
    #[arg(long, default_value_t = 3500)]
    pub dapr_http_port: u16,
    /// gRPC API port.
    #[arg(long, default_value_t = 50001)]
    pub dapr_grpc_port: u16,
    /// Internal gRPC port for sidecar-to-sidecar calls (random when unset).
    #[arg(long)]
    pub dapr_internal_grpc_port: Option<u16>,
    /// Listen address of the internal gRPC port.
    #[arg(long)]
    pub dapr_internal_grpc_listen_address: Option<String>,
    /// Public port serving only healthz and metadata, without the API token.
    #[arg(long)]
    pub dapr_public_port: Option<u16>,
    /// Listen address of the public port.
    #[arg(long)]
    pub dapr_public_listen_address: Option<String>,
    /// Comma-separated addresses the APIs listen on (all interfaces when empty).
    #[arg(long, default_value = "")]
    pub dapr_listen_addresses: String,
    /// Metrics port.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the metrics server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_listen_address: String,
    /// Enable the metrics endpoint. Boolean flags take Go's forms:
    /// `--flag`, `--flag=true`, `--flag=false` (Dapr's injector uses both).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// Directory of resource (Component, Configuration, ...) files; repeatable.
    #[arg(long = "resources-path", alias = "components-path")]
    pub resources_paths: Vec<PathBuf>,
    /// Path to a Configuration file.
    #[arg(long)]
    pub config: Vec<String>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub log_as_json: bool,
    /// Log every API call at info level.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_api_logging: bool,
    /// Maximum request body size (Kubernetes quantity: 4Mi, 16M, 1024).
    #[arg(long, default_value = "4Mi", value_parser = parse_quantity)]
    pub max_body_size: u64,
    /// Maximum size of request headers.
    #[arg(long, default_value = "4Ki", value_parser = parse_quantity)]
    pub read_buffer_size: u64,
    /// Seconds to wait for in-flight requests on shutdown; negative means
    /// the default (5 s), as in Dapr (the injector passes -1).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub dapr_graceful_shutdown_seconds: i64,
    /// Address (`host:port`) of the operator, which serves resources in
    /// Kubernetes mode.
    #[arg(long)]
    pub control_plane_address: Option<String>,
    /// Address of Sentry.
    #[arg(long)]
    pub sentry_address: Option<String>,
    /// Addresses of the placement service, comma-separated.
    #[arg(long)]
    pub placement_host_address: Option<String>,
    /// Addresses of the scheduler, comma-separated.
    #[arg(long)]
    pub scheduler_host_address: Option<String>,
    /// Trust domain of the control plane.
    #[arg(
        long,
        env = "DAPR_CONTROLPLANE_TRUST_DOMAIN",
        default_value = "localhost"
    )]
    pub control_plane_trust_domain: String,
    /// Namespace of the control plane.
    #[arg(long, env = "DAPR_CONTROLPLANE_NAMESPACE", default_value = "default")]
    pub control_plane_namespace: String,
    /// Enable mTLS between sidecars (certificate from --sentry-address).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_mtls: bool,
    /// PEM trust anchors file, reloaded when it changes (alternative to
    /// the DAPR_TRUST_ANCHORS environment variable).
    #[arg(long)]
    pub trust_anchors_file: Option<PathBuf>,
    /// JWT audiences sent with the certificate signing request, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sentry_request_jwt_audiences: Vec<String>,
    /// Seconds to keep retrying Sentry at start before failing (dapr-rs).
    #[arg(long, env = "DAPR_RS_SENTRY_WAIT_SECONDS", default_value_t = 30)]
    pub sentry_wait_seconds: u64,
    /// Seconds to keep retrying an unreachable operator at start before
    /// failing (dapr-rs; Kubernetes mode).
    #[arg(long, env = "DAPR_RS_OPERATOR_WAIT_SECONDS", default_value_t = 30)]
    pub operator_wait_seconds: u64,
    /// CORS allowed origins, comma-separated (CORS off when empty).
    #[arg(long, default_value = "")]
    pub allowed_origins: String,
    /// Unix domain socket directory for the APIs.
    #[arg(long)]
    pub unix_domain_socket: Option<PathBuf>,
    /// Enable app health checks.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_app_health_check: bool,
    /// Path of the app health check.
    #[arg(long, default_value = "/healthz")]
    pub app_health_check_path: String,
    /// Seconds between app health probes.
    #[arg(long, default_value_t = 5)]
    pub app_health_probe_interval: u64,
    /// Milliseconds before an app health probe times out.
    #[arg(long, default_value_t = 500)]
    pub app_health_probe_timeout: u64,
    /// Failed probes before the app is unhealthy.
    #[arg(long, default_value_t = 3)]
    pub app_health_threshold: u32,
    /// Disable the built-in Kubernetes secret store.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disable_builtin_k8s_secret_store: bool,
    /// Skip these init calls to the app: config, subscribe.
    #[arg(long, value_delimiter = ',')]
    pub disable_init_endpoints: Vec<String>,
    /// Directory for the embedded default's data (SQLite state store).
    #[arg(long, env = "DAPR_RS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Enable the profiling server (accepted for compatibility).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_profiling: bool,
    /// Profiling port (accepted for compatibility).
    #[arg(long, default_value_t = 7777)]
    pub profile_port: u16,
}

impl Options {
    /// The IP addresses the public APIs bind to.
    pub fn listen_addresses(&self) -> Result<Vec<IpAddr>, String> {
        let list: Vec<&str> = self
            .dapr_listen_addresses
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return Ok(vec![IpAddr::from([0, 0, 0, 0])]);
        }
        list.into_iter()
            .map(|a| {
                let a = a.trim_start_matches('[').trim_end_matches(']');
                let a = if a == "localhost" { "127.0.0.1" } else { a };
                a.parse::<IpAddr>()
                    .map_err(|_| format!("invalid --dapr-listen-addresses entry '{a}'"))
            })
            .collect()
    }

    pub fn graceful_shutdown(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.dapr_graceful_shutdown_seconds).unwrap_or(5))
    }

    /// Where the embedded default keeps its data.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".dapr-rs")
        })
    }
}

/// Parses a Kubernetes-style quantity (`4Mi`, `16M`, `1024`) into bytes.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size '{s}': expected e.g. 4Mi, 16M or 1024"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size suffix in '{s}': use Ki, Mi, Gi, k, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_dapr() {
        let o = Options::parse_from(["daprd", "--app-id", "a"]);
        assert_eq!(o.dapr_http_port, 3500);
        assert_eq!(o.dapr_grpc_port, 50001);
        assert_eq!(o.metrics_port, 9090);
        assert_eq!(o.max_body_size, 4 << 20);
        assert_eq!(o.dapr_graceful_shutdown_seconds, 5);
        assert_eq!(o.mode, Mode::Standalone);
        assert!(o.resources_paths.is_empty());
    }

    #[test]
    fn repeatable_resources_path_and_aliases() {
        let o = Options::parse_from([
            "daprd",
            "--resources-path",
            "a",
            "--components-path",
            "b",
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
        ]);
        assert_eq!(o.resources_paths.len(), 2);
        assert_eq!(o.listen_addresses().unwrap().len(), 2);
    }

    #[test]
    fn boolean_flags_take_go_forms() {
        let o = Options::parse_from(["daprd", "--enable-metrics", "--enable-mtls"]);
        assert!(o.enable_metrics && o.enable_mtls && !o.enable_api_logging);
        let o = Options::parse_from([
            "daprd",
            "--enable-metrics=false",
            "--enable-api-logging=true",
            "--log-as-json=false",
        ]);
        assert!(!o.enable_metrics && o.enable_api_logging && !o.log_as_json);
        assert!(Options::try_parse_from(["daprd", "--enable-mtls=maybe"]).is_err());
    }

    #[test]
    fn mtls_flags() {
        let o = Options::parse_from([
            "daprd",
            "--enable-mtls",
            "--sentry-address",
            "127.0.0.1:50001",
            "--trust-anchors-file",
            "/certs/ca.crt",
            "--sentry-request-jwt-audiences",
            "a,b",
            "--control-plane-trust-domain",
            "cluster.local",
        ]);
        assert!(o.enable_mtls);
        assert_eq!(o.sentry_address.as_deref(), Some("127.0.0.1:50001"));
        assert_eq!(o.trust_anchors_file, Some(PathBuf::from("/certs/ca.crt")));
        assert_eq!(o.sentry_request_jwt_audiences, ["a", "b"]);
        assert_eq!(o.control_plane_trust_domain, "cluster.local");
        assert!(!Options::parse_from(["daprd"]).enable_mtls);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4Mi").unwrap(), 4 << 20);
        assert_eq!(parse_quantity("16M").unwrap(), 16_000_000);
        assert_eq!(parse_quantity("1024").unwrap(), 1024);
        assert!(parse_quantity("4Xi").is_err());
        assert!(parse_quantity("Mi").is_err());
    }
}
