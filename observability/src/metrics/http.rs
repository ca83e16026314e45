//! `dapr_http_server_*` and `dapr_http_client_*`.

use prometheus::{HistogramVec, IntCounterVec};

use super::{Factory, MetricsError, PathLabeler, SIZE_BUCKETS};
use crate::config::MetricSpec;

pub struct HttpMetrics {
    server_request_count: IntCounterVec,
    server_latency: HistogramVec,
    server_request_bytes: HistogramVec,
    server_response_bytes: HistogramVec,
    /// Only with `increasedCardinality` (Dapr's legacy mode), as in Dapr.
    server_response_count: Option<IntCounterVec>,
    client_sent_bytes: HistogramVec,
    client_received_bytes: HistogramVec,
    client_latency: HistogramVec,
    client_completed: IntCounterVec,
    pub paths: PathLabeler,
    exclude_verbs: bool,
}

const SERVER: &[&str] = &["method", "path", "status"];

impl HttpMetrics {
    pub(crate) fn new(
        f: &Factory<'_>,
        latency: &[f64],
        spec: &MetricSpec,
    ) -> Result<Self, MetricsError> {
        let paths = PathLabeler::new(spec.increased_cardinality(), spec.path_matching());
        let server_response_count = if paths.legacy() {
            Some(f.counter(
                "dapr_http_server_response_count",
                "The number of HTTP responses",
                SERVER,
            )?)
        } else {
            None
        };
        Ok(Self {
            server_request_count: f.counter(
                "dapr_http_server_request_count",
                "Count of HTTP requests processed by the server.",
                SERVER,
            )?,
            server_latency: f.histogram(
                "dapr_http_server_latency",
                "HTTP request end-to-end latency in server.",
                SERVER,
                latency,
            )?,
            server_request_bytes: f.histogram(
                "dapr_http_server_request_bytes",
                "HTTP request body size if set as ContentLength (uncompressed) in server.",
                &[],
                SIZE_BUCKETS,
            )?,
            server_response_bytes: f.histogram(
                "dapr_http_server_response_bytes",
                "HTTP response body size (uncompressed) in server.",
                &[],
                SIZE_BUCKETS,
            )?,
            server_response_count,
            client_sent_bytes: f.histogram(
                "dapr_http_client_sent_bytes",
                "Total bytes sent in request body (not including headers)",
                SERVER,
                SIZE_BUCKETS,
            )?,
            client_received_bytes: f.histogram(
                "dapr_http_client_received_bytes",
                "Total bytes received in response bodies (not including headers but including error responses with bodies)",
                &[],
                SIZE_BUCKETS,
            )?,
            client_latency: f.histogram(
                "dapr_http_client_roundtrip_latency",
                "Time between first byte of request headers sent to last byte of response received, or terminal error",
                SERVER,
                latency,
            )?,
            client_completed: f.counter(
                "dapr_http_client_completed_count",
                "Count of completed requests",
                SERVER,
            )?,
            paths,
            exclude_verbs: spec.exclude_verbs(),
        })
    }

    fn method<'a>(&self, method: &'a str) -> &'a str {
        if self.exclude_verbs {
            return "";
        }
        match method {
            "GET" | "PUT" | "POST" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" | "CONNECT"
            | "TRACE" => method,
            _ => "UNKNOWN",
        }
    }

    /// One request served by the HTTP API (`path` is the raw URL path).
    pub fn server_done(
        &self,
        method: &str,
        path: &str,
        status: u16,
        req_bytes: u64,
        res_bytes: u64,
        latency_ms: f64,
    ) {
        let path = self.paths.label(path);
        let method = self.method(method);
        let status = status_str(status);
        let labels = [method, path.as_ref(), status.as_ref()];
        self.server_request_count.with_label_values(&labels).inc();
        self.server_latency
            .with_label_values(&labels)
            .observe(latency_ms);
        if let Some(c) = &self.server_response_count {
            c.with_label_values(&labels).inc();
        }
        self.server_request_bytes
            .with_label_values::<&str>(&[])
            .observe(req_bytes as f64);
        self.server_response_bytes
            .with_label_values::<&str>(&[])
            .observe(res_bytes as f64);
    }

    /// One request daprd sent to its app over HTTP (`path`: the URL path).
    pub fn client_done(
        &self,
        method: &str,
        path: &str,
        status: u16,
        sent_bytes: u64,
        received_bytes: u64,
        latency_ms: f64,
    ) {
        let label = self.paths.label(path);
        // Dapr labels app calls with the invoked method: the path without
        // its leading slash.
        let path = label.trim_start_matches('/');
        let method = self.method(method);
        let status = status_str(status);
        let labels = [method, path, status.as_ref()];
        self.client_completed.with_label_values(&labels).inc();
        self.client_latency
            .with_label_values(&labels)
            .observe(latency_ms);
        // Dapr records sent bytes when the request starts, before a status.
        self.client_sent_bytes
            .with_label_values(&[method, path, ""])
            .observe(sent_bytes as f64);
        self.client_received_bytes
            .with_label_values::<&str>(&[])
            .observe(received_bytes as f64);
    }
}

fn status_str(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        204 => "204".into(),
        other => other.to_string().into(),
    }
}
