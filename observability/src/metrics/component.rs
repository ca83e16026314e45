//! `dapr_component_*`: per-component operation counts and latencies.

use prometheus::{HistogramVec, IntCounterVec};

use super::{Factory, MetricsError};

/// A building block whose component calls are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    State,
    Secret,
    Configuration,
    Crypto,
    OutputBinding,
}

struct Pair {
    count: IntCounterVec,
    latency: HistogramVec,
}

pub struct ComponentMetrics {
    namespace: String,
    /// Indexed by [`Block`].
    ops: [Pair; 5],
    input_binding: Pair,
    pubsub_egress: Pair,
    pubsub_ingress: Pair,
}

const OP: &[&str] = &["component", "namespace", "operation", "success"];

impl ComponentMetrics {
    pub(crate) fn new(
        f: &Factory<'_>,
        latency: &[f64],
        namespace: &str,
    ) -> Result<Self, MetricsError> {
        let pair = |view: &str, what: &str, labels: &[&str]| -> Result<Pair, MetricsError> {
            Ok(Pair {
                count: f.counter(
                    &format!("dapr_component_{view}_count"),
                    &format!("The number of operations performed on the {what} component."),
                    labels,
                )?,
                latency: f.histogram(
                    &format!("dapr_component_{view}_latencies"),
                    &format!("The latency of the response from the {what} component."),
                    labels,
                    latency,
                )?,
            })
        };
        Ok(Self {
            namespace: namespace.to_owned(),
            ops: [
                pair("state", "state", OP)?,
                pair("secret", "secret", OP)?,
                pair("configuration", "configuration", OP)?,
                pair("crypto", "crypto", OP)?,
                pair("output_binding", "output binding", OP)?,
            ],
            input_binding: pair(
                "input_binding",
                "input binding",
                &["component", "namespace", "success"],
            )?,
            pubsub_egress: pair(
                "pubsub_egress",
                "pub/sub",
                &["component", "namespace", "success", "topic"],
            )?,
            pubsub_ingress: pair(
                "pubsub_ingress",
                "pub/sub",
                &[
                    "component",
                    "namespace",
                    "process_status",
                    "topic",
                    "status",
                ],
            )?,
        })
    }

    /// One call to a component (`operation`: Dapr's name, e.g. `get`, `set`,
    /// `delete`, `transaction`, `bulk_get` for state; `get`/`bulk_get` for
    /// secrets; `get`/`subscribe`/`unsubscribe` for configuration).
    pub fn record(
        &self,
        block: Block,
        component: &str,
        operation: &str,
        success: bool,
        latency_ms: f64,
    ) {
        let p = &self.ops[block as usize];
        let labels = [
            component,
            self.namespace.as_str(),
            operation,
            bool_str(success),
        ];
        p.count.with_label_values(&labels).inc();
        p.latency.with_label_values(&labels).observe(latency_ms);
    }

    pub fn input_binding(&self, component: &str, success: bool, latency_ms: f64) {
        let labels = [component, self.namespace.as_str(), bool_str(success)];
        self.input_binding.count.with_label_values(&labels).inc();
        self.input_binding
            .latency
            .with_label_values(&labels)
            .observe(latency_ms);
    }

    /// A publish to `component` (`pubsub_egress`).
    pub fn pubsub_egress(&self, component: &str, topic: &str, success: bool, latency_ms: f64) {
        let labels = [component, self.namespace.as_str(), bool_str(success), topic];
        self.pubsub_egress.count.with_label_values(&labels).inc();
        self.pubsub_egress
            .latency
            .with_label_values(&labels)
            .observe(latency_ms);
    }

    /// A delivery to the app (`process_status`: `success`, `retry` or `drop`;
    /// `status`: the app's HTTP status or gRPC code as text).
    pub fn pubsub_ingress(
        &self,
        component: &str,
        topic: &str,
        process_status: &str,
        status: &str,
        latency_ms: f64,
    ) {
        let labels = [
            component,
            self.namespace.as_str(),
            process_status,
            topic,
            status,
        ];
        self.pubsub_ingress.count.with_label_values(&labels).inc();
        self.pubsub_ingress
            .latency
            .with_label_values(&labels)
            .observe(latency_ms);
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}
