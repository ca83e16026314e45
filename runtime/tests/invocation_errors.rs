//! Invocation failures answer in Dapr's error shape (`ERR_DIRECT_INVOKE`,
//! 413 for bodies over `--max-body-size`), name the app and the cause, and
//! never hang past the configured timeout.

mod common;

use std::time::{Duration, Instant};

use axum::{Router, http::StatusCode, routing::any};
use common::*;

/// `/slow` sleeps 5 s, `/fail` answers 503, anything else "ok".
async fn start_app() -> (u16, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "slow"
            }),
        )
        .route(
            "/fail",
            any(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

const RESILIENCY: &str = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      short: 300ms\n    circuitBreakers:\n      cb:\n        maxRequests: 1\n        timeout: 30s\n        trip: consecutiveFailures >= 2\n  targets:\n    apps:\n      errs:\n        timeout: short\n        circuitBreaker: cb\n";

fn message(r: &Reply) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn each_failure_names_the_app_and_the_cause() {
    let (port, app) = start_app().await;
    let res = tempfile::tempdir().unwrap();
    write_resource(res.path(), "resiliency.yaml", RESILIENCY);
    let d = DaprdBuilder::new("errs")
        .resources(res.path())
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--max-body-size")
        .arg("1Mi")
        .start()
        .await;

    // Unknown app id.
    let r = http("GET", &d.url("/v1.0/invoke/nosuchapp/method/x"), "").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(message(&r).contains("nosuchapp"), "{}", r.text());
    assert!(
        message(&r).contains("couldn't find service"),
        "{}",
        r.text()
    );

    // Body over --max-body-size (declared length): 413 before any call.
    let r = request(
        "POST",
        &d.url("/v1.0/invoke/errs/method/x"),
        Some(vec![b'x'; 2 * 1024 * 1024]),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        message(&r).contains("errs") && message(&r).contains("--max-body-size"),
        "{}",
        r.text()
    );

    // Timeout: the policy's 300 ms, not the app's 5 s.
    let started = Instant::now();
    let r = http("GET", &d.url("/v1.0/invoke/errs/method/slow"), "").await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        message(&r).contains("errs") && message(&r).contains("timed out"),
        "{}",
        r.text()
    );

    // Circuit open after two consecutive failures (503s) of one method
    // (breakers are per app and method, as in Dapr).
    for _ in 0..2 {
        let r = http("GET", &d.url("/v1.0/invoke/errs/method/fail"), "").await;
        assert_eq!(r.status, 503, "{}", r.text());
    }
    let started = Instant::now();
    let r = http("GET", &d.url("/v1.0/invoke/errs/method/fail"), "").await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        message(&r).contains("errs") && message(&r).contains("circuit breaker is open"),
        "{}",
        r.text()
    );

    // App down: fails fast, naming the app and the refused connection.
    drop(d);
    app.abort();
    let _ = app.await;
    let (port2, app2) = start_app().await;
    let d = DaprdBuilder::new("errs2")
        .arg("--app-port")
        .arg(port2.to_string())
        .start()
        .await;
    app2.abort();
    let _ = app2.await;
    let started = Instant::now();
    let r = http("GET", &d.url("/v1.0/invoke/errs2/method/x"), "").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    let m = message(&r);
    assert!(m.contains("errs2"), "{m}");
    assert!(
        m.contains(&format!("127.0.0.1:{port2}")) && m.to_lowercase().contains("connect"),
        "{m}"
    );
}
