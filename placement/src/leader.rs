//! The leader loop: one task per leadership term owning every sidecar stream.
//!
//! * Membership changes seen on streams (a host joined, left, changed its
//!   actor types, stopped heartbeating, failed to acknowledge) are collected
//!   and committed through Raft in one batch per coalesce window.
//! * After a commit, every namespace whose tables changed gets a
//!   dissemination round: `lock` to all its streams, wait for every
//!   acknowledgement, `update` with the tables, wait, `unlock`, wait. Dapr
//!   <= 1.16 sidecars never acknowledge and are counted as done once the
//!   order is queued to them. Streams that do not acknowledge a phase within
//!   `--disseminate-timeout` are disconnected (and so removed). Changes that
//!   arrive during a round trigger one follow-up round.
//! * A sidecar that joins without changing the tables (no actor types, or a
//!   reconnect after a leader change) gets the current tables on its own
//!   stream only.
//! * After taking over, hosts of the replicated membership that do not
//!   reconnect within `--faulty-host-detect-duration` are removed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dapr_placement_core::{
    client::{OPERATION_LOCK, OPERATION_UNLOCK, OPERATION_UPDATE},
    proto::{Host, HostOperation},
};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{
    grpc::{Encoded, OrderSender, QueueError, encode_order, not_leader},
    membership::{ApplyResult, Change, Command, HostMember},
    metrics::Metrics,
    raft::{Raft, store::SmData},
};

/// Delay between the end of a round (or a stream closing) and handing freed
/// heap memory back to the OS.
const TRIM_DELAY: Duration = Duration::from_millis(500);

/// Id of a sidecar stream (unique per process).
pub type StreamId = u64;

/// Input of the leader loop.
pub enum Event {
    /// A stream sent its first report.
    Open {
        /// Stream id.
        stream: StreamId,
        /// The first report.
        first: Host,
        /// Orders to the sidecar.
        out: OrderSender,
        /// Stops the stream's receive task.
        kill: oneshot::Sender<()>,
        /// Dapr <= 1.16 sidecar (no operation in its reports, no acks).
        legacy: bool,
    },
    /// A later message on a stream.
    Report {
        /// Stream id.
        stream: StreamId,
        /// The message.
        host: Host,
    },
    /// A stream ended.
    Closed {
        /// Stream id.
        stream: StreamId,
    },
    /// A Raft write finished.
    Committed {
        /// What was written.
        changes: Vec<Change>,
        /// Its result.
        result: Result<ApplyResult, String>,
    },
    /// Leadership lost: close everything.
    Shutdown,
}

/// Settings of the leader loop.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// This node's id (for error messages).
    pub node: String,
    /// Virtual nodes per host.
    pub replication_factor: i64,
    /// Bounds of the announced actor API level.
    pub min_api_level: u32,
    /// See `min_api_level`.
    pub max_api_level: Option<u32>,
    /// Time a phase may take.
    pub disseminate_timeout: Duration,
    /// Batching window of membership commits.
    pub coalesce_window: Duration,
    /// Heartbeating sidecars silent this long are dropped.
    pub heartbeat_timeout: Duration,
    /// Grace period for hosts of the previous term to reconnect.
    pub faulty_host_detect_duration: Duration,
    /// Timeout of one Raft write.
    pub raft_write_timeout: Duration,
}

struct StreamState {
    namespace: String,
    name: String,
    app_id: String,
    out: OrderSender,
    kill: Option<oneshot::Sender<()>>,
    legacy: bool,
    last_report: Instant,
    last_content: Option<HostMember>,
    heartbeats: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Lock,
    Update,
    Unlock,
}

impl Phase {
    fn ack(self) -> HostOperation {
        match self {
            Phase::Lock => HostOperation::Lock,
            Phase::Update => HostOperation::Update,
            Phase::Unlock => HostOperation::Unlock,
        }
    }
}

struct Round {
    version: u64,
    phase: Phase,
    participants: BTreeSet<StreamId>,
    pending: HashSet<StreamId>,
    update: Encoded,
    started: Instant,
    phase_started: Instant,
    /// Milliseconds spent in the lock, update and unlock phases.
    phase_ms: [f64; 3],
    host_count: usize,
}

#[derive(Default)]
struct Namespace {
    streams: BTreeSet<StreamId>,
    round: Option<Round>,
    dirty: bool,
    waiting: BTreeSet<StreamId>,
}

/// The loop's state.
pub struct Leader {
    cfg: LeaderConfig,
    raft: Raft,
    sm: Arc<RwLock<SmData>>,
    metrics: Arc<Metrics>,
    streams: HashMap<StreamId, StreamState>,
    namespaces: BTreeMap<String, Namespace>,
    /// Which stream reports each (namespace, host name).
    owners: HashMap<(String, String), StreamId>,
    pending: BTreeMap<(String, String), Change>,
    in_flight: BTreeMap<(String, String), Change>,
    /// When the newest / oldest queued change arrived.
    last_change: Option<Instant>,
    pending_since: Option<Instant>,
    write_in_flight: bool,
    tx: mpsc::Sender<Event>,
    started: Instant,
    faulty_check_done: bool,
    lock_order: Encoded,
    unlock_cache: HashMap<u64, Encoded>,
    /// When to hand freed heap back to the OS (after a round or closures).
    trim_due: Option<Instant>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Leader {
    /// Starts the loop of a new term; returns its input.
    pub fn spawn(
        cfg: LeaderConfig,
        raft: Raft,
        sm: Arc<RwLock<SmData>>,
        metrics: Arc<Metrics>,
    ) -> mpsc::Sender<Event> {
        let (tx, rx) = mpsc::channel(8192);
        let leader = Leader {
            cfg,
            raft,
            sm,
            metrics,
            streams: HashMap::new(),
            namespaces: BTreeMap::new(),
            owners: HashMap::new(),
            pending: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            last_change: None,
            pending_since: None,
            write_in_flight: false,
            tx: tx.clone(),
            started: Instant::now(),
            faulty_check_done: false,
            lock_order: encode_order(OPERATION_LOCK, 0, None),
            unlock_cache: HashMap::new(),
            trim_due: None,
        };
        tokio::spawn(leader.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        info!("leader loop started");
        let mut coalesce =
            tokio::time::interval((self.cfg.coalesce_window / 4).max(Duration::from_millis(5)));
        coalesce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    None | Some(Event::Shutdown) => break,
                    Some(ev) => self.handle(ev),
                },
                _ = coalesce.tick() => self.flush(),
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        let status = not_leader(&self.cfg.node);
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            self.kick(id, status.clone());
        }
        self.metrics.clear_namespaces();
        info!("leader loop stopped");
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Open {
                stream,
                first,
                out,
                kill,
                legacy,
            } => self.open(stream, first, out, kill, legacy),
            Event::Report { stream, host } => self.report(stream, host),
            Event::Closed { stream } => self.closed(stream),
            Event::Committed { changes, result } => self.committed(changes, result),
            Event::Shutdown => {}
        }
    }

    fn read_sm<T>(&self, f: impl FnOnce(&SmData) -> T) -> Option<T> {
        self.sm.read().ok().map(|d| f(&d))
    }

    // ---- streams ---------------------------------------------------------

    fn open(
        &mut self,
        id: StreamId,
        first: Host,
        out: OrderSender,
        kill: oneshot::Sender<()>,
        legacy: bool,
    ) {
        let namespace = first.namespace.clone();
        self.streams.insert(
            id,
            StreamState {
                namespace: namespace.clone(),
                name: first.name.clone(),
                app_id: first.id.clone(),
                out,
                kill: Some(kill),
                legacy,
                last_report: Instant::now(),
                last_content: None,
                heartbeats: false,
            },
        );
        self.namespaces
            .entry(namespace.clone())
            .or_default()
            .streams
            .insert(id);
        self.update_stream_metrics(&namespace);
        info!(stream = id, host = %first.name, app = %first.id, namespace = %namespace, entities = ?first.entities, legacy, "sidecar connected");
        self.apply_report(id, &first);
        // Gets the tables now, or (when a change is coming) from the next
        // round or right after it.
        self.push_current(id);
    }

    fn report(&mut self, id: StreamId, host: Host) {
        let op = HostOperation::try_from(host.operation).unwrap_or(HostOperation::Unknown);
        match op {
            HostOperation::Lock | HostOperation::Update | HostOperation::Unlock => {
                self.ack(id, op, host.version.unwrap_or(0));
            }
            HostOperation::Report | HostOperation::Unknown => {
                self.apply_report(id, &host);
            }
        }
    }

    /// Records a report; queues a membership change if needed. Returns
    /// whether the tables of the stream's namespace will change.
    fn apply_report(&mut self, id: StreamId, host: &Host) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        s.last_report = Instant::now();
        // The namespace and name of a stream are fixed by its first report.
        let mut h = host.clone();
        h.namespace.clone_from(&s.namespace);
        h.name.clone_from(&s.name);
        let member = HostMember::from_report(&h, now_nanos());
        match &s.last_content {
            Some(prev) if prev.same_as(&member) && !s.legacy => s.heartbeats = true,
            _ => {}
        }
        s.last_content = Some(member.clone());
        s.app_id.clone_from(&member.app_id);
        let key = (member.namespace.clone(), member.name.clone());

        if member.entities.is_empty() {
            // Not (or no longer) an actor host.
            if self.owners.get(&key) == Some(&id) {
                self.owners.remove(&key);
                return self.queue(
                    key.clone(),
                    Change::Remove {
                        namespace: key.0,
                        name: key.1,
                    },
                );
            }
            return false;
        }
        self.owners.insert(key.clone(), id);
        self.queue(key, Change::Upsert(member))
    }

    /// What the membership will say about `key` once queued and in-flight
    /// changes are committed.
    fn effective(&self, key: &(String, String)) -> Option<HostMember> {
        let change = self.pending.get(key).or_else(|| self.in_flight.get(key));
        match change {
            Some(Change::Upsert(m)) if !m.entities.is_empty() => Some(m.clone()),
            Some(_) => None,
            None => self
                .read_sm(|d| d.membership.get(&key.0, &key.1).cloned())
                .flatten(),
        }
    }

    /// Queues `change` unless it would not change the membership. Returns
    /// whether a change is queued or in flight for `key`.
    fn queue(&mut self, key: (String, String), change: Change) -> bool {
        let current = self.effective(&key);
        let same = match (&change, &current) {
            (Change::Upsert(m), Some(cur)) => cur.same_as(m),
            (Change::Upsert(m), None) => m.entities.is_empty(),
            (Change::Remove { .. }, None) => true,
            (Change::Remove { .. }, Some(_)) => false,
        };
        if !same {
            let now = Instant::now();
            self.last_change = Some(now);
            self.pending_since.get_or_insert(now);
            self.pending.insert(key.clone(), change);
        }
        self.pending.contains_key(&key) || self.in_flight.contains_key(&key)
    }

    fn closed(&mut self, id: StreamId) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        info!(stream = id, host = %s.name, namespace = %s.namespace, "sidecar disconnected");
        self.schedule_trim();
        let key = (s.namespace.clone(), s.name.clone());
        if self.owners.get(&key) == Some(&id) {
            self.owners.remove(&key);
            self.queue(
                key.clone(),
                Change::Remove {
                    namespace: key.0,
                    name: key.1,
                },
            );
        }
        let mut advance = false;
        if let Some(ns) = self.namespaces.get_mut(&s.namespace) {
            ns.streams.remove(&id);
            ns.waiting.remove(&id);
            if let Some(r) = ns.round.as_mut() {
                r.participants.remove(&id);
                advance = r.pending.remove(&id) && r.pending.is_empty();
            }
        }
        if advance {
            self.advance(&s.namespace);
        }
        self.update_stream_metrics(&s.namespace);
        self.gc_namespace(&s.namespace);
    }

    fn gc_namespace(&mut self, namespace: &str) {
        if let Some(ns) = self.namespaces.get(namespace)
            && ns.streams.is_empty()
            && ns.round.is_none()
        {
            self.namespaces.remove(namespace);
        }
    }

    /// Disconnects a stream with `status`.
    fn kick(&mut self, id: StreamId, status: Status) {
        if let Some(s) = self.streams.get_mut(&id) {
            let _ = s.out.try_send(Err(Box::new(status)));
            if let Some(k) = s.kill.take() {
                let _ = k.send(());
            }
        }
        self.closed(id);
    }

    fn send(&mut self, id: StreamId, order: Encoded) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        match s.out.try_send(Ok(order)) {
            Ok(()) => true,
            Err(QueueError::Full) => {
                warn!(stream = id, host = %s.name, "sidecar is not reading its orders; disconnecting");
                self.kick(
                    id,
                    Status::resource_exhausted("sidecar is not reading placement orders"),
                );
                false
            }
            Err(QueueError::Closed) => {
                self.closed(id);
                false
            }
        }
    }

    // ---- Raft ------------------------------------------------------------

    /// Commits the queued changes once they have been quiet for the
    /// coalesce window (a burst of joins becomes one batch), or once the
    /// oldest has waited ten windows.
    fn flush(&mut self) {
        if self.write_in_flight || self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let quiet = self
            .last_change
            .is_none_or(|t| now.duration_since(t) >= self.cfg.coalesce_window);
        let overdue = self
            .pending_since
            .is_none_or(|t| now.duration_since(t) >= self.cfg.coalesce_window * 10);
        if !quiet && !overdue {
            return;
        }
        self.pending_since = None;
        self.in_flight = std::mem::take(&mut self.pending);
        let changes: Vec<Change> = self.in_flight.values().cloned().collect();
        self.write_in_flight = true;
        let raft = self.raft.clone();
        let tx = self.tx.clone();
        let timeout = self.cfg.raft_write_timeout;
        debug!(changes = changes.len(), "committing membership changes");
        tokio::spawn(async move {
            let cmd = Command {
                changes: changes.clone(),
            };
            let result = match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
                Err(_) => Err(format!("raft write timed out after {timeout:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(resp)) => Ok(resp.data),
            };
            let _ = tx.send(Event::Committed { changes, result }).await;
        });
    }

    fn committed(&mut self, changes: Vec<Change>, result: Result<ApplyResult, String>) {
        self.write_in_flight = false;
        self.in_flight.clear();
        match result {
            Ok(r) => {
                debug!(generation = r.generation, namespaces = ?r.changed_namespaces, "membership committed");
                self.update_member_metrics();
                for ns in r.changed_namespaces {
                    if let Some(n) = self.namespaces.get_mut(&ns) {
                        n.dirty = true;
                        self.maybe_start_round(&ns);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, changes = changes.len(), "membership commit failed; retrying");
                for c in changes {
                    let key = match &c {
                        Change::Upsert(m) => (m.namespace.clone(), m.name.clone()),
                        Change::Remove { namespace, name } => (namespace.clone(), name.clone()),
                    };
                    self.pending.entry(key).or_insert(c);
                    self.pending_since.get_or_insert_with(Instant::now);
                }
            }
        }
        // Streams that waited for this write and whose tables did not change.
        let idle: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, n)| n.round.is_none() && !n.dirty && !n.waiting.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for ns in idle {
            let waiting: Vec<StreamId> = self
                .namespaces
                .get_mut(&ns)
                .map(|n| std::mem::take(&mut n.waiting).into_iter().collect())
                .unwrap_or_default();
            for id in waiting {
                self.push_current(id);
            }
        }
    }

    // ---- dissemination ---------------------------------------------------

    fn tables_for(&self, namespace: &str) -> Option<(u64, Encoded, usize)> {
        let cfg = &self.cfg;
        self.read_sm(|d| {
            let m = &d.membership;
            let level = m.api_level(namespace, cfg.min_api_level, cfg.max_api_level);
            let tables = m.placement_tables(namespace, cfg.replication_factor, level);
            let hosts = m.namespaces.get(namespace).map_or(0, BTreeMap::len);
            let version = m.table_generation;
            (
                version,
                encode_order(OPERATION_UPDATE, version, Some(tables)),
                hosts,
            )
        })
    }

    fn lock_order(&mut self, version: u64) -> Encoded {
        if version == 0 {
            return self.lock_order.clone();
        }
        encode_order(OPERATION_LOCK, version, None)
    }

    fn unlock_order(&mut self, version: u64) -> Encoded {
        if self.unlock_cache.len() > 64 {
            self.unlock_cache.clear();
        }
        self.unlock_cache
            .entry(version)
            .or_insert_with(|| encode_order(OPERATION_UNLOCK, version, None))
            .clone()
    }

    /// Sends the current tables to one stream only (no round).
    fn push_current(&mut self, id: StreamId) {
        let Some(ns_name) = self.streams.get(&id).map(|s| s.namespace.clone()) else {
            return;
        };
        let busy = self
            .namespaces
            .get(&ns_name)
            .is_some_and(|n| n.round.is_some() || n.dirty)
            || self.pending.keys().any(|(ns, _)| *ns == ns_name)
            || self.write_in_flight;
        if busy {
            // A round is running or coming; it (or its end) covers this stream.
            if let Some(n) = self.namespaces.get_mut(&ns_name) {
                n.waiting.insert(id);
            }
            return;
        }
        let Some((version, update, _)) = self.tables_for(&ns_name) else {
            return;
        };
        let lock = self.lock_order(version);
        let unlock = self.unlock_order(version);
        let _ = self.send(id, lock) && self.send(id, update) && self.send(id, unlock);
        debug!(stream = id, version, "pushed current tables");
    }

    fn maybe_start_round(&mut self, namespace: &str) {
        let Some(ns) = self.namespaces.get(namespace) else {
            return;
        };
        if ns.round.is_some() || !ns.dirty {
            return;
        }
        if ns.streams.is_empty() {
            if let Some(ns) = self.namespaces.get_mut(namespace) {
                ns.dirty = false;
            }
            self.gc_namespace(namespace);
            return;
        }
        let Some((version, update, host_count)) = self.tables_for(namespace) else {
            return;
        };
        let participants = ns.streams.clone();
        let now = Instant::now();
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.dirty = false;
            ns.waiting.clear();
            ns.round = Some(Round {
                version,
                phase: Phase::Lock,
                participants: participants.clone(),
                pending: HashSet::new(),
                update,
                started: now,
                phase_started: now,
                phase_ms: [0.0; 3],
                host_count,
            });
        }
        debug!(
            namespace,
            version,
            streams = participants.len(),
            "dissemination: lock"
        );
        let lock = self.lock_order(version);
        self.send_phase(namespace, lock);
    }

    /// Sends the order of the current phase to every participant and
    /// records who must acknowledge it.
    fn send_phase(&mut self, namespace: &str, order: Encoded) {
        let Some(participants) = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.round.as_ref())
            .map(|r| r.participants.clone())
        else {
            return;
        };
        let mut pending = HashSet::new();
        for id in participants {
            let legacy = self.streams.get(&id).is_some_and(|s| s.legacy);
            if self.send(id, order.clone()) && !legacy {
                pending.insert(id);
            }
        }
        let empty = pending.is_empty();
        if let Some(r) = self
            .namespaces
            .get_mut(namespace)
            .and_then(|n| n.round.as_mut())
        {
            // Streams that closed while sending are gone from participants.
            pending.retain(|id| r.participants.contains(id));
            r.pending = pending;
            let now = Instant::now();
            let idx = match r.phase {
                Phase::Lock => 0,
                Phase::Update => 1,
                Phase::Unlock => 2,
            };
            // The previous phase ended when this one started.
            if idx > 0 {
                r.phase_ms[idx - 1] = now.duration_since(r.phase_started).as_secs_f64() * 1e3;
            }
            r.phase_started = now;
        }
        if empty
            || self
                .namespaces
                .get(namespace)
                .and_then(|n| n.round.as_ref())
                .is_some_and(|r| r.pending.is_empty())
        {
            self.advance(namespace);
        }
    }

    fn ack(&mut self, id: StreamId, op: HostOperation, version: u64) {
        let Some(ns_name) = self.streams.get(&id).map(|s| s.namespace.clone()) else {
            return;
        };
        if let Some(s) = self.streams.get_mut(&id) {
            s.last_report = Instant::now();
        }
        let done = match self
            .namespaces
            .get_mut(&ns_name)
            .and_then(|n| n.round.as_mut())
        {
            Some(r) if r.version == version && r.phase.ack() == op => {
                r.pending.remove(&id) && r.pending.is_empty()
            }
            _ => false,
        };
        if done {
            self.advance(&ns_name);
        }
    }

    /// Moves a round whose phase is fully acknowledged to the next phase.
    fn advance(&mut self, namespace: &str) {
        let Some(r) = self
            .namespaces
            .get_mut(namespace)
            .and_then(|n| n.round.as_mut())
        else {
            return;
        };
        if !r.pending.is_empty() {
            return;
        }
        match r.phase {
            Phase::Lock => {
                r.phase = Phase::Update;
                let update = r.update.clone();
                debug!(namespace, version = r.version, "dissemination: update");
                self.send_phase(namespace, update);
            }
            Phase::Update => {
                r.phase = Phase::Unlock;
                let version = r.version;
                debug!(namespace, version, "dissemination: unlock");
                let unlock = self.unlock_order(version);
                self.send_phase(namespace, unlock);
            }
            Phase::Unlock => {
                let Some(ns) = self.namespaces.get_mut(namespace) else {
                    return;
                };
                let Some(r) = ns.round.take() else {
                    return;
                };
                info!(
                    namespace,
                    version = r.version,
                    streams = r.participants.len(),
                    hosts = r.host_count,
                    elapsed_ms = r.started.elapsed().as_secs_f64() * 1e3,
                    lock_ms = r.phase_ms[0],
                    update_ms = r.phase_ms[1],
                    unlock_ms = r.phase_started.elapsed().as_secs_f64() * 1e3,
                    "tables disseminated"
                );
                // (Field access: `ns` still borrows `self.namespaces`.)
                self.trim_due
                    .get_or_insert_with(|| Instant::now() + TRIM_DELAY);
                let waiting: Vec<StreamId> = std::mem::take(&mut ns.waiting).into_iter().collect();
                if ns.dirty {
                    self.maybe_start_round(namespace);
                    if let Some(ns) = self.namespaces.get_mut(namespace)
                        && ns.round.is_some()
                    {
                        return;
                    }
                }
                for id in waiting {
                    self.push_current(id);
                }
                self.gc_namespace(namespace);
            }
        }
    }

    // ---- timers ----------------------------------------------------------

    /// A round's tables and the bursts of stream buffers around it are
    /// freed once the round ends; hand them back to the OS a little later
    /// (once h2 has written the last frames), at most every `TRIM_DELAY`.
    fn schedule_trim(&mut self) {
        if self.trim_due.is_none() {
            self.trim_due = Some(Instant::now() + TRIM_DELAY);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.trim_due.is_some_and(|t| now >= t)
            && self.namespaces.values().all(|n| n.round.is_none())
        {
            self.trim_due = None;
            tokio::task::spawn_blocking(crate::memory::release_free_memory);
        }
        // Phases that took too long: drop the streams that did not answer.
        let mut late: Vec<(StreamId, u64)> = Vec::new();
        for ns in self.namespaces.values() {
            if let Some(r) = &ns.round
                && now.duration_since(r.phase_started) > self.cfg.disseminate_timeout
            {
                late.extend(r.pending.iter().map(|id| (*id, r.version)));
            }
        }
        for (id, version) in late {
            warn!(
                stream = id,
                version, "sidecar did not acknowledge in time; disconnecting"
            );
            self.kick(
                id,
                Status::deadline_exceeded(format!(
                    "dissemination timeout after {:?} for version {version}",
                    self.cfg.disseminate_timeout
                )),
            );
        }
        // Heartbeating sidecars that went silent. Participants of a running
        // round are judged by --disseminate-timeout instead: under a burst
        // the phases keep them busy and their heartbeats may lag.
        let in_round: HashSet<StreamId> = self
            .namespaces
            .values()
            .filter_map(|n| n.round.as_ref())
            .flat_map(|r| r.participants.iter().copied())
            .collect();
        let silent: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| {
                (s.legacy || s.heartbeats)
                    && !in_round.contains(id)
                    && now.duration_since(s.last_report) > self.cfg.heartbeat_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            warn!(stream = id, "sidecar stopped heartbeating; disconnecting");
            self.kick(id, Status::deadline_exceeded("no heartbeat from sidecar"));
        }
        // Hosts of the previous term that never came back.
        if !self.faulty_check_done
            && now.duration_since(self.started) >= self.cfg.faulty_host_detect_duration
        {
            self.faulty_check_done = true;
            let orphans: Vec<(String, String)> = self
                .read_sm(|d| {
                    d.membership
                        .members()
                        .map(|m| (m.namespace.clone(), m.name.clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into_iter()
                .filter(|k| !self.owners.contains_key(k))
                .collect();
            for key in orphans {
                info!(namespace = %key.0, host = %key.1, "host did not reconnect after leader change; removing");
                self.queue(
                    key.clone(),
                    Change::Remove {
                        namespace: key.0,
                        name: key.1,
                    },
                );
            }
        }
    }

    // ---- metrics ---------------------------------------------------------

    fn update_stream_metrics(&self, namespace: &str) {
        let n = self
            .namespaces
            .get(namespace)
            .map_or(0, |n| n.streams.len());
        self.metrics.set_runtimes(namespace, n);
    }

    fn update_member_metrics(&self) {
        if let Some(counts) = self.read_sm(|d| {
            d.membership
                .namespaces
                .iter()
                .map(|(ns, hosts)| (ns.clone(), hosts.len()))
                .collect::<Vec<_>>()
        }) {
            self.metrics.set_actor_runtimes(&counts);
        }
    }
}
