//! The transactional outbox: a state store with `outboxPublishPubsub` and
//! `outboxPublishTopic` publishes an event for every upsert of a state
//! transaction, if and only if the transaction commits. Dapr's two-phase
//! design, message shapes and names:
//!
//! 1. Before the transaction runs, each upsert becomes a CloudEvent whose id
//!    is a fresh marker key `outbox-<uuid>` (data = the value, or that of an
//!    op with `outbox.projection: true` for the same key, which is not saved),
//!    published on `outboxPubsub` (default: the publish pub/sub) to the
//!    internal topic `<namespace><app id><topic>outbox`; the marker key (value
//!    `"0"`) joins the transaction.
//! 2. daprd's own subscription to that topic waits for the marker to appear
//!    in the store (it appears only if the transaction committed), publishes
//!    the event to `outboxPublishTopic` on `outboxPublishPubsub`, then deletes
//!    the marker. A marker that never appears (a failed transaction) leaves
//!    the message unacknowledged for redelivery, or drops it with
//!    `outboxDiscardWhenMissingState: true`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use dapr_components::{
    ComponentMetadata,
    pubsub::{
        HandlerError, Message, MessageHandler, PublishRequest, SubscribeRequest, Subscription,
        envelope as ce,
    },
    state::{DeleteRequest, GetRequest, SetRequest, TransactionOp},
};
use serde_json::Value;

use crate::components::{Registry, StateStoreEntry};

pub const PUBLISH_PUBSUB_KEY: &str = "outboxPublishPubsub";
pub const PUBLISH_TOPIC_KEY: &str = "outboxPublishTopic";
pub const OUTBOX_PUBSUB_KEY: &str = "outboxPubsub";
pub const DISCARD_WHEN_MISSING_KEY: &str = "outboxDiscardWhenMissingState";
/// Op metadata marking the value to publish instead of the saved one.
pub const PROJECTION_KEY: &str = "outbox.projection";
const MARKER_PREFIX: &str = "outbox-";
/// How long the relay looks for the marker before giving the message back
/// (Dapr: 1 s delay, then back-off for up to 10 s).
const MARKER_PATIENCE: Duration = Duration::from_secs(10);

/// A state store's outbox settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    pub publish_pubsub: String,
    pub publish_topic: String,
    pub outbox_pubsub: String,
    pub discard_when_missing_state: bool,
}

impl OutboxConfig {
    /// `None` unless both `outboxPublishPubsub` and `outboxPublishTopic` are set.
    pub fn from_metadata(md: &ComponentMetadata) -> Option<Self> {
        let get = |k: &str| md.get(k).map(str::trim).filter(|v| !v.is_empty());
        let publish_pubsub = get(PUBLISH_PUBSUB_KEY)?.to_owned();
        let publish_topic = get(PUBLISH_TOPIC_KEY)?.to_owned();
        Some(Self {
            outbox_pubsub: get(OUTBOX_PUBSUB_KEY)
                .map(str::to_owned)
                .unwrap_or_else(|| publish_pubsub.clone()),
            discard_when_missing_state: get(DISCARD_WHEN_MISSING_KEY).is_some_and(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "true" | "t" | "1" | "yes" | "y" | "on"
                )
            }),
            publish_pubsub,
            publish_topic,
        })
    }

    /// Dapr's internal topic name.
    pub fn internal_topic(&self, app_id: &str, namespace: &str) -> String {
        format!("{namespace}{app_id}{}outbox", self.publish_topic)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox pubsub {0} is not found")]
    PubSubNotFound(String),
    /// The broker's own error: the API error adds Dapr's prefix.
    #[error("{0}")]
    Publish(String),
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "t" | "1" | "yes" | "y" | "on"
    )
}

/// Phase 1, for a transaction on an outbox store: publishes one internal
/// event per upsert and returns the operations to run (projections removed,
/// marker keys added).
pub async fn publish_internal(
    registry: &Registry,
    config: &OutboxConfig,
    app_id: &str,
    namespace: &str,
    ops: Vec<TransactionOp>,
    trace_parent: &str,
) -> Result<Vec<TransactionOp>, OutboxError> {
    let broker = registry
        .pubsub(&config.outbox_pubsub)
        .ok_or_else(|| OutboxError::PubSubNotFound(config.outbox_pubsub.clone()))?;
    let is_projection = |op: &TransactionOp| match op {
        TransactionOp::Set(s) => s.metadata.get(PROJECTION_KEY).is_some_and(|v| truthy(v)),
        _ => false,
    };
    let (projections, mut ops): (Vec<_>, Vec<_>) = ops.into_iter().partition(is_projection);
    let projections: HashMap<String, SetRequest> = projections
        .into_iter()
        .filter_map(|op| match op {
            TransactionOp::Set(s) => Some((s.key.clone(), s)),
            _ => None,
        })
        .collect();
    let topic = config.internal_topic(app_id, namespace);
    let mut markers = Vec::new();
    for op in &ops {
        let TransactionOp::Set(set) = op else {
            continue;
        };
        let source = projections.get(&set.key).unwrap_or(set);
        let content_type = source
            .content_type
            .clone()
            .or_else(|| source.metadata.get("contentType").cloned())
            .unwrap_or_default();
        let marker = format!("{MARKER_PREFIX}{}", uuid::Uuid::new_v4());
        let mut event = ce::new_envelope(
            ce::EnvelopeFields {
                id: marker.clone(),
                source: app_id.to_owned(),
                pubsub_name: config.outbox_pubsub.clone(),
                data_content_type: content_type,
                trace_parent: trace_parent.to_owned(),
                ..Default::default()
            },
            &source.value,
        );
        // Op metadata becomes CloudEvent attributes, as in Dapr.
        for (k, v) in &set.metadata {
            if k != ce::DATA && k != ce::ID {
                event.insert(k.clone(), Value::String(v.clone()));
            }
        }
        let data = serde_json::to_vec(&Value::Object(event))
            .map_err(|e| OutboxError::Publish(e.to_string()))?;
        broker
            .pubsub
            .publish(PublishRequest {
                topic: topic.clone(),
                data: data.into(),
                content_type: Some(ce::CLOUD_EVENT_CONTENT_TYPE.to_owned()),
                metadata: HashMap::new(),
            })
            .await
            .map_err(|e| OutboxError::Publish(e.to_string()))?;
        markers.push(TransactionOp::Set(SetRequest {
            key: marker,
            value: Bytes::from_static(b"0"),
            ..Default::default()
        }));
    }
    ops.extend(markers);
    Ok(ops)
}

/// Phase 2: daprd's subscription to one store's internal topic.
struct Relay {
    registry: Arc<Registry>,
    store_name: String,
    config: OutboxConfig,
}

impl Relay {
    fn store(&self) -> Result<StateStoreEntry, HandlerError> {
        self.registry.state_store(&self.store_name).ok_or_else(|| {
            HandlerError(format!(
                "cannot get outbox state: state store {} not found",
                self.store_name
            ))
        })
    }

    /// Polls for the marker with a growing pause, up to `MARKER_PATIENCE`.
    async fn marker_committed(&self, store: &StateStoreEntry, key: &str) -> bool {
        let deadline = tokio::time::Instant::now() + MARKER_PATIENCE;
        let mut pause = Duration::from_millis(20);
        loop {
            let req = GetRequest {
                key: key.to_owned(),
                ..Default::default()
            };
            match store.store.get(&req).await {
                Ok(Some(item)) if !item.value.is_empty() => return true,
                Ok(_) => {}
                Err(e) => tracing::debug!(key, error = %e, "outbox: reading the marker failed"),
            }
            if tokio::time::Instant::now() + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

#[async_trait]
impl MessageHandler for Relay {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let mut event = match serde_json::from_slice::<Value>(&msg.data) {
            Ok(Value::Object(m)) => m,
            _ => {
                tracing::error!(store = %self.store_name, "outbox: the internal message is not a CloudEvent; dropped");
                return Ok(());
            }
        };
        let Some(key) = event.get(ce::ID).and_then(Value::as_str).map(str::to_owned) else {
            tracing::error!(store = %self.store_name, "outbox: the internal message has no id; dropped");
            return Ok(());
        };
        let store = self.store()?;
        if !self.marker_committed(&store, &key).await {
            let c = &self.config;
            if c.discard_when_missing_state {
                tracing::error!(pubsub = %c.publish_pubsub, "failed to publish outbox topic: outbox state not found, discarding message");
                return Ok(());
            }
            return Err(HandlerError(format!(
                "cannot publish outbox message to topic {} with pubsub {}: outbox state not found",
                c.publish_topic, c.publish_pubsub
            )));
        }
        let target = self
            .registry
            .pubsub(&self.config.publish_pubsub)
            .ok_or_else(|| {
                HandlerError(format!(
                    "outbox publish pubsub {} is not found",
                    self.config.publish_pubsub
                ))
            })?;
        event.insert(
            ce::TOPIC.to_owned(),
            Value::String(self.config.publish_topic.clone()),
        );
        event.insert(
            ce::PUBSUB_NAME.to_owned(),
            Value::String(self.config.publish_pubsub.clone()),
        );
        let data =
            serde_json::to_vec(&Value::Object(event)).map_err(|e| HandlerError(e.to_string()))?;
        target
            .pubsub
            .publish(PublishRequest {
                topic: self.config.publish_topic.clone(),
                data: data.into(),
                content_type: Some(ce::CLOUD_EVENT_CONTENT_TYPE.to_owned()),
                metadata: HashMap::new(),
            })
            .await
            .map_err(|e| HandlerError(format!("outbox publish: {e}")))?;
        // Published: a failed delete would only republish on redelivery, so
        // try a few times, then let the message go.
        for attempt in 1..=3 {
            let req = DeleteRequest {
                key: key.clone(),
                ..Default::default()
            };
            match store.store.delete(&req).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    tracing::warn!(key = %key, error = %e, "outbox: cannot delete the marker")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        }
        Ok(())
    }
}

/// Subscribes daprd to the internal topic of every outbox store. Stores
/// whose outbox pub/sub is not loaded are skipped with a warning.
pub async fn subscribe_internal(
    registry: &Arc<Registry>,
    app_id: &str,
    namespace: &str,
) -> Vec<(String, Subscription)> {
    let mut out = Vec::new();
    for info in registry.infos() {
        if !info.type_.starts_with("state.") {
            continue;
        }
        let Some(entry) = registry.state_store(&info.name) else {
            continue;
        };
        let Some(config) = entry.outbox.as_deref().cloned() else {
            continue;
        };
        let Some(broker) = registry.pubsub(&config.outbox_pubsub) else {
            tracing::warn!(store = %info.name, pubsub = %config.outbox_pubsub, "could not subscribe to internal outbox topic: outbox pubsub not loaded");
            continue;
        };
        let topic = config.internal_topic(app_id, namespace);
        let relay = Relay {
            registry: registry.clone(),
            store_name: info.name.clone(),
            config,
        };
        match broker
            .pubsub
            .subscribe(
                SubscribeRequest {
                    topic: topic.clone(),
                    consumer_group: app_id.to_owned(),
                    metadata: HashMap::new(),
                },
                Arc::new(relay),
            )
            .await
        {
            Ok(s) => {
                tracing::info!(store = %info.name, topic = %topic, "outbox: subscribed to the internal topic");
                out.push((topic, s));
            }
            Err(e) => {
                tracing::error!(store = %info.name, topic = %topic, "outbox: cannot subscribe to the internal topic: {e}")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_metadata() {
        let md = ComponentMetadata::new("s", "app");
        assert!(OutboxConfig::from_metadata(&md).is_none());
        let md = md
            .with(PUBLISH_PUBSUB_KEY, "ps")
            .with(PUBLISH_TOPIC_KEY, "orders");
        let c = OutboxConfig::from_metadata(&md).unwrap();
        assert_eq!(c.outbox_pubsub, "ps");
        assert!(!c.discard_when_missing_state);
        assert_eq!(c.internal_topic("app", ""), "appordersoutbox");
        assert_eq!(c.internal_topic("app", "ns"), "nsappordersoutbox");
        let c = OutboxConfig::from_metadata(
            &md.with(OUTBOX_PUBSUB_KEY, "internal")
                .with(DISCARD_WHEN_MISSING_KEY, "true"),
        )
        .unwrap();
        assert_eq!(c.outbox_pubsub, "internal");
        assert!(c.discard_when_missing_state);
    }
}
