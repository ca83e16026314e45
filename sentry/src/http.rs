//! The healthz and metrics HTTP endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Readiness of the gRPC server, reported by `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `GET /healthz`: 200 while the CA is serving, 503 otherwise.
pub fn health_router(health: Arc<Health>) -> Router {
    let h = health.clone();
    Router::new().route(
        "/healthz",
        get(move || {
            let h = h.clone();
            async move {
                if h.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
        }),
    )
}

/// `GET /metrics` (and `/`): Prometheus text format.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    let m = metrics.clone();
    let handler = move || {
        let m = m.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                m.render(),
            )
        }
    };
    Router::new()
        .route("/metrics", get(handler.clone()))
        .route("/", get(handler))
}

/// Serves `router` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, %addr, "HTTP endpoint stopped");
        }
    }))
}
