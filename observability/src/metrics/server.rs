//! The `--metrics-port` endpoint: `GET /` and `GET /metrics` in the
//! Prometheus text format.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

/// Anything that renders a Prometheus text page.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for metrics: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

pub fn router(render: Render) -> Router {
    let handler = move || {
        let render = render.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
                .into_response()
        }
    };
    Router::new()
        .route("/", get(handler.clone()))
        .route("/metrics", get(handler))
}

/// Binds `addr` and serves metrics until `stop` resolves.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let app = router(render);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("metrics server: {e}");
        }
    }))
}
