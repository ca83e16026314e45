//! Actors end to end: the real `dapr-placement` (1 and 3 nodes), two real
//! `daprd` replicas of one app id sharing a Redis actor state store, and a
//! small actor app (axum) behind each.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{delete, get, put},
};
use common::*;

// ---------- placement ----------

fn placement_bin() -> PathBuf {
    let p = Path::new(DAPRD).with_file_name("dapr-placement");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", "dapr-placement"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building dapr-placement failed");
    }
    p
}

struct PlacementNode {
    id: String,
    grpc: u16,
    metrics: u16,
    child: Option<Child>,
    log: PathBuf,
}

struct Placement {
    nodes: Vec<PlacementNode>,
    _dir: tempfile::TempDir,
}

impl Placement {
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(String, u16, u16, u16, u16)> = (0..n)
            .map(|i| {
                (
                    format!("dapr-placement-{i}"),
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                )
            })
            .collect();
        let cluster = ports
            .iter()
            .map(|(id, _, raft, _, _)| format!("{id}=127.0.0.1:{raft}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .map(|(id, grpc, _, healthz, metrics)| {
                let log = dir.path().join(format!("{id}.log"));
                let file = std::fs::File::create(&log).expect("log");
                let child = Command::new(placement_bin())
                    .args(["--id", id, "--initial-cluster", &cluster])
                    .args(["--port", &grpc.to_string(), "--listen-address", "127.0.0.1"])
                    .args(["--healthz-port", &healthz.to_string()])
                    .args(["--healthz-listen-address", "127.0.0.1"])
                    .args(["--metrics-port", &metrics.to_string()])
                    .args(["--metrics-listen-address", "127.0.0.1"])
                    .args(["--metadata-enabled", "--log-level", "debug"])
                    .stdout(Stdio::null())
                    .stderr(file)
                    .spawn()
                    .expect("spawn dapr-placement");
                PlacementNode {
                    id: id.clone(),
                    grpc: *grpc,
                    metrics: *metrics,
                    child: Some(child),
                    log,
                }
            })
            .collect();
        Self { nodes, _dir: dir }
    }

    fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.grpc))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index of the node serving sidecars (`dapr_placement_leader_status 1`),
    /// waiting up to `timeout`.
    async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_none() {
                    continue;
                }
                let url = format!("http://127.0.0.1:{}/metrics", n.metrics);
                if let Ok(r) = request("GET", &url, None, &[]).await
                    && r.status == 200
                    && r.text()
                        .lines()
                        .any(|l| l.trim() == "dapr_placement_leader_status 1")
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no placement leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

// ---------- the actor app ----------

#[derive(Debug, Clone)]
struct CallRecord {
    actor: String,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct AppLog {
    calls: Vec<CallRecord>,
    /// Actor keys that received a method call here.
    active: std::collections::HashSet<String>,
    deactivated: Vec<String>,
    reentrancy_ids: Vec<String>,
}

#[derive(Clone)]
struct ActorApp {
    name: String,
    log: Arc<Mutex<AppLog>>,
    /// The sidecar's HTTP port, for nested calls.
    sidecar: Arc<Mutex<u16>>,
}

const CONFIG: &str = r#"{
  "entities": ["Counter", "Reentrant", "Idle"],
  "actorIdleTimeout": "1h0m0s",
  "actorScanInterval": "0h0m0.2s",
  "drainOngoingCallTimeout": "1s",
  "drainRebalancedActors": true,
  "reentrancy": {"enabled": false},
  "entitiesConfig": [
    {"entities": ["Reentrant"], "reentrancy": {"enabled": true, "maxStackDepth": 3}},
    {"entities": ["Idle"], "actorIdleTimeout": "1s"}
  ]
}"#;

async fn app_config() -> impl IntoResponse {
    ([("content-type", "application/json")], CONFIG)
}

async fn app_method(
    State(app): State<ActorApp>,
    UrlPath((ty, id, method)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let key = format!("{ty}/{id}");
    let start = Instant::now();
    let reentrancy = headers
        .get("dapr-reentrancy-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    {
        let mut l = app.log.lock().unwrap();
        l.active.insert(key.clone());
        if let Some(r) = &reentrancy {
            l.reentrancy_ids.push(r.clone());
        }
    }
    let out = match method.as_str() {
        "hit" => {
            tokio::time::sleep(Duration::from_millis(25)).await;
            (
                StatusCode::OK,
                Json(serde_json::json!({"host": app.name, "actor": key})),
            )
                .into_response()
        }
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "recurse" => {
            // body: remaining depth; calls itself through its own sidecar.
            let n: u32 = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if n == 0 {
                (StatusCode::OK, "0").into_response()
            } else {
                let port = *app.sidecar.lock().unwrap();
                let url = format!("http://127.0.0.1:{port}/v1.0/actors/{ty}/{id}/method/recurse");
                let mut h = vec![];
                let rid = reentrancy.clone().unwrap_or_default();
                if !rid.is_empty() {
                    h.push(("Dapr-Reentrancy-Id", rid.as_str()));
                }
                match request("PUT", &url, Some((n - 1).to_string().into_bytes()), &h).await {
                    Ok(r) if r.status == 200 => (StatusCode::OK, format!("{}", n)).into_response(),
                    Ok(r) => (StatusCode::INTERNAL_SERVER_ERROR, r.body).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    app.log.lock().unwrap().calls.push(CallRecord {
        actor: key,
        start,
        end: Instant::now(),
    });
    out
}

async fn app_deactivate(
    State(app): State<ActorApp>,
    UrlPath((ty, id)): UrlPath<(String, String)>,
) -> StatusCode {
    let mut l = app.log.lock().unwrap();
    let key = format!("{ty}/{id}");
    l.active.remove(&key);
    l.deactivated.push(key);
    StatusCode::OK
}

async fn start_app(name: &str) -> (ActorApp, u16) {
    let app = ActorApp {
        name: name.to_owned(),
        log: Arc::default(),
        sidecar: Arc::default(),
    };
    let router = Router::new()
        .route("/dapr/config", get(app_config))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/actors/{ty}/{id}/method/{*method}", put(app_method))
        .route("/actors/{ty}/{id}", delete(app_deactivate))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .ok();
    });
    (app, port)
}

// ---------- sidecars ----------

fn redis_store(dir: &Path) {
    write_resource(
        dir,
        "actorstore.yaml",
        &component_yaml(
            "actorstore",
            "state.redis",
            &[("redisHost", &redis_addr()), ("actorStateStore", "true")],
        ),
    );
}

struct Host {
    app: ActorApp,
    daprd: Daprd,
}

async fn start_host(app_id: &str, name: &str, placement: &str, resources: &Path) -> Host {
    let (app, port) = start_app(name).await;
    let daprd = DaprdBuilder::new(app_id)
        .resources(resources)
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--placement-host-address")
        .arg(placement)
        .start()
        .await;
    *app.sidecar.lock().unwrap() = daprd.http_port;
    Host { app, daprd }
}

/// Waits until the sidecar's metadata says the actor host is ready.
async fn wait_host_ready(d: &Daprd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = http("GET", &d.url("/v1.0/metadata"), "").await.json();
        if m["actorRuntime"]["hostReady"] == serde_json::json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "actor host never ready: {m}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until calls through `d` reach both hosts (each owns some of 40
/// ids of `actor_type`); `method` answers with the host's name.
async fn wait_spread(d: &Daprd, actor_type: &str, method: &str, other: &Daprd) {
    // Both hosts must have registered with placement and received the
    // table; under a loaded CI run a Python app host can take a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut hosts = std::collections::HashSet::new();
        for i in 0..40 {
            let url = d.url(&format!(
                "/v1.0/actors/{actor_type}/probe-{i}/method/{method}"
            ));
            let r = http("PUT", &url, "").await;
            if r.status == 200 {
                let j = r.json();
                let name = j["host"].as_str().or(j.as_str()).unwrap_or("").to_owned();
                hosts.insert(name);
            }
        }
        if hosts.len() == 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the two hosts never shared the actors ({hosts:?}):\n{}\n{}",
            d.logs(),
            other.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_two_hosts(a: &Host, b: &Host) {
    wait_spread(&a.daprd, "Counter", "hit", &b.daprd).await;
}

fn no_overlap(records: &mut [CallRecord]) -> Result<(), String> {
    records.sort_by_key(|r| r.start);
    for w in records.windows(2) {
        if w[1].start < w[0].end {
            return Err(format!("calls interleaved: {:?} overlaps {:?}", w[1], w[0]));
        }
    }
    Ok(())
}

// ---------- tests ----------

/// One placement node, two replicas: single activation, turns, reentrancy,
/// state, errors, idle deactivation, metadata, and a host kill moving actors
/// with their state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actors_on_two_hosts() {
    let placement = Placement::start(1);
    placement.leader(Duration::from_secs(15)).await;
    let res = tempfile::tempdir().unwrap();
    redis_store(res.path());
    let app_id = format!("actors-{}", uuid::Uuid::new_v4().simple());
    let a = start_host(&app_id, "A", &placement.addresses(), res.path()).await;
    let b = start_host(&app_id, "B", &placement.addresses(), res.path()).await;
    wait_host_ready(&a.daprd).await;
    wait_host_ready(&b.daprd).await;
    wait_two_hosts(&a, &b).await;

    // Calls through either sidecar reach one activation.
    let id = format!("c-{}", uuid::Uuid::new_v4().simple());
    let path = format!("/v1.0/actors/Counter/{id}/method/hit");
    let via_a = http("POST", &a.daprd.url(&path), "").await;
    let via_b = http("GET", &b.daprd.url(&path), "").await;
    assert_eq!(via_a.status, 200, "{}", via_a.text());
    assert_eq!(via_b.status, 200, "{}", via_b.text());
    assert_eq!(via_a.json()["host"], via_b.json()["host"]);
    let key = format!("Counter/{id}");
    let on_a = a.app.log.lock().unwrap().active.contains(&key);
    let on_b = b.app.log.lock().unwrap().active.contains(&key);
    assert!(on_a ^ on_b, "exactly one activation (A: {on_a}, B: {on_b})");

    // Concurrent calls through both sidecars never interleave.
    let mut calls = Vec::new();
    for i in 0..12 {
        let url = if i % 2 == 0 {
            a.daprd.url(&path)
        } else {
            b.daprd.url(&path)
        };
        calls.push(tokio::spawn(
            async move { http("PUT", &url, "").await.status },
        ));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let owner = if on_a { &a.app } else { &b.app };
    let mut recs: Vec<CallRecord> = owner
        .log
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|r| r.actor == key)
        .cloned()
        .collect();
    assert_eq!(recs.len(), 14);
    no_overlap(&mut recs).unwrap();

    // Reentrancy: A -> A -> A within maxStackDepth 3; deeper fails with
    // Dapr's stack depth error.
    let rid = format!("r-{}", uuid::Uuid::new_v4().simple());
    let rpath = format!("/v1.0/actors/Reentrant/{rid}/method/recurse");
    let r = request("PUT", &a.daprd.url(&rpath), Some(b"2".to_vec()), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request("PUT", &a.daprd.url(&rpath), Some(b"5".to_vec()), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_ACTOR_INVOKE_METHOD");
    assert!(r.text().contains("ERR_ACTOR_STACK_DEPTH"), "{}", r.text());
    // The chain id was minted by the sidecar and passed along.
    let ids = [
        a.app.log.lock().unwrap().reentrancy_ids.clone(),
        b.app.log.lock().unwrap().reentrancy_ids.clone(),
    ]
    .concat();
    assert!(!ids.is_empty());

    // State round trip (only for an active actor), through both sidecars
    // (the transaction must reach the store from the host that has the
    // actor active: its owner).
    let owner_d = if on_a { &a.daprd } else { &b.daprd };
    let other_d = if on_a { &b.daprd } else { &a.daprd };
    let tx = r#"[{"operation":"upsert","request":{"key":"n","value":{"count":14}}},
                 {"operation":"upsert","request":{"key":"tmp","value":"x","metadata":{"ttlInSeconds":"1"}}},
                 {"operation":"delete","request":{"key":"gone"}}]"#;
    let r = http(
        "POST",
        &owner_d.url(&format!("/v1.0/actors/Counter/{id}/state")),
        tx,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for d in [owner_d, other_d] {
        let r = http(
            "GET",
            &d.url(&format!("/v1.0/actors/Counter/{id}/state/n")),
            "",
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({"count": 14}));
    }
    let missing = http(
        "GET",
        &a.daprd
            .url(&format!("/v1.0/actors/Counter/{id}/state/none")),
        "",
    )
    .await;
    assert_eq!(missing.status, 204);
    // TTL: the value expires.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http(
            "GET",
            &owner_d.url(&format!("/v1.0/actors/Counter/{id}/state/tmp")),
            "",
        )
        .await;
        if r.status == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "ttl never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http(
        "POST",
        &other_d.url(&format!("/v1.0/actors/Counter/{id}/state")),
        tx,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ERR_ACTOR_INSTANCE_MISSING");

    // Errors.
    let r = http(
        "PUT",
        &a.daprd
            .url(&format!("/v1.0/actors/Counter/{id}/method/fail")),
        "",
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_ACTOR_INVOKE_METHOD");
    assert!(r.text().contains("boom"), "{}", r.text());
    let r = http("PUT", &a.daprd.url("/v1.0/actors/Nobody/x/method/hit"), "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_ACTOR_NO_ADDRESS");
    let r = http(
        "PUT",
        &a.daprd
            .url(&format!("/v1.0/actors/Counter/{id}/method/missing")),
        "",
    )
    .await;
    assert_eq!(r.error_code(), "ERR_ACTOR_INVOKE_METHOD");
    let r = http(
        "POST",
        &a.daprd.url(&format!("/v1.0/actors/Counter/{id}/state")),
        "{",
    )
    .await;
    assert_eq!(r.error_code(), "ERR_MALFORMED_REQUEST");

    // Idle deactivation (actorIdleTimeout 1s for Idle, scan every 200ms).
    let idle = format!("i-{}", uuid::Uuid::new_v4().simple());
    let r = http(
        "PUT",
        &a.daprd.url(&format!("/v1.0/actors/Idle/{idle}/method/hit")),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let ikey = format!("Idle/{idle}");
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let gone = [&a.app, &b.app]
            .iter()
            .any(|h| h.log.lock().unwrap().deactivated.contains(&ikey));
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "idle actor never deactivated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Metadata.
    let m = http("GET", &owner_d.url("/v1.0/metadata"), "").await.json();
    assert_eq!(m["actorRuntime"]["runtimeStatus"], "RUNNING", "{m}");
    assert_eq!(m["actorRuntime"]["placement"], "placement: connected");
    assert!(
        m["actors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Counter" && c["count"].as_u64() >= Some(1)),
        "{m}"
    );

    // Kill the host that owns the actor: it moves, state intact.
    let (survivor, victim) = if on_a { (&b, &a) } else { (&a, &b) };
    let owner_before = victim.app.name.clone();
    let pid = victim.daprd.child.as_ref().map(|c| c.id()).unwrap();
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let killed = Instant::now();
    let r = http("PUT", &survivor.daprd.url(&path), "").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), survivor.daprd.logs());
    assert_ne!(r.json()["host"], owner_before);
    println!("host kill: actor served again after {:?}", killed.elapsed());
    let r = http(
        "GET",
        &survivor
            .daprd
            .url(&format!("/v1.0/actors/Counter/{id}/state/n")),
        "",
    )
    .await;
    assert_eq!(r.json(), serde_json::json!({"count": 14}));
    let r = http(
        "POST",
        &survivor
            .daprd
            .url(&format!("/v1.0/actors/Counter/{id}/state")),
        tx,
    )
    .await;
    assert_eq!(
        r.status,
        204,
        "the new owner has the actor active: {}",
        r.text()
    );
    drop(placement);
}

#[tokio::test]
async fn no_placement_is_an_error_not_a_hang() {
    let d = DaprdBuilder::new("actors-noplacement").start().await;
    let started = Instant::now();
    let r = http("PUT", &d.url("/v1.0/actors/T/1/method/m"), "").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ERR_ACTOR_NO_PLACEMENT");
    let r = http("GET", &d.url("/v1.0/actors/T/1/state/k"), "").await;
    assert_eq!(r.error_code(), "ERR_ACTOR_NO_PLACEMENT");
    assert!(started.elapsed() < Duration::from_secs(2));
    let m = http("GET", &d.url("/v1.0/metadata"), "").await.json();
    assert_eq!(m["actorRuntime"]["runtimeStatus"], "DISABLED");
    assert_eq!(m["actorRuntime"]["hostReady"], false);
}

/// Three placement nodes: kill the leader while calling an actor; a new
/// leader takes over and calls keep being served (the gap is measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_leader_kill_keeps_actors_serving() {
    let mut placement = Placement::start(3);
    let leader = placement.leader(Duration::from_secs(20)).await;
    let res = tempfile::tempdir().unwrap();
    redis_store(res.path());
    let app_id = format!("actors-ha-{}", uuid::Uuid::new_v4().simple());
    let a = start_host(&app_id, "A", &placement.addresses(), res.path()).await;
    let b = start_host(&app_id, "B", &placement.addresses(), res.path()).await;
    wait_host_ready(&a.daprd).await;
    wait_host_ready(&b.daprd).await;
    wait_two_hosts(&a, &b).await;

    let ids: Vec<String> = (0..8)
        .map(|i| format!("ha-{i}-{}", uuid::Uuid::new_v4().simple()))
        .collect();
    let call_all = |d: String| {
        let ids = ids.clone();
        async move {
            for id in &ids {
                let r = http(
                    "PUT",
                    &format!("{d}/v1.0/actors/Counter/{id}/method/hit"),
                    "",
                )
                .await;
                if r.status != 200 {
                    return Err(r.text());
                }
            }
            Ok(())
        }
    };
    let base = format!("http://127.0.0.1:{}", a.daprd.http_port);
    call_all(base.clone()).await.unwrap();

    placement.kill(leader);
    let killed = Instant::now();
    // One call at a time for 6 s: the slowest call is the serving gap.
    let mut max_gap = Duration::ZERO;
    let mut n = 0;
    while killed.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        let id = &ids[n % ids.len()];
        n += 1;
        let r = http(
            "PUT",
            &format!("{base}/v1.0/actors/Counter/{id}/method/hit"),
            "",
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "actor call failed after the leader kill: {}\n{}",
            r.text(),
            placement.logs()
        );
        max_gap = max_gap.max(t.elapsed());
    }
    // The sidecars are on the new leader's tables by now.
    let m = http("GET", &a.daprd.url("/v1.0/metadata"), "").await.json();
    assert_eq!(
        m["actorRuntime"]["placement"], "placement: connected",
        "{m}"
    );
    let new_leader = placement.leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    println!("placement leader kill: {n} calls, slowest {max_gap:?} (includes the 25 ms method)");
    // Both hosts still share the actors under the new leader.
    wait_two_hosts(&a, &b).await;
}

/// Kills a child process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python SDK: `DaprActor` (FastAPI) hosts `CounterActor` on two apps
/// behind two sidecars; `ActorProxy` drives it (e2e/python/test_actors.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_actors() {
    let placement = Placement::start(1);
    placement.leader(Duration::from_secs(15)).await;
    let res = tempfile::tempdir().unwrap();
    redis_store(res.path());
    let app_id = format!("pyactors-{}", uuid::Uuid::new_v4().simple());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/python");
    let mut hosts = Vec::new();
    for name in ["A", "B"] {
        let app_port = free_port();
        let mut d = DaprdBuilder::new(&app_id)
            .resources(res.path())
            .arg("--app-port")
            .arg(app_port.to_string())
            .arg("--placement-host-address")
            .arg(placement.addresses())
            .no_wait()
            .start()
            .await;
        let app = Command::new("python3")
            .args(["-W", "ignore", "actor_app.py"])
            .current_dir(dir)
            .env("APP_PORT", app_port.to_string())
            .env("APP_NAME", name)
            .env("DAPR_HTTP_PORT", d.http_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 actor_app.py (run scripts/test-services.sh to install the SDK)");
        let app = Proc(app);
        d.wait_ready().await;
        wait_host_ready(&d).await;
        hosts.push((d, app));
    }
    wait_spread(&hosts[0].0, "CounterActor", "WhoAmI", &hosts[1].0).await;
    let out = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_actors.py",
        ])
        .current_dir(dir)
        .env("DAPR_HTTP_PORT", hosts[0].0.http_port.to_string())
        .env("DAPR_HTTP_PORT_B", hosts[1].0.http_port.to_string())
        .output()
        .expect("python3 -m pytest");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" passed"),
        "pytest failed:\n{text}\n--- A ---\n{}\n--- B ---\n{}",
        hosts[0].0.logs(),
        hosts[1].0.logs()
    );
    println!("{text}");
}
