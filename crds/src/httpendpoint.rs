//! `dapr.io/v1alpha1` `HTTPEndpoint`: an external HTTP service that apps invoke
//! by name through Dapr's service invocation API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ComponentAuth, MetadataItem, ObjectMeta, SecretKeyRef};

/// The `kind` of an HTTPEndpoint document.
pub const HTTP_ENDPOINT_KIND: &str = "HTTPEndpoint";

/// `auth` and `scopes` sit beside `spec`, as on a Component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpEndpoint {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: HttpEndpointSpec,
    #[serde(default)]
    pub auth: ComponentAuth,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

fn default_api_version() -> String {
    "dapr.io/v1alpha1".to_owned()
}

fn default_kind() -> String {
    HTTP_ENDPOINT_KIND.to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpEndpointSpec {
    /// Scheme, host and optional port/path prefix, e.g. `https://api.example.com`.
    pub base_url: String,
    /// Headers added to every request: `value`, `secretKeyRef` or `envRef`
    /// each, like Component metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<MetadataItem>,
    #[serde(rename = "clientTLS", default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
}

/// TLS material for calling the endpoint (a private root CA, a client certificate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    #[serde(rename = "rootCA", default, skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<TlsDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<TlsDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<TlsDocument>,
    /// `Never` (default), `OnceAsClient` or `FreelyAsClient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiation: Option<String>,
}

/// A PEM document given inline (`value`) or by a secret reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

impl HttpEndpoint {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether this endpoint is visible to `app_id` (no scopes = everyone).
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

impl TlsDocument {
    /// The inline PEM text, if given as a string value.
    pub fn literal(&self) -> Option<String> {
        self.value.as_ref().map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resource, parse_documents};

    #[test]
    fn parses_an_http_endpoint_document() {
        let text = r#"
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: github
spec:
  baseUrl: https://api.github.com
  headers:
  - name: Accept
    value: application/json
  - name: Authorization
    secretKeyRef:
      name: gh
      key: token
  clientTLS:
    rootCA:
      value: "-----BEGIN CERTIFICATE-----"
    certificate:
      secretKeyRef: {name: tls, key: crt}
    privateKey:
      secretKeyRef: {name: tls, key: key}
    renegotiation: OnceAsClient
auth:
  secretStore: kubernetes
scopes: [checkout]
"#;
        let docs = parse_documents(text).unwrap();
        let Resource::HttpEndpoint(e) = &docs[0] else {
            panic!("not an endpoint: {:?}", docs[0]);
        };
        assert_eq!(e.name(), "github");
        assert_eq!(e.spec.base_url, "https://api.github.com");
        assert_eq!(
            e.spec.headers[0].literal().as_deref(),
            Some("application/json")
        );
        assert_eq!(
            e.spec.headers[1].secret_key_ref.as_ref().unwrap().key,
            "token"
        );
        let tls = e.spec.client_tls.as_ref().unwrap();
        assert_eq!(
            tls.root_ca.as_ref().unwrap().literal().as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(
            tls.private_key
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "tls"
        );
        assert_eq!(tls.renegotiation.as_deref(), Some("OnceAsClient"));
        assert_eq!(e.auth.secret_store, "kubernetes");
        assert!(e.in_scope("checkout") && !e.in_scope("other"));
        // JSON round trip keeps Dapr's field names.
        let json = serde_json::to_value(e.as_ref()).unwrap();
        assert_eq!(json["spec"]["baseUrl"], "https://api.github.com");
        assert!(json["spec"]["clientTLS"]["rootCA"].is_object());
    }

    #[test]
    fn missing_base_url_is_reported_with_the_name() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: nourl\nspec:\n  headers: []\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(err.contains("nourl") && err.contains("baseUrl"), "{err}");
    }
}
