//! `secretstores.local.env`: secrets from the sidecar's environment.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Secret, SecretError, SecretStore};
use crate::ComponentMetadata;

/// Only variables starting with `prefix` are visible; the prefix is removed
/// from the names callers see.
#[derive(Debug, Clone)]
pub struct LocalEnvStore {
    prefix: String,
}

impl LocalEnvStore {
    pub fn new(metadata: &ComponentMetadata) -> Self {
        Self {
            prefix: metadata.get("prefix").unwrap_or_default().to_owned(),
        }
    }
}

#[async_trait]
impl SecretStore for LocalEnvStore {
    async fn get(
        &self,
        name: &str,
        _metadata: &HashMap<String, String>,
    ) -> Result<Secret, SecretError> {
        let var = format!("{}{name}", self.prefix);
        std::env::var(&var)
            .map(|v| HashMap::from([(name.to_owned(), v)]))
            .map_err(|_| SecretError::NotFound(name.to_owned()))
    }

    async fn bulk_get(
        &self,
        _metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, Secret>, SecretError> {
        Ok(std::env::vars()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(&self.prefix)?.to_owned();
                (!name.is_empty()).then(|| (name.clone(), HashMap::from([(name, v)])))
            })
            .collect())
    }
}
