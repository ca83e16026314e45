//! `bindings.http`: an output binding that sends one HTTP request per call to
//! `url` (plus the request's `path` metadata).
//!
//! Operations are the HTTP methods in lower case (`create` is `post`). Request
//! metadata keys starting with an upper-case letter become headers. The
//! response metadata carries `statusCode`, `status` and every response header;
//! a non-2xx status fails the call unless `errorIfNot2XX` is false (component
//! or request metadata), and the metadata travels with the failure as Dapr's.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{BindingError, InvokeRequest, InvokeResponse, OutputBinding};
use crate::ComponentMetadata;

const OPERATIONS: &[&str] = &[
    "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
];
const DEFAULT_MAX_RESPONSE_BODY: u64 = 100 << 20;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct HttpBinding {
    url: String,
    client: HttpClient,
    timeout: Option<Duration>,
    max_body: Option<u64>,
    error_if_not_2xx: bool,
    token: Option<(HeaderName, HeaderValue)>,
}

impl HttpBinding {
    pub fn new(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let url = md.require("url")?.trim().to_owned();
        let uri: Uri = url
            .parse()
            .map_err(|e| BindingError::invalid_metadata("url", format!("'{url}': {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(BindingError::invalid_metadata(
                "url",
                format!("'{url}' is not an absolute http:// or https:// URL"),
            ));
        }
        let timeout = md.get_duration("responseTimeout")?;
        let max_body = match md.get("maxResponseBodySize") {
            None => Some(DEFAULT_MAX_RESPONSE_BODY),
            Some(v) => {
                let n = parse_byte_size(v).ok_or_else(|| {
                    BindingError::invalid_metadata(
                        "maxResponseBodySize",
                        format!("'{v}' is not a size such as 1048576, 64Ki or 100Mi"),
                    )
                })?;
                // Dapr: zero or less means no limit.
                (n > 0).then_some(n as u64)
            }
        };
        let error_if_not_2xx = md.get_bool("errorIfNot2XX")?.unwrap_or(true);
        let token = match (md.get("securityToken"), md.get("securityTokenHeader")) {
            (Some(t), Some(h)) => {
                let name = HeaderName::try_from(h).map_err(|e| {
                    BindingError::invalid_metadata("securityTokenHeader", e.to_string())
                })?;
                let value = HeaderValue::try_from(t).map_err(|_| {
                    BindingError::invalid_metadata("securityToken", "not a valid header value")
                })?;
                Some((name, value))
            }
            _ => None,
        };
        Ok(Self {
            url,
            client: build_client(md)?,
            timeout,
            max_body,
            error_if_not_2xx,
            token,
        })
    }
}

/// An HTTP/HTTPS client trusting the system roots plus `mtlsRootCA`, with the
/// `mtlsClientCert`/`mtlsClientKey` pair when given (PEM text or file path).
fn build_client(md: &ComponentMetadata) -> Result<HttpClient, BindingError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = md.get("mtlsRootCA") {
        let pem = pem_or_file("mtlsRootCA", ca)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| BindingError::invalid_metadata("mtlsRootCA", e.to_string()))?;
        if certs.is_empty() {
            return Err(BindingError::invalid_metadata(
                "mtlsRootCA",
                "no certificate found",
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| BindingError::invalid_metadata("mtlsRootCA", e.to_string()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BindingError::Connect(e.to_string()))?
    .with_root_certificates(roots);
    let tls = match (md.get("mtlsClientCert"), md.get("mtlsClientKey")) {
        (Some(cert), Some(key)) => {
            let cert_pem = pem_or_file("mtlsClientCert", cert)?;
            let key_pem = pem_or_file("mtlsClientKey", key)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| BindingError::invalid_metadata("mtlsClientCert", e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| BindingError::invalid_metadata("mtlsClientKey", e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| BindingError::invalid_metadata("mtlsClientCert", e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(BindingError::Metadata(crate::MetadataError::Missing(
                "mtlsClientKey".to_owned(),
            )));
        }
        (None, Some(_)) => {
            return Err(BindingError::Metadata(crate::MetadataError::Missing(
                "mtlsClientCert".to_owned(),
            )));
        }
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

fn pem_or_file(field: &str, value: &str) -> Result<Vec<u8>, BindingError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| {
        BindingError::invalid_metadata(field, format!("neither PEM text nor a readable file: {e}"))
    })
}

/// `1048576`, `64Ki`, `100Mi`, `1Gi`, `10M`, `1k`.
fn parse_byte_size(v: &str) -> Option<i64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult: i64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Go's canonical header form (`content-type` → `Content-Type`), which is how
/// Dapr's component names response headers in the metadata.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "y" | "on"
    )
}

#[async_trait]
impl OutputBinding for HttpBinding {
    fn operations(&self) -> Vec<String> {
        OPERATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let mut url = self.url.clone();
        if let Some(path) = req.metadata.get("path").filter(|p| !p.is_empty()) {
            url = format!(
                "{}/{}",
                url.trim_end_matches('/'),
                path.trim_start_matches('/')
            );
        }
        let error_if_not_2xx = req
            .metadata
            .get("errorIfNot2XX")
            .filter(|v| !v.is_empty())
            .map(|v| truthy(v))
            .unwrap_or(self.error_if_not_2xx);
        let method = match req.operation.to_ascii_lowercase().as_str() {
            "create" | "post" => Method::POST,
            "put" => Method::PUT,
            "patch" => Method::PATCH,
            "get" => Method::GET,
            "head" => Method::HEAD,
            "delete" => Method::DELETE,
            "options" => Method::OPTIONS,
            "trace" => Method::TRACE,
            other => {
                return Err(BindingError::InvalidRequest(format!(
                    "invalid operation: {other}"
                )));
            }
        };
        let has_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let uri: Uri = url
            .parse()
            .map_err(|e| BindingError::InvalidRequest(format!("invalid URL '{url}': {e}")))?;
        let mut builder = Request::builder().method(method).uri(uri);
        let headers = builder
            .headers_mut()
            .ok_or_else(|| BindingError::InvalidRequest("invalid request".to_owned()))?;
        if has_body && !req.metadata.contains_key("Content-Type") {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        if !req.metadata.contains_key("Accept") {
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        if let Some((name, value)) = &self.token {
            headers.insert(name.clone(), value.clone());
        }
        for (k, v) in &req.metadata {
            let is_header = k.starts_with(|c: char| c.is_ascii_uppercase())
                || k == "traceparent"
                || k == "tracestate";
            if !is_header || v.is_empty() {
                continue;
            }
            let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                BindingError::InvalidRequest(format!("metadata '{k}' is not a valid header name"))
            })?;
            let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                BindingError::InvalidRequest(format!("metadata '{k}' is not a valid header value"))
            })?;
            headers.insert(name, value);
        }
        let body = if has_body { req.data } else { Bytes::new() };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| BindingError::InvalidRequest(e.to_string()))?;

        let call = async {
            let resp = self.client.request(request).await.map_err(|e| {
                BindingError::Backend(format!("error sending request to {url}: {e}"))
            })?;
            let (parts, body) = resp.into_parts();
            let data = match self.max_body {
                Some(limit) => Limited::new(body, limit as usize)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .map_err(|e| BindingError::Backend(format!("error reading response: {e}")))?,
                None => {
                    body.collect().await.map(|c| c.to_bytes()).map_err(|e| {
                        BindingError::Backend(format!("error reading response: {e}"))
                    })?
                }
            };
            Ok::<_, BindingError>((parts, data))
        };
        let (parts, data) = match self.timeout {
            Some(t) => tokio::time::timeout(t, call).await.map_err(|_| {
                BindingError::Backend(format!("request to {url} timed out after {t:?}"))
            })??,
            None => call.await?,
        };

        let status = parts.status;
        let mut metadata: HashMap<String, String> = HashMap::new();
        metadata.insert("statusCode".to_owned(), status.as_u16().to_string());
        metadata.insert(
            "status".to_owned(),
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            )
            .trim_end()
            .to_owned(),
        );
        for name in parts.headers.keys() {
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            metadata.insert(canonical_header(name.as_str()), values.join(", "));
        }
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let response = InvokeResponse {
            data,
            metadata,
            content_type,
        };
        if error_if_not_2xx && !status.is_success() {
            return Err(BindingError::WithResponse {
                message: format!("received status code {}", status.as_u16()),
                response: Box::new(response),
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(canonical_header("content-type"), "Content-Type");
        assert_eq!(canonical_header("x-request-id"), "X-Request-Id");
        assert_eq!(parse_byte_size("100Mi"), Some(100 << 20));
        assert_eq!(parse_byte_size("12"), Some(12));
        assert_eq!(parse_byte_size("12 apples"), None);
    }

    #[test]
    fn metadata_is_validated() {
        let md = |url: &str| ComponentMetadata::new("web", "app").with("url", url);
        assert!(HttpBinding::new(&ComponentMetadata::new("web", "app")).is_err());
        for bad in ["not a url", "ftp://x/", "/relative"] {
            let err = HttpBinding::new(&md(bad)).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("'url'")), "{bad}");
        }
        let err = HttpBinding::new(&md("http://127.0.0.1:1/").with("maxResponseBodySize", "lots"))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("maxResponseBodySize")));
        let err = HttpBinding::new(&md("http://127.0.0.1:1/").with("mtlsClientCert", "x"))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mtlsClient")));
        assert!(HttpBinding::new(&md("http://127.0.0.1:1/api")).is_ok());
    }
}
