//! Prometheus metrics, with Dapr's names.

use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// The placement metrics.
pub struct Metrics {
    registry: Registry,
    runtimes: Family<Labels, Gauge>,
    actor_runtimes: Family<Labels, Gauge>,
    leader: Gauge,
    raft_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dapr_placement");
        let runtimes = Family::<Labels, Gauge>::default();
        let actor_runtimes = Family::<Labels, Gauge>::default();
        let leader = Gauge::default();
        let raft_leader = Gauge::default();
        registry.register("runtimes_total", "Connected sidecars", runtimes.clone());
        registry.register(
            "actor_runtimes_total",
            "Sidecars hosting actors",
            actor_runtimes.clone(),
        );
        registry.register(
            "leader_status",
            "1 when this node serves sidecars",
            leader.clone(),
        );
        registry.register(
            "raft_leader_status",
            "1 when this node is the Raft leader",
            raft_leader.clone(),
        );
        Self {
            registry,
            runtimes,
            actor_runtimes,
            leader,
            raft_leader,
        }
    }
}

fn ns_label(namespace: &str) -> Labels {
    vec![("host_namespace".to_owned(), namespace.to_owned())]
}

impl Metrics {
    /// Connected sidecars of a namespace.
    pub fn set_runtimes(&self, namespace: &str, n: usize) {
        self.runtimes
            .get_or_create(&ns_label(namespace))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Actor hosts per namespace (replaces all values).
    pub fn set_actor_runtimes(&self, counts: &[(String, usize)]) {
        self.actor_runtimes.clear();
        for (ns, n) in counts {
            self.actor_runtimes
                .get_or_create(&ns_label(ns))
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Forget per-namespace values (leadership lost).
    pub fn clear_namespaces(&self) {
        self.runtimes.clear();
        self.actor_runtimes.clear();
    }

    /// Leadership gauges.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.raft_leader.set(i64::from(leader));
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // Served as text format 0.0.4, which names counters with `_total`.
        dapr_observability::metrics::openmetrics_to_text(&out)
    }
}
