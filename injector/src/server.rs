//! HTTP servers: the TLS webhook (`POST /mutate`), healthz and metrics.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{admission::Injector, metrics::Metrics};

/// Largest AdmissionReview accepted (the apiserver's own request limit is
/// 3 MiB for objects; reviews carry the object twice at most).
const MAX_BODY: usize = 8 << 20;

async fn mutate(State(inj): State<Arc<Injector>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.is_empty() && !ct.starts_with("application/json") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid Content-Type, expected `application/json`\n",
        )
            .into_response();
    }
    match inj.review(&body).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "bad admission request");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

/// The webhook's routes.
pub fn webhook_router(inj: Arc<Injector>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(inj)
}

/// Serves `router` over TLS on `listener` until the task is dropped. Each
/// connection is handled on its own task; handshake failures are logged at
/// debug level (scanners and health probes cause them).
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a webhook connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}

/// Readiness of the injector, reported on `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    pub webhook_listening: AtomicBool,
    /// False until the webhook configuration's caBundle has been written
    /// (true from the start when the injector does not manage it).
    pub ca_bundle_current: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.webhook_listening.load(Ordering::Relaxed)
            && self.ca_bundle_current.load(Ordering::Relaxed)
    }
}

pub fn healthz_router(health: Arc<Health>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .with_state(health)
}

pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    let handler = |State(m): State<Arc<Metrics>>| async move {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.render(),
        )
    };
    Router::new()
        .route("/", get(handler))
        .route("/metrics", get(handler))
        .with_state(metrics)
}

/// Serves a plain-HTTP router (healthz, metrics).
pub async fn serve_plain(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// `host:port` from a listen address flag ("" means every interface).
pub fn listen_addr(host: &str, port: u16) -> Result<SocketAddr, std::net::AddrParseError> {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    let ip = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(SocketAddr::new(ip.parse()?, port))
}
