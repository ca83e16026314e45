use serde::Deserialize;

use crate::{Component, Configuration, HttpEndpoint};

/// Any dapr resource found in a YAML file. Kinds that this crate does not type
/// yet are kept as raw JSON for the building blocks that read them.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Component(Box<Component>),
    Configuration(Box<Configuration>),
    HttpEndpoint(Box<HttpEndpoint>),
    /// Subscription, Resiliency, ...: `kind` plus the whole document.
    Other {
        kind: String,
        document: serde_json::Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("document {index}: invalid {kind} '{name}': {reason}")]
    Invalid {
        index: usize,
        kind: String,
        name: String,
        reason: String,
    },
}

/// Parses every document of a (multi-document) YAML file. Documents without an
/// `apiVersion` in the `dapr.io` group are skipped, as Dapr does.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ParseError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
    let mut out = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        if !api_version.starts_with("dapr.io/") {
            continue;
        }
        let kind = doc
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let invalid = |reason: String| ParseError::Invalid {
            index,
            kind: kind.clone(),
            name: name.clone(),
            reason,
        };
        let resource = match kind.as_str() {
            "Component" => Resource::Component(Box::new(
                Component::deserialize(&doc).map_err(|e| invalid(e.to_string()))?,
            )),
            "Configuration" => Resource::Configuration(Box::new(
                Configuration::deserialize(&doc).map_err(|e| invalid(e.to_string()))?,
            )),
            "HTTPEndpoint" => Resource::HttpEndpoint(Box::new(
                HttpEndpoint::deserialize(&doc).map_err(|e| invalid(e.to_string()))?,
            )),
            _ => Resource::Other {
                kind: kind.clone(),
                document: doc,
            },
        };
        out.push(resource);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_files() {
        let text = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: port
    value: 5432
  - name: redisPassword
    secretKeyRef:
      name: redis
      key: password
auth:
  secretStore: local
scopes: [a, b]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: s
spec:
  topic: t
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ignored
"#;
        let res = parse_documents(text).unwrap();
        assert_eq!(res.len(), 2);
        let Resource::Component(c) = &res[0] else {
            panic!("not a component: {:?}", res[0]);
        };
        assert_eq!(c.name(), "statestore");
        assert_eq!(c.spec.type_, "state.redis");
        assert_eq!(c.spec.metadata[1].literal().as_deref(), Some("5432"));
        assert_eq!(
            c.spec.metadata[2].secret_key_ref.as_ref().unwrap().key,
            "password"
        );
        assert_eq!(c.auth.secret_store, "local");
        assert!(c.in_scope("a") && !c.in_scope("c"));
        assert!(matches!(&res[1], Resource::Other { kind, .. } if kind == "Subscription"));
    }

    #[test]
    fn reports_invalid_component_with_name() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: broken\nspec:\n  version: v1\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(err.contains("broken") && err.contains("type"), "{err}");
    }
}
