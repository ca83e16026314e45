//! The state building block: the `StateStore` trait every store implements,
//! its request/response types and its error type.
//!
//! Keys arriving here are already the full store keys (`<appid>||<key>`); the
//! runtime does the prefixing so every store sees Dapr's key scheme.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ComponentMetadata, MetadataError};

pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod query;
pub mod redis;
pub mod sqlite;

/// Request metadata key carrying a TTL in seconds.
pub const TTL_METADATA_KEY: &str = "ttlInSeconds";
/// Response metadata key carrying the expiry time (RFC 3339) of an item with a TTL.
pub const TTL_EXPIRE_TIME_KEY: &str = "ttlExpireTime";

/// Concurrency mode of a write (Dapr `options.concurrency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// Without an etag: only succeeds if the key does not exist yet.
    FirstWrite,
    /// Without an etag: unconditional write.
    #[default]
    LastWrite,
}

/// Consistency hint (Dapr `options.consistency`); stores may ignore it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Eventual,
    Strong,
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateItem {
    pub value: Bytes,
    pub etag: Option<String>,
    /// Response metadata, e.g. `ttlExpireTime`.
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    pub key: String,
    pub consistency: Consistency,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
    /// Parsed from `metadata.ttlInSeconds` by the runtime; `None` = no expiry.
    pub ttl: Option<Duration>,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    pub key: String,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum TransactionOp {
    Set(SetRequest),
    Delete(DeleteRequest),
}

impl TransactionOp {
    pub fn key(&self) -> &str {
        match self {
            TransactionOp::Set(r) => &r.key,
            TransactionOp::Delete(r) => &r.key,
        }
    }
}

/// One result of a bulk get, in request order.
#[derive(Debug, Clone)]
pub struct BulkGetItem {
    pub key: String,
    pub result: Result<Option<StateItem>, StateError>,
}

/// What a store can do, reported in the metadata API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub etag: bool,
    pub transactional: bool,
    pub ttl: bool,
    pub query: bool,
}

impl Features {
    /// Dapr's capability names, as the metadata API lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.etag {
            out.push("ETAG");
        }
        if self.transactional {
            out.push("TRANSACTIONAL");
        }
        if self.query {
            out.push("QUERY_API");
        }
        if self.ttl {
            out.push("TTL");
        }
        out
    }
}

/// Errors a store reports. The runtime maps them once to Dapr's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The etag given does not match the stored one (or the key is missing, or
    /// first-write found an existing key). HTTP 409.
    #[error("possible etag mismatch: the item was changed or removed since the etag was read")]
    EtagMismatch,
    /// The etag is not in this store's format. HTTP 400.
    #[error("invalid etag '{0}'")]
    EtagInvalid(String),
    /// The operation is not supported by this store.
    #[error("{0} is not supported by this state store")]
    NotSupported(&'static str),
    /// More operations in one transaction than the store accepts.
    #[error("too many operations in one transaction: {count} (the store accepts at most {max})")]
    TooManyOperations { count: usize, max: usize },
    /// The request is invalid for this store (bad TTL, bad query, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The backend failed or could not be reached.
    #[error("state store error: {0}")]
    Backend(String),
}

impl StateError {
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StateError::Backend(e.to_string())
    }
}

/// Errors building a store from its component definition.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("unknown state store type '{0}'")]
    UnknownType(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Connect(String),
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    fn features(&self) -> Features;

    /// `None` when the key does not exist (or has expired).
    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError>;

    /// Reads many keys with at most `parallelism` requests in flight.
    async fn bulk_get(&self, reqs: &[GetRequest], parallelism: usize) -> Vec<BulkGetItem> {
        use futures::StreamExt;
        futures::stream::iter(0..reqs.len())
            .map(|i| async move {
                BulkGetItem {
                    key: reqs[i].key.clone(),
                    result: self.get(&reqs[i]).await,
                }
            })
            .buffered(parallelism.max(1))
            .collect()
            .await
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError>;

    /// Deleting a missing key without an etag succeeds.
    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError>;

    /// Applies every operation or none. Stores without transactions return
    /// `NotSupported`.
    async fn transact(&self, _ops: &[TransactionOp]) -> Result<(), StateError> {
        Err(StateError::NotSupported("transactions"))
    }

    /// Writes several items. Transactional stores apply them atomically.
    async fn bulk_set(&self, reqs: &[SetRequest]) -> Result<(), StateError> {
        if self.features().transactional {
            let ops: Vec<_> = reqs.iter().cloned().map(TransactionOp::Set).collect();
            return self.transact(&ops).await;
        }
        for r in reqs {
            self.set(r).await?;
        }
        Ok(())
    }

    /// Deletes several items. Transactional stores apply them atomically.
    async fn bulk_delete(&self, reqs: &[DeleteRequest]) -> Result<(), StateError> {
        if self.features().transactional {
            let ops: Vec<_> = reqs.iter().cloned().map(TransactionOp::Delete).collect();
            return self.transact(&ops).await;
        }
        for r in reqs {
            self.delete(r).await?;
        }
        Ok(())
    }

    /// Runs a query over the items whose keys start with `key_prefix`.
    async fn query(
        &self,
        _key_prefix: &str,
        _query: &query::Query,
    ) -> Result<query::QueryResponse, StateError> {
        Err(StateError::NotSupported("querying"))
    }

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Builds a state store from its component `type` (e.g. `state.redis`) and
/// resolved metadata.
pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn StateStore>, InitError> {
    Ok(match type_ {
        "state.in-memory" => Arc::new(memory::InMemoryStore::new()),
        "state.sqlite" | "state.sqlite3" => Arc::new(sqlite::SqliteStore::open(metadata).await?),
        "state.redis" => Arc::new(redis::RedisStore::connect(metadata).await?),
        "state.postgresql" | "state.postgres" => {
            Arc::new(postgres::PostgresStore::connect(metadata).await?)
        }
        "state.mysql" => Arc::new(mysql::MySqlStore::connect(metadata).await?),
        other => return Err(InitError::UnknownType(other.to_owned())),
    })
}

/// The state store types this build can create.
pub const SUPPORTED_TYPES: &[&str] = &[
    "state.in-memory",
    "state.sqlite",
    "state.redis",
    "state.postgresql",
    "state.mysql",
];
