//! AdmissionReview in, AdmissionReview out, through `Injector::review`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::{Engine, engine::general_purpose::STANDARD};
use dapr_injector::{
    admission::{BadReview, Injector},
    authz::Allowed,
    metrics::Metrics,
    mtls::MtlsLookup,
    settings::Settings,
};
use serde_json::{Value, json};

fn injector(extra_allowed: &[&str]) -> Injector {
    Injector {
        settings: Settings::new("dapr-rs/daprd:dev", "dapr-system"),
        allowed: Allowed::new(extra_allowed.iter().copied()).unwrap(),
        trust_anchors: Arc::new(ArcSwap::from_pointee("ANCHORS".to_owned())),
        mtls: MtlsLookup::Fixed(false),
        metrics: Arc::new(Metrics::new()),
    }
}

fn review(user: &str, kind: &str, annotations: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": user, "groups": ["system:serviceaccounts"]},
            "object": {
                "apiVersion": "v1", "kind": kind,
                "metadata": {"name": "orders-1", "namespace": "shop", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "orders:1"}]}
            },
            "dryRun": false
        }
    }))
    .unwrap()
}

async fn answer(inj: &Injector, body: &[u8]) -> Value {
    let out = inj.review(body).await.expect("a review answer");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    v["response"].clone()
}

const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

#[tokio::test]
async fn allowed_controller_gets_a_patch() {
    let inj = injector(&[]);
    let r = answer(
        &inj,
        &review(
            RS_CONTROLLER,
            "Pod",
            json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}),
        ),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch: Value =
        serde_json::from_slice(&STANDARD.decode(r["patch"].as_str().unwrap()).unwrap()).unwrap();
    let daprd = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["path"] == "/spec/containers/-")
        .expect("daprd added");
    let args: Vec<&str> = daprd["value"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--app-id", "orders"]));
    // mTLS comes from the lookup (Fixed(false) here).
    assert!(!args.contains(&"--enable-mtls"));
    let env = daprd["value"]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "DAPR_TRUST_ANCHORS" && e["value"] == "ANCHORS")
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "NAMESPACE" && e["value"] == "shop")
    );
    let m = inj.metrics.render();
    assert!(
        m.contains("dapr_injector_sidecar_injection_requests_total 1"),
        "{m}"
    );
    assert!(
        m.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn other_users_pods_are_admitted_unchanged() {
    let inj = injector(&[]);
    for user in ["system:serviceaccount:default:default", "alice"] {
        let r = answer(
            &inj,
            &review(user, "Pod", json!({"dapr.io/enabled": "true"})),
        )
        .await;
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none(), "{user}: {r}");
    }
    // ... unless listed.
    let inj = injector(&["default:*"]);
    let r = answer(
        &inj,
        &review(
            "system:serviceaccount:default:ci",
            "Pod",
            json!({"dapr.io/enabled": "true"}),
        ),
    )
    .await;
    assert!(r.get("patch").is_some());
    let m = injector(&[]);
    let _ = answer(
        &m,
        &review("alice", "Pod", json!({"dapr.io/enabled": "true"})),
    )
    .await;
    assert!(m.metrics.render().contains(
        "dapr_injector_sidecar_injection_failed_total{app_id=\"orders-1\",reason=\"pod_patch\"} 1"
    ));
}

#[tokio::test]
async fn unannotated_and_other_kinds_are_allowed_without_patch() {
    let inj = injector(&[]);
    for (kind, ann) in [
        ("Pod", json!({})),
        ("Pod", json!({"dapr.io/enabled": "false"})),
        ("Service", json!({"dapr.io/enabled": "true"})),
    ] {
        let r = answer(&inj, &review(RS_CONTROLLER, kind, ann)).await;
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
    }
}

#[tokio::test]
async fn invalid_annotation_is_denied_with_a_clear_message() {
    let inj = injector(&[]);
    let r = answer(
        &inj,
        &review(
            RS_CONTROLLER,
            "Pod",
            json!({"dapr.io/enabled": "true", "dapr.io/app-port": "abc"}),
        ),
    )
    .await;
    assert_eq!(r["allowed"], false);
    assert_eq!(
        r["status"]["message"],
        "invalid value 'abc' for annotation dapr.io/app-port: not an integer"
    );
    assert_eq!(r["status"]["code"], 400);
    assert!(r.get("patch").is_none());
    let r = answer(
        &inj,
        &review(
            RS_CONTROLLER,
            "Pod",
            json!({"dapr.io/enabled": "true", "dapr.io/sidecar-cpu-limit": "2 cores"}),
        ),
    )
    .await;
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("invalid value '2 cores' for annotation dapr.io/sidecar-cpu-limit"),
        "{msg}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_errors_not_panics() {
    let inj = injector(&[]);
    assert!(matches!(inj.review(b"").await, Err(BadReview::Empty)));
    for body in [
        &b"{"[..],
        b"null",
        b"[]",
        b"{\"kind\":\"AdmissionReview\"}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":1}}",
        &[0xff, 0xfe, 0x00][..],
    ] {
        let e = inj.review(body).await;
        assert!(e.is_err(), "{:?} accepted", String::from_utf8_lossy(body));
    }
    // A request whose object is not a valid Pod is denied, not crashed on.
    let mut v: Value = serde_json::from_slice(&review(
        RS_CONTROLLER,
        "Pod",
        json!({"dapr.io/enabled": "true"}),
    ))
    .unwrap();
    v["request"]["object"]["spec"]["containers"] = json!("not-a-list");
    let r = answer(&inj, &serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the pod")
    );
}
