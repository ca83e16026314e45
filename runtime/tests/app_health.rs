//! App health checks: while probes fail, invocations of the app fail fast
//! with Dapr's message; they recover when the app does.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::get};
use common::*;

#[tokio::test]
async fn unhealthy_app_fails_fast_then_recovers() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || {
                let flag = flag.clone();
                async move {
                    if flag.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        )
        .route("/hello", get(|| async { "hi" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let d = DaprdBuilder::new("healthapp")
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--enable-app-health-check")
        .arg("--app-health-probe-interval")
        .arg("1")
        .arg("--app-health-threshold")
        .arg("1")
        .start()
        .await;
    let url = d.url("/v1.0/invoke/healthapp/method/hello");
    assert_eq!(http("GET", &url, "").await.text(), "hi");
    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = http("GET", &url, "").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.text().contains("app is not in a healthy state"),
        "{}",
        r.text()
    );
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(http("GET", &url, "").await.text(), "hi");
}
