//! The app channel's protocols and middleware: `--app-protocol https` and
//! `grpcs` (TLS to the app with a self-signed certificate, not verified, as
//! Dapr), and the Configuration's `appHttpPipeline` on calls to the app.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Request, response::IntoResponse, routing::any};
use common::*;
use dapr::dapr::proto::common::v1 as common_pb;
use dapr_rs_proto::server::app_callback_server::{AppCallback, AppCallbackServer};

/// A self-signed certificate for 127.0.0.1 (PEM cert, PEM key).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Answers "<scheme seen by the app> <path>" over TLS only.
async fn start_https_app(hits: Arc<AtomicUsize>) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let (cert, key) = self_signed();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let router = Router::new().fallback(any(move |req: Request| {
        let hits = hits.clone();
        async move {
            // daprd's own calls (e.g. GET /dapr/subscribe) are not counted.
            if !req.uri().path().starts_with("/dapr/") {
                hits.fetch_add(1, Ordering::SeqCst);
            }
            format!("tls {}", req.uri().path()).into_response()
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // Plain-text requests fail the handshake and get nothing.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_app_protocol_reaches_an_app_with_a_self_signed_certificate() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = start_https_app(hits.clone()).await;
    let d = DaprdBuilder::new("tlsapp")
        .arg("--app-port")
        .arg(app.port().to_string())
        .arg("--app-protocol")
        .arg("https")
        .start()
        .await;
    let r = http("POST", &d.url("/v1.0/invoke/tlsapp/method/orders/9"), "x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls /orders/9");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let m = http("GET", &d.url("/v1.0/metadata"), "").await.json();
    assert_eq!(m["appConnectionProperties"]["protocol"], "https", "{m}");
}

struct TlsEcho;

#[tonic::async_trait]
impl AppCallback for TlsEcho {
    async fn on_invoke(
        &self,
        req: tonic::Request<common_pb::InvokeRequest>,
    ) -> Result<tonic::Response<common_pb::InvokeResponse>, tonic::Status> {
        let req = req.into_inner();
        let data = req.data.map(|d| d.value).unwrap_or_default();
        Ok(tonic::Response::new(common_pb::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: format!("grpcs {} {}", req.method, String::from_utf8_lossy(&data))
                    .into_bytes(),
            }),
            content_type: "text/plain".into(),
        }))
    }
}

#[tokio::test]
async fn grpcs_app_protocol_calls_on_invoke_over_tls() {
    let (cert, key) = self_signed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .unwrap()
            .add_service(AppCallbackServer::new(TlsEcho))
            .serve_with_incoming(incoming)
            .await;
    });
    let d = DaprdBuilder::new("grpcsapp")
        .arg("--app-port")
        .arg(port.to_string())
        .arg("--app-protocol")
        .arg("grpcs")
        .start()
        .await;
    let r = http("POST", &d.url("/v1.0/invoke/grpcsapp/method/hello"), "ping").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "grpcs hello ping");

    // gRPC proxying by dapr-app-id reaches the grpcs app over TLS too.
    let mut client =
        dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient::connect(
            d.grpc_endpoint(),
        )
        .await
        .unwrap();
    let mut req = tonic::Request::new(common_pb::InvokeRequest {
        method: "proxied".into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: b"over tls".to_vec(),
        }),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-app-id", "grpcsapp".parse().unwrap());
    let resp = client.on_invoke(req).await.unwrap().into_inner();
    assert_eq!(
        String::from_utf8_lossy(&resp.data.unwrap().value),
        "grpcs proxied over tls"
    );
}

#[tokio::test]
async fn app_http_pipeline_runs_on_calls_to_the_app() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(any(move |req: Request| {
        let h = h.clone();
        async move {
            if !req.uri().path().starts_with("/dapr/") {
                h.fetch_add(1, Ordering::SeqCst);
            }
            format!("app saw {}", req.uri().path())
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    write_resource(
        &res,
        "mw.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: alias\nspec:\n  type: middleware.http.routeralias\n  version: v1\n  metadata:\n  - name: routes\n    value: '{\"/old\": \"/new\"}'\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: limit\nspec:\n  type: middleware.http.ratelimit\n  version: v1\n  metadata:\n  - name: maxRequestsPerSecond\n    value: 3\n",
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  appHttpPipeline:\n    handlers:\n    - name: alias\n      type: middleware.http.routeralias\n    - name: limit\n      type: middleware.http.ratelimit\n",
    )
    .unwrap();
    let d = DaprdBuilder::new("piped")
        .resources(&res)
        .arg("--config")
        .arg(config.display().to_string())
        .arg("--app-port")
        .arg(port.to_string())
        .start()
        .await;
    // routeralias rewrites the path the app sees; the Dapr API is untouched.
    let r = http("GET", &d.url("/v1.0/invoke/piped/method/old"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "app saw /new");
    let r = http("GET", &d.url("/v1.0/metadata"), "").await;
    assert_eq!(r.status, 200);
    // ratelimit answers 429 for the app once its budget is spent, and the
    // app never sees those calls.
    let before = hits.load(Ordering::SeqCst);
    let mut limited = 0;
    for _ in 0..10 {
        let r = http("GET", &d.url("/v1.0/invoke/piped/method/x"), "").await;
        if r.status == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "no call to the app was rate limited");
    assert_eq!(hits.load(Ordering::SeqCst) - before, 10 - limited);
    // The API pipeline is empty: the metadata API is never limited.
    for _ in 0..10 {
        assert_eq!(http("GET", &d.url("/v1.0/metadata"), "").await.status, 200);
    }
}
