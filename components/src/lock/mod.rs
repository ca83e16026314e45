//! The distributed lock building block: named locks with an owner and an
//! expiry.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ComponentMetadata, MetadataError};

pub mod memory;
pub mod redis;

/// Dapr's `UnlockResponse.Status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockStatus {
    Success = 0,
    LockDoesNotExist = 1,
    LockBelongsToOthers = 2,
    InternalError = 3,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Backend(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LockInitError {
    #[error("unknown lock store type '{0}'")]
    UnknownType(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Connect(String),
}

pub const SUPPORTED_TYPES: &[&str] = &["lock.redis", "lock.in-memory"];

#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes `key` for `owner` for `expiry_secs` (> 0) unless someone holds
    /// it; true when taken.
    async fn try_lock(&self, key: &str, owner: &str, expiry_secs: u32) -> Result<bool, LockError>;
    /// Releases `key` if `owner` holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<UnlockStatus, LockError>;
}

pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn LockStore>, LockInitError> {
    Ok(match type_ {
        "lock.redis" => Arc::new(redis::RedisLock::connect(metadata).await?),
        "lock.in-memory" => Arc::new(memory::MemoryLock::default()),
        other => return Err(LockInitError::UnknownType(other.to_owned())),
    })
}
