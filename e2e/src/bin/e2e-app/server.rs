//! The HTTP routes the e2e app serves, talking to its own sidecar for Dapr calls.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::Method;

use crate::client;

/// Where the sidecar's HTTP API is (`$DAPR_HTTP_PORT`, default 3500, on loopback as in Dapr).
#[derive(Clone)]
struct Sidecar {
    base: String,
}

const SIDECAR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("APP_PORT must be a port number, got {0:?}")]
    BadPort(String),
    #[error("cannot listen on port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

pub async fn serve() -> Result<(), ServeError> {
    let port = port_from_env("APP_PORT", 8080)?;
    let dapr_port = port_from_env("DAPR_HTTP_PORT", 3500)?;
    let app = router(Sidecar {
        base: format!("http://127.0.0.1:{dapr_port}"),
    });
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| ServeError::Bind { port, source })?;
    tracing::info!(port, dapr_port, "e2e-app listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Serve)
}

fn port_from_env(var: &str, default: u16) -> Result<u16, ServeError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| ServeError::BadPort(v)),
        _ => Ok(default),
    }
}

/// As PID 1 in a pod, SIGTERM has no default action: handle it or every delete waits the grace period.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; the app stops only when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

fn router(sidecar: Sidecar) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/whoami", get(whoami))
        .route("/echo", post(echo))
        .route("/headers", get(headers))
        .route("/invoke/{app}/{method}", get(invoke))
        .route("/state/{store}/{key}", get(get_state).post(save_state))
        .with_state(sidecar)
}

/// The pod name (hostname), to tell replicas apart behind a Service.
async fn whoami() -> String {
    std::env::var("HOSTNAME").unwrap_or_default()
}

/// The request's headers as a JSON object (lower-case names; repeated
/// names joined with ", "), so a test can see what the sidecar forwarded
/// (e.g. `dapr-caller-app-id`).
async fn headers(headers: HeaderMap) -> Response {
    let mut out = serde_json::Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                out.insert(name.as_str().to_owned(), serde_json::Value::String(value));
            }
        }
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| header::HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

async fn invoke(
    State(sidecar): State<Sidecar>,
    Path((app, method)): Path<(String, String)>,
) -> Response {
    let url = format!("{}/v1.0/invoke/{app}/method/{method}", sidecar.base);
    relay(Method::GET, &url, None, Bytes::new()).await
}

async fn get_state(
    State(sidecar): State<Sidecar>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
    let url = format!("{}/v1.0/state/{store}/{key}", sidecar.base);
    relay(Method::GET, &url, None, Bytes::new()).await
}

/// Saves the request body as the key's value: JSON as JSON, anything else as a string.
async fn save_state(
    State(sidecar): State<Sidecar>,
    Path((store, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let value = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    let payload = serde_json::json!([{ "key": key, "value": value }]).to_string();
    let url = format!("{}/v1.0/state/{store}", sidecar.base);
    relay(
        Method::POST,
        &url,
        Some("application/json"),
        Bytes::from(payload),
    )
    .await
}

/// Sends one request to the sidecar and hands its status, content type and body back unchanged;
/// a sidecar that cannot be reached is a 502 with the reason.
async fn relay(method: Method, url: &str, content_type: Option<&str>, body: Bytes) -> Response {
    match client::request(method, url, content_type, body, SIDECAR_TIMEOUT).await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut out = (status, resp.body).into_response();
            if let Some(ct) = resp
                .content_type
                .and_then(|ct| header::HeaderValue::from_str(&ct).ok())
            {
                out.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn spawn(sidecar_base: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(Sidecar { base: sidecar_base })).into_future());
        format!("http://{addr}")
    }

    /// A fake sidecar that records what it was sent and answers with it, so the app's
    /// translation to Dapr's API is checked end to end over real sockets.
    async fn fake_sidecar() -> String {
        let app = Router::new()
            .route(
                "/v1.0/state/{store}",
                post(|Path(store): Path<String>, body: Bytes| async move {
                    // Dapr answers 204; 201 here so the recorded payload can be sent back.
                    (StatusCode::CREATED, [("x-store", store)], body)
                }),
            )
            .route(
                "/v1.0/state/{store}/{key}",
                get(|Path((s, k)): Path<(String, String)>| async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        format!("\"{s}/{k}\""),
                    )
                }),
            )
            .route(
                "/v1.0/invoke/{app}/method/{m}",
                get(|Path((a, m)): Path<(String, String)>| async move {
                    (StatusCode::ACCEPTED, format!("{a}:{m}"))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, app).into_future());
        format!("http://{addr}")
    }

    async fn call(method: Method, url: &str, body: &str) -> client::Response {
        client::request(
            method,
            url,
            Some("text/plain"),
            Bytes::from(body.to_string()),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn routes_reach_the_sidecar_api() {
        let app = spawn(fake_sidecar().await).await;
        let r = call(Method::GET, &format!("{app}/healthz"), "").await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));

        let r = call(Method::POST, &format!("{app}/echo"), "hello").await;
        assert_eq!(r.body, "hello");
        assert_eq!(r.content_type.as_deref(), Some("text/plain"));

        let r = call(Method::GET, &format!("{app}/invoke/other/ping"), "").await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (202, &b"other:ping"[..]));

        let r = call(Method::POST, &format!("{app}/state/store1/k1"), "{\"a\":1}").await;
        assert_eq!(r.status.as_u16(), 201);
        let sent: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(sent, serde_json::json!([{"key": "k1", "value": {"a": 1}}]));

        let r = call(Method::POST, &format!("{app}/state/store1/k2"), "plain").await;
        let sent: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(sent, serde_json::json!([{"key": "k2", "value": "plain"}]));

        let r = call(Method::GET, &format!("{app}/state/store1/k1"), "").await;
        assert_eq!(r.body, "\"store1/k1\"");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn unreachable_sidecar_is_a_502() {
        // Port 1 on loopback: nothing listens there.
        let app = spawn("http://127.0.0.1:1".into()).await;
        let r = call(Method::GET, &format!("{app}/state/s/k"), "").await;
        assert_eq!(r.status.as_u16(), 502);
    }
}
