//! `pubsub.jetstream`: NATS JetStream, with Dapr's component metadata.
//!
//! A topic is a NATS subject; publishing waits for the stream's ack (so a
//! subject no stream captures is an error, as in Dapr, which leaves creating
//! streams to the operator). A subscription is a durable *pull* consumer
//! named after the consumer group (`durableName`, `queueGroupName`,
//! `consumerID` or the app id, in that order) and the topic, so the replicas
//! of one app compete for messages and every app gets every message. A
//! message is acked after its handler succeeded and nak'ed after it failed;
//! one whose replica died is redelivered after `ackWait`, up to `maxDeliver`
//! times. Pull instead of Dapr's push consumer: a pull consumer is what lets
//! replicas share one durable without a deliver subject per process.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::{
    HeaderMap, ServerAddr,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    },
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};

use super::{
    CONSUMER_ID_KEY, Message, MessageHandler, PubSub, PubSubError, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, duration_or_millis,
};
use crate::ComponentMetadata;

const DEFAULT_QUEUE_DEPTH: usize = 100;
const DEFAULT_CONCURRENCY: usize = 10;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
const CONTENT_TYPE_HEADER: &str = "Content-Type";

use super::invalid_metadata as invalid;

fn backend(what: &str, e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Backend(format!("jetstream: {what}: {e}"))
}

use super::lookup_metadata as lookup;

fn parse_num<T: std::str::FromStr>(
    req: &HashMap<String, String>,
    md: &ComponentMetadata,
    key: &str,
) -> Result<Option<T>, PubSubError> {
    lookup(req, md, key)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| invalid(key, format!("'{v}' is not a valid number")))
        })
        .transpose()
}

/// Consumer names may not hold `.`, `*`, `>`, path separators or whitespace.
fn consumer_name(group: &str, topic: &str) -> String {
    format!("{group}-{topic}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Per-subscription settings: subscription metadata overrides the component's.
struct SubscribeSettings {
    stream: Option<String>,
    consumer: pull::Config,
    queue_depth: usize,
    concurrency: usize,
}

impl SubscribeSettings {
    fn new(md: &ComponentMetadata, req: &SubscribeRequest) -> Result<Self, PubSubError> {
        let m = &req.metadata;
        let group = ["durableName", "queueGroupName", CONSUMER_ID_KEY]
            .iter()
            .find_map(|k| lookup(m, md, k))
            .map(str::to_owned)
            .unwrap_or_else(|| req.consumer_group.clone());
        if group.is_empty() {
            return Err(invalid(CONSUMER_ID_KEY, "no consumer group (app id)"));
        }
        let deliver_policy = deliver_policy(m, md)?;
        let ack_policy = match lookup(m, md, "ackPolicy").map(str::to_ascii_lowercase) {
            None => AckPolicy::Explicit,
            Some(p) => match p.as_str() {
                "explicit" => AckPolicy::Explicit,
                "all" => AckPolicy::All,
                "none" => AckPolicy::None,
                _ => return Err(invalid("ackPolicy", "expected explicit, all or none")),
            },
        };
        let backoff = match lookup(m, md, "backOff") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| {
                    crate::duration::parse_go_duration(d.trim())
                        .map_err(|e| invalid("backOff", e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        let count = |key: &str, default: usize| -> Result<usize, PubSubError> {
            match lookup(m, md, key) {
                None => Ok(default),
                // Dapr's jetstream takes `single` / `parallel`.
                Some(v) if v.eq_ignore_ascii_case("single") => Ok(1),
                Some(v) if v.eq_ignore_ascii_case("parallel") => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(invalid(key, "expected a positive integer")),
                },
            }
        };
        let consumer = pull::Config {
            durable_name: Some(consumer_name(&group, &req.topic)),
            filter_subject: req.topic.clone(),
            deliver_policy,
            ack_policy,
            ack_wait: duration_or_millis(m, md, "ackWait")?.unwrap_or_default(),
            max_deliver: parse_num::<i64>(m, md, "maxDeliver")?.unwrap_or_default(),
            backoff,
            max_ack_pending: parse_num::<i64>(m, md, "maxAckPending")?.unwrap_or_default(),
            num_replicas: parse_num::<usize>(m, md, "replicas")?.unwrap_or_default(),
            memory_storage: match lookup(m, md, "memoryStorage") {
                None => false,
                Some(v) => v
                    .parse::<bool>()
                    .map_err(|_| invalid("memoryStorage", "expected true or false"))?,
            },
            rate_limit: parse_num::<u64>(m, md, "rateLimit")?.unwrap_or_default(),
            ..Default::default()
        };
        Ok(Self {
            stream: lookup(m, md, "streamName").map(str::to_owned),
            consumer,
            queue_depth: count("queueDepth", DEFAULT_QUEUE_DEPTH)?,
            concurrency: count("concurrency", DEFAULT_CONCURRENCY)?,
        })
    }
}

/// `deliverPolicy` (all, last, new, sequence, time); `startSequence` and
/// `startTime` (Unix seconds) pick their policy on their own, as in Dapr.
fn deliver_policy(
    m: &HashMap<String, String>,
    md: &ComponentMetadata,
) -> Result<DeliverPolicy, PubSubError> {
    let start_time = parse_num::<i64>(m, md, "startTime")?.filter(|t| *t > 0);
    let start_seq = parse_num::<u64>(m, md, "startSequence")?.filter(|s| *s > 0);
    let by_time = |t: i64| {
        async_nats::datetime::from_nanos(i128::from(t) * 1_000_000_000)
            .map(|start_time| DeliverPolicy::ByStartTime { start_time })
            .map_err(|e| invalid("startTime", e.to_string()))
    };
    match lookup(m, md, "deliverPolicy").map(str::to_ascii_lowercase) {
        None => match (start_time, start_seq) {
            (Some(t), _) => by_time(t),
            (None, Some(s)) => Ok(DeliverPolicy::ByStartSequence { start_sequence: s }),
            (None, None) => Ok(DeliverPolicy::All),
        },
        Some(p) => match p.as_str() {
            "all" => Ok(DeliverPolicy::All),
            "last" => Ok(DeliverPolicy::Last),
            "new" => Ok(DeliverPolicy::New),
            "sequence" => start_seq
                .map(|s| DeliverPolicy::ByStartSequence { start_sequence: s })
                .ok_or_else(|| invalid("startSequence", "deliverPolicy 'sequence' needs it")),
            "time" => start_time
                .map(by_time)
                .unwrap_or_else(|| Err(invalid("startTime", "deliverPolicy 'time' needs it"))),
            _ => Err(invalid(
                "deliverPolicy",
                "expected all, last, new, sequence or time",
            )),
        },
    }
}

pub struct JetStreamPubSub {
    js: jetstream::Context,
    component: ComponentMetadata,
}

impl JetStreamPubSub {
    /// Connects; fails if the server cannot be reached.
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let url = md.require("natsURL")?.trim().to_owned();
        let addrs = url
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("natsURL", e.to_string()))?;
        // Validate subscription defaults now so a bad value fails at load.
        SubscribeSettings::new(
            md,
            &SubscribeRequest {
                topic: "validate".into(),
                consumer_group: md.app_id.clone(),
                ..Default::default()
            },
        )?;
        let mut opts = match (md.get("jwt"), md.get("seedKey")) {
            (Some(jwt), Some(seed)) => async_nats::ConnectOptions::with_credentials(&format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ))
            .map_err(|e| invalid("jwt", e.to_string()))?,
            (None, None) => async_nats::ConnectOptions::new(),
            _ => return Err(invalid("seedKey", "jwt and seedKey go together")),
        };
        if let Some(token) = md.get("token") {
            opts = opts.token(token.to_owned());
        }
        match (md.get("tls_client_cert"), md.get("tls_client_key")) {
            (Some(cert), Some(key)) => {
                opts = opts.add_client_certificate(cert.into(), key.into());
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "tls_client_key",
                    "tls_client_cert and tls_client_key go together",
                ));
            }
        }
        opts = opts
            .name(md.get("name").unwrap_or("dapr.io - pubsub.jetstream"))
            .connection_timeout(Duration::from_secs(5));
        let client = tokio::time::timeout(Duration::from_secs(10), opts.connect(addrs))
            .await
            .map_err(|_| PubSubError::Connect(format!("jetstream: {url}: timed out")))?
            .map_err(|e| PubSubError::Connect(format!("jetstream: {url}: {e}")))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(PubSubError::Connect(format!(
                "jetstream: {url}: not connected"
            )));
        }
        let js = match (md.get("domain"), md.get("apiPrefix")) {
            (Some(domain), _) => jetstream::with_domain(client, domain),
            (None, Some(prefix)) => jetstream::with_prefix(client, prefix),
            (None, None) => jetstream::new(client),
        };
        tracing::info!(component = %md.name, "jetstream pub/sub connected");
        Ok(Self {
            js,
            component: md.clone(),
        })
    }
}

fn headers(req: &PublishRequest) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Header lines cannot hold line breaks; such entries do not travel.
    let fits = |s: &str| !s.is_empty() && !s.contains(['\r', '\n']);
    if let Some(ct) = req.content_type.as_deref().filter(|v| fits(v)) {
        h.insert(CONTENT_TYPE_HEADER, ct);
    }
    for (k, v) in &req.metadata {
        if fits(k) && !k.contains(':') && !v.contains(['\r', '\n']) {
            h.insert(k.as_str(), v.as_str());
        }
    }
    h
}

fn to_message(topic: &str, msg: &jetstream::Message) -> Message {
    let mut metadata = HashMap::new();
    let mut content_type = None;
    if let Some(h) = &msg.headers {
        for (k, values) in h.iter() {
            let Some(v) = values.last() else { continue };
            if k.to_string().eq_ignore_ascii_case(CONTENT_TYPE_HEADER) {
                content_type = Some(v.as_str().to_owned());
            } else {
                metadata.insert(k.to_string(), v.as_str().to_owned());
            }
        }
    }
    Message {
        topic: topic.to_owned(),
        data: msg.payload.clone(),
        content_type,
        metadata,
    }
}

#[async_trait]
impl PubSub for JetStreamPubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        let h = headers(&req);
        let ack = self
            .js
            .publish_with_headers(req.topic.clone(), h, req.data)
            .await
            .map_err(|e| backend("publish", e))?;
        ack.await
            .map_err(|e| backend(&format!("publish to '{}'", req.topic), e))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError> {
        let s = SubscribeSettings::new(&self.component, &req)?;
        let topic = req.topic.clone();
        let stream_name = match s.stream {
            Some(name) => name,
            None => self
                .js
                .stream_by_subject(topic.clone())
                .await
                .map_err(|e| backend(&format!("no stream captures '{topic}'"), e))?,
        };
        let consumer: PullConsumer = self
            .js
            .create_consumer_on_stream(s.consumer, &stream_name)
            .await
            .map_err(|e| backend(&format!("consumer on stream '{stream_name}'"), e))?;
        let (stop_tx, stop) = StopSignal::pair();
        let (tx, rx) = mpsc::channel::<jetstream::Message>(s.queue_depth);
        let rx = Arc::new(Mutex::new(rx));
        let mut tasks = vec![tokio::spawn(read_loop(
            consumer,
            topic.clone(),
            s.queue_depth,
            tx,
            stop.clone(),
        ))];
        for _ in 0..s.concurrency {
            tasks.push(tokio::spawn(work_loop(
                topic.clone(),
                rx.clone(),
                handler.clone(),
                stop.clone(),
            )));
        }
        Ok(Subscription::new(stop_tx, tasks))
    }
}

async fn read_loop(
    consumer: PullConsumer,
    topic: String,
    batch: usize,
    tx: mpsc::Sender<jetstream::Message>,
    mut stop: StopSignal,
) {
    while !stop.is_stopped() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "jetstream pub/sub: pull failed; retrying");
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.stopped() => return,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(m)) => {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(topic = %topic, error = %e, "jetstream pub/sub: pull stream error");
                }
                // The pull stream ended (consumer deleted, connection lost):
                // start a new one.
                None => break,
            }
        }
    }
}

async fn work_loop(
    topic: String,
    rx: Arc<Mutex<mpsc::Receiver<jetstream::Message>>>,
    handler: Arc<dyn MessageHandler>,
    mut stop: StopSignal,
) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            tokio::select! {
                _ = stop.stopped() => return,
                m = rx.recv() => m,
            }
        };
        let Some(m) = next else { return };
        let kind = match handler.handle(to_message(&topic, &m)).await {
            Ok(()) => AckKind::Ack,
            Err(e) => {
                tracing::debug!(topic = %topic, error = %e, "jetstream pub/sub: handler failed; nak");
                AckKind::Nak(None)
            }
        };
        if let Err(e) = m.ack_with(kind).await {
            tracing::warn!(topic = %topic, error = %e, "jetstream pub/sub: ack failed; the message will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(md: &[(&str, &str)]) -> SubscribeRequest {
        SubscribeRequest {
            topic: "orders.new".into(),
            consumer_group: "app".into(),
            metadata: md
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn settings_follow_dapr_metadata() {
        let md = ComponentMetadata::new("pubsub", "js")
            .with("ackWait", "10s")
            .with("maxDeliver", "5")
            .with("deliverPolicy", "new")
            .with("backOff", "50ms, 1s");
        let s = SubscribeSettings::new(&md, &req(&[])).unwrap();
        assert_eq!(s.consumer.durable_name.as_deref(), Some("app-orders_new"));
        assert_eq!(s.consumer.filter_subject, "orders.new");
        assert_eq!(s.consumer.ack_wait, Duration::from_secs(10));
        assert_eq!(s.consumer.max_deliver, 5);
        assert_eq!(s.consumer.deliver_policy, DeliverPolicy::New);
        assert_eq!(
            s.consumer.backoff,
            [Duration::from_millis(50), Duration::from_secs(1)]
        );
        let s = SubscribeSettings::new(&md, &req(&[("consumerID", "other")])).unwrap();
        assert_eq!(s.consumer.durable_name.as_deref(), Some("other-orders_new"));
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let md = ComponentMetadata::new("pubsub", "js");
        for bad in [
            ("deliverPolicy", "sometimes"),
            ("deliverPolicy", "sequence"),
            ("ackPolicy", "maybe"),
            ("maxDeliver", "many"),
            ("ackWait", "soon"),
            ("concurrency", "0"),
        ] {
            assert!(
                SubscribeSettings::new(&md, &req(&[bad])).is_err(),
                "{bad:?} was accepted"
            );
        }
        let s = SubscribeSettings::new(&md, &req(&[("startSequence", "7")])).unwrap();
        assert_eq!(
            s.consumer.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 7 }
        );
    }
}
