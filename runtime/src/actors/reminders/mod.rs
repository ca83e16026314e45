//! Actor timers and reminders: schedules, persistence in the actor state
//! store, and firing on the host that owns the actor.
//!
//! The actor runtime plugs in through [`ReminderHost`] (ownership per
//! placement, activation, the app callback, the actor state store) and tells
//! [`Reminders`] about placement changes ([`Reminders::placement_changed`]) and
//! deactivations ([`Reminders::actor_deactivated`]). Everything fires from one
//! scheduler task (see `scheduler`); fire progress ("tracks") is written to
//! the store in batches.

pub mod api;
pub mod model;
pub mod schedule;
pub mod scheduler;
pub mod store;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use dapr_components::state::StateStore;
use tokio::{
    sync::{Notify, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use model::{CreateRequest, InvalidSchedule, Kind, Reminder, Track};
use scheduler::{EntryId, Fire, Queue, instant_for};
use store::{ReminderStore, StoreError, Upsert};

/// Where an actor lives according to the current placement table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Local,
    Remote,
    /// No table yet (or being updated): decide later.
    NotReady,
}

/// A timer or reminder callback to deliver to a local actor.
#[derive(Debug, Clone)]
pub struct Callback {
    pub actor_type: String,
    pub actor_id: String,
    pub kind: Kind,
    pub name: String,
    /// JSON text.
    pub data: Option<Bytes>,
    pub due_time: String,
    pub period: String,
    /// Timers only.
    pub callback: String,
    /// The JSON body Dapr sends (`{"data","dueTime","period"}`, timers also
    /// `callback`).
    pub body: Bytes,
}

impl Callback {
    /// The app method: `remind/<name>` or `timer/<name>`.
    pub fn method(&self) -> String {
        format!("{}/{}", self.kind.method_prefix(), self.name)
    }
}

/// How a delivered callback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Done,
    /// The app answered with `X-DaprReminderCancel: true`.
    Cancel,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    /// The actor is not (or no longer) hosted here.
    #[error("actor is not locally hosted")]
    NotLocal,
    #[error("{0}")]
    Failed(String),
}

/// What the actor runtime provides to timers and reminders.
#[async_trait]
pub trait ReminderHost: Send + Sync + 'static {
    /// Actor types the app registered.
    fn hosted_types(&self) -> Vec<String>;
    fn is_hosted(&self, actor_type: &str) -> bool;
    /// `remindersStoragePartitions` for the type (0 = one list).
    fn reminder_partitions(&self, actor_type: &str) -> u32;
    fn owner(&self, actor_type: &str, actor_id: &str) -> Owner;
    /// Whether the actor is activated on this host (timers need it).
    fn is_active(&self, actor_type: &str, actor_id: &str) -> bool;
    /// The component marked `actorStateStore: "true"`.
    fn state_store(&self) -> Option<Arc<dyn StateStore>>;
    /// Calls the app under the actor's turn lock (`PUT
    /// /actors/{type}/{id}/method/{remind|timer}/{name}`).
    async fn deliver(&self, cb: Callback) -> Result<Delivery, DeliverError>;
}

/// Failures of the reminder and timer APIs; the API layer maps them to
/// Dapr's codes (see `api`).
#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error("operations on actor reminders are only possible on hosted actor types")]
    NotHosted,
    #[error("actor runtime is not initialized")]
    NoHost,
    #[error(
        "actors: state store does not exist or incorrectly configured. Have you set the property 'actorStateStore' in your state store component file?"
    )]
    NoStateStore,
    #[error(transparent)]
    Invalid(#[from] InvalidSchedule),
    #[error("name contains forbidden character: {0:?}")]
    InvalidName(String),
    /// `overwrite: false` and the reminder exists (Dapr: 409 / AlreadyExists).
    #[error("actor reminder already exists: {0}")]
    AlreadyExists(String),
    #[error("can't create timer for actor {0}: actor not activated")]
    NotActivated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fire counters (for metrics and the benchmark).
#[derive(Debug, Default)]
pub struct Stats {
    pub reminders_fired: AtomicU64,
    pub timers_fired: AtomicU64,
    pub deliveries_failed: AtomicU64,
}

/// Tunables; the defaults suit a sidecar.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
    /// How long fire progress may wait before it is written.
    pub track_flush_interval: Duration,
    /// How long a fire waits when placement is not ready.
    pub not_ready_retry: Duration,
    /// How often the store is checked for reminders another host created,
    /// replaced or deleted (one small read per hosted type).
    pub watch_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_in_flight: 4096,
            track_flush_interval: Duration::from_millis(100),
            not_ready_retry: Duration::from_millis(250),
            watch_interval: Duration::from_millis(100),
        }
    }
}

/// Timers and reminders of one sidecar.
pub struct Reminders {
    host: OnceLock<Weak<dyn ReminderHost>>,
    store: OnceLock<ReminderStore>,
    queue: Mutex<Queue>,
    wake: Notify,
    in_flight: Arc<Semaphore>,
    /// Per actor type: serialises this sidecar's list writes.
    type_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pending_tracks: Mutex<HashMap<String, Track>>,
    evaluate_tx: tokio::sync::mpsc::Sender<()>,
    evaluate_rx: Mutex<Option<tokio::sync::mpsc::Receiver<()>>>,
    pub stats: Stats,
    opts: Options,
    shutdown: CancellationToken,
}

fn validate_name(name: &str) -> Result<(), ReminderError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| matches!(b, b'#' | b'?' | 0 | b'/' | b'\\') || b < 0x20 || b == 0x7f);
    if bad {
        return Err(ReminderError::InvalidName(name.to_owned()));
    }
    Ok(())
}

impl Reminders {
    /// Creates the service; nothing runs until [`Reminders::start`].
    pub fn new(opts: Options, shutdown: CancellationToken) -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        Arc::new(Self {
            host: OnceLock::new(),
            store: OnceLock::new(),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            in_flight: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            type_locks: Mutex::new(HashMap::new()),
            pending_tracks: Mutex::new(HashMap::new()),
            evaluate_tx: tx,
            evaluate_rx: Mutex::new(Some(rx)),
            stats: Stats::default(),
            opts,
            shutdown,
        })
    }

    /// Attaches the actor runtime (held weakly: it owns `self`) and starts
    /// the scheduler, the track writer and the placement evaluator. Call once.
    pub fn start(self: &Arc<Self>, host: Weak<dyn ReminderHost>) {
        if self.host.set(host).is_err() {
            tracing::warn!("reminders already started");
            return;
        }
        tokio::spawn(self.clone().run_scheduler());
        tokio::spawn(self.clone().run_track_writer());
        tokio::spawn(self.clone().run_watcher());
        let rx = self
            .evaluate_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().run_evaluator(rx));
        }
    }

    fn host(&self) -> Result<Arc<dyn ReminderHost>, ReminderError> {
        self.host
            .get()
            .and_then(Weak::upgrade)
            .ok_or(ReminderError::NoHost)
    }

    fn store(&self, host: &dyn ReminderHost) -> Result<ReminderStore, ReminderError> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let s = ReminderStore::new(host.state_store().ok_or(ReminderError::NoStateStore)?);
        Ok(self.store.get_or_init(|| s).clone())
    }

    fn type_lock(&self, actor_type: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.type_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(actor_type.to_owned())
            .or_default()
            .clone()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, kind: Kind, r: Reminder) {
        let (_, earliest) = self.lock_queue().upsert(kind, r);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Timers and reminders scheduled on this host.
    pub fn scheduled(&self) -> usize {
        self.lock_queue().len()
    }

    // ---- reminders -------------------------------------------------------

    /// Registers (or replaces) a reminder and persists it.
    pub async fn create_reminder(&self, req: CreateRequest) -> Result<(), ReminderError> {
        validate_name(&req.name)?;
        let host = self.host()?;
        if !host.is_hosted(&req.actor_type) {
            return Err(ReminderError::NotHosted);
        }
        let store = self.store(host.as_ref())?;
        let overwrite = req.overwrite.unwrap_or(true);
        let r = req.build(Kind::Reminder, Utc::now())?;
        let lock = self.type_lock(&r.actor_type);
        let _g = lock.lock().await;
        let outcome = store
            .upsert_with(&r, host.reminder_partitions(&r.actor_type), overwrite)
            .await?;
        let id = (Kind::Reminder, r.key());
        match outcome {
            Upsert::Exists => return Err(ReminderError::AlreadyExists(r.name)),
            Upsert::Unchanged if self.lock_queue().contains(&id) => return Ok(()),
            _ => {}
        }
        match host.owner(&r.actor_type, &r.actor_id) {
            // Not ready: scheduled here; a fire re-checks the owner first.
            Owner::Local | Owner::NotReady => self.schedule(Kind::Reminder, r),
            Owner::Remote => {
                // The owner's store watcher picks it up (within
                // `watch_interval`); firing it here too would duplicate it.
                self.lock_queue().remove(&id);
            }
        }
        Ok(())
    }

    /// Removes a reminder; removing one that does not exist succeeds.
    pub async fn delete_reminder(
        &self,
        actor_type: &str,
        actor_id: &str,
        name: &str,
    ) -> Result<(), ReminderError> {
        let host = self.host()?;
        if !host.is_hosted(actor_type) {
            return Err(ReminderError::NotHosted);
        }
        let store = self.store(host.as_ref())?;
        let lock = self.type_lock(actor_type);
        let _g = lock.lock().await;
        self.lock_queue().remove(&(
            Kind::Reminder,
            model::reminder_key(actor_type, actor_id, name),
        ));
        store
            .remove(
                actor_type,
                actor_id,
                name,
                host.reminder_partitions(actor_type),
            )
            .await?;
        Ok(())
    }

    /// One stored reminder, or `None`.
    pub async fn get_reminder(
        &self,
        actor_type: &str,
        actor_id: &str,
        name: &str,
    ) -> Result<Option<Reminder>, ReminderError> {
        let host = self.host()?;
        if !host.is_hosted(actor_type) {
            return Err(ReminderError::NotHosted);
        }
        let store = self.store(host.as_ref())?;
        Ok(store.get_one(actor_type, actor_id, name).await?)
    }

    /// The reminders of a type, optionally of one actor.
    pub async fn list_reminders(
        &self,
        actor_type: &str,
        actor_id: Option<&str>,
    ) -> Result<Vec<Reminder>, ReminderError> {
        let host = self.host()?;
        if !host.is_hosted(actor_type) {
            return Err(ReminderError::NotHosted);
        }
        let store = self.store(host.as_ref())?;
        let all = store
            .load_all(actor_type, host.reminder_partitions(actor_type))
            .await?;
        Ok(all
            .into_iter()
            .filter(|r| actor_id.is_none_or(|id| r.actor_id == id))
            .collect())
    }

    /// Removes every reminder of a type (or of one actor of it).
    pub async fn delete_reminders_by_type(
        &self,
        actor_type: &str,
        actor_id: Option<&str>,
    ) -> Result<(), ReminderError> {
        for r in self.list_reminders(actor_type, actor_id).await? {
            self.delete_reminder(actor_type, &r.actor_id, &r.name)
                .await?;
        }
        Ok(())
    }

    // ---- timers ------------------------------------------------------------

    /// Starts (or replaces) a timer of an active local actor. Timers live in
    /// memory only.
    pub fn create_timer(&self, req: CreateRequest) -> Result<(), ReminderError> {
        validate_name(&req.name)?;
        let host = self.host()?;
        if !host.is_active(&req.actor_type, &req.actor_id) {
            return Err(ReminderError::NotActivated(model::actor_key(
                &req.actor_type,
                &req.actor_id,
            )));
        }
        let r = req.build(Kind::Timer, Utc::now())?;
        if !r.next_tick().1 {
            return Ok(());
        }
        self.schedule(Kind::Timer, r);
        Ok(())
    }

    /// Stops a timer; stopping one that does not exist succeeds.
    pub fn delete_timer(&self, actor_type: &str, actor_id: &str, name: &str) {
        self.lock_queue()
            .remove(&(Kind::Timer, model::reminder_key(actor_type, actor_id, name)));
    }

    /// The actor was deactivated (idle, rebalanced, shut down): its timers go.
    pub fn actor_deactivated(&self, actor_type: &str, actor_id: &str) {
        let n = self
            .lock_queue()
            .remove_actor_timers(&model::actor_key(actor_type, actor_id));
        if n > 0 {
            tracing::debug!(
                actor_type,
                actor_id,
                timers = n,
                "timers removed on deactivation"
            );
        }
    }

    // ---- placement -----------------------------------------------------------

    /// The placement table changed (or became ready): re-decide which
    /// reminders fire here. Bursts coalesce into one evaluation.
    pub fn placement_changed(&self) {
        let _ = self.evaluate_tx.try_send(());
    }

    async fn run_evaluator(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<()>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            if let Err(e) = self.evaluate().await {
                tracing::warn!("evaluating actor reminders: {e}");
            }
        }
    }

    /// Loads every hosted type's reminders and schedules those of actors
    /// owned here; drops those owned elsewhere or deleted meanwhile.
    pub async fn evaluate(&self) -> Result<(), ReminderError> {
        let host = self.host()?;
        let store = self.store(host.as_ref())?;
        for actor_type in host.hosted_types() {
            if let Err(e) = self.evaluate_type(host.as_ref(), &store, &actor_type).await {
                tracing::warn!(actor_type, "loading reminders: {e}");
            }
        }
        Ok(())
    }

    /// [`Reminders::evaluate`] for one type: starts stored reminders owned
    /// here that are not scheduled (or were replaced in the store), stops
    /// those owned elsewhere or no longer stored.
    async fn evaluate_type(
        &self,
        host: &dyn ReminderHost,
        store: &ReminderStore,
        actor_type: &str,
    ) -> Result<(), StoreError> {
        {
            let lock = self.type_lock(actor_type);
            let _g = lock.lock().await;
            let all = store
                .load_all(actor_type, host.reminder_partitions(actor_type))
                .await?;
            let mut keep = HashSet::with_capacity(all.len());
            let mut start = Vec::new();
            let mut stop = Vec::new();
            {
                let q = self.lock_queue();
                for r in all {
                    let key = r.key();
                    match host.owner(&r.actor_type, &r.actor_id) {
                        Owner::Local => {
                            let id = (Kind::Reminder, key.clone());
                            if q.origin(&id) != Some(r.registered_time) {
                                start.push(r);
                            }
                            keep.insert(key);
                        }
                        Owner::NotReady => {
                            keep.insert(key);
                        }
                        Owner::Remote => stop.push(key),
                    }
                }
                for key in q.reminder_keys_of_type(actor_type) {
                    if !keep.contains(&key) {
                        stop.push(key);
                    }
                }
            }
            {
                let mut q = self.lock_queue();
                for key in &stop {
                    q.remove(&(Kind::Reminder, key.clone()));
                }
            }
            let keys: Vec<String> = start.iter().map(Reminder::key).collect();
            let tracks = store.tracks(&keys).await;
            let mut started = 0usize;
            let now = Utc::now();
            for (mut r, track) in start.into_iter().zip(tracks) {
                let origin = r.registered_time;
                let tracked = track.is_some();
                if let Some(t) = track {
                    r.apply_track(&t);
                    if r.period.repeats < 0 {
                        // Unbounded: only the first fire is tracked, so
                        // resume on the grid rather than replaying ticks.
                        r.registered_time = r.period.first_at_or_after(r.registered_time, now);
                    }
                }
                let (_, earliest) =
                    self.lock_queue()
                        .upsert_from(Kind::Reminder, r, origin, tracked);
                if earliest {
                    self.wake.notify_one();
                }
                started += 1;
            }
            tracing::debug!(
                actor_type,
                started,
                stopped = stop.len(),
                "reminders evaluated"
            );
        }
        Ok(())
    }

    /// Re-evaluates a type whenever its stored metadata changes: every list
    /// write rewrites the metadata (new etag), so a reminder created,
    /// replaced or deleted through another sidecar reaches its owner here.
    ///
    /// A pass holds each type's lock while it loads every reminder of the
    /// type, which stalls registrations; the pause between passes is at
    /// least ten times the last pass, so with many reminders the watcher
    /// never holds the locks more than a tenth of the time.
    async fn run_watcher(self: Arc<Self>) {
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        let mut last_pass = Duration::ZERO;
        loop {
            let pause = self.opts.watch_interval.max(last_pass.saturating_mul(10));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let pass_started = Instant::now();
            self.watch_pass(&mut seen).await;
            last_pass = pass_started.elapsed();
        }
    }

    /// One look at every hosted type's metadata; a type whose etag moved
    /// since the last look is evaluated again.
    async fn watch_pass(&self, seen: &mut HashMap<String, Option<String>>) {
        let Ok(host) = self.host() else { return };
        let Ok(store) = self.store(host.as_ref()) else {
            return;
        };
        for actor_type in host.hosted_types() {
            let etag = match store.metadata(&actor_type).await {
                Ok((_, etag)) => etag,
                Err(e) => {
                    tracing::debug!(actor_type, "watching reminders: {e}");
                    continue;
                }
            };
            if seen.get(&actor_type) == Some(&etag) {
                continue;
            }
            match self.evaluate_type(host.as_ref(), &store, &actor_type).await {
                Ok(()) => {
                    seen.insert(actor_type, etag);
                }
                Err(e) => tracing::warn!(actor_type, "loading reminders: {e}"),
            }
        }
    }

    // ---- firing --------------------------------------------------------------

    async fn run_scheduler(self: Arc<Self>) {
        const BATCH: usize = 1024;
        loop {
            let (fires, next) = self.lock_queue().pop_due(Instant::now(), BATCH);
            let more = fires.len() == BATCH;
            for fire in fires {
                let permit = tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    p = self.in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.fire(fire).await;
                    drop(permit);
                });
            }
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// Re-queues for `at`, waking the scheduler when it becomes the earliest.
    fn requeue(&self, fire: Fire, at: Instant) {
        if self.lock_queue().requeue(fire, at) {
            self.wake.notify_one();
        }
    }

    fn drop_entry(&self, id: &EntryId, generation: u64) {
        self.lock_queue().remove_if(id, generation);
    }

    async fn fire(self: &Arc<Self>, mut fire: Fire) {
        let Ok(host) = self.host() else {
            return;
        };
        let kind = fire.id.0;
        let (tick, active) = fire.reminder.next_tick();
        if !active {
            self.finish(&fire).await;
            return;
        }
        let r = &fire.reminder;
        match kind {
            Kind::Reminder => match host.owner(&r.actor_type, &r.actor_id) {
                Owner::Local => {}
                Owner::Remote => {
                    // Moved away; the new owner loads it from the store.
                    self.drop_entry(&fire.id, fire.generation);
                    return;
                }
                Owner::NotReady => {
                    let at = Instant::now() + self.opts.not_ready_retry;
                    self.requeue(fire, at);
                    return;
                }
            },
            Kind::Timer => {
                if !host.is_active(&r.actor_type, &r.actor_id) {
                    self.drop_entry(&fire.id, fire.generation);
                    return;
                }
            }
        }
        let cb = Callback {
            actor_type: r.actor_type.clone(),
            actor_id: r.actor_id.clone(),
            kind,
            name: r.name.clone(),
            data: r.data.clone(),
            due_time: r.due_time.clone(),
            period: r.period.value.clone(),
            callback: r.callback.clone(),
            body: fire.body.clone(),
        };
        let outcome = host.deliver(cb).await;
        dapr_observability::metrics::actor_fired(
            &r.actor_type,
            kind == Kind::Timer,
            outcome.is_ok(),
        );
        match kind {
            Kind::Reminder => self.stats.reminders_fired.fetch_add(1, Ordering::Relaxed),
            Kind::Timer => self.stats.timers_fired.fetch_add(1, Ordering::Relaxed),
        };
        match outcome {
            Ok(Delivery::Done) => {}
            Ok(Delivery::Cancel) if kind == Kind::Reminder => {
                tracing::debug!(key = fire.id.1, "reminder cancelled by the actor");
                self.finish(&fire).await;
                return;
            }
            Ok(Delivery::Cancel) => {}
            Err(DeliverError::NotLocal) => {
                self.drop_entry(&fire.id, fire.generation);
                return;
            }
            Err(DeliverError::Failed(e)) => {
                // As in Dapr: a failed tick is logged, the schedule goes on.
                self.stats.deliveries_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = fire.id.1, "{} delivery failed: {e}", kind.label());
            }
        }
        if fire.reminder.tick_executed() || !fire.reminder.next_tick().1 {
            self.finish(&fire).await;
            return;
        }
        // Progress is persisted when it matters on resume: repetition
        // counts, and the first fire (an unbounded reminder that has fired
        // resumes on its grid; one that never fired fires its first tick).
        // Not every tick: that would be a store write per fire.
        if kind == Kind::Reminder && (fire.reminder.period.repeats > 0 || !fire.tracked) {
            fire.tracked = true;
            self.pending_tracks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    fire.id.1.clone(),
                    Track {
                        last_fired_time: tick,
                        repetition_left: fire.reminder.period.repeats,
                    },
                );
        }
        let at = instant_for(fire.reminder.registered_time);
        self.requeue(fire, at);
    }

    /// A reminder or timer ran out (repetitions, ttl) or was cancelled:
    /// unschedule it, and delete a reminder from the store.
    async fn finish(&self, fire: &Fire) {
        if fire.id.0 != Kind::Reminder {
            self.drop_entry(&fire.id, fire.generation);
            return;
        }
        self.pending_tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fire.id.1);
        let r = &fire.reminder;
        let removed = async {
            let host = self.host()?;
            let store = self.store(host.as_ref())?;
            // Under the type lock, so an evaluation cannot see it still
            // stored but unscheduled and start it again.
            let lock = self.type_lock(&r.actor_type);
            let _g = lock.lock().await;
            let mine = self.lock_queue().remove_if(&fire.id, fire.generation);
            if !mine && self.lock_queue().contains(&fire.id) {
                // Replaced while this tick ran: the new one stays.
                return Ok(());
            }
            store
                .remove(
                    &r.actor_type,
                    &r.actor_id,
                    &r.name,
                    host.reminder_partitions(&r.actor_type),
                )
                .await?;
            Ok::<(), ReminderError>(())
        };
        if let Err(e) = removed.await {
            tracing::warn!(key = fire.id.1, "deleting finished reminder: {e}");
        }
    }

    async fn run_track_writer(self: Arc<Self>) {
        loop {
            let stop = tokio::select! {
                _ = self.shutdown.cancelled() => true,
                _ = tokio::time::sleep(self.opts.track_flush_interval) => false,
            };
            self.flush_tracks().await;
            if stop {
                return;
            }
        }
    }

    /// Writes the fire progress collected since the last flush, in one batch.
    pub async fn flush_tracks(&self) {
        let batch: Vec<(String, Track)> = {
            let mut p = self
                .pending_tracks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if p.is_empty() {
                return;
            }
            p.drain().collect()
        };
        let Ok(host) = self.host() else { return };
        let Ok(store) = self.store(host.as_ref()) else {
            return;
        };
        // Bounded batches keep each store transaction reasonable.
        for chunk in batch.chunks(2048) {
            if let Err(e) = store.save_tracks(chunk).await {
                tracing::warn!(count = chunk.len(), "saving reminder tracks: {e}");
            }
        }
    }
}

pub mod host;

#[cfg(test)]
mod tests;
