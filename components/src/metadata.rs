//! Component metadata as a component sees it: resolved strings (secrets and
//! environment references already substituted), looked up case-insensitively
//! as Dapr does.

use std::{collections::HashMap, time::Duration};

use crate::duration::parse_go_duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("missing required metadata field '{0}'")]
    Missing(String),
    #[error("invalid value for metadata field '{field}': {reason}")]
    Invalid { field: String, reason: String },
}

/// Resolved metadata of one component instance.
#[derive(Debug, Clone, Default)]
pub struct ComponentMetadata {
    /// Component name (`metadata.name`).
    pub name: String,
    /// App id of the sidecar loading it.
    pub app_id: String,
    /// Namespace of the sidecar (empty in self-hosted mode).
    pub namespace: String,
    /// Lower-cased field name → value.
    properties: HashMap<String, String>,
}

impl ComponentMetadata {
    pub fn new(name: impl Into<String>, app_id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            app_id: app_id.into(),
            ..Self::default()
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.properties
            .insert(key.to_ascii_lowercase(), value.into());
    }

    /// The value of `key`, ignoring case; empty strings count as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The first present of several aliases.
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub fn require(&self, key: &str) -> Result<&str, MetadataError> {
        self.get(key)
            .ok_or_else(|| MetadataError::Missing(key.to_owned()))
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, MetadataError> {
        self.get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "y" | "on" => Ok(true),
                "false" | "0" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.invalid(key, "expected a boolean")),
            })
            .transpose()
    }

    pub fn get_parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, MetadataError> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|_| self.invalid(key, "expected a number"))
            })
            .transpose()
    }

    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>, MetadataError> {
        self.get(key)
            .map(|v| parse_go_duration(v).map_err(|e| self.invalid(key, &e.to_string())))
            .transpose()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn invalid(&self, key: &str, reason: &str) -> MetadataError {
        MetadataError::Invalid {
            field: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        let md = ComponentMetadata::new("s", "app")
            .with("redisHost", "localhost:6379")
            .with("enableTLS", "true")
            .with("timeout", "20s")
            .with("empty", "");
        assert_eq!(md.get("REDISHOST"), Some("localhost:6379"));
        assert_eq!(md.get_bool("enabletls").unwrap(), Some(true));
        assert_eq!(
            md.get_duration("timeout").unwrap(),
            Some(Duration::from_secs(20))
        );
        assert_eq!(md.get("empty"), None);
        assert!(md.require("missing").is_err());
        assert!(md.clone().with("n", "x").get_parsed::<u32>("n").is_err());
    }
}
