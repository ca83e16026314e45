//! The pub/sub building block in daprd: publishing (single and bulk) shared
//! by the HTTP and gRPC APIs, and the subscriptions that deliver broker
//! messages to the app.

pub mod bulk;
pub mod delivery;
pub mod error;
pub mod manager;
pub mod outbox;
pub mod routing;
pub mod scopes;
pub mod streaming;
pub mod subscriptions;

use std::collections::HashMap;

use bytes::Bytes;
use chrono::Utc;
use dapr_components::pubsub::{PublishRequest, envelope as ce};
use dapr_policy::resiliency::{Direction, PolicyError, RetryableError};
use serde_json::Value;

pub use error::PubSubApiError;

use crate::{components::PubSubEntry, sidecar::Sidecar};

/// Request metadata keys Dapr interprets.
pub const RAW_PAYLOAD: &str = "rawPayload";
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";

/// One event as the APIs receive it.
#[derive(Debug, Clone, Default)]
pub struct PublishInput {
    pub pubsub: String,
    pub topic: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: HashMap<String, String>,
    pub trace_parent: String,
    pub trace_state: String,
}

/// One entry of a bulk publish.
#[derive(Debug, Clone, Default)]
pub struct BulkEntry {
    pub entry_id: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: HashMap<String, String>,
}

/// An entry the broker did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub entry_id: String,
    pub error: String,
}

/// A metadata value Dapr reads as a boolean (`true`, `1`, ...).
fn truthy(md: &HashMap<String, String>, key: &str) -> Result<bool, String> {
    match md.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
        None => Ok(false),
        Some((_, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "false" | "f" | "0" | "no" | "n" | "off" => Ok(false),
            "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
            other => Err(format!("{key}: '{other}' is not a boolean")),
        },
    }
}

/// A W3C traceparent for an event published without one.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-00")
}

/// Broker errors under the resiliency policy: all retriable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BrokerError(String);

impl RetryableError for BrokerError {}

fn lookup(sidecar: &Sidecar, pubsub: &str, topic: &str) -> Result<PubSubEntry, PubSubApiError> {
    // Dapr answers "not found" also when no pub/sub is loaded at all (its
    // "not configured" error is unreachable in a running sidecar).
    if pubsub.is_empty() {
        return Err(PubSubApiError::NameEmpty);
    }
    let entry = sidecar
        .registry
        .pubsub(pubsub)
        .ok_or_else(|| PubSubApiError::NotFound(pubsub.to_owned()))?;
    if topic.is_empty() {
        return Err(PubSubApiError::TopicEmpty(pubsub.to_owned()));
    }
    if !entry.scopes.can_publish(topic) {
        return Err(PubSubApiError::Forbidden {
            pubsub: pubsub.to_owned(),
            topic: topic.to_owned(),
            app_id: sidecar.app_id.clone(),
        });
    }
    Ok(entry)
}

/// Envelope overrides from `metadata.cloudevent.<field>` (case-insensitive,
/// as Dapr decodes them).
fn overrides(md: &HashMap<String, String>) -> HashMap<String, String> {
    md.iter()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            lower
                .strip_prefix("cloudevent.")
                .map(|f| (f.to_owned(), v.clone()))
        })
        .collect()
}

/// The bytes that travel for one event: the envelope (or the raw payload)
/// and the content type the broker records.
#[allow(clippy::too_many_arguments)]
fn build_event(
    app_id: &str,
    pubsub: &str,
    topic: &str,
    data: &[u8],
    content_type: &str,
    metadata: &HashMap<String, String>,
    trace_parent: &str,
    trace_state: &str,
) -> Result<(Bytes, String), PubSubApiError> {
    let raw = truthy(metadata, RAW_PAYLOAD).map_err(|reason| PubSubApiError::Metadata {
        pubsub: pubsub.to_owned(),
        reason,
    })?;
    if raw {
        return Ok((Bytes::copy_from_slice(data), content_type.to_owned()));
    }
    let mut event = if ce::is_cloud_event_content_type(content_type) {
        ce::from_cloud_event(data, topic, pubsub, trace_parent, trace_state).map_err(|e| {
            PubSubApiError::CloudEventCreation {
                pubsub: pubsub.to_owned(),
                reason: e.to_string(),
            }
        })?
    } else {
        let o = overrides(metadata);
        let get = |k: &str| o.get(k).cloned().unwrap_or_default();
        // An explicit traceparent override also becomes the trace id.
        let trace_parent = match (get("traceparent"), get("traceid")) {
            (tp, _) if !tp.is_empty() => tp,
            (_, tid) if !tid.is_empty() => tid,
            _ => trace_parent.to_owned(),
        };
        let source = o
            .get("source")
            .cloned()
            .unwrap_or_else(|| app_id.to_owned());
        ce::new_envelope(
            ce::EnvelopeFields {
                id: get("id"),
                source,
                type_: get("type"),
                subject: get("subject"),
                topic: topic.to_owned(),
                pubsub_name: pubsub.to_owned(),
                data_content_type: content_type.to_owned(),
                trace_parent,
                trace_state: o
                    .get("tracestate")
                    .cloned()
                    .unwrap_or_else(|| trace_state.to_owned()),
            },
            data,
        )
    };
    if let Some((_, ttl)) = metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TTL_IN_SECONDS))
    {
        let secs: i64 = ttl.trim().parse().map_err(|_| PubSubApiError::Metadata {
            pubsub: pubsub.to_owned(),
            reason: format!("{TTL_IN_SECONDS} '{ttl}' is not an integer"),
        })?;
        if secs > 0 {
            ce::apply_ttl(&mut event, secs, Utc::now());
        }
    }
    let bytes =
        serde_json::to_vec(&Value::Object(event)).map_err(|e| PubSubApiError::MarshalEnvelope {
            pubsub: pubsub.to_owned(),
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
    Ok((bytes.into(), ce::CLOUD_EVENT_CONTENT_TYPE.to_owned()))
}

/// `POST /v1.0/publish/{pubsub}/{topic}` and gRPC `PublishEvent`.
pub async fn publish(sidecar: &Sidecar, input: PublishInput) -> Result<(), PubSubApiError> {
    let entry = lookup(sidecar, &input.pubsub, &input.topic)?;
    let trace_parent = if input.trace_parent.is_empty() {
        new_traceparent()
    } else {
        input.trace_parent.clone()
    };
    let (data, content_type) = build_event(
        &sidecar.app_id,
        &input.pubsub,
        &input.topic,
        &input.data,
        &input.content_type,
        &input.metadata,
        &trace_parent,
        &input.trace_state,
    )?;
    let req = PublishRequest {
        topic: input.topic.clone(),
        data,
        content_type: (!content_type.is_empty()).then_some(content_type),
        metadata: input.metadata,
    };
    let policy = sidecar
        .registry
        .pubsub_policy(&input.pubsub, Direction::Outbound);
    let started = std::time::Instant::now();
    let result = policy
        .execute(|_| {
            let req = req.clone();
            let broker = entry.pubsub.clone();
            async move {
                broker
                    .publish(req)
                    .await
                    .map_err(|e| BrokerError(e.to_string()))
            }
        })
        .await
        .map_err(|e| PubSubApiError::Publish {
            pubsub: input.pubsub.clone(),
            topic: input.topic.clone(),
            reason: match e {
                PolicyError::Operation(op) => op.0,
                other => other.to_string(),
            },
        });
    dapr_observability::metrics::pubsub_egress(
        &input.pubsub,
        &input.topic,
        result.is_ok(),
        started,
    );
    result
}

/// Bulk publish: validates every entry, then publishes them; entries the
/// broker refused come back with their error (the call itself succeeds).
pub async fn bulk_publish(
    sidecar: &Sidecar,
    pubsub: &str,
    topic: &str,
    metadata: HashMap<String, String>,
    entries: Vec<BulkEntry>,
    trace_parent: &str,
    trace_state: &str,
) -> Result<Vec<FailedEntry>, PubSubApiError> {
    let entry = lookup(sidecar, pubsub, topic)?;
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        if e.entry_id.is_empty() || !seen.insert(e.entry_id.as_str()) {
            return Err(PubSubApiError::MarshalEvents {
                pubsub: pubsub.to_owned(),
                topic: topic.to_owned(),
                reason: "entryId is duplicated or not present for entry".to_owned(),
            });
        }
    }
    let raw = truthy(&metadata, RAW_PAYLOAD).map_err(|reason| PubSubApiError::Metadata {
        pubsub: pubsub.to_owned(),
        reason,
    })?;
    let mut reqs = Vec::with_capacity(entries.len());
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries {
        // Entry metadata overrides the request's.
        let mut md = metadata.clone();
        md.extend(e.metadata);
        if raw {
            md.insert(RAW_PAYLOAD.to_owned(), "true".to_owned());
        }
        let trace_parent = if trace_parent.is_empty() {
            new_traceparent()
        } else {
            trace_parent.to_owned()
        };
        let (data, content_type) = build_event(
            &sidecar.app_id,
            pubsub,
            topic,
            &e.data,
            &e.content_type,
            &md,
            &trace_parent,
            trace_state,
        )?;
        ids.push(e.entry_id);
        reqs.push(PublishRequest {
            topic: topic.to_owned(),
            data,
            content_type: (!content_type.is_empty()).then_some(content_type),
            metadata: md,
        });
    }
    let policy = sidecar.registry.pubsub_policy(pubsub, Direction::Outbound);
    let mut failed = Vec::new();
    // Each entry gets the policy on its own, so one bad entry does not
    // republish the others.
    for (i, req) in reqs.into_iter().enumerate() {
        let res = policy
            .execute(|_| {
                let req = req.clone();
                let broker = entry.pubsub.clone();
                async move {
                    broker
                        .publish(req)
                        .await
                        .map_err(|e| BrokerError(e.to_string()))
                }
            })
            .await;
        if let Err(e) = res {
            failed.push(FailedEntry {
                entry_id: ids[i].clone(),
                error: match e {
                    PolicyError::Operation(op) => op.0,
                    other => other.to_string(),
                },
            });
        }
    }
    Ok(failed)
}

/// An HTTP bulk entry's `event` as bytes, by its content type (Dapr's
/// rules: base64 for binary, a string for text, JSON otherwise).
pub fn event_to_bytes(event: &Value, content_type: &str) -> Result<Bytes, String> {
    use base64::Engine;
    if ce::is_binary_content_type(content_type) {
        let s = event
            .as_str()
            .ok_or("the content type does not match the event")?;
        return base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(|e| format!("unable to decode base64 application/octet-stream data: {e}"));
    }
    if ce::is_string_content_type(content_type) {
        return event
            .as_str()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .ok_or_else(|| "the content type does not match the event".to_owned());
    }
    if ce::is_json_content_type(content_type) || ce::is_cloud_event_content_type(content_type) {
        return serde_json::to_vec(event)
            .map(Bytes::from)
            .map_err(|e| e.to_string());
    }
    Err("the content type does not match the event".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn envelope_overrides_and_raw_payload() {
        let (bytes, ct) = build_event(
            "app",
            "ps",
            "t",
            br#"{"a":1}"#,
            "application/json",
            &md(&[("cloudevent.id", "my-id"), ("cloudEvent.Type", "my.type")]),
            "00-aa-bb-01",
            "",
        )
        .unwrap();
        assert_eq!(ct, ce::CLOUD_EVENT_CONTENT_TYPE);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], "my-id");
        assert_eq!(v["type"], "my.type");
        assert_eq!(v["source"], "app");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["traceparent"], "00-aa-bb-01");
        let (raw, _) = build_event(
            "app",
            "ps",
            "t",
            b"plain",
            "text/plain",
            &md(&[("rawPayload", "true")]),
            "",
            "",
        )
        .unwrap();
        assert_eq!(&raw[..], b"plain");
        assert!(
            build_event(
                "a",
                "p",
                "t",
                b"x",
                "",
                &md(&[("rawPayload", "maybe")]),
                "",
                ""
            )
            .is_err()
        );
        let (ttl, _) = build_event(
            "a",
            "p",
            "t",
            b"x",
            "",
            &md(&[("ttlInSeconds", "30")]),
            "",
            "",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&ttl).unwrap();
        assert!(v["expiration"].is_string());
    }

    #[test]
    fn bulk_event_conversion() {
        assert_eq!(
            &event_to_bytes(&serde_json::json!({"a":1}), "application/json").unwrap()[..],
            br#"{"a":1}"#
        );
        assert_eq!(
            &event_to_bytes(&serde_json::json!("hi"), "text/plain").unwrap()[..],
            b"hi"
        );
        assert_eq!(
            &event_to_bytes(&serde_json::json!("AAE="), "application/octet-stream").unwrap()[..],
            b"\x00\x01"
        );
        assert!(event_to_bytes(&serde_json::json!(1), "text/plain").is_err());
    }
}
