//! `state.in-memory`: a process-local store with etags, TTLs, transactions and
//! queries. Data lives as long as the sidecar.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Concurrency, DeleteRequest, Features, GetRequest, SetRequest, StateError, StateItem,
    StateStore, TTL_EXPIRE_TIME_KEY, TransactionOp, query,
};

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    etag: u64,
    content_type: Option<String>,
    expires: Option<(Instant, SystemTime)>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(at, _)| at > now)
    }

    fn to_item(&self) -> StateItem {
        let mut metadata = HashMap::new();
        if let Some((_, wall)) = self.expires {
            metadata.insert(
                TTL_EXPIRE_TIME_KEY.to_owned(),
                chrono::DateTime::<chrono::Utc>::from(wall).to_rfc3339(),
            );
        }
        StateItem {
            value: self.value.clone(),
            etag: Some(self.etag.to_string()),
            metadata,
            content_type: self.content_type.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct InMemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    next_etag: AtomicU64,
    writes_since_sweep: AtomicU64,
}

/// How many writes between sweeps of expired entries.
const SWEEP_EVERY: u64 = 1024;

impl InMemoryStore {
    pub fn new() -> Self {
        Self {
            next_etag: AtomicU64::new(1),
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written
        // (each mutation is a single insert/remove), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parse_etag(etag: &str) -> Result<u64, StateError> {
        etag.parse()
            .map_err(|_| StateError::EtagInvalid(etag.to_owned()))
    }

    /// Applies one write to `map` after the etag/concurrency checks.
    fn apply_set(
        &self,
        map: &mut HashMap<String, Entry>,
        req: &SetRequest,
        now: Instant,
    ) -> Result<(), StateError> {
        let existing = map.get(&req.key).filter(|e| e.live(now));
        match (&req.etag, existing) {
            (Some(etag), Some(e)) if Self::parse_etag(etag)? == e.etag => {}
            (Some(etag), _) => {
                Self::parse_etag(etag)?;
                return Err(StateError::EtagMismatch);
            }
            (None, Some(_)) if req.concurrency == Concurrency::FirstWrite => {
                return Err(StateError::EtagMismatch);
            }
            (None, _) => {}
        }
        let expires = req.ttl.map(|ttl| (now + ttl, SystemTime::now() + ttl));
        map.insert(
            req.key.clone(),
            Entry {
                value: req.value.clone(),
                etag: self.next_etag.fetch_add(1, Ordering::Relaxed),
                content_type: req.content_type.clone(),
                expires,
            },
        );
        Ok(())
    }

    fn apply_delete(
        map: &mut HashMap<String, Entry>,
        req: &DeleteRequest,
        now: Instant,
    ) -> Result<(), StateError> {
        if let Some(etag) = &req.etag {
            let want = Self::parse_etag(etag)?;
            match map.get(&req.key).filter(|e| e.live(now)) {
                Some(e) if e.etag == want => {}
                _ => return Err(StateError::EtagMismatch),
            }
        }
        map.remove(&req.key);
        Ok(())
    }

    fn maybe_sweep(&self, map: &mut HashMap<String, Entry>, now: Instant) {
        if self
            .writes_since_sweep
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            map.retain(|_, e| e.live(now));
        }
    }
}

#[async_trait]
impl StateStore for InMemoryStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
            query: true,
        }
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .get(&req.key)
            .filter(|e| e.live(now))
            .map(Entry::to_item))
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let now = Instant::now();
        let mut map = self.lock();
        self.maybe_sweep(&mut map, now);
        self.apply_set(&mut map, req, now)
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        Self::apply_delete(&mut self.lock(), req, Instant::now())
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        let now = Instant::now();
        let mut map = self.lock();
        // Stage the touched keys, apply in order, and commit only if all succeed.
        let mut staged: HashMap<String, Entry> = ops
            .iter()
            .filter_map(|op| map.get(op.key()).map(|e| (op.key().to_owned(), e.clone())))
            .collect();
        for op in ops {
            match op {
                TransactionOp::Set(r) => self.apply_set(&mut staged, r, now)?,
                TransactionOp::Delete(r) => Self::apply_delete(&mut staged, r, now)?,
            }
        }
        // Commit each touched key once: its final staged state, or removal.
        let touched: std::collections::HashSet<&str> = ops.iter().map(TransactionOp::key).collect();
        for key in touched {
            match staged.remove(key) {
                Some(e) => {
                    map.insert(key.to_owned(), e);
                }
                None => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn query(
        &self,
        key_prefix: &str,
        q: &query::Query,
    ) -> Result<query::QueryResponse, StateError> {
        let now = Instant::now();
        let items: Vec<(String, StateItem)> = self
            .lock()
            .iter()
            .filter(|(k, e)| k.starts_with(key_prefix) && e.live(now))
            .map(|(k, e)| (k[key_prefix.len()..].to_owned(), e.to_item()))
            .collect();
        q.run(items)
    }
}
