//! `dapr_runtime_*`: service invocation, component loading, mTLS, ACL.

use prometheus::{HistogramVec, IntCounterVec};

use super::{Factory, MetricsError};

pub struct ServiceMetrics {
    req_sent: IntCounterVec,
    req_recv: IntCounterVec,
    res_sent: IntCounterVec,
    res_recv: IntCounterVec,
    res_recv_latency: HistogramVec,
    component_loaded: IntCounterVec,
    component_init: IntCounterVec,
    component_init_fail: IntCounterVec,
    mtls_init: IntCounterVec,
    mtls_init_fail: IntCounterVec,
    cert_rotated: IntCounterVec,
    cert_rotated_fail: IntCounterVec,
    acl: [IntCounterVec; 4],
}

/// Which access-control rule decided a call.
#[derive(Debug, Clone, Copy)]
pub enum AclDecision {
    AppAllowed,
    GlobalAllowed,
    AppBlocked,
    GlobalBlocked,
}

impl ServiceMetrics {
    pub(crate) fn new(f: &Factory<'_>, latency: &[f64]) -> Result<Self, MetricsError> {
        // As in Dapr, `app_id` of these is the caller's, not this sidecar's.
        let acl = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(
                prometheus::Opts::new(name, help),
                &["app_id", "trustDomain", "namespace"],
            )?;
            f.registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            req_sent: f.counter(
                "dapr_runtime_service_invocation_req_sent_total",
                "The number of requests sent via service invocation.",
                &["dst_app_id", "type"],
            )?,
            req_recv: f.counter(
                "dapr_runtime_service_invocation_req_recv_total",
                "The number of requests received via service invocation.",
                &["src_app_id"],
            )?,
            res_sent: f.counter(
                "dapr_runtime_service_invocation_res_sent_total",
                "The number of responses sent via service invocation.",
                &["dst_app_id", "status"],
            )?,
            res_recv: f.counter(
                "dapr_runtime_service_invocation_res_recv_total",
                "The number of responses received via service invocation.",
                &["src_app_id", "status", "type"],
            )?,
            res_recv_latency: f.histogram(
                "dapr_runtime_service_invocation_res_recv_latency_ms",
                "The latency of service invocation response.",
                &["src_app_id", "status"],
                latency,
            )?,
            component_loaded: f.counter(
                "dapr_runtime_component_loaded",
                "The number of successfully loaded components.",
                &[],
            )?,
            component_init: f.counter(
                "dapr_runtime_component_init_total",
                "The number of initialized components.",
                &["component"],
            )?,
            component_init_fail: f.counter(
                "dapr_runtime_component_init_fail_total",
                "The number of component initialization failures.",
                &["component", "reason", "componentName"],
            )?,
            mtls_init: f.counter(
                "dapr_runtime_mtls_init_total",
                "The number of successful mTLS authenticator initialization.",
                &[],
            )?,
            mtls_init_fail: f.counter(
                "dapr_runtime_mtls_init_fail_total",
                "The number of mTLS authenticator init failures.",
                &["reason"],
            )?,
            cert_rotated: f.counter(
                "dapr_runtime_mtls_workload_cert_rotated_total",
                "The number of the successful workload certificate rotations.",
                &[],
            )?,
            cert_rotated_fail: f.counter(
                "dapr_runtime_mtls_workload_cert_rotated_fail_total",
                "The number of the failed workload certificate rotations.",
                &["reason"],
            )?,
            acl: [
                acl(
                    "dapr_runtime_acl_app_policy_action_allowed_total",
                    "The number of requests allowed by the app specific action specified in the access control policy.",
                )?,
                acl(
                    "dapr_runtime_acl_global_policy_action_allowed_total",
                    "The number of requests allowed by the global action specified in the access control policy.",
                )?,
                acl(
                    "dapr_runtime_acl_app_policy_action_blocked_total",
                    "The number of requests blocked by the app specific action specified in the access control policy.",
                )?,
                acl(
                    "dapr_runtime_acl_global_policy_action_blocked_total",
                    "The number of requests blocked by the global action specified in the access control policy.",
                )?,
            ],
        })
    }

    /// The caller's sidecar sent an invocation to `dst` (`streaming`: a
    /// streamed HTTP body or a gRPC proxy stream).
    pub fn request_sent(&self, dst: &str, streaming: bool) {
        self.req_sent
            .with_label_values(&[dst, if streaming { "streaming" } else { "unary" }])
            .inc();
    }

    /// The caller's sidecar got the response of `dst` (`status`: the HTTP
    /// status, or the gRPC code for gRPC apps).
    pub fn response_received(&self, dst: &str, status: i32, streaming: bool, latency_ms: f64) {
        let status = status.to_string();
        self.res_recv
            .with_label_values(&[
                dst,
                status.as_str(),
                if streaming { "streaming" } else { "unary" },
            ])
            .inc();
        if !streaming {
            self.res_recv_latency
                .with_label_values(&[dst, status.as_str()])
                .observe(latency_ms);
        }
    }

    /// The callee's sidecar received an invocation from `src`.
    pub fn request_received(&self, src: &str) {
        self.req_recv.with_label_values(&[src]).inc();
    }

    /// The callee's sidecar answered `src`.
    pub fn response_sent(&self, src: &str, status: i32) {
        self.res_sent
            .with_label_values(&[src, status.to_string().as_str()])
            .inc();
    }

    /// A component initialised (`kind`: its type, e.g. `state.redis`).
    pub fn component_initialized(&self, kind: &str) {
        self.component_init.with_label_values(&[kind]).inc();
        self.component_loaded.with_label_values::<&str>(&[]).inc();
    }

    pub fn component_init_failed(&self, kind: &str, reason: &str, name: &str) {
        self.component_init_fail
            .with_label_values(&[kind, reason, name])
            .inc();
    }

    pub fn mtls_initialized(&self) {
        self.mtls_init.with_label_values::<&str>(&[]).inc();
    }

    pub fn mtls_init_failed(&self, reason: &str) {
        self.mtls_init_fail.with_label_values(&[reason]).inc();
    }

    pub fn cert_rotated(&self) {
        self.cert_rotated.with_label_values::<&str>(&[]).inc();
    }

    pub fn cert_rotation_failed(&self, reason: &str) {
        self.cert_rotated_fail.with_label_values(&[reason]).inc();
    }

    /// A call from `app_id` (in `trust_domain`/`namespace`) decided by
    /// access control.
    pub fn acl(&self, decision: AclDecision, app_id: &str, trust_domain: &str, namespace: &str) {
        self.acl[decision as usize]
            .with_label_values(&[app_id, trust_domain, namespace])
            .inc();
    }
}
