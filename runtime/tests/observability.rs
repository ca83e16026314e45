//! Observability through real processes: two `daprd` (mTLS certificates from
//! a real `dapr-sentry`) and a real app. Metrics are scraped from
//! `--metrics-port`, parsed and counted, and checked by `promtool`; spans
//! reach an OTLP collector (tonic, in this test) and a Zipkin endpoint (axum,
//! in this test) with parent/child links across both sidecars and a pub/sub
//! hop; JSON logs and API logs are read back.

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    response::IntoResponse,
    routing::{get, post},
};
use common::{Daprd, DaprdBuilder, free_port, request};
use dapr::dapr::proto::runtime::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use serde_json::{Value, json};

// ---------- a tiny Prometheus text parser ----------

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here never contain `",` (paths, ids, codes).
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label");
            map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
        }
        out.push(Sample {
            name: name.to_owned(),
            labels: map,
            value: value.parse().expect("sample value"),
        });
    }
    out
}

/// The value of the one sample with exactly these labels (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(found.len() <= 1, "{name}{want:?} is ambiguous");
    found.first().map(|s| s.value).unwrap_or(0.0)
}

async fn scrape(port: u16) -> String {
    let r = request(
        "GET",
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        &[],
    )
    .await
    .expect("scrape");
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text()
}

/// Dapr's own names (OpenCensus views: counters without `_total` or ending
/// in `_count`, `..._res_recv_latency_ms`, camelCase labels) trip promtool's naming lint;
/// they must stay as Dapr spells them. Every other lint finding, and any
/// parse error, fails.
fn promtool_check(what: &str, text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (scripts/test-services.sh installs Debian's `prometheus`)"
        );
        eprintln!(
            "!!! SKIPPED promtool check of {what}: promtool not installed (apt-get install prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean; 3: lint findings only; anything else: unparsable.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool rejected {what}:\n{report}"
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let dapr_name = line.starts_with("dapr_")
            && (line.contains("counter metrics should have \"_total\" suffix")
                || line.contains("should not have \"_count\" suffix")
                // Dapr's `trustDomain` / `componentName` labels.
                || ((line.starts_with("dapr_runtime_acl_")
                    || line.starts_with("dapr_runtime_component_init_fail_total "))
                    && line.contains("label names should be written in 'snake_case'"))
                || (line.starts_with("dapr_runtime_service_invocation_res_recv_latency_ms ")
                    && line.contains("abbreviated units")));
        assert!(dapr_name, "promtool finding for {what}: {line}\n{text}");
    }
}

// ---------- processes: Sentry and placement ----------

struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling_bin(name: &str) -> std::path::PathBuf {
    let p = Path::new(common::DAPRD).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p {name}`",
        p.display()
    );
    p
}

async fn wait_http_ok(url: &str, p: &mut Proc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = request("GET", url, None, &[]).await
            && r.status == 200
        {
            return;
        }
        if p.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            panic!(
                "{what} did not start:\n{}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// dapr-sentry with generated credentials in `dir`: (process, gRPC port,
/// metrics port).
async fn start_sentry(dir: &Path) -> (Proc, u16, u16) {
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let (port, healthz, metrics) = (free_port(), free_port(), free_port());
    let log = dir.join("sentry.log");
    let child = Command::new(sibling_bin("dapr-sentry"))
        .args(["--port", &port.to_string(), "--listen-address", "127.0.0.1"])
        .args(["--healthz-port", &healthz.to_string()])
        .args(["--healthz-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--issuer-credentials", &creds.display().to_string()])
        .args(["--trust-domain", "localhost"])
        .env("NAMESPACE", "default")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn dapr-sentry");
    let mut p = Proc { child, log };
    wait_http_ok(
        &format!("http://127.0.0.1:{healthz}/healthz"),
        &mut p,
        "sentry",
    )
    .await;
    (p, port, metrics)
}

// ---------- the app ----------

#[derive(Clone, Default)]
struct Seen {
    /// traceparent of every request, by path.
    traceparents: Arc<Mutex<Vec<(String, String)>>>,
    events: Arc<Mutex<Vec<Value>>>,
}

/// Echoes invocations, subscribes `pubsub/orders` → `/orders`.
async fn start_app() -> (SocketAddr, Seen) {
    async fn subscribe() -> Json<Value> {
        Json(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]))
    }
    async fn any(State(s): State<Seen>, req: Request) -> axum::response::Response {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_owned();
        if let Some(tp) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            s.traceparents
                .lock()
                .unwrap()
                .push((path.clone(), tp.to_owned()));
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if path == "/orders" {
            s.events
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            return Json(json!({"status": "SUCCESS"})).into_response();
        }
        body.into_response()
    }
    let seen = Seen::default();
    let app = Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .fallback(any)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn write_config(dir: &Path, name: &str, extra: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: {}\n{extra}",
            dir.join("nr.db").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Caller and callee sidecars (callee with the app), each serving metrics.
async fn sidecars(
    dir: &Path,
    app: SocketAddr,
    config_extra: &str,
    mtls: Option<(u16, String)>,
) -> ((Daprd, u16), (Daprd, u16)) {
    let cfg = write_config(dir, "obs", config_extra);
    // A state store nothing else in daprd uses (the embedded default also
    // serves actors and workflows), and the in-memory pub/sub.
    let resources = dir.join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    common::write_resource(
        &resources,
        "kv.yaml",
        &common::component_yaml("kv", "state.in-memory", &[]),
    );
    common::write_resource(
        &resources,
        "pubsub.yaml",
        &common::component_yaml("pubsub", "pubsub.in-memory", &[]),
    );
    let build = |id: &str| {
        let metrics = free_port();
        let mut b = DaprdBuilder::new(id)
            .resources(&resources)
            .arg("--config")
            .arg(&cfg)
            .arg("--metrics-port")
            .arg(metrics.to_string())
            .arg("--metrics-listen-address")
            .arg("127.0.0.1");
        if let Some((port, anchors)) = &mtls {
            b = b
                .arg("--enable-mtls")
                .arg("--sentry-address")
                .arg(format!("127.0.0.1:{port}"))
                .env("DAPR_TRUST_ANCHORS", anchors);
        }
        (b, metrics)
    };
    let (callee, callee_metrics) = build("callee");
    let callee = callee
        .arg("--app-port")
        .arg(app.port().to_string())
        .start()
        .await;
    let (caller, caller_metrics) = build("caller");
    let caller = caller.start().await;
    ((caller, caller_metrics), (callee, callee_metrics))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_traffic_with_daprs_names_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (_sentry, sentry_port, sentry_metrics) = start_sentry(dir.path()).await;
    let anchors = std::fs::read_to_string(dir.path().join("creds/ca.crt")).unwrap();
    let (app, _seen) = start_app().await;
    // Error codes recorded; the callee lets the caller call everything but
    // /denied/**.
    let config = "  metrics:\n    recordErrorCodes: true\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      defaultAction: allow\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /denied/**\n        httpVerb: ['*']\n        action: deny\n";
    let ((caller, caller_m), (_callee, callee_m)) =
        sidecars(dir.path(), app, config, Some((sentry_port, anchors))).await;

    // Traffic: 5 invocations over mTLS, 1 denied by the callee's ACL, 1 save
    // + 3 gets of state, 2 gRPC GetState, 1 publish, 1 unknown store over
    // HTTP and 1 over gRPC (errors).
    for i in 0..5 {
        let r = request(
            "POST",
            &caller.url("/v1.0/invoke/callee/method/echo"),
            Some(format!("hello {i}").into_bytes()),
            &[("content-type", "text/plain")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("hello {i}"));
    }
    let r = common::http(
        "POST",
        &caller.url("/v1.0/invoke/callee/method/denied/x"),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = common::http(
        "POST",
        &caller.url("/v1.0/state/kv"),
        r#"[{"key":"k1","value":"v"}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    for _ in 0..3 {
        assert_eq!(
            common::http("GET", &caller.url("/v1.0/state/kv/k1"), "")
                .await
                .status,
            200
        );
    }
    let mut grpc = pb::dapr_client::DaprClient::connect(caller.grpc_endpoint())
        .await
        .unwrap();
    for _ in 0..2 {
        let got = grpc
            .get_state(pb::GetStateRequest {
                store_name: "kv".into(),
                key: "k1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.data, b"\"v\"");
    }
    let err = grpc
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "nope".into(),
            keys: vec!["k".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        common::http("GET", &caller.url("/v1.0/state/nope/k"), "")
            .await
            .status,
        400
    );
    assert_eq!(
        common::http(
            "POST",
            &caller.url("/v1.0/publish/pubsub/orders"),
            r#"{"n":1}"#
        )
        .await
        .status,
        204
    );

    let text = scrape(caller_m).await;
    let m = parse_metrics(&text);
    let caller_id = [("app_id", "caller")];
    let http_req = |method: &str, path: &str, status: &str| {
        value(
            &m,
            "dapr_http_server_request_count",
            &[
                caller_id[0],
                ("method", method),
                ("path", path),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        http_req("POST", "/v1.0/invoke/callee/method/echo", "200"),
        5.0,
        "{text}"
    );
    assert_eq!(http_req("POST", "/v1.0/state/kv", "204"), 1.0);
    // Keys are not labels (Dapr's default path rewrite).
    assert_eq!(http_req("GET", "/v1.0/state/kv", "200"), 3.0);
    assert_eq!(http_req("GET", "/v1.0/state/nope", "400"), 1.0);
    assert_eq!(
        value(
            &m,
            "dapr_http_server_latency_count",
            &[
                caller_id[0],
                ("method", "POST"),
                ("path", "/v1.0/invoke/callee/method/echo"),
                ("status", "200")
            ]
        ),
        5.0
    );
    // One size observation per HTTP request: the 11 above plus the
    // harness's readiness probes of /v1.0/healthz.
    let all_requests: f64 = m
        .iter()
        .filter(|s| s.name == "dapr_http_server_request_count")
        .map(|s| s.value)
        .sum();
    let probes: f64 = m
        .iter()
        .filter(|s| {
            s.name == "dapr_http_server_request_count" && s.labels["path"] == "/v1.0/healthz"
        })
        .map(|s| s.value)
        .sum();
    assert!(probes >= 1.0);
    assert_eq!(all_requests, 12.0 + probes, "{text}");
    assert_eq!(
        value(&m, "dapr_http_server_request_bytes_count", &caller_id),
        all_requests
    );
    // 5 × "hello i" + the saved JSON + the published JSON.
    let body_bytes = 5.0 * 7.0 + r#"[{"key":"k1","value":"v"}]"#.len() as f64 + 7.0;
    assert_eq!(
        value(&m, "dapr_http_server_request_bytes_sum", &caller_id),
        body_bytes
    );
    let inv = |name: &str, labels: &[(&str, &str)]| {
        let mut l = vec![caller_id[0]];
        l.extend_from_slice(labels);
        value(&m, name, &l)
    };
    assert_eq!(
        inv(
            "dapr_runtime_service_invocation_req_sent_total",
            &[("dst_app_id", "callee"), ("type", "unary")]
        ),
        6.0
    );
    // Client side of the hop: 5 answered, 1 refused by the callee's ACL.
    const CALL_LOCAL: &str = "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream";
    let grpc_client = |status: &str| {
        inv(
            "dapr_grpc_io_client_completed_rpcs",
            &[
                ("grpc_client_method", CALL_LOCAL),
                ("grpc_client_status", status),
            ],
        )
    };
    assert_eq!(grpc_client("OK"), 5.0, "{text}");
    assert_eq!(grpc_client("PermissionDenied"), 1.0, "{text}");
    assert_eq!(
        inv(
            "dapr_grpc_io_client_roundtrip_latency_count",
            &[
                ("grpc_client_method", CALL_LOCAL),
                ("grpc_client_status", "OK")
            ]
        ),
        5.0
    );
    let client_bytes = |dir: &str, what: &str| {
        inv(
            &format!("dapr_grpc_io_client_{dir}_bytes_per_rpc_{what}"),
            &[("grpc_client_method", CALL_LOCAL)],
        )
    };
    assert_eq!(client_bytes("sent", "count"), 6.0);
    assert_eq!(client_bytes("received", "count"), 6.0);
    let (caller_sent, caller_received) =
        (client_bytes("sent", "sum"), client_bytes("received", "sum"));
    assert!(
        caller_sent > 35.0,
        "5 × 7 body bytes plus the request heads"
    );
    // Error codes, by where they were mapped (the harness's readiness
    // probes may add ERR_HEALTH_NOT_READY).
    let code = |category: &str, code: &str| {
        inv(
            "dapr_error_code_total",
            &[("category", category), ("error_code", code)],
        )
    };
    assert_eq!(code("state", "ERR_STATE_STORE_NOT_FOUND"), 2.0, "{text}");
    assert_eq!(code("service-invocation", "ERR_DIRECT_INVOKE"), 1.0);
    assert_eq!(inv("dapr_runtime_mtls_init_total", &[]), 1.0);
    assert_eq!(
        inv(
            "dapr_runtime_service_invocation_res_recv_total",
            &[
                ("src_app_id", "callee"),
                ("status", "200"),
                ("type", "unary")
            ]
        ),
        5.0
    );
    assert_eq!(
        inv(
            "dapr_runtime_service_invocation_res_recv_latency_ms_count",
            &[("src_app_id", "callee"), ("status", "200")]
        ),
        5.0
    );
    let grpc_done = |method: &str, status: &str| {
        inv(
            "dapr_grpc_io_server_completed_rpcs",
            &[
                ("grpc_server_method", method),
                ("grpc_server_status", status),
            ],
        )
    };
    assert_eq!(grpc_done("/dapr.proto.runtime.v1.Dapr/GetState", "OK"), 2.0);
    assert_eq!(
        inv(
            "dapr_grpc_io_server_received_bytes_per_rpc_count",
            &[("grpc_server_method", "/dapr.proto.runtime.v1.Dapr/GetState")]
        ),
        2.0
    );
    // GetState{store_name:"kv",key:"k1"} is 8 bytes of protobuf each.
    assert_eq!(
        inv(
            "dapr_grpc_io_server_received_bytes_per_rpc_sum",
            &[("grpc_server_method", "/dapr.proto.runtime.v1.Dapr/GetState")]
        ),
        16.0
    );
    let state = |op: &str, ok: &str| {
        inv(
            "dapr_component_state_count",
            &[
                ("component", "kv"),
                ("namespace", ""),
                ("operation", op),
                ("success", ok),
            ],
        )
    };
    assert_eq!(state("get", "true"), 5.0, "3 HTTP + 2 gRPC gets");
    assert_eq!(state("bulk_set", "true") + state("set", "true"), 1.0);
    assert_eq!(
        inv(
            "dapr_component_pubsub_egress_count",
            &[
                ("component", "pubsub"),
                ("namespace", ""),
                ("success", "true"),
                ("topic", "orders")
            ]
        ),
        1.0
    );
    // Every loaded component counted once: kv and pubsub (and whatever
    // daprd adds by itself).
    let inits: f64 = m
        .iter()
        .filter(|s| s.name == "dapr_runtime_component_init_total")
        .map(|s| s.value)
        .sum();
    assert!(inits >= 2.0);
    assert_eq!(inv("dapr_runtime_component_loaded", &[]), inits);
    assert_eq!(
        inv(
            "dapr_runtime_component_init_total",
            &[("component", "state.in-memory")]
        ),
        1.0
    );
    assert_eq!(
        inv(
            "dapr_runtime_component_init_total",
            &[("component", "pubsub.in-memory")]
        ),
        1.0
    );
    promtool_check("daprd (caller) metrics", &text);

    let text = scrape(callee_m).await;
    let m = parse_metrics(&text);
    let callee = |name: &str, labels: &[(&str, &str)]| {
        let mut l = vec![("app_id", "callee")];
        l.extend_from_slice(labels);
        value(&m, name, &l)
    };
    assert_eq!(
        callee(
            "dapr_runtime_service_invocation_req_recv_total",
            &[("src_app_id", "caller")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        callee(
            "dapr_runtime_service_invocation_res_sent_total",
            &[("dst_app_id", "caller"), ("status", "200")]
        ),
        5.0
    );
    assert_eq!(
        callee(
            "dapr_grpc_io_server_completed_rpcs",
            &[
                ("grpc_server_method", CALL_LOCAL),
                ("grpc_server_status", "OK")
            ]
        ),
        5.0
    );
    // What the caller's client counted is what the callee's server counted.
    let server_bytes = |dir: &str| {
        callee(
            &format!("dapr_grpc_io_server_{dir}_bytes_per_rpc_sum"),
            &[("grpc_server_method", CALL_LOCAL)],
        )
    };
    assert_eq!(server_bytes("received"), caller_sent, "{text}");
    assert_eq!(server_bytes("sent"), caller_received, "{text}");
    // The callee's calls into its app (Dapr labels them with the method).
    assert_eq!(
        callee(
            "dapr_http_client_completed_count",
            &[("method", "POST"), ("path", "echo"), ("status", "200")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        callee(
            "dapr_http_client_roundtrip_latency_count",
            &[("method", "POST"), ("path", "echo"), ("status", "200")]
        ),
        5.0
    );
    assert_eq!(
        callee(
            "dapr_http_client_sent_bytes_sum",
            &[("method", "POST"), ("path", "echo"), ("status", "")]
        ),
        35.0
    );
    let app_calls: f64 = m
        .iter()
        .filter(|s| s.name == "dapr_http_client_completed_count")
        .map(|s| s.value)
        .sum();
    assert!(app_calls >= 6.0, "echo ×5 and GET dapr/subscribe: {text}");
    assert_eq!(
        callee("dapr_http_client_received_bytes_count", &[]),
        app_calls
    );
    // Echoed bodies come back: at least the 35 bytes sent.
    assert!(callee("dapr_http_client_received_bytes_sum", &[]) >= 35.0);
    // The callee's access control: 5 allowed and 1 blocked by the caller's
    // app policy (labelled with the caller's identity).
    let acl = |name: &str| {
        value(
            &m,
            name,
            &[
                ("app_id", "caller"),
                ("namespace", "default"),
                ("trustDomain", "public"),
            ],
        )
    };
    assert_eq!(
        acl("dapr_runtime_acl_app_policy_action_allowed_total"),
        5.0,
        "{text}"
    );
    assert_eq!(acl("dapr_runtime_acl_app_policy_action_blocked_total"), 1.0);
    assert_eq!(
        acl("dapr_runtime_acl_global_policy_action_blocked_total"),
        0.0
    );
    assert_eq!(callee("dapr_runtime_mtls_init_total", &[]), 1.0);
    promtool_check("daprd (callee) metrics", &text);
    // A publish through the callee (in-memory pub/sub is per sidecar) is
    // delivered to its app once.
    assert_eq!(
        common::http(
            "POST",
            &_callee.url("/v1.0/publish/pubsub/orders"),
            r#"{"n":2}"#
        )
        .await
        .status,
        204
    );
    let ingress = [
        ("app_id", "callee"),
        ("component", "pubsub"),
        ("namespace", ""),
        ("process_status", "success"),
        ("status", ""),
        ("topic", "orders"),
    ];
    let mut delivered = 0.0;
    for _ in 0..100 {
        delivered = value(
            &parse_metrics(&scrape(callee_m).await),
            "dapr_component_pubsub_ingress_count",
            &ingress,
        );
        if delivered > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, 1.0);
    assert_eq!(_seen.events.lock().unwrap().len(), 1);

    // Sentry signed exactly the two sidecars' certificates.
    let text = scrape(sentry_metrics).await;
    let m = parse_metrics(&text);
    assert_eq!(
        value(&m, "dapr_sentry_cert_sign_request_received_total", &[]),
        2.0,
        "{text}"
    );
    assert_eq!(value(&m, "dapr_sentry_cert_sign_success_total", &[]), 2.0);
    let expiry = value(&m, "dapr_sentry_issuercert_expiry_timestamp", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "issuer expiry {expiry} is not in the future");
    promtool_check("dapr-sentry metrics", &text);
}

// ---------- tracing ----------

#[derive(Clone, Default)]
struct Collector {
    otlp: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
    zipkin: Arc<Mutex<Vec<Value>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.otlp.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector and a Zipkin v2 endpoint on loopback.
async fn start_collectors() -> (Collector, u16, u16) {
    let c = Collector::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_port = otlp.local_addr().unwrap().port();
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp))
            .await;
    });
    async fn zipkin(State(c): State<Collector>, Json(spans): Json<Vec<Value>>) -> &'static str {
        c.zipkin.lock().unwrap().extend(spans);
        ""
    }
    let z = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let z_port = z.local_addr().unwrap().port();
    let app = Router::new()
        .route("/api/v2/spans", post(zipkin))
        .with_state(c.clone());
    tokio::spawn(async move {
        let _ = axum::serve(z, app).await;
    });
    (c, otlp_port, z_port)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls until `f` finds something in the collected spans.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_link_two_sidecars_and_a_pubsub_hop_in_otlp_and_zipkin() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, otlp_port, zipkin_port) = start_collectors().await;
    let (app, seen) = start_app().await;
    let tracing_cfg = format!(
        "  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{otlp_port}\n      protocol: grpc\n      isSecure: false\n    zipkin:\n      endpointAddress: http://127.0.0.1:{zipkin_port}/api/v2/spans\n"
    );
    let ((caller, _), (callee, _)) = sidecars(dir.path(), app, &tracing_cfg, None).await;

    // 1. HTTP invocation caller → callee → app under a client's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let tp = format!("00-{trace_id}-{client_span}-01");
    let r = request(
        "POST",
        &caller.url("/v1.0/invoke/callee/method/echo"),
        Some(b"x".to_vec()),
        &[("traceparent", &tp), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let spans = |c: &Collector| c.otlp.lock().unwrap().clone();
    let (a, b) = wait_for("the two invocation spans", || {
        let s = spans(&collector);
        let a = s
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id && s.name == "CallLocal/callee/echo")?;
        let b = s.iter().find(|x| {
            x.name.ends_with("ServiceInvocation/CallLocalStream") && x.parent_span_id == a.span_id
        })?;
        Some((a.clone(), b.clone()))
    })
    .await;
    // Caller's span: child of the client's span, Dapr's attributes.
    assert_eq!(hex(&a.parent_span_id), client_span);
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
    };
    assert_eq!(attr(&a, "dapr.protocol").as_deref(), Some("http"));
    assert_eq!(
        attr(&a, "dapr.api").as_deref(),
        Some("POST /v1.0/invoke/callee/method/echo")
    );
    assert_eq!(attr(&a, "dapr.status_code").as_deref(), Some("200"));
    assert_eq!(attr(&a, "dapr.invoke_method").as_deref(), Some("echo"));
    // Callee's span: same trace, child of the caller's span, gRPC attributes.
    assert_eq!(hex(&b.trace_id), trace_id);
    assert_eq!(attr(&b, "rpc.system").as_deref(), Some("grpc"));
    // The app saw the callee's span as its parent.
    let app_tp = seen
        .traceparents
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "/echo")
        .map(|(_, t)| t.clone())
        .expect("the app got a traceparent");
    assert_eq!(app_tp, format!("00-{trace_id}-{}-01", hex(&b.span_id)));
    // The caller answers with its span's traceparent.
    assert_eq!(
        r.headers["traceparent"].to_str().unwrap(),
        format!("00-{trace_id}-{}-01", hex(&a.span_id))
    );

    // 2. Pub/sub hop through the callee (in-memory broker): publish span →
    //    CloudEvent traceparent → delivery span.
    let pub_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = request(
        "POST",
        &callee.url("/v1.0/publish/pubsub/orders"),
        Some(br#"{"n":1}"#.to_vec()),
        &[
            ("content-type", "application/json"),
            (
                "traceparent",
                &format!("00-{pub_trace}-b7ad6b7169203331-01"),
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    let (publish, deliver) = wait_for("the publish and delivery spans", || {
        let s = spans(&collector);
        let p = s
            .iter()
            .find(|s| hex(&s.trace_id) == pub_trace && s.name == "/v1.0/publish/pubsub/orders")?;
        let d = s
            .iter()
            .find(|x| x.name == "pubsub/orders" && x.parent_span_id == p.span_id)?;
        Some((p.clone(), d.clone()))
    })
    .await;
    assert_eq!(hex(&publish.parent_span_id), "b7ad6b7169203331");
    assert_eq!(hex(&deliver.trace_id), pub_trace);
    assert_eq!(deliver.kind, 5, "a CONSUMER span");
    let event = seen.events.lock().unwrap()[0].clone();
    assert_eq!(
        event["traceparent"],
        format!("00-{pub_trace}-{}-01", hex(&publish.span_id)),
        "the CloudEvent carries the publish span"
    );

    // 3. Zipkin got the same spans with the same links.
    let b_id = hex(&b.span_id);
    let a_id = hex(&a.span_id);
    let z = wait_for("the callee span in Zipkin", || {
        collector
            .zipkin
            .lock()
            .unwrap()
            .iter()
            .find(|s| s["id"] == b_id.as_str())
            .cloned()
    })
    .await;
    assert_eq!(z["parentId"], a_id.as_str());
    assert_eq!(z["traceId"], trace_id);
    assert_eq!(z["kind"], "SERVER");
    assert_eq!(z["localEndpoint"]["serviceName"], "callee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_api_logs_as_dapr_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "logs",
        "  logging:\n    apiLogging:\n      enabled: true\n      obfuscateURLs: true\n      omitHealthChecks: true\n",
    );
    let token = "s3cr3t-t0ken-value";
    let d = DaprdBuilder::new("logger")
        .arg("--config")
        .arg(&cfg)
        .arg("--log-as-json")
        .arg("--enable-metrics=false")
        .env("DAPR_API_TOKEN", token)
        .start()
        .await;
    let payload = "payload-that-must-not-be-logged";
    let r = request(
        "POST",
        &d.url("/v1.0/state/statestore"),
        Some(format!(r#"[{{"key":"private-key-name","value":"{payload}"}}]"#).into_bytes()),
        &[("dapr-api-token", token), ("user-agent", "obs-test/1")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    let r = request(
        "GET",
        &d.url("/v1.0/state/statestore/private-key-name"),
        None,
        &[("dapr-api-token", token), ("user-agent", "obs-test/1")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = request("GET", &d.url("/v1.0/healthz"), None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let lines = wait_for("the API log line", || {
        let lines: Vec<Value> = d
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines
            .iter()
            .filter(|l| l["msg"] == "HTTP API Called")
            .count()
            .eq(&2)
            .then_some(lines)
    })
    .await;
    // At info and above (the harness runs daprd at debug).
    let logs: String = d
        .logs()
        .lines()
        .filter(|l| !l.contains(r#""level":"debug""#))
        .collect::<Vec<_>>()
        .join("\n");
    for l in &lines {
        for k in [
            "time", "level", "msg", "scope", "app_id", "instance", "type", "ver",
        ] {
            assert!(l.get(k).is_some(), "no {k} in {l}");
        }
        assert_eq!(l["app_id"], "logger");
        assert_eq!(l["type"], "log");
    }
    let api: Vec<&Value> = lines
        .iter()
        .filter(|l| l["msg"] == "HTTP API Called")
        .collect();
    assert_eq!(api.len(), 2, "health checks omitted: {api:?}");
    for a in &api {
        assert_eq!(a["scope"], "dapr.runtime.http-info");
        assert_eq!(a["level"], "info");
        assert_eq!(a["useragent"], "obs-test/1");
        assert!(a["duration"].is_u64(), "{a}");
    }
    assert_eq!(api[0]["code"], 204);
    assert_eq!(api[1]["code"], 200);
    // obfuscateURLs: the route, not the URL with the key.
    assert_eq!(api[1]["method"], "/v1.0/state/statestore", "{}", api[1]);
    assert!(lines.iter().any(|l| l["scope"] == "dapr.runtime"));
    assert!(!logs.contains(token), "the API token is in the logs");
    assert!(!logs.contains(payload), "a payload is in the logs");
}

// ---------- control-plane logs ----------

/// Starts a control-plane binary with `--log-as-json` and returns its log
/// lines once its health endpoint answers.
async fn json_log_lines(dir: &Path, name: &str, args: &[String], healthz: u16) -> Vec<Value> {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(sibling_bin(name))
        .args(args)
        .arg("--log-as-json")
        .env("NAMESPACE", "default")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut p = Proc { child, log };
    wait_http_ok(&format!("http://127.0.0.1:{healthz}/healthz"), &mut p, name).await;
    let text = std::fs::read_to_string(&p.log).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
        .collect()
}

fn assert_dapr_json(name: &str, scope: &str, lines: &[Value]) {
    assert!(!lines.is_empty(), "{name} logged nothing");
    for l in lines {
        for k in ["time", "level", "msg", "scope", "instance", "type", "ver"] {
            assert!(l.get(k).is_some(), "{name}: missing {k} in {l}");
        }
        assert_eq!(l["type"], "log", "{l}");
        assert!(
            l["scope"].as_str().unwrap().starts_with(scope),
            "{name}: scope {l}"
        );
        // Control-plane lines carry no app id.
        assert!(l.get("app_id").is_none(), "{name}: {l}");
        assert!(
            ["debug", "info", "warning", "error"].contains(&l["level"].as_str().unwrap()),
            "{l}"
        );
        chrono::DateTime::parse_from_rfc3339(l["time"].as_str().unwrap()).expect("RFC 3339 time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_binaries_log_json_with_daprs_fields() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let healthz = free_port();
    let s = |v: &str| v.to_owned();
    let sentry = json_log_lines(
        dir.path(),
        "dapr-sentry",
        &[
            s("--port"),
            free_port().to_string(),
            s("--listen-address"),
            s("127.0.0.1"),
            s("--healthz-port"),
            healthz.to_string(),
            s("--healthz-listen-address"),
            s("127.0.0.1"),
            s("--metrics-port"),
            free_port().to_string(),
            s("--metrics-listen-address"),
            s("127.0.0.1"),
            s("--issuer-credentials"),
            creds.display().to_string(),
            s("--trust-domain"),
            s("localhost"),
        ],
        healthz,
    )
    .await;
    assert_dapr_json("dapr-sentry", "dapr.sentry", &sentry);

    let healthz = free_port();
    let placement = json_log_lines(
        dir.path(),
        "dapr-placement",
        &[
            s("--id"),
            s("p0"),
            s("--initial-cluster"),
            format!("p0=127.0.0.1:{}", free_port()),
            s("--port"),
            free_port().to_string(),
            s("--listen-address"),
            s("127.0.0.1"),
            s("--healthz-port"),
            healthz.to_string(),
            s("--healthz-listen-address"),
            s("127.0.0.1"),
            s("--metrics-port"),
            free_port().to_string(),
            s("--metrics-listen-address"),
            s("127.0.0.1"),
            s("--log-level"),
            s("debug"),
        ],
        healthz,
    )
    .await;
    assert_dapr_json("dapr-placement", "dapr.placement", &placement);
    // --log-level debug lets debug lines through.
    assert!(
        placement.iter().any(|l| l["level"] == "debug"),
        "{placement:?}"
    );
}

// ---------- TLS span export ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_otlp_collector_verified_against_the_system_roots() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    // A private CA; daprd trusts it only through SSL_CERT_FILE (the system
    // roots rustls-native-certs loads).
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let c = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let identity = tonic::transport::Identity::from_pem(server.pem(), server_key.serialize_pem());
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });

    // isSecure: true is Dapr's default; it is spelled out here.
    let cfg = write_config(
        dir.path(),
        "tls",
        &format!(
            "  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{port}\n      protocol: grpc\n      isSecure: true\n"
        ),
    );
    let daprd = DaprdBuilder::new("tls-export")
        .arg("--config")
        .arg(&cfg)
        .env("SSL_CERT_FILE", &ca_file.display().to_string())
        .start()
        .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = request(
        "GET",
        &daprd.url("/v1.0/metadata"),
        None,
        &[("traceparent", &format!("00-{trace_id}-b7ad6b7169203331-01"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let span = wait_for("the metadata span over TLS", || {
        c.otlp
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id)
            .cloned()
    })
    .await;
    assert_eq!(hex(&span.parent_span_id), "b7ad6b7169203331");

    // The same collector is refused by a sidecar that trusts only the
    // public roots: the handshake fails and nothing arrives.
    drop(daprd);
    let before = c.otlp.lock().unwrap().len();
    let untrusting = DaprdBuilder::new("tls-untrusted")
        .arg("--config")
        .arg(&cfg)
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .start()
        .await;
    let r = request("GET", &untrusting.url("/v1.0/metadata"), None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    wait_for("the failed export in daprd's log", || {
        untrusting
            .logs()
            .contains("span export failed")
            .then_some(())
    })
    .await;
    assert_eq!(c.otlp.lock().unwrap().len(), before);
}

// ---------- binding and configuration component metrics ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_and_configuration_calls_are_counted_per_component() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _seen) = start_app().await;
    let resources = dir.path().join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    common::write_resource(
        &resources,
        "store.yaml",
        &common::component_yaml(
            "store",
            "bindings.localstorage",
            &[("rootPath", &files.display().to_string())],
        ),
    );
    common::write_resource(
        &resources,
        "tick.yaml",
        &common::component_yaml("tick", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    common::write_resource(
        &resources,
        "cfg.yaml",
        &common::component_yaml(
            "cfg",
            "configuration.redis",
            &[("redisHost", &common::redis_addr())],
        ),
    );
    let metrics = free_port();
    let daprd = DaprdBuilder::new("components")
        .resources(&resources)
        .arg("--config")
        .arg(write_config(dir.path(), "c", ""))
        .arg("--app-port")
        .arg(app.port().to_string())
        .arg("--metrics-port")
        .arg(metrics.to_string())
        .arg("--metrics-listen-address")
        .arg("127.0.0.1")
        .start()
        .await;
    let invoke = |body: &'static str| {
        let url = daprd.url("/v1.0/bindings/store");
        async move { common::http("POST", &url, body).await.status }
    };
    for name in ["a", "b"] {
        let body = if name == "a" {
            r#"{"operation":"create","data":"x","metadata":{"fileName":"a"}}"#
        } else {
            r#"{"operation":"create","data":"y","metadata":{"fileName":"b"}}"#
        };
        assert_eq!(invoke(body).await, 200);
    }
    assert_eq!(
        invoke(r#"{"operation":"get","metadata":{"fileName":"a"}}"#).await,
        200
    );
    assert_eq!(
        invoke(r#"{"operation":"get","metadata":{"fileName":"missing"}}"#).await,
        500
    );
    let r = common::http(
        "GET",
        &daprd.url("/v1.0/configuration/cfg?key=obs-test-key"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let labels = |op: &'static str, ok: &'static str| {
        [
            ("app_id", "components"),
            ("component", "store"),
            ("namespace", ""),
            ("operation", op),
            ("success", ok),
        ]
    };
    // The cron binding fires into the app every second: wait for one.
    let text = wait_for_metric(metrics, |m| {
        value(
            m,
            "dapr_component_input_binding_count",
            &[
                ("app_id", "components"),
                ("component", "tick"),
                ("namespace", ""),
                ("success", "true"),
            ],
        ) >= 1.0
    })
    .await;
    let m = parse_metrics(&text);
    let out = |op, ok| value(&m, "dapr_component_output_binding_count", &labels(op, ok));
    assert_eq!(out("create", "true"), 2.0, "{text}");
    assert_eq!(out("get", "true"), 1.0);
    assert_eq!(out("get", "false"), 1.0);
    assert_eq!(
        value(
            &m,
            "dapr_component_output_binding_latencies_count",
            &labels("create", "true")
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "dapr_component_configuration_count",
            &[
                ("app_id", "components"),
                ("component", "cfg"),
                ("namespace", ""),
                ("operation", "get"),
                ("success", "true"),
            ]
        ),
        1.0,
        "{text}"
    );
    promtool_check("daprd (components) metrics", &text);
}

/// Scrapes until `ok` holds (generous deadline for a loaded machine).
async fn wait_for_metric(port: u16, ok: impl Fn(&[Sample]) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(port).await;
        if ok(&parse_metrics(&text)) {
            return text;
        }
        assert!(Instant::now() < deadline, "metric never appeared:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------- actor metrics ----------

/// An actor app hosting `Counter`: every method, reminder and timer call
/// answers 200.
async fn start_actor_app() -> u16 {
    let router = Router::new()
        .route(
            "/dapr/config",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"entities":["Counter"],"actorIdleTimeout":"1s","actorScanInterval":"200ms"}"#,
                )
            }),
        )
        .fallback(|| async { "" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_reminders_timers_and_deactivations_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let healthz = free_port();
    let placement_port = free_port();
    let s = |v: &str| v.to_owned();
    let log = dir.path().join("placement.log");
    let child = Command::new(sibling_bin("dapr-placement"))
        .args([
            s("--id"),
            s("p0"),
            s("--initial-cluster"),
            format!("p0=127.0.0.1:{}", free_port()),
            s("--port"),
            placement_port.to_string(),
            s("--listen-address"),
            s("127.0.0.1"),
            s("--healthz-port"),
            healthz.to_string(),
            s("--healthz-listen-address"),
            s("127.0.0.1"),
            s("--metrics-port"),
            free_port().to_string(),
            s("--metrics-listen-address"),
            s("127.0.0.1"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn dapr-placement");
    let mut placement = Proc { child, log };
    wait_http_ok(
        &format!("http://127.0.0.1:{healthz}/healthz"),
        &mut placement,
        "placement",
    )
    .await;
    let app_port = start_actor_app().await;
    let metrics = free_port();
    let daprd = DaprdBuilder::new("actors-obs")
        .arg("--config")
        .arg(write_config(dir.path(), "a", ""))
        .arg("--app-port")
        .arg(app_port.to_string())
        .arg("--placement-host-address")
        .arg(format!("127.0.0.1:{placement_port}"))
        .arg("--dapr-internal-grpc-port")
        .arg(free_port().to_string())
        .arg("--metrics-port")
        .arg(metrics.to_string())
        .arg("--metrics-listen-address")
        .arg("127.0.0.1")
        .start()
        .await;
    let actor = |path: &str| daprd.url(&format!("/v1.0/actors/Counter/c1/{path}"));
    // Activate (retrying while the actor runtime joins placement), then a
    // timer and a reminder every 200 ms.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = common::http("POST", &actor("method/add"), "").await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "actor never activated: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let every = r#"{"dueTime":"0s","period":"200ms"}"#;
    assert_eq!(
        common::http("POST", &actor("timers/t1"), every)
            .await
            .status,
        204
    );
    assert_eq!(
        common::http("POST", &actor("reminders/r1"), every)
            .await
            .status,
        204
    );
    let fired = |m: &[Sample], name: &str| {
        value(
            m,
            name,
            &[
                ("actor_type", "Counter"),
                ("app_id", "actors-obs"),
                ("success", "true"),
            ],
        )
    };
    wait_for_metric(metrics, |m| {
        fired(m, "dapr_runtime_actor_timers_fired_total") >= 2.0
            && fired(m, "dapr_runtime_actor_reminders_fired_total") >= 2.0
    })
    .await;
    // With both gone the actor idles out after 1 s and is deactivated.
    for path in ["timers/t1", "reminders/r1"] {
        assert_eq!(common::http("DELETE", &actor(path), "").await.status, 204);
    }
    let text = wait_for_metric(metrics, |m| {
        value(
            m,
            "dapr_runtime_actor_deactivated_total",
            &[("actor_type", "Counter"), ("app_id", "actors-obs")],
        ) >= 1.0
    })
    .await;
    let m = parse_metrics(&text);
    assert_eq!(
        value(
            &m,
            "dapr_runtime_actor_deactivated_failed_total",
            &[("actor_type", "Counter"), ("app_id", "actors-obs")]
        ),
        0.0
    );
    promtool_check("daprd (actors) metrics", &text);
}
