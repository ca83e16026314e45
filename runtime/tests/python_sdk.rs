//! The official Python SDK (`pip install dapr`) against the real daprd, with
//! the embedded SQLite default and with Redis. Tests live in e2e/python.

mod common;

use std::process::Command;

use common::*;

fn run_pytest(d: &Daprd, files: &[&str]) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(files.iter().map(|f| format!("{root}/e2e/python/{f}")))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("STATE_STORE", "statestore")
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 5 = no tests collected: a failure here, not a pass.
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{text}\n--- daprd log ---\n{}",
        out.status,
        d.logs()
    );
    assert!(text.contains(" passed"), "{text}");
    println!("{text}");
}

#[tokio::test]
async fn python_sdk_against_embedded_sqlite_default() {
    let data = tempfile::tempdir().unwrap();
    let d = DaprdBuilder::new("pysdk-sqlite")
        .arg("--data-dir")
        .arg(data.path().to_string_lossy().to_string())
        .start()
        .await;
    run_pytest(&d, &["test_state_sdk.py", "test_state_http.py"]);
}

#[tokio::test]
async fn python_sdk_against_redis() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "redis.yaml",
        &component_yaml("statestore", "state.redis", &[("redisHost", &redis_addr())]),
    );
    let d = DaprdBuilder::new(&format!("pysdk-redis-{}", uuid::Uuid::new_v4().simple()))
        .resources(dir.path())
        .start()
        .await;
    run_pytest(&d, &["test_state_sdk.py", "test_state_http.py"]);
}

#[tokio::test]
async fn redis_data_survives_a_sidecar_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "redis.yaml",
        &component_yaml("statestore", "state.redis", &[("redisHost", &redis_addr())]),
    );
    let app = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let mut d = DaprdBuilder::new(&app).resources(dir.path()).start().await;
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"k","value":"before restart"}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(d.terminate().success());
    let d2 = DaprdBuilder::new(&app).resources(dir.path()).start().await;
    let r = http("GET", &d2.url("/v1.0/state/statestore/k"), "").await;
    assert_eq!(r.text(), "\"before restart\"");
}
