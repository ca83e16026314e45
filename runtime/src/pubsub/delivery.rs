//! Delivery of one broker message to the app, with Dapr's rules: build the
//! CloudEvent, drop expired events, route by the rules, POST it (HTTP) or call
//! `OnTopicEvent` (gRPC) under the component's inbound resiliency policy, and
//! tell the broker to ack (`Ok`) or redeliver (`Err`). Dropped events go to
//! the dead-letter topic when one is set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use dapr_components::pubsub::{
    HandlerError, Message, MessageHandler, PubSub, PublishRequest, envelope as ce,
};
use dapr_policy::resiliency::{Policy, PolicyError, RetryableError};
use dapr_rs_proto::runtime::{
    self as pb, app_callback_client::AppCallbackClient,
    topic_event_response::TopicEventResponseStatus,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tonic::transport::Channel;

use super::routing::{Rule, find_route};
use crate::{appchannel::AppChannel, options::AppProtocol};

/// How one delivery attempt ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Dropped,
}

/// A failed attempt: retried by the policy, then the broker.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("app returned status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("RETRY status returned from app while processing pub/sub event {0}")]
    RetryRequested(String),
    #[error("unknown status '{status}' returned from app while processing pub/sub event {id}")]
    UnknownStatus { status: String, id: String },
    #[error("error returned from app channel while sending pub/sub event to app: {0}")]
    Channel(String),
    #[error("gRPC app returned {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
    #[error("invalid event: {0}")]
    Event(String),
}

impl RetryableError for DeliveryError {
    fn http_status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn grpc_code(&self) -> Option<i32> {
        match self {
            DeliveryError::Grpc { code, .. } => Some(*code as i32),
            _ => None,
        }
    }
}

/// Everything one subscription needs to deliver its messages.
pub struct Deliverer {
    pub pubsub_name: String,
    pub topic: String,
    pub broker: Arc<dyn PubSub>,
    pub app: AppChannel,
    pub rules: Vec<Rule>,
    pub dead_letter_topic: String,
    pub raw_payload: bool,
    pub policy: Policy,
    /// Built once for gRPC apps.
    pub grpc: Option<AppCallbackClient<Channel>>,
}

impl Deliverer {
    /// The CloudEvent and the bytes sent to an HTTP app.
    pub(super) fn cloud_event(&self, msg: &Message) -> Result<(Map<String, Value>, Bytes), String> {
        if self.raw_payload {
            let mut event = ce::from_raw_payload(&msg.data, &self.topic, &self.pubsub_name);
            for key in [ce::TRACE_ID, ce::TRACE_PARENT, ce::TRACE_STATE] {
                if let Some(v) = msg.metadata.get(key) {
                    event.insert(key.to_owned(), Value::String(v.clone()));
                }
            }
            let bytes = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            return Ok((event, bytes.into()));
        }
        match serde_json::from_slice::<Value>(&msg.data) {
            Ok(Value::Object(event)) => Ok((event, msg.data.clone())),
            Ok(_) => Err("the message is not a CloudEvent (JSON object)".to_owned()),
            Err(e) => Err(format!("error deserializing cloud event: {e}")),
        }
    }

    pub(super) async fn to_dead_letter(&self, msg: &Message) -> Result<(), HandlerError> {
        if self.dead_letter_topic.is_empty() {
            return Ok(());
        }
        self.broker
            .publish(PublishRequest {
                topic: self.dead_letter_topic.clone(),
                data: msg.data.clone(),
                content_type: msg.content_type.clone(),
                metadata: msg.metadata.clone(),
            })
            .await
            .map_err(|e| {
                tracing::warn!(topic = %self.topic, dlq = %self.dead_letter_topic, error = %e, "failed to send the message to the dead letter topic");
                HandlerError(format!("dead letter topic: {e}"))
            })
    }

    /// Waits while the app's health checks fail: nothing is delivered to an
    /// unhealthy app (the message stays unacknowledged meanwhile).
    pub(super) async fn wait_healthy(&self) {
        while !self.app.health.is_healthy() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn attempt(
        &self,
        path: &str,
        event: &Map<String, Value>,
        body: &Bytes,
        msg: &Message,
    ) -> Result<Outcome, DeliveryError> {
        self.wait_healthy().await;
        let started = std::time::Instant::now();
        let span = dapr_observability::trace::start_delivery(
            &self.pubsub_name,
            &self.topic,
            event.get(ce::TRACE_PARENT).and_then(Value::as_str),
        );
        let result = match &self.grpc {
            Some(client) => self.attempt_grpc(client.clone(), path, event).await,
            None => self.attempt_http(path, event, body, msg).await,
        };
        let status = match &result {
            Ok(Outcome::Dropped) => "drop",
            Ok(_) => "success",
            Err(_) => "retry",
        };
        dapr_observability::metrics::pubsub_ingress(
            &self.pubsub_name,
            &self.topic,
            status,
            started,
        );
        if let Some(span) = span {
            span.finish(result.is_err());
        }
        result
    }

    async fn attempt_http(
        &self,
        path: &str,
        event: &Map<String, Value>,
        body: &Bytes,
        msg: &Message,
    ) -> Result<Outcome, DeliveryError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &msg.metadata {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(ce::CLOUD_EVENT_CONTENT_TYPE),
        );
        headers.remove(http::header::CONTENT_LENGTH);
        if let Some(tp) = event
            .get(ce::TRACE_PARENT)
            .or_else(|| event.get(ce::TRACE_ID))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            && let Ok(v) = HeaderValue::from_str(tp)
        {
            headers.insert("traceparent", v);
        }
        let path = format!("/{}", path.trim_start_matches('/'));
        let resp = self
            .app
            .call_http(
                Method::POST,
                &path,
                &headers,
                axum::body::Body::from(body.clone()),
            )
            .await
            .map_err(|e| DeliveryError::Channel(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let id = event
            .get(ce::ID)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if status.is_success() {
            let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
                return Ok(Outcome::Success);
            };
            return match answer.get("status").and_then(Value::as_str).unwrap_or("") {
                "" | "SUCCESS" => Ok(Outcome::Success),
                "RETRY" => Err(DeliveryError::RetryRequested(id.to_owned())),
                "DROP" => {
                    tracing::warn!(
                        id,
                        "DROP status returned from app while processing pub/sub event"
                    );
                    Ok(Outcome::Dropped)
                }
                other => Err(DeliveryError::UnknownStatus {
                    status: other.to_owned(),
                    id: id.to_owned(),
                }),
            };
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status == StatusCode::NOT_FOUND {
            tracing::error!(id, body = %text, "non-retriable error returned from app while processing pub/sub event: status 404");
            return Ok(Outcome::Dropped);
        }
        Err(DeliveryError::Status {
            status: status.as_u16(),
            body: text,
        })
    }

    async fn attempt_grpc(
        &self,
        mut client: AppCallbackClient<Channel>,
        path: &str,
        event: &Map<String, Value>,
    ) -> Result<Outcome, DeliveryError> {
        let req = topic_event_request(event, &self.topic, &self.pubsub_name, path)
            .map_err(DeliveryError::Event)?;
        match client.on_topic_event(with_app_token(req)).await {
            Ok(r) => match TopicEventResponseStatus::try_from(r.into_inner().status) {
                Ok(TopicEventResponseStatus::Success) => Ok(Outcome::Success),
                Ok(TopicEventResponseStatus::Drop) => Ok(Outcome::Dropped),
                Ok(TopicEventResponseStatus::Retry) => Err(DeliveryError::RetryRequested(
                    event
                        .get(ce::ID)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )),
                Err(_) => Err(DeliveryError::UnknownStatus {
                    status: "unknown enum value".to_owned(),
                    id: String::new(),
                }),
            },
            // An app without OnTopicEvent can never take the event.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Outcome::Dropped),
            Err(s) => Err(DeliveryError::Grpc {
                code: s.code(),
                message: s.message().to_owned(),
            }),
        }
    }
}

#[async_trait]
impl MessageHandler for Deliverer {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let (event, body) = match self.cloud_event(&msg) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(pubsub = %self.pubsub_name, topic = %self.topic, "{e}");
                if !self.dead_letter_topic.is_empty() && self.to_dead_letter(&msg).await.is_ok() {
                    return Ok(());
                }
                return Err(HandlerError(e));
            }
        };
        if ce::has_expired(&event, Utc::now()) {
            tracing::warn!(id = ?event.get(ce::ID), "dropping expired pub/sub event");
            let _ = self.to_dead_letter(&msg).await;
            return Ok(());
        }
        let path = match find_route(&self.rules, &event) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::debug!(id = ?event.get(ce::ID), topic = %self.topic, "no matching route; event skipped");
                let _ = self.to_dead_letter(&msg).await;
                return Ok(());
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, "{e}");
                if !self.dead_letter_topic.is_empty() && self.to_dead_letter(&msg).await.is_ok() {
                    return Ok(());
                }
                return Err(HandlerError(e.to_string()));
            }
        };
        let result = self
            .policy
            .execute(|_| self.attempt(&path, &event, &body, &msg))
            .await;
        match result {
            Ok(Outcome::Success) => Ok(()),
            Ok(Outcome::Dropped) => self.to_dead_letter(&msg).await,
            Err(e) => {
                let e = match e {
                    PolicyError::Operation(op) => op.to_string(),
                    other => other.to_string(),
                };
                tracing::warn!(topic = %self.topic, error = %e, "pub/sub event not processed");
                if !self.dead_letter_topic.is_empty() && self.to_dead_letter(&msg).await.is_ok() {
                    return Ok(());
                }
                Err(HandlerError(e))
            }
        }
    }
}

/// A client for the app's `AppCallback` service (gRPC apps).
pub fn app_callback_client(app: &AppChannel) -> Result<AppCallbackClient<Channel>, String> {
    if !matches!(app.protocol, AppProtocol::Grpc) {
        return Err(format!("app protocol {:?} is not gRPC", app.protocol));
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.address))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(AppCallbackClient::new(channel))
}

/// A request to the app, with `APP_API_TOKEN` as Dapr sends it.
pub fn with_app_token<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(token) = std::env::var("APP_API_TOKEN")
        && !token.is_empty()
        && let Ok(v) = tonic::metadata::MetadataValue::try_from(token.as_str())
    {
        req.metadata_mut().insert("dapr-api-token", v);
    }
    req
}

/// Keys carried in `TopicEventRequest` fields rather than its extensions.
const ENVELOPE_FIELDS: [&str; 7] = [
    ce::ID,
    ce::SOURCE,
    ce::DATA_CONTENT_TYPE,
    ce::TYPE,
    ce::SPECVERSION,
    ce::DATA,
    ce::DATA_BASE64,
];

pub(crate) fn topic_event_request(
    event: &Map<String, Value>,
    topic: &str,
    pubsub: &str,
    path: &str,
) -> Result<pb::TopicEventRequest, String> {
    let s = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let content_type = s(ce::DATA_CONTENT_TYPE);
    let data = if let Some(b64) = event.get(ce::DATA_BASE64).filter(|v| !v.is_null()) {
        let text = b64.as_str().ok_or("data_base64 is not a string")?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("unable to base64 decode data_base64: {e}"))?
    } else if let Some(d) = event.get(ce::DATA).filter(|v| !v.is_null()) {
        if ce::is_string_content_type(&content_type) {
            match d {
                Value::String(s) => s.clone().into_bytes(),
                _ => return Err("unexpected data for a string content type".to_owned()),
            }
        } else if ce::is_json_content_type(&content_type)
            || ce::is_cloud_event_content_type(&content_type)
        {
            serde_json::to_vec(d).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        }
    } else {
        Vec::new()
    };
    let extensions: HashMap<String, prost_types::Value> = event
        .iter()
        .filter(|(k, _)| !ENVELOPE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json_to_prost(v)))
        .collect();
    Ok(pb::TopicEventRequest {
        id: s(ce::ID),
        source: s(ce::SOURCE),
        r#type: s(ce::TYPE),
        spec_version: s(ce::SPECVERSION),
        data_content_type: content_type,
        data,
        topic: topic.to_owned(),
        pubsub_name: pubsub.to_owned(),
        path: path.to_owned(),
        extensions: Some(prost_types::Struct {
            fields: extensions.into_iter().collect(),
        }),
    })
}

fn json_to_prost(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_prost).collect(),
        }),
        Value::Object(m) => Kind::StructValue(prost_types::Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), json_to_prost(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_envelope_fields_and_extensions() {
        let event = ce::new_envelope(
            ce::EnvelopeFields {
                source: "a".into(),
                topic: "t".into(),
                pubsub_name: "p".into(),
                data_content_type: "application/json".into(),
                ..Default::default()
            },
            br#"{"x":1}"#,
        );
        let req = topic_event_request(&event, "t", "p", "/r").unwrap();
        assert_eq!(req.data, br#"{"x":1}"#);
        assert_eq!(req.r#type, ce::DEFAULT_TYPE);
        let ext = req.extensions.unwrap().fields;
        assert!(ext.contains_key("topic") && ext.contains_key("traceparent"));
        assert!(!ext.contains_key("id") && !ext.contains_key("data"));
        let raw = ce::from_raw_payload(b"\x00\x01", "t", "p");
        assert_eq!(
            topic_event_request(&raw, "t", "p", "").unwrap().data,
            b"\x00\x01"
        );
    }
}
