//! `pubsub.redis`: Redis Streams, as Dapr's component uses them.
//!
//! A topic is a stream; publishing is `XADD <topic> [MAXLEN ~ maxLenApprox] *
//! data <bytes>` (plus a `metadata` JSON field when there is any). A
//! subscription reads with `XREADGROUP` in the consumer group (the app id, or
//! `consumerID`), so replicas of one app compete and every app gets every
//! message. A message is `XACK`ed only after its handler succeeded; anything
//! left pending longer than `processingTimeout` is taken over with
//! `XAUTOCLAIM` every `redeliverInterval`, by whichever replica is alive.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{
    ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};
use tokio::sync::{Mutex, mpsc};

use super::{
    CONSUMER_ID_KEY, Message, MessageHandler, PubSub, PubSubError, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, duration_or_millis,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_REDELIVER_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_QUEUE_DEPTH: usize = 100;
const DEFAULT_CONCURRENCY: usize = 10;
/// How long one `XREADGROUP` blocks, so a stop request is seen promptly.
const READ_BLOCK: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

fn invalid(field: &str, reason: impl Into<String>) -> PubSubError {
    PubSubError::Metadata(MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    })
}

fn backend(e: redis::RedisError) -> PubSubError {
    PubSubError::Backend(format!("redis: {e}"))
}

/// Connection settings. Not `Debug`: it holds the password.
struct Connection {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    tls: bool,
}

impl Connection {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let host_field = md.require("redisHost")?.trim();
        if host_field.contains(',')
            || md
                .get("redisType")
                .is_some_and(|t| !t.eq_ignore_ascii_case("node"))
            || md.get_bool("failover")?.unwrap_or(false)
        {
            return Err(invalid(
                "redisType",
                "only a single Redis node is supported (no cluster or sentinel failover)",
            ));
        }
        let (host, port) = match host_field.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| invalid("redisHost", format!("invalid port '{p}'")))?,
            ),
            _ => (host_field.to_owned(), DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(invalid("redisHost", "empty host"));
        }
        Ok(Self {
            host,
            port,
            username: md.get("redisUsername").map(str::to_owned),
            password: md.get("redisPassword").map(str::to_owned),
            db: md.get_parsed::<i64>("redisDB")?.unwrap_or(0),
            tls: md.get_bool("enableTLS")?.unwrap_or(false),
        })
    }

    fn client(&self) -> Result<redis::Client, PubSubError> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| PubSubError::Connect(format!("redis: invalid address: {e}")))?
            .set_redis_settings(settings);
        redis::Client::open(info).map_err(|e| PubSubError::Connect(format!("redis: {e}")))
    }
}

/// Per-subscription settings: subscription metadata overrides the component's.
struct SubscribeSettings {
    group: String,
    redeliver_interval: Duration,
    processing_timeout: Duration,
    queue_depth: usize,
    concurrency: usize,
}

impl SubscribeSettings {
    fn new(md: &ComponentMetadata, req: &SubscribeRequest) -> Result<Self, PubSubError> {
        let get = |key: &str| {
            req.metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
                .or_else(|| md.get(key))
        };
        let count = |key: &str, default: usize| -> Result<usize, PubSubError> {
            match get(key).map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(invalid(key, "expected a positive integer")),
                },
            }
        };
        let group = get(CONSUMER_ID_KEY)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| req.consumer_group.clone());
        if group.is_empty() {
            return Err(invalid(CONSUMER_ID_KEY, "no consumer group (app id)"));
        }
        Ok(Self {
            group,
            redeliver_interval: duration_or_millis(&req.metadata, md, "redeliverInterval")?
                .unwrap_or(DEFAULT_REDELIVER_INTERVAL),
            processing_timeout: duration_or_millis(&req.metadata, md, "processingTimeout")?
                .unwrap_or(DEFAULT_PROCESSING_TIMEOUT),
            queue_depth: count("queueDepth", DEFAULT_QUEUE_DEPTH)?,
            concurrency: count("concurrency", DEFAULT_CONCURRENCY)?,
        })
    }
}

pub struct RedisPubSub {
    client: redis::Client,
    conn: ConnectionManager,
    max_len_approx: Option<u64>,
    component: ComponentMetadata,
}

impl RedisPubSub {
    /// Connects and pings; fails if the server cannot be reached.
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, PubSubError> {
        let settings = Connection::from_metadata(md)?;
        // Validate subscription defaults now so a bad value fails at load.
        SubscribeSettings::new(
            md,
            &SubscribeRequest {
                consumer_group: md.app_id.clone(),
                ..Default::default()
            },
        )?;
        let max_len_approx = md.get_parsed::<u64>("maxLenApprox")?.filter(|n| *n > 0);
        let client = settings.client()?;
        let target = format!("{}:{}", settings.host, settings.port);
        let cfg = ConnectionManagerConfig::new()
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let mut conn = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(|e| PubSubError::Connect(format!("redis pub/sub: {target}: {e}")))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| PubSubError::Connect(format!("redis pub/sub: {target}: {e}")))?;
        tracing::info!(component = %md.name, target = %target, "redis pub/sub connected");
        Ok(Self {
            client,
            conn,
            max_len_approx,
            component: md.clone(),
        })
    }

    /// A connection of its own for blocking reads (no response timeout:
    /// `XREADGROUP ... BLOCK` holds it).
    async fn reader(&self) -> Result<ConnectionManager, PubSubError> {
        let cfg = ConnectionManagerConfig::new()
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(READ_BLOCK + Duration::from_secs(10)));
        ConnectionManager::new_with_config(self.client.clone(), cfg)
            .await
            .map_err(|e| PubSubError::Connect(format!("redis pub/sub: {e}")))
    }
}

/// Creates the consumer group (and the stream) unless it exists.
async fn ensure_group(
    conn: &mut ConnectionManager,
    topic: &str,
    group: &str,
) -> Result<(), redis::RedisError> {
    let res: Result<Value, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(topic)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match res {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// One stream entry waiting for a worker.
struct Pending {
    id: String,
    msg: Message,
}

fn to_pending(topic: &str, entry: StreamId) -> Option<Pending> {
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    };
    // Entries without `data` (written by something else) are skipped and
    // acknowledged like Dapr's component does with unreadable entries.
    let data = entry.map.get("data").and_then(bytes)?;
    let metadata: HashMap<String, String> = entry
        .map
        .get("metadata")
        .and_then(bytes)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Some(Pending {
        id: entry.id,
        msg: Message {
            topic: topic.to_owned(),
            data,
            content_type: metadata.get("contentType").cloned(),
            metadata,
        },
    })
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&req.topic);
        if let Some(n) = self.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg("data").arg(req.data.as_ref());
        let mut metadata = req.metadata;
        if let Some(ct) = req.content_type {
            metadata.insert("contentType".to_owned(), ct);
        }
        if !metadata.is_empty() {
            let json = serde_json::to_vec(&metadata)
                .map_err(|e| PubSubError::Backend(format!("metadata: {e}")))?;
            cmd.arg("metadata").arg(json);
        }
        let _: Value = cmd
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError> {
        let s = SubscribeSettings::new(&self.component, &req)?;
        let topic = req.topic.clone();
        let mut conn = self.conn.clone();
        ensure_group(&mut conn, &topic, &s.group)
            .await
            .map_err(backend)?;
        let reader = self.reader().await?;
        let (stop_tx, stop) = StopSignal::pair();
        let (tx, rx) = mpsc::channel::<Pending>(s.queue_depth);
        let rx = Arc::new(Mutex::new(rx));
        // Dapr's component uses the consumer id as both group and consumer
        // name: a replica's pending entries are reclaimed by any other one.
        let consumer = s.group.clone();
        let mut tasks = vec![tokio::spawn(read_loop(
            reader,
            topic.clone(),
            s.group.clone(),
            consumer.clone(),
            s.queue_depth,
            tx.clone(),
            stop.clone(),
        ))];
        if !s.redeliver_interval.is_zero() && !s.processing_timeout.is_zero() {
            tasks.push(tokio::spawn(reclaim_loop(
                conn.clone(),
                topic.clone(),
                s.group.clone(),
                consumer,
                s.processing_timeout,
                s.redeliver_interval,
                s.queue_depth,
                tx,
                stop.clone(),
            )));
        }
        for _ in 0..s.concurrency {
            tasks.push(tokio::spawn(work_loop(
                conn.clone(),
                topic.clone(),
                s.group.clone(),
                rx.clone(),
                handler.clone(),
                stop.clone(),
            )));
        }
        Ok(Subscription::new(stop_tx, tasks))
    }

    fn features(&self) -> Vec<String> {
        Vec::new()
    }
}

async fn read_loop(
    mut conn: ConnectionManager,
    topic: String,
    group: String,
    consumer: String,
    count: usize,
    tx: mpsc::Sender<Pending>,
    mut stop: StopSignal,
) {
    while !stop.is_stopped() {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&group)
            .arg(&consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&topic)
            .arg(">");
        let read = cmd.query_async::<Option<StreamReadReply>>(&mut conn);
        let reply = tokio::select! {
            _ = stop.stopped() => return,
            r = read => r,
        };
        match reply {
            Ok(Some(reply)) => {
                for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                    let id = entry.id.clone();
                    match to_pending(&topic, entry) {
                        Some(p) => {
                            if tx.send(p).await.is_err() {
                                return;
                            }
                        }
                        None => ack(&mut conn, &topic, &group, &id).await,
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                // A deleted stream loses its group: create both again.
                if e.code() == Some("NOGROUP") {
                    let _ = ensure_group(&mut conn, &topic, &group).await;
                } else {
                    tracing::warn!(topic = %topic, error = %e, "redis pub/sub: read failed; retrying");
                }
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reclaim_loop(
    mut conn: ConnectionManager,
    topic: String,
    group: String,
    consumer: String,
    min_idle: Duration,
    interval: Duration,
    count: usize,
    tx: mpsc::Sender<Pending>,
    mut stop: StopSignal,
) {
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let mut cursor = "0-0".to_owned();
        loop {
            let claimed = redis::cmd("XAUTOCLAIM")
                .arg(&topic)
                .arg(&group)
                .arg(&consumer)
                .arg(min_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count)
                .query_async::<StreamAutoClaimReply>(&mut conn)
                .await;
            let reply = match claimed {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "redis pub/sub: reclaiming pending messages failed");
                    break;
                }
            };
            for entry in reply.claimed {
                let id = entry.id.clone();
                tracing::debug!(topic = %topic, id = %id, "redis pub/sub: redelivering a pending message");
                match to_pending(&topic, entry) {
                    Some(p) => {
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    None => ack(&mut conn, &topic, &group, &id).await,
                }
            }
            if reply.next_stream_id == "0-0" || reply.next_stream_id.is_empty() {
                break;
            }
            cursor = reply.next_stream_id;
        }
    }
}

async fn work_loop(
    mut conn: ConnectionManager,
    topic: String,
    group: String,
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    handler: Arc<dyn MessageHandler>,
    mut stop: StopSignal,
) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            tokio::select! {
                _ = stop.stopped() => return,
                p = rx.recv() => p,
            }
        };
        let Some(p) = next else { return };
        match handler.handle(p.msg).await {
            Ok(()) => ack(&mut conn, &topic, &group, &p.id).await,
            // Left pending: reclaimed after processingTimeout.
            Err(e) => {
                tracing::debug!(topic = %topic, id = %p.id, error = %e, "redis pub/sub: handler failed; message stays pending")
            }
        }
    }
}

async fn ack(conn: &mut ConnectionManager, topic: &str, group: &str, id: &str) {
    let res: Result<Value, _> = redis::cmd("XACK")
        .arg(topic)
        .arg(group)
        .arg(id)
        .query_async(conn)
        .await;
    if let Err(e) = res {
        tracing::warn!(topic, id, error = %e, "redis pub/sub: XACK failed; the message will be redelivered");
    }
}
