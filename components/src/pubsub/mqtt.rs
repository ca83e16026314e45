//! `pubsub.mqtt3`: an MQTT 3.1.1 broker (Mosquitto, EMQX, ...), with Dapr's
//! component metadata (`url`, `qos`, `retain`, `cleanSession`, `consumerID`,
//! `caCert`/`clientCert`/`clientKey`).
//!
//! Publishing goes through one connection per component; each subscription
//! has a connection of its own and subscribes to the shared subscription
//! `$share/<consumer group>/<topic>` (group = `consumerID`, else the app id),
//! so the replicas of one app compete for messages while every app gets every
//! message. A topic that already starts with `$share/` is used as given.
//!
//! Acknowledgement is manual: PUBACK goes out only after the handler
//! succeeded. MQTT has no negative acknowledgement and brokers redeliver only
//! on reconnect, so a failed message is retried here (every
//! `backOffInterval`, up to `backOffMaxRetries`, -1 = until it succeeds or
//! the subscription stops); one that runs out of retries stays unacked.
//!
//! Client ids are `<consumerID>-<role>-<random>`: two replicas sharing one
//! client id would keep disconnecting each other. Since such ids are never
//! reused, the connections start clean sessions whatever `cleanSession` says
//! (a persistent session under a throwaway id would only pile up on the
//! broker); durability across replicas comes from the shared subscription.
//!
//! `bindings.mqtt3` reuses the connection, TLS, publish, subscribe and
//! dispatch code below (the `pub(crate)` items).

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{
    AckMode, AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, PublishOptions, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};

use super::{
    CONSUMER_ID_KEY, Message, MessageHandler, PubSub, PubSubError, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, duration_or_millis, invalid_metadata as invalid,
    lookup_metadata as lookup,
};
use crate::{ComponentMetadata, MetadataError};

/// Dapr's `defaultWait`: how long connect, subscribe and publish may take.
const WAIT: Duration = Duration::from_secs(20);
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
const DEFAULT_CONCURRENCY: usize = 10;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// Messages up to this size travel (the broker may have a lower limit).
const MAX_PACKET: usize = 64 * 1024 * 1024;

fn backend(what: &str, e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Backend(format!("mqtt: {what}: {e}"))
}

/// Where and how to connect, from `url` and the TLS fields.
#[derive(Clone)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsConfiguration>,
}

/// `scheme://[user[:password]@]host[:port]`. `tcp`/`mqtt` are plain,
/// `ssl`/`tls`/`tcps`/`mqtts` are TLS (Dapr's accepted schemes).
pub(crate) fn parse_url(url: &str, md: &ComponentMetadata) -> Result<Endpoint, PubSubError> {
    let bad = |reason: &str| invalid("url", reason.to_owned());
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host[:port]"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => false,
        "ssl" | "tls" | "tcps" | "mqtts" => true,
        _ => return Err(bad("the scheme must be tcp, mqtt, ssl, tls, tcps or mqtts")),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(n.to_owned()), Some(p.to_owned())),
            None => (Some(u.to_owned()), None),
        },
    };
    let default_port = if secure { 8883 } else { 1883 };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().map_err(|_| bad("invalid port"))?,
        ),
        _ => (hostport, default_port),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let tls = if secure { Some(tls_config(md)?) } else { None };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        username: username.filter(|u| !u.is_empty()),
        password,
        tls,
    })
}

/// rustls on ring: `caCert` (PEM) or the system roots, and the client
/// certificate when `clientCert` and `clientKey` are both given.
fn tls_config(md: &ComponentMetadata) -> Result<TlsConfiguration, PubSubError> {
    use rustls::RootCertStore;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

    let mut roots = RootCertStore::empty();
    match md.get("caCert").filter(|v| !v.trim().is_empty()) {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("caCert", format!("not a PEM certificate: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(invalid("caCert", "no usable certificate"));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PubSubError::Connect(format!("mqtt TLS setup: {e}")))?
        .with_root_certificates(roots);
    let cert = md.get("clientCert").filter(|v| !v.trim().is_empty());
    let key = md.get("clientKey").filter(|v| !v.trim().is_empty());
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("clientCert", format!("not a PEM certificate: {e}")))?;
            // The key's parse error could quote key material: say only what failed.
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| invalid("clientKey", "not a PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("clientCert", e.to_string()))?
        }
        _ => {
            return Err(invalid(
                "clientCert",
                "clientCert and clientKey go together",
            ));
        }
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

pub(crate) fn parse_bool(v: Option<&str>, key: &str, default: bool) -> Result<bool, PubSubError> {
    match v {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(key, "expected true or false")),
        },
    }
}

fn parse_qos(v: Option<&str>) -> Result<QoS, PubSubError> {
    match v.unwrap_or("1") {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(invalid("qos", "expected 0, 1 or 2")),
    }
}

/// Component-wide settings.
struct Settings {
    endpoint: Endpoint,
    qos: QoS,
    retain: bool,
    consumer_id: String,
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let none = HashMap::new();
        let url = md
            .get("url")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PubSubError::Metadata(MetadataError::Missing("url".into())))?;
        // Validated for Dapr compatibility; see the module docs for why
        // connections are clean either way.
        parse_bool(lookup(&none, md, "cleanSession"), "cleanSession", false)?;
        let consumer_id = lookup(&none, md, CONSUMER_ID_KEY)
            .map(str::to_owned)
            .unwrap_or_else(|| md.app_id.clone());
        if consumer_id.is_empty() {
            return Err(invalid(CONSUMER_ID_KEY, "no consumer id (app id)"));
        }
        Ok(Self {
            endpoint: parse_url(url, md)?,
            qos: parse_qos(lookup(&none, md, "qos"))?,
            retain: parse_bool(lookup(&none, md, "retain"), "retain", false)?,
            consumer_id,
        })
    }

    fn options(&self, role: &str) -> MqttOptions {
        let id = format!(
            "{}-{role}-{}",
            self.consumer_id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        self.endpoint.options(id, true)
    }
}

impl Endpoint {
    /// Connection options with manual acks.
    pub(crate) fn options(&self, client_id: String, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, (self.host.clone(), self.port));
        o.set_keep_alive(30)
            .set_clean_session(clean_session)
            .set_ack_mode(AckMode::Manual)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(tls.clone()));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                o.set_credentials(u.clone(), Bytes::from(p.clone().into_bytes()));
            }
            (Some(u), None) => {
                o.set_username(u.clone());
            }
            _ => {}
        }
        o
    }
}

/// Per-subscription settings: subscription metadata overrides the component's.
pub(crate) struct SubscribeSettings {
    pub(crate) filter: String,
    pub(crate) concurrency: usize,
    /// -1: retry until it succeeds or the subscription stops.
    pub(crate) max_retries: i64,
    pub(crate) backoff: Duration,
    /// Unsubscribe on a graceful stop (a persistent session keeps the
    /// subscription otherwise).
    pub(crate) unsubscribe_on_stop: bool,
}

impl SubscribeSettings {
    fn new(md: &ComponentMetadata, req: &SubscribeRequest) -> Result<Self, PubSubError> {
        let m = &req.metadata;
        if req.topic.is_empty() {
            return Err(invalid("topic", "the topic is empty"));
        }
        let group = lookup(m, md, CONSUMER_ID_KEY)
            .map(str::to_owned)
            .unwrap_or_else(|| req.consumer_group.clone());
        // A share name may not hold '/', '+' or '#' (MQTT 5 §4.8.2).
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(invalid(
                CONSUMER_ID_KEY,
                "the consumer group must be non-empty without '/', '+' or '#'",
            ));
        }
        let filter = if req.topic.starts_with("$share/") {
            req.topic.clone()
        } else {
            format!("$share/{group}/{}", req.topic)
        };
        let concurrency = match lookup(m, md, "concurrency") {
            None => DEFAULT_CONCURRENCY,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("concurrency", "expected a positive integer"))?,
        };
        let max_retries = match lookup(m, md, "backOffMaxRetries") {
            None => -1,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= -1)
                .ok_or_else(|| invalid("backOffMaxRetries", "expected -1 or more"))?,
        };
        let backoff = duration_or_millis(m, md, "backOffInterval")?.unwrap_or(DEFAULT_BACKOFF);
        Ok(Self {
            filter,
            concurrency,
            max_retries,
            backoff,
            unsubscribe_on_stop: true,
        })
    }
}

/// The topic a delivery names, without a `$share/<group>/` prefix.
fn plain_topic(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, t)| t)
}

/// A connection and the task polling its event loop. `subscription` is
/// (re)subscribed after every CONNACK (sessions are clean, so a reconnect
/// starts without subscriptions); incoming publishes go to `deliveries`.
pub(crate) struct Conn {
    pub(crate) client: AsyncClient,
    pub(crate) task: JoinHandle<()>,
}

pub(crate) async fn open(
    options: MqttOptions,
    subscription: Option<(String, QoS)>,
    deliveries: Option<mpsc::UnboundedSender<rumqttc::Publish>>,
    what: &str,
) -> Result<Conn, PubSubError> {
    let (client, eventloop) = AsyncClient::builder(options).capacity(256).build();
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(poll_loop(
        eventloop,
        client.clone(),
        subscription,
        deliveries,
        ready_tx,
    ));
    match tokio::time::timeout(WAIT, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(Conn { client, task }),
        Ok(Ok(Err(e))) => {
            task.abort();
            Err(PubSubError::Connect(format!("mqtt {what}: {e}")))
        }
        Ok(Err(_)) | Err(_) => {
            task.abort();
            Err(PubSubError::Connect(format!("mqtt {what}: timed out")))
        }
    }
}

async fn poll_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscription: Option<(String, QoS)>,
    deliveries: Option<mpsc::UnboundedSender<rumqttc::Publish>>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some((filter, qos)) = &subscription
                    && ready.is_none()
                    && let Err(e) = client.subscribe(filter.as_str(), *qos).await
                {
                    tracing::warn!(filter = %filter, error = %e, "mqtt: resubscribe failed");
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match &deliveries {
                Some(tx) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                None => tracing::debug!("mqtt: publish on a publishing connection ignored"),
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e.to_string()));
                    return;
                }
                tracing::warn!(error = %e, "mqtt: connection lost; reconnecting");
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

pub struct MqttPubSub {
    publisher: Conn,
    settings: Settings,
    component: ComponentMetadata,
}

impl Drop for MqttPubSub {
    fn drop(&mut self) {
        self.publisher.task.abort();
    }
}

impl MqttPubSub {
    /// Validates the metadata and opens the publishing connection.
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let settings = Settings::from_metadata(md)?;
        // The URL may hold a password: errors name only the component.
        let publisher = open(
            settings.options("pub"),
            None,
            None,
            &format!("pub/sub '{}'", md.name),
        )
        .await?;
        tracing::info!(component = %md.name, "mqtt pub/sub connected");
        Ok(Self {
            publisher,
            settings,
            component: md.clone(),
        })
    }
}

#[async_trait]
impl PubSub for MqttPubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if req.topic.is_empty() {
            return Err(invalid("topic", "the topic is empty"));
        }
        let retain = parse_bool(
            req.metadata.get("retain").map(String::as_str),
            "retain",
            self.settings.retain,
        )?;
        publish(
            &self.publisher.client,
            &req.topic,
            &req.data,
            self.settings.qos,
            retain,
        )
        .await
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError> {
        let s = SubscribeSettings::new(&self.component, &req)?;
        let qos = self.settings.qos;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = open(
            self.settings.options("sub"),
            Some((s.filter.clone(), qos)),
            Some(tx),
            &format!("subscription to '{}'", s.filter),
        )
        .await?;
        if let Err(e) = subscribe_acked(&conn.client, &s.filter, qos).await {
            conn.task.abort();
            return Err(e);
        }
        tracing::info!(filter = %s.filter, "mqtt pub/sub subscribed");
        let (stop_tx, stop) = StopSignal::pair();
        let topic_hint = plain_topic(&s.filter).to_owned();
        let deliver = Arc::new(ToMessage {
            handler,
            topic_hint,
        });
        let dispatcher = tokio::spawn(dispatch(conn.client, s, rx, deliver, stop));
        Ok(Subscription::new(stop_tx, vec![conn.task, dispatcher]))
    }

    fn features(&self) -> Vec<String> {
        vec!["SUBSCRIBE_WILDCARDS".to_owned()]
    }
}

/// Publishes and waits for the broker's acknowledgement (QoS 1 and 2).
pub(crate) async fn publish(
    client: &AsyncClient,
    topic: &str,
    data: &[u8],
    qos: QoS,
    retain: bool,
) -> Result<(), PubSubError> {
    let mut opts = PublishOptions::new(qos);
    if retain {
        opts = opts.retained();
    }
    let what = format!("publish to '{topic}'");
    let notice = client
        .publish_tracked(topic, data.to_vec(), opts)
        .await
        .map_err(|e| backend(&what, e))?;
    match tokio::time::timeout(WAIT, notice.wait_async()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(backend(&what, e)),
        Err(_) => Err(backend(&what, "no acknowledgement from the broker")),
    }
}

/// Subscribes and waits for a SUBACK that grants the subscription.
pub(crate) async fn subscribe_acked(
    client: &AsyncClient,
    filter: &str,
    qos: QoS,
) -> Result<(), PubSubError> {
    let what = format!("subscribe to '{filter}'");
    let notice = client
        .subscribe_tracked(filter, qos)
        .await
        .map_err(|e| backend(&what, e))?;
    let ack = tokio::time::timeout(WAIT, notice.wait_async())
        .await
        .map_err(|_| backend(&what, "timed out"))?
        .map_err(|e| backend(&what, e))?;
    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
        return Err(backend(&what, "the broker refused the subscription"));
    }
    Ok(())
}

/// Where [`dispatch`] hands each delivery; `Err` leaves it unacked (and
/// retried per the settings).
#[async_trait]
pub(crate) trait Deliver: Send + Sync + 'static {
    async fn deliver(&self, p: &rumqttc::Publish) -> Result<(), String>;
}

/// The pub/sub side: a delivery becomes a [`Message`].
struct ToMessage {
    handler: Arc<dyn MessageHandler>,
    topic_hint: String,
}

#[async_trait]
impl Deliver for ToMessage {
    async fn deliver(&self, p: &rumqttc::Publish) -> Result<(), String> {
        let topic = std::str::from_utf8(&p.topic)
            .map(str::to_owned)
            .unwrap_or_else(|_| self.topic_hint.clone());
        let msg = Message {
            topic,
            data: p.payload.clone(),
            content_type: None, // MQTT 3.1.1 messages carry no properties
            metadata: HashMap::from([("retained".to_owned(), p.retain.to_string())]),
        };
        self.handler.handle(msg).await.map_err(|e| e.0)
    }
}

/// Hands deliveries to `deliver`, at most `concurrency` at a time and in
/// arrival order; acks after success. Aborting this task aborts the
/// handlers in flight (their messages stay unacked).
pub(crate) async fn dispatch(
    client: AsyncClient,
    s: SubscribeSettings,
    mut rx: mpsc::UnboundedReceiver<rumqttc::Publish>,
    deliver: Arc<dyn Deliver>,
    mut stop: StopSignal,
) {
    let permits = Arc::new(Semaphore::new(s.concurrency));
    let mut running = JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.stopped() => break,
            p = rx.recv() => p,
        };
        let Some(p) = next else { break };
        let permit = tokio::select! {
            _ = stop.stopped() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        while running.try_join_next().is_some() {}
        let (client, deliver, stop) = (client.clone(), deliver.clone(), stop.clone());
        let (max_retries, backoff) = (s.max_retries, s.backoff);
        running.spawn(async move {
            let _permit = permit;
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            let mut failures: i64 = 0;
            loop {
                match deliver.deliver(&p).await {
                    Ok(()) => {
                        if let Err(e) = client.ack(&p).await {
                            tracing::warn!(topic = %topic, error = %e, "mqtt: ack failed");
                        }
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        if stop.is_stopped() || (max_retries >= 0 && failures > max_retries) {
                            tracing::warn!(topic = %topic, error = %e, "mqtt: message left unacknowledged");
                            return;
                        }
                        tracing::debug!(topic = %topic, error = %e, "mqtt: handler failed; retrying");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        });
    }
    // Graceful stop: no new messages for this replica, let handlers finish
    // (and ack), then leave.
    if s.unsubscribe_on_stop {
        let _ = client.unsubscribe(s.filter.as_str()).await;
    }
    while running.join_next().await.is_some() {}
    let _ = client.disconnect().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(url: &str) -> ComponentMetadata {
        ComponentMetadata::new("pubsub", "app").with("url", url)
    }

    #[test]
    fn url_forms() {
        let s = Settings::from_metadata(&md("tcp://u:p@broker:1884")).unwrap();
        assert_eq!(s.endpoint.host, "broker");
        assert_eq!(s.endpoint.port, 1884);
        assert_eq!(s.endpoint.username.as_deref(), Some("u"));
        assert_eq!(s.endpoint.password.as_deref(), Some("p"));
        assert!(s.endpoint.tls.is_none());
        assert_eq!(s.consumer_id, "app");
        assert_eq!(s.qos, QoS::AtLeastOnce);
        let s = Settings::from_metadata(&md("mqtt://127.0.0.1")).unwrap();
        assert_eq!(s.endpoint.port, 1883);
        assert!(Settings::from_metadata(&md("http://h")).is_err());
        assert!(Settings::from_metadata(&md("tcp://h:x")).is_err());
        assert!(Settings::from_metadata(&ComponentMetadata::new("p", "a")).is_err());
        assert!(Settings::from_metadata(&md("tcp://h").with("qos", "3")).is_err());
        assert!(Settings::from_metadata(&md("tcp://h").with("retain", "maybe")).is_err());
        assert!(Settings::from_metadata(&md("ssl://h").with("caCert", "junk")).is_err());
        assert!(Settings::from_metadata(&md("ssl://h").with("clientCert", "x")).is_err());
    }

    #[test]
    fn shared_subscription_filter() {
        let m = md("tcp://h");
        let req = SubscribeRequest {
            topic: "orders".into(),
            consumer_group: "checkout".into(),
            metadata: HashMap::new(),
        };
        let s = SubscribeSettings::new(&m, &req).unwrap();
        assert_eq!(s.filter, "$share/checkout/orders");
        assert_eq!(plain_topic(&s.filter), "orders");
        let s = SubscribeSettings::new(&m.clone().with("consumerID", "g"), &req).unwrap();
        assert_eq!(s.filter, "$share/g/orders");
        let given = SubscribeRequest {
            topic: "$share/x/a/b".into(),
            ..req.clone()
        };
        assert_eq!(
            SubscribeSettings::new(&m, &given).unwrap().filter,
            "$share/x/a/b"
        );
        let bad = SubscribeRequest {
            consumer_group: "a/b".into(),
            ..req
        };
        assert!(SubscribeSettings::new(&m, &bad).is_err());
    }
}
