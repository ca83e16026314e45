//! daprd's Prometheus metrics with Dapr's names, labels and buckets.
//!
//! Dapr records OpenCensus views named like `http/server/request_count` and
//! exports them as `dapr_<view with / and . as _>`: counters keep their view
//! names (no `_total` appended), histograms are in milliseconds (latency) or
//! bytes (sizes). The sidecar installs one process-wide instance with
//! [`init`]; recording before (or without) it is a no-op, so building
//! blocks can call [`get`] without plumbing.

pub mod actor;
pub mod component;
mod grpc;
mod http;
mod path;
pub mod server;
mod service;

use std::sync::{Arc, OnceLock};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub use actor::ActorMetrics;
pub use component::ComponentMetrics;
pub use grpc::GrpcMetrics;
pub use http::HttpMetrics;
pub use path::PathLabeler;
pub use service::{AclDecision, ServiceMetrics};

use crate::config::MetricSpec;

/// Dapr's latency buckets (milliseconds), used unless the Configuration sets
/// `latencyDistributionBuckets`.
pub const DEFAULT_LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0,
    100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1_000.0, 2_000.0,
    5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];

/// Dapr's size buckets (bytes): 1 KiB … 4 GiB.
pub const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics already initialised in this process")]
    AlreadyInitialised,
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("invalid metrics configuration: {0}")]
    Config(String),
}

/// Every metric family of a sidecar, in one registry.
pub struct DaprdMetrics {
    pub registry: Registry,
    pub app_id: String,
    pub namespace: String,
    pub http: HttpMetrics,
    pub grpc: GrpcMetrics,
    pub service: ServiceMetrics,
    pub component: ComponentMetrics,
    pub actor: ActorMetrics,
    /// `dapr_error_code_total`, only with `recordErrorCodes: true`.
    pub error_codes: Option<IntCounterVec>,
}

static GLOBAL: OnceLock<Arc<DaprdMetrics>> = OnceLock::new();

/// The process-wide sidecar metrics, when enabled.
pub fn get() -> Option<&'static DaprdMetrics> {
    GLOBAL.get().map(|m| m.as_ref())
}

/// Builds the sidecar's metrics from the Configuration `metrics` block and
/// installs them for the process. `spec.enabled == Some(false)` installs
/// nothing and returns `None`.
pub fn init(
    app_id: &str,
    namespace: &str,
    spec: &MetricSpec,
) -> Result<Option<Arc<DaprdMetrics>>, MetricsError> {
    if spec.enabled == Some(false) {
        return Ok(None);
    }
    let m = Arc::new(DaprdMetrics::new(app_id, namespace, spec)?);
    GLOBAL
        .set(m.clone())
        .map_err(|_| MetricsError::AlreadyInitialised)?;
    Ok(Some(m))
}

impl DaprdMetrics {
    pub fn new(app_id: &str, namespace: &str, spec: &MetricSpec) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let latency = spec.latency_buckets()?;
        let f = Factory {
            registry: &registry,
            app_id,
        };
        let http = HttpMetrics::new(&f, &latency, spec)?;
        let grpc = GrpcMetrics::new(&f, &latency)?;
        let service = ServiceMetrics::new(&f, &latency)?;
        let component = ComponentMetrics::new(&f, &latency, namespace)?;
        let actor = ActorMetrics::new(&f)?;
        let error_codes = if spec.record_error_codes == Some(true) {
            Some(f.counter(
                "dapr_error_code_total",
                "Total number of times an error with a specific error code was encountered.",
                &["error_code", "category"],
            )?)
        } else {
            None
        };
        Ok(Self {
            registry,
            app_id: app_id.to_owned(),
            namespace: namespace.to_owned(),
            http,
            grpc,
            service,
            component,
            actor,
            error_codes,
        })
    }

    /// Counts an error code (`ERR_STATE_GET`, ...) when `recordErrorCodes` is on.
    pub fn record_error_code(&self, code: &str) {
        if let Some(c) = &self.error_codes {
            c.with_label_values(&[code, error_category(code)]).inc();
        }
    }

    /// The registry in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// Records a component's initialisation (`dapr_runtime_component_loaded`,
/// `_init_total`, or `_init_fail_total` with reason `init`), if metrics are on.
pub fn record_component_init(kind: &str, name: &str, ok: bool) {
    if let Some(m) = get() {
        if ok {
            m.service.component_initialized(kind);
        } else {
            m.service.component_init_failed(kind, "init", name);
        }
    }
}

/// An error answered with Dapr code `code` (`dapr_error_code_total`, only
/// with the Configuration's `metrics.recordErrorCodes: true`).
pub fn error_code(code: &str) {
    if let Some(m) = get() {
        m.record_error_code(code);
    }
}

/// The mTLS authenticator started (`reason` of a failure otherwise).
pub fn mtls_init(result: Result<(), &str>) {
    if let Some(m) = get() {
        match result {
            Ok(()) => m.service.mtls_initialized(),
            Err(reason) => m.service.mtls_init_failed(reason),
        }
    }
}

/// A workload certificate renewal succeeded (or failed with `reason`).
pub fn cert_rotation(result: Result<(), &str>) {
    if let Some(m) = get() {
        match result {
            Ok(()) => m.service.cert_rotated(),
            Err(reason) => m.service.cert_rotation_failed(reason),
        }
    }
}

/// An access-control decision on a call from `app_id`.
pub fn acl_decision(decision: AclDecision, app_id: &str, trust_domain: &str, namespace: &str) {
    if let Some(m) = get() {
        m.service.acl(decision, app_id, trust_domain, namespace);
    }
}

/// An actor reminder or timer tick was delivered (or failed to be).
pub fn actor_fired(actor_type: &str, timer: bool, success: bool) {
    if let Some(m) = get() {
        m.actor.fired(actor_type, timer, success);
    }
}

/// An actor activation ended (`why`: `idle`, `rebalanced`, ...).
pub fn actor_deactivated(actor_type: &str, ok: bool, why: &str) {
    if let Some(m) = get() {
        m.actor.deactivated(actor_type, ok, why == "rebalanced");
    }
}

/// Caller side of service invocation: a request sent to `dst`.
pub fn invocation_sent(dst: &str) {
    if let Some(m) = get() {
        m.service.request_sent(dst, false);
    }
}

/// Caller side: `dst` answered with `status` (HTTP status) after the time
/// since `start`.
pub fn invocation_response_received(dst: &str, status: i32, start: std::time::Instant) {
    if let Some(m) = get() {
        m.service
            .response_received(dst, status, false, elapsed_ms(start));
    }
}

/// Callee side: a request from `src` arrived / was answered.
pub fn invocation_received(src: &str) {
    if let Some(m) = get() {
        m.service.request_received(src);
    }
}

pub fn invocation_responded(src: &str, status: i32) {
    if let Some(m) = get() {
        m.service.response_sent(src, status);
    }
}

/// A publish to pub/sub `component` (`dapr_component_pubsub_egress_*`).
pub fn pubsub_egress(component: &str, topic: &str, ok: bool, start: std::time::Instant) {
    if let Some(m) = get() {
        m.component
            .pubsub_egress(component, topic, ok, elapsed_ms(start));
    }
}

/// A delivery to the app (`process_status`: success, retry or drop).
pub fn pubsub_ingress(
    component: &str,
    topic: &str,
    process_status: &str,
    start: std::time::Instant,
) {
    if let Some(m) = get() {
        m.component
            .pubsub_ingress(component, topic, process_status, "", elapsed_ms(start));
    }
}

/// Renders any registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families.
    if prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Rewrites an OpenMetrics page (what `prometheus-client` encodes) as the
/// Prometheus text format 0.0.4 the endpoints announce: a counter family
/// `x` whose samples are `x_total` is described as `x_total`, and the
/// OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub fn openmetrics_to_text(page: &str) -> String {
    let counters: std::collections::HashSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Dapr's error-code categories, from the code's building block.
fn error_category(code: &str) -> &'static str {
    let c = code.strip_prefix("ERR_").unwrap_or(code);
    for (prefix, cat) in [
        ("STATE", "state"),
        ("PUBSUB", "pubsub"),
        ("PUBLISH", "pubsub"),
        ("SECRET", "secret"),
        ("CONFIGURATION", "configuration"),
        ("DIRECT_INVOKE", "service-invocation"),
        ("ACTOR", "actor"),
        ("WORKFLOW", "workflow"),
        ("BINDING", "binding"),
        ("INVOKE_OUTPUT_BINDING", "binding"),
        ("LOCK", "lock"),
        ("TRY_LOCK", "lock"),
        ("UNLOCK", "lock"),
        ("CRYPTO", "crypto"),
        ("HEALTH", "health"),
        ("OUTBOUND_HEALTH", "health"),
        ("JOB", "job"),
        ("SCHEDULE", "job"),
        ("CONVERSATION", "conversation"),
        ("INSTANCE_ID", "workflow"),
        ("GET_WORKFLOW", "workflow"),
        ("START_WORKFLOW", "workflow"),
        ("PAUSE_WORKFLOW", "workflow"),
        ("RESUME_WORKFLOW", "workflow"),
        ("TERMINATE_WORKFLOW", "workflow"),
        ("PURGE_WORKFLOW", "workflow"),
        ("RAISE_EVENT_WORKFLOW", "workflow"),
        ("TOPIC", "pubsub"),
        ("BULK_PUBLISH", "pubsub"),
    ] {
        if c.starts_with(prefix) {
            return cat;
        }
    }
    "common"
}

/// Registers families with the sidecar's `app_id` as a constant label.
pub(crate) struct Factory<'a> {
    registry: &'a Registry,
    app_id: &'a str,
}

impl Factory<'_> {
    pub(crate) fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(
            Opts::new(name, help).const_label("app_id", self.app_id),
            labels,
        )?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub(crate) fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help)
                .const_label("app_id", self.app_id)
                .buckets(buckets.to_vec()),
            labels,
        )?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }
}

/// Milliseconds since `start`, as Dapr records latencies.
pub fn elapsed_ms(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_text_format() {
        let page = "# HELP a_b Sent.\n# TYPE a_b counter\na_b_total 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(page),
            "# HELP a_b_total Sent.\n# TYPE a_b_total counter\na_b_total 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn disabled_spec_installs_nothing() {
        let spec = MetricSpec {
            enabled: Some(false),
            ..MetricSpec::default()
        };
        assert!(init("a", "", &spec).unwrap().is_none());
    }

    #[test]
    fn error_codes_only_when_asked() {
        let m = DaprdMetrics::new("a", "", &MetricSpec::default()).unwrap();
        m.record_error_code("ERR_STATE_GET");
        assert!(!m.render().contains("dapr_error_code_total"));
        let spec = MetricSpec {
            record_error_codes: Some(true),
            ..MetricSpec::default()
        };
        let m = DaprdMetrics::new("a", "", &spec).unwrap();
        m.record_error_code("ERR_STATE_GET");
        let out = m.render();
        assert!(
            out.contains(
                r#"dapr_error_code_total{app_id="a",category="state",error_code="ERR_STATE_GET"} 1"#
            ),
            "{out}"
        );
    }

    #[test]
    fn custom_latency_buckets() {
        let spec: MetricSpec =
            serde_json::from_value(serde_json::json!({"latencyDistributionBuckets": [5, 50]}))
                .unwrap();
        let m = DaprdMetrics::new("a", "", &spec).unwrap();
        m.http.server_done("GET", "/v1.0/healthz", 204, 0, 0, 1.0);
        let out = m.render();
        assert!(out.contains(r#"dapr_http_server_latency_bucket{app_id="a",method="GET",path="/v1.0/healthz",status="204",le="5"} 1"#), "{out}");
        assert!(!out.contains(r#"le="13""#));
    }
}
