//! Service invocation through two real sidecars: caller → daprd A → daprd B
//! → app B, over HTTP and gRPC, with streaming bodies.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Request},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use common::*;
use futures::StreamExt;
use http_body_util::BodyExt;

/// A test app: echoes requests, returns chosen statuses, streams large bodies.
async fn start_app() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    async fn echo(req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("").into()),
                )
            })
            .collect();
        let mut resp = axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }))
        .into_response();
        resp.headers_mut().insert("x-app", "b".parse().unwrap());
        resp
    }
    async fn status(Path(code): Path<u16>) -> Response {
        (
            StatusCode::from_u16(code).unwrap(),
            format!("status {code}"),
        )
            .into_response()
    }
    /// Counts the bytes of a streamed upload without buffering it.
    async fn count(req: Request) -> String {
        let mut stream = req.into_body().into_data_stream();
        let mut n = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            n += chunk.len();
        }
        n.to_string()
    }
    /// Streams `n` MiB back in 64 KiB chunks.
    async fn download(Path(mib): Path<usize>) -> Body {
        let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
        Body::from_stream(futures::stream::iter(
            (0..mib * 16).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        ))
    }
    /// Server-sent events, one every 50 ms.
    async fn sse() -> Response {
        let events = futures::stream::iter(0..3).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(Bytes::from(format!("data: event {i}\n\n")))
        });
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/event-stream".parse().unwrap());
        (headers, Body::from_stream(events)).into_response()
    }
    let app = Router::new()
        .route("/status/{code}", any(status))
        .route("/count", any(count))
        .route("/download/{mib}", get(download))
        .route("/sse", get(sse))
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Two sidecars sharing one name-resolution file: `caller` (no app) and
/// `callee` (fronting the test app).
async fn pair() -> (Daprd, Daprd, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let shared = tempfile::tempdir().unwrap();
    let resolution = format!(
        "    component: sqlite\n    configuration:\n      connectionString: {}\n",
        shared.path().join("nr.db").display()
    );
    pair_with(shared, &resolution, "callee").await
}

async fn pair_with(
    shared: tempfile::TempDir,
    resolution: &str,
    callee_id: &str,
) -> (Daprd, Daprd, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let (app, task) = start_app().await;
    let config = shared.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n{resolution}"
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let callee = DaprdBuilder::new(callee_id)
        .arg("--config")
        .arg(&cfg)
        .arg("--app-port")
        .arg(app.port().to_string())
        .start()
        .await;
    let caller = DaprdBuilder::new("caller")
        .arg("--config")
        .arg(&cfg)
        .start()
        .await;
    (caller, callee, shared, task)
}

#[tokio::test]
async fn http_invocation_passes_method_path_query_headers_and_body() {
    let (caller, _callee, _dir, _app) = pair().await;
    let r = request(
        "PUT",
        &caller.url("/v1.0/invoke/callee/method/orders/42?expand=items&x=1"),
        Some(b"hello".to_vec()),
        &[("x-custom", "abc"), ("content-type", "text/plain")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-app"], "b");
    let j = r.json();
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["path"], "/orders/42");
    assert_eq!(j["query"], "expand=items&x=1");
    assert_eq!(j["body"], "hello");
    assert_eq!(j["headers"]["x-custom"], "abc");
    assert_eq!(j["headers"]["content-type"], "text/plain");
    assert_eq!(j["headers"]["dapr-caller-app-id"], "caller");

    // The dapr-app-id header form, on any path.
    let r = request(
        "GET",
        &caller.url("/some/path"),
        None,
        &[("dapr-app-id", "callee")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/some/path");

    // Status codes and bodies come back unchanged.
    let r = http(
        "POST",
        &caller.url("/v1.0/invoke/callee/method/status/418"),
        "",
    )
    .await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "status 418");
}

#[tokio::test]
async fn invocation_errors_say_which_app_and_why() {
    let (caller, _callee, _dir, _app) = pair().await;
    let r = http("GET", &caller.url("/v1.0/invoke/nobody/method/x"), "").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.json()["message"].as_str().unwrap().contains("nobody"),
        "{}",
        r.text()
    );
    // A sidecar without an app.
    let r = http("GET", &caller.url("/v1.0/invoke/caller/method/x"), "").await;
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
}

#[tokio::test]
async fn fifty_mib_streams_both_ways() {
    let (caller, _callee, _dir, _app) = pair().await;
    // Upload 50 MiB in chunks; the app counts bytes as they arrive.
    let chunk = Bytes::from(vec![b'a'; 256 * 1024]);
    let body = Body::from_stream(futures::stream::iter(
        (0..200).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let req = http::Request::post(caller.url("/v1.0/invoke/callee/method/count"))
        .body(body)
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        (50 * 1024 * 1024).to_string()
    );

    // Download 50 MiB.
    let req = http::Request::get(caller.url("/v1.0/invoke/callee/method/download/50"))
        .body(Body::empty())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut total = 0usize;
    let mut stream = resp.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, 50 * 1024 * 1024);
}

#[tokio::test]
async fn server_sent_events_arrive_as_they_are_sent() {
    let (caller, _callee, _dir, _app) = pair().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let req = http::Request::get(caller.url("/v1.0/invoke/callee/method/sse"))
        .body(Body::empty())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.into_body().into_data_stream();
    let first = tokio::time::timeout(Duration::from_millis(120), stream.next())
        .await
        .expect("first event must arrive before the stream ends")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event 0"));
    let mut rest = Vec::new();
    while let Some(c) = stream.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("event 2"));
}

#[tokio::test]
async fn grpc_invoke_service_reaches_the_http_app() {
    use dapr::dapr::proto::{common::v1 as common, runtime::v1 as pb};
    let (caller, _callee, _dir, _app) = pair().await;
    let mut c = pb::dapr_client::DaprClient::connect(caller.grpc_endpoint())
        .await
        .unwrap();
    let resp = c
        .invoke_service(pb::InvokeServiceRequest {
            id: "callee".into(),
            message: Some(common::InvokeRequest {
                method: "grpc/echo".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"ping".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Post as i32,
                    querystring: "a=b".into(),
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let j: serde_json::Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!(j["path"], "/grpc/echo");
    assert_eq!(j["query"], "a=b");
    assert_eq!(j["body"], "ping");
}

#[tokio::test]
async fn python_sdk_invoke_method() {
    let (caller, _callee, _dir, _app) = pair().await;
    let script = r#"
from dapr.clients import DaprClient
import json
with DaprClient() as d:
    r = d.invoke_method("callee", "orders/7", data=b'{"qty":3}', http_verb="POST", content_type="application/json")
    j = json.loads(r.data)
    assert j["path"] == "/orders/7", j
    assert j["body"] == '{"qty":3}', j
    assert j["method"] == "POST", j
print("ok")
"#;
    // Async: the test app runs on this test's runtime and must keep serving.
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("DAPR_HTTP_PORT", caller.http_port.to_string())
        .env("DAPR_GRPC_PORT", caller.grpc_port.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn mdns_name_resolution_on_loopback() {
    let shared = tempfile::tempdir().unwrap();
    // A unique app id: other mDNS tests may run at the same time.
    let callee = format!(
        "mdnscallee{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let resolution = "    component: mdns\n    configuration:\n      interfaces: loopback\n";
    let (caller, _callee, _dir, _app) = pair_with(shared, resolution, &callee).await;
    let r = http(
        "POST",
        &caller.url(&format!("/v1.0/invoke/{callee}/method/over/mdns")),
        "hi",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/over/mdns");
}
