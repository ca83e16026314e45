//! Issuer credentials on Kubernetes: the Secret `dapr-trust-bundle` (keys
//! named like the credential files: `ca.crt`, `issuer.crt`, `issuer.key`)
//! and the ConfigMap `dapr-trust-bundle` (`ca.crt` only, readable by the
//! injector and sidecars) in the control-plane namespace.
//!
//! At start: a complete Secret is used (and the ConfigMap re-synced if it
//! differs); an empty or absent Secret gets freshly generated credentials; a
//! Secret holding only some of the keys is an error (never overwritten).

use std::collections::BTreeMap;

use dapr_security::{CaCredentials, TRUST_BUNDLE_NAME};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KubeStoreError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("Secret {TRUST_BUNDLE_NAME} holds only some of the credentials; missing keys: {0:?}")]
    Partial(Vec<String>),
    #[error("generating credentials: {0}")]
    Generate(#[from] dapr_security::CaError),
}

/// Reads and writes the trust bundle objects.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    namespace: String,
    ca_key: String,
    cert_key: String,
    key_key: String,
}

/// Data keys are the base names of the credential files.
fn base_name(name: &str) -> String {
    std::path::Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned())
}

impl KubeStore {
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        ca_file: &str,
        cert_file: &str,
        key_file: &str,
    ) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            ca_key: base_name(ca_file),
            cert_key: base_name(cert_file),
            key_key: base_name(key_file),
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The credentials in the Secret; `None` when none of the keys is set.
    pub async fn read(&self) -> Result<Option<CaCredentials>, KubeStoreError> {
        let secret = self.secrets().get_opt(TRUST_BUNDLE_NAME).await?;
        let data = secret.and_then(|s| s.data).unwrap_or_default();
        credentials_from_data(&data, &self.ca_key, &self.cert_key, &self.key_key)
    }

    /// Loads the credentials, generating and storing them when absent.
    pub async fn load_or_init(
        &self,
        generate: impl FnOnce() -> Result<CaCredentials, dapr_security::CaError>,
    ) -> Result<(CaCredentials, bool), KubeStoreError> {
        if let Some(creds) = self.read().await? {
            self.sync_config_map(&creds.trust_anchors_pem).await?;
            return Ok((creds, false));
        }
        let creds = generate()?;
        match self.store(&creds).await {
            Ok(()) => Ok((creds, true)),
            // Several replicas starting together (HA) race to fill the
            // Secret; the loser uses the winner's credentials, so every
            // replica signs under the same issuer.
            Err(e) if is_write_race(&e) => {
                tracing::info!(
                    "another Sentry replica stored the trust bundle first; using its credentials"
                );
                let creds = self.read().await?.ok_or(e)?;
                self.sync_config_map(&creds.trust_anchors_pem).await?;
                Ok((creds, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the Secret and the ConfigMap (create, or replace with the
    /// fetched resourceVersion so concurrent writers conflict instead of
    /// overwriting each other).
    pub async fn store(&self, creds: &CaCredentials) -> Result<(), KubeStoreError> {
        let api = self.secrets();
        let existing = api.get_opt(TRUST_BUNDLE_NAME).await?;
        let mut secret = existing.clone().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(TRUST_BUNDLE_NAME.into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        });
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.insert(
            self.ca_key.clone(),
            ByteString(creds.trust_anchors_pem.clone()),
        );
        data.insert(
            self.cert_key.clone(),
            ByteString(creds.issuer_chain_pem.clone()),
        );
        data.insert(
            self.key_key.clone(),
            ByteString(creds.issuer_key_pem.clone()),
        );
        if existing.is_some() {
            api.replace(TRUST_BUNDLE_NAME, &PostParams::default(), &secret)
                .await?;
        } else {
            api.create(&PostParams::default(), &secret).await?;
        }
        self.sync_config_map(&creds.trust_anchors_pem).await
    }

    /// Makes the ConfigMap's root certificate equal `anchors_pem`, retrying
    /// when another replica wrote it between our read and our write.
    pub async fn sync_config_map(&self, anchors_pem: &[u8]) -> Result<(), KubeStoreError> {
        let mut attempt = 0;
        loop {
            match self.sync_config_map_once(anchors_pem).await {
                Err(e) if is_write_race(&e) && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn sync_config_map_once(&self, anchors_pem: &[u8]) -> Result<(), KubeStoreError> {
        let anchors = String::from_utf8_lossy(anchors_pem).into_owned();
        let api = self.config_maps();
        match api.get_opt(TRUST_BUNDLE_NAME).await? {
            Some(mut cm) => {
                let data = cm.data.get_or_insert_with(BTreeMap::new);
                if data.get(&self.ca_key) == Some(&anchors) {
                    return Ok(());
                }
                data.insert(self.ca_key.clone(), anchors);
                api.replace(TRUST_BUNDLE_NAME, &PostParams::default(), &cm)
                    .await?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(TRUST_BUNDLE_NAME.into()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(self.ca_key.clone(), anchors)])),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &cm).await?;
            }
        }
        tracing::info!(namespace = %self.namespace, "ConfigMap {TRUST_BUNDLE_NAME} updated with the trust anchors");
        Ok(())
    }
}

/// A write lost to a concurrent writer: 409 Conflict on a stale
/// resourceVersion, or AlreadyExists on create (also 409).
fn is_write_race(e: &KubeStoreError) -> bool {
    matches!(e, KubeStoreError::Api(kube::Error::Api(status)) if status.code == 409)
}

/// The credentials in Secret data: all three keys (non-empty), none, or an
/// error for a partial Secret.
pub fn credentials_from_data(
    data: &BTreeMap<String, ByteString>,
    ca_key: &str,
    cert_key: &str,
    key_key: &str,
) -> Result<Option<CaCredentials>, KubeStoreError> {
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    let (ca, cert, key) = (get(ca_key), get(cert_key), get(key_key));
    match (ca, cert, key) {
        (Some(trust_anchors_pem), Some(issuer_chain_pem), Some(issuer_key_pem)) => {
            Ok(Some(CaCredentials {
                trust_anchors_pem,
                issuer_chain_pem,
                issuer_key_pem,
            }))
        }
        (None, None, None) => Ok(None),
        (ca, cert, key) => {
            let mut missing = Vec::new();
            for (present, name) in [
                (ca.is_some(), ca_key),
                (cert.is_some(), cert_key),
                (key.is_some(), key_key),
            ] {
                if !present {
                    missing.push(name.to_owned());
                }
            }
            Err(KubeStoreError::Partial(missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_shapes() {
        let mut data = BTreeMap::new();
        assert!(
            credentials_from_data(&data, "ca.crt", "issuer.crt", "issuer.key")
                .unwrap()
                .is_none()
        );
        data.insert("ca.crt".to_string(), ByteString(b"A".to_vec()));
        assert!(matches!(
            credentials_from_data(&data, "ca.crt", "issuer.crt", "issuer.key"),
            Err(KubeStoreError::Partial(m)) if m == vec!["issuer.crt".to_string(), "issuer.key".to_string()]
        ));
        data.insert("issuer.crt".to_string(), ByteString(b"B".to_vec()));
        data.insert("issuer.key".to_string(), ByteString(b"C".to_vec()));
        let c = credentials_from_data(&data, "ca.crt", "issuer.crt", "issuer.key")
            .unwrap()
            .unwrap();
        assert_eq!(c.issuer_key_pem, b"C");
        assert_eq!(base_name("/var/run/x/tls.key"), "tls.key");
    }
}
