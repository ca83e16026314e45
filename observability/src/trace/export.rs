//! Span exporters: OTLP over gRPC, OTLP over HTTP (protobuf) and Zipkin v2
//! JSON, fed in batches by one task.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status::StatusCode},
};
use prost::Message;
use tokio::sync::mpsc;

use super::{SpanKind, SpanRecord, context::push_hex};
use crate::config::TracingSpec;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tracing {what}: invalid endpoint '{endpoint}': {reason}")]
    Endpoint {
        what: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error("tracing: TLS export to '{endpoint}' cannot start: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("tracing otel: unknown protocol '{0}' (expected grpc or http)")]
    Protocol(String),
    #[error("tracing otel: invalid header '{0}' (expected key=value)")]
    Header(String),
}

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub enum Exporter {
    OtlpGrpc {
        client: TraceServiceClient<tonic::transport::Channel>,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
    OtlpHttp {
        client: HttpClient,
        url: http::Uri,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
    Zipkin {
        client: HttpClient,
        url: http::Uri,
    },
}

/// A rustls (ring) client config trusting the system's roots (honouring
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`), offering `alpn`.
fn tls_config(
    endpoint: &str,
    alpn: &[u8],
) -> Result<std::sync::Arc<rustls::ClientConfig>, ExportError> {
    use hyper_rustls::ConfigBuilderExt;
    let err = |reason: String| ExportError::Tls {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(e.to_string()))?
    .with_native_roots()
    .map_err(|e| err(format!("no usable root certificates: {e}")))?
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(std::sync::Arc::new(config))
}

fn connector(
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    hyper_rustls::HttpsConnector::from((http, tls))
}

/// An HTTP(S) client; TLS only for `https://` URLs.
fn http_client(url: &http::Uri) -> Result<HttpClient, ExportError> {
    let tls = if url.scheme_str() == Some("https") {
        tls_config(&url.to_string(), b"http/1.1")?
    } else {
        // Never used for http:// URLs; an empty root store keeps it inert.
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| ExportError::Tls {
                endpoint: url.to_string(),
                reason: e.to_string(),
            })?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector(tls)))
}

/// A lazily connecting OTLP/gRPC channel; `https://` goes over TLS (h2 by
/// ALPN) with the server's certificate verified against the system roots.
fn grpc_channel(u: http::Uri, timeout: Duration) -> Result<tonic::transport::Channel, ExportError> {
    if u.scheme_str() != Some("https") {
        return Ok(tonic::transport::Endpoint::from(u)
            .timeout(timeout)
            .connect_lazy());
    }
    let tls = tls_config(&u.to_string(), b"h2")?;
    // tonic's endpoint stays http:// (its own TLS is not used); the
    // connector dials TLS by turning the scheme back to https.
    let mut parts = u.clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    let plain = http::Uri::from_parts(parts).map_err(|e| ExportError::Endpoint {
        what: "otel",
        endpoint: u.to_string(),
        reason: e.to_string(),
    })?;
    let https = tower::ServiceBuilder::new()
        .map_request(|uri: http::Uri| {
            let mut parts = uri.into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTPS);
            http::Uri::from_parts(parts).unwrap_or_default()
        })
        .service(connector(tls));
    Ok(tonic::transport::Endpoint::from(plain)
        .timeout(timeout)
        .connect_with_connector_lazy(https))
}

fn uri(what: &'static str, endpoint: &str) -> Result<http::Uri, ExportError> {
    let u: http::Uri =
        endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| ExportError::Endpoint {
                what,
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
    match u.scheme_str() {
        Some("http" | "https") => Ok(u),
        _ => Err(ExportError::Endpoint {
            what,
            endpoint: endpoint.to_owned(),
            reason: "expected an http:// or https:// URL".into(),
        }),
    }
}

fn parse_headers(
    items: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, String)>, ExportError> {
    items
        .into_iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            }
            _ => Err(ExportError::Header(
                h.split('=').next().unwrap_or("").to_owned(),
            )),
        })
        .collect()
}

fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The exporters a Configuration `tracing` block and the `OTEL_*`
/// environment ask for.
pub(crate) fn from_config(
    spec: Option<&TracingSpec>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Exporter>, ExportError> {
    let mut out = Vec::new();
    if let Some(z) = spec.and_then(|s| s.zipkin.as_ref())
        && !z.endpoint_address.is_empty()
    {
        let url = uri("zipkin", &z.endpoint_address)?;
        out.push(Exporter::Zipkin {
            client: http_client(&url)?,
            url,
        });
    }
    let otel = spec
        .and_then(|s| s.otel.as_ref())
        .filter(|o| !o.endpoint_address.is_empty());
    // (endpoint URL, protocol, headers, timeout)
    let target = if let Some(o) = otel {
        let secure = o.is_secure.unwrap_or(true);
        let has_scheme = o.endpoint_address.contains("://");
        let url = if has_scheme {
            o.endpoint_address.clone()
        } else {
            format!(
                "{}://{}",
                if secure { "https" } else { "http" },
                o.endpoint_address
            )
        };
        let timeout = o
            .timeout
            .as_deref()
            .and_then(go_duration)
            .unwrap_or(Duration::from_secs(10));
        Some((
            url,
            o.protocol.clone(),
            parse_headers(o.headers.clone())?,
            timeout,
        ))
    } else if let Some(ep) =
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    {
        let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "grpc".into());
        let headers = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|h| h.split(',').map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default();
        let url = if ep.contains("://") {
            ep
        } else {
            let insecure = env("OTEL_EXPORTER_OTLP_INSECURE").is_some_and(|v| v == "true");
            format!("{}://{ep}", if insecure { "http" } else { "https" })
        };
        Some((
            url,
            protocol,
            parse_headers(headers)?,
            Duration::from_secs(10),
        ))
    } else {
        None
    };
    if let Some((url, protocol, headers, timeout)) = target {
        match protocol.as_str() {
            "" | "grpc" => {
                let channel = grpc_channel(uri("otel", &url)?, timeout)?;
                out.push(Exporter::OtlpGrpc {
                    client: TraceServiceClient::new(channel),
                    headers,
                    timeout,
                });
            }
            "http" | "http/protobuf" => {
                let base = uri("otel", &url)?;
                // A bare host:port gets OTLP's default traces path.
                let url = if base.path() == "/" || base.path().is_empty() {
                    uri("otel", &format!("{}/v1/traces", url.trim_end_matches('/')))?
                } else {
                    base
                };
                out.push(Exporter::OtlpHttp {
                    client: http_client(&url)?,
                    url,
                    headers,
                    timeout,
                });
            }
            other => return Err(ExportError::Protocol(other.to_owned())),
        }
    }
    Ok(out)
}

/// Batches spans and hands them to every exporter until the channel closes.
pub(crate) async fn run(mut rx: mpsc::Receiver<SpanRecord>, exporters: Vec<Exporter>) {
    let mut batch = Vec::with_capacity(512);
    loop {
        let first = match rx.recv().await {
            Some(s) => s,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while batch.len() < 512 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let spans = std::mem::take(&mut batch);
        for e in &exporters {
            if let Err(err) = e.export(&spans).await {
                tracing::warn!("span export failed: {err}");
            }
        }
    }
}

impl Exporter {
    async fn export(&self, spans: &[SpanRecord]) -> Result<(), String> {
        let service = super::get()
            .map(|t| t.service_name().to_owned())
            .unwrap_or_default();
        match self {
            Exporter::OtlpGrpc {
                client,
                headers,
                timeout,
            } => {
                let mut req = tonic::Request::new(otlp_request(&service, spans));
                req.set_timeout(*timeout);
                for (k, v) in headers {
                    if let (Ok(k), Ok(v)) = (
                        k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        v.parse(),
                    ) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                client
                    .clone()
                    .export(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("OTLP gRPC: {}", s.message()))
            }
            Exporter::OtlpHttp {
                client,
                url,
                headers,
                timeout,
            } => {
                let body = otlp_request(&service, spans).encode_to_vec();
                post(
                    client,
                    url,
                    "application/x-protobuf",
                    headers,
                    body,
                    *timeout,
                )
                .await
            }
            Exporter::Zipkin { client, url } => {
                let body = zipkin_json(&service, spans);
                post(
                    client,
                    url,
                    "application/json",
                    &[],
                    body,
                    Duration::from_secs(10),
                )
                .await
            }
        }
    }
}

async fn post(
    client: &HttpClient,
    url: &http::Uri,
    content_type: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let mut req = http::Request::post(url.clone()).header(http::header::CONTENT_TYPE, content_type);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| format!("POST {url}: timed out"))?
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = res.status();
    // Drain so the connection can be reused.
    let _ = res.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {status}"))
    }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn otlp_request(service: &str, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "dapr-rs".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans
                    .iter()
                    .map(|s| Span {
                        trace_id: s.trace_id.to_vec(),
                        span_id: s.span_id.to_vec(),
                        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
                        name: s.name.clone(),
                        kind: s.kind as i32,
                        start_time_unix_nano: nanos(s.start),
                        end_time_unix_nano: nanos(s.end),
                        attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                        flags: 0x101,
                        status: Some(Status {
                            code: if s.error {
                                StatusCode::Error as i32
                            } else {
                                StatusCode::Unset as i32
                            },
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn zipkin_json(service: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let hex = |b: &[u8]| {
        let mut s = String::new();
        push_hex(&mut s, b);
        s
    };
    let items: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let start_us = nanos(s.start) / 1000;
            let mut tags: serde_json::Map<String, serde_json::Value> = s
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                .collect();
            if s.error {
                tags.insert("error".into(), "true".into());
            }
            let mut v = serde_json::json!({
                "traceId": hex(&s.trace_id),
                "id": hex(&s.span_id),
                "name": s.name,
                "timestamp": start_us,
                "duration": (nanos(s.end) / 1000).saturating_sub(start_us).max(1),
                "localEndpoint": {"serviceName": service},
                "tags": tags,
            });
            if let Some(p) = s.parent_span_id {
                v["parentId"] = hex(&p).into();
            }
            let kind = match s.kind {
                SpanKind::Server => Some("SERVER"),
                SpanKind::Client => Some("CLIENT"),
                SpanKind::Producer => Some("PRODUCER"),
                SpanKind::Consumer => Some("CONSUMER"),
                SpanKind::Internal => None,
            };
            if let Some(k) = kind {
                v["kind"] = k.into();
            }
            v
        })
        .collect();
    serde_json::to_vec(&items).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OtelSpec, ZipkinSpec};

    #[test]
    fn exporters_from_config_and_env() {
        let none = |_: &str| None;
        assert!(from_config(None, &none).unwrap().is_empty());
        let spec = TracingSpec {
            zipkin: Some(ZipkinSpec {
                endpoint_address: "http://127.0.0.1:9411/api/v2/spans".into(),
            }),
            otel: Some(OtelSpec {
                endpoint_address: "127.0.0.1:4317".into(),
                is_secure: Some(false),
                protocol: "grpc".into(),
                headers: vec!["x-key=v".into()],
                timeout: Some("2s".into()),
            }),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        assert_eq!(from_config(Some(&spec), &none).unwrap().len(), 2);
        // isSecure defaults to true: TLS, for gRPC and HTTP alike.
        for protocol in ["grpc", "http"] {
            let secure = TracingSpec {
                otel: Some(OtelSpec {
                    endpoint_address: "collector:4317".into(),
                    protocol: protocol.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert_eq!(from_config(Some(&secure), &none).unwrap().len(), 1);
        }
        let ftp = TracingSpec {
            zipkin: Some(ZipkinSpec {
                endpoint_address: "ftp://x/spans".into(),
            }),
            ..Default::default()
        };
        assert!(matches!(
            from_config(Some(&ftp), &none),
            Err(ExportError::Endpoint { .. })
        ));
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_owned()),
            _ => None,
        };
        match from_config(None, &env).unwrap().as_slice() {
            [Exporter::OtlpHttp { url, .. }] => {
                assert_eq!(url.to_string(), "http://127.0.0.1:4318/v1/traces")
            }
            _ => panic!("expected one OTLP/HTTP exporter"),
        }
        let bad = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://x".to_owned());
        let bad_proto = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://x".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("thrift".to_owned()),
            _ => None,
        };
        assert!(from_config(None, &bad).is_ok());
        assert!(matches!(
            from_config(None, &bad_proto),
            Err(ExportError::Protocol(_))
        ));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(go_duration("x"), None);
    }
}
