//! gRPC proxying: any gRPC call to the sidecar for a service it does not
//! serve, carrying `dapr-app-id` metadata, is forwarded — streams, metadata
//! and trailers included — to that app's sidecar and on to the app's gRPC
//! server. Requests are relayed as raw HTTP/2, never decoded.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, Uri};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{CALLEE_APP_ID, CALLER_APP_ID, CALLER_NAMESPACE, Invoker, Target};
use crate::api::http::constant_time_eq;

/// HTTP/2 (h2c) client used to relay gRPC calls; with mTLS, calls to other
/// sidecars go over mutual TLS instead.
#[derive(Clone)]
pub struct GrpcRelay {
    client: Client<HttpConnector, Body>,
    mtls: Option<MtlsRelay>,
}

type TlsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One client per target identity: each accepts only that SPIFFE id.
#[derive(Clone)]
struct MtlsRelay {
    sidecar: Arc<crate::mtls::SidecarMtls>,
    clients: Arc<std::sync::RwLock<std::collections::HashMap<String, TlsClient>>>,
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector
}

impl Default for GrpcRelay {
    fn default() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(http_connector());
        Self { client, mtls: None }
    }
}

/// A gRPC error as a trailers-only response, which every gRPC client reads.
pub fn grpc_error(code: tonic::Code, message: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl GrpcRelay {
    /// Calls to other sidecars use mTLS with `sidecar`'s identity.
    pub fn with_mtls(sidecar: Arc<crate::mtls::SidecarMtls>) -> Self {
        Self {
            mtls: Some(MtlsRelay {
                sidecar,
                clients: Default::default(),
            }),
            ..Self::default()
        }
    }

    /// Relays to the internal port of `target`'s sidecar at `address`.
    async fn forward_to_sidecar(&self, address: &str, target: &Target, req: Request) -> Response {
        let Some(mtls) = &self.mtls else {
            return self.forward(address, req).await;
        };
        let key = format!("{}.{}", target.app_id, target.namespace);
        let cached = mtls
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let client = match cached {
            Some(c) => c,
            None => {
                let cfg = match mtls
                    .sidecar
                    .expected_id(&target.app_id, &target.namespace)
                    .and_then(|id| {
                        mtls.sidecar
                            .identity()
                            .client_config(dapr_security::tls::PeerAuthorizer::exact(id))
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(c) => c,
                    Err(e) => return grpc_error(tonic::Code::Internal, &e),
                };
                let mut http = http_connector();
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnector::from((http, cfg));
                let client = Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build(connector);
                mtls.clients
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, client.clone());
                client
            }
        };
        send(&client, "https", address, req).await
    }

    async fn forward(&self, address: &str, req: Request) -> Response {
        send(&self.client, "http", address, req).await
    }
}

async fn send<C>(
    client: &Client<C, Body>,
    scheme: &str,
    address: &str,
    mut req: Request,
) -> Response
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let uri: Uri = match format!("{scheme}://{address}{path}").parse() {
        Ok(u) => u,
        Err(e) => {
            return grpc_error(tonic::Code::Internal, &format!("bad target address: {e}"));
        }
    };
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    req.headers_mut().remove("host");
    match client.request(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => grpc_error(
            tonic::Code::Unavailable,
            &format!("failed to proxy request: {e}"),
        ),
    }
}

/// Shared state of the proxy handlers.
#[derive(Clone)]
pub struct ProxyState {
    pub invoker: Arc<Invoker>,
    pub relay: GrpcRelay,
    pub api_token: Option<String>,
}

/// Fallback of the public gRPC port: proxy to `dapr-app-id`'s sidecar.
pub async fn api_fallback(State(state): State<ProxyState>, mut req: Request) -> Response {
    if let Some(expected) = &state.api_token {
        let ok = req
            .headers()
            .get("dapr-api-token")
            .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()));
        if !ok {
            return grpc_error(
                tonic::Code::Unauthenticated,
                "authentication error: api token mismatch",
            );
        }
        req.headers_mut().remove("dapr-api-token");
    }
    let Some(app_id) = req
        .headers()
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return grpc_error(
            tonic::Code::Unimplemented,
            &format!("unknown service {}", req.uri().path()),
        );
    };
    let invoker = &state.invoker;
    let target = match Target::parse(&app_id, &invoker.namespace) {
        Ok(t) => t,
        Err(e) => return grpc_error(tonic::Code::InvalidArgument, &e.to_string()),
    };
    let h = req.headers_mut();
    for (k, v) in [
        (CALLER_APP_ID, invoker.app_id.as_str()),
        (CALLER_NAMESPACE, invoker.namespace.as_str()),
        (CALLEE_APP_ID, target.app_id.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    if target.app_id == invoker.app_id && target.namespace == invoker.namespace {
        return forward_to_app(&state, req).await;
    }
    let address = match invoker
        .resolver()
        .resolve(&target.app_id, &target.namespace)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            return grpc_error(
                tonic::Code::Unavailable,
                &format!("failed to proxy request to {}: {e}", target.app_id),
            );
        }
    };
    state.relay.forward_to_sidecar(&address, &target, req).await
}

/// Fallback of the internal gRPC port: a call proxied by another sidecar,
/// checked against access control, then relayed to the local gRPC app.
pub async fn internal_fallback(State(state): State<ProxyState>, req: Request) -> Response {
    // Read what access control needs up front: the body is not `Sync`, so no
    // borrow of the request may live across an await.
    let verified_td = req
        .extensions()
        .get::<crate::mtls::VerifiedCaller>()
        .map(|c| c.0.trust_domain().to_owned());
    let (operation, caller_id, caller_ns) = {
        let header = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (
            req.uri().path().to_owned(),
            header(CALLER_APP_ID),
            header(CALLER_NAMESPACE),
        )
    };
    let acl = &state.invoker.acl;
    let decision = if caller_id.is_empty() {
        let d = acl.check_unauthenticated();
        super::record_acl(acl, None, &d);
        d
    } else {
        let ns = Some(caller_ns)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        // Under mTLS the caller headers were replaced by the certificate's
        // identity (crate::mtls); its trust domain comes with it.
        let trust_domain =
            verified_td.unwrap_or_else(|| state.invoker.default_trust_domain.clone());
        let caller = dapr_policy::acl::CallerIdentity::new(caller_id, ns, trust_domain);
        let d = acl.check(&caller, &operation, None);
        super::record_acl(acl, Some(&caller), &d);
        d
    };
    if !decision.allowed {
        return grpc_error(
            tonic::Code::PermissionDenied,
            &format!("access control policy has denied access to method {operation}"),
        );
    }
    forward_to_app(&state, req).await
}

async fn forward_to_app(state: &ProxyState, req: Request) -> Response {
    match &state.invoker.app {
        // grpcs apps: over the app channel's TLS client (HTTP/2 via ALPN).
        Some(app) if app.protocol == crate::options::AppProtocol::Grpcs => {
            send(app.http_client(), "https", &app.address, req).await
        }
        Some(app) => state.relay.forward(&app.address, req).await,
        None => grpc_error(
            tonic::Code::Unavailable,
            "the target sidecar has no app channel (--app-port)",
        ),
    }
}

/// Non-gRPC requests on a gRPC port get a plain 404.
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

pub async fn not_grpc() -> Response {
    (StatusCode::NOT_FOUND, "not a gRPC request").into_response()
}
