//! Component loading: failures stop startup with a useful message, secret and
//! environment references resolve, hot reload swaps components live, and the
//! embedded default keeps data across restarts.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn failing_component_stops_daprd_naming_file_component_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    write_resource(
        dir.path(),
        "broken.yaml",
        &component_yaml("cache", "state.redis", &[("redisHost", "127.0.0.1:1")]),
    );
    let mut d = DaprdBuilder::new("failing")
        .resources(dir.path())
        .no_wait()
        .start()
        .await;
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let logs = d.logs();
    assert!(logs.contains("broken.yaml"), "{logs}");
    assert!(
        logs.contains("'cache'") && logs.contains("state.redis"),
        "{logs}"
    );
}

#[tokio::test]
async fn unknown_component_type_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "x.yaml",
        &component_yaml("x", "state.nosuchthing", &[]),
    );
    let mut d = DaprdBuilder::new("unknowntype")
        .resources(dir.path())
        .no_wait()
        .start()
        .await;
    assert!(!d.wait_exit(Duration::from_secs(15)).success());
    let logs = d.logs();
    assert!(
        logs.contains("state.nosuchthing") && logs.contains("x.yaml"),
        "{logs}"
    );
}

#[tokio::test]
async fn ignore_errors_keeps_the_sidecar_running() {
    let dir = tempfile::tempdir().unwrap();
    let broken = component_yaml("cache", "state.redis", &[("redisHost", "127.0.0.1:1")]).replace(
        "  version: v1\n",
        "  version: v1\n  ignoreErrors: true\n  initTimeout: 2s\n",
    );
    write_resource(dir.path(), "broken.yaml", &broken);
    write_resource(
        dir.path(),
        "ok.yaml",
        &component_yaml("statestore", "state.in-memory", &[]),
    );
    let d = DaprdBuilder::new("ignoring")
        .resources(dir.path())
        .start()
        .await;
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"k","value":1}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = http("GET", &d.url("/v1.0/state/cache/k"), "").await;
    assert_eq!(r.error_code(), "ERR_STATE_STORE_NOT_FOUND");
}

#[tokio::test]
async fn secret_key_ref_and_env_ref_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let db_from_secret = data.path().join("from-secret.db");
    let db_from_env = data.path().join("from-env.db");
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        serde_json::json!({ "db": { "path": db_from_secret.to_string_lossy() } }).to_string(),
    )
    .unwrap();
    write_resource(
        dir.path(),
        "secrets.yaml",
        &component_yaml(
            "localsecrets",
            "secretstores.local.file",
            &[("secretsFile", &secrets.to_string_lossy())],
        ),
    );
    write_resource(
        dir.path(),
        "a.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: fromsecret\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    secretKeyRef:\n      name: db:path\n      key: db:path\nauth:\n  secretStore: localsecrets\n",
    );
    write_resource(
        dir.path(),
        "b.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: fromenv\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    envRef: TEST_DB_PATH\n",
    );
    let d = DaprdBuilder::new("refs")
        .resources(dir.path())
        .env("TEST_DB_PATH", &db_from_env.to_string_lossy())
        .start()
        .await;
    for store in ["fromsecret", "fromenv"] {
        let r = http(
            "POST",
            &d.url(&format!("/v1.0/state/{store}")),
            r#"[{"key":"k","value":"v"}]"#,
        )
        .await;
        assert_eq!(r.status, 204, "{store}: {}", r.text());
    }
    assert!(db_from_secret.exists(), "secretKeyRef path not used");
    assert!(db_from_env.exists(), "envRef path not used");
    // The secret's value never reaches the logs.
    assert!(!d.logs().contains("from-secret.db"), "{}", d.logs());
}

#[tokio::test]
async fn missing_secret_store_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "a.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: x\n    secretKeyRef:\n      name: db-secret\n      key: password\nauth:\n  secretStore: vault\n",
    );
    let mut d = DaprdBuilder::new("nosecrets")
        .resources(dir.path())
        .no_wait()
        .start()
        .await;
    assert!(!d.wait_exit(Duration::from_secs(15)).success());
    assert!(d.logs().contains("secret store 'vault'"), "{}", d.logs());
}

#[tokio::test]
async fn hot_reload_adds_changes_and_removes_components() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n",
    )
    .unwrap();
    let res = tempfile::tempdir().unwrap();
    write_resource(
        res.path(),
        "a.yaml",
        &component_yaml("first", "state.in-memory", &[]),
    );
    let d = DaprdBuilder::new("hotreload")
        .resources(res.path())
        .arg("--config")
        .arg(config.to_string_lossy().to_string())
        .start()
        .await;
    let save = r#"[{"key":"k","value":1}]"#;
    assert_eq!(
        http("POST", &d.url("/v1.0/state/second"), save)
            .await
            .status,
        400
    );

    write_resource(
        res.path(),
        "b.yaml",
        &component_yaml("second", "state.in-memory", &[]),
    );
    wait_until(|| async {
        http("POST", &d.url("/v1.0/state/second"), save)
            .await
            .status
            == 204
    })
    .await;

    // A changed component is rebuilt: keyPrefix none makes `a||b` legal.
    write_resource(
        res.path(),
        "b.yaml",
        &component_yaml("second", "state.in-memory", &[("keyPrefix", "none")]),
    );
    let raw = r#"[{"key":"a||b","value":1}]"#;
    wait_until(|| async { http("POST", &d.url("/v1.0/state/second"), raw).await.status == 204 })
        .await;

    std::fs::remove_file(res.path().join("b.yaml")).unwrap();
    wait_until(|| async {
        http("POST", &d.url("/v1.0/state/second"), save)
            .await
            .status
            == 400
    })
    .await;
    // The untouched component kept working throughout.
    assert_eq!(
        http("POST", &d.url("/v1.0/state/first"), save).await.status,
        204
    );
}

async fn wait_until<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn embedded_default_is_sqlite_and_survives_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().to_string();
    let mut d = DaprdBuilder::new("embedded")
        .arg("--data-dir")
        .arg(&data_dir)
        .start()
        .await;
    let m = http("GET", &d.url("/v1.0/metadata"), "").await.json();
    // Sorted by name: the embedded in-memory `pubsub`, then `statestore`.
    assert_eq!(m["components"][0]["type"], "pubsub.in-memory");
    assert_eq!(m["components"][1]["name"], "statestore");
    assert_eq!(m["components"][1]["type"], "state.sqlite");
    let caps = m["components"][1]["capabilities"].to_string();
    assert!(
        caps.contains("ACTOR") && caps.contains("TRANSACTIONAL"),
        "{caps}"
    );
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"persist","value":{"kept":true}}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(d.terminate().success());

    let d2 = DaprdBuilder::new("embedded")
        .arg("--data-dir")
        .arg(&data_dir)
        .start()
        .await;
    let r = http("GET", &d2.url("/v1.0/state/statestore/persist"), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"kept": true}));
}
