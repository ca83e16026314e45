//! `secretstores.local.file`: secrets from a JSON file, nested objects
//! flattened with `nestedSeparator` (default `:`), as Dapr's component does.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;

use super::{Secret, SecretError, SecretInitError, SecretStore};
use crate::ComponentMetadata;

#[derive(Debug, Clone)]
pub struct LocalFileStore {
    secrets: HashMap<String, Secret>,
}

impl LocalFileStore {
    pub fn open(metadata: &ComponentMetadata) -> Result<Self, SecretInitError> {
        let path = metadata.require("secretsFile")?;
        let separator = metadata.get("nestedSeparator").unwrap_or(":");
        let multi_valued = metadata.get_bool("multiValued")?.unwrap_or(false);
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretInitError::Load(format!("cannot read secretsFile {path}: {e}")))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            SecretInitError::Load(format!("secretsFile {path} is not valid JSON: {e}"))
        })?;
        Ok(Self {
            secrets: Self::build(&json, separator, multi_valued),
        })
    }

    fn build(json: &Value, separator: &str, multi_valued: bool) -> HashMap<String, Secret> {
        let mut secrets = HashMap::new();
        let Value::Object(top) = json else {
            return secrets;
        };
        if multi_valued {
            // Top-level keys are secrets; their nested values become the secret's keys.
            for (name, value) in top {
                let mut flat = Vec::new();
                match value {
                    Value::Object(_) => flatten(value, "", separator, &mut flat),
                    other => flat.push((name.clone(), scalar(other))),
                }
                secrets.insert(name.clone(), flat.into_iter().collect());
            }
        } else {
            let mut flat = Vec::new();
            flatten(json, "", separator, &mut flat);
            for (k, v) in flat {
                secrets.insert(k.clone(), HashMap::from([(k, v)]));
            }
        }
        secrets
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flatten(v: &Value, prefix: &str, sep: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}{sep}{k}")
                };
                flatten(child, &key, sep, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let key = if prefix.is_empty() {
                    i.to_string()
                } else {
                    format!("{prefix}{sep}{i}")
                };
                flatten(child, &key, sep, out);
            }
        }
        other => out.push((prefix.to_owned(), scalar(other))),
    }
}

#[async_trait]
impl SecretStore for LocalFileStore {
    async fn get(
        &self,
        name: &str,
        _metadata: &HashMap<String, String>,
    ) -> Result<Secret, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    async fn bulk_get(
        &self,
        _metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, Secret>, SecretError> {
        Ok(self.secrets.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_json() {
        let json: Value = serde_json::from_str(
            r#"{"redis":{"password":"p","port":6379},"plain":"v","list":["a","b"]}"#,
        )
        .unwrap();
        let s = LocalFileStore::build(&json, ":", false);
        assert_eq!(s["redis:password"]["redis:password"], "p");
        assert_eq!(s["redis:port"]["redis:port"], "6379");
        assert_eq!(s["plain"]["plain"], "v");
        assert_eq!(s["list:1"]["list:1"], "b");
        let m = LocalFileStore::build(&json, ".", true);
        assert_eq!(m["redis"]["password"], "p");
        assert_eq!(m["plain"]["plain"], "v");
    }
}
