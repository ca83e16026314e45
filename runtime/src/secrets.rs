//! The secrets API: reads a secret (or all of them) from a loaded secret store,
//! applying the Configuration's `secrets.scopes`. HTTP and gRPC only adapt
//! shapes around [`get_secret`] and [`get_bulk_secret`].

use std::collections::{BTreeMap, HashMap};

use dapr_components::secretstores::{Secret, SecretError};
use http::StatusCode;
use tonic::Code;

use crate::{error::MappedError, sidecar::Sidecar};

/// One entry of `spec.secrets.scopes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretScope {
    pub store_name: String,
    #[serde(default)]
    pub default_access: String,
    #[serde(default)]
    pub allowed_secrets: Vec<String>,
    #[serde(default)]
    pub denied_secrets: Vec<String>,
}

impl SecretScope {
    /// Dapr's rule: a non-empty `allowedSecrets` is exhaustive; otherwise a
    /// secret in `deniedSecrets` is refused and the rest follow `defaultAccess`
    /// (allow unless it says `deny`).
    pub fn allows(&self, name: &str) -> bool {
        if !self.allowed_secrets.is_empty() {
            return self.allowed_secrets.iter().any(|s| s == name);
        }
        if self.denied_secrets.iter().any(|s| s == name) {
            return false;
        }
        !self.default_access.eq_ignore_ascii_case("deny")
    }
}

/// Secret scopes by store name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretScopes(HashMap<String, SecretScope>);

#[derive(Debug, thiserror::Error)]
#[error("Configuration secrets.scopes: {0}")]
pub struct ScopesError(String);

impl SecretScopes {
    /// Reads `spec.secrets.scopes` (kept in the spec's uninterpreted sections).
    pub fn from_configuration(
        config: Option<&dapr_crds::Configuration>,
    ) -> Result<Self, ScopesError> {
        let Some(section) = config.and_then(|c| c.spec.extra.get("secrets")) else {
            return Ok(Self::default());
        };
        #[derive(serde::Deserialize)]
        struct Section {
            #[serde(default)]
            scopes: Vec<SecretScope>,
        }
        let parsed: Section =
            serde_json::from_value(section.clone()).map_err(|e| ScopesError(e.to_string()))?;
        let mut out = HashMap::new();
        for s in parsed.scopes {
            if s.store_name.is_empty() {
                return Err(ScopesError("a scope has no storeName".into()));
            }
            let access = s.default_access.to_ascii_lowercase();
            if !access.is_empty() && access != "allow" && access != "deny" {
                return Err(ScopesError(format!(
                    "defaultAccess of store {} must be allow or deny, not {:?}",
                    s.store_name, s.default_access
                )));
            }
            out.insert(s.store_name.clone(), s);
        }
        Ok(Self(out))
    }

    pub fn allows(&self, store: &str, name: &str) -> bool {
        self.0.get(store).is_none_or(|s| s.allows(name))
    }
}

/// Failures of the secrets API (pkg/messages in Dapr).
#[derive(Debug, thiserror::Error)]
pub enum SecretsApiError {
    #[error("secret store is not configured")]
    NotConfigured,
    #[error("failed finding secret store with key {0}")]
    StoreNotFound(String),
    #[error("access denied by policy to get {name:?} from {store:?}")]
    PermissionDenied { store: String, name: String },
    #[error("failed getting secret with key {name} from secret store {store}: {source}")]
    Get {
        store: String,
        name: String,
        source: SecretError,
    },
    #[error("failed getting secrets from secret store {store}: {source}")]
    BulkGet { store: String, source: SecretError },
}

impl From<SecretsApiError> for MappedError {
    fn from(e: SecretsApiError) -> Self {
        use SecretsApiError::*;
        let (code, http, grpc) = match &e {
            NotConfigured => (
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
            ),
            // 401, as Dapr answers it.
            StoreNotFound(_) => (
                "ERR_SECRET_STORE_NOT_FOUND",
                StatusCode::UNAUTHORIZED,
                Code::InvalidArgument,
            ),
            PermissionDenied { .. } => (
                "ERR_PERMISSION_DENIED",
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
            ),
            Get { .. } | BulkGet { .. } => (
                "ERR_SECRET_GET",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        };
        MappedError::new(code, http, grpc, e.to_string())
    }
}

fn store(
    sidecar: &Sidecar,
    name: &str,
) -> Result<std::sync::Arc<dyn dapr_components::secretstores::SecretStore>, SecretsApiError> {
    if !sidecar.registry.has_secret_stores() {
        return Err(SecretsApiError::NotConfigured);
    }
    sidecar
        .registry
        .secret_store(name)
        .ok_or_else(|| SecretsApiError::StoreNotFound(name.to_owned()))
}

/// One secret, if the scopes allow it.
pub async fn get_secret(
    sidecar: &Sidecar,
    store_name: &str,
    name: &str,
    metadata: &HashMap<String, String>,
) -> Result<Secret, SecretsApiError> {
    let store = store(sidecar, store_name)?;
    if !sidecar.registry.secret_scopes().allows(store_name, name) {
        return Err(SecretsApiError::PermissionDenied {
            store: store_name.to_owned(),
            name: name.to_owned(),
        });
    }
    store
        .get(name, metadata)
        .await
        .map_err(|source| SecretsApiError::Get {
            store: store_name.to_owned(),
            name: name.to_owned(),
            source,
        })
}

/// Every secret of the store the scopes allow; refused ones are left out, as
/// in Dapr.
pub async fn get_bulk_secret(
    sidecar: &Sidecar,
    store_name: &str,
    metadata: &HashMap<String, String>,
) -> Result<BTreeMap<String, Secret>, SecretsApiError> {
    let store = store(sidecar, store_name)?;
    let all = store
        .bulk_get(metadata)
        .await
        .map_err(|source| SecretsApiError::BulkGet {
            store: store_name.to_owned(),
            source,
        })?;
    let scopes = sidecar.registry.secret_scopes();
    Ok(all
        .into_iter()
        .filter(|(name, _)| scopes.allows(store_name, name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(default: &str, allowed: &[&str], denied: &[&str]) -> SecretScope {
        SecretScope {
            store_name: "s".into(),
            default_access: default.into(),
            allowed_secrets: allowed.iter().map(|s| s.to_string()).collect(),
            denied_secrets: denied.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn scope_rules_follow_dapr() {
        assert!(scope("", &[], &[]).allows("a"));
        assert!(!scope("deny", &[], &[]).allows("a"));
        assert!(scope("DENY", &["a"], &[]).allows("a"));
        assert!(!scope("allow", &["a"], &[]).allows("b"));
        assert!(!scope("allow", &[], &["a"]).allows("a"));
        assert!(scope("allow", &[], &["a"]).allows("b"));
        // allowedSecrets wins over deniedSecrets.
        assert!(scope("", &["a"], &["a"]).allows("a"));
    }

    #[test]
    fn scopes_parse_from_configuration() {
        let cfg: dapr_crds::Configuration = serde_json::from_value(serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "c"},
            "spec": {"secrets": {"scopes": [
                {"storeName": "vault", "defaultAccess": "deny", "allowedSecrets": ["x"]}
            ]}}
        }))
        .unwrap();
        let s = SecretScopes::from_configuration(Some(&cfg)).unwrap();
        assert!(s.allows("vault", "x"));
        assert!(!s.allows("vault", "y"));
        assert!(s.allows("other", "y"));
        let bad: dapr_crds::Configuration = serde_json::from_value(serde_json::json!({
            "spec": {"secrets": {"scopes": [{"storeName": "v", "defaultAccess": "maybe"}]}}
        }))
        .unwrap();
        assert!(SecretScopes::from_configuration(Some(&bad)).is_err());
    }
}
