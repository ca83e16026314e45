//! `pubsub.rabbitmq`: RabbitMQ (AMQP 0-9-1), with Dapr's component metadata.
//!
//! A topic is an exchange (`exchangeKind`, fanout by default) that
//! publishing declares. A subscription declares the queue
//! `<consumerID>-<topic>` (consumer id = app id unless set), binds it and
//! consumes with manual acks, so the replicas of one app compete for its
//! queue and every app gets every message. Success acks; failure nacks with
//! `requeue = requeueInFailure`. With `enableDeadLetter` the queue
//! dead-letters to the fanout exchange `dlx-<queue>`, bound to the queue
//! `dlq-<queue>`. `durable` and `deletedWhenUnused` set the queue's and
//! exchange's lifetime, `prefetchCount` the channel's QoS.
//!
//! `bindings.rabbitmq` shares [`dial`] and the header conversions.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, DefaultConnectionBuilder,
    ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::{Mutex, mpsc};

use super::{
    CONSUMER_ID_KEY, Message, MessageHandler, PubSub, PubSubError, PublishRequest, StopSignal,
    SubscribeRequest, Subscription,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_CONCURRENCY: usize = 10;

use super::invalid_metadata as invalid;

fn backend(what: &str, e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Backend(format!("rabbitmq: {what}: {e}"))
}

use super::lookup_metadata as lookup;

fn flag(
    req: &HashMap<String, String>,
    md: &ComponentMetadata,
    key: &str,
    default: bool,
) -> Result<bool, PubSubError> {
    match lookup(req, md, key) {
        None => Ok(default),
        Some(v) => v
            .parse::<bool>()
            .map_err(|_| invalid(key, "expected true or false")),
    }
}

fn exchange_kind(md: &ComponentMetadata) -> Result<ExchangeKind, PubSubError> {
    match md
        .get("exchangeKind")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("fanout") => Ok(ExchangeKind::Fanout),
        Some("topic") => Ok(ExchangeKind::Topic),
        Some("direct") => Ok(ExchangeKind::Direct),
        Some("headers") => Ok(ExchangeKind::Headers),
        Some(_) => Err(invalid(
            "exchangeKind",
            "expected fanout, topic, direct or headers",
        )),
    }
}

/// Component-wide settings.
struct Settings {
    uri: String,
    durable: bool,
    deleted_when_unused: bool,
    exchange_kind: ExchangeKind,
    delivery_mode: u8,
    publisher_confirm: bool,
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let none = HashMap::new();
        let uri = match md.get("connectionString").filter(|v| !v.is_empty()) {
            Some(c) => c.to_owned(),
            None => {
                let host = md
                    .get("hostname")
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        PubSubError::Metadata(MetadataError::Missing("connectionString".into()))
                    })?;
                let protocol = md.get("protocol").unwrap_or("amqp");
                match (md.get("username"), md.get("password")) {
                    (Some(u), Some(p)) => format!("{protocol}://{u}:{p}@{host}"),
                    _ => format!("{protocol}://{host}"),
                }
            }
        };
        let delivery_mode = md.get_parsed::<u8>("deliveryMode")?.unwrap_or(0);
        if delivery_mode > 2 {
            return Err(invalid("deliveryMode", "expected 0, 1 or 2"));
        }
        Ok(Self {
            uri,
            durable: flag(&none, md, "durable", false)?,
            deleted_when_unused: flag(&none, md, "deletedWhenUnused", true)?,
            exchange_kind: exchange_kind(md)?,
            delivery_mode,
            publisher_confirm: flag(&none, md, "publisherConfirm", false)?,
        })
    }
}

/// Per-subscription settings: subscription metadata overrides the component's.
struct SubscribeSettings {
    queue: String,
    routing_keys: Vec<String>,
    prefetch: u16,
    requeue_in_failure: bool,
    dead_letter: bool,
    concurrency: usize,
    max_len: Option<i64>,
    max_len_bytes: Option<i64>,
}

impl SubscribeSettings {
    fn new(md: &ComponentMetadata, req: &SubscribeRequest) -> Result<Self, PubSubError> {
        let m = &req.metadata;
        let consumer = lookup(m, md, CONSUMER_ID_KEY)
            .map(str::to_owned)
            .unwrap_or_else(|| req.consumer_group.clone());
        if consumer.is_empty() {
            return Err(invalid(CONSUMER_ID_KEY, "no consumer id (app id)"));
        }
        let num = |key: &str| -> Result<Option<i64>, PubSubError> {
            lookup(m, md, key)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| invalid(key, "expected a non-negative integer"))
                })
                .transpose()
        };
        let prefetch = u16::try_from(num("prefetchCount")?.unwrap_or(0))
            .map_err(|_| invalid("prefetchCount", "at most 65535"))?;
        let concurrency = match lookup(m, md, "concurrencyMode").or(lookup(m, md, "concurrency")) {
            None => DEFAULT_CONCURRENCY,
            Some(v) if v.eq_ignore_ascii_case("single") => 1,
            Some(v) if v.eq_ignore_ascii_case("parallel") => DEFAULT_CONCURRENCY,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("concurrencyMode", "expected single or parallel"))?,
        };
        let routing_keys = lookup(m, md, "routingKey")
            .map(|k| k.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_else(|| vec![String::new()]);
        Ok(Self {
            queue: lookup(m, md, "queueName")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{consumer}-{}", req.topic)),
            routing_keys,
            prefetch,
            requeue_in_failure: flag(m, md, "requeueInFailure", false)?,
            dead_letter: flag(m, md, "enableDeadLetter", false)?,
            concurrency,
            max_len: num("maxLen")?.filter(|n| *n > 0),
            max_len_bytes: num("maxLenBytes")?.filter(|n| *n > 0),
        })
    }
}

pub struct RabbitMqPubSub {
    conn: Connection,
    publisher: Channel,
    /// Exchanges this instance already declared (publishing declares once).
    declared: Mutex<HashSet<String>>,
    settings: Settings,
    component: ComponentMetadata,
}

impl RabbitMqPubSub {
    /// Connects and opens the publishing channel.
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let settings = Settings::from_metadata(md)?;
        SubscribeSettings::new(
            md,
            &SubscribeRequest {
                topic: "validate".into(),
                consumer_group: md.app_id.clone(),
                ..Default::default()
            },
        )?;
        let conn = dial(
            &settings.uri,
            md.get("clientName").unwrap_or("dapr"),
            OwnedTLSConfig::default(),
            &format!("rabbitmq pub/sub '{}'", md.name),
        )
        .await?;
        let publisher = conn
            .create_channel()
            .await
            .map_err(|e| backend("open channel", e))?;
        if settings.publisher_confirm {
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| backend("confirm mode", e))?;
        }
        tracing::info!(component = %md.name, "rabbitmq pub/sub connected");
        Ok(Self {
            conn,
            publisher,
            declared: Mutex::new(HashSet::new()),
            settings,
            component: md.clone(),
        })
    }

    async fn declare_exchange(&self, channel: &Channel, name: &str) -> Result<(), PubSubError> {
        channel
            .exchange_declare(
                name.into(),
                self.settings.exchange_kind.clone(),
                ExchangeDeclareOptions {
                    durable: self.settings.durable,
                    auto_delete: self.settings.deleted_when_unused,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| backend(&format!("declare exchange '{name}'"), e))
    }
}

/// Connects to `uri` (`amqp://` or `amqps://`; `tls` adds a CA and a client
/// identity). `what` names the component in errors: the URI holds the
/// password, so it is never quoted.
pub(crate) async fn dial(
    uri: &str,
    connection_name: &str,
    tls: OwnedTLSConfig,
    what: &str,
) -> Result<Connection, PubSubError> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let builder = DefaultConnectionBuilder::new()
        .map_err(|e| PubSubError::Connect(format!("{what}: {e}")))?
        .with_uri_str(uri.to_owned())
        .with_properties(props)
        .with_tls_config(tls);
    tokio::time::timeout(std::time::Duration::from_secs(10), builder.connect())
        .await
        .map_err(|_| PubSubError::Connect(format!("{what}: timed out")))?
        .map_err(|e| PubSubError::Connect(format!("{what}: {e}")))
}

pub(crate) fn long_string(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.as_bytes().to_vec().into())
}

/// A header value as text, if it is a string.
pub(crate) fn header_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn to_message(topic: &str, d: &Delivery) -> Message {
    let mut metadata = HashMap::new();
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let value = header_text(v).unwrap_or_else(|| format!("{v:?}"));
            metadata.insert(k.as_str().to_owned(), value);
        }
    }
    Message {
        topic: topic.to_owned(),
        data: Bytes::copy_from_slice(&d.data),
        content_type: d
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned()),
        metadata,
    }
}

#[async_trait]
impl PubSub for RabbitMqPubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if !self.declared.lock().await.contains(&req.topic) {
            self.declare_exchange(&self.publisher, &req.topic).await?;
            self.declared.lock().await.insert(req.topic.clone());
        }
        let mut props = BasicProperties::default();
        if let Some(ct) = &req.content_type {
            props = props.with_content_type(ct.as_str().into());
        }
        if self.settings.delivery_mode > 0 {
            props = props.with_delivery_mode(self.settings.delivery_mode);
        }
        let routing_key = req.metadata.get("routingKey").cloned().unwrap_or_default();
        if !req.metadata.is_empty() {
            let mut headers = FieldTable::default();
            for (k, v) in &req.metadata {
                headers.insert(k.as_str().into(), long_string(v));
            }
            props = props.with_headers(headers);
        }
        let confirm = self
            .publisher
            .basic_publish(
                req.topic.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &req.data,
                props,
            )
            .await
            .map_err(|e| backend(&format!("publish to '{}'", req.topic), e))?;
        if self.settings.publisher_confirm {
            let c = confirm
                .await
                .map_err(|e| backend(&format!("publish to '{}'", req.topic), e))?;
            if c.is_nack() {
                return Err(backend(
                    &format!("publish to '{}'", req.topic),
                    "the broker refused the message",
                ));
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError> {
        let s = SubscribeSettings::new(&self.component, &req)?;
        let topic = req.topic.clone();
        let channel = self
            .conn
            .create_channel()
            .await
            .map_err(|e| backend("open channel", e))?;
        if s.prefetch > 0 {
            channel
                .basic_qos(s.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| backend("prefetchCount", e))?;
        }
        self.declare_exchange(&channel, &topic).await?;
        let queue_opts = QueueDeclareOptions {
            durable: self.settings.durable,
            auto_delete: self.settings.deleted_when_unused,
            ..Default::default()
        };
        let mut args = FieldTable::default();
        if s.dead_letter {
            let dlx = format!("dlx-{}", s.queue);
            let dlq = format!("dlq-{}", s.queue);
            channel
                .exchange_declare(
                    dlx.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: self.settings.durable,
                        auto_delete: self.settings.deleted_when_unused,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| backend(&format!("declare exchange '{dlx}'"), e))?;
            channel
                .queue_declare(dlq.as_str().into(), queue_opts, FieldTable::default())
                .await
                .map_err(|e| backend(&format!("declare queue '{dlq}'"), e))?;
            channel
                .queue_bind(
                    dlq.as_str().into(),
                    dlx.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| backend(&format!("bind queue '{dlq}'"), e))?;
            args.insert("x-dead-letter-exchange".into(), long_string(&dlx));
        }
        if let Some(n) = s.max_len {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
        }
        if let Some(n) = s.max_len_bytes {
            args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n));
        }
        channel
            .queue_declare(s.queue.as_str().into(), queue_opts, args)
            .await
            .map_err(|e| backend(&format!("declare queue '{}'", s.queue), e))?;
        for key in &s.routing_keys {
            channel
                .queue_bind(
                    s.queue.as_str().into(),
                    topic.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| backend(&format!("bind queue '{}'", s.queue), e))?;
        }
        let tag: ShortString = format!("dapr-{}", uuid::Uuid::new_v4().simple())
            .as_str()
            .into();
        let consumer = channel
            .basic_consume(
                s.queue.as_str().into(),
                tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| backend(&format!("consume '{}'", s.queue), e))?;
        let (stop_tx, stop) = StopSignal::pair();
        let (tx, rx) = mpsc::channel::<Delivery>(s.concurrency);
        let rx = Arc::new(Mutex::new(rx));
        let mut tasks = vec![tokio::spawn(read_loop(
            channel,
            consumer,
            tag,
            topic.clone(),
            tx,
            stop.clone(),
        ))];
        for _ in 0..s.concurrency {
            tasks.push(tokio::spawn(work_loop(
                topic.clone(),
                s.requeue_in_failure,
                rx.clone(),
                handler.clone(),
                stop.clone(),
            )));
        }
        Ok(Subscription::new(stop_tx, tasks))
    }
}

/// Owns the subscription's channel: when this task ends (stop or abort)
/// the channel closes and unacknowledged deliveries go back to the queue.
async fn read_loop(
    channel: Channel,
    mut consumer: lapin::Consumer,
    tag: ShortString,
    topic: String,
    tx: mpsc::Sender<Delivery>,
    mut stop: StopSignal,
) {
    loop {
        let next = tokio::select! {
            _ = stop.stopped() => {
                let _ = channel.basic_cancel(tag, BasicCancelOptions::default()).await;
                return;
            }
            d = consumer.next() => d,
        };
        match next {
            Some(Ok(d)) => {
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(topic = %topic, error = %e, "rabbitmq pub/sub: consumer failed");
                return;
            }
            None => {
                tracing::warn!(topic = %topic, "rabbitmq pub/sub: the broker cancelled the consumer");
                return;
            }
        }
    }
}

async fn work_loop(
    topic: String,
    requeue: bool,
    rx: Arc<Mutex<mpsc::Receiver<Delivery>>>,
    handler: Arc<dyn MessageHandler>,
    mut stop: StopSignal,
) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            tokio::select! {
                _ = stop.stopped() => return,
                d = rx.recv() => d,
            }
        };
        let Some(d) = next else { return };
        let res = match handler.handle(to_message(&topic, &d)).await {
            Ok(()) => d.ack(BasicAckOptions::default()).await,
            Err(e) => {
                tracing::debug!(topic = %topic, error = %e, requeue, "rabbitmq pub/sub: handler failed; nack");
                d.nack(BasicNackOptions {
                    requeue,
                    ..Default::default()
                })
                .await
            }
        };
        if let Err(e) = res {
            tracing::warn!(topic = %topic, error = %e, "rabbitmq pub/sub: ack failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_consumer_id_dash_topic() {
        let md = ComponentMetadata::new("pubsub", "rmq").with("connectionString", "amqp://h");
        let req = SubscribeRequest {
            topic: "orders".into(),
            consumer_group: "app".into(),
            metadata: HashMap::new(),
        };
        let s = SubscribeSettings::new(&md, &req).unwrap();
        assert_eq!(s.queue, "app-orders");
        assert!(!s.requeue_in_failure && !s.dead_letter);
        let md = md
            .with("consumerID", "other")
            .with("prefetchCount", "70000");
        assert!(SubscribeSettings::new(&md, &req).is_err());
        let md = ComponentMetadata::new("pubsub", "rmq");
        assert!(Settings::from_metadata(&md).is_err(), "no connection info");
        let md = md.with("hostname", "h").with("exchangeKind", "odd");
        assert!(Settings::from_metadata(&md).is_err());
    }
}
