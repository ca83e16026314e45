//! The shared pub/sub broker conformance suite.
//!
//! Every broker runs the same test bodies through `pubsub_conformance!`:
//!
//! ```ignore
//! pubsub_conformance!(redis, create_redis, competing: [two_consumers_share, ...]);
//! ```
//!
//! `create_redis` is an `async fn() -> Arc<dyn PubSub>`; each call is a new
//! component instance (a new sidecar, for brokers shared between processes).
//! The core tests run for every broker; brokers whose consumer groups span
//! component instances also list the `competing` tests. Each test uses its
//! own random topic, so tests run in parallel against one server.
//!
//! Server-backed brokers fail (never skip) when the server is unreachable:
//! run `cargo test -p dapr-components --test pubsub_conformance` after
//! `scripts/test-services.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use dapr_components::{
    ComponentMetadata,
    pubsub::{
        self, HandlerError, Message, MessageHandler, PubSub, PublishRequest, SubscribeRequest,
        Subscription,
    },
};
use tokio::sync::mpsc;

/// Subscription settings every test uses: quick redelivery so failures are
/// retried within the test's patience.
pub fn fast_redelivery() -> HashMap<String, String> {
    HashMap::from([
        ("redeliverInterval".to_owned(), "200ms".to_owned()),
        ("processingTimeout".to_owned(), "1s".to_owned()),
    ])
}

/// What a test handler does with a message.
#[derive(Clone, Copy)]
pub enum Behaviour {
    Accept,
    /// Fails the first delivery of every message, accepts the next ones.
    FailFirst,
    /// Never returns (a consumer that dies while processing).
    Hang,
}

/// Records each delivery attempt and answers per its behaviour.
pub struct Recorder {
    behaviour: Behaviour,
    tx: mpsc::UnboundedSender<Message>,
    attempts: Mutex<HashMap<Bytes, usize>>,
    calls: AtomicUsize,
}

impl Recorder {
    pub fn new(behaviour: Behaviour) -> (Arc<Self>, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                behaviour,
                tx,
                attempts: Mutex::new(HashMap::new()),
                calls: AtomicUsize::new(0),
            }),
            rx,
        )
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(msg.data.clone()).or_default();
            *n += 1;
            *n
        };
        let _ = self.tx.send(msg);
        match self.behaviour {
            Behaviour::Accept => Ok(()),
            Behaviour::FailFirst if attempt == 1 => Err(HandlerError("first attempt fails".into())),
            Behaviour::FailFirst => Ok(()),
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

pub fn topic() -> String {
    format!("conf-{}", uuid::Uuid::new_v4().simple())
}

pub async fn subscribe(
    broker: &dyn PubSub,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
    handler: Arc<dyn MessageHandler>,
) -> Subscription {
    let mut metadata = fast_redelivery();
    for (k, v) in extra {
        metadata.insert((*k).to_owned(), (*v).to_owned());
    }
    broker
        .subscribe(
            SubscribeRequest {
                topic: topic.to_owned(),
                consumer_group: group.to_owned(),
                metadata,
            },
            handler,
        )
        .await
        .expect("subscribe")
}

pub async fn publish(broker: &dyn PubSub, topic: &str, data: impl Into<Bytes>) {
    broker
        .publish(PublishRequest {
            topic: topic.to_owned(),
            data: data.into(),
            content_type: Some("application/json".into()),
            metadata: HashMap::from([("k".to_owned(), "v".to_owned())]),
        })
        .await
        .expect("publish");
}

pub async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>, within: Duration) -> Message {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no message within the deadline")
        .expect("handler dropped")
}

/// Lets a freshly started subscription attach before publishing (brokers
/// deliver only what is published after a group exists or a reader runs).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

const WAIT: Duration = Duration::from_secs(10);

/// The test bodies, shared by every broker.
pub mod suite {
    use super::*;

    pub async fn publish_subscribe(broker: Arc<dyn PubSub>) {
        publish_subscribe_checked(broker, true).await
    }

    /// The same for brokers whose messages carry no content type (MQTT
    /// 3.1.1 has no message properties; the runtime's envelope is JSON
    /// either way).
    pub async fn publish_subscribe_payload_only(broker: Arc<dyn PubSub>) {
        publish_subscribe_checked(broker, false).await
    }

    async fn publish_subscribe_checked(broker: Arc<dyn PubSub>, content_type: bool) {
        let t = topic();
        let (rec, mut rx) = Recorder::new(Behaviour::Accept);
        let _sub = subscribe(&*broker, &t, "app", &[], rec).await;
        settle().await;
        for i in 0..3 {
            publish(&*broker, &t, format!(r#"{{"n":{i}}}"#)).await;
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let m = recv(&mut rx, WAIT).await;
            assert_eq!(m.topic, t);
            if content_type {
                assert_eq!(m.content_type.as_deref(), Some("application/json"));
            }
            got.push(String::from_utf8(m.data.to_vec()).unwrap());
        }
        got.sort();
        assert_eq!(got, [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]);
    }

    pub async fn redelivery_after_handler_failure(broker: Arc<dyn PubSub>) {
        let t = topic();
        let (rec, mut rx) = Recorder::new(Behaviour::FailFirst);
        let _sub = subscribe(&*broker, &t, "app", &[], rec.clone()).await;
        settle().await;
        publish(&*broker, &t, "retry-me").await;
        let first = recv(&mut rx, WAIT).await;
        let second = recv(&mut rx, WAIT).await;
        assert_eq!(first.data, second.data);
        assert_eq!(second.data, Bytes::from_static(b"retry-me"));
        // Acknowledged now: no third delivery after several redelivery rounds.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            rec.calls(),
            2,
            "an acknowledged message was delivered again"
        );
    }

    pub async fn ordering_single_consumer(broker: Arc<dyn PubSub>) {
        let t = topic();
        let (rec, mut rx) = Recorder::new(Behaviour::Accept);
        let _sub = subscribe(&*broker, &t, "app", &[("concurrency", "1")], rec).await;
        settle().await;
        for i in 0..50 {
            publish(&*broker, &t, i.to_string()).await;
        }
        for i in 0..50 {
            let m = recv(&mut rx, WAIT).await;
            assert_eq!(m.data, Bytes::from(i.to_string()), "out of order");
        }
    }

    pub async fn one_mib_messages(broker: Arc<dyn PubSub>) {
        let t = topic();
        let (rec, mut rx) = Recorder::new(Behaviour::Accept);
        let _sub = subscribe(&*broker, &t, "app", &[], rec).await;
        settle().await;
        let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        publish(&*broker, &t, payload.clone()).await;
        let m = recv(&mut rx, WAIT).await;
        assert_eq!(m.data.len(), payload.len());
        assert!(m.data == payload, "payload corrupted");
    }

    /// Distinct consumer groups (apps) each get every message.
    pub async fn every_group_gets_every_message(broker: Arc<dyn PubSub>) {
        let t = topic();
        let (a, mut rx_a) = Recorder::new(Behaviour::Accept);
        let (b, mut rx_b) = Recorder::new(Behaviour::Accept);
        let _sa = subscribe(&*broker, &t, "app-a", &[], a).await;
        let _sb = subscribe(&*broker, &t, "app-b", &[], b).await;
        settle().await;
        publish(&*broker, &t, "fan-out").await;
        assert_eq!(recv(&mut rx_a, WAIT).await.data, "fan-out");
        assert_eq!(recv(&mut rx_b, WAIT).await.data, "fan-out");
    }

    pub async fn stopped_subscription_gets_nothing(broker: Arc<dyn PubSub>) {
        let t = topic();
        let (rec, mut rx) = Recorder::new(Behaviour::Accept);
        let sub = subscribe(&*broker, &t, "app", &[], rec.clone()).await;
        settle().await;
        publish(&*broker, &t, "one").await;
        recv(&mut rx, WAIT).await;
        sub.stop(Duration::from_secs(2)).await;
        publish(&*broker, &t, "two").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(rec.calls(), 1);
    }

    /// Two instances (replicas) in one group share the messages: each gets
    /// some, together they get all, none twice.
    pub async fn two_consumers_share(make: impl AsyncFn() -> Arc<dyn PubSub>) {
        let (b1, b2) = (make().await, make().await);
        let t = topic();
        let (r1, mut rx1) = Recorder::new(Behaviour::Accept);
        let (r2, mut rx2) = Recorder::new(Behaviour::Accept);
        // One message at a time per replica, so both get a share.
        let _s1 = subscribe(
            &*b1,
            &t,
            "app",
            &[("concurrency", "1"), ("queueDepth", "1")],
            r1,
        )
        .await;
        let _s2 = subscribe(
            &*b2,
            &t,
            "app",
            &[("concurrency", "1"), ("queueDepth", "1")],
            r2,
        )
        .await;
        settle().await;
        for i in 0..40 {
            publish(&*b1, &t, i.to_string()).await;
        }
        let mut seen: Vec<String> = Vec::new();
        let (mut n1, mut n2) = (0, 0);
        while seen.len() < 40 {
            let m = tokio::select! {
                m = rx1.recv() => { n1 += 1; m }
                m = rx2.recv() => { n2 += 1; m }
                _ = tokio::time::sleep(WAIT) => panic!("only {} of 40 messages arrived", seen.len()),
            };
            seen.push(String::from_utf8(m.unwrap().data.to_vec()).unwrap());
        }
        seen.sort_by_key(|s| s.parse::<u32>().unwrap());
        seen.dedup();
        assert_eq!(seen.len(), 40, "a message was delivered twice");
        assert!(n1 > 0 && n2 > 0, "one replica got everything ({n1}/{n2})");
    }

    /// A consumer that dies before acknowledging: the message goes to
    /// another replica of the group after `processingTimeout`.
    pub async fn redelivery_after_consumer_death(make: impl AsyncFn() -> Arc<dyn PubSub>) {
        let t = topic();
        let dying = make().await;
        let (hang, mut rx_hang) = Recorder::new(Behaviour::Hang);
        let sub = subscribe(&*dying, &t, "app", &[], hang).await;
        settle().await;
        publish(&*dying, &t, "orphan").await;
        assert_eq!(recv(&mut rx_hang, WAIT).await.data, "orphan");
        drop(sub); // the crash: no ack, no graceful stop
        drop(dying);
        let survivor = make().await;
        let (rec, mut rx) = Recorder::new(Behaviour::Accept);
        let _s = subscribe(&*survivor, &t, "app", &[], rec).await;
        assert_eq!(recv(&mut rx, WAIT).await.data, "orphan");
    }
}

macro_rules! pubsub_conformance {
    ($name:ident, $factory:path $(, competing: [$($competing:ident),* $(,)?])? $(,)?) => {
        pubsub_conformance!($name, $factory,
            core: [
                publish_subscribe, redelivery_after_handler_failure, ordering_single_consumer,
                one_mib_messages, every_group_gets_every_message,
                stopped_subscription_gets_nothing
            ]
            $(, competing: [$($competing),*])?
        );
    };
    // An explicit core list: only for a broker that cannot promise a core
    // case, with a comment at the call saying why.
    ($name:ident, $factory:path, core: [$($core:ident),* $(,)?] $(, competing: [$($competing:ident),* $(,)?])? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            pubsub_conformance!(@core $factory; $($core),*);
            $(pubsub_conformance!(@competing $factory; $($competing),*);)?
        }
    };
    (@core $factory:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                crate::suite::$test($factory().await).await;
            }
        )*
    };
    (@competing $factory:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                crate::suite::$test($factory).await;
            }
        )*
    };
}

// ---- broker factories -------------------------------------------------------

async fn create_in_memory() -> Arc<dyn PubSub> {
    pubsub::create(
        "pubsub.in-memory",
        &ComponentMetadata::new("pubsub", "conf"),
    )
    .await
    .expect("in-memory pub/sub")
}

pubsub_conformance!(in_memory, create_in_memory);

/// Redis for the suite: `DAPR_RS_TEST_REDIS_ADDR` (host:port), by default
/// 127.0.0.1:16379.
async fn create_redis() -> Arc<dyn PubSub> {
    let addr =
        std::env::var("DAPR_RS_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:16379".to_owned());
    let md = ComponentMetadata::new("pubsub", "conf").with("redisHost", addr);
    pubsub::create("pubsub.redis", &md)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_REDIS_ADDR."
            )
        })
}

pubsub_conformance!(redis, create_redis, competing: [two_consumers_share, redelivery_after_consumer_death]);

/// NATS JetStream for the suite: `DAPR_RS_TEST_NATS_URL`, by default
/// nats://127.0.0.1:14222. `ackWait` is short so a dead replica's message
/// moves on within the test's patience.
async fn create_jetstream() -> Arc<dyn PubSub> {
    let url = std::env::var("DAPR_RS_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned());
    let md = ComponentMetadata::new("pubsub", "conf")
        .with("natsURL", url.clone())
        .with("ackWait", "1s");
    let inner = pubsub::create("pubsub.jetstream", &md)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "NATS test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_NATS_URL."
            )
        });
    let client = async_nats::connect(url).await.expect("nats connect");
    Arc::new(jetstream_streams::WithStreams {
        inner,
        js: async_nats::jetstream::new(client),
    })
}

/// Dapr's jetstream component expects the operator to create streams
/// (`nats stream add`); the suite plays the operator: each topic gets a
/// memory stream of its own before it is used.
mod jetstream_streams {
    use super::*;
    use async_nats::jetstream::stream;

    pub struct WithStreams {
        pub inner: Arc<dyn PubSub>,
        pub js: async_nats::jetstream::Context,
    }

    impl WithStreams {
        async fn ensure(&self, topic: &str) {
            self.js
                .get_or_create_stream(stream::Config {
                    name: topic.to_owned(),
                    subjects: vec![topic.to_owned()],
                    storage: stream::StorageType::Memory,
                    max_age: Duration::from_secs(600),
                    ..Default::default()
                })
                .await
                .expect("create test stream");
        }
    }

    #[async_trait]
    impl PubSub for WithStreams {
        async fn publish(&self, req: PublishRequest) -> Result<(), pubsub::PubSubError> {
            self.ensure(&req.topic).await;
            self.inner.publish(req).await
        }

        async fn subscribe(
            &self,
            req: SubscribeRequest,
            handler: Arc<dyn MessageHandler>,
        ) -> Result<Subscription, pubsub::PubSubError> {
            self.ensure(&req.topic).await;
            self.inner.subscribe(req, handler).await
        }
    }
}

pubsub_conformance!(jetstream, create_jetstream, competing: [two_consumers_share, redelivery_after_consumer_death]);

/// RabbitMQ for the suite: `DAPR_RS_TEST_AMQP_URL`, by default
/// amqp://guest:guest@127.0.0.1:15673. Failed messages are requeued
/// (`requeueInFailure`) and queues outlive their consumers
/// (`deletedWhenUnused: false`), else Dapr's defaults drop them.
async fn create_rabbitmq() -> Arc<dyn PubSub> {
    let url = std::env::var("DAPR_RS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:15673".to_owned());
    let md = ComponentMetadata::new("pubsub", "conf")
        .with("connectionString", url)
        .with("requeueInFailure", "true")
        .with("deletedWhenUnused", "false");
    pubsub::create("pubsub.rabbitmq", &md)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_AMQP_URL."
            )
        })
}

pubsub_conformance!(rabbitmq, create_rabbitmq, competing: [two_consumers_share, redelivery_after_consumer_death]);

/// Mosquitto for the suite: `DAPR_RS_TEST_MQTT_URL`, by default
/// tcp://127.0.0.1:11883. Handler failures are retried quickly.
async fn create_mqtt() -> Arc<dyn PubSub> {
    let url = std::env::var("DAPR_RS_TEST_MQTT_URL")
        .unwrap_or_else(|_| "tcp://127.0.0.1:11883".to_owned());
    let md = ComponentMetadata::new("pubsub", "conf")
        .with("url", url)
        .with("backOffInterval", "200ms");
    pubsub::create("pubsub.mqtt3", &md)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MQTT test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_MQTT_URL."
            )
        })
}

// MQTT 3.1.1 messages carry no content type: `publish_subscribe_payload_only`
// stands in for `publish_subscribe`. Every other core case holds (QoS 1;
// order within one topic from one publisher is MQTT's "ordered topic" rule,
// §4.6). Not `redelivery_after_consumer_death`: MQTT redelivers an
// unacknowledged QoS 1 message only to the same session on reconnect
// (3.1.1 §4.4), and whether a shared-subscription message in flight to a
// member that died goes to another member is left to the server (MQTT 5
// §4.8.2); Mosquitto drops it with the dead member's clean session.
pubsub_conformance!(
    mqtt3,
    create_mqtt,
    core: [
        publish_subscribe_payload_only, redelivery_after_handler_failure,
        ordering_single_consumer, one_mib_messages, every_group_gets_every_message,
        stopped_subscription_gets_nothing
    ],
    competing: [two_consumers_share]
);
