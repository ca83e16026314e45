//! CustomResourceDefinitions generated from the Rust types.
//!
//! kube's `#[derive(CustomResource)]` cannot express Dapr's layout (`auth` and
//! `scopes` beside `spec` at the root), so the CRDs are assembled here from the
//! schemars schema of each root type and rewritten into a Kubernetes
//! *structural* schema that a 1.20 apiserver accepts: subschemas inlined, no
//! `nullable`/`$schema`/`title`/`default`/`format` noise, free-form values
//! marked `x-kubernetes-preserve-unknown-fields`. No CEL validations and no
//! `selectableFields` (not in 1.20).

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{Component, Configuration, HttpEndpoint, Resiliency, subscription};

/// One CRD and the chart file name Dapr uses for it.
#[derive(Debug, Clone)]
pub struct GeneratedCrd {
    /// File name under `charts/dapr/crds/`, as in Dapr's chart.
    pub file_name: &'static str,
    pub crd: Value,
}

impl GeneratedCrd {
    /// The CRD as a YAML document (`crds/generated/`).
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::ser::Error> {
        serde_saphyr::to_string(&self.crd)
    }

    /// The chart's copy (`charts/dapr/crds/`): as [`Self::crd`], except that
    /// Subscriptions convert through the operator's webhook as in Dapr's
    /// chart: `dapr-webhook` Service, `/convert`, the namespace `replaceme`
    /// and the `caBundle` patched by the operator once it runs.
    pub fn chart_crd(&self) -> Value {
        let mut crd = self.crd.clone();
        if self.file_name == SUBSCRIPTION_FILE {
            crd["spec"]["conversion"] = json!({
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {
                            "namespace": "replaceme",
                            "name": "dapr-webhook",
                            "path": "/convert",
                            "port": 443,
                        },
                    },
                    "conversionReviewVersions": ["v1"],
                },
            });
        }
        crd
    }

    /// [`Self::chart_crd`] as a YAML document.
    pub fn to_chart_yaml(&self) -> Result<String, serde_saphyr::ser::Error> {
        serde_saphyr::to_string(&self.chart_crd())
    }
}

const SUBSCRIPTION_FILE: &str = "subscription.yaml";

struct Names {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
}

/// Every `dapr.io` CRD, in a stable order.
pub fn all() -> Vec<GeneratedCrd> {
    vec![
        GeneratedCrd {
            file_name: "components.yaml",
            crd: crd(
                Names {
                    kind: "Component",
                    plural: "components",
                    singular: "component",
                },
                vec![version("v1alpha1", true, root_schema::<Component>())],
            ),
        },
        GeneratedCrd {
            file_name: "configuration.yaml",
            crd: crd(
                Names {
                    kind: "Configuration",
                    plural: "configurations",
                    singular: "configuration",
                },
                vec![version(
                    "v1alpha1",
                    true,
                    with_extra_spec_sections(root_schema::<Configuration>()),
                )],
            ),
        },
        GeneratedCrd {
            file_name: "httpendpoints.yaml",
            crd: crd(
                Names {
                    kind: "HTTPEndpoint",
                    plural: "httpendpoints",
                    singular: "httpendpoint",
                },
                vec![version("v1alpha1", true, root_schema::<HttpEndpoint>())],
            ),
        },
        GeneratedCrd {
            file_name: "resiliency.yaml",
            crd: crd(
                Names {
                    kind: "Resiliency",
                    plural: "resiliencies",
                    singular: "resiliency",
                },
                vec![version("v1alpha1", true, root_schema::<Resiliency>())],
            ),
        },
        GeneratedCrd {
            file_name: SUBSCRIPTION_FILE,
            crd: without_webhook(crd(
                Names {
                    kind: "Subscription",
                    plural: "subscriptions",
                    singular: "subscription",
                },
                vec![
                    version(
                        "v1alpha1",
                        false,
                        root_schema::<subscription::v1alpha1::Subscription>(),
                    ),
                    version(
                        "v2alpha1",
                        true,
                        root_schema::<subscription::v2alpha1::Subscription>(),
                    ),
                ],
            )),
        },
    ]
}

/// `webhook: null` beside `strategy: None`: `kubectl apply` of this copy
/// over the chart's (webhook) CRD then removes the webhook settings, which
/// the apiserver refuses to keep with `None`.
fn without_webhook(mut crd: Value) -> Value {
    crd["spec"]["conversion"]["webhook"] = Value::Null;
    crd
}

fn crd(names: Names, versions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", names.plural, crate::GROUP),
            "labels": {"app.kubernetes.io/part-of": "dapr"},
        },
        "spec": {
            "group": crate::GROUP,
            "names": {
                "kind": names.kind,
                "listKind": format!("{}List", names.kind),
                "plural": names.plural,
                "singular": names.singular,
                "categories": ["all", "dapr"],
            },
            "scope": "Namespaced",
            // Without a conversion webhook the apiserver only rewrites
            // apiVersion; the operator converts v1alpha1 Subscriptions
            // itself. The chart's Subscription CRD uses the webhook
            // (`GeneratedCrd::chart_crd`).
            "conversion": {"strategy": "None"},
            "versions": versions,
        }
    })
}

fn version(name: &str, storage: bool, schema: Value) -> Value {
    json!({
        "name": name,
        "served": true,
        "storage": storage,
        "schema": {"openAPIV3Schema": schema},
    })
}

/// The structural schema of a root type, with Kubernetes' own root fields.
fn root_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    structural(&mut schema);
    if let Some(root) = schema.as_object_mut() {
        // Kubernetes fills these; Dapr's CRDs declare them but require none.
        root.remove("required");
        root.remove("description");
        root.insert("type".into(), json!("object"));
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), json!({"type": "object"}));
        }
    }
    schema
}

/// Adds the typed-but-uninterpreted Configuration sections to `spec`.
fn with_extra_spec_sections(mut schema: Value) -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut extra = generator
        .into_root_schema_for::<crate::configuration::ExtraSections>()
        .to_value();
    structural(&mut extra);
    if let (Some(spec_props), Some(extra_props)) = (
        schema
            .pointer_mut("/properties/spec/properties")
            .and_then(Value::as_object_mut),
        extra.get("properties").and_then(Value::as_object),
    ) {
        for (k, v) in extra_props {
            spec_props.insert(k.clone(), v.clone());
        }
    }
    schema
}

/// Rewrites a schemars (OpenAPI 3) schema in place into a structural one.
fn structural(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        // `true` (anything goes) becomes an explicit free-form node.
        *schema = json!({"x-kubernetes-preserve-unknown-fields": true});
        return;
    };
    for key in [
        "$schema", "title", "nullable", "default", "format", "$defs", "examples", "minimum",
        "maximum",
    ] {
        obj.remove(key);
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for v in props.values_mut() {
            structural(v);
        }
    }
    if let Some(items) = obj.get_mut("items") {
        structural(items);
    }
    match obj.get_mut("additionalProperties") {
        Some(Value::Bool(true)) => {
            obj.remove("additionalProperties");
            obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        Some(Value::Bool(false)) => {
            obj.remove("additionalProperties");
        }
        Some(ap @ Value::Object(_)) => structural(ap),
        _ => {}
    }
    // A node with no type and no structure is a free-form value
    // (serde_json::Value): Dapr's metadata values and the like.
    let free_form = !obj.contains_key("type")
        && !obj.contains_key("properties")
        && !obj.contains_key("x-kubernetes-preserve-unknown-fields");
    if free_form {
        obj.retain(|k, _| k == "description");
        obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        // `["string", "null"]` style unions: keep the non-null type.
        let t: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        if let [single] = t.as_slice() {
            obj.insert("type".into(), single.clone());
        }
    }
    let _: &mut Map<String, Value> = obj;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    /// Every node states a type or is explicitly free-form, as the apiserver
    /// requires of structural schemas.
    fn assert_structural(path: &str, node: &Value) {
        let obj = node
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not an object"));
        let preserve = obj.contains_key("x-kubernetes-preserve-unknown-fields");
        assert!(
            obj.contains_key("type") || preserve,
            "{path}: no type: {node}"
        );
        for banned in [
            "anyOf",
            "oneOf",
            "allOf",
            "$ref",
            "nullable",
            "x-kubernetes-validations",
        ] {
            assert!(!obj.contains_key(banned), "{path}: has {banned}");
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (k, v) in props {
                assert_structural(&format!("{path}.{k}"), v);
            }
        }
        if let Some(items) = obj.get("items") {
            assert_structural(&format!("{path}[]"), items);
        }
        if let Some(ap @ Value::Object(_)) = obj.get("additionalProperties") {
            assert_structural(&format!("{path}{{}}"), ap);
        }
    }

    #[test]
    fn crds_are_structural_and_parse_as_k8s_crds() {
        for g in all() {
            let crd: CustomResourceDefinition = serde_json::from_value(g.crd.clone()).unwrap();
            assert_eq!(crd.spec.group, "dapr.io");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                crd.spec.versions.iter().filter(|v| v.storage).count(),
                1,
                "{}",
                g.file_name
            );
            for v in &g.crd["spec"]["versions"].as_array().unwrap().clone() {
                assert_structural(g.file_name, &v["schema"]["openAPIV3Schema"]);
            }
        }
    }

    #[test]
    fn schemas_carry_daprs_field_names() {
        let all = all();
        let find = |f: &str| all.iter().find(|g| g.file_name == f).unwrap().crd.clone();
        let comp = find("components.yaml");
        let root = &comp["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        assert!(
            root["spec"]["properties"]["metadata"]["items"]["properties"]["secretKeyRef"]
                .is_object()
        );
        assert_eq!(root["auth"]["properties"]["secretStore"]["type"], "string");
        assert_eq!(root["scopes"]["items"]["type"], "string");
        let ep = find("httpendpoints.yaml");
        let spec = &ep["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"][0], "baseUrl");
        assert!(
            spec["properties"]["clientTLS"]["properties"]["rootCA"]["properties"]["secretKeyRef"]
                .is_object()
        );
        let sub = find("subscription.yaml");
        let chart = all
            .iter()
            .find(|g| g.file_name == "subscription.yaml")
            .unwrap()
            .chart_crd();
        let conv = &chart["spec"]["conversion"];
        assert_eq!(conv["strategy"], "Webhook");
        assert_eq!(
            conv["webhook"]["clientConfig"]["service"]["name"],
            "dapr-webhook"
        );
        assert_eq!(
            conv["webhook"]["clientConfig"]["service"]["path"],
            "/convert"
        );
        let _: CustomResourceDefinition = serde_json::from_value(chart.clone()).unwrap();
        assert_eq!(sub["spec"]["conversion"]["strategy"], "None");
        let vs = sub["spec"]["versions"].as_array().unwrap();
        assert_eq!(
            (vs[0]["name"].as_str(), vs[0]["storage"].as_bool()),
            (Some("v1alpha1"), Some(false))
        );
        assert_eq!(
            (vs[1]["name"].as_str(), vs[1]["storage"].as_bool()),
            (Some("v2alpha1"), Some(true))
        );
        let v2 = &vs[1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(
            v2["routes"]["properties"]["rules"]["items"]["properties"]["match"]["type"],
            "string"
        );
        let cfg = find("configuration.yaml");
        let cs = &cfg["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for section in [
            "tracing",
            "mtls",
            "accessControl",
            "features",
            "nameResolution",
            "secrets",
            "workflow",
        ] {
            assert!(
                cs[section].is_object(),
                "configuration spec lacks {section}"
            );
        }
        assert_eq!(
            cs["mtls"]["properties"]["workloadCertTTL"]["type"],
            "string"
        );
    }

    /// The committed YAML (crate and chart copies) equals what `crdgen` writes.
    #[test]
    fn generated_yaml_is_fresh() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for g in all() {
            for (dir, want) in [
                ("generated", g.to_yaml().unwrap()),
                ("../charts/dapr/crds", g.to_chart_yaml().unwrap()),
            ] {
                let path = root.join(dir).join(g.file_name);
                let have = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    have == want,
                    "{} is stale: run `cargo run -p dapr-crds --bin crdgen`",
                    path.display()
                );
            }
        }
    }
}
