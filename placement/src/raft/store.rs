//! Raft log storage on redb, and the membership state machine.
//!
//! One redb database holds the log (`raft_log`: index -> JSON entry) and the
//! metadata (`raft_meta`: vote, committed id, last purged id, the current
//! snapshot). With `--raft-logstore-path` it is the file `raft.redb` in that
//! directory and everything survives a restart: on start the state machine is
//! restored from the stored snapshot and openraft re-applies the log after it.
//! Without the flag the same code runs on redb's in-memory backend.

use std::{
    fmt::Debug,
    io::Cursor,
    ops::RangeBounds,
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
    storage::{LogFlushed, RaftLogStorage, RaftStateMachine},
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{NodeId, PeerNode, TypeConfig};
use crate::membership::{ApplyResult, Membership};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_SNAPSHOT: &str = "snapshot";

/// File name of the database inside `--raft-logstore-path`.
pub const DB_FILE: &str = "raft.redb";

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    /// A stored value does not decode.
    #[error("codec: {0}")]
    Codec(#[from] serde_json::Error),
    /// Creating the log directory failed.
    #[error("log directory: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        Self::Redb(e.into())
    }
}

fn read_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}
fn write_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// Opens (or creates) the database: a file under `dir`, or in memory.
pub fn open_db(dir: Option<&Path>) -> Result<Arc<Database>, StoreError> {
    let mut builder = Database::builder();
    // The log is small (membership batches); keep redb's page cache small.
    builder.set_cache_size(2 << 20);
    let db = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            builder.create(dir.join(DB_FILE))?
        }
        None => builder.create_with_backend(redb::backends::InMemoryBackend::new())?,
    };
    let txn = db.begin_write()?;
    txn.open_table(LOGS)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

fn meta_get<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn meta_put<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(META)?;
        table.insert(key, bytes.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Runs a blocking storage closure off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await?
}

/// The Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// A log store on `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let mut out = Vec::new();
        for item in table.range(range)? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        match table.last()? {
            Some((_, v)) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> =
            meta_get(&self.db, KEY_PURGED).map_err(read_err)?;
        let last = self.last_entry().map_err(read_err)?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || meta_put(&db, KEY_VOTE, &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        meta_get(&self.db, KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || meta_put(&db, KEY_COMMITTED, &committed))
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(meta_get::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|b| (e.log_id.index, b)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| write_err(e.into()))?;
        let db = self.db.clone();
        let res = blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOGS)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg)));
                Err(StorageIOError::write_logs(AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOGS)?;
                table.retain_in(log_id.index.., |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = serde_json::to_vec(&Some(log_id))?;
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(KEY_PURGED, bytes.as_slice())?;
                let mut table = txn.open_table(LOGS)?;
                table.retain_in(..=log_id.index, |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }
}

/// What the state machine holds.
#[derive(Debug, Default)]
pub struct SmData {
    /// Last applied log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last applied Raft membership (of placement nodes).
    pub last_membership: StoredMembership<NodeId, PeerNode>,
    /// The daprd membership.
    pub membership: Membership,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, PeerNode>,
    data: Vec<u8>,
}

/// The state machine: shared with the leader loop and the metadata endpoint
/// for reads.
#[derive(Clone)]
pub struct StateMachine {
    data: Arc<RwLock<SmData>>,
    db: Arc<Database>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachine {
    /// A state machine on `db`, restored from the stored snapshot if any.
    pub fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let mut data = SmData::default();
        let stored: Option<StoredSnapshot> = meta_get(&db, KEY_SNAPSHOT)?;
        if let Some(s) = &stored {
            data.membership = serde_json::from_slice(&s.data)?;
            data.last_applied = s.meta.last_log_id;
            data.last_membership = s.meta.last_membership.clone();
        }
        Ok(Self {
            data: Arc::new(RwLock::new(data)),
            db,
            current: Arc::new(Mutex::new(stored)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Read access to the state.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    fn store_snapshot(&self, snap: StoredSnapshot) -> Result<(), StoreError> {
        meta_put(&self.db, KEY_SNAPSHOT, &snap)?;
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(snap);
        }
        Ok(())
    }
}

fn poisoned() -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::error("state machine lock poisoned")).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_applied, last_membership) = {
            let d = self.data.read().map_err(|_| poisoned())?;
            let bytes = serde_json::to_vec(&d.membership)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            (bytes, d.last_applied, d.last_membership.clone())
        };
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let this = self.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        blocking(move || this.store_snapshot(stored))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>), StorageError<NodeId>>
    {
        let d = self.data.read().map_err(|_| poisoned())?;
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.write().map_err(|_| poisoned())?;
        let mut out = Vec::new();
        for entry in entries {
            d.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(ApplyResult {
                    generation: d.membership.table_generation,
                    changed_namespaces: Vec::new(),
                }),
                EntryPayload::Normal(cmd) => {
                    let r = d.membership.apply(&cmd);
                    out.push(r);
                }
                EntryPayload::Membership(m) => {
                    d.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(ApplyResult {
                        generation: d.membership.table_generation,
                        changed_namespaces: Vec::new(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "installing raft snapshot");
        let membership: Membership = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        {
            let mut d = self.data.write().map_err(|_| poisoned())?;
            d.membership = membership;
            d.last_applied = meta.last_log_id;
            d.last_membership = meta.last_membership.clone();
        }
        let this = self.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        blocking(move || this.store_snapshot(stored))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into()
            })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let cur = self.current.lock().map_err(|_| poisoned())?;
        Ok(cur.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, testing::log_id};

    use super::*;
    use crate::membership::{Change, Command, HostMember};

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(1, 0, index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    #[tokio::test]
    async fn log_survives_reopen_and_truncate_purge_work() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        {
            let db = open_db(Some(dir.path()))?;
            let mut log = LogStore::new(db.clone());
            let batch: Vec<_> = (1..=5).map(|i| entry(i, Command::default())).collect();
            let encoded: Vec<(u64, Vec<u8>)> = batch
                .iter()
                .map(|e| Ok::<_, serde_json::Error>((e.log_id.index, serde_json::to_vec(e)?)))
                .collect::<Result<_, _>>()?;
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(LOGS)?;
                for (i, b) in &encoded {
                    t.insert(*i, b.as_slice())?;
                }
            }
            txn.commit()?;
            log.save_vote(&Vote::new(3, 7)).await?;
            log.truncate(log_id(1, 0, 5)).await?;
            log.purge(log_id(1, 0, 1)).await?;
        }
        let db = open_db(Some(dir.path()))?;
        let mut log = LogStore::new(db);
        assert_eq!(log.read_vote().await?, Some(Vote::new(3, 7)));
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
        let entries = log.try_get_log_entries(2..).await?;
        assert_eq!(
            entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let _ = CommittedLeaderId::<NodeId>::new(1, 0);
        Ok(())
    }

    #[tokio::test]
    async fn state_machine_snapshot_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let db = open_db(None)?;
        let mut sm = StateMachine::open(db.clone())?;
        let member = HostMember {
            name: "h:1".into(),
            namespace: "ns".into(),
            app_id: "a".into(),
            entities: vec!["T".into()],
            port: 1,
            api_level: 20,
            updated_at: 5,
        };
        let r = sm
            .apply(vec![entry(
                1,
                Command {
                    changes: vec![Change::Upsert(member.clone())],
                },
            )])
            .await?;
        assert_eq!(r[0].changed_namespaces, vec!["ns".to_string()]);
        let snap = sm.build_snapshot().await?;
        // A fresh state machine on the same database restores the snapshot.
        let restored = StateMachine::open(db)?;
        let d = restored.data.read().map_err(|_| "poisoned")?;
        assert_eq!(d.membership.get("ns", "h:1"), Some(&member));
        assert_eq!(d.last_applied, snap.meta.last_log_id);
        Ok(())
    }
}
