//! The secrets building block: the `SecretStore` trait and the local stores.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;

use crate::{ComponentMetadata, MetadataError};

pub mod kubernetes;
pub mod local_env;
pub mod local_file;

/// A secret: one or more key/value pairs.
pub type Secret = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret store error: {0}")]
    Backend(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretInitError {
    #[error("unknown secret store type '{0}'")]
    UnknownType(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Load(String),
}

#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    async fn get(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Secret, SecretError>;
    async fn bulk_get(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, Secret>, SecretError>;
}

/// Builds a secret store from its component `type` and metadata.
pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn SecretStore>, SecretInitError> {
    Ok(match type_ {
        "secretstores.local.file" => Arc::new(local_file::LocalFileStore::open(metadata)?),
        "secretstores.local.env" => Arc::new(local_env::LocalEnvStore::new(metadata)),
        "secretstores.kubernetes" => Arc::new(kubernetes::KubernetesStore::open(metadata).await?),
        other => return Err(SecretInitError::UnknownType(other.to_owned())),
    })
}
