//! Resiliency (retries, timeouts, circuit breakers) and access control on
//! service invocation, through two real sidecars.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::Path, http::StatusCode, routing::any};
use common::*;

type Counters = Arc<Mutex<HashMap<String, u32>>>;

/// `/flaky/{key}/{n}` fails with 500 for the first n calls per key;
/// `/slow` sleeps 2 s; `/fail` always 503; anything else 200 "ok".
async fn start_app() -> (SocketAddr, Counters) {
    let counters: Counters = Arc::default();
    let c1 = counters.clone();
    let c2 = counters.clone();
    let app = Router::new()
        .route(
            "/flaky/{key}/{n}",
            any(move |Path((key, n)): Path<(String, u32)>| {
                let counters = c1.clone();
                async move {
                    let mut map = counters.lock().unwrap();
                    let seen = map.entry(key).or_insert(0);
                    *seen += 1;
                    if *seen <= n {
                        (StatusCode::INTERNAL_SERVER_ERROR, "not yet")
                    } else {
                        (StatusCode::OK, "recovered")
                    }
                }
            }),
        )
        .route(
            "/fail",
            any(move || {
                let counters = c2.clone();
                async move {
                    *counters.lock().unwrap().entry("fail".into()).or_insert(0) += 1;
                    (StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "slow"
            }),
        )
        .fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, counters)
}

const RESILIENCY: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: policies
spec:
  policies:
    timeouts:
      short: 300ms
    retries:
      three:
        policy: constant
        duration: 20ms
        maxRetries: 3
    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 600ms
        trip: consecutiveFailures >= 2
  targets:
    apps:
      callee:
        timeout: short
        retry: three
      breaker:
        circuitBreaker: cb
"#;

struct Setup {
    caller: Daprd,
    _callee: Daprd,
    _breaker: Daprd,
    counters: Counters,
    _dirs: Vec<tempfile::TempDir>,
}

async fn setup(callee_config_extra: &str) -> Setup {
    let (app, counters) = start_app().await;
    let shared = tempfile::tempdir().unwrap();
    let nr = format!(
        "  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: {}\n",
        shared.path().join("nr.db").display()
    );
    let write_config = |name: &str, extra: &str| {
        let path = shared.path().join(name);
        std::fs::write(
            &path,
            format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n{nr}{extra}"),
        )
        .unwrap();
        path.display().to_string()
    };
    let plain = write_config("plain.yaml", "");
    let callee_cfg = write_config("callee.yaml", callee_config_extra);
    let callee = DaprdBuilder::new("callee")
        .arg("--config")
        .arg(&callee_cfg)
        .arg("--app-port")
        .arg(app.port().to_string())
        .start()
        .await;
    let breaker = DaprdBuilder::new("breaker")
        .arg("--config")
        .arg(&plain)
        .arg("--app-port")
        .arg(app.port().to_string())
        .start()
        .await;
    let res = tempfile::tempdir().unwrap();
    write_resource(res.path(), "resiliency.yaml", RESILIENCY);
    let caller = DaprdBuilder::new("caller")
        .arg("--config")
        .arg(&plain)
        .resources(res.path())
        .start()
        .await;
    Setup {
        caller,
        _callee: callee,
        _breaker: breaker,
        counters,
        _dirs: vec![shared, res],
    }
}

#[tokio::test]
async fn retries_recover_from_transient_failures() {
    let s = setup("").await;
    // Fails twice, succeeds on the third attempt (within 3 retries).
    let r = http(
        "POST",
        &s.caller.url("/v1.0/invoke/callee/method/flaky/a/2"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "recovered");
    assert_eq!(s.counters.lock().unwrap()["a"], 3);
    // Fails 5 times: 1 call + 3 retries, then the app's last answer comes back.
    let r = http(
        "POST",
        &s.caller.url("/v1.0/invoke/callee/method/flaky/b/5"),
        "",
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(s.counters.lock().unwrap()["b"], 4);
}

#[tokio::test]
async fn timeouts_bound_each_call() {
    let s = setup("").await;
    let started = Instant::now();
    let r = http("GET", &s.caller.url("/v1.0/invoke/callee/method/slow"), "").await;
    // 4 attempts of 300 ms plus back-off: well under the app's 2 s.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(r.text().contains("callee"), "{}", r.text());
}

#[tokio::test]
async fn circuit_breaker_opens_then_half_opens() {
    let s = setup("").await;
    let url = s.caller.url("/v1.0/invoke/breaker/method/fail");
    for _ in 0..2 {
        assert_eq!(http("GET", &url, "").await.status, 503);
    }
    let calls = s.counters.lock().unwrap()["fail"];
    // Open: fails fast without reaching the app.
    let r = http("GET", &url, "").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());
    assert_eq!(s.counters.lock().unwrap()["fail"], calls);
    // After the breaker timeout one probe goes through (half-open).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ok = http("GET", &s.caller.url("/v1.0/invoke/breaker/method/fine"), "").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        http("GET", &s.caller.url("/v1.0/invoke/breaker/method/fine"), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn access_control_allows_and_denies_on_the_callee() {
    let acl = "  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /allowed/**\n        httpVerb: [POST]\n        action: allow\n";
    let s = setup(acl).await;
    let r = http(
        "POST",
        &s.caller.url("/v1.0/invoke/callee/method/allowed/x"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        "GET",
        &s.caller.url("/v1.0/invoke/callee/method/allowed/x"),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}\n{}", r.text(), s._callee.logs());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    // The message names the app and the cause.
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("callee") && msg.contains("access control"),
        "{msg}"
    );
    let r = http(
        "POST",
        &s.caller.url("/v1.0/invoke/callee/method/secret"),
        "",
    )
    .await;
    assert_eq!(r.status, 403);
}

/// HotReload: rewriting the Resiliency file changes the retry behaviour of
/// a running sidecar, no restart.
#[tokio::test]
async fn resiliency_changes_apply_without_restart() {
    let (app, counters) = start_app().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n",
    )
    .unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    let policy = |retries: u32| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      some:\n        policy: constant\n        duration: 10ms\n        maxRetries: {retries}\n  targets:\n    apps:\n      reloaded:\n        retry: some\n"
        )
    };
    write_resource(&res, "resiliency.yaml", &policy(1));
    let d = DaprdBuilder::new("reloaded")
        .resources(&res)
        .arg("--config")
        .arg(config.display().to_string())
        .arg("--app-port")
        .arg(app.port().to_string())
        .start()
        .await;
    let fails = || counters.lock().unwrap().get("fail").copied().unwrap_or(0);
    let url = d.url("/v1.0/invoke/reloaded/method/fail");
    assert_eq!(http("GET", &url, "").await.status, 503);
    assert_eq!(fails(), 2, "1 call + 1 retry");

    write_resource(&res, "resiliency.yaml", &policy(4));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = fails();
        assert_eq!(http("GET", &url, "").await.status, 503);
        let attempts = fails() - before;
        if attempts == 5 {
            break;
        }
        assert_eq!(attempts, 2, "neither the old nor the new policy");
        assert!(Instant::now() < deadline, "the new policy never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(d.logs().contains("resiliency policies reloaded"));
}
