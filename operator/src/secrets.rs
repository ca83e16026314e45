//! `secretKeyRef` resolution from Kubernetes Secrets, as Dapr's operator does
//! when a resource's `auth.secretStore` is empty or `kubernetes`: the value
//! is put in `value` as a base64 string (the Secret's raw `data`), and
//! `secretKeyRef` is kept so daprd knows to decode it.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::Value;

/// The Kubernetes secret store name.
pub const KUBERNETES_SECRET_STORE: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("reading secret {namespace}/{name}: {reason}")]
    Api {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// Where Secrets come from (the apiserver, or a map in unit tests).
pub trait SecretSource: Send + Sync {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, Vec<u8>>, SecretError>> + Send;
}

/// Secrets read from the apiserver on every request (no Secret cache: fewer
/// RBAC rights and no copies of every Secret in the operator's memory).
#[derive(Clone)]
pub struct KubeSecrets(pub Client);

impl SecretSource for KubeSecrets {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, SecretError> {
        let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()),
            Ok(None) => Err(SecretError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }),
            Err(e) => Err(SecretError::Api {
                namespace: namespace.into(),
                name: name.into(),
                reason: e.to_string(),
            }),
        }
    }
}

/// A Secret's data, or why it could not be read (empty: not found).
type Lookup = Result<BTreeMap<String, Vec<u8>>, String>;

/// Reads each Secret at most once: one list answer often references the
/// same Secret from many resources. Lives for one request only, so a
/// changed Secret is seen by the next request.
pub struct Memo<'a, S> {
    inner: &'a S,
    seen: tokio::sync::Mutex<BTreeMap<(String, String), Lookup>>,
}

impl<'a, S: SecretSource> Memo<'a, S> {
    pub fn new(inner: &'a S) -> Self {
        Self {
            inner,
            seen: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }
}

impl<S: SecretSource> SecretSource for Memo<'_, S> {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, SecretError> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut seen = self.seen.lock().await;
        let entry = match seen.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = match self.inner.get(namespace, name).await {
                    Ok(d) => Ok(d),
                    Err(SecretError::NotFound { .. }) => Err(String::new()),
                    Err(e) => Err(e.to_string()),
                };
                seen.insert(key, r.clone());
                r
            }
        };
        entry.map_err(|reason| {
            if reason.is_empty() {
                SecretError::NotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                }
            } else {
                SecretError::Api {
                    namespace: namespace.into(),
                    name: name.into(),
                    reason,
                }
            }
        })
    }
}

fn uses_kubernetes_store(resource: &Value) -> bool {
    let store = resource
        .pointer("/auth/secretStore")
        .and_then(Value::as_str)
        .unwrap_or_default();
    store.is_empty() || store == KUBERNETES_SECRET_STORE
}

/// Fills `value` of one `{value?, secretKeyRef{name,key}}` node.
async fn resolve_node(
    node: &mut Value,
    namespace: &str,
    secrets: &impl SecretSource,
) -> Result<(), SecretError> {
    let Some(r) = node.get("secretKeyRef") else {
        return Ok(());
    };
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        return Ok(());
    }
    let key = match r.get("key").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => k.to_owned(),
        // Dapr: an empty key means the key named like the Secret.
        _ => name.to_owned(),
    };
    let name = name.to_owned();
    let data = secrets.get(namespace, &name).await?;
    // A missing key leaves the value unset, as in Dapr.
    if let (Some(bytes), Some(obj)) = (data.get(&key), node.as_object_mut()) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        obj.insert("value".into(), Value::String(b64));
    }
    Ok(())
}

/// Resolves a Component's `spec.metadata[].secretKeyRef`s.
pub async fn resolve_component(
    resource: &mut Value,
    namespace: &str,
    secrets: &impl SecretSource,
) -> Result<(), SecretError> {
    if !uses_kubernetes_store(resource) {
        return Ok(());
    }
    if let Some(items) = resource
        .pointer_mut("/spec/metadata")
        .and_then(Value::as_array_mut)
    {
        for item in items {
            resolve_node(item, namespace, secrets).await?;
        }
    }
    Ok(())
}

/// Resolves an HTTPEndpoint's header and client-TLS `secretKeyRef`s.
pub async fn resolve_http_endpoint(
    resource: &mut Value,
    namespace: &str,
    secrets: &impl SecretSource,
) -> Result<(), SecretError> {
    if !uses_kubernetes_store(resource) {
        return Ok(());
    }
    if let Some(items) = resource
        .pointer_mut("/spec/headers")
        .and_then(Value::as_array_mut)
    {
        for item in items {
            resolve_node(item, namespace, secrets).await?;
        }
    }
    for doc in ["rootCA", "certificate", "privateKey"] {
        if let Some(node) = resource.pointer_mut(&format!("/spec/clientTLS/{doc}")) {
            resolve_node(node, namespace, secrets).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>);

    impl SecretSource for Fixed {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<BTreeMap<String, Vec<u8>>, SecretError> {
            self.0
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .ok_or(SecretError::NotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                })
        }
    }

    fn source() -> Fixed {
        Fixed(
            [(
                ("ns".to_owned(), "redis".to_owned()),
                [
                    ("password".to_owned(), b"s3cret".to_vec()),
                    ("redis".to_owned(), b"same-name".to_vec()),
                ]
                .into(),
            )]
            .into(),
        )
    }

    #[tokio::test]
    async fn resolves_component_refs_as_base64_values() {
        let mut c = json!({"spec": {"metadata": [
            {"name": "a", "secretKeyRef": {"name": "redis", "key": "password"}},
            {"name": "b", "secretKeyRef": {"name": "redis"}},
            {"name": "c", "value": "plain"},
            {"name": "d", "secretKeyRef": {"name": "redis", "key": "absent"}},
        ]}});
        resolve_component(&mut c, "ns", &source()).await.unwrap();
        let m = &c["spec"]["metadata"];
        assert_eq!(m[0]["value"], "czNjcmV0"); // base64("s3cret")
        assert_eq!(m[0]["secretKeyRef"]["key"], "password");
        assert_eq!(m[1]["value"], "c2FtZS1uYW1l"); // key defaults to the Secret's name
        assert_eq!(m[2]["value"], "plain");
        assert!(m[3].get("value").is_none());
    }

    #[tokio::test]
    async fn other_secret_stores_are_left_to_daprd() {
        let mut c = json!({"auth": {"secretStore": "vault"}, "spec": {"metadata": [
            {"name": "a", "secretKeyRef": {"name": "missing", "key": "k"}}]}});
        let before = c.clone();
        resolve_component(&mut c, "ns", &source()).await.unwrap();
        assert_eq!(c, before);
    }

    #[tokio::test]
    async fn missing_secret_is_an_error_naming_it() {
        let mut c = json!({"spec": {"metadata": [
            {"name": "a", "secretKeyRef": {"name": "nope", "key": "k"}}]}});
        let err = resolve_component(&mut c, "ns", &source())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "secret ns/nope not found");
    }

    struct Counting(Fixed, std::sync::atomic::AtomicUsize);

    impl SecretSource for Counting {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<BTreeMap<String, Vec<u8>>, SecretError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.get(namespace, name).await
        }
    }

    #[tokio::test]
    async fn memo_reads_each_secret_once_per_request() {
        let counting = Counting(source(), Default::default());
        let memo = Memo::new(&counting);
        for _ in 0..3 {
            let mut c = json!({"spec": {"metadata": [
                {"name": "a", "secretKeyRef": {"name": "redis", "key": "password"}},
                {"name": "b", "secretKeyRef": {"name": "redis", "key": "redis"}}]}});
            resolve_component(&mut c, "ns", &memo).await.unwrap();
            assert_eq!(c["spec"]["metadata"][1]["value"], "c2FtZS1uYW1l");
            let mut missing = json!({"spec": {"metadata": [
                {"name": "a", "secretKeyRef": {"name": "nope", "key": "k"}}]}});
            let err = resolve_component(&mut missing, "ns", &memo)
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "secret ns/nope not found");
        }
        assert_eq!(counting.1.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn resolves_http_endpoint_headers_and_tls() {
        let mut e = json!({"spec": {"baseUrl": "https://x",
            "headers": [{"name": "Authorization", "secretKeyRef": {"name": "redis", "key": "password"}}],
            "clientTLS": {"privateKey": {"secretKeyRef": {"name": "redis", "key": "redis"}},
                          "rootCA": {"value": "pem"}}}});
        resolve_http_endpoint(&mut e, "ns", &source())
            .await
            .unwrap();
        assert_eq!(e["spec"]["headers"][0]["value"], "czNjcmV0");
        assert_eq!(
            e["spec"]["clientTLS"]["privateKey"]["value"],
            "c2FtZS1uYW1l"
        );
        assert_eq!(e["spec"]["clientTLS"]["rootCA"]["value"], "pem");
    }
}
