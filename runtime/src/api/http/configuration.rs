//! `GET /v1.0[-alpha1]/configuration/{store}?key=..`, `.../subscribe` and
//! `.../{id}/unsubscribe`.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{AppState, PathParams, query_metadata};
use crate::{configuration, error::MappedError};

/// Every `key=` query parameter, in order.
fn keys(query: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .collect()
}

pub async fn get(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let md = query_metadata(query.as_deref());
    match configuration::get(&sidecar, &store, &keys(query.as_deref()), &md).await {
        Ok(items) => Json(items).into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}

pub async fn subscribe(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let md = query_metadata(query.as_deref());
    let keys = keys(query.as_deref());
    match configuration::subscribe_for_app(sidecar.clone(), &store, &keys, &md).await {
        Ok(id) => Json(serde_json::json!({ "id": id })).into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}

pub async fn unsubscribe(
    State(sidecar): State<AppState>,
    PathParams((_store, id)): PathParams<(String, String)>,
) -> Response {
    match configuration::unsubscribe(&sidecar, &id) {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => {
            let m = MappedError::from(e);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "ok": false, "message": m.message })),
            )
                .into_response()
        }
    }
}
