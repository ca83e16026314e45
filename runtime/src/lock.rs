//! The distributed lock API (`v1.0-alpha1`): validates requests, prefixes the
//! resource id as Dapr does (`lock||<appid>||<id>` by default, `keyPrefix`
//! metadata `appid`/`name`/`none`/custom) and calls the lock store.

use dapr_components::lock::{LockError, UnlockStatus};
use http::StatusCode;
use tonic::Code;

use crate::{error::MappedError, sidecar::Sidecar};

#[derive(Debug, thiserror::Error)]
pub enum LockApiError {
    #[error("lock store is not configured")]
    NotConfigured,
    #[error("lock store {0} not found")]
    StoreNotFound(String),
    #[error("ResourceId is empty in lock store {0}")]
    ResourceIdEmpty(String),
    #[error("LockOwner is empty in lock store {0}")]
    OwnerEmpty(String),
    #[error("ExpiryInSeconds is not positive in lock store {0}")]
    ExpiryNotPositive(String),
    #[error("input key/keyPrefix '{0}' can't contain '||'")]
    IllegalKey(String),
    #[error("failed to try acquiring lock: {0}")]
    TryLock(LockError),
    #[error("failed to release lock: {0}")]
    Unlock(LockError),
}

impl From<LockApiError> for MappedError {
    fn from(e: LockApiError) -> Self {
        use LockApiError::*;
        let (code, http, grpc) = match &e {
            NotConfigured => (
                "ERR_LOCK_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
            ),
            StoreNotFound(_) => (
                "ERR_LOCK_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            ResourceIdEmpty(_) | OwnerEmpty(_) | ExpiryNotPositive(_) | IllegalKey(_) => (
                "ERR_MALFORMED_REQUEST",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            TryLock(_) => (
                "ERR_TRY_LOCK",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            Unlock(_) => (
                "ERR_UNLOCK",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        };
        MappedError::new(code, http, grpc, e.to_string())
    }
}

fn lookup(
    sidecar: &Sidecar,
    store: &str,
    resource_id: &str,
) -> Result<(std::sync::Arc<dyn dapr_components::lock::LockStore>, String), LockApiError> {
    if !sidecar.registry.has_lock_stores() {
        return Err(LockApiError::NotConfigured);
    }
    let (lock, prefix) = sidecar
        .registry
        .lock_store(store)
        .ok_or_else(|| LockApiError::StoreNotFound(store.to_owned()))?;
    if resource_id.is_empty() {
        return Err(LockApiError::ResourceIdEmpty(store.to_owned()));
    }
    if resource_id.contains("||") {
        return Err(LockApiError::IllegalKey(resource_id.to_owned()));
    }
    let key = match prefix.to_ascii_lowercase().as_str() {
        "" | "appid" if sidecar.app_id.is_empty() => format!("lock||{resource_id}"),
        "" | "appid" => format!("lock||{}||{resource_id}", sidecar.app_id),
        "none" => format!("lock||{resource_id}"),
        "name" => format!("lock||{store}||{resource_id}"),
        _ => format!("lock||{prefix}||{resource_id}"),
    };
    Ok((lock, key))
}

/// True when `owner` now holds the lock.
pub async fn try_lock(
    sidecar: &Sidecar,
    store: &str,
    resource_id: &str,
    owner: &str,
    expiry_secs: i32,
) -> Result<bool, LockApiError> {
    let (lock, key) = lookup(sidecar, store, resource_id)?;
    if owner.is_empty() {
        return Err(LockApiError::OwnerEmpty(store.to_owned()));
    }
    let expiry = u32::try_from(expiry_secs)
        .ok()
        .filter(|e| *e > 0)
        .ok_or_else(|| LockApiError::ExpiryNotPositive(store.to_owned()))?;
    lock.try_lock(&key, owner, expiry)
        .await
        .map_err(LockApiError::TryLock)
}

pub async fn unlock(
    sidecar: &Sidecar,
    store: &str,
    resource_id: &str,
    owner: &str,
) -> Result<UnlockStatus, LockApiError> {
    let (lock, key) = lookup(sidecar, store, resource_id)?;
    if owner.is_empty() {
        return Err(LockApiError::OwnerEmpty(store.to_owned()));
    }
    lock.unlock(&key, owner).await.map_err(LockApiError::Unlock)
}
