//! The healthz server (with `GET /placement/state` when metadata is
//! enabled) and the metrics server.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::{metrics::Metrics, raft::store::SmData};

/// One host in `/placement/state` (Dapr's JSON field names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    name: String,
    namespace: String,
    app_id: String,
    actor_types: Vec<String>,
    updated_at: i64,
    api_level: u32,
}

/// Body of `/placement/state`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementState {
    host_list: Vec<HostInfo>,
    table_version: u64,
    api_level: u32,
}

/// What the healthz routes read.
#[derive(Clone)]
pub struct HealthState {
    /// Set once the gRPC server listens.
    pub ready: Arc<AtomicBool>,
    /// The replicated membership.
    pub sm: Arc<RwLock<SmData>>,
    /// API level bounds.
    pub min_api_level: u32,
    /// See `min_api_level`.
    pub max_api_level: Option<u32>,
}

/// `/healthz` (+ `/placement/state` when `metadata`).
pub fn healthz_router(state: HealthState, metadata: bool) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    if metadata {
        r = r.route("/placement/state", get(placement_state));
    }
    r.with_state(state)
}

async fn healthz(State(s): State<HealthState>) -> StatusCode {
    if s.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn placement_state(State(s): State<HealthState>) -> Response {
    let Ok(d) = s.sm.read() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let m = &d.membership;
    let mut host_list: Vec<HostInfo> = m
        .members()
        .map(|h| HostInfo {
            name: h.name.clone(),
            namespace: h.namespace.clone(),
            app_id: h.app_id.clone(),
            actor_types: h.entities.clone(),
            updated_at: h.updated_at,
            api_level: h.api_level,
        })
        .collect();
    host_list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let lowest = m
        .members()
        .map(|h| h.api_level)
        .min()
        .unwrap_or(0)
        .max(s.min_api_level);
    let api_level = s.max_api_level.map_or(lowest, |max| lowest.min(max));
    Json(PlacementState {
        host_list,
        table_version: m.table_generation,
        api_level,
    })
    .into_response()
}

/// `/metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn render_metrics(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
