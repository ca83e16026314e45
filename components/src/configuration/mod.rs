//! The configuration building block: read configuration items and watch them
//! change.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{ComponentMetadata, MetadataError};

pub mod postgres;
pub mod redis;

/// One configuration item, as Dapr's API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConfigurationItem {
    pub value: String,
    pub version: String,
    pub metadata: HashMap<String, String>,
}

pub type Items = HashMap<String, ConfigurationItem>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{0}")]
    Backend(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationInitError {
    #[error("unknown configuration store type '{0}'")]
    UnknownType(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Connect(String),
}

pub const SUPPORTED_TYPES: &[&str] = &["configuration.redis", "configuration.postgresql"];

#[async_trait]
pub trait ConfigurationStore: Send + Sync + 'static {
    /// The items named by `keys`; every item when `keys` is empty. Missing
    /// keys are left out.
    async fn get(
        &self,
        keys: &[String],
        metadata: &HashMap<String, String>,
    ) -> Result<Items, ConfigurationError>;

    /// Starts watching `keys` (every key when empty): each change is sent on
    /// `updates` until its receiver is dropped. Returns once watching started.
    async fn subscribe(
        &self,
        keys: &[String],
        metadata: &HashMap<String, String>,
        updates: mpsc::Sender<Items>,
    ) -> Result<(), ConfigurationError>;
}

/// Builds a configuration store from its component `type` and metadata.
pub async fn create(
    type_: &str,
    metadata: &ComponentMetadata,
) -> Result<Arc<dyn ConfigurationStore>, ConfigurationInitError> {
    Ok(match type_ {
        "configuration.redis" => Arc::new(redis::RedisConfigurationStore::connect(metadata).await?),
        "configuration.postgresql" | "configuration.postgres" => {
            Arc::new(postgres::PostgresConfigurationStore::connect(metadata).await?)
        }
        other => return Err(ConfigurationInitError::UnknownType(other.to_owned())),
    })
}
