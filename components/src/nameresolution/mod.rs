//! Name resolution: how a sidecar finds the internal gRPC address of another
//! app's sidecar. Selected by the Configuration's `nameResolution`.

use async_trait::async_trait;

pub mod kubernetes;
pub mod mdns;
pub mod sqlite;

/// This sidecar, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub app_id: String,
    pub namespace: String,
    /// `host:port` of the internal gRPC server.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameResolutionError {
    #[error("couldn't find service: {0}")]
    NotFound(String),
    #[error("name resolution failed: {0}")]
    Backend(String),
}

#[async_trait]
pub trait NameResolver: Send + Sync + 'static {
    /// Announces this sidecar; implementations keep the registration alive
    /// until `unregister`.
    async fn register(&self, instance: &Instance) -> Result<(), NameResolutionError>;
    /// One address for `app_id` in `namespace`; several instances are load-balanced.
    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, NameResolutionError>;
    async fn unregister(&self) -> Result<(), NameResolutionError>;
}
