//! The Subscription conversion webhook (`POST /convert`, Dapr's port 19443
//! behind the `dapr-webhook` Service) and the upkeep of the CRD's
//! `caBundle`.
//!
//! v1alpha1 has one `route`; v2alpha1 has `routes.rules` and
//! `routes.default`. `route` ↔ `routes.default`, every other field is
//! copied. Rules, which v1alpha1 cannot hold, travel in the annotation
//! [`RULES_ANNOTATION`] of the v1alpha1 object, so a v2alpha1 object read
//! through v1alpha1 and written back keeps them (Dapr's conversion drops
//! them, and `deadLetterTopic`, `bulkSubscribe` and `scopes` with them).

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Map, Value, json};

/// Where v2alpha1 `routes.rules` are kept on a v1alpha1 object.
pub const RULES_ANNOTATION: &str = "subscriptions.dapr.io/v2alpha1-rules";
/// The CRD Dapr's operator keeps the conversion settings of.
pub const SUBSCRIPTIONS_CRD: &str = "subscriptions.dapr.io";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConversionError {
    #[error("not a ConversionReview request: {0}")]
    Review(String),
    #[error("object {name}: {reason}")]
    Object { name: String, reason: String },
}

/// Answers one `apiextensions.k8s.io/v1` ConversionReview. A malformed
/// review is an `Err` (the HTTP layer answers 400); an object that cannot
/// be converted fails the review with a message, as the apiserver expects.
pub fn review(body: &[u8]) -> Result<Value, ConversionError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ConversionError::Review(e.to_string()))?;
    let request = review
        .get("request")
        .ok_or_else(|| ConversionError::Review("no request".into()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or_else(|| ConversionError::Review("request.uid missing".into()))?;
    let desired = request
        .get("desiredAPIVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| ConversionError::Review("request.desiredAPIVersion missing".into()))?;
    let objects = request
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| ConversionError::Review("request.objects missing".into()))?;
    let converted: Result<Vec<Value>, ConversionError> =
        objects.iter().map(|o| convert(o, desired)).collect();
    let response = match converted {
        Ok(objects) => json!({
            "uid": uid,
            "convertedObjects": objects,
            "result": {"status": "Success"},
        }),
        Err(e) => {
            tracing::warn!(error = %e, desired, "conversion failed");
            json!({
                "uid": uid,
                "convertedObjects": [],
                "result": {"status": "Failure", "message": e.to_string()},
            })
        }
    };
    Ok(json!({
        "apiVersion": review.get("apiVersion").cloned().unwrap_or_else(|| json!("apiextensions.k8s.io/v1")),
        "kind": "ConversionReview",
        "response": response,
    }))
}

/// `(group, version)` of an apiVersion.
fn split(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// Converts one Subscription to `desired` (`<group>/v1alpha1` or
/// `<group>/v2alpha1`). The group is not checked, so the same code serves
/// any group holding Dapr's Subscription versions.
pub fn convert(object: &Value, desired: &str) -> Result<Value, ConversionError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let fail = |reason: String| ConversionError::Object {
        name: name.clone(),
        reason,
    };
    let from = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("apiVersion missing".into()))?;
    let (_, from_version) = split(from);
    let (_, to_version) = split(desired);
    let mut out = object.clone();
    out["apiVersion"] = json!(desired);
    match (from_version, to_version) {
        (a, b) if a == b => {}
        ("v1alpha1", "v2alpha1") => to_v2(&mut out).map_err(fail)?,
        ("v2alpha1", "v1alpha1") => to_v1(&mut out).map_err(fail)?,
        (a, b) => return Err(fail(format!("cannot convert {a} to {b}"))),
    }
    Ok(out)
}

fn spec_of(object: &mut Value) -> Result<&mut Map<String, Value>, String> {
    let spec = object
        .as_object_mut()
        .ok_or("not an object")?
        .entry("spec")
        .or_insert_with(|| json!({}));
    spec.as_object_mut()
        .ok_or_else(|| "spec is not an object".into())
}

fn annotations_of(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()
}

/// v1alpha1 → v2alpha1: `route` becomes `routes.default`; rules come back
/// from the annotation.
fn to_v2(object: &mut Value) -> Result<(), String> {
    let rules = match annotations_of(object).and_then(|a| a.remove(RULES_ANNOTATION)) {
        Some(Value::String(s)) => Some(
            serde_json::from_str::<Value>(&s)
                .map_err(|e| format!("annotation {RULES_ANNOTATION}: {e}"))?,
        ),
        Some(_) => return Err(format!("annotation {RULES_ANNOTATION} is not a string")),
        None => None,
    };
    if annotations_of(object).is_some_and(|a| a.is_empty())
        && let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.remove("annotations");
    }
    let spec = spec_of(object)?;
    let route = spec.remove("route");
    let mut routes = Map::new();
    if let Some(rules) = rules.filter(|r| r.as_array().is_some_and(|a| !a.is_empty())) {
        routes.insert("rules".into(), rules);
    }
    if let Some(r) = route.filter(|r| r.as_str().is_some_and(|s| !s.is_empty())) {
        routes.insert("default".into(), r);
    }
    spec.insert("routes".into(), Value::Object(routes));
    Ok(())
}

/// v2alpha1 → v1alpha1: `routes.default` becomes `route`; rules are kept in
/// the annotation.
fn to_v1(object: &mut Value) -> Result<(), String> {
    let spec = spec_of(object)?;
    let routes = spec.remove("routes");
    // A v1alpha1 object stored before the webhook existed still has `route`.
    let stored_route = spec.remove("route");
    let default = routes
        .as_ref()
        .and_then(|r| r.get("default"))
        .filter(|d| d.as_str().is_some_and(|s| !s.is_empty()))
        .cloned()
        .or(stored_route)
        .unwrap_or_else(|| json!(""));
    spec.insert("route".into(), default);
    let rules = routes
        .as_ref()
        .and_then(|r| r.get("rules"))
        .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()));
    if let Some(rules) = rules {
        let text = serde_json::to_string(rules).map_err(|e| e.to_string())?;
        let meta = object
            .as_object_mut()
            .ok_or("not an object")?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().ok_or("metadata is not an object")?;
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("metadata.annotations is not an object")?;
        annotations.insert(RULES_ANNOTATION.into(), Value::String(text));
    }
    Ok(())
}

/// The JSON patch that brings the CRD's webhook settings to `ca_pem` and
/// `namespace`, if it needs one. Only a CRD whose conversion strategy is
/// `Webhook` is touched: one installed with `None` (e.g. from
/// `crds/generated`) is left as it is. A `service` reference gets the
/// operator's namespace (the chart ships `replaceme`, as Dapr's).
pub fn ca_bundle_patch(crd: &Value, ca_pem: &[u8], namespace: &str) -> Option<Value> {
    let conversion = crd.pointer("/spec/conversion")?;
    if conversion.get("strategy").and_then(Value::as_str) != Some("Webhook") {
        return None;
    }
    let client = conversion.pointer("/webhook/clientConfig")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut ops = Vec::new();
    if client.get("caBundle").and_then(Value::as_str) != Some(b64.as_str()) {
        ops.push(json!({"op": "add", "path": "/spec/conversion/webhook/clientConfig/caBundle", "value": b64}));
    }
    if let Some(service) = client.get("service")
        && service.get("namespace").and_then(Value::as_str) != Some(namespace)
    {
        ops.push(json!({"op": "add", "path": "/spec/conversion/webhook/clientConfig/service/namespace", "value": namespace}));
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// Keeps the conversion settings of CRD `name` current: at start, then
/// every `every` (the trust anchors file is re-read each time, so a rotated
/// root reaches the apiserver).
pub async fn keep_ca_bundle(
    client: Client,
    name: String,
    anchors_file: String,
    namespace: String,
    every: Duration,
) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut last_error = String::new();
    loop {
        let result = async {
            let pem = tokio::fs::read(&anchors_file)
                .await
                .map_err(|e| format!("reading {anchors_file}: {e}"))?;
            let crd = api.get(&name).await.map_err(|e| e.to_string())?;
            let crd = serde_json::to_value(&crd).map_err(|e| e.to_string())?;
            match ca_bundle_patch(&crd, &pem, &namespace) {
                Some(patch) => {
                    let patch: json_patch::Patch =
                        serde_json::from_value(patch).map_err(|e| e.to_string())?;
                    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!(crd = %name, "conversion webhook caBundle updated");
                    Ok::<_, String>(())
                }
                None => Ok(()),
            }
        }
        .await;
        match result {
            Ok(()) => last_error.clear(),
            Err(e) if e != last_error => {
                tracing::warn!(crd = %name, error = %e, "cannot update the conversion webhook settings; retrying");
                last_error = e;
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// The webhook's HTTP routes: `POST /convert`.
pub fn router() -> axum::Router {
    use axum::{body::Bytes, http::StatusCode, response::IntoResponse, routing::post};
    axum::Router::new().route(
        "/convert",
        post(|body: Bytes| async move {
            match review(&body) {
                Ok(v) => axum::Json(v).into_response(),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }),
    )
}

/// Serves [`router`] over TLS with `config` on `listener` until the task is
/// dropped (handshakes bounded and concurrent, as the gRPC API's).
pub async fn serve(listener: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) {
    use tokio_stream::StreamExt;
    let mut incoming =
        dapr_security::net::tls_incoming(listener, config, dapr_security::net::HANDSHAKE_TIMEOUT);
    let app = router();
    while let Some(conn) = incoming.next().await {
        let Ok(tls) = conn else { continue };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await
            {
                tracing::debug!(error = %e, "webhook connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(route: &str) -> Value {
        json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "namespace": "n", "uid": "u1", "resourceVersion": "3"},
            "spec": {"pubsubname": "pubsub", "topic": "orders", "route": route,
                     "metadata": {"rawPayload": "true"}, "deadLetterTopic": "dlq",
                     "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10}},
            "scopes": ["app1"],
        })
    }

    #[test]
    fn v1_to_v2_moves_route_to_default_and_keeps_the_rest() {
        let v2 = convert(&v1("/orders"), "dapr.io/v2alpha1").unwrap();
        assert_eq!(v2["apiVersion"], "dapr.io/v2alpha1");
        assert_eq!(v2["spec"]["routes"], json!({"default": "/orders"}));
        assert!(v2["spec"].get("route").is_none());
        assert_eq!(v2["spec"]["deadLetterTopic"], "dlq");
        assert_eq!(v2["spec"]["bulkSubscribe"]["maxMessagesCount"], 10);
        assert_eq!(v2["spec"]["metadata"]["rawPayload"], "true");
        assert_eq!(v2["scopes"], json!(["app1"]));
        assert_eq!(v2["metadata"]["uid"], "u1");
    }

    #[test]
    fn v2_rules_survive_a_round_trip_through_v1() {
        let v2 = json!({
            "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "annotations": {"team": "x"}},
            "spec": {"pubsubname": "p", "topic": "t",
                     "routes": {"rules": [{"match": "event.type == \"a\"", "path": "/a"}], "default": "/d"}},
        });
        let v1 = convert(&v2, "dapr.io/v1alpha1").unwrap();
        assert_eq!(v1["spec"]["route"], "/d");
        assert!(v1["spec"].get("routes").is_none());
        assert_eq!(v1["metadata"]["annotations"]["team"], "x");
        assert!(
            v1["metadata"]["annotations"][RULES_ANNOTATION]
                .as_str()
                .unwrap()
                .contains("/a")
        );
        let back = convert(&v1, "dapr.io/v2alpha1").unwrap();
        assert_eq!(back, v2);
    }

    #[test]
    fn same_version_and_other_groups() {
        let o = v1("/x");
        assert_eq!(convert(&o, "dapr.io/v1alpha1").unwrap(), o);
        let other = convert(&o, "subs.example.test/v2alpha1").unwrap();
        assert_eq!(other["apiVersion"], "subs.example.test/v2alpha1");
        assert!(matches!(
            convert(&o, "dapr.io/v9"),
            Err(ConversionError::Object { .. })
        ));
    }

    #[test]
    fn review_answers_success_failure_and_rejects_garbage() {
        let req = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "r1", "desiredAPIVersion": "dapr.io/v2alpha1", "objects": [v1("/o")]}});
        let resp = review(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(resp["response"]["uid"], "r1");
        assert_eq!(resp["response"]["result"]["status"], "Success");
        assert_eq!(
            resp["response"]["convertedObjects"][0]["spec"]["routes"]["default"],
            "/o"
        );
        let bad = json!({"request": {"uid": "r2", "desiredAPIVersion": "dapr.io/v3", "objects": [v1("/o")]}});
        let resp = review(&serde_json::to_vec(&bad).unwrap()).unwrap();
        assert_eq!(resp["response"]["result"]["status"], "Failure");
        assert!(review(b"{not json").is_err());
        assert!(review(b"{}").is_err());
    }

    #[test]
    fn ca_bundle_patch_only_for_webhook_crds() {
        let crd = |strategy: &str| {
            json!({"spec": {"conversion": {"strategy": strategy, "webhook": {"clientConfig": {
                "service": {"namespace": "replaceme", "name": "dapr-webhook", "path": "/convert"}}}}}})
        };
        assert!(ca_bundle_patch(&crd("None"), b"pem", "dapr-system").is_none());
        let patch = ca_bundle_patch(&crd("Webhook"), b"pem", "dapr-system").unwrap();
        let ops = patch.as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1]["value"], "dapr-system");
        let mut done = crd("Webhook");
        done["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"] = json!("cGVt");
        done["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["namespace"] =
            json!("dapr-system");
        assert!(ca_bundle_patch(&done, b"pem", "dapr-system").is_none());
    }
}
