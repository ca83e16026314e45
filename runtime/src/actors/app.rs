//! Calls to the app that hosts the actors: `GET /dapr/config`,
//! `PUT /actors/{type}/{id}/method/{method}` (reminders and timers use
//! `remind/{name}` and `timer/{name}` as the method) and
//! `DELETE /actors/{type}/{id}`.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::{
    ActorCall, ActorResponse, CallbackKind, CallbackRequest, ERROR_RESPONSE_HEADER, HostConfig,
    config::AppConfigJson, error::ActorError,
};
use crate::{appchannel::is_hop_by_hop, invoke::Invoker};

/// Longest the app's response body is read for an error message.
const ERROR_BODY_LIMIT: usize = 4096;

/// Reads the app's actor configuration. Dapr asks once the app is up; an
/// app without `/dapr/config` (or with a broken one) hosts no actors.
pub async fn fetch_config(invoker: &Invoker) -> HostConfig {
    let Some(app) = invoker.app.as_ref() else {
        return HostConfig::default();
    };
    let mut last = String::new();
    let no_headers = HeaderMap::new();
    // The app listens already; a few quick retries cover a slow first answer.
    for attempt in 0..3 {
        let call = app.call_http(Method::GET, "/dapr/config", &no_headers, Body::empty());
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                let body = match resp.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                return match serde_json::from_slice::<AppConfigJson>(&body) {
                    Ok(cfg) => HostConfig::from_app(&cfg),
                    Err(e) => {
                        tracing::warn!(
                            "the app's /dapr/config is not valid JSON ({e}); hosting no actors"
                        );
                        HostConfig::default()
                    }
                };
            }
            Ok(Ok(resp)) => {
                tracing::debug!(status = %resp.status(), "the app has no actor configuration");
                return HostConfig::default();
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    tracing::warn!("could not read the app's /dapr/config ({last}); hosting no actors");
    HostConfig::default()
}

/// The call that delivers a reminder or timer (Dapr's JSON body).
pub fn callback_call(req: &CallbackRequest) -> Result<ActorCall, ActorError> {
    let mut body = serde_json::Map::new();
    if let Some(d) = &req.data {
        body.insert("data".into(), d.clone());
    }
    let method = match &req.kind {
        CallbackKind::Reminder { name } => format!("remind/{name}"),
        CallbackKind::Timer { name, callback } => {
            body.insert("callback".into(), callback.clone().into());
            format!("timer/{name}")
        }
    };
    body.insert("dueTime".into(), req.due_time.clone().into());
    body.insert("period".into(), req.period.clone().into());
    let data = serde_json::to_vec(&body).map_err(|e| ActorError::Malformed(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(ActorCall {
        actor_type: req.actor_type.clone(),
        actor_id: req.actor_id.clone(),
        method,
        verb: Method::PUT,
        query: None,
        headers,
        data: Bytes::from(data),
    })
}

/// Delivers one call to the app (the caller holds the actor's turn).
pub async fn invoke(invoker: &Invoker, call: &ActorCall) -> Result<ActorResponse, ActorError> {
    let app = invoker.app.as_ref().ok_or(ActorError::NoAppChannel)?;
    let method = call.method.trim_start_matches('/');
    let mut path = format!(
        "/actors/{}/{}/method/{method}",
        call.actor_type, call.actor_id
    );
    if let Some(q) = call.query.as_deref().filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &call.headers {
        if is_hop_by_hop(k) || k == http::header::HOST || k == http::header::CONTENT_LENGTH {
            continue;
        }
        headers.append(k.clone(), v.clone());
    }
    // Actor callbacks are always PUT (Dapr's HTTP actor protocol).
    let resp = app
        .call_http(Method::PUT, &path, &headers, Body::from(call.data.clone()))
        .await
        .map_err(|e| ActorError::Invoke(e.to_string()))?;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let data = body
        .collect()
        .await
        .map_err(|e| ActorError::Invoke(format!("reading the app's response: {e}")))?
        .to_bytes();
    if parts.headers.contains_key(ERROR_RESPONSE_HEADER) {
        // The app reports a failure in the body; it goes back as is.
        return Ok(ActorResponse {
            status,
            headers: parts.headers,
            data,
        });
    }
    if status == StatusCode::NOT_FOUND {
        return Err(ActorError::Invoke(format!(
            "actor method not found: {}",
            path.trim_start_matches('/')
        )));
    }
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&data[..data.len().min(ERROR_BODY_LIMIT)]).into_owned();
        return Err(ActorError::Invoke(format!(
            "error from actor service: ({}) {text}",
            status.as_u16()
        )));
    }
    Ok(ActorResponse {
        status,
        headers: parts.headers,
        data,
    })
}

/// `DELETE /actors/{type}/{id}`.
pub async fn deactivate(
    invoker: &Invoker,
    actor_type: &str,
    actor_id: &str,
) -> Result<(), ActorError> {
    let app = invoker.app.as_ref().ok_or(ActorError::NoAppChannel)?;
    let path = format!("/actors/{actor_type}/{actor_id}");
    let resp = app
        .call_http(Method::DELETE, &path, &HeaderMap::new(), Body::empty())
        .await
        .map_err(|e| ActorError::Invoke(e.to_string()))?;
    if resp.status() != StatusCode::OK {
        return Err(ActorError::Invoke(format!(
            "error from actor service: ({}) deactivating {actor_type}/{actor_id}",
            resp.status().as_u16()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_bodies_match_dapr() {
        let r = CallbackRequest {
            actor_type: "T".into(),
            actor_id: "1".into(),
            kind: CallbackKind::Timer {
                name: "t".into(),
                callback: "tick".into(),
            },
            data: Some(serde_json::json!({"a": 1})),
            due_time: "1s".into(),
            period: "2s".into(),
        };
        let c = callback_call(&r).unwrap();
        assert_eq!(c.method, "timer/t");
        let v: serde_json::Value = serde_json::from_slice(&c.data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"data":{"a":1},"callback":"tick","dueTime":"1s","period":"2s"})
        );
        let r = CallbackRequest {
            kind: CallbackKind::Reminder { name: "r".into() },
            data: None,
            ..r
        };
        let c = callback_call(&r).unwrap();
        assert_eq!(c.method, "remind/r");
        let v: serde_json::Value = serde_json::from_slice(&c.data).unwrap();
        assert_eq!(v, serde_json::json!({"dueTime":"1s","period":"2s"}));
    }
}
