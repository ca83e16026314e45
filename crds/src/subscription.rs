//! `dapr.io` `Subscription` in its two versions: `v1alpha1` (one `route`) and
//! `v2alpha1` (`routes` with CEL `rules` and a `default`), the storage version.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectMeta;

/// The `kind` of a Subscription document.
pub const SUBSCRIPTION_KIND: &str = "Subscription";

/// Batched delivery settings, the same in both versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_messages_count: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_await_duration_ms: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// `dapr.io/v1alpha1` types.
pub mod v1alpha1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Subscription {
        #[serde(default)]
        pub api_version: String,
        #[serde(default)]
        pub kind: String,
        #[serde(default)]
        pub metadata: ObjectMeta,
        #[serde(default)]
        pub spec: SubscriptionSpec,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub scopes: Vec<String>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SubscriptionSpec {
        #[serde(default)]
        pub topic: String,
        /// Name of the pub/sub component (all lower case, as in Dapr).
        #[serde(default)]
        pub pubsubname: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub metadata: BTreeMap<String, String>,
        #[serde(default)]
        pub route: String,
        #[serde(default)]
        pub bulk_subscribe: BulkSubscribe,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub dead_letter_topic: String,
    }
}

/// `dapr.io/v2alpha1` types (the storage version).
pub mod v2alpha1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Subscription {
        #[serde(default)]
        pub api_version: String,
        #[serde(default)]
        pub kind: String,
        #[serde(default)]
        pub metadata: ObjectMeta,
        #[serde(default)]
        pub spec: SubscriptionSpec,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub scopes: Vec<String>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SubscriptionSpec {
        #[serde(default)]
        pub pubsubname: String,
        #[serde(default)]
        pub topic: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub metadata: BTreeMap<String, String>,
        #[serde(default)]
        pub routes: Routes,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub dead_letter_topic: String,
        #[serde(default)]
        pub bulk_subscribe: BulkSubscribe,
        /// v1alpha1's single route. Without the conversion webhook
        /// (`crds/generated`), a v1alpha1 object is stored as v2alpha1 with
        /// this field kept;
        /// [`super::subscription_from_document`] moves it to `routes.default`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub route: String,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Routes {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub rules: Vec<Rule>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub default: String,
    }

    /// A CEL `match` expression over the CloudEvent and the path it routes to.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Rule {
        #[serde(rename = "match", default)]
        pub match_: String,
        #[serde(default)]
        pub path: String,
    }

    impl Subscription {
        pub fn name(&self) -> &str {
            &self.metadata.name
        }

        /// Whether this subscription applies to `app_id` (no scopes = everyone).
        pub fn in_scope(&self, app_id: &str) -> bool {
            self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
        }
    }

    /// A v1alpha1 subscription's single route becomes the default route.
    impl From<super::v1alpha1::Subscription> for Subscription {
        fn from(v1: super::v1alpha1::Subscription) -> Self {
            Self {
                api_version: "dapr.io/v2alpha1".to_owned(),
                kind: SUBSCRIPTION_KIND.to_owned(),
                metadata: v1.metadata,
                spec: SubscriptionSpec {
                    pubsubname: v1.spec.pubsubname,
                    topic: v1.spec.topic,
                    metadata: v1.spec.metadata,
                    routes: Routes {
                        rules: Vec::new(),
                        default: v1.spec.route,
                    },
                    dead_letter_topic: v1.spec.dead_letter_topic,
                    bulk_subscribe: v1.spec.bulk_subscribe,
                    route: String::new(),
                },
                scopes: v1.scopes,
            }
        }
    }
}

/// Reads a Subscription document of either version as v2alpha1.
pub fn subscription_from_document(
    document: &serde_json::Value,
) -> Result<v2alpha1::Subscription, serde_json::Error> {
    let api_version = document
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if api_version == "dapr.io/v1alpha1" {
        v1alpha1::Subscription::deserialize(document).map(Into::into)
    } else {
        let mut s = v2alpha1::Subscription::deserialize(document)?;
        let route = std::mem::take(&mut s.spec.route);
        if s.spec.routes.default.is_empty() {
            s.spec.routes.default = route;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_route_becomes_v2_default() {
        let doc = serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "orders"},
            "spec": {"topic": "t", "pubsubname": "ps", "route": "/orders",
                     "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10}},
            "scopes": ["a"]
        });
        let s = subscription_from_document(&doc).unwrap();
        assert_eq!(s.api_version, "dapr.io/v2alpha1");
        assert_eq!(s.spec.routes.default, "/orders");
        assert_eq!(s.spec.bulk_subscribe.max_messages_count, 10);
        assert!(s.in_scope("a") && !s.in_scope("b"));
    }

    #[test]
    fn stored_v1_route_is_the_v2_default() {
        let doc = serde_json::json!({
            "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "orders"},
            "spec": {"topic": "t", "pubsubname": "ps", "route": "/r"}
        });
        let s = subscription_from_document(&doc).unwrap();
        assert_eq!(
            (s.spec.routes.default.as_str(), s.spec.route.as_str()),
            ("/r", "")
        );
    }

    #[test]
    fn v2_rules_parse() {
        let doc = serde_json::json!({
            "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "orders"},
            "spec": {"topic": "t", "pubsubname": "ps",
                     "routes": {"rules": [{"match": "event.type == \"x\"", "path": "/x"}], "default": "/d"}}
        });
        let s = subscription_from_document(&doc).unwrap();
        assert_eq!(s.spec.routes.default, "/d");
        assert_eq!(s.spec.routes.rules[0].match_, "event.type == \"x\"");
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back["spec"]["routes"]["rules"][0]["match"],
            "event.type == \"x\""
        );
    }
}
