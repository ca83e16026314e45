use serde::{Deserialize, Serialize};

use crate::ObjectMeta;

/// `dapr.io/v1alpha1` `Configuration`. Fields the runtime does not interpret yet
/// are kept in `extra` so nothing a user wrote is dropped on a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ConfigurationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControlSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_resolution: Option<NameResolutionSpec>,
    /// Middleware applied to requests arriving at the Dapr HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_pipeline: Option<HttpPipelineSpec>,
    /// Middleware applied to requests daprd sends to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_http_pipeline: Option<HttpPipelineSpec>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<ApiAccessRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<Vec<ApiAccessRule>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiAccessRule {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `http` or `grpc`; empty means both.
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlSpec {
    #[serde(default)]
    pub default_action: String,
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub policies: Vec<AppPolicySpec>,
}

/// One entry of `accessControl.policies`: what calls from app `app_id` (in
/// `namespace`, with SPIFFE trust domain `trust_domain`) may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicySpec {
    #[serde(default)]
    pub app_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_action: String,
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<AppOperationSpec>,
}

/// An operation rule: a path pattern, the HTTP verbs it covers and the action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppOperationSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_verb: Vec<String>,
    #[serde(default)]
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameResolutionSpec {
    #[serde(default)]
    pub component: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub configuration: serde_json::Value,
}

/// `httpPipeline` / `appHttpPipeline`: middleware handlers, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpPipelineSpec {
    #[serde(default)]
    pub handlers: Vec<HandlerSpec>,
}

/// One pipeline handler: the name of a `middleware.http.*` Component and its
/// type (and optionally version, `v1` when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandlerSpec {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectorSpec {
    #[serde(default)]
    pub fields: Vec<SelectorField>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectorField {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: String,
}

impl Configuration {
    /// Whether feature `name` is switched on.
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.spec
            .features
            .iter()
            .any(|f| f.name == name && f.enabled)
    }
}
