//! How workflow instances are laid out in the state store.
//!
//! Every instance is one small record (`<prefix><id>||metadata`: status,
//! input/output, the inbox of events not yet shown to the workflow, the
//! messages it still has to deliver to other instances) plus its history as
//! append-only chunks (`<prefix><id>||history-000001`, one per completed
//! turn). A turn is therefore one transaction of two keys whatever the size
//! of the history, and an event raised, an activity result or a fired timer
//! is one write of the record. Instance ids are listed in `SHARDS` index keys
//! (`<prefix>index-07`) so a restarted sidecar finds the instances it must
//! resume and `ListInstanceIDs` can page through them.
//!
//! Commits go through one committer task that groups whatever batches are
//! waiting into a single store transaction (group commit): under load one
//! fsync covers many instances' turns, and every caller still gets its
//! answer only after the transaction holding its writes has committed. The
//! committer also owns the index shards, so concurrent instances never wait
//! on each other's index updates.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex as StdMutex, OnceLock},
};

use bytes::Bytes;
use dapr_components::state::{
    Consistency, DeleteRequest, GetRequest, SetRequest, StateError, StateStore, TransactionOp,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::proto::{HistoryEvent, OrchestrationStatus, ParentInstanceInfo, TaskFailureDetails};

/// Number of index keys instance ids are spread over.
pub const SHARDS: u32 = 32;
/// Most batches one group commit takes: bounds the transaction's size.
const MAX_GROUP: usize = 256;

/// The persisted state of one instance (everything but its history).
#[derive(Clone, PartialEq, Message)]
pub struct InstanceRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(enumeration = "OrchestrationStatus", tag = "2")]
    pub status: i32,
    #[prost(message, optional, tag = "3")]
    pub created: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub last_updated: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub completed: Option<prost_types::Timestamp>,
    #[prost(string, optional, tag = "6")]
    pub input: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub output: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub custom_status: Option<String>,
    #[prost(message, optional, tag = "9")]
    pub failure: Option<TaskFailureDetails>,
    #[prost(message, optional, tag = "10")]
    pub parent: Option<ParentInstanceInfo>,
    #[prost(string, tag = "11")]
    pub execution_id: String,
    /// History chunk keys written so far (`history-000001` ..).
    #[prost(uint32, tag = "12")]
    pub history_chunks: u32,
    /// Events waiting for the next turn, in arrival order.
    #[prost(message, repeated, tag = "13")]
    pub inbox: Vec<InboxEntry>,
    /// Events for other instances, persisted with the turn that produced
    /// them and delivered after it committed.
    #[prost(message, repeated, tag = "14")]
    pub outbox: Vec<OutgoingMessage>,
    /// Dedup keys of the last messages received from other instances, so a
    /// redelivery after a crash is not shown to the workflow twice.
    #[prost(string, repeated, tag = "15")]
    pub received: Vec<String>,
    #[prost(map = "string, string", tag = "16")]
    pub tags: HashMap<String, String>,
    #[prost(message, optional, tag = "17")]
    pub scheduled_start: Option<prost_types::Timestamp>,
    /// Ids of child workflows started by this instance (for recursive
    /// terminate and purge).
    #[prost(string, repeated, tag = "18")]
    pub children: Vec<String>,
    /// Bumped on continue-as-new, so stale completions of the previous
    /// execution are recognised.
    #[prost(uint32, tag = "19")]
    pub generation: u32,
}

/// One event waiting in an instance's inbox.
#[derive(Clone, PartialEq, Message)]
pub struct InboxEntry {
    #[prost(message, optional, tag = "1")]
    pub event: Option<HistoryEvent>,
    /// Set for messages from other instances (see `InstanceRecord::received`).
    #[prost(string, tag = "2")]
    pub dedup: String,
}

/// An event for another instance.
#[derive(Clone, PartialEq, Message)]
pub struct OutgoingMessage {
    #[prost(string, tag = "1")]
    pub target: String,
    /// Unique per (sender execution, event): the receiver drops repeats.
    #[prost(string, tag = "2")]
    pub dedup: String,
    #[prost(message, optional, tag = "3")]
    pub event: Option<HistoryEvent>,
    /// Set when the message starts a new instance (a child workflow):
    /// the receiver is created if it does not exist.
    #[prost(message, optional, tag = "4")]
    pub create: Option<ChildStart>,
}

/// What a child workflow is started with.
#[derive(Clone, PartialEq, Message)]
pub struct ChildStart {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, optional, tag = "2")]
    pub input: Option<String>,
}

/// A slice of history written by one turn.
#[derive(Clone, PartialEq, Message)]
pub struct HistoryChunk {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<HistoryEvent>,
}

/// The ids listed in one index key.
#[derive(Clone, PartialEq, Message)]
pub struct IndexShard {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<IndexEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct IndexEntry {
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// Terminal instances need no resuming after a restart.
    #[prost(bool, tag = "2")]
    pub terminal: bool,
}

/// How a batch changes the instance index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexChange {
    Active,
    Terminal,
    Remove,
}

/// Storage failures, including records that no longer decode.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("stored workflow data under '{key}' is corrupt: {source}")]
    Corrupt {
        key: String,
        source: prost::DecodeError,
    },
}

/// Reads and writes instances under one app's key prefix.
#[derive(Clone)]
pub struct WorkflowStore {
    store: Arc<dyn StateStore>,
    prefix: String,
    /// The committer task, started on first use (it needs a runtime).
    committer: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
    /// Ids listed in the committed index, per loaded shard.
    listed: Arc<StdMutex<Listed>>,
    /// Set when several sidecars share the store (see `Guard`).
    guard: Arc<OnceLock<Guard>>,
}

/// Fencing for replicas sharing the store: every write of an instance
/// record or an index shard carries the etag this sidecar last read or
/// wrote for it, so a sidecar that lost an instance to another (and has
/// not noticed yet) fails its write instead of overwriting the new owner's.
/// After each commit the written keys are read back: an etag is adopted
/// only if the value is still the one written (else another sidecar wrote
/// in between, and the next write must fail).
#[derive(Default)]
struct Guard {
    tags: StdMutex<HashMap<String, Tag>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Known(String),
    /// Read as missing: a write must create it.
    Absent,
    /// Changed by someone else since: the next write fails.
    Stale,
}

impl Guard {
    fn tags(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tag>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, key: &str, item: Option<&dapr_components::state::StateItem>) {
        let tag = match item {
            None => Tag::Absent,
            Some(i) => i.etag.clone().map_or(Tag::Stale, Tag::Known),
        };
        self.tags().insert(key.to_owned(), tag);
    }
}

/// The committed index's ids, for answering "does this instance exist?"
/// without a read. Only the committer changes it, after its transaction
/// committed; callers ask while holding the instance's lock, which every
/// write that adds or removes the instance also holds.
#[derive(Default)]
struct Listed {
    loaded: HashSet<u32>,
    ids: HashSet<String>,
}

/// A write that is applied atomically by `commit`.
#[derive(Default)]
pub struct Batch {
    ops: Vec<TransactionOp>,
    index: Vec<(String, IndexChange)>,
}

/// A submitted batch's outcome, once the committer has it. Clones share it.
#[derive(Clone)]
pub struct PendingWrite(watch::Receiver<Option<Result<(), StateError>>>);

impl PendingWrite {
    /// Waits until the batch is durable (or failed).
    pub async fn wait(mut self) -> Result<(), StoreError> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(())).map_err(Into::into),
            Err(_) => Err(committer_gone()),
        }
    }

    /// Whether the outcome is known.
    pub fn is_settled(&self) -> bool {
        self.0.borrow().is_some()
    }

    fn failed(&self) -> bool {
        matches!(&*self.0.borrow(), Some(Err(_)))
    }
}

/// Work for the committer.
enum Job {
    Commit {
        batch: Batch,
        /// The same instance's previous batch: if it failed, so does this
        /// one (its writes assume the earlier ones).
        after: Option<PendingWrite>,
        done: watch::Sender<Option<Result<(), StateError>>>,
    },
    /// Every index shard, as committed.
    Index {
        done: oneshot::Sender<Result<Vec<IndexShard>, StateError>>,
    },
}

impl Batch {
    pub fn put(&mut self, key: String, value: Vec<u8>) {
        self.ops.push(TransactionOp::Set(SetRequest {
            key,
            value: Bytes::from(value),
            consistency: Consistency::Strong,
            ..Default::default()
        }));
    }

    pub fn delete(&mut self, key: String) {
        self.ops.push(TransactionOp::Delete(DeleteRequest {
            key,
            consistency: Consistency::Strong,
            ..Default::default()
        }));
    }

    /// Records `id` in the index (or changes or removes its entry) in the
    /// same transaction as the rest of the batch.
    pub fn index(&mut self, id: &str, change: IndexChange) {
        self.index.push((id.to_owned(), change));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.index.is_empty()
    }
}

impl WorkflowStore {
    /// `app_id` and `namespace` scope the keys as Dapr scopes its workflow
    /// actors: `<app-id>||dapr.internal.<namespace>.<app-id>.workflow||`.
    pub fn new(store: Arc<dyn StateStore>, app_id: &str, namespace: &str) -> Self {
        Self {
            store,
            prefix: format!("{app_id}||dapr.internal.{namespace}.{app_id}.workflow||"),
            committer: Arc::new(OnceLock::new()),
            listed: Arc::default(),
            guard: Arc::default(),
        }
    }

    /// Turns on the etag fencing (several sidecars share the store).
    pub fn set_guarded(&self) {
        let _ = self.guard.set(Guard::default());
    }

    fn guarded(&self) -> Option<&Guard> {
        self.guard.get()
    }

    /// Keys whose writes are fenced: records and index shards (history
    /// chunks are only written in a transaction with their record).
    fn is_fenced(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .is_some_and(|k| k.ends_with("||metadata") || k.starts_with("index-"))
    }

    /// Whether the committed index lists `id`; `None` when its shard has
    /// not been read yet.
    pub fn is_listed(&self, id: &str) -> Option<bool> {
        if self.guarded().is_some() {
            // Other sidecars create instances too.
            return None;
        }
        let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        listed
            .loaded
            .contains(&Self::shard_of(id))
            .then(|| listed.ids.contains(id))
    }

    fn committer(&self) -> &mpsc::UnboundedSender<Job> {
        self.committer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let committer = Committer {
                store: self.store.clone(),
                keys: self.clone_keys(),
                shards: HashMap::new(),
                listed: self.listed.clone(),
            };
            tokio::spawn(committer.run(rx));
            tx
        })
    }

    /// A copy for the committer that shares the store but not the
    /// committer handle (the committer must not keep itself alive).
    fn clone_keys(&self) -> WorkflowStore {
        WorkflowStore {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            committer: Arc::new(OnceLock::new()),
            listed: self.listed.clone(),
            guard: self.guard.clone(),
        }
    }

    pub fn record_key(&self, id: &str) -> String {
        format!("{}{id}||metadata", self.prefix)
    }

    pub fn chunk_key(&self, id: &str, chunk: u32) -> String {
        format!("{}{id}||history-{chunk:06}", self.prefix)
    }

    pub fn shard_key(&self, shard: u32) -> String {
        format!("{}index-{shard:02}", self.prefix)
    }

    /// The index key an instance id is listed under (FNV-1a, stable across
    /// versions and platforms).
    pub fn shard_of(id: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in id.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h % SHARDS
    }

    async fn get_raw(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let req = GetRequest {
            key: key.to_owned(),
            consistency: Consistency::Strong,
            metadata: HashMap::new(),
        };
        let item = self.store.get(&req).await?;
        if let Some(g) = self.guarded()
            && self.is_fenced(key)
        {
            g.note(key, item.as_ref());
        }
        Ok(item.map(|item| item.value))
    }

    fn decode<M: Message + Default>(key: &str, raw: &[u8]) -> Result<M, StoreError> {
        M::decode(raw).map_err(|source| StoreError::Corrupt {
            key: key.to_owned(),
            source,
        })
    }

    pub async fn load_record(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let key = self.record_key(id);
        match self.get_raw(&key).await? {
            Some(raw) => Ok(Some(Self::decode(&key, &raw)?)),
            None => Ok(None),
        }
    }

    /// The whole history, chunk by chunk.
    pub async fn load_history(
        &self,
        id: &str,
        chunks: u32,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let reqs: Vec<GetRequest> = (1..=chunks)
            .map(|c| GetRequest {
                key: self.chunk_key(id, c),
                consistency: Consistency::Strong,
                metadata: HashMap::new(),
            })
            .collect();
        let mut events = Vec::new();
        for item in self.store.bulk_get(&reqs, 8).await {
            match item.result? {
                Some(v) => {
                    let chunk: HistoryChunk = Self::decode(&item.key, &v.value)?;
                    events.extend(chunk.events);
                }
                None => {
                    return Err(StoreError::State(StateError::Backend(format!(
                        "workflow history chunk '{}' is missing",
                        item.key
                    ))));
                }
            }
        }
        Ok(events)
    }

    pub async fn load_shard(&self, shard: u32) -> Result<IndexShard, StoreError> {
        let key = self.shard_key(shard);
        match self.get_raw(&key).await? {
            Some(raw) => Self::decode(&key, &raw),
            None => Ok(IndexShard::default()),
        }
    }

    pub fn put_record(&self, batch: &mut Batch, id: &str, record: &InstanceRecord) {
        batch.put(self.record_key(id), record.encode_to_vec());
    }

    pub fn put_chunk(&self, batch: &mut Batch, id: &str, chunk: u32, events: &[HistoryEvent]) {
        let chunk_msg = HistoryChunk {
            events: events.to_vec(),
        };
        batch.put(self.chunk_key(id, chunk), chunk_msg.encode_to_vec());
    }

    fn put_shard(&self, ops: &mut Vec<TransactionOp>, shard: u32, index: &IndexShard) {
        ops.push(TransactionOp::Set(SetRequest {
            key: self.shard_key(shard),
            value: Bytes::from(index.encode_to_vec()),
            consistency: Consistency::Strong,
            ..Default::default()
        }));
    }

    /// Applies the batch atomically; returns once it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.submit(batch, None)?.wait().await
    }

    /// Queues the batch for the committer and returns at once. Batches are
    /// committed in submission order, each no later than the ones after it,
    /// and a batch whose `after` failed fails too.
    pub fn submit(
        &self,
        batch: Batch,
        after: Option<&PendingWrite>,
    ) -> Result<PendingWrite, StoreError> {
        let (done, rx) = watch::channel(None);
        if batch.is_empty() {
            done.send_replace(Some(Ok(())));
            return Ok(PendingWrite(rx));
        }
        self.committer()
            .send(Job::Commit {
                batch,
                after: after.cloned(),
                done,
            })
            .map_err(|_| committer_gone())?;
        Ok(PendingWrite(rx))
    }

    /// Every index shard as committed so far.
    pub async fn index(&self) -> Result<Vec<IndexShard>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.committer()
            .send(Job::Index { done })
            .map_err(|_| committer_gone())?;
        rx.await.map_err(|_| committer_gone())?.map_err(Into::into)
    }
}

fn earlier_failed() -> StateError {
    StateError::Backend("an earlier write of this workflow instance failed".into())
}

fn committer_gone() -> StoreError {
    StoreError::State(StateError::Backend(
        "the workflow store's committer has stopped".into(),
    ))
}

/// The single writer: group-commits batches and owns the index shards.
struct Committer {
    store: Arc<dyn StateStore>,
    keys: WorkflowStore,
    /// Shards as committed (loaded on first use).
    shards: HashMap<u32, IndexShard>,
    listed: Arc<StdMutex<Listed>>,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = rx.recv().await {
            // Whatever queued up while the previous transaction was being
            // written goes into this one.
            let mut batches = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Commit { after, done, .. }
                        if after.as_ref().is_some_and(PendingWrite::failed) =>
                    {
                        done.send_replace(Some(Err(earlier_failed())));
                    }
                    Job::Commit { batch, after, done } => batches.push((batch, after, done)),
                    Job::Index { done } => {
                        if self.keys.guarded().is_some() {
                            // Other sidecars change the index too.
                            self.shards.clear();
                        }
                        let _ = done.send(self.all_shards().await);
                    }
                }
                if batches.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if batches.is_empty() {
                continue;
            }
            let refs: Vec<&Batch> = batches.iter().map(|(b, _, _)| b).collect();
            let result = self.apply(&refs).await;
            if result.is_err() && batches.len() > 1 {
                // One bad batch must not fail the others: retry one by one
                // (in order, so a failure also fails the batches after it).
                debug!(
                    batches = batches.len(),
                    "workflow group commit failed; committing its batches one by one"
                );
                for (batch, after, done) in batches {
                    let r = if after.as_ref().is_some_and(PendingWrite::failed) {
                        Err(earlier_failed())
                    } else {
                        self.apply(&[&batch]).await
                    };
                    done.send_replace(Some(r));
                }
            } else {
                for (_, _, done) in batches {
                    done.send_replace(Some(result.clone()));
                }
            }
        }
    }

    async fn shard(&mut self, shard: u32) -> Result<&mut IndexShard, StateError> {
        if !self.shards.contains_key(&shard) {
            let loaded = self.keys.load_shard(shard).await.map_err(|e| match e {
                StoreError::State(s) => s,
                other => StateError::Backend(other.to_string()),
            })?;
            {
                let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
                listed
                    .ids
                    .extend(loaded.entries.iter().map(|e| e.instance_id.clone()));
                listed.loaded.insert(shard);
            }
            self.shards.insert(shard, loaded);
        }
        self.shards
            .get_mut(&shard)
            .ok_or_else(|| StateError::Backend("workflow index shard vanished".into()))
    }

    async fn all_shards(&mut self) -> Result<Vec<IndexShard>, StateError> {
        let mut all = Vec::with_capacity(SHARDS as usize);
        for shard in 0..SHARDS {
            all.push(self.shard(shard).await?.clone());
        }
        Ok(all)
    }

    /// Writes the batches and their index changes in one transaction; the
    /// cached shards change only when it committed. Fenced: a shard another
    /// sidecar changed meanwhile is read again and the transaction retried.
    async fn apply(&mut self, batches: &[&Batch]) -> Result<(), StateError> {
        if self.keys.guarded().is_none() {
            return self.apply_once(batches).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(batches).await {
                Err(StateError::EtagMismatch) if attempt < 3 => {
                    let touched: HashSet<u32> = batches
                        .iter()
                        .flat_map(|b| b.index.iter())
                        .map(|(id, _)| WorkflowStore::shard_of(id))
                        .collect();
                    if touched.is_empty() {
                        return Err(StateError::EtagMismatch);
                    }
                    for s in touched {
                        self.shards.remove(&s);
                    }
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&mut self, batches: &[&Batch]) -> Result<(), StateError> {
        let mut ops: Vec<TransactionOp> = batches.iter().flat_map(|b| b.ops.clone()).collect();
        let mut touched: HashMap<u32, IndexShard> = HashMap::new();
        for (id, change) in batches.iter().flat_map(|b| b.index.iter()) {
            let shard = WorkflowStore::shard_of(id);
            let index = match touched.entry(shard) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.shard(shard).await?.clone())
                }
            };
            apply_change(index, id, *change);
        }
        for (shard, index) in &touched {
            self.keys.put_shard(&mut ops, *shard, index);
        }
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(g) = self.keys.guarded() {
            self.fence(g, &mut ops)?;
        }
        self.store.transact(&ops).await?;
        if let Some(g) = self.keys.guarded() {
            self.read_back(g, &ops).await;
        }
        {
            let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
            for (id, change) in batches.iter().flat_map(|b| b.index.iter()) {
                if *change == IndexChange::Remove {
                    listed.ids.remove(id);
                } else {
                    listed.ids.insert(id.clone());
                }
            }
        }
        self.shards.extend(touched);
        Ok(())
    }
}

impl Committer {
    /// Puts the known etags on the first write of each fenced key.
    fn fence(&self, g: &Guard, ops: &mut [TransactionOp]) -> Result<(), StateError> {
        let tags = g.tags();
        let mut seen = HashSet::new();
        for op in ops.iter_mut() {
            let key = match op {
                TransactionOp::Set(r) => r.key.clone(),
                TransactionOp::Delete(r) => r.key.clone(),
            };
            if !self.keys.is_fenced(&key) || !seen.insert(key.clone()) {
                continue;
            }
            match (tags.get(&key), op) {
                (None, _) => {}
                (Some(Tag::Stale), _) => return Err(StateError::EtagMismatch),
                (Some(Tag::Known(e)), TransactionOp::Set(r)) => r.etag = Some(e.clone()),
                (Some(Tag::Known(e)), TransactionOp::Delete(r)) => r.etag = Some(e.clone()),
                (Some(Tag::Absent), TransactionOp::Set(r)) => {
                    r.concurrency = dapr_components::state::Concurrency::FirstWrite;
                }
                (Some(Tag::Absent), TransactionOp::Delete(_)) => {}
            }
        }
        Ok(())
    }

    /// Adopts the etags of what was just written (see `Guard`).
    async fn read_back(&self, g: &Guard, ops: &[TransactionOp]) {
        let mut last: HashMap<String, Option<Bytes>> = HashMap::new();
        for op in ops {
            match op {
                TransactionOp::Set(r) if self.keys.is_fenced(&r.key) => {
                    last.insert(r.key.clone(), Some(r.value.clone()));
                }
                TransactionOp::Delete(r) if self.keys.is_fenced(&r.key) => {
                    last.insert(r.key.clone(), None);
                }
                _ => {}
            }
        }
        let reqs: Vec<GetRequest> = last
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| GetRequest {
                key: k.clone(),
                consistency: Consistency::Strong,
                metadata: HashMap::new(),
            })
            .collect();
        let items = self.store.bulk_get(&reqs, 8).await;
        let mut tags = g.tags();
        for (key, value) in &last {
            if value.is_none() {
                tags.insert(key.clone(), Tag::Absent);
            }
        }
        for item in items {
            let written = last.get(&item.key).cloned().flatten();
            let tag = match item.result {
                Ok(Some(v)) if Some(&v.value) == written.as_ref() => {
                    v.etag.map_or(Tag::Stale, Tag::Known)
                }
                _ => Tag::Stale,
            };
            tags.insert(item.key, tag);
        }
    }
}

fn apply_change(index: &mut IndexShard, id: &str, change: IndexChange) {
    let terminal = match change {
        IndexChange::Active => false,
        IndexChange::Terminal => true,
        IndexChange::Remove => {
            index.entries.retain(|e| e.instance_id != id);
            return;
        }
    };
    match index.entries.iter_mut().find(|e| e.instance_id == id) {
        Some(e) => e.terminal = terminal,
        None => index.entries.push(IndexEntry {
            instance_id: id.to_owned(),
            terminal,
        }),
    }
}

/// Ids of the instances listed in `shards`, deduplicated, in index order.
pub fn listed_ids(shards: &[IndexShard]) -> Vec<String> {
    let mut seen = HashSet::new();
    shards
        .iter()
        .flat_map(|s| s.entries.iter())
        .filter(|e| seen.insert(e.instance_id.as_str()))
        .map(|e| e.instance_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use dapr_components::state::memory::InMemoryStore;

    use super::*;

    fn created(store: &WorkflowStore, id: &str) -> Batch {
        let mut b = Batch::default();
        store.put_record(&mut b, id, &InstanceRecord::default());
        b.index(id, IndexChange::Active);
        b
    }

    #[tokio::test]
    async fn concurrent_batches_all_land_and_are_listed() {
        let store = WorkflowStore::new(Arc::new(InMemoryStore::new()), "app", "ns");
        let pending: Vec<PendingWrite> = (0..50)
            .map(|i| store.submit(created(&store, &format!("i{i}")), None))
            .collect::<Result<_, _>>()
            .unwrap();
        for p in pending {
            p.wait().await.unwrap();
        }
        assert_eq!(listed_ids(&store.index().await.unwrap()).len(), 50);
        assert_eq!(store.is_listed("i7"), Some(true));
        assert_eq!(store.is_listed("nope"), Some(false));
        assert!(store.load_record("i7").await.unwrap().is_some());
        let mut gone = Batch::default();
        gone.delete(store.record_key("i7"));
        gone.index("i7", IndexChange::Remove);
        store.commit(gone).await.unwrap();
        assert_eq!(store.is_listed("i7"), Some(false));
        assert_eq!(listed_ids(&store.index().await.unwrap()).len(), 49);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_the_batches_chained_to_it_only() {
        let store = WorkflowStore::new(Arc::new(InMemoryStore::new()), "app", "ns");
        store.index().await.unwrap();
        // An etag on a missing key cannot match.
        let mut bad = Batch::default();
        bad.ops.push(TransactionOp::Set(SetRequest {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            etag: Some("1".into()),
            ..Default::default()
        }));
        let a = store.submit(bad, None).unwrap();
        let b = store.submit(created(&store, "after"), Some(&a)).unwrap();
        let c = store.submit(created(&store, "other"), None).unwrap();
        assert!(a.wait().await.is_err());
        assert!(b.clone().wait().await.is_err());
        assert!(b.is_settled());
        c.wait().await.unwrap();
        assert!(store.load_record("after").await.unwrap().is_none());
        assert_eq!(store.is_listed("after"), Some(false));
        assert!(store.load_record("other").await.unwrap().is_some());
        assert_eq!(store.is_listed("other"), Some(true));
    }
}

#[cfg(test)]
mod fencing_tests {
    use dapr_components::state::memory::InMemoryStore;

    use super::*;

    fn record(name: &str) -> InstanceRecord {
        InstanceRecord {
            name: name.into(),
            ..Default::default()
        }
    }

    fn write(store: &WorkflowStore, id: &str, name: &str) -> Batch {
        let mut b = Batch::default();
        store.put_record(&mut b, id, &record(name));
        b
    }

    /// Two sidecars on one store: once the second has read and written an
    /// instance, the first one's write (on its older etag) fails, and its
    /// next write succeeds only after it read the record again.
    #[tokio::test]
    async fn a_stale_owners_write_fails() {
        let shared: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let a = WorkflowStore::new(shared.clone(), "app", "ns");
        let b = WorkflowStore::new(shared, "app", "ns");
        a.set_guarded();
        b.set_guarded();
        // A creates the instance (first write: it must not exist).
        assert!(a.load_record("x").await.unwrap().is_none());
        let mut create = write(&a, "x", "v1");
        create.index("x", IndexChange::Active);
        a.commit(create).await.unwrap();
        a.commit(write(&a, "x", "v2")).await.unwrap();
        // B takes over: reads, writes.
        assert_eq!(b.load_record("x").await.unwrap().unwrap().name, "v2");
        b.commit(write(&b, "x", "v3")).await.unwrap();
        // A has not noticed: its write is refused, the store keeps B's.
        assert!(matches!(
            a.commit(write(&a, "x", "stale")).await,
            Err(StoreError::State(StateError::EtagMismatch))
        ));
        assert_eq!(b.load_record("x").await.unwrap().unwrap().name, "v3");
        // B's index update after A's (on a shard A wrote) is retried on the
        // fresh shard, so both instances stay listed.
        let mut other = write(&b, "y", "w1");
        other.index("y", IndexChange::Active);
        assert!(b.load_record("y").await.unwrap().is_none());
        b.commit(other).await.unwrap();
        let ids = listed_ids(&a.index().await.unwrap());
        assert!(
            ids.contains(&"x".to_owned()) && ids.contains(&"y".to_owned()),
            "{ids:?}"
        );
        // After reading again, A may write.
        assert_eq!(a.load_record("x").await.unwrap().unwrap().name, "v3");
        a.commit(write(&a, "x", "v4")).await.unwrap();
        assert_eq!(b.load_record("x").await.unwrap().unwrap().name, "v4");
    }

    /// An instance both sidecars believe new is created by only one.
    #[tokio::test]
    async fn only_one_sidecar_creates_an_instance() {
        let shared: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let a = WorkflowStore::new(shared.clone(), "app", "ns");
        let b = WorkflowStore::new(shared, "app", "ns");
        a.set_guarded();
        b.set_guarded();
        assert!(a.load_record("z").await.unwrap().is_none());
        assert!(b.load_record("z").await.unwrap().is_none());
        a.commit(write(&a, "z", "from-a")).await.unwrap();
        assert!(b.commit(write(&b, "z", "from-b")).await.is_err());
        assert_eq!(a.load_record("z").await.unwrap().unwrap().name, "from-a");
    }
}
