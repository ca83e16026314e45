//! `dapr.io/v1alpha1` `Resiliency`: named timeout, retry and circuit-breaker
//! policies, and the targets (apps, actors, components) they apply to.
//!
//! These are plain data types; validation (durations, status-code ranges, CEL
//! trip expressions) happens where the policies are compiled, in `dapr-policy`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{ObjectMeta, Resource};

/// The `kind` of a Resiliency document.
pub const RESILIENCY_KIND: &str = "Resiliency";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resiliency {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: ResiliencySpec,
    /// App ids this resource applies to; empty means every app.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResiliencySpec {
    #[serde(default, deserialize_with = "nullable")]
    pub policies: ResiliencyPolicies,
    #[serde(default, deserialize_with = "nullable")]
    pub targets: ResiliencyTargets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResiliencyPolicies {
    /// Policy name to Go duration (a bare integer is milliseconds).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "duration_map"
    )]
    pub timeouts: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub retries: BTreeMap<String, RetryPolicySpec>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub circuit_breakers: BTreeMap<String, CircuitBreakerPolicySpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicySpec {
    /// `constant` (default) or `exponential`, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Delay between attempts of a constant policy (default 5s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub duration: Option<String>,
    /// Cap on the delay of an exponential policy (default 60s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub max_interval: Option<String>,
    /// Retries after the first attempt; absent or negative means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<RetryMatchingSpec>,
}

/// Which coded errors are retried: comma-separated codes and `a-b` ranges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetryMatchingSpec {
    #[serde(
        rename = "httpStatusCodes",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub http_status_codes: Option<String>,
    #[serde(
        rename = "gRPCStatusCodes",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub grpc_status_codes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerPolicySpec {
    /// Requests let through while half-open (0 or absent means 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Period after which counts are cleared while closed (0 or absent: never).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub interval: Option<String>,
    /// How long the breaker stays open before going half-open (default 60s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string_lenient"
    )]
    pub timeout: Option<String>,
    /// CEL expression over the breaker counts; default `consecutiveFailures > 5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResiliencyTargets {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub apps: BTreeMap<String, AppTargetPolicies>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub actors: BTreeMap<String, ActorTargetPolicies>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub components: BTreeMap<String, ComponentTargetPolicies>,
}

/// Policy names for one direction of a component. Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyNames {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub timeout: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub retry: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub circuit_breaker: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppTargetPolicies {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub timeout: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub retry: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub circuit_breaker: String,
    /// Breakers kept for this app, one per endpoint (0 or absent means 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_cache_size: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorTargetPolicies {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub timeout: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub retry: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub circuit_breaker: String,
    /// `type`, `id` or `both`; required when `circuitBreaker` is set.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub circuit_breaker_scope: String,
    /// Breakers kept for this actor type (0 or absent means 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_cache_size: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentTargetPolicies {
    /// Component to app (input bindings, pub/sub deliveries).
    #[serde(default, deserialize_with = "nullable")]
    pub inbound: PolicyNames,
    /// App to component (state, publish, output bindings, ...).
    #[serde(default, deserialize_with = "nullable")]
    pub outbound: PolicyNames,
}

/// Why a `Resiliency` document could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid Resiliency '{name}': {reason}")]
pub struct ResiliencyParseError {
    pub name: String,
    pub reason: String,
}

impl Resiliency {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether this resource applies to `app_id` (no scopes means everyone).
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }

    /// Reads a whole `Resiliency` document, as kept in [`Resource::Other`].
    pub fn from_document(document: &serde_json::Value) -> Result<Self, ResiliencyParseError> {
        Resiliency::deserialize(document).map_err(|e| ResiliencyParseError {
            name: document
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            reason: e.to_string(),
        })
    }

    /// `Some` for a `Resource::Other` of kind `Resiliency`, `None` for anything else.
    pub fn from_resource(resource: &Resource) -> Option<Result<Self, ResiliencyParseError>> {
        match resource {
            Resource::Other { kind, document } if kind == RESILIENCY_KIND => {
                Some(Self::from_document(document))
            }
            _ => None,
        }
    }
}

/// Every `Resiliency` among `resources`, each parsed on its own so that one
/// broken document does not hide the others.
pub fn resiliencies(resources: &[Resource]) -> Vec<Result<Resiliency, ResiliencyParseError>> {
    resources
        .iter()
        .filter_map(Resiliency::from_resource)
        .collect()
}

/// YAML writes `timeout: 500` as a number; the CRD keeps it as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Int(i64),
    Float(f64),
}

impl From<StringOrNumber> for String {
    fn from(v: StringOrNumber) -> Self {
        match v {
            StringOrNumber::String(s) => s,
            StringOrNumber::Int(i) => i.to_string(),
            StringOrNumber::Float(f) => f.to_string(),
        }
    }
}

/// `key:` with nothing after it is YAML null; Dapr reads it as the zero value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn opt_string_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<StringOrNumber>::deserialize(d)?.map(String::from))
}

fn duration_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = Option::<BTreeMap<String, StringOrNumber>>::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from(v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_documents;

    const SAMPLE: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
  namespace: prod
scopes:
  - checkout
spec:
  policies:
    timeouts:
      general: 5s
      important: 60s
      largeResponse: 10s
      numeric: 1500
    retries:
      pubsubRetry:
        policy: constant
        duration: 5s
        maxRetries: 10
      retryForever:
        policy: exponential
        maxInterval: 15s
        maxRetries: -1
      important:
        policy: constant
        duration: 5s
        maxRetries: 30
        matching:
          httpStatusCodes: "500,502-504"
          gRPCStatusCodes: 1-4
    circuitBreakers:
      simpleCB:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 5
      pubsubCB:
        maxRequests: 1
        interval: 8s
        timeout: 45s
        trip: totalFailures > 3
  targets:
    apps:
      appB:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerCacheSize: 1000
    actors:
      myActorType:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerScope: both
        circuitBreakerCacheSize: 5000
    components:
      statestore1:
        outbound:
          timeout: general
          retry: retryForever
          circuitBreaker: simpleCB
      pubsub1:
        inbound:
          timeout: general
          retry: important
          circuitBreaker: pubsubCB
"#;

    #[test]
    fn parses_a_full_resiliency_document() {
        let resources = parse_documents(SAMPLE).unwrap();
        let parsed = resiliencies(&resources);
        assert_eq!(parsed.len(), 1);
        let r = parsed.into_iter().next().unwrap().unwrap();
        assert_eq!(r.name(), "myresiliency");
        assert_eq!(r.metadata.namespace.as_deref(), Some("prod"));
        assert!(r.in_scope("checkout") && !r.in_scope("cart"));

        let p = &r.spec.policies;
        assert_eq!(p.timeouts["general"], "5s");
        assert_eq!(p.timeouts["numeric"], "1500");
        assert_eq!(p.retries["retryForever"].max_retries, Some(-1));
        assert_eq!(
            p.retries["retryForever"].policy.as_deref(),
            Some("exponential")
        );
        let m = p.retries["important"].matching.as_ref().unwrap();
        assert_eq!(m.http_status_codes.as_deref(), Some("500,502-504"));
        assert_eq!(m.grpc_status_codes.as_deref(), Some("1-4"));
        assert_eq!(
            p.circuit_breakers["pubsubCB"].trip.as_deref(),
            Some("totalFailures > 3")
        );
        assert_eq!(p.circuit_breakers["pubsubCB"].max_requests, Some(1));

        let t = &r.spec.targets;
        assert_eq!(t.apps["appB"].circuit_breaker_cache_size, Some(1000));
        assert_eq!(t.actors["myActorType"].circuit_breaker_scope, "both");
        assert_eq!(t.components["statestore1"].outbound.retry, "retryForever");
        assert_eq!(t.components["statestore1"].inbound, PolicyNames::default());
        assert_eq!(t.components["pubsub1"].inbound.circuit_breaker, "pubsubCB");
    }

    #[test]
    fn minimal_and_empty_documents_parse() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: empty\n---\napiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: only-timeouts\nspec:\n  policies:\n    timeouts:\n      t: 1s\n  targets: {}\n";
        let resources = parse_documents(text).unwrap();
        let parsed: Vec<_> = resiliencies(&resources)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].spec, ResiliencySpec::default());
        assert_eq!(parsed[1].spec.policies.timeouts["t"], "1s");
    }

    #[test]
    fn empty_yaml_keys_read_as_defaults() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: sparse\nscopes:\nspec:\n  policies:\n    timeouts:\n    retries:\n    circuitBreakers:\n  targets:\n    components:\n      c:\n        inbound:\n        outbound:\n          retry:\n          timeout: t\n";
        let resources = parse_documents(text).unwrap();
        let r = resiliencies(&resources).remove(0).unwrap();
        assert!(r.scopes.is_empty());
        assert_eq!(r.spec.policies, ResiliencyPolicies::default());
        let c = &r.spec.targets.components["c"];
        assert_eq!(c.inbound, PolicyNames::default());
        assert_eq!(
            (c.outbound.retry.as_str(), c.outbound.timeout.as_str()),
            ("", "t")
        );
    }

    #[test]
    fn reports_type_errors_with_the_resource_name() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: broken\nspec:\n  policies:\n    retries:\n      r:\n        maxRetries: lots\n";
        let resources = parse_documents(text).unwrap();
        let err = resiliencies(&resources).remove(0).unwrap_err();
        assert_eq!(err.name, "broken");
        assert!(err.to_string().contains("broken"), "{err}");
    }

    #[test]
    fn other_kinds_are_not_resiliencies() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s\n";
        let resources = parse_documents(text).unwrap();
        assert!(resiliencies(&resources).is_empty());
    }

    #[test]
    fn round_trips_through_json() {
        let resources = parse_documents(SAMPLE).unwrap();
        let r = resiliencies(&resources).remove(0).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["spec"]["policies"]["retries"]["important"]["matching"]["gRPCStatusCodes"],
            "1-4"
        );
        let back = Resiliency::from_document(&json).unwrap();
        assert_eq!(back, r);
    }
}
