//! `/v1.0/publish/{pubsub}/{topic}` and bulk publish (`/v1.0-alpha1` and
//! `/v1.0` `publish/bulk/{pubsub}/{topic}`).

use std::collections::HashMap;

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, Body, PathParams, query_metadata};
use crate::pubsub::{self, BulkEntry, PubSubApiError, PublishInput};

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub async fn publish(
    State(sidecar): State<AppState>,
    PathParams((pubsub, topic)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let input = PublishInput {
        pubsub,
        topic,
        data: body,
        content_type: header(&headers, header::CONTENT_TYPE),
        metadata: query_metadata(query.as_deref()),
        trace_parent: header(&headers, "traceparent"),
        trace_state: header(&headers, "tracestate"),
    };
    match pubsub::publish(&sidecar, input).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `/v1.0/publish/{pubsub}` and `/v1.0/publish/{pubsub}/`: no topic.
pub async fn publish_no_topic(
    State(sidecar): State<AppState>,
    PathParams(pubsub): PathParams<String>,
) -> Response {
    let err = if sidecar.registry.pubsub(&pubsub).is_none() {
        PubSubApiError::NotFound(pubsub)
    } else {
        PubSubApiError::TopicEmpty(pubsub)
    };
    err.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntryJson {
    #[serde(default)]
    entry_id: String,
    #[serde(default)]
    event: Value,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

pub async fn bulk_publish(
    State(sidecar): State<AppState>,
    PathParams((pubsub, topic)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let entries: Vec<BulkEntryJson> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return PubSubApiError::UnmarshalEvents {
                pubsub,
                topic,
                reason: e.to_string(),
            }
            .into_response();
        }
    };
    let mut converted = Vec::with_capacity(entries.len());
    for e in entries {
        match pubsub::event_to_bytes(&e.event, &e.content_type) {
            Ok(data) => converted.push(BulkEntry {
                entry_id: e.entry_id,
                data,
                content_type: e.content_type,
                metadata: e.metadata,
            }),
            Err(reason) => {
                return PubSubApiError::MarshalEnvelope {
                    pubsub,
                    topic,
                    reason,
                }
                .into_response();
            }
        }
    }
    let result = pubsub::bulk_publish(
        &sidecar,
        &pubsub,
        &topic,
        query_metadata(query.as_deref()),
        converted,
        &header(&headers, "traceparent"),
        &header(&headers, "tracestate"),
    )
    .await;
    match result {
        Ok(failed) if failed.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(failed) => {
            let failed: Vec<Value> = failed
                .into_iter()
                .map(|f| serde_json::json!({"entryId": f.entry_id, "error": f.error}))
                .collect();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({
                    "failedEntries": failed,
                    "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
                })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}
