//! The `dapr-injector` binary over real TLS on loopback: admission answers,
//! bad bodies, healthz, metrics, and certificate hot reload.

mod support;

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use support::*;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dapr-injector"))
}

fn review(annotations: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b3c1a9d0-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "orders-1", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "orders:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn serves_admission_over_tls_and_rejects_bad_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a");
    let mut inj = InjectorProcess::start(binary(), &pki, &[], &[]);
    inj.wait_healthy(Duration::from_secs(20)).await;
    let cfg = client_config(&pki.ca_pem);

    // A Dapr pod: allowed with a patch adding daprd.
    let (status, body) = tls_post(
        inj.addr(),
        cfg.clone(),
        "/mutate",
        "application/json",
        review(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], "b3c1a9d0-0000-4000-8000-000000000001");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");

    // A bad annotation: denied, naming it.
    let (status, body) = tls_post(
        inj.addr(),
        cfg.clone(),
        "/mutate",
        "application/json",
        review(json!({"dapr.io/enabled": "true", "dapr.io/app-port": "abc"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(
        v["response"]["status"]["message"],
        "invalid value 'abc' for annotation dapr.io/app-port: not an integer"
    );

    // Malformed JSON and empty bodies: 400, and the server keeps serving.
    for bad in [
        &b"{\"apiVersion\": "[..],
        b"",
        b"not json at all",
        b"{\"request\": 5}",
    ] {
        let (status, body) = tls_post(
            inj.addr(),
            cfg.clone(),
            "/mutate",
            "application/json",
            bad.to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(
            status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(bad),
            String::from_utf8_lossy(&body)
        );
    }
    let (status, _) = tls_post(
        inj.addr(),
        cfg.clone(),
        "/mutate",
        "text/plain",
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 415);
    let (status, _) = tls_post(
        inj.addr(),
        cfg.clone(),
        "/other",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    assert!(inj.child.try_wait().unwrap().is_none(), "the injector died");

    // Plain HTTP on the TLS port is refused by the handshake, not served.
    assert!(
        plain_get(inj.port, "/mutate")
            .await
            .map(|(s, _)| s)
            .unwrap_or(0)
            != 200
    );

    // Metrics count the requests.
    let (status, metrics) = plain_get(inj.metrics_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "dapr_injector_sidecar_injection_failed_total{app_id=\"orders-1\",reason=\"patch\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn reloads_the_certificate_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pki(dir.path(), "first");
    let mut inj = InjectorProcess::start(binary(), &first, &[], &[]);
    inj.wait_healthy(Duration::from_secs(20)).await;
    let (_, leaf) = tls_connect(inj.addr(), client_config(&first.ca_pem))
        .await
        .unwrap();
    assert_eq!(leaf, first.leaf_der);

    // New CA and leaf written over the same paths.
    let second = write_pki(dir.path(), "second");
    std::fs::copy(&second.key_path, &first.key_path).unwrap();
    std::fs::copy(&second.cert_path, &first.cert_path).unwrap();
    let cfg2 = client_config(&second.ca_pem);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tls_connect(inj.addr(), cfg2.clone()).await {
            Ok((_, leaf)) if leaf == second.leaf_der => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "new certificate not served: {:?}",
                    other.map(|_| ())
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The old CA no longer verifies it.
    assert!(
        tls_connect(inj.addr(), client_config(&first.ca_pem))
            .await
            .is_err()
    );
}

/// What a finished injector printed: the log goes to stderr, like daprd's.
fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn refuses_to_start_without_required_settings_or_certs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "x");
    // No SIDECAR_IMAGE.
    let out = std::process::Command::new(binary())
        .env_clear()
        .env("NAMESPACE", "dapr-system")
        .args([
            format!("--tls-cert-file={}", pki.cert_path.display()),
            format!("--tls-key-file={}", pki.key_path.display()),
            "--port=0".to_owned(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(output_text(&out).contains("SIDECAR_IMAGE"), "{out:?}");
    // A key that does not match the certificate.
    let other = write_pki(dir.path(), "y");
    let out = std::process::Command::new(binary())
        .env_clear()
        .env("NAMESPACE", "dapr-system")
        .env("SIDECAR_IMAGE", "img")
        .args([
            format!("--tls-cert-file={}", pki.cert_path.display()),
            format!("--tls-key-file={}", other.key_path.display()),
            format!("--trust-anchors-file={}", pki.ca_path.display()),
            "--port=0".to_owned(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = output_text(&out);
    assert!(log.contains("loading the webhook certificate"), "{log}");
}
