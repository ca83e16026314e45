//! Prometheus metrics, named as Dapr's Sentry metrics
//! (`dapr_sentry_cert_sign_request_received_total`, ...).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// Sentry's counters and gauges.
pub struct Metrics {
    registry: Registry,
    pub sign_received: Counter,
    pub sign_success: Counter,
    pub sign_failure: Family<Labels, Counter>,
    pub server_cert_issue_failed: Family<Labels, Counter>,
    pub issuer_changed: Counter,
    pub issuer_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dapr_sentry");
        let sign_received = Counter::default();
        let sign_success = Counter::default();
        let sign_failure = Family::<Labels, Counter>::default();
        let server_cert_issue_failed = Family::<Labels, Counter>::default();
        let issuer_changed = Counter::default();
        let issuer_expiry = Gauge::default();
        registry.register(
            "cert_sign_request_received",
            "The number of CSRs received",
            sign_received.clone(),
        );
        registry.register(
            "cert_sign_success",
            "The number of certificates issuances that have succeeded",
            sign_success.clone(),
        );
        registry.register(
            "cert_sign_failure",
            "The number of errors occurred when signing the CSR",
            sign_failure.clone(),
        );
        registry.register(
            "servercert_issue_failed",
            "The number of server TLS certificate issuance failures",
            server_cert_issue_failed.clone(),
        );
        registry.register(
            "issuercert_changed",
            "The number of issuer cert updates, when issuer cert or key is changed",
            issuer_changed.clone(),
        );
        registry.register(
            "issuercert_expiry_timestamp",
            "The unix timestamp, in seconds, when issuer/root cert will expire",
            issuer_expiry.clone(),
        );
        Self {
            registry,
            sign_received,
            sign_success,
            sign_failure,
            server_cert_issue_failed,
            issuer_changed,
            issuer_expiry,
        }
    }
}

impl Metrics {
    pub fn sign_failed(&self, reason: &str) {
        self.sign_failure
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    pub fn server_cert_failed(&self, reason: &str) {
        self.server_cert_issue_failed
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    pub fn set_issuer_expiry(&self, t: SystemTime) {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.issuer_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // Served as text format 0.0.4, which names counters with `_total`.
        dapr_observability::metrics::openmetrics_to_text(&out)
    }
}
