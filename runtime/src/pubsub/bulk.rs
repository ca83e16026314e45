//! Bulk subscribe (`bulkSubscribe.enabled`): broker messages are gathered
//! into batches of up to `maxMessagesCount` (default 100) or whatever
//! arrived within `maxAwaitDurationMs` (default 1000) of the first, and each
//! batch goes to the app in one call per route: an HTTP POST of Dapr's bulk
//! envelope (`{"id","type","topic","pubsubname","metadata","entries":[...]}`,
//! answered with `{"statuses":[{"entryId","status"}]}`) or gRPC
//! `OnBulkTopicEvent` (falling back to `OnBulkTopicEventAlpha1`).
//!
//! Each entry is acked or not on its own: SUCCESS and DROP (DROP also goes
//! to the dead-letter topic) ack it; RETRY, a missing status, an unknown
//! status and a failed call leave it for another attempt under the inbound
//! resiliency policy (only the entries still pending are sent again), then
//! for the broker's redelivery (or the dead-letter topic when one is set).
//! Like Dapr's default bulk subscriber, this wraps the broker's ordinary
//! subscription, so a batch holds at most as many messages as the broker
//! hands out concurrently.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use dapr_components::pubsub::{HandlerError, Message, MessageHandler, envelope as ce};
use dapr_policy::resiliency::PolicyError;
use dapr_rs_proto::runtime::{
    self as pb, app_callback_alpha_client::AppCallbackAlphaClient,
    topic_event_bulk_request_entry::Event as GrpcEntryEvent,
    topic_event_response::TopicEventResponseStatus,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{
    delivery::{Deliverer, DeliveryError, topic_event_request, with_app_token},
    routing::find_route,
    subscriptions::BulkSettings,
};

/// Dapr's defaults when the subscription leaves them at 0.
const DEFAULT_MAX_MESSAGES: usize = 100;
const DEFAULT_MAX_AWAIT: Duration = Duration::from_millis(1000);
/// `type` of the bulk envelope.
pub const BULK_EVENT_TYPE: &str = "com.dapr.event.sent.bulk";
/// Batch metadata key naming the pub/sub (Dapr's `MetadataKeyPubSub`).
const METADATA_PUBSUB: &str = "pubsubName";

struct Pending {
    msg: Message,
    done: oneshot::Sender<Result<(), HandlerError>>,
}

/// The handler a bulk subscription gives the broker: each call waits for
/// the batch its message went into.
pub struct BulkDeliverer {
    tx: mpsc::Sender<Pending>,
}

impl BulkDeliverer {
    /// Starts the batching task; it ends when the handler is dropped.
    pub fn new(inner: Deliverer, settings: BulkSettings) -> Self {
        let max = usize::try_from(settings.max_messages_count)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_MESSAGES);
        let wait = u64::try_from(settings.max_await_duration_ms)
            .ok()
            .filter(|n| *n > 0)
            .map_or(DEFAULT_MAX_AWAIT, Duration::from_millis);
        let (tx, rx) = mpsc::channel(max);
        tokio::spawn(batch_loop(Arc::new(inner), rx, max, wait));
        Self { tx }
    }
}

#[async_trait]
impl MessageHandler for BulkDeliverer {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let (done, result) = oneshot::channel();
        self.tx
            .send(Pending { msg, done })
            .await
            .map_err(|_| HandlerError("the bulk subscription is stopped".into()))?;
        result
            .await
            .unwrap_or_else(|_| Err(HandlerError("the bulk subscription is stopped".into())))
    }
}

async fn batch_loop(
    inner: Arc<Deliverer>,
    mut rx: mpsc::Receiver<Pending>,
    max: usize,
    wait: Duration,
) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = vec![first];
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        let (msgs, dones): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.msg, p.done)).unzip();
        let results = deliver_batch(&inner, &msgs).await;
        for (done, r) in dones.into_iter().zip(results) {
            let _ = done.send(r);
        }
    }
}

/// One entry on its way to the app.
struct Entry {
    index: usize,
    entry_id: String,
    event: Map<String, Value>,
}

/// What the app said about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryStatus {
    Success,
    Drop,
    Retry,
}

/// Delivers one batch; the result has one element per message.
async fn deliver_batch(d: &Deliverer, msgs: &[Message]) -> Vec<Result<(), HandlerError>> {
    let mut results: Vec<Result<(), HandlerError>> = vec![Ok(()); msgs.len()];
    let mut by_path: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (index, msg) in msgs.iter().enumerate() {
        let (event, _) = match d.cloud_event(msg) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(pubsub = %d.pubsub_name, topic = %d.topic, "{e}");
                results[index] = fail_or_dead_letter(d, msg, e).await;
                continue;
            }
        };
        if !d.raw_payload && ce::has_expired(&event, Utc::now()) {
            tracing::warn!(id = ?event.get(ce::ID), "dropping expired pub/sub event");
            let _ = d.to_dead_letter(msg).await;
            continue;
        }
        match find_route(&d.rules, &event) {
            Ok(Some(path)) => by_path.entry(path).or_default().push(Entry {
                index,
                entry_id: uuid::Uuid::new_v4().to_string(),
                event,
            }),
            Ok(None) => {
                tracing::warn!(pubsub = %d.pubsub_name, topic = %d.topic, "no matching route for event; skipping");
                let _ = d.to_dead_letter(msg).await;
            }
            Err(e) => {
                tracing::error!(topic = %d.topic, "{e}");
                results[index] = fail_or_dead_letter(d, msg, e.to_string()).await;
            }
        }
    }
    for (path, entries) in by_path {
        let pending = Mutex::new(entries);
        let outcome = d
            .policy
            .execute(|_| attempt(d, &path, msgs, &pending))
            .await;
        let left = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        if left.is_empty() {
            continue;
        }
        let reason = match outcome {
            Ok(()) => "not processed".to_owned(),
            Err(PolicyError::Operation(e)) => e.to_string(),
            Err(other) => other.to_string(),
        };
        tracing::warn!(topic = %d.topic, entries = left.len(), error = %reason, "bulk pub/sub events not processed");
        for e in left {
            results[e.index] = fail_or_dead_letter(d, &msgs[e.index], reason.clone()).await;
        }
    }
    results
}

/// An entry that cannot be processed: to the dead-letter topic when one
/// is set (then acked), else left to the broker.
async fn fail_or_dead_letter(
    d: &Deliverer,
    msg: &Message,
    reason: String,
) -> Result<(), HandlerError> {
    if !d.dead_letter_topic.is_empty() && d.to_dead_letter(msg).await.is_ok() {
        return Ok(());
    }
    Err(HandlerError(reason))
}

/// One call with the entries still pending; those the app took (SUCCESS or
/// DROP) leave `pending`. An error while some remain lets the policy retry.
async fn attempt(
    d: &Deliverer,
    path: &str,
    msgs: &[Message],
    pending: &Mutex<Vec<Entry>>,
) -> Result<(), DeliveryError> {
    d.wait_healthy().await;
    let statuses = {
        // Snapshot: the lock is not held across the call.
        let snapshot: Vec<(String, usize, Map<String, Value>)> = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| (e.entry_id.clone(), e.index, e.event.clone()))
            .collect();
        if snapshot.is_empty() {
            return Ok(());
        }
        match &d.grpc {
            Some(_) => call_grpc(d, path, msgs, &snapshot).await?,
            None => call_http(d, path, msgs, &snapshot).await?,
        }
    };
    let mut dropped = Vec::new();
    let remaining = {
        let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|e| match statuses.get(&e.entry_id) {
            Some(EntryStatus::Success) => false,
            Some(EntryStatus::Drop) => {
                dropped.push(e.index);
                false
            }
            Some(EntryStatus::Retry) | None => true,
        });
        p.len()
    };
    for i in dropped {
        tracing::warn!(topic = %d.topic, "DROP status returned from app while processing pub/sub event");
        let _ = d.to_dead_letter(&msgs[i]).await;
    }
    if remaining > 0 {
        return Err(DeliveryError::RetryRequested(format!(
            "{remaining} bulk entries"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct AppBulkResponse {
    #[serde(default)]
    statuses: Vec<AppBulkResponseEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppBulkResponseEntry {
    #[serde(default)]
    entry_id: String,
    #[serde(default)]
    status: String,
}

fn batch_metadata(d: &Deliverer) -> HashMap<String, String> {
    HashMap::from([(METADATA_PUBSUB.to_owned(), d.pubsub_name.clone())])
}

async fn call_http(
    d: &Deliverer,
    path: &str,
    msgs: &[Message],
    entries: &[(String, usize, Map<String, Value>)],
) -> Result<HashMap<String, EntryStatus>, DeliveryError> {
    let items: Vec<Value> = entries
        .iter()
        .map(|(id, index, event)| {
            let msg = &msgs[*index];
            let (event, content_type) = if d.raw_payload {
                (
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&msg.data)),
                    msg.content_type
                        .clone()
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                )
            } else {
                (
                    Value::Object(event.clone()),
                    msg.content_type
                        .clone()
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| ce::CLOUD_EVENT_CONTENT_TYPE.to_owned()),
                )
            };
            json!({"entryId": id, "event": event, "metadata": msg.metadata, "contentType": content_type})
        })
        .collect();
    let metadata = batch_metadata(d);
    let envelope = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": BULK_EVENT_TYPE,
        "topic": d.topic,
        "pubsubname": d.pubsub_name,
        "metadata": metadata,
        "entries": items,
    });
    let body = serde_json::to_vec(&envelope).map_err(|e| DeliveryError::Event(e.to_string()))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let path = format!("/{}", path.trim_start_matches('/'));
    let resp = d
        .app
        .call_http(Method::POST, &path, &headers, axum::body::Body::from(body))
        .await
        .map_err(|e| DeliveryError::Channel(e.to_string()))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        let answer: AppBulkResponse = serde_json::from_slice(&bytes).map_err(|e| {
            DeliveryError::Event(format!(
                "failed unmarshalling app response for bulk subscribe: {e}"
            ))
        })?;
        let known: std::collections::HashSet<&str> =
            entries.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut out = HashMap::new();
        for r in answer.statuses {
            if !known.contains(r.entry_id.as_str()) {
                tracing::warn!(entry = %r.entry_id, "invalid entry id received from app while processing bulk pub/sub event");
                continue;
            }
            let s = match r.status.as_str() {
                "SUCCESS" => EntryStatus::Success,
                "DROP" => EntryStatus::Drop,
                // Empty and unknown statuses are retried, as in Dapr.
                _ => EntryStatus::Retry,
            };
            out.insert(r.entry_id, s);
        }
        return Ok(out);
    }
    if status == StatusCode::NOT_FOUND {
        tracing::error!(
            "non-retriable error returned from app while processing bulk pub/sub event: status 404"
        );
        return Ok(entries
            .iter()
            .map(|(id, _, _)| (id.clone(), EntryStatus::Drop))
            .collect());
    }
    Err(DeliveryError::Status {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn call_grpc(
    d: &Deliverer,
    path: &str,
    msgs: &[Message],
    entries: &[(String, usize, Map<String, Value>)],
) -> Result<HashMap<String, EntryStatus>, DeliveryError> {
    let Some(client) = d.grpc.clone() else {
        return Err(DeliveryError::Channel("no gRPC app channel".into()));
    };
    let mut items = Vec::with_capacity(entries.len());
    for (id, index, event) in entries {
        let msg = &msgs[*index];
        let (event, content_type) = if d.raw_payload {
            (
                GrpcEntryEvent::Bytes(msg.data.to_vec()),
                msg.content_type.clone().unwrap_or_default(),
            )
        } else {
            let req = topic_event_request(event, &d.topic, &d.pubsub_name, path)
                .map_err(DeliveryError::Event)?;
            (
                GrpcEntryEvent::CloudEvent(pb::TopicEventCeRequest {
                    id: req.id,
                    source: req.source,
                    r#type: req.r#type,
                    spec_version: req.spec_version,
                    data_content_type: req.data_content_type,
                    data: req.data,
                    extensions: req.extensions,
                }),
                msg.content_type
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| ce::CLOUD_EVENT_CONTENT_TYPE.to_owned()),
            )
        };
        items.push(pb::TopicEventBulkRequestEntry {
            entry_id: id.clone(),
            content_type,
            metadata: msg.metadata.clone(),
            event: Some(event),
        });
    }
    let request = pb::TopicEventBulkRequest {
        id: uuid::Uuid::new_v4().to_string(),
        entries: items,
        metadata: batch_metadata(d),
        topic: d.topic.clone(),
        pubsub_name: d.pubsub_name.clone(),
        r#type: BULK_EVENT_TYPE.to_owned(),
        path: path.to_owned(),
    };
    let mut v1 = client.clone();
    let resp = match v1
        .on_bulk_topic_event(with_app_token(request.clone()))
        .await
    {
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let mut alpha = alpha_client(d)?;
            // Deprecated upstream, still Dapr's fallback for older SDKs.
            #[allow(deprecated)]
            alpha
                .on_bulk_topic_event_alpha1(with_app_token(request))
                .await
        }
        other => other,
    };
    let resp = match resp {
        Ok(r) => r.into_inner(),
        // An app without the bulk callback can never take the batch.
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            tracing::warn!(
                "non-retriable error returned from app while processing bulk pub/sub event: {}",
                s.message()
            );
            return Ok(entries
                .iter()
                .map(|(id, _, _)| (id.clone(), EntryStatus::Drop))
                .collect());
        }
        Err(s) => {
            return Err(DeliveryError::Grpc {
                code: s.code(),
                message: s.message().to_owned(),
            });
        }
    };
    let mut out = HashMap::new();
    for r in resp.statuses {
        let s = match TopicEventResponseStatus::try_from(r.status) {
            Ok(TopicEventResponseStatus::Success) => EntryStatus::Success,
            Ok(TopicEventResponseStatus::Drop) => EntryStatus::Drop,
            Ok(TopicEventResponseStatus::Retry) | Err(_) => EntryStatus::Retry,
        };
        out.insert(r.entry_id, s);
    }
    Ok(out)
}

/// `AppCallbackAlpha` on the app's address (older SDKs serve only that).
fn alpha_client(
    d: &Deliverer,
) -> Result<AppCallbackAlphaClient<tonic::transport::Channel>, DeliveryError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", d.app.address))
        .map_err(|e| DeliveryError::Channel(e.to_string()))?
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(AppCallbackAlphaClient::new(channel))
}
