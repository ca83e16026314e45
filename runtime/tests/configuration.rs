//! The configuration API against a real daprd and a real Redis
//! (`configuration.redis`): get over HTTP and gRPC, subscriptions streamed
//! over gRPC and POSTed to an HTTP app, unsubscribe, and the Python SDK.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use dapr_rs_proto::runtime as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

/// One Redis command in RESP, the reply as text (test setup only).
async fn redis(args: &[&str]) -> String {
    let mut s = TcpStream::connect(redis_addr()).await.expect("redis");
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn start(app_port: Option<u16>) -> (Daprd, tempfile::TempDir) {
    // Keyspace notifications for string commands and deletions.
    let r = redis(&["CONFIG", "SET", "notify-keyspace-events", "K$g"]).await;
    assert!(r.starts_with("+OK"), "{r}");
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "config.yaml",
        &component_yaml(
            "configstore",
            "configuration.redis",
            &[("redisHost", &redis_addr())],
        ),
    );
    let mut b =
        DaprdBuilder::new(&format!("cfg-{}", uuid::Uuid::new_v4().simple())).resources(dir.path());
    if let Some(p) = app_port {
        b = b.arg("--app-port").arg(p.to_string());
    }
    (b.start().await, dir)
}

fn key(prefix: &str) -> String {
    format!("cfgtest-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn http_and_grpc_get() {
    let (d, _dir) = start(None).await;
    let (k1, k2) = (key("a"), key("b"));
    redis(&["SET", &k1, "v1||3"]).await;
    redis(&["SET", &k2, "plain"]).await;

    for v in ["v1.0", "v1.0-alpha1"] {
        let r = http(
            "GET",
            &d.url(&format!(
                "/{v}/configuration/configstore?key={k1}&key={k2}&key=missing-{k1}"
            )),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j[&k1]["value"], "v1");
        assert_eq!(j[&k1]["version"], "3");
        assert_eq!(j[&k2]["value"], "plain");
        assert_eq!(j[&k2]["version"], "");
        assert!(j.get(format!("missing-{k1}")).is_none(), "{j}");
    }

    // No key: every item.
    let r = http("GET", &d.url("/v1.0/configuration/configstore"), "").await;
    assert_eq!(r.json()[&k1]["value"], "v1");

    let r = http("GET", &d.url("/v1.0/configuration/nope?key=x"), "").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ERR_CONFIGURATION_STORE_NOT_FOUND");

    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let items = c
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "configstore".into(),
            keys: vec![k1.clone()],
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items[&k1].value, "v1");
    assert_eq!(items[&k1].version, "3");
}

#[tokio::test]
async fn grpc_subscribe_streams_changes_until_unsubscribed() {
    let (d, _dir) = start(None).await;
    let k = key("sub");
    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let mut stream = c
        .subscribe_configuration(pb::SubscribeConfigurationRequest {
            store_name: "configstore".into(),
            keys: vec![k.clone()],
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.id.is_empty());
    assert!(first.items.is_empty());

    redis(&["SET", &k, "hello||1"]).await;
    let update = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no update within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(update.id, first.id);
    assert_eq!(update.items[&k].value, "hello");
    assert_eq!(update.items[&k].version, "1");

    let r = c
        .unsubscribe_configuration(pb::UnsubscribeConfigurationRequest {
            store_name: "configstore".into(),
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.ok, "{}", r.message);
    // The stream ends after unsubscribing.
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream did not end");
    assert!(matches!(end, Ok(None)), "{end:?}");
    // A second unsubscribe of the same id fails.
    let r = c
        .unsubscribe_configuration_alpha1(pb::UnsubscribeConfigurationRequest {
            store_name: "configstore".into(),
            id: first.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.ok);
}

#[tokio::test]
async fn http_subscribe_posts_updates_to_the_app() {
    let (tx, mut rx) = mpsc::channel::<(String, serde_json::Value)>(16);
    let app = axum::Router::new().route(
        "/configuration/{store}/{key}",
        axum::routing::post(
            move |axum::extract::Path((store, key)): axum::extract::Path<(String, String)>,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((format!("{store}/{key}"), body)).await;
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (d, _dir) = start(Some(app_port)).await;
    let k = key("app");
    let r = http(
        "GET",
        &d.url(&format!(
            "/v1.0/configuration/configstore/subscribe?key={k}"
        )),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();

    redis(&["SET", &k, "blue||7"]).await;
    let (path, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("app got no update")
        .unwrap();
    assert_eq!(path, format!("configstore/{k}"));
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["items"][&k]["value"], "blue");
    assert_eq!(body["items"][&k]["version"], "7");

    let r = http(
        "GET",
        &d.url(&format!("/v1.0/configuration/configstore/{id}/unsubscribe")),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
    redis(&["SET", &k, "red||8"]).await;
    let after = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert!(after.is_err(), "update after unsubscribe: {after:?}");
}

#[tokio::test]
async fn python_sdk_get_and_subscribe() {
    let (d, _dir) = start(None).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/e2e/python/test_configuration.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("CONFIG_STORE", "configstore")
        .env("REDIS_ADDR", redis_addr())
        .output()
        .expect("python3 -m pytest");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" passed"),
        "pytest failed:\n{text}\n--- daprd log ---\n{}",
        d.logs()
    );
}
