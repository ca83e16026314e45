//! The channel from the sidecar to its app (`--app-channel-address`:`--app-port`).
//! HTTP/1.1, h2c and https for HTTP apps, grpc and grpcs for gRPC apps; bodies
//! stream in both directions. TLS to the app does not verify its certificate,
//! as Dapr (the app's certificate is typically self-signed); the
//! Configuration's `appHttpPipeline` runs on every HTTP request to the app.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;

use crate::{
    middleware::SharedPipeline,
    options::{AppProtocol, Options},
};

pub type AppClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The HTTP client for calls into the app, with Dapr's client metrics.
type MeteredAppClient = dapr_observability::client::HttpClient<AppClient>;

/// A gRPC channel to the app (or another sidecar) with Dapr's client metrics.
pub type AppGrpcChannel = dapr_observability::client::GrpcClient<tonic::transport::Channel>;

#[derive(Debug, thiserror::Error)]
pub enum AppChannelError {
    #[error("app channel is not initialized: no --app-port")]
    NotConfigured,
    #[error("app protocol {0} is not supported for HTTP invocation in this build")]
    UnsupportedProtocol(&'static str),
    #[error("invalid request to the app: {0}")]
    InvalidRequest(String),
    #[error("error invoking app: {0}")]
    Unreachable(String),
    #[error("app is not in a healthy state")]
    Unhealthy,
}

/// The app's health as probed by `--enable-app-health-check`.
#[derive(Debug)]
pub struct AppHealth {
    healthy: std::sync::atomic::AtomicBool,
}

impl AppHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set(&self, healthy: bool) {
        let was = self
            .healthy
            .swap(healthy, std::sync::atomic::Ordering::AcqRel);
        if was != healthy {
            if healthy {
                tracing::info!("app entered healthy status");
            } else {
                tracing::warn!("app entered unhealthy status");
            }
        }
    }
}

/// Headers that describe one hop only and must not be forwarded.
/// `content-length` is kept: many app servers cannot read chunked requests.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
    )
}

#[derive(Clone)]
pub struct AppChannel {
    /// Unmetered: health probes and relayed gRPC (measured elsewhere).
    client: AppClient,
    metered: MeteredAppClient,
    /// TLS (unverified) for `https` and `grpcs`; `None` for plain protocols.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `appHttpPipeline`, replaced on hot reload.
    pub pipeline: SharedPipeline,
    base: String,
    app_token: Option<HeaderValue>,
    limiter: Option<Arc<Semaphore>>,
    pub health: Arc<AppHealth>,
    pub protocol: AppProtocol,
    pub address: String,
    /// `--max-body-size`: bounds gRPC app messages, and (as MiB, as Dapr's
    /// HTTP channel does) HTTP app responses.
    max_body_size: u64,
}

impl AppChannel {
    /// `None` when the sidecar has no app (`--app-port` unset).
    pub fn from_options(opts: &Options) -> Option<Self> {
        let port = opts.app_port?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(90));
        if matches!(opts.app_protocol, AppProtocol::H2c | AppProtocol::Grpcs) {
            builder.http2_only(true);
        }
        let tls = match opts.app_protocol {
            AppProtocol::Https => Some(b"http/1.1".as_slice()),
            AppProtocol::Grpcs => Some(b"h2".as_slice()),
            _ => None,
        }
        .and_then(|alpn| match crate::invoke::tls::app_config(&[alpn]) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!("TLS to the app: {e}");
                None
            }
        });
        // Plain HTTP when no TLS is configured (the scheme decides).
        let tls_for_client = tls.clone().unwrap_or_else(|| {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
            )
        });
        let connector = hyper_rustls::HttpsConnector::from((connector, tls_for_client));
        let address = format!("{}:{port}", opts.app_channel_address);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = builder.build(connector);
        Some(Self {
            metered: tower::Layer::layer(
                &dapr_observability::client::HttpClientLayer,
                client.clone(),
            ),
            client,
            tls,
            pipeline: SharedPipeline::default(),
            base: format!("{scheme}://{address}"),
            app_token: std::env::var("APP_API_TOKEN")
                .ok()
                .and_then(|t| HeaderValue::from_str(&t).ok()),
            limiter: (opts.app_max_concurrency > 0).then(|| {
                Arc::new(Semaphore::new(
                    usize::try_from(opts.app_max_concurrency).unwrap_or(usize::MAX),
                ))
            }),
            health: Arc::new(AppHealth {
                healthy: std::sync::atomic::AtomicBool::new(true),
            }),
            protocol: opts.app_protocol,
            address,
            max_body_size: opts.max_body_size,
        })
    }

    /// Sends one HTTP request to the app. `path_and_query` starts with `/`.
    pub async fn call_http(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, AppChannelError> {
        // Fail fast while probes say the app is down, as Dapr does.
        if !self.health.is_healthy() {
            return Err(AppChannelError::Unhealthy);
        }
        match self.protocol {
            AppProtocol::Http | AppProtocol::H2c | AppProtocol::Https => {}
            AppProtocol::Grpc | AppProtocol::Grpcs => {
                return self
                    .call_grpc_on_invoke(method, path_and_query, headers, body)
                    .await;
            }
        }
        let pipeline = self.pipeline.get();
        if pipeline.is_empty() {
            return self.send_http(method, path_and_query, headers, body).await;
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .body(body)
            .map_err(|e| AppChannelError::InvalidRequest(e.to_string()))?;
        *req.headers_mut() = headers.clone();
        // The pipeline deals in responses; a channel error is carried out
        // beside it so callers still see the cause.
        let failure = std::sync::Mutex::new(None);
        let resp = pipeline
            .run(req, |req| async {
                let (parts, body) = req.into_parts();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                match self
                    .send_http(parts.method, path, &parts.headers, body)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        Response::new(Body::empty())
                    }
                }
            })
            .await;
        match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(resp),
        }
    }

    /// One HTTP request to the app, after the pipeline.
    async fn send_http(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, AppChannelError> {
        let uri: Uri = format!("{}{}", self.base, path_and_query)
            .parse()
            .map_err(|e| {
                AppChannelError::InvalidRequest(format!("bad method path '{path_and_query}': {e}"))
            })?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| AppChannelError::InvalidRequest(e.to_string()))?;
        let out = req.headers_mut();
        for (name, value) in headers {
            if !is_hop_by_hop(name) && name != "dapr-api-token" {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(token) = &self.app_token {
            out.insert("dapr-api-token", token.clone());
        }
        // The permit is held until the response body has been read, so
        // --app-max-concurrency bounds whole exchanges, not just headers.
        let permit = match &self.limiter {
            Some(l) => Some(
                l.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| AppChannelError::Unreachable("app channel closed".into()))?,
            ),
            None => None,
        };
        let resp = tower::ServiceExt::oneshot(self.metered.clone(), req)
            .await
            .map_err(|e| AppChannelError::Unreachable(format!("{e} ({})", self.address)))?;
        let (parts, incoming) = resp.into_parts();
        let body = crate::invoke::body_limit::limit_response(
            incoming.map_frame(move |f| {
                let _held = &permit;
                f
            }),
            crate::invoke::body_limit::response_limit(self.max_body_size),
        );
        Ok(Response::from_parts(parts, body))
    }

    /// Invocation of a gRPC app: `AppCallback/OnInvoke` with the buffered
    /// body; the reply comes back as an HTTP response.
    async fn call_grpc_on_invoke(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, AppChannelError> {
        use dapr_rs_proto::{common, runtime::app_callback_client::AppCallbackClient};
        let data = body
            .collect()
            .await
            .map_err(|e| AppChannelError::InvalidRequest(format!("reading the request body: {e}")))?
            .to_bytes();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut request = tonic::Request::new(common::InvokeRequest {
            method: path.trim_start_matches('/').to_owned(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: data.to_vec(),
            }),
            content_type,
            http_extension: Some(common::HttpExtension {
                verb: crate::invoke::verb_to_proto(&method) as i32,
                querystring: query.to_owned(),
            }),
        });
        for (name, value) in headers {
            // gRPC frames its own body and owns the grpc-* headers.
            if is_hop_by_hop(name)
                || name == http::header::CONTENT_TYPE
                || name == http::header::CONTENT_LENGTH
                || name == "dapr-api-token"
                || name.as_str().starts_with("grpc-")
            {
                continue;
            }
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                && let Ok(k) = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
            {
                request.metadata_mut().append(k, v);
            }
        }
        if let Some(token) = &self.app_token
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(token.as_bytes())
        {
            request.metadata_mut().insert("dapr-api-token", v);
        }
        let channel = self.grpc_channel()?;
        let _permit = match &self.limiter {
            Some(l) => Some(
                l.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| AppChannelError::Unreachable("app channel closed".into()))?,
            ),
            None => None,
        };
        // Dapr's gRPC channel holds both directions to --max-body-size.
        let max = usize::try_from(self.max_body_size).unwrap_or(usize::MAX);
        match AppCallbackClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
            .on_invoke(request)
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                let mut out =
                    Response::new(Body::from(resp.data.map(|a| a.value).unwrap_or_default()));
                if let Ok(v) = HeaderValue::from_str(&resp.content_type)
                    && !resp.content_type.is_empty()
                {
                    out.headers_mut().insert(http::header::CONTENT_TYPE, v);
                }
                Ok(out)
            }
            Err(status) if status.code() == tonic::Code::Unavailable => Err(
                AppChannelError::Unreachable(format!("{} ({})", status.message(), self.address)),
            ),
            Err(status) => {
                let mut out = Response::new(Body::from(status.message().to_owned()));
                *out.status_mut() = grpc_to_http(status.code());
                Ok(out)
            }
        }
    }

    /// The HTTP client to the app (HTTP/2 over TLS for `grpcs`), for
    /// relaying proxied gRPC calls.
    pub fn http_client(&self) -> &AppClient {
        &self.client
    }

    /// A channel to the app's gRPC server: h2c, or TLS for `grpcs`.
    pub fn grpc_channel(&self) -> Result<AppGrpcChannel, AppChannelError> {
        // tonic's own TLS verifies the server; the app's certificate is not
        // verified (as Dapr), so TLS comes from the connector instead and
        // the endpoint keeps an http:// URI.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| AppChannelError::Unreachable(e.to_string()))?
            .tcp_nodelay(true);
        Ok(AppGrpcChannel::new(match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                let tls_connector = hyper_rustls::HttpsConnector::from((http, tls.clone()));
                let connector = tower::ServiceBuilder::new()
                    .map_request(|uri: Uri| {
                        let mut parts = uri.into_parts();
                        parts.scheme = Some(http::uri::Scheme::HTTPS);
                        Uri::from_parts(parts).unwrap_or_default()
                    })
                    .service(tls_connector);
                endpoint.connect_with_connector_lazy(connector)
            }
        }))
    }

    /// Probes the app every `interval` (HTTP GET `path`, 2xx = healthy;
    /// a TCP connect for gRPC apps); `threshold` consecutive failures mark it
    /// unhealthy, one success healthy again. Runs until `stop`.
    pub async fn probe_health(
        &self,
        path: String,
        interval: Duration,
        timeout: Duration,
        threshold: u32,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let ok = tokio::time::timeout(timeout, self.probe_once(&path))
                .await
                .unwrap_or_default();
            if ok {
                failures = 0;
                self.health.set(true);
            } else {
                failures = failures.saturating_add(1);
                if failures >= threshold.max(1) {
                    self.health.set(false);
                }
            }
        }
    }

    async fn probe_once(&self, path: &str) -> bool {
        match self.protocol {
            AppProtocol::Grpc | AppProtocol::Grpcs => {
                tokio::net::TcpStream::connect(&self.address).await.is_ok()
            }
            AppProtocol::Http | AppProtocol::H2c | AppProtocol::Https => {
                let Ok(uri) =
                    format!("{}/{}", self.base, path.trim_start_matches('/')).parse::<Uri>()
                else {
                    return false;
                };
                let Ok(req) = Request::get(uri).body(Body::empty()) else {
                    return false;
                };
                matches!(self.client.request(req).await, Ok(r) if r.status().is_success())
            }
        }
    }

    /// Blocks until the app accepts TCP connections, logging while it waits.
    pub async fn wait_for_app(&self) {
        let mut logged = false;
        loop {
            if tokio::net::TcpStream::connect(&self.address).await.is_ok() {
                tracing::info!(address = %self.address, "application discovered");
                return;
            }
            if !logged {
                tracing::info!(address = %self.address, "waiting for the application to listen");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// HTTP status for a gRPC app's error code.
pub fn grpc_to_http(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as S;
    use tonic::Code as C;
    match code {
        C::Ok => S::OK,
        C::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        C::InvalidArgument | C::OutOfRange | C::FailedPrecondition => S::BAD_REQUEST,
        C::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        C::NotFound => S::NOT_FOUND,
        C::AlreadyExists | C::Aborted => S::CONFLICT,
        C::PermissionDenied => S::FORBIDDEN,
        C::Unauthenticated => S::UNAUTHORIZED,
        C::ResourceExhausted => S::TOO_MANY_REQUESTS,
        C::Unimplemented => S::NOT_IMPLEMENTED,
        C::Unavailable => S::SERVICE_UNAVAILABLE,
        C::Unknown | C::Internal | C::DataLoss => S::INTERNAL_SERVER_ERROR,
    }
}
