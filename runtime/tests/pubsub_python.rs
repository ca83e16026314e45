//! Pub/sub with the official Python SDK (e2e/python/test_pubsub.py): the SDK
//! publishes through daprd's gRPC API and a subscriber app written with the
//! SDK's tooling (plain HTTP, or `dapr.ext.grpc.App`) receives the events.
//! Runs on the embedded in-memory `pubsub` and on `pubsub.redis`.

mod common;

use std::process::Command;

use common::*;

struct Setup {
    subscriber: &'static str,
    redis: bool,
}

async fn run(setup: Setup) {
    let app_id = format!("pysub-{}", uuid::Uuid::new_v4().simple());
    let topic = format!("pytopic-{}", uuid::Uuid::new_v4().simple());
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut builder = DaprdBuilder::new(&app_id)
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--app-protocol")
        .arg(if setup.subscriber == "grpc" {
            "grpc"
        } else {
            "http"
        })
        // Ready only once the Python app listens, which pytest starts.
        .no_wait();
    if setup.redis {
        write_resource(
            dir.path(),
            "pubsub.yaml",
            &component_yaml("pubsub", "pubsub.redis", &[("redisHost", &redis_addr())]),
        );
        builder = builder.resources(dir.path());
    }
    let d = builder.start().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/e2e/python/test_pubsub.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "20")
        .env("SUBSCRIBER_PORT", port.to_string())
        .env("SUBSCRIBER", setup.subscriber)
        .env("TOPIC", &topic)
        .env("APP_ID", &app_id)
        .env("PUBSUB", "pubsub")
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
async fn python_sdk_http_subscriber_in_memory() {
    run(Setup {
        subscriber: "http",
        redis: false,
    })
    .await;
}

#[tokio::test]
async fn python_sdk_grpc_subscriber_in_memory() {
    run(Setup {
        subscriber: "grpc",
        redis: false,
    })
    .await;
}

#[tokio::test]
async fn python_sdk_http_subscriber_redis() {
    run(Setup {
        subscriber: "http",
        redis: true,
    })
    .await;
}

#[tokio::test]
async fn python_sdk_grpc_subscriber_redis() {
    run(Setup {
        subscriber: "grpc",
        redis: true,
    })
    .await;
}
