//! `secretstores.kubernetes`: Secrets of a namespace read from the API
//! server through kube-rs.
//!
//! As Dapr's store: `GetSecret` answers the Secret's `data` map (values
//! decoded from base64 by the API client, shown as UTF-8), bulk answers every
//! Secret of the namespace. The namespace is the request metadata
//! `namespace`, else the component's `defaultNamespace`, else `$NAMESPACE`
//! (the pod's, set by the injector). `kubeconfigPath` points at a kubeconfig
//! (self-hosted use); without it the client uses the in-cluster service
//! account, or `$KUBECONFIG`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use k8s_openapi::{ByteString, api::core::v1::Secret as KubeSecret};
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{Secret, SecretError, SecretInitError, SecretStore};
use crate::ComponentMetadata;

pub struct KubernetesStore {
    client: Client,
    default_namespace: Option<String>,
}

impl KubernetesStore {
    pub async fn open(metadata: &ComponentMetadata) -> Result<Self, SecretInitError> {
        let config = match metadata.get("kubeconfigPath").filter(|p| !p.is_empty()) {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| SecretInitError::Load(format!("kubeconfigPath {path}: {e}")))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| SecretInitError::Load(format!("kubeconfigPath {path}: {e}")))?
            }
            None => Config::infer().await.map_err(|e| {
                SecretInitError::Load(format!(
                    "no Kubernetes client configuration (in-cluster or $KUBECONFIG): {e}"
                ))
            })?,
        };
        let client = Client::try_from(config)
            .map_err(|e| SecretInitError::Load(format!("Kubernetes client: {e}")))?;
        Ok(Self {
            client,
            default_namespace: metadata
                .get("defaultNamespace")
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        })
    }

    fn namespace(&self, metadata: &HashMap<String, String>) -> Result<String, SecretError> {
        metadata
            .get("namespace")
            .filter(|n| !n.is_empty())
            .cloned()
            .or_else(|| self.default_namespace.clone())
            .or_else(|| std::env::var("NAMESPACE").ok().filter(|n| !n.is_empty()))
            .ok_or_else(|| {
                SecretError::Backend(
                    "namespace is missing on metadata and NAMESPACE env variable".to_owned(),
                )
            })
    }

    fn api(&self, namespace: &str) -> Api<KubeSecret> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// A Secret's `data` as Dapr shows it: bytes as text.
fn decode(data: Option<BTreeMap<String, ByteString>>) -> Secret {
    data.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// The API server's reason, never a value (the error may reach logs).
fn api_error(what: &str, e: kube::Error) -> SecretError {
    match e {
        kube::Error::Api(s) => SecretError::Backend(format!("{what}: {} ({})", s.message, s.code)),
        other => SecretError::Backend(format!("{what}: {other}")),
    }
}

#[async_trait]
impl SecretStore for KubernetesStore {
    async fn get(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Secret, SecretError> {
        if name.is_empty() {
            return Err(SecretError::NotFound(name.to_owned()));
        }
        let ns = self.namespace(metadata)?;
        match self.api(&ns).get_opt(name).await {
            Ok(Some(s)) => Ok(decode(s.data)),
            Ok(None) => Err(SecretError::NotFound(format!("{ns}/{name}"))),
            Err(e) => Err(api_error(&format!("get secret {ns}/{name}"), e)),
        }
    }

    async fn bulk_get(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, Secret>, SecretError> {
        let ns = self.namespace(metadata)?;
        let list = self
            .api(&ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(&format!("list secrets in {ns}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name?, decode(s.data))))
            .collect())
    }
}
