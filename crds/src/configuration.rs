use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectMeta;

/// `dapr.io/v1alpha1` `Configuration`. Fields the runtime does not interpret yet
/// are kept in `extra` so nothing a user wrote is dropped on a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Sections the runtime does not interpret yet (their CRD schema comes
    /// from [`ExtraSections`]).
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<ApiAccessRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<Vec<ApiAccessRule>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiAccessRule {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `http` or `grpc`; empty means both.
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppOperationSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_verb: Vec<String>,
    #[serde(default)]
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NameResolutionSpec {
    #[serde(default)]
    pub component: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub configuration: serde_json::Value,
}

/// `httpPipeline` / `appHttpPipeline`: middleware handlers, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpPipelineSpec {
    #[serde(default)]
    pub handlers: Vec<HandlerSpec>,
}

/// One pipeline handler: the name of a `middleware.http.*` Component and its
/// type (and optionally version, `v1` when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorSpec {
    #[serde(default)]
    pub fields: Vec<SelectorField>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// Schema-only description of the Configuration sections kept in
/// [`ConfigurationSpec::extra`], so the CRD is structural and
/// `kubectl explain` shows them; field names are Dapr's.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(crate) struct ExtraSections {
    tracing: Option<TracingSchema>,
    metric: Option<MetricSchema>,
    metrics: Option<MetricSchema>,
    mtls: Option<MtlsSchema>,
    secrets: Option<SecretsSchema>,
    components: Option<ComponentsSchema>,
    logging: Option<LoggingSchema>,
    wasm: Option<WasmSchema>,
    workflow: Option<WorkflowSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct TracingSchema {
    sampling_rate: Option<String>,
    stdout: Option<bool>,
    zipkin: Option<ZipkinSchema>,
    otel: Option<OtelSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ZipkinSchema {
    endpoint_address: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct OtelSchema {
    protocol: Option<String>,
    endpoint_address: Option<String>,
    is_secure: Option<bool>,
    headers: Option<Vec<crate::MetadataItem>>,
    /// Go duration, e.g. `10s`.
    timeout: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct MetricSchema {
    enabled: Option<bool>,
    record_error_codes: Option<bool>,
    http: Option<MetricHttpSchema>,
    rules: Option<Vec<MetricRuleSchema>>,
    latency_distribution_buckets: Option<Vec<i64>>,
    workflow: Option<WorkflowMetricsSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct MetricHttpSchema {
    increased_cardinality: Option<bool>,
    path_matching: Option<Vec<String>>,
    exclude_verbs: Option<bool>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct MetricRuleSchema {
    name: String,
    labels: Vec<MetricLabelSchema>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct MetricLabelSchema {
    name: String,
    regex: std::collections::BTreeMap<String, String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WorkflowMetricsSchema {
    latency_distribution_buckets: Option<Vec<i64>>,
    latency_distribution_units: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct MtlsSchema {
    enabled: Option<bool>,
    #[serde(rename = "workloadCertTTL")]
    workload_cert_ttl: Option<String>,
    allowed_clock_skew: Option<String>,
    sentry_address: Option<String>,
    control_plane_trust_domain: Option<String>,
    token_validators: Option<Vec<ValidatorSchema>>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct ValidatorSchema {
    name: String,
    /// Validator-specific options (free-form).
    options: Option<serde_json::Value>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct SecretsSchema {
    scopes: Vec<SecretsScopeSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct SecretsScopeSchema {
    store_name: String,
    default_access: Option<String>,
    allowed_secrets: Option<Vec<String>>,
    denied_secrets: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct ComponentsSchema {
    /// `type/version` entries such as `bindings.smtp/v1`.
    deny: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct LoggingSchema {
    api_logging: Option<ApiLoggingSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ApiLoggingSchema {
    enabled: Option<bool>,
    #[serde(rename = "obfuscateURLs")]
    obfuscate_urls: Option<bool>,
    omit_health_checks: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WasmSchema {
    strict_sandbox: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WorkflowSchema {
    max_concurrent_workflow_invocations: Option<i32>,
    max_concurrent_activity_invocations: Option<i32>,
    global_max_concurrent_workflow_invocations: Option<i32>,
    global_max_concurrent_activity_invocations: Option<i32>,
    workflow_concurrency_limits: Option<Vec<ConcurrencyLimitSchema>>,
    activity_concurrency_limits: Option<Vec<ConcurrencyLimitSchema>>,
    state_retention_policy: Option<RetentionSchema>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ConcurrencyLimitSchema {
    name: Option<String>,
    max_concurrent: Option<i32>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct RetentionSchema {
    any_terminal: Option<String>,
    completed: Option<String>,
    failed: Option<String>,
    terminated: Option<String>,
}
