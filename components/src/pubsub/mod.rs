//! The pub/sub building block: the `PubSub` trait every broker implements,
//! message and subscription types, and Dapr's CloudEvents envelope.
//!
//! A broker only moves bytes: the runtime builds envelopes, routes, delivers
//! to the app and decides between ack and nack. A subscription hands each
//! message to a [`MessageHandler`]; `Ok` acknowledges it, `Err` leaves it to
//! the broker's redelivery.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::{sync::watch, task::JoinHandle};

use crate::{ComponentMetadata, MetadataError};

pub mod envelope;
pub mod jetstream;
pub mod memory;
pub mod mqtt;
pub mod rabbitmq;
pub mod redis;

/// Component types this build can create.
pub const SUPPORTED_TYPES: &[&str] = &[
    "pubsub.in-memory",
    "pubsub.redis",
    "pubsub.jetstream",
    "pubsub.rabbitmq",
    "pubsub.mqtt3",
];

/// Subscription metadata naming the consumer group (Dapr's `consumerID`).
pub const CONSUMER_ID_KEY: &str = "consumerID";

#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Backend(String),
    #[error("unsupported pub/sub type '{0}' (this build supports {list})", list = SUPPORTED_TYPES.join(", "))]
    Unsupported(String),
    #[error("the pub/sub component is closed")]
    Closed,
}

/// One message to publish: already the bytes that travel (an envelope or a
/// raw payload).
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    pub topic: String,
    pub data: Bytes,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// A message as a subscription receives it.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub topic: String,
    pub data: Bytes,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// What a subscription listens to. `consumer_group` is who competes for the
/// messages (the app id in Dapr); every distinct group gets every message.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    pub topic: String,
    pub consumer_group: String,
    pub metadata: HashMap<String, String>,
}

/// The handler failed: the message is not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError>;
}

/// A running subscription. Dropping it aborts its tasks at once (a crash, as
/// far as the broker can tell); [`Subscription::stop`] lets handlers finish.
pub struct Subscription {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscription {
    /// Wraps tasks that watch `stop` (see [`StopSignal`]).
    pub fn new(stop: watch::Sender<bool>, tasks: Vec<JoinHandle<()>>) -> Self {
        Self { stop, tasks }
    }

    /// Stops taking new messages and waits up to `grace` for handlers in
    /// flight; unfinished ones are aborted and stay unacknowledged.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(grace, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            for a in aborts {
                a.abort();
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The receiving side of a subscription's stop signal.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn pair() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stop was requested (or the sender is gone).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

#[async_trait]
pub trait PubSub: Send + Sync {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError>;

    /// Publishes each entry; the result lists the indexes that failed. Brokers
    /// with a native batch call override it.
    async fn bulk_publish(&self, reqs: Vec<PublishRequest>) -> Vec<(usize, PubSubError)> {
        let mut failed = Vec::new();
        for (i, req) in reqs.into_iter().enumerate() {
            if let Err(e) = self.publish(req).await {
                failed.push((i, e));
            }
        }
        failed
    }

    /// Starts delivering messages of `req.topic` to `handler`.
    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError>;

    /// Feature names for the metadata API.
    fn features(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds a pub/sub component from its `spec.type` and metadata.
pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn PubSub>, PubSubError> {
    match type_ {
        "pubsub.in-memory" => Ok(Arc::new(memory::InMemoryPubSub::new(metadata)?)),
        "pubsub.redis" => Ok(Arc::new(redis::RedisPubSub::connect(metadata).await?)),
        "pubsub.rabbitmq" => Ok(Arc::new(rabbitmq::RabbitMqPubSub::connect(metadata).await?)),
        "pubsub.jetstream" => Ok(Arc::new(
            jetstream::JetStreamPubSub::connect(metadata).await?,
        )),
        "pubsub.mqtt3" => Ok(Arc::new(mqtt::MqttPubSub::connect(metadata).await?)),
        other => Err(PubSubError::Unsupported(other.to_owned())),
    }
}

/// Reads a duration given as a Go duration string or a number of
/// milliseconds (Dapr's pub/sub components accept both).
pub fn duration_or_millis(
    md: &HashMap<String, String>,
    component: &ComponentMetadata,
    key: &str,
) -> Result<Option<Duration>, MetadataError> {
    let value = md
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .or_else(|| component.get(key));
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(Duration::from_millis(ms)));
    }
    crate::duration::parse_go_duration(v)
        .map(Some)
        .map_err(|e| MetadataError::Invalid {
            field: key.to_owned(),
            reason: e.to_string(),
        })
}

/// A metadata value that fails validation.
pub(crate) fn invalid_metadata(field: &str, reason: impl Into<String>) -> PubSubError {
    PubSubError::Metadata(MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    })
}

/// Looks a key up in the subscription metadata first, then the component's
/// (case-insensitive; blank values count as absent).
pub(crate) fn lookup_metadata<'a>(
    req: &'a HashMap<String, String>,
    md: &'a ComponentMetadata,
    key: &str,
) -> Option<&'a str> {
    req.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .or_else(|| md.get(key))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
