//! The HTTP and gRPC APIs of the real daprd binary: state semantics, Dapr's
//! error shapes, the API token, body limits and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;

async fn in_memory_daprd(extra: &[(&str, &str)]) -> (Daprd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "state.yaml",
        &component_yaml("statestore", "state.in-memory", &[]),
    );
    let mut b = DaprdBuilder::new("httpapi").resources(dir.path());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (b.start().await, dir)
}

#[tokio::test]
async fn state_crud_etags_and_bulk_over_http() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"a","value":{"n":1}},{"key":"b","value":"text"}]"#,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());

    let r = http("GET", &d.url("/v1.0/state/statestore/a"), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"n":1}));
    let etag = r.headers["etag"].to_str().unwrap().to_owned();

    // A JSON string keeps its quotes, as in Dapr.
    let r = http("GET", &d.url("/v1.0/state/statestore/b"), "").await;
    assert_eq!(r.text(), "\"text\"");

    // Stale etag: 409; right etag: 204.
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"a","value":2,"etag":"424242"}]"#,
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "ERR_STATE_SAVE");
    let body = format!(r#"[{{"key":"a","value":2,"etag":"{etag}"}}]"#);
    assert_eq!(
        http("POST", &d.url("/v1.0/state/statestore"), &body)
            .await
            .status,
        204
    );

    // first-write on an existing key without etag fails.
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"a","value":3,"options":{"concurrency":"first-write"}}]"#,
    )
    .await;
    assert_eq!(r.status, 409);

    // Bulk get: missing keys come back with only their key.
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore/bulk"),
        r#"{"keys":["a","b","zz"],"parallelism":2}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let items = r.json();
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["data"], 2);
    assert_eq!(items[1]["data"], "text");
    assert_eq!(items[2], serde_json::json!({"key":"zz"}));

    // Delete with a stale If-Match: 409; then plain delete; then 204 on get.
    let r = request(
        "DELETE",
        &d.url("/v1.0/state/statestore/a"),
        None,
        &[("If-Match", "1")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        http("DELETE", &d.url("/v1.0/state/statestore/a"), "")
            .await
            .status,
        204
    );
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/a"), "")
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn transactions_are_atomic_over_http() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"x","value":1}]"#,
    )
    .await;
    // The second op carries a stale etag: nothing may be written.
    let tx = r#"{"operations":[
        {"operation":"upsert","request":{"key":"new","value":"v"}},
        {"operation":"delete","request":{"key":"x","etag":"999999"}}]}"#;
    let r = http("POST", &d.url("/v1.0/state/statestore/transaction"), tx).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_STATE_TRANSACTION");
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/new"), "")
            .await
            .status,
        204
    );
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/x"), "")
            .await
            .status,
        200
    );

    let tx = r#"{"operations":[
        {"operation":"upsert","request":{"key":"new","value":"v"}},
        {"operation":"delete","request":{"key":"x"}}]}"#;
    assert_eq!(
        http("POST", &d.url("/v1.0/state/statestore/transaction"), tx)
            .await
            .status,
        204
    );
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/new"), "")
            .await
            .status,
        200
    );
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/x"), "")
            .await
            .status,
        204
    );

    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore/transaction"),
        r#"{"operations":[{"operation":"merge","request":{"key":"k"}}]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ERR_NOT_SUPPORTED_STATE_OPERATION");
}

#[tokio::test]
async fn query_api_filters_and_pages() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[
        {"key":"1","value":{"city":"Seattle","n":3}},
        {"key":"2","value":{"city":"Portland","n":1}},
        {"key":"3","value":{"city":"Seattle","n":2}}]"#,
    )
    .await;
    let q = r#"{"filter":{"EQ":{"city":"Seattle"}},"sort":[{"key":"n","order":"ASC"}],"page":{"limit":1}}"#;
    let r = http("POST", &d.url("/v1.0-alpha1/state/statestore/query"), q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["results"][0]["key"], "3");
    assert_eq!(j["token"], "1");
    let r = http(
        "POST",
        &d.url("/v1.0-alpha1/state/statestore/query"),
        r#"{"filter":{"NOPE":1}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ERR_MALFORMED_REQUEST");
}

#[tokio::test]
async fn bad_input_gets_dapr_errors() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/v1.0/state/nope",
            r#"[{"key":"a","value":1}]"#,
            400,
            "ERR_STATE_STORE_NOT_FOUND",
        ),
        (
            "GET",
            "/v1.0/state/nope/a",
            "",
            400,
            "ERR_STATE_STORE_NOT_FOUND",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            "{not json",
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":7,"value":1}]"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"{"key":"a"}"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":"a||b","value":1}]"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":"","value":1}]"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":"a","value":1,"etag":"not-a-number"}]"#,
            400,
            "ERR_STATE_SAVE",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":"a","value":1,"metadata":{"ttlInSeconds":"soon"}}]"#,
            400,
            "ERR_STATE_SAVE",
        ),
        (
            "POST",
            "/v1.0/state/statestore",
            r#"[{"key":"a","value":1,"options":{"concurrency":"whenever"}}]"#,
            400,
            "ERR_BAD_REQUEST",
        ),
        (
            "POST",
            "/v1.0/state/statestore/bulk",
            r#"{"keys":"a"}"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "POST",
            "/v1.0/publish/pubsub/topic",
            "{}",
            404,
            "ERR_PUBSUB_NOT_FOUND",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = http(method, &d.url(path), body).await;
        assert_eq!(r.status, *status, "{method} {path} {body}: {}", r.text());
        assert_eq!(r.error_code(), *code, "{method} {path} {body}");
    }
    // Invalid UTF-8 in a key (percent-encoded) is refused, not stored.
    let r = http("GET", &d.url("/v1.0/state/statestore/%FF%FE"), "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_MALFORMED_REQUEST");
    // Nothing above wrote anything.
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/a"), "")
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn body_over_max_size_is_413() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "state.yaml",
        &component_yaml("statestore", "state.in-memory", &[]),
    );
    let d = DaprdBuilder::new("limits")
        .resources(dir.path())
        .arg("--max-body-size")
        .arg("1Ki")
        .start()
        .await;
    let big = format!(r#"[{{"key":"a","value":"{}"}}]"#, "x".repeat(2048));
    let r = http("POST", &d.url("/v1.0/state/statestore"), &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_BODY_READ");
    assert_eq!(
        http("GET", &d.url("/v1.0/state/statestore/a"), "")
            .await
            .status,
        204
    );

    // gRPC enforces the same limit.
    let mut c = DaprClient::connect(d.grpc_endpoint()).await.unwrap();
    let err = c
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![dapr::dapr::proto::common::v1::StateItem {
                key: "a".into(),
                value: vec![b'x'; 4096],
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    // tonic reports an oversized message as OutOfRange (Go gRPC: ResourceExhausted).
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_token_guards_http_and_grpc() {
    let (d, _dir) = in_memory_daprd(&[("DAPR_API_TOKEN", "s3cret")]).await;
    let save = r#"[{"key":"a","value":1}]"#;
    let r = http("POST", &d.url("/v1.0/state/statestore"), save).await;
    assert_eq!(r.status, 401);
    let r = request(
        "POST",
        &d.url("/v1.0/state/statestore"),
        Some(save.into()),
        &[("dapr-api-token", "wrong")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    let r = request(
        "POST",
        &d.url("/v1.0/state/statestore"),
        Some(save.into()),
        &[("dapr-api-token", "s3cret")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    // Health checks stay open; metadata and shutdown do not.
    assert_eq!(http("GET", &d.url("/v1.0/healthz"), "").await.status, 204);
    assert_eq!(
        http("GET", &d.url("/v1.0/healthz/outbound"), "")
            .await
            .status,
        204
    );
    assert_eq!(http("GET", &d.url("/v1.0/metadata"), "").await.status, 401);
    assert_eq!(http("POST", &d.url("/v1.0/shutdown"), "").await.status, 401);

    let mut c = DaprClient::connect(d.grpc_endpoint()).await.unwrap();
    let get = pb::GetStateRequest {
        store_name: "statestore".into(),
        key: "a".into(),
        ..Default::default()
    };
    let err = c.get_state(get.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(get);
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    let resp = c.get_state(req).await.unwrap().into_inner();
    assert_eq!(resp.data, b"1");
    assert!(!d.logs().contains("s3cret"), "token leaked into logs");
}

#[tokio::test]
async fn grpc_state_api_matches_http() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    let mut c = DaprClient::connect(d.grpc_endpoint()).await.unwrap();
    c.save_state(pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![dapr::dapr::proto::common::v1::StateItem {
            key: "bin".into(),
            value: vec![0, 159, 146, 150, 255],
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    let got = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, vec![0, 159, 146, 150, 255]);
    assert!(!got.etag.is_empty());
    // The same bytes over HTTP.
    let r = http("GET", &d.url("/v1.0/state/statestore/bin"), "").await;
    assert_eq!(&r.body[..], &[0, 159, 146, 150, 255]);

    // Errors carry google.rpc.ErrorInfo details.
    let err = c
        .get_state(pb::GetStateRequest {
            store_name: "missing".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let status = <dapr::google::rpc::Status as prost::Message>::decode(err.details()).unwrap();
    assert_eq!(
        status.details[0].type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );

    // An unknown pub/sub is Dapr's InvalidArgument "not found".
    let err = c
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "p".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let md = c
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.id, "httpapi");
    assert_eq!(md.registered_components[0].name, "statestore");
    assert!(
        md.registered_components[0]
            .capabilities
            .contains(&"TRANSACTIONAL".to_string())
    );
}

#[tokio::test]
async fn metadata_api_reports_components_and_extended_attributes() {
    let (d, _dir) = in_memory_daprd(&[]).await;
    let r = request(
        "PUT",
        &d.url("/v1.0/metadata/team"),
        Some(b"payments".to_vec()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    let m = http("GET", &d.url("/v1.0/metadata"), "").await.json();
    assert_eq!(m["id"], "httpapi");
    assert_eq!(m["extended"]["team"], "payments");
    assert_eq!(m["components"][0]["type"], "state.in-memory");
    let r = http("GET", &d.url("/v1.0/healthz?appid=other"), "").await;
    assert_eq!(r.error_code(), "ERR_HEALTH_APPID_NOT_MATCH");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut d, _dir) = in_memory_daprd(&[]).await;
    // Start a request and send only half of its body.
    let body = r#"[{"key":"drain","value":"finished"}]"#;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", d.http_port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1.0/state/statestore HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = d.child.as_ref().unwrap().id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old one is drained.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", d.http_port))
            .await
            .is_err()
    );
    s.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut resp = vec![0u8; 256];
    let n = s.read(&mut resp).await.unwrap();
    let resp = String::from_utf8_lossy(&resp[..n]).to_string();
    assert!(
        resp.starts_with("HTTP/1.1 204"),
        "in-flight request failed: {resp}"
    );
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", d.logs());
}

#[tokio::test]
async fn shutdown_api_stops_the_sidecar() {
    let (mut d, _dir) = in_memory_daprd(&[]).await;
    assert_eq!(http("POST", &d.url("/v1.0/shutdown"), "").await.status, 204);
    assert!(d.wait_exit(Duration::from_secs(10)).success());
}
