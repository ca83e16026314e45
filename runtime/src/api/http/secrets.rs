//! `GET /v1.0/secrets/{store}/{name}` and `GET /v1.0/secrets/{store}/bulk`.

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};

use super::{AppState, PathParams, query_metadata};
use crate::{error::MappedError, secrets};

pub async fn get(
    State(sidecar): State<AppState>,
    PathParams((store, name)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let md = query_metadata(query.as_deref());
    match secrets::get_secret(&sidecar, &store, &name, &md).await {
        // A map keyed by sub-key, as Dapr answers; ordered for stable output.
        Ok(secret) => Json(
            secret
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}

pub async fn bulk(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let md = query_metadata(query.as_deref());
    match secrets::get_bulk_secret(&sidecar, &store, &md).await {
        Ok(all) => Json(all).into_response(),
        Err(e) => MappedError::from(e).into_response(),
    }
}
