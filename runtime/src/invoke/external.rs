//! Invocation of non-Dapr HTTP services: an `HTTPEndpoint` resource named as
//! the app id (its `baseUrl`, headers and client TLS), or a full URL as the
//! app id (`/v1.0/invoke/http%3A%2F%2Fhost%3A8080/method/...`), as in Dapr.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use axum::body::Body;
use dapr_crds::{HttpEndpoint, MetadataItem, TlsDocument};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{InvokeRequest, tls};
use crate::{appchannel::is_hop_by_hop, components::Registry, error::ApiError, resources::Sourced};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("HTTPEndpoint {name}: invalid baseUrl '{url}': {reason}")]
    BaseUrl {
        name: String,
        url: String,
        reason: String,
    },
    #[error("HTTPEndpoint {name}: header '{header}': {reason}")]
    Header {
        name: String,
        header: String,
        reason: String,
    },
    // The cause is part of the message (not a `source`), so `{:#}` chains
    // don't print it twice.
    #[error("{file}: {error}")]
    InFile {
        file: String,
        error: Box<EndpointError>,
    },
    #[error("HTTPEndpoint {name}: clientTLS {field}: {reason}")]
    Tls {
        name: String,
        field: &'static str,
        reason: String,
    },
}

/// One loaded HTTPEndpoint.
pub struct Endpoint {
    pub name: String,
    base_url: String,
    headers: HeaderMap,
    client: HttpsClient,
}

/// The HTTPEndpoints visible to this app, swapped as a whole on hot reload.
#[derive(Default)]
pub struct Endpoints {
    by_name: RwLock<Arc<HashMap<String, Arc<Endpoint>>>>,
    /// For URLs given as the app id: system roots, created on first use.
    url_client: OnceLock<Result<HttpsClient, String>>,
}

/// Whether an app id is a URL (Dapr accepts `http://` and `https://`).
pub fn is_url(app_id: &str) -> bool {
    app_id.starts_with("http://") || app_id.starts_with("https://")
}

fn client(config: rustls::ClientConfig) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(15)));
    let connector = HttpsConnector::from((http, Arc::new(config)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

impl Endpoints {
    pub fn replace(&self, endpoints: Vec<Endpoint>) {
        let map = endpoints
            .into_iter()
            .map(|e| (e.name.clone(), Arc::new(e)))
            .collect();
        *self.by_name.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    pub fn get(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Whether `app_id` names an HTTPEndpoint or is a URL.
    pub fn is_external(&self, app_id: &str) -> bool {
        is_url(app_id) || self.get(app_id).is_some()
    }

    /// Calls an external target; `None` when `app_id` is not one.
    pub async fn call(
        &self,
        app_id: &str,
        req: InvokeRequest,
    ) -> Option<Result<Response<Body>, ApiError>> {
        if let Some(ep) = self.get(app_id) {
            return Some(send(&ep.client, app_id, &ep.base_url, &ep.headers, req).await);
        }
        if !is_url(app_id) {
            return None;
        }
        let client = self.url_client.get_or_init(|| {
            tls::endpoint_config(None, None, &[b"http/1.1"])
                .map(client)
                .map_err(|e| e.to_string())
        });
        Some(match client {
            Ok(c) => send(c, app_id, app_id, &HeaderMap::new(), req).await,
            Err(e) => Err(ApiError::DirectInvoke {
                app_id: app_id.to_owned(),
                reason: format!("no TLS client for URLs: {e}"),
            }),
        })
    }
}

/// `base` + `/method` + `?query`, with the caller's headers (hop-by-hop and
/// Dapr's own removed) and then the endpoint's headers on top.
async fn send(
    client: &HttpsClient,
    app_id: &str,
    base: &str,
    extra: &HeaderMap,
    req: InvokeRequest,
) -> Result<Response<Body>, ApiError> {
    let method = req.method.trim_start_matches('/');
    let mut url = format!("{}/{method}", base.trim_end_matches('/'));
    if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let invalid = |reason: String| ApiError::DirectInvoke {
        app_id: app_id.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("invalid URL '{url}': {e}")))?;
    let mut out = Request::builder()
        .method(req.verb)
        .uri(uri)
        .body(req.body)
        .map_err(|e| invalid(e.to_string()))?;
    let headers = out.headers_mut();
    for (name, value) in &req.headers {
        if !is_hop_by_hop(name) && name != "dapr-api-token" {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let resp = client
        .request(out)
        .await
        .map_err(|e| ApiError::DirectInvokeUnreachable {
            app_id: app_id.to_owned(),
            reason: format!("error invoking {url}: {}", error_chain(&e)),
        })?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The error with its causes ("client error (Connect): ...: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Builds the endpoints in scope for `app_id`; the first invalid one is an
/// error that names it and its file.
pub async fn build_all(
    endpoints: &[Sourced<HttpEndpoint>],
    registry: &Registry,
    app_id: &str,
) -> Result<Vec<Endpoint>, EndpointError> {
    let mut out = Vec::new();
    for ep in endpoints {
        if ep.resource.in_scope(app_id) {
            let built = build(&ep.resource, registry)
                .await
                .map_err(|e| EndpointError::InFile {
                    file: ep.file.display().to_string(),
                    error: Box::new(e),
                })?;
            out.push(built);
        }
    }
    Ok(out)
}

pub async fn build(ep: &HttpEndpoint, registry: &Registry) -> Result<Endpoint, EndpointError> {
    let name = ep.name().to_owned();
    let base_url = ep.spec.base_url.trim().to_owned();
    let bad_url = |reason: &str| EndpointError::BaseUrl {
        name: name.clone(),
        url: base_url.clone(),
        reason: reason.to_owned(),
    };
    let uri: Uri = base_url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad_url(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad_url("expected http:// or https:// and a host"));
    }
    let secret = |item_name: &str, value: Result<String, String>| {
        value.map_err(|reason| EndpointError::Header {
            name: name.clone(),
            header: item_name.to_owned(),
            reason,
        })
    };
    let mut headers = HeaderMap::new();
    for item in &ep.spec.headers {
        let value = secret(&item.name, item_value(item, ep, registry).await)?;
        let header_err = |reason: String| EndpointError::Header {
            name: name.clone(),
            header: item.name.clone(),
            reason,
        };
        let k = HeaderName::try_from(item.name.as_str()).map_err(|e| header_err(e.to_string()))?;
        let v = HeaderValue::from_str(&value).map_err(|e| header_err(e.to_string()))?;
        headers.insert(k, v);
    }
    let tls_err = |field: &'static str, reason: String| EndpointError::Tls {
        name: name.clone(),
        field,
        reason,
    };
    let tls = ep.spec.client_tls.as_ref();
    let doc = |d: Option<&TlsDocument>, field: &'static str| {
        let d = d.cloned();
        async move {
            match d {
                Some(d) => tls_document(&d, ep, registry)
                    .await
                    .map(Some)
                    .map_err(|e| tls_err(field, e)),
                None => Ok(None),
            }
        }
    };
    let root_ca = doc(tls.and_then(|t| t.root_ca.as_ref()), "rootCA").await?;
    let cert = doc(tls.and_then(|t| t.certificate.as_ref()), "certificate").await?;
    let key = doc(tls.and_then(|t| t.private_key.as_ref()), "privateKey").await?;
    if let Some(r) = tls.and_then(|t| t.renegotiation.as_deref()) {
        match r {
            // rustls never renegotiates; servers asking for it are refused.
            "Never" | "OnceAsClient" | "FreelyAsClient" => {}
            other => {
                return Err(tls_err(
                    "renegotiation",
                    format!("invalid value {other} (Never, OnceAsClient or FreelyAsClient)"),
                ));
            }
        }
    }
    let client_cert = match (cert.as_deref(), key.as_deref()) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(tls_err(
                "certificate",
                "certificate and privateKey must be given together".into(),
            ));
        }
    };
    let config =
        tls::endpoint_config(root_ca.as_deref(), client_cert, &[b"http/1.1"]).map_err(|e| {
            let field = match e {
                tls::TlsError::RootCa(_) => "rootCA",
                tls::TlsError::Certificate(_) => "certificate",
                tls::TlsError::PrivateKey(_) => "privateKey",
                tls::TlsError::Config(_) => "config",
            };
            tls_err(field, e.to_string())
        })?;
    Ok(Endpoint {
        name,
        base_url,
        headers,
        client: client(config),
    })
}

async fn item_value(
    item: &MetadataItem,
    ep: &HttpEndpoint,
    registry: &Registry,
) -> Result<String, String> {
    if let Some(r) = &item.secret_key_ref {
        return secret_value(&r.name, &r.key, ep, registry).await;
    }
    if let Some(var) = &item.env_ref {
        return Ok(std::env::var(var).unwrap_or_default());
    }
    Ok(item.literal().unwrap_or_default())
}

async fn tls_document(
    d: &TlsDocument,
    ep: &HttpEndpoint,
    registry: &Registry,
) -> Result<String, String> {
    match &d.secret_key_ref {
        Some(r) => secret_value(&r.name, &r.key, ep, registry).await,
        None => Ok(d.literal().unwrap_or_default()),
    }
}

/// A secret through the endpoint's `auth.secretStore` (a loaded component).
async fn secret_value(
    secret: &str,
    key: &str,
    ep: &HttpEndpoint,
    registry: &Registry,
) -> Result<String, String> {
    let store_name = ep.auth.secret_store.as_str();
    if store_name.is_empty() {
        return Err("secretKeyRef needs auth.secretStore".into());
    }
    let store = registry
        .secret_store(store_name)
        .ok_or_else(|| format!("secret store '{store_name}' is not loaded"))?;
    let values = store
        .get(secret, &HashMap::new())
        .await
        .map_err(|e| format!("secret '{secret}': {e}"))?;
    let key = if key.is_empty() { secret } else { key };
    values
        .get(key)
        .cloned()
        .ok_or_else(|| format!("secret '{secret}' has no key '{key}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised() {
        assert!(is_url("http://127.0.0.1:8080"));
        assert!(is_url("https://api.example.com"));
        assert!(!is_url("orders"));
        assert!(!is_url("orders.prod"));
    }
}
