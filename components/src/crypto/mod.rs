//! The cryptography building block: components that hold keys
//! (`crypto.dapr.localstorage`, `crypto.dapr.jwks`), the subtle operations
//! over those keys, and Dapr's `dapr.io/enc/v1` envelope format.
//!
//! Like contrib's local crypto components, a provider only retrieves keys;
//! every operation runs here in-process on RustCrypto primitives.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ComponentMetadata, MetadataError};

pub mod envelope;
pub mod jwks;
pub mod keys;
pub mod localstorage;
pub mod subtle;

pub use keys::{Key, KeyFormat, KeyMaterial};

pub const SUPPORTED_TYPES: &[&str] = &["crypto.dapr.localstorage", "crypto.dapr.jwks"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("key not found")]
    KeyNotFound,
    #[error("invalid key path: cannot contain '..'")]
    InvalidKeyPath,
    #[error("failed to load key '{name}': {reason}")]
    Load { name: String, reason: String },
    #[error("failed to parse key: {0}")]
    Parse(String),
    #[error("key type mismatch")]
    KeyTypeMismatch,
    #[error("invalid nonce")]
    InvalidNonce,
    #[error("unsupported algorithm '{0}'")]
    UnsupportedAlgorithm(String),
    #[error("{0}")]
    Operation(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoInitError {
    #[error("unknown crypto component type '{0}'")]
    UnknownType(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Invalid(String),
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    use rand_core::RngCore;
    let mut b = [0u8; N];
    rand_core::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| CryptoError::Operation(format!("random source failed: {e}")))?;
    Ok(b)
}

/// A key vault: returns keys by name.
#[async_trait]
pub trait CryptoProvider: Send + Sync + 'static {
    async fn retrieve_key(&self, name: &str) -> Result<Arc<Key>, CryptoError>;
}

pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn CryptoProvider>, CryptoInitError> {
    Ok(match type_ {
        "crypto.dapr.localstorage" => Arc::new(localstorage::LocalStorage::new(metadata)?),
        "crypto.dapr.jwks" => jwks::create(metadata).await?,
        other => return Err(CryptoInitError::UnknownType(other.to_owned())),
    })
}
