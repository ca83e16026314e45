//! One tower layer for daprd's servers: the HTTP API and the gRPC servers
//! (public API and internal), recording Dapr's metrics, a server span per
//! request (the request's `traceparent` is replaced by the new span's, so
//! handlers propagate the right parent), and API logs.
//!
//! It wraps the response body, so everything is recorded when the body is
//! finished (or dropped), as Dapr measures "last byte sent".

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use tower::{Layer, Service};

use crate::{metrics::DaprdMetrics, trace};

/// Which server a layer instance wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

/// API logging options (`--enable-api-logging`, Configuration
/// `logging.apiLogging`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiLog {
    pub enabled: bool,
    pub obfuscate_urls: bool,
    pub omit_health_checks: bool,
}

#[derive(Clone)]
pub struct ObservabilityLayer {
    inner: Arc<Shared>,
}

struct Shared {
    protocol: Protocol,
    metrics: Option<&'static DaprdMetrics>,
    tracer: Option<&'static trace::Tracer>,
    api_log: ApiLog,
    /// `false` for the internal gRPC server: Dapr's API logs cover the
    /// public APIs only.
    log_calls: bool,
}

impl ObservabilityLayer {
    /// A layer recording into the process-wide metrics and tracer (each
    /// only if installed).
    pub fn new(protocol: Protocol, api_log: ApiLog) -> Self {
        Self {
            inner: Arc::new(Shared {
                protocol,
                metrics: crate::metrics::get(),
                tracer: trace::get(),
                api_log,
                log_calls: true,
            }),
        }
    }

    /// For the internal (sidecar-to-sidecar) gRPC server: metrics and spans,
    /// no API logs.
    pub fn internal() -> Self {
        let mut l = Self::new(Protocol::Grpc, ApiLog::default());
        if let Some(s) = Arc::get_mut(&mut l.inner) {
            s.log_calls = false;
        }
        l
    }

    /// Whether the layer would do anything at all.
    pub fn is_active(&self) -> bool {
        let s = &self.inner;
        s.metrics.is_some() || s.tracer.is_some() || (s.api_log.enabled && s.log_calls)
    }
}

impl<S> Layer<S> for ObservabilityLayer {
    type Service = ObservabilityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ObservabilityService {
            inner,
            shared: self.inner.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObservabilityService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for ObservabilityService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let start = Instant::now();
        let path = req.uri().path().to_owned();
        let method = req.method().as_str().to_owned();
        let span = shared
            .tracer
            .map(|t| t.start_server_span(shared.protocol, &method, &path, req.headers_mut()));
        let received = Arc::new(AtomicU64::new(0));
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if shared.protocol == Protocol::Grpc && shared.metrics.is_some() {
            let counter = received.clone();
            req = req.map(|b| {
                Body::new(Counted {
                    inner: b,
                    counter: Some(counter),
                    grpc: GrpcFrames::default(),
                })
            });
        }
        // obfuscateURLs: the route template when the router knows it, else
        // the path without the parts Dapr treats as variable (keys, ids).
        let route = shared.api_log.obfuscate_urls.then(|| {
            req.extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_else(|| {
                    crate::metrics::PathLabeler::new(true, &[])
                        .label(&path)
                        .into_owned()
                })
        });
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            // Dapr answers HTTP API calls with the span's traceparent.
            if shared.protocol == Protocol::Http
                && let Some(span) = &span
                && !res.headers().contains_key("traceparent")
                && let Ok(v) = HeaderValue::from_str(&span.traceparent())
            {
                res.headers_mut().insert("traceparent", v);
            }
            let status = res.status().as_u16();
            let grpc_status = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok());
            let done = Done {
                shared,
                start,
                method,
                path,
                route,
                user_agent,
                status,
                grpc_status,
                declared_request: declared,
                received,
                sent: 0,
                span,
                grpc: GrpcFrames::default(),
            };
            Ok(res.map(|b| Body::new(Observed { inner: b, done })))
        })
    }
}

/// What is recorded once the response body is finished or dropped.
struct Done {
    shared: Arc<Shared>,
    start: Instant,
    method: String,
    path: String,
    route: Option<String>,
    user_agent: Option<String>,
    status: u16,
    grpc_status: Option<i32>,
    declared_request: u64,
    received: Arc<AtomicU64>,
    /// Payload bytes (gRPC: message bytes without the 5-byte frame headers).
    sent: u64,
    span: Option<trace::ServerSpan>,
    grpc: GrpcFrames,
}

impl Drop for Done {
    fn drop(&mut self) {
        let s = &self.shared;
        let latency = crate::metrics::elapsed_ms(self.start);
        match s.protocol {
            Protocol::Http => {
                if let Some(m) = s.metrics {
                    m.http.server_done(
                        &self.method,
                        &self.path,
                        self.status,
                        self.declared_request,
                        self.sent,
                        latency,
                    );
                }
                if let Some(span) = self.span.take() {
                    span.end_http(self.status);
                }
                if s.log_calls && s.api_log.enabled && !self.omitted() {
                    let method = match &self.route {
                        Some(r) => r.clone(),
                        None => format!("{} {}", self.method, self.path),
                    };
                    tracing::info!(
                        scope = "dapr.runtime.http-info",
                        method = %method,
                        useragent = self.user_agent.as_deref().unwrap_or(""),
                        code = self.status,
                        size = self.sent,
                        duration = latency as u64,
                        "HTTP API Called"
                    );
                }
            }
            Protocol::Grpc => {
                // A body that ended without grpc-status trailers was cut off.
                let code = self
                    .grpc_status
                    .unwrap_or(if self.status == 200 { 2 } else { 14 });
                if let Some(m) = s.metrics {
                    m.grpc.server_done(
                        &self.path,
                        code,
                        self.received.load(Ordering::Relaxed),
                        self.sent,
                        latency,
                    );
                }
                if let Some(span) = self.span.take() {
                    span.end_grpc(code);
                }
                if s.log_calls && s.api_log.enabled && !self.omitted() {
                    tracing::info!(
                        scope = "dapr.runtime.grpc.api-info",
                        method = %self.path,
                        useragent = self.user_agent.as_deref().unwrap_or(""),
                        code,
                        duration = latency as u64,
                        "gRPC API Called"
                    );
                }
            }
        }
    }
}

impl Done {
    fn omitted(&self) -> bool {
        self.shared.api_log.omit_health_checks
            && (self.path.starts_with("/v1.0/healthz")
                || self.path == "/grpc.health.v1.Health/Check"
                || self.path.ends_with("/HealthCheck"))
    }
}

pin_project_lite::pin_project! {
    struct Observed {
        #[pin]
        inner: Body,
        done: Done,
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.done.sent += match this.done.shared.protocol {
                    Protocol::Http => data.len() as u64,
                    Protocol::Grpc => this.done.grpc.payload(data),
                };
            } else if let Some(t) = frame.trailers_ref()
                && let Some(code) = grpc_status(t)
            {
                this.done.grpc_status = Some(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get("grpc-status")
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pin_project_lite::pin_project! {
    /// Counts request payload bytes (gRPC messages without frame headers).
    struct Counted {
        #[pin]
        inner: Body,
        counter: Option<Arc<AtomicU64>>,
        grpc: GrpcFrames,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, this.counter.as_ref())
            && let Some(data) = frame.data_ref()
        {
            c.fetch_add(this.grpc.payload(data), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Follows gRPC's length-prefixed framing across data chunks so that only
/// message bytes are counted, as gRPC's own stats handlers do.
#[derive(Debug, Default)]
pub(crate) struct GrpcFrames {
    header: [u8; 5],
    header_len: usize,
    remaining: u64,
}

impl GrpcFrames {
    /// Message bytes in `chunk`.
    pub(crate) fn payload(&mut self, mut chunk: &[u8]) -> u64 {
        let mut n = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining as usize).min(chunk.len());
                n += take as u64;
                self.remaining -= take as u64;
                chunk = &chunk[take..];
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len == 5 {
                self.remaining = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                self.header_len = 0;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::GrpcFrames;

    #[test]
    fn grpc_frames_counted_across_chunks() {
        let mut f = GrpcFrames::default();
        let mut msg = vec![0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
        msg.extend_from_slice(&[0, 0, 0, 0, 2, b'x', b'y']);
        let total: u64 = msg.chunks(3).map(|c| f.payload(c)).sum();
        assert_eq!(total, 5);
    }
}
