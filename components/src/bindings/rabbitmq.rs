//! `bindings.rabbitmq`: one RabbitMQ queue, both directions, with Dapr's
//! component metadata.
//!
//! Init connects (`host`: `amqp://` or `amqps://`, plus `caCert`,
//! `clientCert`/`clientKey`) and declares `queueName` with `durable`,
//! `deleteWhenUnused`, `exclusive`, `ttlInSeconds` (`x-message-ttl`) and
//! `maxPriority` (`x-max-priority`). The output operation `create` publishes
//! the data to the queue through the default exchange as a persistent
//! message: the request metadata become headers, `contentType` sets the
//! content type (`text/plain` by default), `ttlInSeconds` the message's
//! expiration and `priority` its priority; the call returns once the broker
//! confirmed the message. The input side consumes the queue with manual acks
//! (`prefetchCount` is the channel's QoS): a message is acked after the app
//! took it and nacked with requeue otherwise, so the broker delivers it
//! again. String headers reach the app as metadata, URL-query-escaped as
//! Dapr does.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    tcp::{OwnedIdentity, OwnedTLSConfig},
    types::{AMQPValue, FieldTable, ShortString},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{
    BindingError, BindingEvent, EventHandler, InputBinding, InvokeRequest, InvokeResponse,
    OutputBinding, Reader, StopSignal, ops,
};
use crate::{
    ComponentMetadata,
    pubsub::{
        PubSubError,
        rabbitmq::{dial, header_text, long_string},
    },
};

const DEFAULT_CONTENT_TYPE: &str = "text/plain";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// How long a stopped reader waits before it tries to consume again.
const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(5);

fn invalid(field: &str, reason: impl Into<String>) -> BindingError {
    BindingError::invalid_metadata(field, reason)
}

fn backend(what: &str, e: impl std::fmt::Display) -> BindingError {
    BindingError::Backend(format!("rabbitmq binding: {what}: {e}"))
}

#[derive(Debug)]
struct Settings {
    host: String,
    queue: String,
    durable: bool,
    delete_when_unused: bool,
    exclusive: bool,
    prefetch: u16,
    max_priority: Option<u8>,
    queue_ttl_ms: Option<i64>,
    reconnect_wait: Duration,
    /// `contentType` of messages whose request names none.
    content_type: String,
    tls: OwnedTLSConfig,
}

/// Whole seconds from `ttlInSeconds` (Dapr: a positive integer).
fn ttl_seconds(raw: &str, field: &str) -> Result<i64, String> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{field} must be a positive whole number of seconds, not '{raw}'"))
}

fn pem_block(md: &ComponentMetadata, field: &str) -> Result<Option<String>, BindingError> {
    let Some(v) = md.get(field).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    // Parse errors could quote key material: say only what failed.
    let ok = if field == "clientKey" {
        PrivateKeyDer::from_pem_slice(v.as_bytes()).is_ok()
    } else {
        CertificateDer::pem_slice_iter(v.as_bytes()).any(|c| c.is_ok())
    };
    if !ok {
        return Err(invalid(field, "not a PEM block"));
    }
    Ok(Some(v.to_owned()))
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let host = md.require("host")?.trim().to_owned();
        if !(host.starts_with("amqp://") || host.starts_with("amqps://")) {
            return Err(invalid(
                "host",
                "expected amqp://[user[:password]@]host[:port] or amqps://...",
            ));
        }
        let queue = md.require("queueName")?.to_owned();
        let flag = |k: &str| md.get_bool(k).map(|v| v.unwrap_or(false));
        let prefetch = match md.get_parsed::<i64>("prefetchCount")? {
            None => 0,
            Some(n) => u16::try_from(n).map_err(|_| invalid("prefetchCount", "0 to 65535"))?,
        };
        // Dapr caps larger values at 255.
        let max_priority = md
            .get_parsed::<u64>("maxPriority")?
            .map(|n| u8::try_from(n).unwrap_or(u8::MAX));
        let queue_ttl_ms = md
            .get("ttlInSeconds")
            .map(|v| ttl_seconds(v, "ttlInSeconds").map_err(|e| invalid("ttlInSeconds", e)))
            .transpose()?
            .map(|s| s.saturating_mul(1000));
        let reconnect_wait = match md.get_parsed::<u64>("reconnectWaitInSeconds")? {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_RECONNECT_WAIT,
        };
        let ca = pem_block(md, "caCert")?;
        let identity = match (pem_block(md, "clientCert")?, pem_block(md, "clientKey")?) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: cert.into_bytes(),
                key: key.into_bytes(),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "clientCert",
                    "clientCert and clientKey go together",
                ));
            }
        };
        if md.get_bool("externalSasl")?.unwrap_or(false) && !host.contains("auth_mechanism=") {
            return Err(invalid(
                "externalSasl",
                "add ?auth_mechanism=external to the host URI instead",
            ));
        }
        Ok(Self {
            host,
            queue,
            durable: flag("durable")?,
            delete_when_unused: flag("deleteWhenUnused")?,
            exclusive: flag("exclusive")?,
            prefetch,
            max_priority,
            queue_ttl_ms,
            reconnect_wait,
            content_type: md
                .get("contentType")
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned(),
            tls: OwnedTLSConfig {
                identity,
                cert_chain: ca,
            },
        })
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.queue_ttl_ms {
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
        }
        if let Some(p) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        args
    }
}

pub struct RabbitMqBinding {
    conn: Arc<Connection>,
    publisher: Channel,
    settings: Arc<Settings>,
}

fn connect_error(e: PubSubError) -> BindingError {
    BindingError::Connect(e.to_string())
}

impl RabbitMqBinding {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let settings = Settings::from_metadata(md)?;
        let what = format!("rabbitmq binding '{}'", md.name);
        let conn = dial(&settings.host, "dapr", settings.tls.clone(), &what)
            .await
            .map_err(connect_error)?;
        let publisher = conn
            .create_channel()
            .await
            .map_err(|e| backend("open channel", e))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| backend("confirm mode", e))?;
        declare_queue(&publisher, &settings).await?;
        tracing::info!(component = %md.name, queue = %settings.queue, "rabbitmq binding connected");
        Ok(Self {
            conn: Arc::new(conn),
            publisher,
            settings: Arc::new(settings),
        })
    }
}

async fn declare_queue(channel: &Channel, s: &Settings) -> Result<(), BindingError> {
    channel
        .queue_declare(
            s.queue.as_str().into(),
            QueueDeclareOptions {
                durable: s.durable,
                auto_delete: s.delete_when_unused,
                exclusive: s.exclusive,
                ..Default::default()
            },
            s.queue_args(),
        )
        .await
        .map(|_| ())
        .map_err(|e| backend(&format!("declare queue '{}'", s.queue), e))
}

/// The publish properties a `create` request asks for.
fn properties(req: &InvokeRequest, default_ct: &str) -> Result<BasicProperties, BindingError> {
    let content_type = req.meta("contentType").unwrap_or(default_ct);
    let mut props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(content_type.into());
    if !req.metadata.is_empty() {
        let mut headers = FieldTable::default();
        for (k, v) in &req.metadata {
            headers.insert(k.as_str().into(), long_string(v));
        }
        props = props.with_headers(headers);
    }
    if let Some(raw) = req.meta("ttlInSeconds") {
        let secs = ttl_seconds(raw, "ttlInSeconds").map_err(BindingError::InvalidRequest)?;
        let ms = secs.saturating_mul(1000).to_string();
        props = props.with_expiration(ms.as_str().into());
    }
    if let Some(raw) = req.meta("priority") {
        let p = raw.trim().parse::<u8>().map_err(|_| {
            BindingError::InvalidRequest(format!("priority must be 0 to 255, not '{raw}'"))
        })?;
        props = props.with_priority(p);
    }
    Ok(props)
}

#[async_trait]
impl OutputBinding for RabbitMqBinding {
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
        let props = properties(&req, &self.settings.content_type)?;
        let what = format!("publish to queue '{}'", self.settings.queue);
        let confirm = self
            .publisher
            .basic_publish(
                "".into(),
                self.settings.queue.as_str().into(),
                BasicPublishOptions::default(),
                &req.data,
                props,
            )
            .await
            .map_err(|e| backend(&what, e))?
            .await
            .map_err(|e| backend(&what, e))?;
        if confirm.is_nack() {
            return Err(backend(&what, "the broker refused the message"));
        }
        Ok(InvokeResponse::default())
    }

    async fn close(&self) {
        let _ = self.conn.close(200, "closing".into()).await;
    }
}

#[async_trait]
impl InputBinding for RabbitMqBinding {
    async fn read(&self, handler: Arc<dyn EventHandler>) -> Result<Reader, BindingError> {
        // The first consumer is set up here so a failure reaches the runtime.
        let (channel, consumer, tag) = consume(&self.conn, &self.settings).await?;
        let (stop_tx, stop) = StopSignal::pair();
        let task = tokio::spawn(read_loop(
            self.conn.clone(),
            self.settings.clone(),
            (channel, consumer, tag),
            handler,
            stop,
        ));
        Ok(Reader::new(stop_tx, vec![task]))
    }

    async fn close(&self) {
        let _ = self.conn.close(200, "closing".into()).await;
    }
}

async fn consume(
    conn: &Connection,
    s: &Settings,
) -> Result<(Channel, lapin::Consumer, ShortString), BindingError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| backend("open channel", e))?;
    if s.prefetch > 0 {
        channel
            .basic_qos(s.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| backend("prefetchCount", e))?;
    }
    // Declared again: with deleteWhenUnused the queue may be gone.
    declare_queue(&channel, s).await?;
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
    Ok((channel, consumer, tag))
}

/// Go's `url.QueryEscape`: Dapr escapes header names and values so they
/// travel as HTTP metadata.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn to_event(d: &Delivery) -> BindingEvent {
    let mut metadata = HashMap::new();
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            if let Some(text) = header_text(v) {
                metadata.insert(query_escape(k.as_str()), query_escape(&text));
            }
        }
    }
    BindingEvent {
        data: Bytes::copy_from_slice(&d.data),
        metadata,
        content_type: d
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned()),
    }
}

/// Hands messages to the app one at a time (Dapr's order); when the consumer
/// ends (channel or connection lost) it consumes again after
/// `reconnectWaitInSeconds`. Ending this task closes the channel, which
/// returns unacked messages to the queue.
async fn read_loop(
    conn: Arc<Connection>,
    s: Arc<Settings>,
    first: (Channel, lapin::Consumer, ShortString),
    handler: Arc<dyn EventHandler>,
    mut stop: StopSignal,
) {
    let mut current = Some(first);
    loop {
        let (channel, mut consumer, tag) = match current.take() {
            Some(c) => c,
            None => match consume(&conn, &s).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(queue = %s.queue, error = %e, "rabbitmq binding: cannot consume; retrying");
                    tokio::select! {
                        _ = stop.stopped() => return,
                        _ = tokio::time::sleep(s.reconnect_wait) => continue,
                    }
                }
            },
        };
        loop {
            let next = tokio::select! {
                _ = stop.stopped() => {
                    let _ = channel.basic_cancel(tag, BasicCancelOptions::default()).await;
                    let _ = channel.close(200, "stopped".into()).await;
                    return;
                }
                d = consumer.next() => d,
            };
            let d = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(queue = %s.queue, error = %e, "rabbitmq binding: consumer failed");
                    break;
                }
                None => {
                    tracing::warn!(queue = %s.queue, "rabbitmq binding: the broker cancelled the consumer");
                    break;
                }
            };
            let res = match handler.handle(to_event(&d)).await {
                Ok(_) => d.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    tracing::debug!(queue = %s.queue, error = %e, "rabbitmq binding: app failed; requeue");
                    d.nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                }
            };
            if let Err(e) = res {
                tracing::warn!(queue = %s.queue, error = %e, "rabbitmq binding: ack failed");
            }
        }
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(s.reconnect_wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> ComponentMetadata {
        ComponentMetadata::new("q", "app")
            .with("host", "amqp://guest:guest@127.0.0.1:5672")
            .with("queueName", "orders")
    }

    #[test]
    fn metadata() {
        let s = Settings::from_metadata(&md()).unwrap();
        assert_eq!(s.queue, "orders");
        assert!(!s.durable && !s.delete_when_unused && !s.exclusive);
        assert!(s.queue_args().inner().is_empty());
        let s = Settings::from_metadata(
            &md()
                .with("ttlInSeconds", "60")
                .with("maxPriority", "300")
                .with("durable", "true"),
        )
        .unwrap();
        assert_eq!(s.queue_ttl_ms, Some(60_000));
        assert_eq!(s.max_priority, Some(255));
        assert!(s.durable);
        for (m, field) in [
            (
                ComponentMetadata::new("q", "a").with("queueName", "x"),
                "host",
            ),
            (
                ComponentMetadata::new("q", "a").with("host", "amqp://h"),
                "queueName",
            ),
            (md().with("host", "http://h"), "host"),
            (md().with("ttlInSeconds", "soon"), "ttlInSeconds"),
            (md().with("prefetchCount", "70000"), "prefetchCount"),
            (md().with("maxPriority", "-1"), "maxPriority"),
            (md().with("durable", "maybe"), "durable"),
            (md().with("caCert", "junk"), "caCert"),
            (md().with("clientKey", "junk"), "clientKey"),
        ] {
            let err = Settings::from_metadata(&m).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(field)),
                "{field}: {err:?}"
            );
        }
    }

    #[test]
    fn request_properties() {
        let req = |kv: &[(&str, &str)]| InvokeRequest {
            operation: "create".into(),
            data: Bytes::new(),
            metadata: kv
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let p = properties(&req(&[]), DEFAULT_CONTENT_TYPE).unwrap();
        assert_eq!(p.content_type().as_ref().unwrap().as_str(), "text/plain");
        assert_eq!(*p.delivery_mode(), Some(PERSISTENT));
        let p = properties(
            &req(&[
                ("ttlInSeconds", "2"),
                ("priority", "7"),
                ("contentType", "application/json"),
            ]),
            DEFAULT_CONTENT_TYPE,
        )
        .unwrap();
        assert_eq!(p.expiration().as_ref().unwrap().as_str(), "2000");
        assert_eq!(*p.priority(), Some(7));
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert!(properties(&req(&[("priority", "300")]), "x").is_err());
        assert!(properties(&req(&[("ttlInSeconds", "x")]), "x").is_err());
    }

    #[test]
    fn headers_are_query_escaped() {
        assert_eq!(query_escape("a b/c~d.e"), "a+b%2Fc~d.e");
    }
}
