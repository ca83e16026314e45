use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectMeta;

/// `dapr.io/v1alpha1` `Component`: a building-block backend and its settings.
///
/// `auth` and `scopes` sit beside `spec`, not inside it, as in Dapr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "component_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ComponentSpec,
    #[serde(default)]
    pub auth: ComponentAuth,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

fn default_api_version() -> String {
    "dapr.io/v1alpha1".to_owned()
}

fn component_kind() -> String {
    "Component".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Component type such as `state.redis`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub ignore_errors: bool,
    /// Go-style duration (`5s`, `1m`); empty means the runtime default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_timeout: Option<String>,
    #[serde(default)]
    pub metadata: Vec<MetadataItem>,
}

/// One `spec.metadata` entry: exactly one of `value`, `secretKeyRef`, `envRef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataItem {
    pub name: String,
    /// Free-form: Dapr accepts strings, numbers, booleans and nested values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentAuth {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_store: String,
}

impl Component {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether this component is visible to `app_id` (no scopes = everyone).
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }

    /// `type/version`, e.g. `state.redis/v1`.
    pub fn type_version(&self) -> String {
        format!("{}/{}", self.spec.type_, self.spec.version)
    }
}

impl MetadataItem {
    /// The literal value as Dapr's components see it: strings unquoted, other
    /// scalars in their JSON form.
    pub fn literal(&self) -> Option<String> {
        self.value.as_ref().map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
    }
}
