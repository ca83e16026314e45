//! Bindings through real daprd processes: every output component over the
//! HTTP API (`bindings.localstorage`, `bindings.redis` on the test Redis,
//! `bindings.postgresql` and `bindings.mysql` on the test PostgreSQL and
//! MariaDB, `bindings.http` against a local server), gRPC `InvokeBinding`,
//! Dapr's error shapes, `bindings.cron` input events into an HTTP app
//! (OPTIONS discovery, `route`, `direction`, inbound retries) and a gRPC app
//! (`ListInputBindings`, `OnBindingEvent` answering `to`), invalid metadata
//! stopping daprd, `bindings.rabbitmq` and `bindings.mqtt3` round trips on
//! the test RabbitMQ and Mosquitto, and the Python SDK's `invoke_binding`.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use common::*;
use dapr_rs_proto::runtime as pb;
use dapr_rs_proto::server::app_callback_server::{AppCallback, AppCallbackServer};
use http_body_util::BodyExt;
use serde_json::{Value, json};

fn postgres_conn() -> String {
    std::env::var("DAPR_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test".into())
}

fn mysql_dsn() -> String {
    std::env::var("DAPR_RS_TEST_MYSQL")
        .unwrap_or_else(|_| "root@tcp(127.0.0.1:13306)/dapr_test".into())
}

/// One request the HTTP app received.
#[derive(Debug, Clone)]
struct Hit {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// The HTTP app: input binding target and `bindings.http` target at once.
/// `OPTIONS /ignored` is 404 (not subscribed), other OPTIONS 200; POST
/// `/flaky` fails with 500 on the first delivery of each event; `/api/*`
/// echoes (`/api/missing` 404) with an `X-Reply` header.
async fn start_http_app() -> (u16, Hits) {
    async fn handle(State(hits): State<Hits>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let hit = Hit {
            method: parts.method.clone(),
            path: path.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        let earlier_same = {
            let mut h = hits.lock().unwrap();
            let n = h
                .iter()
                .filter(|x| {
                    x.path == hit.path
                        && x.method == hit.method
                        && x.headers.get("readTimeUTC") == hit.headers.get("readTimeUTC")
                })
                .count();
            h.push(hit);
            n
        };
        if parts.method == Method::OPTIONS {
            return if path == "/ignored" {
                StatusCode::NOT_FOUND.into_response()
            } else {
                StatusCode::OK.into_response()
            };
        }
        match path.as_str() {
            "/flaky" if earlier_same == 0 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            "/api/missing" => (StatusCode::NOT_FOUND, "no such thing").into_response(),
            p if p.starts_with("/api/") => {
                let test = parts
                    .headers
                    .get("x-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    StatusCode::OK,
                    [("x-reply", format!("{} {p} x-test={test}", parts.method))],
                    body,
                )
                    .into_response()
            }
            _ => StatusCode::OK.into_response(),
        }
    }
    let hits: Hits = Arc::default();
    let app = Router::new().fallback(handle).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, hits)
}

fn posts(hits: &Hits, path: &str) -> Vec<Hit> {
    hits.lock()
        .unwrap()
        .iter()
        .filter(|h| h.method == Method::POST && h.path == path)
        .cloned()
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn invoke(d: &Daprd, name: &str, body: Value) -> Reply {
    http(
        "POST",
        &d.url(&format!("/v1.0/bindings/{name}")),
        &body.to_string(),
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn assert_invoke_error(r: &Reply, contains: &str) {
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_INVOKE_OUTPUT_BINDING");
    let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains(contains), "'{msg}' lacks '{contains}'");
}

/// A component: name, type and metadata.
type Spec<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
/// A component spec whose metadata values are built at run time.
type OwnedSpec<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

struct Setup {
    d: Daprd,
    hits: Hits,
    files: tempfile::TempDir,
    _res: tempfile::TempDir,
}

async fn setup_http_app() -> Setup {
    let (app_port, hits) = start_http_app().await;
    let res = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let root = files.path().to_string_lossy().to_string();
    let web = format!("http://127.0.0.1:{app_port}/api");
    let (pg, my, redis) = (postgres_conn(), mysql_dsn(), redis_addr());
    let components: Vec<Spec> = vec![
        ("files", "bindings.localstorage", vec![("rootPath", &root)]),
        ("cache", "bindings.redis", vec![("redisHost", &redis)]),
        ("pg", "bindings.postgresql", vec![("connectionString", &pg)]),
        ("maria", "bindings.mysql", vec![("url", &my)]),
        ("web", "bindings.http", vec![("url", &web)]),
        ("tick", "bindings.cron", vec![("schedule", "@every 1s")]),
        (
            "tick-routed",
            "bindings.cron",
            vec![
                ("schedule", "* * * * * *"),
                ("route", "/cron-routed"),
                ("direction", "input"),
            ],
        ),
        ("ignored", "bindings.cron", vec![("schedule", "@every 1s")]),
        ("flaky", "bindings.cron", vec![("schedule", "@every 1s")]),
        (
            "outonly",
            "bindings.cron",
            vec![("schedule", "@every 1s"), ("direction", "output")],
        ),
    ];
    for (name, type_, md) in &components {
        write_resource(
            res.path(),
            &format!("{name}.yaml"),
            &component_yaml(name, type_, md),
        );
    }
    write_resource(
        res.path(),
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 50ms\n        maxRetries: 3\n  targets:\n    components:\n      flaky:\n        inbound:\n          retry: quick\n",
    );
    let d = DaprdBuilder::new(&format!("bind-{}", uuid::Uuid::new_v4().simple()))
        .resources(res.path())
        .arg("--app-port")
        .arg(app_port.to_string())
        .start()
        .await;
    Setup {
        d,
        hits,
        files,
        _res: res,
    }
}

async fn localstorage(d: &Daprd, files: &std::path::Path) {
    let r = invoke(
        d,
        "files",
        json!({"operation": "create", "data": "hello", "metadata": {"fileName": "dir/a.txt"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"fileName": "dir/a.txt"}));
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(std::fs::read(files.join("dir/a.txt")).unwrap(), b"hello");
    let r = invoke(
        d,
        "files",
        json!({"operation": "get", "metadata": {"fileName": "dir/a.txt"}}),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    // Binary content travels as base64 and is stored decoded.
    let r = invoke(
        d,
        "files",
        json!({"operation": "create", "data": "AAEC/w==", "metadata": {"fileName": "bin"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::read(files.join("bin")).unwrap(), [0u8, 1, 2, 255]);
    // Without a fileName, a UUID.
    let r = invoke(d, "files", json!({"operation": "create", "data": {"k": 1}})).await;
    let generated = r.json()["fileName"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(
        std::fs::read(files.join(&generated)).unwrap(),
        br#"{"k":1}"#
    );
    let r = invoke(d, "files", json!({"operation": "list"})).await;
    let listed: Vec<String> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed.iter().any(|f| f.ends_with("dir/a.txt")),
        "{listed:?}"
    );
    let r = invoke(
        d,
        "files",
        json!({"operation": "delete", "metadata": {"fileName": "dir/a.txt"}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!files.join("dir/a.txt").exists());
    let r = invoke(
        d,
        "files",
        json!({"operation": "get", "metadata": {"fileName": "dir/a.txt"}}),
    )
    .await;
    assert_invoke_error(&r, "file not found");
    for bad in ["../escape.txt", "/etc/passwd"] {
        let r = invoke(
            d,
            "files",
            json!({"operation": "create", "data": "x", "metadata": {"fileName": bad}}),
        )
        .await;
        assert_invoke_error(&r, "fileName");
    }
    assert!(!files.parent().unwrap().join("escape.txt").exists());
}

async fn redis(d: &Daprd) {
    let key = format!("bind-{}", uuid::Uuid::new_v4().simple());
    let r = invoke(
        d,
        "cache",
        json!({"operation": "create", "data": {"a": 1}, "metadata": {"key": key}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = invoke(
        d,
        "cache",
        json!({"operation": "get", "metadata": {"key": key}}),
    )
    .await;
    assert_eq!(r.json(), json!({"a": 1}));
    invoke(
        d,
        "cache",
        json!({"operation": "create", "data": 41, "metadata": {"key": key}}),
    )
    .await;
    let r = invoke(
        d,
        "cache",
        json!({"operation": "increment", "metadata": {"key": key}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = invoke(
        d,
        "cache",
        json!({"operation": "get", "metadata": {"key": key}}),
    )
    .await;
    assert_eq!(r.text(), "42");
    let r = invoke(
        d,
        "cache",
        json!({"operation": "delete", "metadata": {"key": key}}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = invoke(
        d,
        "cache",
        json!({"operation": "get", "metadata": {"key": key}}),
    )
    .await;
    assert!(r.body.is_empty(), "{}", r.text());
    // ttlInSeconds expires the key.
    invoke(d, "cache", json!({"operation": "create", "data": "soon", "metadata": {"key": key, "ttlInSeconds": "1"}})).await;
    assert_eq!(
        invoke(
            d,
            "cache",
            json!({"operation": "get", "metadata": {"key": key}})
        )
        .await
        .text(),
        "\"soon\""
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = invoke(
            d,
            "cache",
            json!({"operation": "get", "metadata": {"key": key}}),
        )
        .await;
        if r.body.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "key did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = invoke(d, "cache", json!({"operation": "get"})).await;
    assert_invoke_error(&r, "missing key");
    let r = invoke(
        d,
        "cache",
        json!({"operation": "create", "metadata": {"key": key, "ttlInSeconds": "soon"}}),
    )
    .await;
    assert_invoke_error(&r, "ttlInSeconds");
}

/// `exec`/`query`/errors on a SQL binding; `ph(n)` is its placeholder.
async fn sql(d: &Daprd, name: &str, ph: fn(usize) -> String, ddl: &str) {
    let table = format!("bind_{}", uuid::Uuid::new_v4().simple());
    let exec = |sql: String, params: Value| json!({"operation": "exec", "metadata": {"sql": sql, "params": params.to_string()}});
    let r = invoke(
        d,
        name,
        json!({"operation": "exec", "metadata": {"sql": ddl.replace("{t}", &table)}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let insert = format!(
        "INSERT INTO {table} (id, name, price, note) VALUES ({}, {}, {}, {})",
        ph(1),
        ph(2),
        ph(3),
        ph(4)
    );
    let r = invoke(
        d,
        name,
        exec(insert.clone(), json!([1, "apple", "3.50", "red"])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "metadata.rows-affected"), "1");
    assert_eq!(header(&r, "metadata.operation"), "exec");
    assert!(
        r.headers
            .get("metadata.duration")
            .is_some_and(|v| !v.is_empty())
    );
    assert!(!header(&r, "metadata.start-time").is_empty());
    let r = invoke(d, name, exec(insert, json!([2, "pear", 1, null]))).await;
    assert_eq!(header(&r, "metadata.rows-affected"), "1", "{}", r.text());
    let q = format!(
        "SELECT id, name, price, note FROM {table} WHERE id >= {} ORDER BY id",
        ph(1)
    );
    let r = invoke(
        d,
        name,
        json!({"operation": "query", "metadata": {"sql": q, "params": "[1]"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = r.json();
    if name == "pg" {
        // Dapr's PostgreSQL binding: one array of column values per row.
        assert_eq!(
            rows,
            json!([[1, "apple", 3.5, "red"], [2, "pear", 1.0, null]])
        );
    } else {
        // Dapr's MySQL binding: one object per row, NULL columns left out.
        assert_eq!(
            rows,
            json!([{"id": 1, "name": "apple", "price": "3.50", "note": "red"}, {"id": 2, "name": "pear", "price": "1.00"}])
        );
    }
    let r = invoke(d, name, json!({"operation": "query", "metadata": {"sql": format!("SELECT * FROM {table} WHERE id > 99")}})).await;
    assert_eq!(r.json(), if name == "pg" { json!([]) } else { Value::Null });
    let r = invoke(
        d,
        name,
        json!({"operation": "exec", "metadata": {"sql": "SELEKT nonsense"}}),
    )
    .await;
    assert_invoke_error(&r, "syntax");
    let r = invoke(d, name, json!({"operation": "exec"})).await;
    assert_invoke_error(&r, "required metadata not set: sql");
    let r = invoke(
        d,
        name,
        json!({"operation": "query", "metadata": {"sql": "SELECT 1", "params": "{\"a\":1}"}}),
    )
    .await;
    assert_invoke_error(&r, "params");
    let r = invoke(
        d,
        name,
        json!({"operation": "exec", "metadata": {"sql": format!("DROP TABLE {table}")}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn http_binding(d: &Daprd) {
    let r = invoke(
        d,
        "web",
        json!({"operation": "get", "metadata": {"path": "/items/7", "X-Test": "yes"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "metadata.statuscode"), "200");
    assert_eq!(header(&r, "metadata.status"), "200 OK");
    assert_eq!(
        header(&r, "metadata.x-reply"),
        "GET /api/items/7 x-test=yes"
    );
    let r = invoke(
        d,
        "web",
        json!({"operation": "post", "data": {"n": 1}, "metadata": {"path": "echo"}}),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"n":1}"#));
    let r = invoke(
        d,
        "web",
        json!({"operation": "create", "data": "x", "metadata": {"path": "c"}}),
    )
    .await;
    assert_eq!(
        header(&r, "metadata.x-reply"),
        "POST /api/c x-test=",
        "create is POST"
    );
    // A non-2xx status fails the call but its metadata still comes back.
    let r = invoke(
        d,
        "web",
        json!({"operation": "get", "metadata": {"path": "missing"}}),
    )
    .await;
    assert_invoke_error(&r, "received status code 404");
    assert_eq!(header(&r, "metadata.statuscode"), "404");
    let r = invoke(
        d,
        "web",
        json!({"operation": "get", "metadata": {"path": "missing", "errorIfNot2XX": "false"}}),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "no such thing"));
    let r = invoke(d, "web", json!({"operation": "fetch"})).await;
    assert_invoke_error(
        &r,
        "does not support operation fetch. supported operations:create get head post put patch delete options trace",
    );
}

async fn api_errors(d: &Daprd) {
    let r = invoke(d, "nope", json!({"operation": "get"})).await;
    assert_invoke_error(&r, "couldn't find output binding nope");
    let r = invoke(d, "files", json!({"data": "x"})).await;
    assert_invoke_error(&r, "operation field is missing from request");
    // `outonly` is a cron (input only) limited to output: nothing to call.
    let r = invoke(d, "outonly", json!({"operation": "create"})).await;
    assert_invoke_error(&r, "couldn't find output binding outonly");
    let r = http("POST", &d.url("/v1.0/bindings/files"), "{not json").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = invoke(
        d,
        "files",
        json!({"operation": "get", "metadata": {"fileName": 5}}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = http(
        "PUT",
        &d.url("/v1.0/bindings/files"),
        &json!({"operation": "list"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "PUT works as POST: {}", r.text());
}

async fn grpc_invoke(d: &Daprd) {
    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let resp = c
        .invoke_binding(pb::InvokeBindingRequest {
            name: "files".into(),
            data: b"via grpc".to_vec(),
            metadata: HashMap::from([("fileName".into(), "g.txt".into())]),
            operation: "create".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.data, br#"{"fileName":"g.txt"}"#);
    let resp = c
        .invoke_binding(pb::InvokeBindingRequest {
            name: "web".into(),
            metadata: HashMap::from([("path".into(), "g".into())]),
            operation: "get".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        resp.metadata()
            .get("metadata.statuscode")
            .and_then(|v| v.to_str().ok()),
        Some("200")
    );
    assert_eq!(resp.into_inner().metadata["statusCode"], "200");
    let err = c
        .invoke_binding(pb::InvokeBindingRequest {
            name: "nope".into(),
            operation: "get".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(
        err.message().contains("couldn't find output binding nope"),
        "{}",
        err.message()
    );
}

/// One sidecar with every output component and cron inputs into an HTTP app.
#[tokio::test]
async fn output_and_input_bindings_with_an_http_app() {
    let s = setup_http_app().await;
    let d = &s.d;
    localstorage(d, s.files.path()).await;
    redis(d).await;
    sql(
        d,
        "pg",
        |n| format!("${n}"),
        "CREATE TABLE {t} (id int PRIMARY KEY, name text, price numeric(10,2), note text)",
    )
    .await;
    sql(
        d,
        "maria",
        |_| "?".to_owned(),
        "CREATE TABLE {t} (id int PRIMARY KEY, name varchar(20), price decimal(10,2), note varchar(20))",
    )
    .await;
    http_binding(d).await;
    api_errors(d).await;
    grpc_invoke(d).await;

    // Cron inputs: discovered with OPTIONS, POSTed with JSON content type.
    let hits = &s.hits;
    wait_until("two ticks on /tick", Duration::from_secs(10), || {
        posts(hits, "/tick").len() >= 2
    })
    .await;
    let tick = &posts(hits, "/tick")[0];
    assert_eq!(
        tick.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        tick.headers.get("timeZone").map(|v| v.to_str().unwrap()),
        Some("UTC")
    );
    assert!(tick.headers.contains_key("readTimeUTC"));
    assert!(tick.body.is_empty());
    wait_until("a tick on the route", Duration::from_secs(5), || {
        !posts(hits, "/cron-routed").is_empty()
    })
    .await;
    // `direction: input` skips discovery: no OPTIONS for tick-routed.
    let options: Vec<String> = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.method == Method::OPTIONS)
        .map(|h| h.path.clone())
        .collect();
    assert!(
        options.contains(&"/tick".to_owned()) && options.contains(&"/ignored".to_owned()),
        "{options:?}"
    );
    assert!(!options.contains(&"/cron-routed".to_owned()), "{options:?}");
    // A failed delivery is retried per the inbound policy: the same event
    // (same readTimeUTC) arrives again.
    wait_until("a retried flaky event", Duration::from_secs(10), || {
        let f = posts(hits, "/flaky");
        f.iter().any(|a| {
            f.iter()
                .filter(|b| b.headers.get("readTimeUTC") == a.headers.get("readTimeUTC"))
                .count()
                >= 2
        })
    })
    .await;
    // 404 to OPTIONS: never delivered; output-only cron: never read.
    assert!(posts(hits, "/ignored").is_empty());
    assert!(posts(hits, "/outonly").is_empty());
    assert!(
        d.logs()
            .contains("app has not subscribed to binding ignored"),
        "{}",
        d.logs()
    );
}

struct GrpcApp {
    events: tokio::sync::mpsc::UnboundedSender<pb::BindingEventRequest>,
}

#[tonic::async_trait]
impl AppCallback for GrpcApp {
    async fn list_input_bindings(
        &self,
        _req: tonic::Request<()>,
    ) -> Result<tonic::Response<pb::ListInputBindingsResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ListInputBindingsResponse {
            bindings: vec!["tick".into()],
        }))
    }

    async fn on_binding_event(
        &self,
        req: tonic::Request<pb::BindingEventRequest>,
    ) -> Result<tonic::Response<pb::BindingEventResponse>, tonic::Status> {
        let _ = self.events.send(req.into_inner());
        // Dapr still sends the answer's data on to the `to` bindings.
        Ok(tonic::Response::new(pb::BindingEventResponse {
            to: vec!["files".into()],
            data: br#"{"from":"app"}"#.to_vec(),
            ..Default::default()
        }))
    }
}

/// Cron into a gRPC app: only what `ListInputBindings` names is read; the
/// app's `to` answer lands in the localstorage binding.
#[tokio::test]
async fn cron_fires_into_a_grpc_app() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(GrpcApp { events: tx }))
            .serve_with_incoming(incoming)
            .await;
    });
    let res = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let root = files.path().to_string_lossy().to_string();
    write_resource(
        res.path(),
        "tick.yaml",
        &component_yaml("tick", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    write_resource(
        res.path(),
        "other.yaml",
        &component_yaml("other", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    write_resource(
        res.path(),
        "files.yaml",
        &component_yaml("files", "bindings.localstorage", &[("rootPath", &root)]),
    );
    let d = DaprdBuilder::new("bind-grpc")
        .resources(res.path())
        .arg("--app-port")
        .arg(app_port.to_string())
        .arg("--app-protocol")
        .arg("grpc")
        .start()
        .await;
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no binding event within 10 s")
        .unwrap();
    assert_eq!(first.name, "tick");
    assert!(
        first.metadata.contains_key("readTimeUTC"),
        "{:?}",
        first.metadata
    );
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.name, "tick", "'other' is not in ListInputBindings");
    wait_until(
        "the app's `to` answer written",
        Duration::from_secs(5),
        || {
            std::fs::read_dir(files.path())
                .map(|d| d.count())
                .unwrap_or(0)
                >= 1
        },
    )
    .await;
    let f = std::fs::read_dir(files.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(f.path()).unwrap(), br#"{"from":"app"}"#);
    assert!(
        d.logs().contains("app has not subscribed to binding other"),
        "{}",
        d.logs()
    );
}

fn amqp_url() -> String {
    std::env::var("DAPR_RS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:15673".to_owned())
}

fn mqtt_url() -> String {
    std::env::var("DAPR_RS_TEST_MQTT_URL").unwrap_or_else(|_| "tcp://127.0.0.1:11883".to_owned())
}

fn bodies(hits: &Hits, path: &str) -> Vec<String> {
    posts(hits, path)
        .iter()
        .map(|h| String::from_utf8_lossy(&h.body).into_owned())
        .collect()
}

/// `bindings.rabbitmq` and `bindings.mqtt3` on the test RabbitMQ and
/// Mosquitto, through daprd both ways: `create` → broker → input binding →
/// the app; a 500 from the app nacks and requeues, so RabbitMQ redelivers;
/// request metadata arrive as headers; per-request `ttlInSeconds` and
/// `priority` act on the queue (seen by a second sidecar consuming it
/// later); the MQTT `topic` request metadata picks another topic.
#[tokio::test]
async fn rabbitmq_and_mqtt_bindings_round_trip() {
    let (app_port, hits) = start_http_app().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (amqp, mqtt) = (amqp_url(), mqtt_url());
    let (q_main, q_later) = (format!("bind-{id}-main"), format!("bind-{id}-later"));
    let (t_main, t_other) = (format!("bind/{id}/main"), format!("bind/{id}/other"));
    let (c_main, c_other) = (format!("c{id}a"), format!("c{id}b"));
    // The queue read later: same declaration on both sidecars.
    let later = |direction: &'static str| -> Vec<(&str, String)> {
        vec![
            ("host", amqp.clone()),
            ("queueName", q_later.clone()),
            ("maxPriority", "5".into()),
            ("prefetchCount", "1".into()),
            ("deleteWhenUnused", "true".into()),
            ("direction", direction.into()),
        ]
    };
    let res = tempfile::tempdir().unwrap();
    let components: Vec<OwnedSpec> = vec![
        (
            "rmq",
            "bindings.rabbitmq",
            vec![
                ("host", amqp.clone()),
                ("queueName", q_main.clone()),
                ("deleteWhenUnused", "true".into()),
                // The hits app fails the first POST to /flaky.
                ("route", "/flaky".into()),
            ],
        ),
        ("rmq-later", "bindings.rabbitmq", later("output")),
        (
            "mq",
            "bindings.mqtt3",
            vec![
                ("url", mqtt.clone()),
                ("topic", t_main.clone()),
                ("consumerID", c_main.clone()),
                ("cleanSession", "true".into()),
            ],
        ),
        (
            "mq2",
            "bindings.mqtt3",
            vec![
                ("url", mqtt.clone()),
                ("topic", t_other.clone()),
                ("consumerID", c_other.clone()),
                ("cleanSession", "true".into()),
                ("direction", "input".into()),
            ],
        ),
    ];
    for (name, type_, md) in &components {
        let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_resource(
            res.path(),
            &format!("{name}.yaml"),
            &component_yaml(name, type_, &md),
        );
    }
    let d = DaprdBuilder::new(&format!("bind-brokers-{id}"))
        .resources(res.path())
        .arg("--app-port")
        .arg(app_port.to_string())
        .start()
        .await;

    // RabbitMQ: output → queue → input → app; the first delivery fails (500)
    // and the message comes back.
    let r = invoke(
        &d,
        "rmq",
        json!({"operation": "create", "data": {"n": 1}, "metadata": {"traceNote": "a b/c"}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until("the redelivered message", Duration::from_secs(10), || {
        bodies(&hits, "/flaky").len() >= 2
    })
    .await;
    let got = posts(&hits, "/flaky");
    assert_eq!(got[0].body, got[1].body, "the same message twice");
    assert_eq!(&got[1].body[..], br#"{"n":1}"#);
    // Request metadata travel as message headers, query-escaped as Dapr.
    assert_eq!(got[1].headers.get("traceNote").unwrap(), "a+b%2Fc");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&hits, "/flaky").len(), 2, "acked after the 200");

    // Bad requests: Dapr's error shape.
    let r = invoke(&d, "rmq", json!({"operation": "get", "data": "x"})).await;
    assert_invoke_error(&r, "does not support operation get");
    let r = invoke(
        &d,
        "rmq",
        json!({"operation": "create", "data": "x", "metadata": {"priority": "high"}}),
    )
    .await;
    assert_invoke_error(&r, "priority");

    // Per-request priority and TTL, on a queue nobody reads yet.
    for (data, md) in [
        ("low", json!({"priority": "1"})),
        ("expires", json!({"ttlInSeconds": "1"})),
        (
            "high",
            json!({"priority": "5", "contentType": "application/json"}),
        ),
    ] {
        let r = invoke(
            &d,
            "rmq-later",
            json!({"operation": "create", "data": data, "metadata": md}),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let published = Instant::now();

    // MQTT: the component's topic, then another one named per request.
    let r = invoke(&d, "mq", json!({"operation": "create", "data": "m1"})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until("the MQTT message", Duration::from_secs(10), || {
        !posts(&hits, "/mq").is_empty()
    })
    .await;
    let m = &posts(&hits, "/mq")[0];
    assert_eq!(&m.body[..], b"\"m1\"");
    assert_eq!(m.headers.get("topic").unwrap(), t_main.as_str());
    let r = invoke(
        &d,
        "mq",
        json!({"operation": "create", "data": "m2", "metadata": {"topic": t_other}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until(
        "the message on the other topic",
        Duration::from_secs(10),
        || !posts(&hits, "/mq2").is_empty(),
    )
    .await;
    assert_eq!(&posts(&hits, "/mq2")[0].body[..], b"\"m2\"");
    assert_eq!(
        bodies(&hits, "/mq").len(),
        1,
        "not on the component's topic"
    );
    let r = invoke(&d, "mq", json!({"operation": "delete"})).await;
    assert_invoke_error(&r, "does not support operation delete");

    // A second sidecar now reads the waiting queue: highest priority first,
    // the expired message never.
    let wait = Duration::from_millis(1300).saturating_sub(published.elapsed());
    tokio::time::sleep(wait).await;
    let (app2, hits2) = start_http_app().await;
    let res2 = tempfile::tempdir().unwrap();
    let md: Vec<(&str, String)> = later("input");
    let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_resource(
        res2.path(),
        "later.yaml",
        &component_yaml("later", "bindings.rabbitmq", &md),
    );
    let _d2 = DaprdBuilder::new(&format!("bind-later-{id}"))
        .resources(res2.path())
        .arg("--app-port")
        .arg(app2.to_string())
        .start()
        .await;
    wait_until("the waiting messages", Duration::from_secs(10), || {
        bodies(&hits2, "/later").len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later_posts = posts(&hits2, "/later");
    let got: Vec<_> = later_posts
        .iter()
        .map(|h| String::from_utf8_lossy(&h.body).into_owned())
        .collect();
    assert_eq!(got, vec!["\"high\"", "\"low\""]);
    assert_eq!(later_posts[0].headers.get("priority").unwrap(), "5");
}

/// Metadata is validated at init: daprd refuses to start, naming the
/// component and the field.
#[tokio::test]
async fn invalid_binding_metadata_stops_daprd() {
    for (type_, md, field) in [
        (
            "bindings.cron",
            vec![("schedule", "every now and then")],
            "schedule",
        ),
        ("bindings.cron", vec![], "schedule"),
        ("bindings.http", vec![("url", "not a url")], "url"),
        (
            "bindings.mysql",
            vec![("url", "root@tcp(127.0.0.1:13306")],
            "url",
        ),
        (
            "bindings.redis",
            vec![("redisHost", "127.0.0.1:notaport")],
            "redisHost",
        ),
        (
            "bindings.localstorage",
            vec![("rootPath", "/proc/self")],
            "rootPath",
        ),
        (
            "bindings.rabbitmq",
            vec![("host", "amqp://127.0.0.1:15673")],
            "queueName",
        ),
        (
            "bindings.mqtt3",
            vec![("url", "tcp://127.0.0.1:11883"), ("topic", "t")],
            "consumerID",
        ),
    ] {
        let res = tempfile::tempdir().unwrap();
        write_resource(res.path(), "b.yaml", &component_yaml("broken", type_, &md));
        let mut d = DaprdBuilder::new("bind-bad")
            .resources(res.path())
            .no_wait()
            .start()
            .await;
        let status = d.wait_exit(Duration::from_secs(20));
        assert!(!status.success(), "{type_} started with {md:?}");
        let logs = d.logs();
        assert!(
            logs.contains("broken") && logs.contains(&format!("'{field}'")),
            "{type_} {md:?}: {logs}"
        );
    }
}

/// The official Python SDK's `invoke_binding` (gRPC) on localstorage and
/// Redis, and its error.
#[tokio::test]
async fn python_sdk_invoke_binding() {
    let res = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let root = files.path().to_string_lossy().to_string();
    write_resource(
        res.path(),
        "files.yaml",
        &component_yaml("files", "bindings.localstorage", &[("rootPath", &root)]),
    );
    write_resource(
        res.path(),
        "cache.yaml",
        &component_yaml("cache", "bindings.redis", &[("redisHost", &redis_addr())]),
    );
    let d = DaprdBuilder::new("bind-py")
        .resources(res.path())
        .start()
        .await;
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{repo}/e2e/python/test_bindings.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("FILES_ROOT", &root)
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
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
