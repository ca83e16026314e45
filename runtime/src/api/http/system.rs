//! Health, metadata and shutdown routes.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, Body, PathParams, query_param};
use crate::error::ApiError;

pub async fn healthz(State(sidecar): State<AppState>, RawQuery(q): RawQuery) -> Response {
    if let Some(appid) = query_param(q.as_deref(), "appid")
        && appid != sidecar.app_id
    {
        return ApiError::HealthAppIdMismatch.into_response();
    }
    if sidecar.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::HealthNotReady.into_response()
    }
}

pub async fn healthz_outbound(State(sidecar): State<AppState>) -> Response {
    if sidecar.is_outbound_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::OutboundHealthNotReady.into_response()
    }
}

pub async fn get_metadata(State(sidecar): State<AppState>) -> Response {
    let m = sidecar.metadata();
    let components: Vec<_> = m
        .components
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "version": c.version,
                "capabilities": c.capabilities,
            })
        })
        .collect();
    let mut app = json!({
        "protocol": m.app.protocol,
        "channelAddress": m.app.channel_address,
    });
    if let Some(port) = m.app.port {
        app["port"] = json!(port);
    }
    if m.app.max_concurrency > 0 {
        app["maxConcurrency"] = json!(m.app.max_concurrency);
    }
    if let Some(h) = &m.app.health {
        app["health"] = json!({
            "healthCheckPath": h.path,
            "healthProbeInterval": h.interval,
            "healthProbeTimeout": h.timeout,
            "healthThreshold": h.threshold,
        });
    }
    let actors = sidecar.actors.metadata();
    let counts: Vec<_> = actors
        .active
        .iter()
        .map(|(t, n)| json!({"type": t, "count": n}))
        .collect();
    let mut actor_runtime = json!({
        "runtimeStatus": actors.status,
        "hostReady": actors.host_ready,
    });
    if !counts.is_empty() {
        actor_runtime["activeActors"] = json!(counts);
    }
    if !actors.placement.is_empty() {
        actor_runtime["placement"] = json!(actors.placement);
    }
    Json(json!({
        "id": m.id,
        "runtimeVersion": m.runtime_version,
        "enabledFeatures": m.enabled_features,
        "actors": counts,
        "actorRuntime": actor_runtime,
        "components": components,
        "extended": m.extended,
        "subscriptions": [],
        "httpEndpoints": [],
        "appConnectionProperties": app,
    }))
    .into_response()
}

pub async fn put_metadata(
    State(sidecar): State<AppState>,
    PathParams(key): PathParams<String>,
    Body(body): Body,
) -> Response {
    match String::from_utf8(body.to_vec()) {
        Ok(value) => {
            sidecar.set_extended(key, value);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => ApiError::BadRequest("metadata value must be UTF-8 text".into()).into_response(),
    }
}

pub async fn shutdown(State(sidecar): State<AppState>) -> Response {
    tracing::info!("shutdown requested through the API");
    sidecar.shutdown.cancel();
    StatusCode::NO_CONTENT.into_response()
}
