//! The `dapr.io` kinds the operator serves, and the per-kind checks and
//! normalisation applied to each object before it is cached.

use kube::{
    api::{ApiResource, GroupVersionKind},
    core::DynamicObject,
};
use serde::Deserialize;
use serde_json::Value;

/// One served kind.
#[derive(Debug)]
pub struct KindSpec {
    pub kind: &'static str,
    pub plural: &'static str,
    /// Version read from the apiserver (the storage version).
    pub version: &'static str,
    /// Whether the kind carries top-level `scopes`.
    pub scoped: bool,
    /// Typed parse with the shared `dapr_crds` types: what daprd will do
    /// with the payload. An object that fails it is not served.
    check: fn(&Value) -> Result<(), String>,
    /// In-place fix-ups of the served JSON.
    normalize: fn(&mut Value),
}

impl KindSpec {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(dapr_crds::GROUP, self.version, self.kind),
            self.plural,
        )
    }

    /// Turns an apiserver object into the JSON served to sidecars, or says
    /// why it cannot be served.
    pub fn prepare(&self, obj: &DynamicObject) -> Result<Value, String> {
        let mut json = serde_json::to_value(obj).map_err(|e| e.to_string())?;
        if let Some(meta) = json.get_mut("metadata").and_then(Value::as_object_mut) {
            // Bookkeeping sidecars never read; dropping it keeps the cache small.
            meta.remove("managedFields");
            if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                ann.remove("kubectl.kubernetes.io/last-applied-configuration");
                if ann.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
        (self.normalize)(&mut json);
        (self.check)(&json)?;
        Ok(json)
    }
}

fn typed<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

fn no_op(_: &mut Value) {}

/// A v1alpha1 subscription stored without a conversion webhook keeps its
/// single `route`; serve it as v2alpha1's default route.
fn subscription_routes(v: &mut Value) {
    let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let route = match spec.remove("route") {
        Some(Value::String(r)) if !r.is_empty() => r,
        _ => return,
    };
    let routes = spec
        .entry("routes")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(routes) = routes.as_object_mut() {
        let has_default = routes
            .get("default")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.is_empty());
        if !has_default {
            routes.insert("default".into(), Value::String(route));
        }
    }
}

pub static COMPONENT: KindSpec = KindSpec {
    kind: "Component",
    plural: "components",
    version: "v1alpha1",
    scoped: true,
    check: typed::<dapr_crds::Component>,
    normalize: no_op,
};

pub static CONFIGURATION: KindSpec = KindSpec {
    kind: "Configuration",
    plural: "configurations",
    version: "v1alpha1",
    scoped: false,
    check: typed::<dapr_crds::Configuration>,
    normalize: no_op,
};

pub static SUBSCRIPTION: KindSpec = KindSpec {
    kind: "Subscription",
    plural: "subscriptions",
    version: "v2alpha1",
    scoped: true,
    check: typed::<dapr_crds::subscription_v2alpha1::Subscription>,
    normalize: subscription_routes,
};

pub static RESILIENCY: KindSpec = KindSpec {
    kind: "Resiliency",
    plural: "resiliencies",
    version: "v1alpha1",
    scoped: true,
    check: |v| {
        dapr_crds::Resiliency::from_document(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    },
    normalize: no_op,
};

pub static HTTP_ENDPOINT: KindSpec = KindSpec {
    kind: "HTTPEndpoint",
    plural: "httpendpoints",
    version: "v1alpha1",
    scoped: true,
    check: typed::<dapr_crds::HttpEndpoint>,
    normalize: no_op,
};

/// The deprecated `ListSubscriptions` answers in v1alpha1's shape.
pub fn subscription_as_v1alpha1(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "apiVersion".into(),
            Value::String("dapr.io/v1alpha1".into()),
        );
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        let default = spec
            .remove("routes")
            .and_then(|r| r.get("default").cloned())
            .unwrap_or(Value::String(String::new()));
        spec.insert("route".into(), default);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn prepare_drops_bookkeeping_and_keeps_daprs_fields() {
        let obj = dynamic(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u1",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "state.redis", "version": "v1",
                "metadata": [{"name": "redisHost", "value": "r:6379"}]},
            "auth": {"secretStore": "kubernetes"},
            "scopes": ["a"]
        }));
        let v = COMPONENT.prepare(&obj).unwrap();
        assert!(v["metadata"].get("managedFields").is_none());
        assert!(v["metadata"].get("annotations").is_none());
        assert_eq!(v["metadata"]["uid"], "u1");
        assert_eq!(v["spec"]["metadata"][0]["value"], "r:6379");
        assert_eq!(v["auth"]["secretStore"], "kubernetes");
        assert_eq!(v["scopes"][0], "a");
    }

    #[test]
    fn prepare_rejects_what_daprd_could_not_parse() {
        let obj = dynamic(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "broken", "namespace": "ns"},
            "spec": {"version": "v1", "metadata": [{"value": "no name"}]}
        }));
        let err = COMPONENT.prepare(&obj).unwrap_err();
        assert!(err.contains("type") || err.contains("name"), "{err}");
    }

    #[test]
    fn v1_route_is_served_as_default_route_and_back() {
        let obj = dynamic(json!({
            "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"pubsubname": "p", "topic": "t", "route": "/orders"}
        }));
        let v = SUBSCRIPTION.prepare(&obj).unwrap();
        assert_eq!(v["spec"]["routes"]["default"], "/orders");
        assert!(v["spec"].get("route").is_none());
        let v1 = subscription_as_v1alpha1(v);
        assert_eq!(v1["apiVersion"], "dapr.io/v1alpha1");
        assert_eq!(v1["spec"]["route"], "/orders");
        assert!(v1["spec"].get("routes").is_none());
    }

    #[test]
    fn explicit_default_route_wins() {
        let obj = dynamic(json!({
            "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"pubsubname": "p", "topic": "t", "route": "/old",
                     "routes": {"default": "/new"}}
        }));
        let v = SUBSCRIPTION.prepare(&obj).unwrap();
        assert_eq!(v["spec"]["routes"]["default"], "/new");
    }
}
