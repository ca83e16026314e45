//! The secrets API over HTTP and gRPC against a real daprd with the local
//! file and env stores, and the Configuration's `secrets.scopes`.

mod common;

use std::{path::Path, process::Command};

use common::*;
use dapr_rs_proto::runtime as pb;

const SECRETS_JSON: &str = r#"{
  "db": {"user": "admin", "password": "s3cr3t"},
  "apikey": "k-123",
  "hidden": "nope"
}"#;

const CONFIG: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: secretscopes
spec:
  secrets:
    scopes:
    - storeName: scoped
      defaultAccess: deny
      allowedSecrets: ["apikey"]
    - storeName: localsecrets
      deniedSecrets: ["hidden"]
"#;

fn file_store(name: &str, file: &Path) -> String {
    component_yaml(
        name,
        "secretstores.local.file",
        &[
            ("secretsFile", &file.display().to_string()),
            ("nestedSeparator", "."),
        ],
    )
}

async fn start() -> (Daprd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("resources");
    std::fs::create_dir(&res).unwrap();
    let file = dir.path().join("secrets.json");
    std::fs::write(&file, SECRETS_JSON).unwrap();
    write_resource(&res, "local.yaml", &file_store("localsecrets", &file));
    write_resource(&res, "scoped.yaml", &file_store("scoped", &file));
    write_resource(
        &res,
        "env.yaml",
        &component_yaml(
            "envsecrets",
            "secretstores.local.env",
            &[("prefix", "SECRETTEST_")],
        ),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let d = DaprdBuilder::new("secrets-app")
        .resources(&res)
        .arg("--config")
        .arg(config.display().to_string())
        .env("SECRETTEST_TOKEN", "from-env")
        .start()
        .await;
    (d, dir)
}

#[tokio::test]
async fn http_get_and_bulk_with_scopes() {
    let (d, _dir) = start().await;

    let r = http("GET", &d.url("/v1.0/secrets/localsecrets/apikey"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"apikey": "k-123"}));

    // Nested JSON is flattened with nestedSeparator.
    let r = http("GET", &d.url("/v1.0/secrets/localsecrets/db.password"), "").await;
    assert_eq!(r.json(), serde_json::json!({"db.password": "s3cr3t"}));

    // Env store with prefix; metadata query parameters are accepted.
    let r = http(
        "GET",
        &d.url("/v1.0/secrets/envsecrets/TOKEN?metadata.version_id=1"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"TOKEN": "from-env"}));

    // deniedSecrets → 403.
    let r = http("GET", &d.url("/v1.0/secrets/localsecrets/hidden"), "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "ERR_PERMISSION_DENIED");

    // defaultAccess deny + allowedSecrets.
    let r = http("GET", &d.url("/v1.0/secrets/scoped/apikey"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http("GET", &d.url("/v1.0/secrets/scoped/db.user"), "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "ERR_PERMISSION_DENIED");

    // Bulk leaves out what the scopes refuse.
    let r = http("GET", &d.url("/v1.0/secrets/localsecrets/bulk"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({
            "apikey": {"apikey": "k-123"},
            "db.password": {"db.password": "s3cr3t"},
            "db.user": {"db.user": "admin"},
        })
    );
    let r = http("GET", &d.url("/v1.0/secrets/scoped/bulk"), "").await;
    assert_eq!(r.json(), serde_json::json!({"apikey": {"apikey": "k-123"}}));

    // Unknown store: 401 as in Dapr; missing secret: ERR_SECRET_GET.
    let r = http("GET", &d.url("/v1.0/secrets/nostore/apikey"), "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "ERR_SECRET_STORE_NOT_FOUND");
    let r = http("GET", &d.url("/v1.0/secrets/localsecrets/missing"), "").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_SECRET_GET");

    // Secret values never reach the log.
    assert!(!d.logs().contains("s3cr3t"), "secret value in the log");
}

#[tokio::test]
async fn grpc_get_secret_and_bulk() {
    let (d, _dir) = start().await;
    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let r = c
        .get_secret(pb::GetSecretRequest {
            store_name: "localsecrets".into(),
            key: "db.user".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.data.get("db.user").map(String::as_str), Some("admin"));

    let r = c
        .get_bulk_secret(pb::GetBulkSecretRequest {
            store_name: "scoped".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.data.len(), 1);
    assert_eq!(r.data["apikey"].secrets["apikey"], "k-123");

    let e = c
        .get_secret(pb::GetSecretRequest {
            store_name: "localsecrets".into(),
            key: "hidden".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = c
        .get_secret(pb::GetSecretRequest {
            store_name: "nostore".into(),
            key: "x".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn no_secret_stores_configured() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaprdBuilder::new("nosecrets")
        .resources(dir.path())
        .start()
        .await;
    let r = http("GET", &d.url("/v1.0/secrets/any/key"), "").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_SECRET_STORES_NOT_CONFIGURED");
}

#[tokio::test]
async fn python_sdk_get_secret_and_bulk() {
    let (d, _dir) = start().await;
    run_python(&d, "test_secrets.py", &[("SECRET_STORE", "localsecrets")]);
}

/// Runs one e2e/python file against `d` with the official SDK.
fn run_python(d: &Daprd, file: &str, env: &[(&str, &str)]) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/e2e/python/{file}"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .envs(env.iter().copied())
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" passed"),
        "pytest failed ({}):\n{text}\n--- daprd log ---\n{}",
        out.status,
        d.logs()
    );
    println!("{text}");
}
