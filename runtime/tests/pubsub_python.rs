//! Pub/sub with the official Python SDK (e2e/python/test_pubsub.py): the SDK
//! publishes through daprd's gRPC API and a subscriber app written with the
//! SDK's tooling (plain HTTP, or `dapr.ext.grpc.App`) receives the events.
//! Runs on every broker: `pubsub.in-memory`, `pubsub.redis`,
//! `pubsub.jetstream`, `pubsub.rabbitmq` and `pubsub.mqtt3`.

mod common;

use std::process::Command;

use common::{brokers::*, *};

struct Setup {
    subscriber: &'static str,
    broker: Broker,
}

async fn run(setup: Setup) {
    let app_id = format!("pysub-{}", uuid::Uuid::new_v4().simple());
    // The prefix puts the topic in the JetStream test stream.
    let topic = format!("{TOPIC_PREFIX}py-{}", uuid::Uuid::new_v4().simple());
    setup.broker.prepare().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    write_resource(dir.path(), "pubsub.yaml", &setup.broker.component());
    let d = DaprdBuilder::new(&app_id)
        .resources(dir.path())
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--app-protocol")
        .arg(if setup.subscriber == "grpc" {
            "grpc"
        } else {
            "http"
        })
        // Ready only once the Python app listens, which pytest starts.
        .no_wait()
        .start()
        .await;
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

/// One test per broker and subscriber kind, named `<kind>_<broker>`.
macro_rules! python_sdk_tests {
    ($($name:ident: $subscriber:literal, $broker:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            run(Setup {
                subscriber: $subscriber,
                broker: Broker::$broker,
            })
            .await;
        }
    )*};
}

python_sdk_tests! {
    http_subscriber_in_memory: "http", InMemory;
    grpc_subscriber_in_memory: "grpc", InMemory;
    http_subscriber_redis: "http", Redis;
    grpc_subscriber_redis: "grpc", Redis;
    http_subscriber_jetstream: "http", JetStream;
    grpc_subscriber_jetstream: "grpc", JetStream;
    http_subscriber_rabbitmq: "http", RabbitMq;
    grpc_subscriber_rabbitmq: "grpc", RabbitMq;
    http_subscriber_mqtt3: "http", Mqtt3;
    grpc_subscriber_mqtt3: "grpc", Mqtt3;
}
