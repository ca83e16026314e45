//! Everything daprd needs at start, in one call: metrics (registry and the
//! `--metrics-port` server), the tracer, and the layers for its servers.

use std::net::{IpAddr, SocketAddr};

use crate::{
    config::{ConfigError, ObservabilityConfig},
    layer::{ApiLog, ObservabilityLayer, Protocol},
    metrics::{self, MetricsError},
    trace::{self, TraceError},
};

/// daprd's flags that concern observability.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub app_id: &'a str,
    pub namespace: &'a str,
    pub enable_metrics: bool,
    pub metrics_port: u16,
    pub metrics_listen_address: &'a str,
    pub enable_api_logging: bool,
    /// The Configuration's unparsed sections (`metric(s)`, `tracing`,
    /// `logging`), if a Configuration was given.
    pub configuration: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("invalid --metrics-listen-address '{0}'")]
    ListenAddress(String),
}

/// The layers for daprd's HTTP API, gRPC API and internal gRPC servers.
#[derive(Clone)]
pub struct SidecarObservability {
    pub http: ObservabilityLayer,
    pub grpc: ObservabilityLayer,
    pub internal: ObservabilityLayer,
}

/// Installs metrics and tracing for the process and starts the metrics
/// server (it runs until the process exits). Call once, inside the runtime,
/// before components load, so their load counters are recorded.
pub async fn start(s: Settings<'_>) -> Result<SidecarObservability, ObservabilityError> {
    let empty = serde_json::Map::new();
    let cfg = ObservabilityConfig::from_spec(s.configuration.unwrap_or(&empty))?;
    if s.enable_metrics
        && let Some(m) = metrics::init(s.app_id, s.namespace, &cfg.metrics)?
    {
        let ip: IpAddr = if s.metrics_listen_address.is_empty() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            s.metrics_listen_address
                .parse()
                .map_err(|_| ObservabilityError::ListenAddress(s.metrics_listen_address.into()))?
        };
        let render: metrics::server::Render = std::sync::Arc::new(move || m.render());
        // A taken port must not stop the sidecar (several daprd on one
        // machine all default to 9090): metrics are then only unserved.
        if let Err(e) = metrics::server::serve(
            SocketAddr::new(ip, s.metrics_port),
            render,
            std::future::pending(),
        )
        .await
        {
            tracing::error!("metrics server not started: {e}");
        }
    }
    trace::init(cfg.tracing.as_ref(), s.app_id)?;
    let logging = cfg.logging.api_logging.unwrap_or_default();
    let api_log = ApiLog {
        // The flag turns API logging on; the Configuration's default applies
        // otherwise.
        enabled: s.enable_api_logging || logging.enabled,
        obfuscate_urls: logging.obfuscate_urls,
        omit_health_checks: logging.omit_health_checks,
    };
    Ok(SidecarObservability {
        http: ObservabilityLayer::new(Protocol::Http, api_log),
        grpc: ObservabilityLayer::new(Protocol::Grpc, api_log),
        internal: ObservabilityLayer::internal(),
    })
}
