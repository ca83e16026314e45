//! `POST|PUT /v1.0/bindings/{name}`: calls an output binding. The body is
//! `{"operation", "data", "metadata"}`; `data` (any JSON) goes to the
//! component as its JSON text, as Dapr does. The component's response
//! metadata comes back as `metadata.<key>` headers, also on failure.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use dapr_components::bindings::InvokeRequest;
use serde::Deserialize;

use super::{AppState, Body, PathParams};
use crate::{bindings, error::ApiError, error::MappedError};

#[derive(Deserialize)]
struct OutputBindingRequest {
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    operation: String,
}

pub async fn invoke(
    State(sidecar): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(body): Body,
) -> Response {
    let req: OutputBindingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::MalformedRequest(e.to_string()).into_response(),
    };
    // An absent `data` is JSON null, which Dapr sends as `null`.
    let data = match serde_json::to_vec(&req.data) {
        Ok(d) => Bytes::from(d),
        Err(e) => return ApiError::MalformedRequest(e.to_string()).into_response(),
    };
    let call = InvokeRequest {
        operation: req.operation,
        data,
        metadata: req.metadata.unwrap_or_default(),
    };
    match bindings::invoke_output(&sidecar.registry, &name, call).await {
        Ok(resp) => {
            let headers = metadata_headers(&resp.metadata);
            // Dapr answers 204 when the component returns nothing at all.
            if resp.data.is_empty() && resp.metadata.is_empty() {
                return (StatusCode::NO_CONTENT, headers).into_response();
            }
            let mut headers = headers;
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (StatusCode::OK, headers, resp.data).into_response()
        }
        Err(failure) => {
            let headers = metadata_headers(&failure.metadata);
            let mut resp = MappedError::from(failure).into_response();
            resp.headers_mut().extend(headers);
            resp
        }
    }
}

/// `metadata.<key>` headers; keys or values HTTP cannot carry are left out.
fn metadata_headers(md: &HashMap<String, String>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in md {
        let name = format!("metadata.{k}");
        match (
            HeaderName::try_from(name.as_str()),
            // Go writes non-ASCII values (e.g. `µs` durations) as raw bytes.
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            (Ok(n), Ok(v)) => {
                out.append(n, v);
            }
            _ => tracing::debug!(key = %k, "binding response metadata not sendable as a header"),
        }
    }
    out
}
