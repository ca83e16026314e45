//! Dapr's injector metrics, in Prometheus text format:
//! `dapr_injector_sidecar_injection_requests_total`,
//! `dapr_injector_sidecar_injection_succeeded_total{app_id}` and
//! `dapr_injector_sidecar_injection_failed_total{app_id,reason}`.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Counter,
    succeeded: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let succeeded = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        registry.register(
            "dapr_injector_sidecar_injection_requests",
            "The total number of sidecar injection requests",
            requests.clone(),
        );
        registry.register(
            "dapr_injector_sidecar_injection_succeeded",
            "The total number of successful sidecar injections",
            succeeded.clone(),
        );
        registry.register(
            "dapr_injector_sidecar_injection_failed",
            "The total number of failed sidecar injections",
            failed.clone(),
        );
        Self {
            registry,
            requests,
            succeeded,
            failed,
        }
    }

    pub fn request(&self) {
        self.requests.inc();
    }

    pub fn succeeded(&self, app_id: &str) {
        self.succeeded
            .get_or_create(&vec![("app_id".to_owned(), app_id.to_owned())])
            .inc();
    }

    pub fn failed(&self, app_id: &str, reason: &str) {
        self.failed
            .get_or_create(&vec![
                ("app_id".to_owned(), app_id.to_owned()),
                ("reason".to_owned(), reason.to_owned()),
            ])
            .inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // Served as text format 0.0.4, which names counters with `_total`.
        dapr_observability::metrics::openmetrics_to_text(&out)
    }
}
