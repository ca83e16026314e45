//! The healthz and metrics HTTP endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use prometheus_client::{encoding::text::encode, metrics::gauge::Gauge, registry::Registry};
use tokio::net::TcpListener;

use crate::grpc::Caches;

/// Readiness: every cache synced and the gRPC server listening.
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

/// `GET /healthz`: 200 once ready, 503 before.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new().route(
        "/healthz",
        get(move || {
            let h = health.clone();
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

/// `GET /` and `/metrics`: `dapr_operator_resources{kind}` gauges.
pub fn metrics_router(caches: Caches) -> Router {
    let handler = move || {
        let caches = caches.clone();
        async move {
            let mut registry = Registry::with_prefix("dapr_operator");
            let family =
                prometheus_client::metrics::family::Family::<Vec<(String, String)>, Gauge>::default(
                );
            for c in caches.all() {
                family
                    .get_or_create(&vec![("kind".to_owned(), c.spec.kind.to_owned())])
                    .set(c.len() as i64);
            }
            registry.register("resources", "dapr.io resources cached, by kind", family);
            let mut out = String::new();
            let _ = encode(&mut out, &registry);
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                out,
            )
        }
    };
    Router::new()
        .route("/metrics", get(handler.clone()))
        .route("/", get(handler))
}

/// Serves `router` on `addr` in the background.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(local)
}
