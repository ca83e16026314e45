//! The five pub/sub brokers the daprd-level suites run on, as components
//! named `pubsub` pointing at the servers scripts/test-services.sh starts.

use std::time::Duration;

use super::{component_yaml, redis_addr};

/// Every broker the pub/sub building block ships a component for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    InMemory,
    Redis,
    JetStream,
    RabbitMq,
    Mqtt3,
}

/// Every topic a test uses starts with this, so one JetStream stream
/// (`pst.>`) captures them all.
pub const TOPIC_PREFIX: &str = "pst.";

pub fn nats_url() -> String {
    std::env::var("DAPR_RS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned())
}

impl Broker {
    pub fn component(self) -> String {
        self.component_with(&[])
    }

    /// The component named `pubsub`, with quick redelivery so failures come
    /// back within a test's patience, plus `extra` metadata.
    pub fn component_with(self, extra: &[(&str, &str)]) -> String {
        let (type_, mut md): (&str, Vec<(&str, String)>) = match self {
            Broker::InMemory => ("pubsub.in-memory", vec![]),
            Broker::Redis => (
                "pubsub.redis",
                vec![
                    ("redisHost", redis_addr()),
                    ("processingTimeout", "1s".into()),
                    ("redeliverInterval", "300ms".into()),
                ],
            ),
            // A dead consumer's message comes back after ackWait.
            Broker::JetStream => (
                "pubsub.jetstream",
                vec![("natsURL", nats_url()), ("ackWait", "1s".into())],
            ),
            // Requeue on RETRY, as the Redis entry redelivers: Dapr's
            // rabbitmq default drops a failed message.
            Broker::RabbitMq => (
                "pubsub.rabbitmq",
                vec![
                    (
                        "connectionString",
                        std::env::var("DAPR_RS_TEST_AMQP_URL")
                            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:15673".to_owned()),
                    ),
                    ("requeueInFailure", "true".into()),
                ],
            ),
            Broker::Mqtt3 => (
                "pubsub.mqtt3",
                vec![
                    (
                        "url",
                        std::env::var("DAPR_RS_TEST_MQTT_URL")
                            .unwrap_or_else(|_| "tcp://127.0.0.1:11883".to_owned()),
                    ),
                    ("backOffInterval", "200ms".into()),
                ],
            ),
        };
        md.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
        component_yaml("pubsub", type_, &md)
    }

    /// Plays the operator where the broker needs one: Dapr's JetStream
    /// component publishes only to subjects a stream captures, so one
    /// memory stream takes every test topic.
    pub async fn prepare(self) {
        if self != Broker::JetStream {
            return;
        }
        let client = async_nats::connect(nats_url()).await.unwrap_or_else(|e| {
            panic!("NATS test server unreachable ({e}); run scripts/test-services.sh")
        });
        async_nats::jetstream::new(client)
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "DAPR_RS_PUBSUB_TESTS".to_owned(),
                subjects: vec![format!("{TOPIC_PREFIX}>")],
                storage: async_nats::jetstream::stream::StorageType::Memory,
                max_age: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .expect("create the test stream");
    }
}
