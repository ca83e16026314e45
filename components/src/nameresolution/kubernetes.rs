//! `nameresolution.kubernetes`: every app has a headless Service
//! `<app-id>-dapr` (created by the operator), so a sidecar is reached at
//! `<app-id>-dapr.<namespace>.svc.<cluster-domain>:<internal port>`.

use async_trait::async_trait;

use super::{Instance, NameResolutionError, NameResolver};
use crate::ComponentMetadata;

pub struct KubernetesResolver {
    cluster_domain: String,
    port: u16,
    default_namespace: String,
}

impl KubernetesResolver {
    /// Metadata: `clusterDomain` (default `cluster.local`), `port` (default
    /// 50002, the injector's internal gRPC port); the sidecar's own namespace
    /// is used when a target names none.
    pub fn new(metadata: &ComponentMetadata) -> Result<Self, NameResolutionError> {
        let port = metadata
            .get_parsed::<u16>("port")
            .map_err(|e| NameResolutionError::Backend(e.to_string()))?
            .unwrap_or(50002);
        Ok(Self {
            cluster_domain: metadata
                .get("clusterDomain")
                .unwrap_or("cluster.local")
                .to_owned(),
            port,
            default_namespace: if metadata.namespace.is_empty() {
                "default".to_owned()
            } else {
                metadata.namespace.clone()
            },
        })
    }
}

#[async_trait]
impl NameResolver for KubernetesResolver {
    /// Kubernetes registers pods through Services; nothing to do here.
    async fn register(&self, _instance: &Instance) -> Result<(), NameResolutionError> {
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, NameResolutionError> {
        if app_id.is_empty() {
            return Err(NameResolutionError::NotFound(app_id.to_owned()));
        }
        let ns = if namespace.is_empty() {
            &self.default_namespace
        } else {
            namespace
        };
        Ok(format!(
            "{app_id}-dapr.{ns}.svc.{}:{}",
            self.cluster_domain, self.port
        ))
    }

    async fn unregister(&self) -> Result<(), NameResolutionError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_service_addresses() {
        let mut md = ComponentMetadata::new("k8s", "a");
        md.namespace = "prod".into();
        let r = KubernetesResolver::new(&md).unwrap();
        assert_eq!(
            r.resolve("orders", "").await.unwrap(),
            "orders-dapr.prod.svc.cluster.local:50002"
        );
        assert_eq!(
            r.resolve("orders", "dev").await.unwrap(),
            "orders-dapr.dev.svc.cluster.local:50002"
        );
        let r = KubernetesResolver::new(
            &md.clone()
                .with("clusterDomain", "corp.internal")
                .with("port", "6000"),
        )
        .unwrap();
        assert_eq!(
            r.resolve("x", "").await.unwrap(),
            "x-dapr.prod.svc.corp.internal:6000"
        );
        assert!(KubernetesResolver::new(&md.with("port", "nope")).is_err());
    }
}
