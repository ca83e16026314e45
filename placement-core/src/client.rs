//! The sidecar side of the placement protocol.
//!
//! A [`PlacementClient`] keeps one `ReportDaprStatus` stream open to the
//! placement leader: it tries the configured addresses in turn (followers
//! answer `FailedPrecondition` "not a leader", and any error moves on to the
//! next address), reports the host (name `"<ip>:<internal gRPC port>"`, actor
//! types, app id, namespace, port) on connect and then every second, and
//! applies the leader's orders:
//!
//! * `lock`: actor placement is about to change, callers that must not race
//!   with the change wait ([`PlacementClient::wait_unlocked`]);
//! * `update`: new tables, installed atomically;
//! * `unlock`: the change is complete; the first one after a (re)connect
//!   makes the client *ready*.
//!
//! Every order is acknowledged with a `Host` carrying the operation and the
//! order's version (Dapr 1.17 protocol); acknowledgements also carry the full
//! report, so a Dapr <= 1.16 placement, which ignores those fields, takes them
//! as heartbeats.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use dapr_rs_proto::generated::dapr::proto::placement::v1::{
    Host, HostOperation, PlacementOrder, placement_client::PlacementClient as GrpcClient,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::{
    hashing::{RingHost, VirtualNodesCache},
    tables::ActorTables,
};

/// Actor API level reported to placement (what Dapr sidecars report).
pub const ACTOR_API_LEVEL: u32 = 20;

/// Order operation names.
pub const OPERATION_LOCK: &str = "lock";
/// See [`OPERATION_LOCK`].
pub const OPERATION_UPDATE: &str = "update";
/// See [`OPERATION_LOCK`].
pub const OPERATION_UNLOCK: &str = "unlock";

/// Errors of the placement client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No placement address was configured.
    #[error("no placement address configured")]
    NoAddresses,
    /// An address is not a valid URI.
    #[error("invalid placement address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The host name is empty.
    #[error("the host name (\"<ip>:<port>\") must not be empty")]
    NoHostName,
    /// A wait ran out of time.
    #[error("timed out after {0:?} waiting for placement")]
    Timeout(Duration),
    /// The client was shut down.
    #[error("placement client stopped")]
    Stopped,
}

/// Why a session with one placement server ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("placement closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What the client reports and how it connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Placement addresses, `host:port` or `http://host:port`.
    pub addresses: Vec<String>,
    /// Host name, `"<ip>:<internal gRPC port>"`.
    pub host_name: String,
    /// Internal gRPC port.
    pub port: i64,
    /// App ID.
    pub app_id: String,
    /// Namespace.
    pub namespace: String,
    /// Actor types hosted here (may be empty: the client still gets tables).
    pub entities: Vec<String>,
    /// Interval of host reports (Dapr: 1 s).
    pub heartbeat_interval: Duration,
    /// Pause after every address failed in turn (50 ms between addresses).
    pub retry_interval: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval and timeout.
    pub keepalive: (Duration, Duration),
}

impl ClientOptions {
    /// Options with Dapr's timings for the given host.
    pub fn new(
        addresses: Vec<String>,
        host_name: impl Into<String>,
        port: i64,
        app_id: impl Into<String>,
        namespace: impl Into<String>,
        entities: Vec<String>,
    ) -> Self {
        Self {
            addresses,
            host_name: host_name.into(),
            port,
            app_id: app_id.into(),
            namespace: namespace.into(),
            entities,
            heartbeat_interval: Duration::from_secs(1),
            retry_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            keepalive: (Duration::from_secs(2), Duration::from_secs(3)),
        }
    }
}

/// Dissemination phase as seen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// No dissemination in progress.
    #[default]
    Unlocked,
    /// `lock` received.
    Locked,
    /// `update` received, waiting for `unlock`.
    Updated,
}

/// Observable state of the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientState {
    /// A stream to the leader is open.
    pub connected: bool,
    /// Address of the server the stream is open to.
    pub server: Option<String>,
    /// Tables complete: an `unlock` was received on the current stream.
    pub ready: bool,
    /// Dissemination phase.
    pub phase: Phase,
    /// Version of the last order received.
    pub order_version: u64,
    /// Version of the installed tables.
    pub tables_version: u64,
    /// Number of (actor type, host) entries in the installed tables.
    pub table_entries: usize,
    /// Streams opened so far (1 after the first connect).
    pub sessions: u64,
}

struct Shared {
    tables: ArcSwap<ActorTables>,
    state: watch::Sender<ClientState>,
    entities: watch::Sender<Vec<String>>,
    cache: Arc<VirtualNodesCache>,
}

/// Handle to a running placement client (cheap to clone).
#[derive(Clone)]
pub struct PlacementClient {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for PlacementClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementClient")
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl PlacementClient {
    /// Validates the options and starts the client on the current Tokio
    /// runtime. `cache` lets many clients of one process share vnode hashes.
    pub fn start(
        opts: ClientOptions,
        cache: Option<Arc<VirtualNodesCache>>,
    ) -> Result<Self, ClientError> {
        if opts.addresses.is_empty() {
            return Err(ClientError::NoAddresses);
        }
        if opts.host_name.is_empty() {
            return Err(ClientError::NoHostName);
        }
        let endpoints = opts
            .addresses
            .iter()
            .map(|a| endpoint(a, &opts))
            .collect::<Result<Vec<_>, _>>()?;
        let cache = cache.unwrap_or_default();
        let shared = Arc::new(Shared {
            tables: ArcSwap::from_pointee(ActorTables::empty(cache.clone())),
            state: watch::Sender::new(ClientState::default()),
            entities: watch::Sender::new(opts.entities.clone()),
            cache,
        });
        let (stop, stop_rx) = watch::channel(false);
        let runner = Runner {
            identity: Identity {
                name: opts.host_name.clone(),
                port: opts.port,
                app_id: opts.app_id.clone(),
                namespace: opts.namespace.clone(),
            },
            opts,
            endpoints,
            shared: shared.clone(),
            stop: stop_rx,
        };
        let task = tokio::spawn(runner.run());
        Ok(Self {
            shared,
            stop,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }

    /// The host owning an actor, per the installed tables.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Option<RingHost> {
        self.shared
            .tables
            .load()
            .lookup(actor_type, actor_id)
            .cloned()
    }

    /// The installed tables.
    pub fn tables(&self) -> Arc<ActorTables> {
        self.shared.tables.load_full()
    }

    /// A snapshot of the client state.
    pub fn state(&self) -> ClientState {
        self.shared.state.borrow().clone()
    }

    /// Watch the client state.
    pub fn subscribe(&self) -> watch::Receiver<ClientState> {
        self.shared.state.subscribe()
    }

    /// Whether tables are ready ("tables ready" signal).
    pub fn is_ready(&self) -> bool {
        self.shared.state.borrow().ready
    }

    /// Replaces the reported actor types; reported at once.
    pub fn set_entities(&self, entities: Vec<String>) {
        self.shared.entities.send_replace(entities);
    }

    /// Waits until `pred` holds for the state, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&ClientState) -> bool,
    ) -> Result<ClientState, ClientError> {
        let mut rx = self.shared.state.subscribe();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Ok(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)))
    }

    /// Waits until tables are ready.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<ClientState, ClientError> {
        self.wait_for(timeout, |s| s.ready).await
    }

    /// Waits until no dissemination is in progress (and tables are ready).
    pub async fn wait_unlocked(&self, timeout: Duration) -> Result<ClientState, ClientError> {
        self.wait_for(timeout, |s| s.ready && s.phase == Phase::Unlocked)
            .await
    }

    /// Closes the stream (placement then drops this host) and stops.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn endpoint(address: &str, opts: &ClientOptions) -> Result<Endpoint, ClientError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let invalid = |reason: String| ClientError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let ep = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
    Ok(ep
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(opts.keepalive.0)
        .keep_alive_timeout(opts.keepalive.1)
        .keep_alive_while_idle(true))
}

/// What every report carries.
#[derive(Clone)]
struct Identity {
    name: String,
    port: i64,
    app_id: String,
    namespace: String,
}

impl Identity {
    fn report(&self, entities: &[String]) -> Host {
        #[allow(deprecated)]
        Host {
            name: self.name.clone(),
            port: self.port,
            entities: entities.to_vec(),
            id: self.app_id.clone(),
            api_level: ACTOR_API_LEVEL,
            namespace: self.namespace.clone(),
            operation: HostOperation::Report as i32,
            version: None,
            ..Default::default()
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Runner {
    identity: Identity,
    opts: ClientOptions,
    endpoints: Vec<Endpoint>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

enum SessionEnd {
    Stopped,
}

impl Runner {
    async fn run(mut self) {
        let mut idx = 0usize;
        let mut failures_in_row = 0u32;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let address = self.opts.addresses[idx % self.opts.addresses.len()].clone();
            let endpoint = self.endpoints[idx % self.endpoints.len()].clone();
            let sessions_before = self.shared.state.borrow().sessions;
            match self.session(&address, endpoint).await {
                Ok(SessionEnd::Stopped) => break,
                Err(e) => {
                    if self.shared.state.borrow().sessions != sessions_before {
                        // The stream had been up: report this failure.
                        failures_in_row = 0;
                    }
                    failures_in_row += 1;
                    let not_leader = matches!(&e, SessionError::Status(s) if s.code() == tonic::Code::FailedPrecondition);
                    if not_leader || failures_in_row % 20 != 1 {
                        debug!(%address, error = %e, "placement: trying the next address");
                    } else {
                        warn!(%address, error = %e, "placement: stream failed, trying the next address");
                    }
                    self.shared.state.send_modify(|s| {
                        s.connected = false;
                        s.server = None;
                        s.ready = false;
                        s.phase = Phase::Unlocked;
                    });
                    idx = idx.wrapping_add(1);
                    // Try the other addresses quickly; pause after a full turn.
                    let pause = if idx.is_multiple_of(self.opts.addresses.len()) {
                        self.opts.retry_interval
                    } else {
                        self.opts.retry_interval.min(Duration::from_millis(50))
                    };
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        self.shared.state.send_modify(|s| {
            s.connected = false;
            s.server = None;
            s.ready = false;
        });
    }

    fn report(&self, entities: &[String]) -> Host {
        self.identity.report(entities)
    }

    async fn session(
        &mut self,
        address: &str,
        endpoint: Endpoint,
    ) -> Result<SessionEnd, SessionError> {
        let channel: Channel = tokio::time::timeout(self.opts.connect_timeout, endpoint.connect())
            .await
            .map_err(|_| SessionError::ConnectTimeout)??;
        let mut grpc = GrpcClient::new(channel);
        let mut entities_rx = self.shared.entities.subscribe();
        let mut entities = entities_rx.borrow_and_update().clone();
        let (tx, rx) = mpsc::channel::<Host>(64);
        // The server reads the first report before it answers.
        let _ = tx.try_send(self.report(&entities));
        let mut inbound = grpc
            .report_dapr_status(ReceiverStream::new(rx))
            .await?
            .into_inner();
        info!(%address, "placement: connected to the leader");
        self.shared.state.send_modify(|s| {
            s.connected = true;
            s.server = Some(address.to_owned());
            s.ready = false;
            s.phase = Phase::Unlocked;
            s.sessions += 1;
        });

        // Heartbeats run on their own task so that applying a large table
        // never delays them.
        let _heartbeat = {
            let tx = tx.clone();
            let identity = self.identity.clone();
            let entities = self.shared.entities.subscribe();
            let period = self.opts.heartbeat_interval;
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let report = identity.report(&entities.borrow());
                    // A full queue means the stream is stuck; skip a beat.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(report) {
                        break;
                    }
                }
            }))
        };
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(SessionEnd::Stopped),
                changed = entities_rx.changed() => {
                    if changed.is_ok() {
                        entities = entities_rx.borrow_and_update().clone();
                        let _ = tx.try_send(self.report(&entities));
                    }
                }
                msg = inbound.message() => match msg? {
                    Some(order) => self.apply(order, &tx, &entities)?,
                    None => return Err(SessionError::Closed),
                },
            }
        }
    }

    fn apply(
        &self,
        order: PlacementOrder,
        tx: &mpsc::Sender<Host>,
        entities: &[String],
    ) -> Result<(), SessionError> {
        #[allow(deprecated)]
        let version = if order.version > 0 {
            order.version
        } else {
            order
                .tables
                .as_ref()
                .and_then(|t| t.version.parse().ok())
                .unwrap_or(0)
        };
        let op = match order.operation.as_str() {
            OPERATION_LOCK => {
                self.shared.state.send_modify(|s| {
                    s.phase = Phase::Locked;
                    s.order_version = version;
                });
                HostOperation::Lock
            }
            OPERATION_UPDATE => {
                let tables = order.tables.unwrap_or_default();
                let view = ActorTables::from_proto(tables, version, self.shared.cache.clone());
                let entries = view.entry_count();
                self.shared.tables.store(Arc::new(view));
                self.shared.state.send_modify(|s| {
                    s.phase = Phase::Updated;
                    s.order_version = version;
                    s.tables_version = version;
                    s.table_entries = entries;
                });
                debug!(version, entries, "placement: tables updated");
                HostOperation::Update
            }
            OPERATION_UNLOCK => {
                self.shared.state.send_modify(|s| {
                    s.phase = Phase::Unlocked;
                    s.order_version = version;
                    s.ready = true;
                });
                HostOperation::Unlock
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unknown operation {other:?}"
                )));
            }
        };
        let mut ack = self.report(entities);
        ack.operation = op as i32;
        ack.version = Some(version);
        tx.try_send(ack)
            .map_err(|_| SessionError::Protocol("outbound queue full".into()))
    }
}
