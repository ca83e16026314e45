//! HTTP actor API: `/v1.0/actors/{type}/{id}/method/{method}` (any verb),
//! `GET .../state/{key}`, `POST|PUT .../state` (transaction). Reminder and
//! timer routes belong to `actors::reminders`.

use axum::{
    extract::{RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::Deserialize;

use super::{AppState, PathParams};
use crate::{
    actors::{ActorCall, ActorError, ActorStateOp, validate_name},
    appchannel::is_hop_by_hop,
};

async fn read_body(state: &AppState, req: Request) -> Result<Bytes, ActorError> {
    use axum::extract::FromRequest;
    match super::Body::from_request(req, state).await {
        Ok(super::Body(b)) => Ok(b),
        Err(e) => Err(ActorError::BadRequest(format!("failed to read body: {e}"))),
    }
}

pub async fn invoke(
    State(sidecar): State<AppState>,
    PathParams((actor_type, actor_id, method)): PathParams<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let result = async {
        validate_name("actorType", &actor_type)?;
        validate_name("actorId", &actor_id)?;
        if method.is_empty() || method.split('/').any(|s| s == "..") {
            return Err(ActorError::BadRequest(format!(
                "invalid method: {method:?}"
            )));
        }
        let rt = sidecar.actors.get().await?;
        let verb = req.method().clone();
        let mut headers = HeaderMap::new();
        for (k, v) in req.headers() {
            if !is_hop_by_hop(k) && k != http::header::HOST && k != http::header::CONTENT_LENGTH {
                headers.append(k.clone(), v.clone());
            }
        }
        headers.insert("dapr-api-call", HeaderValue::from_static("true"));
        let data = read_body(&sidecar, req).await?;
        rt.call(ActorCall {
            actor_type,
            actor_id,
            method,
            verb,
            query,
            headers,
            data,
        })
        .await
    }
    .await;
    match result {
        Ok(resp) => {
            let mut out = (resp.status, resp.data).into_response();
            for (k, v) in &resp.headers {
                if !is_hop_by_hop(k) && k != http::header::CONTENT_LENGTH {
                    out.headers_mut().append(k.clone(), v.clone());
                }
            }
            out
        }
        Err(e) => e.into_response(),
    }
}

pub async fn get_state(
    State(sidecar): State<AppState>,
    PathParams((actor_type, actor_id, key)): PathParams<(String, String, String)>,
) -> Response {
    let result = async {
        let rt = sidecar.actors.get().await?;
        let store = rt.state_store()?;
        store.get(&actor_type, &actor_id, &key).await
    }
    .await;
    match result {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(v)) if v.data.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(v)) => {
            let mut resp = (StatusCode::OK, v.data).into_response();
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            for (k, val) in &v.metadata {
                if let (Ok(name), Ok(val)) = (
                    http::HeaderName::try_from(format!("metadata.{k}")),
                    HeaderValue::from_str(val),
                ) {
                    h.insert(name, val);
                }
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct TxOperationJson {
    #[serde(default)]
    operation: String,
    #[serde(default)]
    request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UpsertJson {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct DeleteJson {
    #[serde(default)]
    key: String,
    #[serde(default)]
    etag: Option<String>,
}

/// Decodes Dapr's `[{"operation":"upsert|delete","request":{...}}]`.
pub fn parse_transaction(body: &[u8]) -> Result<Vec<ActorStateOp>, ActorError> {
    let ops: Vec<TxOperationJson> =
        serde_json::from_slice(body).map_err(|e| ActorError::Malformed(e.to_string()))?;
    ops.into_iter()
        .map(|op| {
            let request = op
                .request
                .ok_or_else(|| ActorError::StateTransactionSave("request data is empty".into()))?;
            match op.operation.as_str() {
                "upsert" => {
                    let u: UpsertJson = serde_json::from_value(request)
                        .map_err(|e| ActorError::Malformed(e.to_string()))?;
                    let value = serde_json::to_vec(&u.value)
                        .map_err(|e| ActorError::Malformed(e.to_string()))?;
                    Ok(ActorStateOp::Upsert {
                        key: u.key,
                        value: Bytes::from(value),
                        etag: u.etag,
                        metadata: u.metadata,
                    })
                }
                "delete" => {
                    let d: DeleteJson = serde_json::from_value(request)
                        .map_err(|e| ActorError::Malformed(e.to_string()))?;
                    Ok(ActorStateOp::Delete {
                        key: d.key,
                        etag: d.etag,
                    })
                }
                "" => Err(ActorError::StateTransactionSave(
                    "operation is empty".into(),
                )),
                other => Err(ActorError::StateTransactionSave(format!(
                    "operation type {other} not supported"
                ))),
            }
        })
        .collect()
}

pub async fn transaction(
    State(sidecar): State<AppState>,
    PathParams((actor_type, actor_id)): PathParams<(String, String)>,
    req: Request,
) -> Response {
    let result = async {
        let body = read_body(&sidecar, req).await?;
        let ops = parse_transaction(&body)?;
        let rt = sidecar.actors.get().await?;
        crate::actors::state::transact_active(&rt, &actor_type, &actor_id, ops).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_in_dapr_shape() {
        let ops = parse_transaction(
            br#"[{"operation":"upsert","request":{"key":"a","value":{"n":1},"metadata":{"ttlInSeconds":"5"}}},
                 {"operation":"delete","request":{"key":"b"}}]"#,
        )
        .unwrap();
        assert!(
            matches!(&ops[0], ActorStateOp::Upsert { key, value, metadata, .. }
            if key == "a" && &value[..] == br#"{"n":1}"# && metadata["ttlInSeconds"] == "5")
        );
        assert!(matches!(&ops[1], ActorStateOp::Delete { key, .. } if key == "b"));
        assert!(matches!(
            parse_transaction(br#"[{"operation":"merge","request":{"key":"a"}}]"#),
            Err(ActorError::StateTransactionSave(_))
        ));
        assert!(matches!(
            parse_transaction(b"{"),
            Err(ActorError::Malformed(_))
        ));
    }

    #[test]
    fn names() {
        assert!(validate_name("actorId", "a-1").is_ok());
        assert!(validate_name("actorId", "").is_err());
        assert!(validate_name("actorId", "a/b").is_err());
        assert!(validate_name("actorId", "..").is_err());
    }
}
