//! `POST /v1.0-alpha1/lock/{store}` and `POST /v1.0-alpha1/unlock/{store}`.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{AppState, Body, PathParams};
use crate::{error::ApiError, error::MappedError, lock};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockBody {
    #[serde(default)]
    resource_id: String,
    #[serde(default)]
    lock_owner: String,
    #[serde(default)]
    expiry_in_seconds: i32,
}

fn parse(body: &[u8]) -> Result<LockBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedRequest(e.to_string()))
}

pub async fn try_lock(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    Body(body): Body,
) -> Response {
    let req = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match lock::try_lock(
        &sidecar,
        &store,
        &req.resource_id,
        &req.lock_owner,
        req.expiry_in_seconds,
    )
    .await
    {
        Ok(success) => Json(serde_json::json!({ "success": success })).into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}

pub async fn unlock(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    Body(body): Body,
) -> Response {
    let req = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match lock::unlock(&sidecar, &store, &req.resource_id, &req.lock_owner).await {
        Ok(status) => Json(serde_json::json!({ "status": status as i32 })).into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}
