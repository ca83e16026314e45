//! The workflow engine: instances, turns, activities, timers and messages.
//!
//! An instance advances in *turns*: the engine hands a worker the instance's
//! history plus the events waiting in its inbox, the worker replays the
//! workflow function and answers with actions (schedule an activity, create
//! a timer, start a child, complete...). The engine turns those actions into
//! history events and persists them, with the consumed inbox, in one
//! transaction, and only then lets their effects happen: activities are
//! dispatched, timers armed, and messages for other instances delivered.
//! Everything that is still owed after a crash (unfinished activities, armed
//! timers, undelivered messages, unread inbox) is derived again from the
//! stored state on start (`Engine::recover`), so a daprd or app crash at any
//! point resumes where it left off, and an activity runs again only when its
//! result was never persisted.
//!
//! A start or an activity result is acknowledged only once durable, but the
//! turn that shows it to the workflow may be dispatched while its write is
//! still in flight: turns have no effects of their own, and each instance's
//! writes are committed in order, a write failing when an earlier one of
//! the same instance failed, so whatever a turn causes is never durable
//! without the inputs it saw.
//!
//! Concurrency: each instance has one async lock and at most one turn in
//! flight; no code path holds two instance locks at once (messages to other
//! instances are delivered after the sender's lock is released), so there is
//! no lock ordering to get wrong.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex as StdMutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};

mod purge;
mod rerun;
#[cfg(test)]
mod tests;

pub use purge::PurgeFilter;
pub use rerun::RerunRequest;
use tonic::Status;
use tracing::{debug, warn};

use crate::{
    cluster::{ActorKind, Cluster, Place},
    error::{WorkflowError, validate_instance_id},
    proto::{
        ActivityRequest, ActivityResponse, ChildWorkflowInstanceCompletedEvent,
        ChildWorkflowInstanceCreatedEvent, ChildWorkflowInstanceFailedEvent, EventRaisedEvent,
        EventSentEvent, ExecutionCompletedEvent, ExecutionResumedEvent, ExecutionStartedEvent,
        ExecutionSuspendedEvent, ExecutionTerminatedEvent, HistoryEvent, OrchestrationStatus,
        ParentInstanceInfo, TaskCompletedEvent, TaskFailedEvent, TaskFailureDetails, TaskRouter,
        TaskScheduledEvent, TimerCreatedEvent, TimerFiredEvent, WorkItem, WorkflowInstance,
        WorkflowRequest, WorkflowResponse, WorkflowStartedEvent, WorkflowState,
        history_event::EventType, timer_created_event, work_item, workflow_action,
    },
    store::{
        Batch, ChildStart, InboxEntry, IndexChange, InstanceRecord, OutgoingMessage, PendingWrite,
        StoreError, WorkflowStore, listed_ids,
    },
};

/// How many message dedup keys an instance remembers.
const RECEIVED_MEMORY: usize = 512;
/// Work items buffered per connected worker before the engine waits.
const WORKER_BUFFER: usize = 64;
/// Unfinished instances kept in memory while idle; past this an idle one is
/// dropped from the cache as soon as nobody uses it (finished instances
/// always are). Everything cached is also committed, so a dropped instance
/// is simply loaded again when next needed.
const CACHED_INSTANCES: usize = 4096;

/// What a new instance starts with.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Empty: a random UUID is used.
    pub instance_id: String,
    pub name: String,
    pub input: Option<String>,
    pub scheduled_start: Option<SystemTime>,
    pub tags: HashMap<String, String>,
}

/// A snapshot of an instance for status queries.
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub name: String,
    pub status: OrchestrationStatus,
    pub created: Option<prost_types::Timestamp>,
    pub last_updated: Option<prost_types::Timestamp>,
    pub completed: Option<prost_types::Timestamp>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub custom_status: Option<String>,
    pub failure: Option<TaskFailureDetails>,
    pub execution_id: String,
    pub parent_instance_id: Option<String>,
    pub scheduled_start: Option<prost_types::Timestamp>,
    pub tags: HashMap<String, String>,
}

impl InstanceStatus {
    /// The Durable Task `WorkflowState` message.
    pub fn to_proto(&self, with_payloads: bool) -> WorkflowState {
        WorkflowState {
            instance_id: self.instance_id.clone(),
            name: self.name.clone(),
            workflow_status: self.status as i32,
            scheduled_start_timestamp: self.scheduled_start,
            created_timestamp: self.created,
            last_updated_timestamp: self.last_updated,
            completed_timestamp: self.completed,
            input: self.input.clone().filter(|_| with_payloads),
            output: self.output.clone().filter(|_| with_payloads),
            custom_status: self.custom_status.clone(),
            failure_details: self.failure.clone(),
            execution_id: Some(self.execution_id.clone()),
            parent_instance_id: self.parent_instance_id.clone(),
            tags: self.tags.clone(),
            ..Default::default()
        }
    }
}

/// Terminal statuses: the instance will not run again.
pub fn is_terminal(status: i32) -> bool {
    matches!(
        OrchestrationStatus::try_from(status),
        Ok(OrchestrationStatus::Completed
            | OrchestrationStatus::Failed
            | OrchestrationStatus::Terminated
            | OrchestrationStatus::Canceled)
    )
}

fn now_ts() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn to_system_time(ts: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn event(event_id: i32, event_type: EventType) -> HistoryEvent {
    HistoryEvent {
        event_id,
        timestamp: Some(now_ts()),
        router: None,
        event_type: Some(event_type),
    }
}

/// Per-instance state held in memory while the instance is in use.
struct Slot {
    state: Mutex<SlotState>,
    /// Status changes, for `WaitForInstanceStart/Completion`.
    status: watch::Sender<Option<i32>>,
}

#[derive(Default)]
struct SlotState {
    loaded: bool,
    record: Option<InstanceRecord>,
    history: Vec<HistoryEvent>,
    turn: Option<TurnInFlight>,
    /// Whether `history` holds the stored history (status queries need
    /// only the record, so it is read on first need).
    history_loaded: bool,
    /// The instance's latest submitted write (its successors are chained
    /// to it).
    last: Option<PendingWrite>,
}

struct TurnInFlight {
    token: String,
    /// How many inbox entries the turn showed the worker.
    consumed: usize,
    new_events: Vec<HistoryEvent>,
}

/// A work item waiting for a worker.
enum Pending {
    Turn(String),
    Activity(ActivityWork),
}

/// A work item a worker holds.
enum Holding {
    Turn(String),
    Activity(ActivityWork),
}

/// An activity to run on a worker of this sidecar.
struct ActivityWork {
    instance: String,
    generation: u32,
    request: Box<ActivityRequest>,
    /// Set when another sidecar owns the instance and waits for the
    /// result (placement put the activity here).
    reply: Option<oneshot::Sender<ActivityResponse>>,
}

impl ActivityWork {
    /// A forwarded activity whose caller stopped waiting.
    fn abandoned(&self) -> bool {
        self.reply.as_ref().is_some_and(oneshot::Sender::is_closed)
    }
}

struct Worker {
    id: u64,
    tx: mpsc::Sender<Result<WorkItem, Status>>,
}

#[derive(Default)]
struct Dispatch {
    workers: Vec<Worker>,
    next: usize,
    queue: VecDeque<Pending>,
    /// Turns already queued or running, so an instance is queued once.
    queued_turns: HashSet<String>,
    in_flight: HashMap<String, (u64, Holding)>,
}

enum TimerKind {
    /// A workflow timer: append `TimerFired` when due.
    Fire {
        instance: String,
        generation: u32,
        timer_id: i32,
        fire_at: prost_types::Timestamp,
    },
    /// A scheduled start: queue the first turn when due.
    Start(String),
}

struct Inner {
    store: WorkflowStore,
    app_id: String,
    slots: StdMutex<HashMap<String, Arc<Slot>>>,
    dispatch: StdMutex<Dispatch>,
    dispatch_notify: Notify,
    timers: StdMutex<BTreeMap<(SystemTime, u64), TimerKind>>,
    timer_notify: Notify,
    seq: AtomicU64,
    /// Set when the sidecar runs with placement: instances are owned per
    /// the hash ring and calls are forwarded (see `cluster`).
    clustered: std::sync::atomic::AtomicBool,
    cluster: watch::Sender<Option<Arc<dyn Cluster>>>,
    /// Instances this sidecar runs as their owner: created here or resumed
    /// from the store (in a cluster, what `rebalance` need not take over).
    running: StdMutex<HashSet<String>>,
}

/// The engine. Cheap to clone; its dispatcher and timer tasks live as long
/// as the process (a sidecar has one engine).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Builds the engine and starts its dispatcher and timer tasks. Call
    /// `recover` once to resume what a previous run left.
    pub fn new(store: WorkflowStore, app_id: &str) -> Self {
        let inner = Arc::new(Inner {
            store,
            app_id: app_id.to_owned(),
            slots: StdMutex::new(HashMap::new()),
            dispatch: StdMutex::new(Dispatch::default()),
            dispatch_notify: Notify::new(),
            timers: StdMutex::new(BTreeMap::new()),
            timer_notify: Notify::new(),
            seq: AtomicU64::new(1),
            clustered: std::sync::atomic::AtomicBool::new(false),
            cluster: watch::Sender::new(None),
            running: StdMutex::new(HashSet::new()),
        });
        let engine = Engine { inner };
        tokio::spawn(engine.clone().dispatch_loop());
        tokio::spawn(engine.clone().timer_loop());
        engine
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    // ----------------------------------------------------------- cluster --

    /// Marks the engine as one of several replicas (placement configured):
    /// writes carry etags from now on, nothing is resumed until placement
    /// says what this sidecar owns, and calls wait for [`Engine::attach_cluster`].
    pub fn expect_cluster(&self) {
        self.inner.clustered.store(true, Ordering::Release);
        self.inner.store.set_guarded();
    }

    /// Connects the engine to placement; from the first table on it runs
    /// only the instances it owns.
    pub fn attach_cluster(&self, cluster: Arc<dyn Cluster>) {
        self.expect_cluster();
        let mut updates = cluster.table_updates();
        if !lock(&self.inner.dispatch).workers.is_empty() {
            cluster.set_hosting(true);
        }
        self.inner.cluster.send_replace(Some(cluster));
        let engine = self.clone();
        tokio::spawn(async move {
            updates.mark_changed();
            while updates.changed().await.is_ok() {
                let version = *updates.borrow_and_update();
                if let Err(e) = engine.rebalance().await {
                    warn!(version, error = %e, "taking over workflow instances failed; retrying at the next table change");
                }
            }
        });
    }

    /// The cluster once attached; `None` for a single sidecar. Calls that
    /// arrive while the sidecar is still connecting wait for it (bounded).
    pub(crate) async fn cluster(&self) -> Option<Arc<dyn Cluster>> {
        if !self.inner.clustered.load(Ordering::Acquire) {
            return None;
        }
        let mut rx = self.inner.cluster.subscribe();
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }

    /// Notes that this sidecar runs the instance as its owner.
    pub(crate) fn took(&self, id: &str) {
        if self.inner.clustered.load(Ordering::Acquire) {
            lock(&self.inner.running).insert(id.to_owned());
        }
    }

    /// Where the instance is placed (`Here` for a single sidecar).
    fn place(&self, id: &str) -> Place {
        match &*self.inner.cluster.borrow() {
            Some(c) => c.place(ActorKind::Workflow, id),
            None => Place::Here,
        }
    }

    /// After a placement change: drops the cached instances now owned
    /// elsewhere (their owner resumes them from the store) and resumes the
    /// unfinished instances now owned here.
    async fn rebalance(&self) -> Result<(), WorkflowError> {
        let lost: Vec<String> = lock(&self.inner.slots)
            .keys()
            .filter(|id| self.place(id) == Place::Elsewhere)
            .cloned()
            .collect();
        lock(&self.inner.running).retain(|id| self.place(id) != Place::Elsewhere);
        if !lost.is_empty() {
            let gone: HashSet<&String> = lost.iter().collect();
            lock(&self.inner.slots).retain(|id, _| !gone.contains(id));
            let mut d = lock(&self.inner.dispatch);
            d.queued_turns.retain(|id| !gone.contains(id));
            d.queue.retain(|p| match p {
                Pending::Turn(id) => !gone.contains(id),
                Pending::Activity(a) => a.reply.is_some() || !gone.contains(&a.instance),
            });
            drop(d);
            debug!(
                count = lost.len(),
                "workflow instances moved to other sidecars"
            );
        }
        let shards = self.inner.store.index().await?;
        let mut resumed = 0;
        for entry in shards.iter().flat_map(|s| s.entries.iter()) {
            let id = &entry.instance_id;
            if entry.terminal
                || self.place(id) != Place::Here
                || lock(&self.inner.running).contains(id)
            {
                continue;
            }
            self.resume_instance(id).await?;
            resumed += 1;
        }
        if resumed > 0 {
            tracing::info!(
                resumed,
                "took over workflow instances placed on this sidecar"
            );
        }
        Ok(())
    }

    /// The instance's cache entry; it stays cached at least as long as the
    /// returned handle lives.
    fn slot(&self, id: &str) -> SlotRef<'_> {
        let mut slots = lock(&self.inner.slots);
        let slot = slots
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::default()),
                    status: watch::channel(None).0,
                })
            })
            .clone();
        SlotRef {
            inner: &self.inner,
            id: id.to_owned(),
            slot: Some(slot),
        }
    }

    /// Queues `batch` behind the instance's earlier writes.
    fn submit(&self, st: &mut SlotState, batch: Batch) -> Result<PendingWrite, StoreError> {
        let pending = self.inner.store.submit(batch, st.last.as_ref())?;
        st.last = Some(pending.clone());
        Ok(pending)
    }

    /// Commits `batch` behind the instance's earlier writes. On failure the
    /// cached state is dropped: it may hold writes that never landed.
    async fn write(&self, st: &mut SlotState, id: &str, batch: Batch) -> Result<(), StoreError> {
        let result = match self.submit(st, batch) {
            Ok(pending) => pending.wait().await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.forget(st, id);
        }
        result
    }

    /// Drops the cached state; the next use reloads it from the store, and
    /// a turn is queued in case the stored state has events waiting.
    fn forget(&self, st: &mut SlotState, id: &str) {
        *st = SlotState::default();
        lock(&self.inner.dispatch).queued_turns.remove(id);
        self.queue_turn(id);
    }

    /// `forget` after an optimistic write failed, unless a later write is
    /// still pending (it fails too, and its owner forgets).
    async fn forget_failed(&self, id: &str) {
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        if st.last.as_ref().is_none_or(PendingWrite::is_settled) {
            self.forget(&mut st, id);
        }
    }

    /// Loads the instance's record (not its history) unless cached.
    async fn ensure_record(&self, st: &mut SlotState, id: &str) -> Result<(), StoreError> {
        if st.loaded {
            return Ok(());
        }
        // An id the index does not list has nothing stored (a new instance
        // is the common case): skip the read.
        let record = if self.inner.store.is_listed(id) == Some(false) {
            None
        } else {
            self.inner.store.load_record(id).await?
        };
        st.history.clear();
        st.history_loaded = record.as_ref().is_none_or(|r| r.history_chunks == 0);
        st.record = record;
        st.loaded = true;
        Ok(())
    }

    /// Loads the record and the history unless cached.
    async fn ensure_loaded(&self, st: &mut SlotState, id: &str) -> Result<(), StoreError> {
        self.ensure_record(st, id).await?;
        if !st.history_loaded {
            let chunks = st.record.as_ref().map_or(0, |r| r.history_chunks);
            st.history = self.inner.store.load_history(id, chunks).await?;
            st.history_loaded = true;
        }
        Ok(())
    }

    // ------------------------------------------------------- client API --

    /// Starts a new instance (or replaces a finished one with the same id).
    pub(crate) async fn start_here(&self, req: StartRequest) -> Result<String, WorkflowError> {
        let id = if req.instance_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.instance_id.clone()
        };
        validate_instance_id(&id, true)?;
        if req.name.is_empty() {
            return Err(WorkflowError::MissingName);
        }
        let slot = self.slot(&id);
        let mut st = slot.state.lock().await;
        self.ensure_record(&mut st, &id).await?;
        let mut batch = Batch::default();
        if let Some(old) = &st.record {
            if !is_terminal(old.status) {
                return Err(WorkflowError::AlreadyExists(id));
            }
            // Reusing the id of a finished instance: drop its history.
            for c in 1..=old.history_chunks {
                batch.delete(self.inner.store.chunk_key(&id, c));
            }
        }
        let execution_id = uuid::Uuid::new_v4().simple().to_string();
        let started = ExecutionStartedEvent {
            name: req.name.clone(),
            input: req.input.clone(),
            workflow_instance: Some(WorkflowInstance {
                instance_id: id.clone(),
                execution_id: Some(execution_id.clone()),
            }),
            scheduled_start_timestamp: req.scheduled_start.map(prost_types::Timestamp::from),
            tags: req.tags.clone(),
            ..Default::default()
        };
        let now = now_ts();
        let record = InstanceRecord {
            name: req.name,
            status: OrchestrationStatus::Pending as i32,
            created: Some(now),
            last_updated: Some(now),
            input: req.input,
            execution_id,
            inbox: vec![InboxEntry {
                event: Some(self.started_event(started)),
                dedup: String::new(),
            }],
            tags: req.tags,
            scheduled_start: req.scheduled_start.map(prost_types::Timestamp::from),
            ..Default::default()
        };
        self.inner.store.put_record(&mut batch, &id, &record);
        batch.index(&id, IndexChange::Active);
        self.took(&id);
        let pending = self.submit(&mut st, batch)?;
        let scheduled = record.scheduled_start;
        st.record = Some(record);
        st.history.clear();
        st.history_loaded = true;
        st.turn = None;
        drop(st);
        slot.status
            .send_replace(Some(OrchestrationStatus::Pending as i32));
        drop(slot);
        match scheduled.map(|t| to_system_time(&t)) {
            Some(at) if at > SystemTime::now() => self.arm(at, TimerKind::Start(id.clone())),
            _ => self.queue_turn(&id),
        }
        if let Err(e) = pending.wait().await {
            self.forget_failed(&id).await;
            return Err(e.into());
        }
        Ok(id)
    }

    fn started_event(&self, started: ExecutionStartedEvent) -> HistoryEvent {
        let mut e = event(-1, EventType::ExecutionStarted(started));
        e.router = Some(TaskRouter {
            source_app_id: self.inner.app_id.clone(),
            ..Default::default()
        });
        e
    }

    pub(crate) async fn status_here(
        &self,
        id: &str,
    ) -> Result<Option<InstanceStatus>, WorkflowError> {
        validate_instance_id(id, false)?;
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        self.ensure_record(&mut st, id).await?;
        Ok(st.record.as_ref().map(|r| status_of(id, r)))
    }

    pub(crate) async fn history_here(&self, id: &str) -> Result<Vec<HistoryEvent>, WorkflowError> {
        validate_instance_id(id, false)?;
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        self.ensure_loaded(&mut st, id).await?;
        if st.record.is_none() {
            return Err(WorkflowError::NotFound(id.to_owned()));
        }
        Ok(st.history.clone())
    }

    /// Waits until the instance started (or, with `completion`, finished)
    /// or is missing. `None`: placement moved it to another sidecar meanwhile.
    pub(crate) async fn wait_here(
        &self,
        id: &str,
        completion: bool,
        follow_moves: bool,
    ) -> Result<Option<Option<InstanceStatus>>, WorkflowError> {
        validate_instance_id(id, false)?;
        let done = |s: i32| {
            if completion {
                is_terminal(s)
            } else {
                s != OrchestrationStatus::Pending as i32
            }
        };
        let mut tables = match self.inner.cluster.borrow().as_ref() {
            Some(c) if follow_moves => Some(c.table_updates()),
            _ => None,
        };
        let slot = self.slot(id);
        let mut rx = slot.status.subscribe();
        loop {
            if self.place(id) == Place::Elsewhere {
                return Ok(None);
            }
            {
                let mut st = slot.state.lock().await;
                self.ensure_record(&mut st, id).await?;
                match &st.record {
                    None => return Ok(Some(None)),
                    Some(r) if done(r.status) => return Ok(Some(Some(status_of(id, r)))),
                    Some(_) => {}
                }
            }
            let moved = async {
                match tables.as_mut() {
                    Some(t) => {
                        if t.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(Some(None)) },
                _ = moved => {}
            }
        }
    }

    pub(crate) async fn raise_event_here(
        &self,
        id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        if name.is_empty() {
            return Err(WorkflowError::MissingEventName);
        }
        let ev = event(
            -1,
            EventType::EventRaised(EventRaisedEvent {
                name: name.to_owned(),
                input,
            }),
        );
        self.append(id, ev, None, true).await
    }

    /// Terminates this sidecar's instance; with `recursive` its children
    /// too, wherever they are owned.
    pub(crate) async fn terminate_here(
        &self,
        id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        let children = {
            let slot = self.slot(id);
            let mut st = slot.state.lock().await;
            self.ensure_record(&mut st, id).await?;
            match &st.record {
                None => return Err(WorkflowError::NotFound(id.to_owned())),
                Some(r) => r.children.clone(),
            }
        };
        let ev = event(
            -1,
            EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                input: output.clone(),
                recurse: recursive,
            }),
        );
        // A finished instance is left as it is.
        self.append(id, ev, None, false).await?;
        if recursive {
            for child in children {
                match Box::pin(self.terminate(&child, output.clone(), true)).await {
                    Ok(()) | Err(WorkflowError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn suspend_here(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        let ev = event(
            -1,
            EventType::ExecutionSuspended(ExecutionSuspendedEvent { input: reason }),
        );
        self.append(id, ev, Some(OrchestrationStatus::Suspended), true)
            .await
    }

    pub(crate) async fn resume_here(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        let ev = event(
            -1,
            EventType::ExecutionResumed(ExecutionResumedEvent { input: reason }),
        );
        self.append(id, ev, Some(OrchestrationStatus::Running), true)
            .await
    }

    /// Purges this sidecar's instance; with `recursive` its children too,
    /// wherever they are owned.
    pub(crate) async fn purge_here(
        &self,
        id: &str,
        recursive: bool,
        force: bool,
    ) -> Result<u32, WorkflowError> {
        validate_instance_id(id, false)?;
        let mut deleted = 0;
        {
            let target = id.to_owned();
            let slot = self.slot(&target);
            let mut st = slot.state.lock().await;
            self.ensure_record(&mut st, &target).await?;
            let Some(record) = st.record.clone() else {
                return Ok(0);
            };
            if !force && !is_terminal(record.status) {
                return Err(WorkflowError::NotTerminal(target));
            }
            let mut batch = Batch::default();
            batch.delete(self.inner.store.record_key(&target));
            for c in 1..=record.history_chunks {
                batch.delete(self.inner.store.chunk_key(&target, c));
            }
            batch.index(&target, IndexChange::Remove);
            self.write(&mut st, &target, batch).await?;
            st.record = None;
            st.history.clear();
            st.turn = None;
            drop(st);
            slot.status.send_replace(None);
            deleted += 1;
            drop(slot);
            if recursive {
                for child in record.children {
                    deleted += Box::pin(self.purge(&child, true, force)).await?;
                }
            }
        }
        Ok(deleted)
    }

    /// Instance ids in index order, `page_size` at a time; the token is the
    /// position to continue from.
    pub async fn list_instance_ids(
        &self,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<(Vec<String>, Option<String>), WorkflowError> {
        let start: usize = continuation.and_then(|c| c.parse().ok()).unwrap_or(0);
        let page_size = if page_size == 0 { 100 } else { page_size };
        let all = listed_ids(&self.inner.store.index().await?);
        let page: Vec<String> = all.iter().skip(start).take(page_size).cloned().collect();
        let next = (start + page.len() < all.len()).then(|| (start + page.len()).to_string());
        Ok((page, next))
    }

    /// Appends one event to an instance's inbox. `must_be_active`: refuse
    /// (NotFound) when the instance is missing, accept silently when it has
    /// finished.
    async fn append(
        &self,
        id: &str,
        ev: HistoryEvent,
        status: Option<OrchestrationStatus>,
        must_exist: bool,
    ) -> Result<(), WorkflowError> {
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        self.ensure_record(&mut st, id).await?;
        let Some(record) = st.record.as_ref() else {
            return if must_exist {
                Err(WorkflowError::NotFound(id.to_owned()))
            } else {
                Ok(())
            };
        };
        if is_terminal(record.status) {
            return Ok(());
        }
        let mut record = record.clone();
        record.inbox.push(InboxEntry {
            event: Some(ev),
            dedup: String::new(),
        });
        if let Some(s) = status {
            // Suspend/resume show at once; the workflow sees the event on
            // its next turn.
            let current = record.status;
            let applies = match s {
                OrchestrationStatus::Suspended => current != OrchestrationStatus::Pending as i32,
                OrchestrationStatus::Running => current == OrchestrationStatus::Suspended as i32,
                _ => true,
            };
            if applies {
                record.status = s as i32;
            }
        }
        record.last_updated = Some(now_ts());
        let mut batch = Batch::default();
        self.inner.store.put_record(&mut batch, id, &record);
        self.write(&mut st, id, batch).await?;
        let new_status = record.status;
        st.record = Some(record);
        drop(st);
        slot.status.send_replace(Some(new_status));
        self.queue_turn(id);
        Ok(())
    }

    // ---------------------------------------------------------- workers --

    /// Registers a connected worker; work items arrive on the returned
    /// receiver until it is dropped.
    pub fn connect_worker(&self) -> mpsc::Receiver<Result<WorkItem, Status>> {
        let (tx, rx) = mpsc::channel(WORKER_BUFFER);
        let id = self.next_seq();
        let closed = tx.clone();
        lock(&self.inner.dispatch).workers.push(Worker { id, tx });
        self.inner.dispatch_notify.notify_one();
        if let Some(c) = &*self.inner.cluster.borrow() {
            c.set_hosting(true);
        }
        let engine = self.clone();
        tokio::spawn(async move {
            closed.closed().await;
            engine.worker_gone(id).await;
        });
        debug!(worker = id, "workflow worker connected");
        rx
    }

    async fn worker_gone(&self, worker: u64) {
        let held: Vec<(String, Holding)> = {
            let mut d = lock(&self.inner.dispatch);
            d.workers.retain(|w| w.id != worker);
            if d.workers.is_empty()
                && let Some(c) = &*self.inner.cluster.borrow()
            {
                // Placement moves this sidecar's instances to replicas
                // that still have a worker.
                c.set_hosting(false);
            }
            let tokens: Vec<String> = d
                .in_flight
                .iter()
                .filter(|(_, (w, _))| *w == worker)
                .map(|(t, _)| t.clone())
                .collect();
            tokens
                .into_iter()
                .filter_map(|t| d.in_flight.remove(&t).map(|(_, h)| (t, h)))
                .collect()
        };
        debug!(worker, items = held.len(), "workflow worker disconnected");
        for (token, holding) in held {
            match holding {
                Holding::Turn(id) => {
                    let slot = self.slot(&id);
                    let mut st = slot.state.lock().await;
                    if st.turn.as_ref().is_some_and(|t| t.token == token) {
                        st.turn = None;
                    }
                    drop(st);
                    lock(&self.inner.dispatch).queued_turns.remove(&id);
                    self.queue_turn(&id);
                }
                Holding::Activity(work) => self.queue(Pending::Activity(work)),
            }
        }
    }

    fn queue(&self, item: Pending) {
        lock(&self.inner.dispatch).queue.push_back(item);
        self.inner.dispatch_notify.notify_one();
    }

    fn queue_turn(&self, id: &str) {
        let mut d = lock(&self.inner.dispatch);
        if d.queued_turns.insert(id.to_owned()) {
            d.queue.push_back(Pending::Turn(id.to_owned()));
            drop(d);
            self.inner.dispatch_notify.notify_one();
        }
    }

    async fn dispatch_loop(self) {
        loop {
            let notified = self.inner.dispatch_notify.notified();
            let next = {
                let mut d = lock(&self.inner.dispatch);
                if d.workers.is_empty() {
                    None
                } else {
                    d.queue.pop_front().map(|item| {
                        let idx = d.next % d.workers.len();
                        d.next = d.next.wrapping_add(1);
                        (item, d.workers[idx].id, d.workers[idx].tx.clone())
                    })
                }
            };
            let Some((item, worker, tx)) = next else {
                notified.await;
                continue;
            };
            let token = format!("{worker}-{}", self.next_seq());
            let (work, holding) = match item {
                Pending::Turn(id) => {
                    let built = self.build_turn(&id, &token).await;
                    match built {
                        Some(req) => (work_item::Request::WorkflowRequest(req), Holding::Turn(id)),
                        None => {
                            lock(&self.inner.dispatch).queued_turns.remove(&id);
                            continue;
                        }
                    }
                }
                Pending::Activity(work) if work.abandoned() => continue,
                Pending::Activity(work) => (
                    work_item::Request::ActivityRequest((*work.request).clone()),
                    Holding::Activity(work),
                ),
            };
            lock(&self.inner.dispatch)
                .in_flight
                .insert(token.clone(), (worker, holding));
            let item = WorkItem {
                completion_token: token,
                request: Some(work),
            };
            if tx.send(Ok(item)).await.is_err() {
                // The worker went away; worker_gone re-queues what it held.
                self.worker_gone(worker).await;
            }
        }
    }

    async fn build_turn(&self, id: &str, token: &str) -> Option<WorkflowRequest> {
        match self.place(id) {
            Place::Here | Place::Nobody => {}
            // Its owner runs it.
            Place::Elsewhere => return None,
            Place::Unknown => {
                // Tables are changing: try again shortly.
                self.arm(
                    SystemTime::now() + Duration::from_millis(200),
                    TimerKind::Start(id.to_owned()),
                );
                return None;
            }
        }
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        if let Err(e) = self.ensure_loaded(&mut st, id).await {
            warn!(instance = id, error = %e, "cannot load workflow instance");
            return None;
        }
        if st.turn.is_some() {
            return None;
        }
        let record = st.record.as_ref()?;
        if record.inbox.is_empty() || is_terminal(record.status) {
            return None;
        }
        let mut new_events = vec![event(
            -1,
            EventType::WorkflowStarted(WorkflowStartedEvent::default()),
        )];
        new_events.extend(record.inbox.iter().filter_map(|e| e.event.clone()));
        let req = WorkflowRequest {
            instance_id: id.to_owned(),
            execution_id: Some(record.execution_id.clone()),
            past_events: st.history.clone(),
            new_events: new_events.clone(),
            ..Default::default()
        };
        st.turn = Some(TurnInFlight {
            token: token.to_owned(),
            consumed: record.inbox.len(),
            new_events,
        });
        Some(req)
    }

    /// A worker's answer to a turn.
    pub async fn complete_turn(&self, res: WorkflowResponse) -> Result<(), Status> {
        let id = res.instance_id.clone();
        let slot = self.slot(&id);
        let mut st = slot.state.lock().await;
        let Some(turn) = st.turn.take() else {
            debug!(instance = %id, "stale workflow turn result ignored");
            return Ok(());
        };
        if !res.completion_token.is_empty() && res.completion_token != turn.token {
            st.turn = Some(turn);
            debug!(instance = %id, "workflow turn result for another dispatch ignored");
            return Ok(());
        }
        {
            let mut d = lock(&self.inner.dispatch);
            d.in_flight.remove(&turn.token);
            d.queued_turns.remove(&id);
        }
        let Some(record) = st.record.clone() else {
            return Ok(());
        };
        let outcome = self.apply_turn(&id, record, &st.history, &turn, res);
        let mut batch = Batch::default();
        let TurnOutcome {
            mut record,
            new_history,
            reset_history,
            activities,
            timers,
        } = outcome;
        let old_chunks = st.record.as_ref().map_or(0, |r| r.history_chunks);
        if reset_history {
            for c in 1..=old_chunks {
                batch.delete(self.inner.store.chunk_key(&id, c));
            }
            record.history_chunks = 0;
        }
        if !new_history.is_empty() {
            record.history_chunks += 1;
            self.inner
                .store
                .put_chunk(&mut batch, &id, record.history_chunks, &new_history);
        }
        self.inner.store.put_record(&mut batch, &id, &record);
        let terminal_now = is_terminal(record.status)
            && !st.record.as_ref().is_some_and(|r| is_terminal(r.status));
        if terminal_now && record.outbox.is_empty() {
            batch.index(&id, IndexChange::Terminal);
        }
        if let Err(e) = self.write(&mut st, &id, batch).await {
            warn!(instance = %id, error = %e, "persisting a workflow turn failed; it will run again");
            drop(st);
            self.queue_turn(&id);
            return Err(internal(e));
        }
        if reset_history {
            st.history.clear();
        }
        st.history.extend(new_history);
        let status = record.status;
        let generation = record.generation;
        let has_inbox = !record.inbox.is_empty();
        let outbox = record.outbox.clone();
        st.record = Some(record);
        drop(st);
        slot.status.send_replace(Some(status));
        for request in activities {
            self.dispatch_activity(&id, generation, request);
        }
        for (timer_id, fire_at) in timers {
            self.arm(
                to_system_time(&fire_at),
                TimerKind::Fire {
                    instance: id.clone(),
                    generation,
                    timer_id,
                    fire_at,
                },
            );
        }
        if !outbox.is_empty() {
            let engine = self.clone();
            tokio::spawn(async move { engine.deliver_outbox(&id, outbox).await });
        } else if has_inbox && !is_terminal(status) {
            self.queue_turn(&id);
        }
        Ok(())
    }

    /// Turns a worker's actions into history, effects and the new record.
    fn apply_turn(
        &self,
        id: &str,
        mut record: InstanceRecord,
        history: &[HistoryEvent],
        turn: &TurnInFlight,
        res: WorkflowResponse,
    ) -> TurnOutcome {
        let consumed = turn.consumed.min(record.inbox.len());
        record.inbox.drain(..consumed);
        let mut new_history = turn.new_events.clone();
        for e in &turn.new_events {
            match &e.event_type {
                Some(EventType::ExecutionStarted(_))
                    if record.status == OrchestrationStatus::Pending as i32 =>
                {
                    record.status = OrchestrationStatus::Running as i32;
                }
                Some(EventType::ExecutionSuspended(_)) => {
                    record.status = OrchestrationStatus::Suspended as i32;
                }
                Some(EventType::ExecutionResumed(_))
                    if record.status == OrchestrationStatus::Suspended as i32 =>
                {
                    record.status = OrchestrationStatus::Running as i32;
                }
                _ => {}
            }
        }
        if res.custom_status.is_some() {
            record.custom_status = res.custom_status.clone();
        }
        let mut activities = Vec::new();
        let mut timers = Vec::new();
        let mut reset_history = false;
        let generation = record.generation;
        let instance = WorkflowInstance {
            instance_id: id.to_owned(),
            execution_id: Some(record.execution_id.clone()),
        };
        for action in res.actions {
            let action_id = action.id;
            let Some(kind) = action.workflow_action_type else {
                continue;
            };
            match kind {
                workflow_action::WorkflowActionType::ScheduleTask(a) => {
                    new_history.push(event(
                        action_id,
                        EventType::TaskScheduled(TaskScheduledEvent {
                            name: a.name.clone(),
                            version: a.version.clone(),
                            input: a.input.clone(),
                            task_execution_id: a.task_execution_id.clone(),
                            ..Default::default()
                        }),
                    ));
                    activities.push(ActivityRequest {
                        name: a.name,
                        version: a.version,
                        input: a.input,
                        workflow_instance: Some(instance.clone()),
                        task_id: action_id,
                        task_execution_id: a.task_execution_id,
                        ..Default::default()
                    });
                }
                workflow_action::WorkflowActionType::CreateTimer(a) => {
                    let fire_at = a.fire_at.unwrap_or_else(now_ts);
                    let origin = a.origin.map(|o| match o {
                        crate::proto::create_timer_action::Origin::CreateTimer(x) => {
                            timer_created_event::Origin::CreateTimer(x)
                        }
                        crate::proto::create_timer_action::Origin::ExternalEvent(x) => {
                            timer_created_event::Origin::ExternalEvent(x)
                        }
                        crate::proto::create_timer_action::Origin::ActivityRetry(x) => {
                            timer_created_event::Origin::ActivityRetry(x)
                        }
                        crate::proto::create_timer_action::Origin::ChildWorkflowRetry(x) => {
                            timer_created_event::Origin::ChildWorkflowRetry(x)
                        }
                    });
                    new_history.push(event(
                        action_id,
                        EventType::TimerCreated(TimerCreatedEvent {
                            fire_at: Some(fire_at),
                            name: a.name,
                            origin,
                            ..Default::default()
                        }),
                    ));
                    timers.push((action_id, fire_at));
                }
                workflow_action::WorkflowActionType::CreateChildWorkflow(a) => {
                    let child = if a.instance_id.is_empty() {
                        format!("{id}:{action_id:04}")
                    } else {
                        a.instance_id.clone()
                    };
                    new_history.push(event(
                        action_id,
                        EventType::ChildWorkflowInstanceCreated(
                            ChildWorkflowInstanceCreatedEvent {
                                instance_id: child.clone(),
                                name: a.name.clone(),
                                version: a.version.clone(),
                                input: a.input.clone(),
                                ..Default::default()
                            },
                        ),
                    ));
                    let started = ExecutionStartedEvent {
                        name: a.name.clone(),
                        version: a.version,
                        input: a.input.clone(),
                        workflow_instance: Some(WorkflowInstance {
                            instance_id: child.clone(),
                            execution_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                        }),
                        parent_instance: Some(ParentInstanceInfo {
                            task_scheduled_id: action_id,
                            name: Some(record.name.clone()),
                            workflow_instance: Some(instance.clone()),
                            app_id: Some(self.inner.app_id.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    record.outbox.push(OutgoingMessage {
                        target: child.clone(),
                        dedup: format!("{id}/{generation}/child/{action_id}"),
                        event: Some(self.started_event(started)),
                        create: Some(ChildStart {
                            name: a.name,
                            input: a.input,
                        }),
                    });
                    record.children.push(child);
                }
                workflow_action::WorkflowActionType::SendEvent(a) => {
                    let target = a
                        .instance
                        .as_ref()
                        .map(|i| i.instance_id.clone())
                        .unwrap_or_default();
                    new_history.push(event(
                        action_id,
                        EventType::EventSent(EventSentEvent {
                            instance_id: target.clone(),
                            name: a.name.clone(),
                            input: a.data.clone(),
                        }),
                    ));
                    if !target.is_empty() {
                        record.outbox.push(OutgoingMessage {
                            target,
                            dedup: format!("{id}/{generation}/send/{action_id}"),
                            event: Some(event(
                                -1,
                                EventType::EventRaised(EventRaisedEvent {
                                    name: a.name,
                                    input: a.data,
                                }),
                            )),
                            create: None,
                        });
                    }
                }
                workflow_action::WorkflowActionType::TerminateWorkflow(a) => {
                    if !a.instance_id.is_empty() {
                        record.outbox.push(OutgoingMessage {
                            target: a.instance_id.clone(),
                            dedup: format!("{id}/{generation}/terminate/{action_id}"),
                            event: Some(event(
                                -1,
                                EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                                    input: a.reason,
                                    recurse: a.recurse,
                                }),
                            )),
                            create: None,
                        });
                    }
                }
                workflow_action::WorkflowActionType::CreateDetachedWorkflow(a) => {
                    let started = ExecutionStartedEvent {
                        name: a.name.clone(),
                        input: a.input.clone(),
                        workflow_instance: Some(WorkflowInstance {
                            instance_id: a.instance_id.clone(),
                            execution_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                        }),
                        tags: a.tags,
                        ..Default::default()
                    };
                    new_history.push(event(
                        action_id,
                        EventType::DetachedWorkflowInstanceCreated(
                            crate::proto::DetachedWorkflowInstanceCreatedEvent {
                                instance_id: a.instance_id.clone(),
                            },
                        ),
                    ));
                    record.outbox.push(OutgoingMessage {
                        target: a.instance_id,
                        dedup: format!("{id}/{generation}/detached/{action_id}"),
                        event: Some(self.started_event(started)),
                        create: Some(ChildStart {
                            name: a.name,
                            input: a.input,
                        }),
                    });
                }
                workflow_action::WorkflowActionType::CompleteWorkflow(a) => {
                    let status = a.workflow_status;
                    if status == OrchestrationStatus::ContinuedAsNew as i32 {
                        // Start over: a fresh history whose first turn sees
                        // the new input, then the carried-over events, then
                        // whatever arrived meanwhile.
                        reset_history = true;
                        new_history.clear();
                        record.generation += 1;
                        record.execution_id = uuid::Uuid::new_v4().simple().to_string();
                        record.input = a.result.clone();
                        record.status = OrchestrationStatus::Running as i32;
                        let started = ExecutionStartedEvent {
                            name: record.name.clone(),
                            input: a.result,
                            workflow_instance: Some(WorkflowInstance {
                                instance_id: id.to_owned(),
                                execution_id: Some(record.execution_id.clone()),
                            }),
                            parent_instance: record.parent.clone(),
                            ..Default::default()
                        };
                        let mut inbox = vec![InboxEntry {
                            event: Some(self.started_event(started)),
                            dedup: String::new(),
                        }];
                        inbox.extend(a.carryover_events.into_iter().map(|e| InboxEntry {
                            event: Some(e),
                            dedup: String::new(),
                        }));
                        inbox.append(&mut record.inbox);
                        record.inbox = inbox;
                        activities.clear();
                        timers.clear();
                        // Nothing after continue-as-new counts.
                        break;
                    }
                    new_history.push(event(
                        -1,
                        EventType::ExecutionCompleted(ExecutionCompletedEvent {
                            workflow_status: status,
                            result: a.result.clone(),
                            failure_details: a.failure_details.clone(),
                        }),
                    ));
                    record.status = status;
                    record.output = a.result.clone();
                    record.failure = a.failure_details.clone();
                    record.completed = Some(now_ts());
                    record.inbox.clear();
                    if let Some(parent) = &record.parent {
                        let parent_id = parent
                            .workflow_instance
                            .as_ref()
                            .map(|w| w.instance_id.clone())
                            .unwrap_or_default();
                        let task_scheduled_id = parent.task_scheduled_id;
                        let ev = if status == OrchestrationStatus::Completed as i32 {
                            EventType::ChildWorkflowInstanceCompleted(
                                ChildWorkflowInstanceCompletedEvent {
                                    task_scheduled_id,
                                    result: a.result,
                                    ..Default::default()
                                },
                            )
                        } else {
                            EventType::ChildWorkflowInstanceFailed(
                                ChildWorkflowInstanceFailedEvent {
                                    task_scheduled_id,
                                    failure_details: Some(a.failure_details.unwrap_or_else(|| {
                                        TaskFailureDetails {
                                            error_type: "WorkflowTerminated".into(),
                                            error_message: format!(
                                                "child workflow '{id}' ended with status {}",
                                                status_name(status)
                                            ),
                                            ..Default::default()
                                        }
                                    })),
                                    ..Default::default()
                                },
                            )
                        };
                        if !parent_id.is_empty() {
                            record.outbox.push(OutgoingMessage {
                                target: parent_id,
                                dedup: format!("{id}/{generation}/done"),
                                event: Some(event(-1, ev)),
                                create: None,
                            });
                        }
                    }
                    activities.clear();
                    timers.clear();
                }
                workflow_action::WorkflowActionType::WorkflowVersionNotAvailable(_) => {
                    record.status = OrchestrationStatus::Stalled as i32;
                }
            }
        }
        let _ = history;
        record.last_updated = Some(now_ts());
        TurnOutcome {
            record,
            new_history,
            reset_history,
            activities,
            timers,
        }
    }

    /// Queues an activity for a worker of this sidecar, or, when placement
    /// puts its actor on another replica, runs it there and records the
    /// result it brings back.
    fn dispatch_activity(&self, instance: &str, generation: u32, request: ActivityRequest) {
        let elsewhere = self.inner.cluster.borrow().as_ref().is_some_and(|c| {
            let actor = crate::cluster::activity_actor_id(instance, request.task_id, generation);
            c.place(ActorKind::Activity, &actor) == Place::Elsewhere
        });
        if !elsewhere {
            self.queue(Pending::Activity(ActivityWork {
                instance: instance.to_owned(),
                generation,
                request: Box::new(request),
                reply: None,
            }));
            return;
        }
        let engine = self.clone();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            match engine.run_activity_elsewhere(&request, generation).await {
                Some(Ok(res)) => {
                    if let Err(e) = engine.record_activity_result(res, Some(generation)).await {
                        warn!(instance = %instance, error = %e, "recording a remote activity result failed");
                    }
                    return;
                }
                Some(Err(e)) => {
                    warn!(instance = %instance, task = request.task_id, error = %e, "running an activity on another sidecar failed; running it here");
                }
                None => {}
            }
            engine.queue(Pending::Activity(ActivityWork {
                instance,
                generation,
                request: Box::new(request),
                reply: None,
            }));
        });
    }

    /// Runs an activity another sidecar's instance scheduled (placement put
    /// it here) on a local worker and returns the worker's result.
    pub(crate) async fn execute_activity_here(
        &self,
        request: ActivityRequest,
    ) -> Result<ActivityResponse, WorkflowError> {
        let (tx, rx) = oneshot::channel();
        let instance = request
            .workflow_instance
            .as_ref()
            .map(|w| w.instance_id.clone())
            .unwrap_or_default();
        self.queue(Pending::Activity(ActivityWork {
            instance,
            generation: 0,
            request: Box::new(request),
            reply: Some(tx),
        }));
        rx.await
            .map_err(|_| WorkflowError::Remote("the activity was dropped".into()))
    }

    /// A worker's activity result.
    pub async fn complete_activity(&self, res: ActivityResponse) -> Result<(), Status> {
        let held = if res.completion_token.is_empty() {
            None
        } else {
            lock(&self.inner.dispatch)
                .in_flight
                .remove(&res.completion_token)
        };
        let generation = match held {
            Some((_, Holding::Activity(work))) => match work.reply {
                // Another sidecar waits for it and records it.
                Some(reply) => match reply.send(res) {
                    Ok(()) => return Ok(()),
                    // It stopped waiting (died, or gave up): tell the owner.
                    Err(res) => {
                        return self
                            .record_activity_result(res, None)
                            .await
                            .map_err(internal);
                    }
                },
                None => Some(work.generation),
            },
            _ => None,
        };
        self.record_activity_result(res, generation)
            .await
            .map_err(internal)
    }

    /// Records an activity result on this sidecar's instance, once.
    pub(crate) async fn record_activity_here(
        &self,
        res: ActivityResponse,
        generation: Option<u32>,
    ) -> Result<(), WorkflowError> {
        let id = res.instance_id.clone();
        let slot = self.slot(&id);
        let mut st = slot.state.lock().await;
        self.ensure_loaded(&mut st, &id).await?;
        let Some(record) = st.record.as_ref() else {
            return Ok(());
        };
        if is_terminal(record.status) || generation.is_some_and(|g| g != record.generation) {
            return Ok(());
        }
        let task_id = res.task_id;
        let already = st
            .history
            .iter()
            .chain(record.inbox.iter().filter_map(|e| e.event.as_ref()))
            .any(|e| match &e.event_type {
                Some(EventType::TaskCompleted(c)) => c.task_scheduled_id == task_id,
                Some(EventType::TaskFailed(f)) => f.task_scheduled_id == task_id,
                _ => false,
            });
        if already {
            return Ok(());
        }
        let ev = match res.failure_details {
            Some(failure) => EventType::TaskFailed(TaskFailedEvent {
                task_scheduled_id: task_id,
                failure_details: Some(failure),
                ..Default::default()
            }),
            None => EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: task_id,
                result: res.result,
                ..Default::default()
            }),
        };
        let mut record = record.clone();
        record.inbox.push(InboxEntry {
            event: Some(event(-1, ev)),
            dedup: String::new(),
        });
        record.last_updated = Some(now_ts());
        let mut batch = Batch::default();
        self.inner.store.put_record(&mut batch, &id, &record);
        let pending = self.submit(&mut st, batch)?;
        st.record = Some(record);
        drop(st);
        drop(slot);
        // The turn may see the result before it is durable (see the module
        // docs); the worker hears back only once it is.
        self.queue_turn(&id);
        if let Err(e) = pending.wait().await {
            self.forget_failed(&id).await;
            return Err(e.into());
        }
        Ok(())
    }

    // ---------------------------------------------------------- messages --

    async fn deliver_outbox(&self, sender: &str, outbox: Vec<OutgoingMessage>) {
        let mut delivered = Vec::new();
        for msg in outbox {
            match self.deliver(&msg).await {
                Ok(()) => delivered.push(msg.dedup),
                Err(e) => {
                    warn!(from = sender, to = %msg.target, error = %e, "workflow message not delivered yet; it is retried on restart");
                }
            }
        }
        // Forget what was delivered; when a finished instance owes nothing
        // more, mark it terminal in the index so restarts skip it.
        let slot = self.slot(sender);
        let mut st = slot.state.lock().await;
        // The sender may have been evicted from the cache meanwhile.
        if let Err(e) = self.ensure_record(&mut st, sender).await {
            warn!(instance = sender, error = %e, "workflow outbox cleanup failed");
            return;
        }
        let Some(record) = st.record.as_ref() else {
            return;
        };
        let mut record = record.clone();
        record.outbox.retain(|m| !delivered.contains(&m.dedup));
        let mut batch = Batch::default();
        self.inner.store.put_record(&mut batch, sender, &record);
        if is_terminal(record.status) && record.outbox.is_empty() {
            batch.index(sender, IndexChange::Terminal);
        }
        if let Err(e) = self.write(&mut st, sender, batch).await {
            warn!(instance = sender, error = %e, "workflow outbox cleanup failed");
            return;
        }
        let has_inbox = !record.inbox.is_empty() && !is_terminal(record.status);
        st.record = Some(record);
        drop(st);
        if has_inbox {
            self.queue_turn(sender);
        }
    }

    pub(crate) async fn deliver_here(&self, msg: &OutgoingMessage) -> Result<(), WorkflowError> {
        let Some(ev) = msg.event.clone() else {
            return Ok(());
        };
        let slot = self.slot(&msg.target);
        let mut st = slot.state.lock().await;
        self.ensure_record(&mut st, &msg.target).await?;
        let mut batch = Batch::default();
        let record = match (&st.record, &msg.create) {
            (Some(r), _) if r.received.contains(&msg.dedup) => return Ok(()),
            (Some(r), None) if !is_terminal(r.status) => {
                let mut r = r.clone();
                r.inbox.push(InboxEntry {
                    event: Some(ev),
                    dedup: msg.dedup.clone(),
                });
                remember(&mut r.received, &msg.dedup);
                r.last_updated = Some(now_ts());
                r
            }
            (None, Some(start)) => {
                let (execution_id, parent) = match &ev.event_type {
                    Some(EventType::ExecutionStarted(s)) => (
                        s.workflow_instance
                            .as_ref()
                            .and_then(|w| w.execution_id.clone())
                            .unwrap_or_default(),
                        s.parent_instance.clone(),
                    ),
                    _ => (String::new(), None),
                };
                let now = now_ts();
                let mut r = InstanceRecord {
                    name: start.name.clone(),
                    status: OrchestrationStatus::Pending as i32,
                    created: Some(now),
                    last_updated: Some(now),
                    input: start.input.clone(),
                    parent,
                    execution_id,
                    inbox: vec![InboxEntry {
                        event: Some(ev),
                        dedup: msg.dedup.clone(),
                    }],
                    ..Default::default()
                };
                remember(&mut r.received, &msg.dedup);
                batch.index(&msg.target, IndexChange::Active);
                self.took(&msg.target);
                r
            }
            // Finished or missing receivers drop the message.
            _ => return Ok(()),
        };
        self.inner
            .store
            .put_record(&mut batch, &msg.target, &record);
        self.write(&mut st, &msg.target, batch).await?;
        let status = record.status;
        st.record = Some(record);
        drop(st);
        slot.status.send_replace(Some(status));
        self.queue_turn(&msg.target);
        Ok(())
    }

    // ------------------------------------------------------------ timers --

    fn arm(&self, at: SystemTime, kind: TimerKind) {
        let seq = self.next_seq();
        lock(&self.inner.timers).insert((at, seq), kind);
        self.inner.timer_notify.notify_one();
    }

    async fn timer_loop(self) {
        loop {
            let notified = self.inner.timer_notify.notified();
            let next = lock(&self.inner.timers).keys().next().copied();
            match next {
                None => notified.await,
                Some((at, _)) => {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = notified => {}
                        }
                        continue;
                    }
                    let due: Vec<TimerKind> = {
                        let mut timers = lock(&self.inner.timers);
                        let now = SystemTime::now();
                        let keys: Vec<_> =
                            timers.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
                        keys.into_iter().filter_map(|k| timers.remove(&k)).collect()
                    };
                    for kind in due {
                        let engine = self.clone();
                        tokio::spawn(async move { engine.fire(kind).await });
                    }
                }
            }
        }
    }

    async fn fire(&self, kind: TimerKind) {
        match kind {
            TimerKind::Start(id) => self.queue_turn(&id),
            TimerKind::Fire {
                instance,
                generation,
                timer_id,
                fire_at,
            } => {
                let place = self.place(&instance);
                if place == Place::Elsewhere {
                    // The owner armed it again when it took the instance over.
                    return;
                }
                if place == Place::Unknown {
                    self.arm(
                        SystemTime::now() + Duration::from_millis(200),
                        TimerKind::Fire {
                            instance,
                            generation,
                            timer_id,
                            fire_at,
                        },
                    );
                    return;
                }
                if let Err(e) = self
                    .fire_timer(&instance, generation, timer_id, fire_at)
                    .await
                {
                    warn!(instance = %instance, error = %e, "firing a workflow timer failed; retrying in 1s");
                    self.arm(
                        SystemTime::now() + Duration::from_secs(1),
                        TimerKind::Fire {
                            instance,
                            generation,
                            timer_id,
                            fire_at,
                        },
                    );
                }
            }
        }
    }

    async fn fire_timer(
        &self,
        id: &str,
        generation: u32,
        timer_id: i32,
        fire_at: prost_types::Timestamp,
    ) -> Result<(), WorkflowError> {
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        self.ensure_loaded(&mut st, id).await?;
        let Some(record) = st.record.as_ref() else {
            return Ok(());
        };
        if is_terminal(record.status) || record.generation != generation {
            return Ok(());
        }
        let fired = st
            .history
            .iter()
            .chain(record.inbox.iter().filter_map(|e| e.event.as_ref()))
            .any(|e| matches!(&e.event_type, Some(EventType::TimerFired(f)) if f.timer_id == timer_id));
        if fired {
            return Ok(());
        }
        let mut record = record.clone();
        record.inbox.push(InboxEntry {
            event: Some(event(
                -1,
                EventType::TimerFired(TimerFiredEvent {
                    fire_at: Some(fire_at),
                    timer_id,
                }),
            )),
            dedup: String::new(),
        });
        record.last_updated = Some(now_ts());
        let mut batch = Batch::default();
        self.inner.store.put_record(&mut batch, id, &record);
        self.write(&mut st, id, batch).await?;
        st.record = Some(record);
        drop(st);
        self.queue_turn(id);
        Ok(())
    }

    // ---------------------------------------------------------- recovery --

    /// Resumes every unfinished instance found in the store: re-dispatches
    /// activities whose results were never recorded, re-arms timers,
    /// delivers undelivered messages and queues pending turns. Returns how
    /// many instances were resumed.
    pub async fn recover(&self) -> Result<usize, WorkflowError> {
        if self.inner.clustered.load(Ordering::Acquire) {
            // Replicas resume what placement gives them (`rebalance`).
            return Ok(0);
        }
        let mut resumed = 0;
        let shards = self.inner.store.index().await?;
        for entry in shards.iter().flat_map(|s| s.entries.iter()) {
            if !entry.terminal {
                self.resume_instance(&entry.instance_id).await?;
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    async fn resume_instance(&self, id: &str) -> Result<(), WorkflowError> {
        let slot = self.slot(id);
        let mut st = slot.state.lock().await;
        if self.inner.clustered.load(Ordering::Acquire) {
            // Whatever is cached was read while another sidecar owned the
            // instance: start from the store (after this sidecar's own
            // writes in flight, if any, have settled).
            if let Some(p) = st.last.clone() {
                let _ = p.wait().await;
            }
            let turn = st.turn.take();
            *st = SlotState::default();
            drop(turn);
            lock(&self.inner.dispatch).queued_turns.remove(id);
        }
        self.took(id);
        self.ensure_loaded(&mut st, id).await?;
        let Some(record) = st.record.clone() else {
            return Ok(());
        };
        slot.status.send_replace(Some(record.status));
        let outbox = record.outbox.clone();
        if !is_terminal(record.status) {
            let done: HashSet<i32> = st
                .history
                .iter()
                .chain(record.inbox.iter().filter_map(|e| e.event.as_ref()))
                .filter_map(|e| match &e.event_type {
                    Some(EventType::TaskCompleted(c)) => Some(c.task_scheduled_id),
                    Some(EventType::TaskFailed(f)) => Some(f.task_scheduled_id),
                    _ => None,
                })
                .collect();
            let fired: HashSet<i32> = st
                .history
                .iter()
                .chain(record.inbox.iter().filter_map(|e| e.event.as_ref()))
                .filter_map(|e| match &e.event_type {
                    Some(EventType::TimerFired(f)) => Some(f.timer_id),
                    _ => None,
                })
                .collect();
            let instance = WorkflowInstance {
                instance_id: id.to_owned(),
                execution_id: Some(record.execution_id.clone()),
            };
            for e in &st.history {
                match &e.event_type {
                    Some(EventType::TaskScheduled(t)) if !done.contains(&e.event_id) => {
                        self.dispatch_activity(
                            id,
                            record.generation,
                            ActivityRequest {
                                name: t.name.clone(),
                                version: t.version.clone(),
                                input: t.input.clone(),
                                workflow_instance: Some(instance.clone()),
                                task_id: e.event_id,
                                task_execution_id: t.task_execution_id.clone(),
                                ..Default::default()
                            },
                        );
                    }
                    Some(EventType::TimerCreated(t)) if !fired.contains(&e.event_id) => {
                        let fire_at = t.fire_at.unwrap_or_else(now_ts);
                        self.arm(
                            to_system_time(&fire_at),
                            TimerKind::Fire {
                                instance: id.to_owned(),
                                generation: record.generation,
                                timer_id: e.event_id,
                                fire_at,
                            },
                        );
                    }
                    _ => {}
                }
            }
            if !record.inbox.is_empty() {
                match record.scheduled_start.map(|t| to_system_time(&t)) {
                    Some(at) if at > SystemTime::now() && st.history.is_empty() => {
                        self.arm(at, TimerKind::Start(id.to_owned()))
                    }
                    _ => self.queue_turn(id),
                }
            }
        }
        drop(st);
        if !outbox.is_empty() {
            self.deliver_outbox(id, outbox).await;
        }
        Ok(())
    }
}

/// A handle on a cached instance. Dropping the last handle of a finished
/// (or, over the cache's capacity, idle) instance evicts it.
struct SlotRef<'a> {
    inner: &'a Inner,
    id: String,
    slot: Option<Arc<Slot>>,
}

impl std::ops::Deref for SlotRef<'_> {
    type Target = Slot;

    fn deref(&self) -> &Slot {
        // Only `drop` takes the slot out.
        self.slot.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for SlotRef<'_> {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.inner.release(&self.id);
    }
}

impl Inner {
    /// Evicts the instance when nobody holds it and it has nothing in
    /// flight. Handles are only handed out under the map's lock, so a
    /// strong count of one there means no one else can be using it.
    fn release(&self, id: &str) {
        let mut slots = lock(&self.slots);
        let over_capacity = slots.len() > CACHED_INSTANCES;
        let Some(slot) = slots.get(id) else {
            return;
        };
        if Arc::strong_count(slot) != 1 {
            return;
        }
        let Ok(st) = slot.state.try_lock() else {
            return;
        };
        let finished = st
            .record
            .as_ref()
            .is_none_or(|r| is_terminal(r.status) && r.outbox.is_empty());
        // A write still in flight means the store is behind the cache.
        let settled = st.last.as_ref().is_none_or(PendingWrite::is_settled);
        let evict = st.turn.is_none() && settled && (finished || over_capacity);
        drop(st);
        if evict {
            slots.remove(id);
            if finished {
                lock(&self.running).remove(id);
            }
        }
    }
}

struct TurnOutcome {
    record: InstanceRecord,
    new_history: Vec<HistoryEvent>,
    reset_history: bool,
    activities: Vec<ActivityRequest>,
    timers: Vec<(i32, prost_types::Timestamp)>,
}

fn remember(received: &mut Vec<String>, dedup: &str) {
    if dedup.is_empty() {
        return;
    }
    received.push(dedup.to_owned());
    if received.len() > RECEIVED_MEMORY {
        let excess = received.len() - RECEIVED_MEMORY;
        received.drain(..excess);
    }
}

fn status_of(id: &str, r: &InstanceRecord) -> InstanceStatus {
    InstanceStatus {
        instance_id: id.to_owned(),
        name: r.name.clone(),
        status: OrchestrationStatus::try_from(r.status).unwrap_or(OrchestrationStatus::Running),
        created: r.created,
        last_updated: r.last_updated,
        completed: r.completed,
        input: r.input.clone(),
        output: r.output.clone(),
        custom_status: r.custom_status.clone(),
        failure: r.failure.clone(),
        execution_id: r.execution_id.clone(),
        parent_instance_id: r
            .parent
            .as_ref()
            .and_then(|p| p.workflow_instance.as_ref())
            .map(|w| w.instance_id.clone()),
        scheduled_start: r.scheduled_start,
        tags: r.tags.clone(),
    }
}

/// Dapr's status names (`RUNNING`, `COMPLETED`, ...).
pub fn status_name(status: i32) -> &'static str {
    match OrchestrationStatus::try_from(status) {
        Ok(OrchestrationStatus::Running) => "RUNNING",
        Ok(OrchestrationStatus::Completed) => "COMPLETED",
        Ok(OrchestrationStatus::ContinuedAsNew) => "CONTINUED_AS_NEW",
        Ok(OrchestrationStatus::Failed) => "FAILED",
        Ok(OrchestrationStatus::Canceled) => "CANCELED",
        Ok(OrchestrationStatus::Terminated) => "TERMINATED",
        Ok(OrchestrationStatus::Pending) => "PENDING",
        Ok(OrchestrationStatus::Suspended) => "SUSPENDED",
        Ok(OrchestrationStatus::Stalled) => "STALLED",
        Err(_) => "UNKNOWN",
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Poison-tolerant lock: a panic elsewhere must not wedge the engine.
fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
