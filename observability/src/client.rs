//! Client-side metrics as tower layers on daprd's clients, so no call site
//! records anything:
//!
//! - [`HttpClientLayer`] on the HTTP app channel:
//!   `dapr_http_client_{sent_bytes,received_bytes,roundtrip_latency,completed_count}`;
//! - [`GrpcClientLayer`] on gRPC channels (the app channel of gRPC apps,
//!   sidecar-to-sidecar calls): `dapr_grpc_io_client_{completed_rpcs,
//!   roundtrip_latency,sent_bytes_per_rpc,received_bytes_per_rpc}`.
//!
//! A call is recorded once its response body has ended or been dropped
//! (the last byte received), or when the call fails before a response.
//! Without installed metrics the layers only re-box the bodies.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tower::{Layer, Service};

use crate::{
    layer::GrpcFrames,
    metrics::{self, DaprdMetrics, elapsed_ms},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

// ---------- HTTP ----------

/// Records Dapr's HTTP client metrics for calls into the app.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClientLayer;

impl<S> Layer<S> for HttpClientLayer {
    type Service = HttpClient<S>;
    fn layer(&self, inner: S) -> HttpClient<S> {
        HttpClient { inner }
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient<S> {
    inner: S,
}

impl<S, B> Service<Request<axum::body::Body>> for HttpClient<S>
where
    S: Service<Request<axum::body::Body>, Response = Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<axum::body::Body>) -> Self::Future {
        let Some(m) = metrics::get() else {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(axum::body::Body::new)) });
        };
        let start = Instant::now();
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let req = req.map(|b| {
            axum::body::Body::new(Counting {
                inner: b,
                counter,
                grpc: None,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    let done = HttpDone {
                        m,
                        start,
                        method,
                        path,
                        status: res.status().as_u16(),
                        sent,
                        received: 0,
                    };
                    Ok(res.map(|b| axum::body::Body::new(Watched::new(b, Watch::Http(done)))))
                }
                Err(e) => {
                    // As Dapr: a failed call counts as a 500.
                    drop(HttpDone {
                        m,
                        start,
                        method,
                        path,
                        status: 500,
                        sent,
                        received: 0,
                    });
                    Err(e)
                }
            }
        })
    }
}

struct HttpDone {
    m: &'static DaprdMetrics,
    start: Instant,
    method: String,
    path: String,
    status: u16,
    sent: Arc<AtomicU64>,
    received: u64,
}

impl Drop for HttpDone {
    fn drop(&mut self) {
        self.m.http.client_done(
            &self.method,
            &self.path,
            self.status,
            self.sent.load(Ordering::Relaxed),
            self.received,
            elapsed_ms(self.start),
        );
    }
}

// ---------- gRPC ----------

/// Records Dapr's gRPC client metrics on a tonic channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClientLayer;

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClient<S>;
    fn layer(&self, inner: S) -> GrpcClient<S> {
        GrpcClient { inner }
    }
}

/// A gRPC channel (`S`, e.g. `tonic::transport::Channel`) whose calls are
/// measured; usable wherever tonic clients take a channel.
#[derive(Debug, Clone)]
pub struct GrpcClient<S> {
    inner: S,
}

impl<S> GrpcClient<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<tonic::body::Body>> for GrpcClient<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let Some(m) = metrics::get() else {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(tonic::body::Body::new)) });
        };
        let start = Instant::now();
        let method = req.uri().path().to_owned();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let req = req.map(|b| {
            tonic::body::Body::new(Counting {
                inner: b,
                counter,
                grpc: Some(GrpcFrames::default()),
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    let done = GrpcDone {
                        m,
                        start,
                        method,
                        // Trailers-only responses carry the status in the
                        // headers; otherwise it arrives in the trailers.
                        code: grpc_status(res.headers()),
                        http_ok: res.status() == http::StatusCode::OK,
                        sent,
                        received: 0,
                        frames: GrpcFrames::default(),
                    };
                    Ok(res.map(|b| tonic::body::Body::new(Watched::new(b, Watch::Grpc(done)))))
                }
                Err(e) => {
                    // The connection failed: gRPC reports Unavailable.
                    drop(GrpcDone {
                        m,
                        start,
                        method,
                        code: Some(14),
                        http_ok: false,
                        sent,
                        received: 0,
                        frames: GrpcFrames::default(),
                    });
                    Err(e)
                }
            }
        })
    }
}

struct GrpcDone {
    m: &'static DaprdMetrics,
    start: Instant,
    method: String,
    code: Option<i32>,
    http_ok: bool,
    sent: Arc<AtomicU64>,
    received: u64,
    frames: GrpcFrames,
}

impl Drop for GrpcDone {
    fn drop(&mut self) {
        // No status at all: the stream was cut (or dropped by the caller,
        // which gRPC reports as Canceled).
        let code = self.code.unwrap_or(if self.http_ok { 1 } else { 14 });
        self.m.grpc.client_done(
            &self.method,
            code,
            self.sent.load(Ordering::Relaxed),
            self.received,
            elapsed_ms(self.start),
        );
    }
}

fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

// ---------- bodies ----------

enum Watch {
    Http(HttpDone),
    Grpc(GrpcDone),
}

/// A response body that records its call when it ends or is dropped.
struct Watched<B> {
    inner: B,
    watch: Option<Watch>,
}

impl<B> Watched<B> {
    fn new(inner: B, watch: Watch) -> Self {
        Self {
            inner,
            watch: Some(watch),
        }
    }
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match &mut this.watch {
                Some(Watch::Http(d)) => {
                    if let Some(data) = frame.data_ref() {
                        d.received += data.len() as u64;
                    }
                }
                Some(Watch::Grpc(d)) => {
                    if let Some(data) = frame.data_ref() {
                        d.received += d.frames.payload(data);
                    } else if let Some(t) = frame.trailers_ref()
                        && let Some(code) = grpc_status(t)
                    {
                        d.code = Some(code);
                    }
                }
                None => {}
            },
            // The end of the body is the end of the call.
            Poll::Ready(None) => this.watch = None,
            Poll::Ready(Some(Err(_))) => {
                if let Some(Watch::Grpc(d)) = &mut this.watch
                    && d.code.is_none()
                {
                    d.code = Some(14);
                }
                this.watch = None;
            }
            Poll::Pending => {}
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts what is sent (gRPC: message bytes only).
struct Counting<B> {
    inner: B,
    counter: Arc<AtomicU64>,
    grpc: Option<GrpcFrames>,
}

impl<B> http_body::Body for Counting<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = match &mut this.grpc {
                Some(f) => f.payload(data),
                None => data.len() as u64,
            };
            this.counter.fetch_add(n, Ordering::Relaxed);
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
