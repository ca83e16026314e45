//! `bindings.mqtt3`: an MQTT 3.1.1 topic, both directions, with Dapr's
//! component metadata (`url`, `topic`, `consumerID`, `retain`,
//! `cleanSession`, `backOffMaxRetries`, `caCert`/`clientCert`/`clientKey`;
//! `qos` is deprecated in Dapr and ignored: always 1).
//!
//! As in Dapr, the client ids are `<consumerID>-producer` and
//! `<consumerID>-consumer`, so with `cleanSession: false` (the default) the
//! broker keeps the consumer's session: its subscription, the messages
//! published while it is away and the ones it had not acknowledged survive a
//! restart of daprd. Two sidecars sharing a `consumerID` therefore take the
//! same client id and disconnect each other, as they do with Dapr.
//!
//! `create` publishes the data to `topic`, or to the request's `topic`
//! metadata, and returns once the broker acknowledged it; the publishing
//! connection opens on first use. The input side subscribes to `topic`
//! before `read` returns and hands each message to the app with its topic
//! as `topic` metadata; PUBACK goes out only after the app took it. A
//! failed message is retried every 5 s up to `backOffMaxRetries` times
//! (0 = not retried, -1 = until it succeeds) and then left unacknowledged
//! (MQTT has no negative acknowledgement; the broker sends it again when the
//! session reconnects).

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use rumqttc::QoS;
use tokio::sync::{OnceCell, mpsc};

use super::{
    BindingError, BindingEvent, EventHandler, InputBinding, InvokeRequest, InvokeResponse,
    OutputBinding, Reader, StopSignal, ops,
};
use crate::{
    ComponentMetadata,
    pubsub::{
        PubSubError,
        mqtt::{
            Conn, Deliver, Endpoint, SubscribeSettings, dispatch, open, parse_bool, parse_url,
            publish, subscribe_acked,
        },
    },
};

/// Dapr's constant back-off between attempts of a failed message.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Messages handed to the app at once.
const CONCURRENCY: usize = 10;
const QOS: QoS = QoS::AtLeastOnce;

/// Metadata key naming the topic (component, request and event metadata).
const TOPIC: &str = "topic";

impl From<PubSubError> for BindingError {
    fn from(e: PubSubError) -> Self {
        match e {
            PubSubError::Metadata(m) => BindingError::Metadata(m),
            PubSubError::Connect(c) => BindingError::Connect(c),
            PubSubError::Closed => BindingError::Closed,
            other => BindingError::Backend(other.to_string()),
        }
    }
}

struct Settings {
    endpoint: Endpoint,
    topic: String,
    consumer_id: String,
    retain: bool,
    clean_session: bool,
    max_retries: i64,
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let url = md.require("url")?.trim().to_owned();
        let topic = md.require(TOPIC)?.trim().to_owned();
        let consumer_id = md.require("consumerID")?.trim().to_owned();
        if md.get("qos").is_some() {
            tracing::warn!(component = %md.name, "metadata property 'qos' is deprecated and ignored; qos is 1");
        }
        let max_retries = match md.get("backOffMaxRetries") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= -1)
                .ok_or_else(|| {
                    BindingError::invalid_metadata("backOffMaxRetries", "expected -1 or more")
                })?,
        };
        Ok(Self {
            endpoint: parse_url(&url, md)?,
            topic,
            consumer_id,
            retain: parse_bool(md.get("retain"), "retain", false)?,
            clean_session: parse_bool(md.get("cleanSession"), "cleanSession", false)?,
            max_retries,
        })
    }

    fn options(&self, role: &str) -> rumqttc::MqttOptions {
        self.endpoint
            .options(format!("{}-{role}", self.consumer_id), self.clean_session)
    }
}

pub struct MqttBinding {
    settings: Settings,
    name: String,
    producer: OnceCell<Conn>,
}

impl Drop for MqttBinding {
    fn drop(&mut self) {
        if let Some(p) = self.producer.get() {
            p.task.abort();
        }
    }
}

impl MqttBinding {
    /// Validates the metadata; connections open when first needed, as in
    /// Dapr.
    pub fn new(md: &ComponentMetadata) -> Result<Self, BindingError> {
        Ok(Self {
            settings: Settings::from_metadata(md)?,
            name: md.name.clone(),
            producer: OnceCell::new(),
        })
    }

    async fn producer(&self) -> Result<&Conn, BindingError> {
        // The URL may hold a password: errors name only the component.
        let what = format!("binding '{}' producer", self.name);
        self.producer
            .get_or_try_init(|| open(self.settings.options("producer"), None, None, &what))
            .await
            .map_err(|e| {
                BindingError::Connect(format!("failed to create producer connection: {e}"))
            })
    }
}

#[async_trait]
impl OutputBinding for MqttBinding {
    fn operations(&self) -> Vec<String> {
        vec![ops::CREATE.to_owned()]
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation != ops::CREATE {
            return Err(BindingError::InvalidRequest(format!(
                "invalid operation type: {}",
                req.operation
            )));
        }
        let topic = req.meta(TOPIC).unwrap_or(&self.settings.topic);
        let producer = self.producer().await?;
        publish(
            &producer.client,
            topic,
            &req.data,
            QOS,
            self.settings.retain,
        )
        .await?;
        Ok(InvokeResponse::default())
    }

    async fn close(&self) {
        if let Some(p) = self.producer.get() {
            let _ = p.client.disconnect().await;
        }
    }
}

/// An MQTT delivery as a binding event.
struct ToEvent(Arc<dyn EventHandler>);

#[async_trait]
impl Deliver for ToEvent {
    async fn deliver(&self, p: &rumqttc::Publish) -> Result<(), String> {
        let event = BindingEvent {
            data: p.payload.clone(),
            metadata: HashMap::from([(
                TOPIC.to_owned(),
                String::from_utf8_lossy(&p.topic).into_owned(),
            )]),
            content_type: None,
        };
        self.0.handle(event).await.map(|_| ()).map_err(|e| e.0)
    }
}

#[async_trait]
impl InputBinding for MqttBinding {
    async fn read(&self, handler: Arc<dyn EventHandler>) -> Result<Reader, BindingError> {
        let s = &self.settings;
        let (tx, rx) = mpsc::unbounded_channel();
        let what = format!("binding '{}' consumer", self.name);
        let conn = open(
            s.options("consumer"),
            Some((s.topic.clone(), QOS)),
            Some(tx),
            &what,
        )
        .await?;
        if let Err(e) = subscribe_acked(&conn.client, &s.topic, QOS).await {
            conn.task.abort();
            return Err(e.into());
        }
        tracing::info!(binding = %self.name, topic = %s.topic, "mqtt binding subscribed");
        let dispatch_settings = SubscribeSettings {
            filter: s.topic.clone(),
            concurrency: CONCURRENCY,
            max_retries: s.max_retries,
            backoff: RETRY_INTERVAL,
            // Dapr only disconnects: a persistent session keeps tracking
            // what this consumer has received.
            unsubscribe_on_stop: false,
        };
        let (stop_tx, stop): (_, StopSignal) = StopSignal::pair();
        let dispatcher = tokio::spawn(dispatch(
            conn.client,
            dispatch_settings,
            rx,
            Arc::new(ToEvent(handler)),
            stop,
        ));
        Ok(Reader::new(stop_tx, vec![conn.task, dispatcher]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> ComponentMetadata {
        ComponentMetadata::new("m", "app")
            .with("url", "tcp://u:p@127.0.0.1:1883")
            .with("topic", "sensors")
            .with("consumerID", "c1")
    }

    #[test]
    fn metadata() {
        let s = Settings::from_metadata(&md()).unwrap();
        assert_eq!(s.topic, "sensors");
        assert!(!s.retain && !s.clean_session);
        assert_eq!(s.max_retries, 0);
        assert_eq!(s.options("consumer").client_id(), "c1-consumer");
        assert!(!s.options("producer").clean_session());
        let s = Settings::from_metadata(
            &md()
                .with("cleanSession", "true")
                .with("backOffMaxRetries", "-1")
                .with("qos", "2"),
        )
        .unwrap();
        assert!(s.clean_session);
        assert_eq!(s.max_retries, -1);
        for (m, field) in [
            (ComponentMetadata::new("m", "a"), "url"),
            (
                ComponentMetadata::new("m", "a").with("url", "tcp://h"),
                "topic",
            ),
            (
                ComponentMetadata::new("m", "a")
                    .with("url", "tcp://h")
                    .with("topic", "t"),
                "consumerID",
            ),
            (md().with("url", "http://h"), "url"),
            (md().with("retain", "maybe"), "retain"),
            (md().with("backOffMaxRetries", "-2"), "backOffMaxRetries"),
            (md().with("url", "ssl://h").with("caCert", "junk"), "caCert"),
        ] {
            let err = Settings::from_metadata(&m).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(field)),
                "{field}: {err:?}"
            );
        }
    }
}
