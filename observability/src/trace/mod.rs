//! Distributed tracing as Dapr does it: W3C context in and out, a span per
//! API call with Dapr's attribute names, sampling by trace id ratio (parent
//! decision wins), export to OTLP (gRPC or HTTP/protobuf) and Zipkin.
//!
//! Spans are plain records sent over a bounded channel to one exporter task
//! (batched every 500 ms or 512 spans); a full channel drops spans rather
//! than slowing requests.

pub mod context;
mod export;

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;

pub use context::TraceContext;
pub use export::{ExportError, Exporter};

use crate::{config::TracingSpec, layer::Protocol};

/// OTLP span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// A finished span, ready for export.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    /// `true`: status error.
    pub error: bool,
}

pub struct Tracer {
    service_name: String,
    /// `None`: follow the parent; new traces use the ratio.
    ratio: f64,
    tx: mpsc::Sender<SpanRecord>,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

pub fn get() -> Option<&'static Tracer> {
    TRACER.get()
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("invalid tracing samplingRate '{0}': expected a number between 0 and 1")]
    SamplingRate(String),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("tracing already initialised in this process")]
    AlreadyInitialised,
}

/// Installs the process tracer from the Configuration `tracing` block and
/// the `OTEL_*` environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_INSECURE`,
/// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`). Nothing configured (no
/// exporter) installs nothing: requests then pass `traceparent` through
/// untouched. Must run inside the tokio runtime.
pub fn init(
    spec: Option<&TracingSpec>,
    app_id: &str,
) -> Result<Option<&'static Tracer>, TraceError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let exporters = export::from_config(spec, &env)?;
    if exporters.is_empty() {
        return Ok(None);
    }
    let rate_text = match spec.map(|s| s.sampling_rate.trim()) {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => env("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "0".into()),
    };
    let ratio: f64 = rate_text
        .parse()
        .ok()
        .filter(|r: &f64| (0.0..=1.0).contains(r))
        .ok_or_else(|| TraceError::SamplingRate(rate_text.clone()))?;
    let (tx, rx) = mpsc::channel(8192);
    tokio::spawn(export::run(rx, exporters));
    let tracer = Tracer {
        service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| app_id.to_owned()),
        ratio,
        tx,
    };
    TRACER
        .set(tracer)
        .map_err(|_| TraceError::AlreadyInitialised)?;
    Ok(TRACER.get())
}

/// A span in progress; dropping it without `end_*` discards it.
pub struct ActiveSpan {
    tracer: &'static Tracer,
    pub context: TraceContext,
    parent: Option<[u8; 8]>,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

/// The span of one API request (see [`crate::layer`]).
pub type ServerSpan = ActiveSpan;

impl Tracer {
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Starts a span under `parent` (a remote context) or a new trace.
    pub fn start(
        &'static self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&TraceContext>,
    ) -> ActiveSpan {
        let mut span_id = random_u64().to_be_bytes();
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        let context = match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                sampled: p.sampled,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random_u64().to_be_bytes());
                trace_id[8..].copy_from_slice(&random_u64().to_be_bytes());
                TraceContext {
                    trace_id,
                    span_id,
                    sampled: ratio_sampled(&trace_id, self.ratio),
                }
            }
        };
        ActiveSpan {
            tracer: self,
            context,
            parent: parent.map(|p| p.span_id),
            name: name.into(),
            kind,
            start: SystemTime::now(),
            attributes: Vec::new(),
        }
    }

    /// The span of an API request: parent from the request's `traceparent`
    /// (kept only when valid), which is then replaced by the new span's so
    /// the handler propagates this span as the parent. An invalid
    /// `tracestate`/`baggage` is removed.
    pub fn start_server_span(
        &'static self,
        protocol: Protocol,
        method: &str,
        path: &str,
        headers: &mut HeaderMap,
    ) -> ActiveSpan {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        for h in ["tracestate", "baggage"] {
            let ok = headers.get(h).map(|v| {
                v.to_str().is_ok_and(|s| {
                    if h == "tracestate" {
                        context::valid_tracestate(s)
                    } else {
                        context::valid_baggage(s)
                    }
                })
            });
            if ok == Some(false) {
                headers.remove(h);
            }
        }
        let (name, kind) = match protocol {
            // Dapr names HTTP API spans by path and invocation spans
            // `CallLocal/<app>/<method>`; the internal server's gRPC spans by
            // their full method.
            Protocol::Http => (span_name_http(path), SpanKind::Server),
            Protocol::Grpc => (path.trim_start_matches('/').to_owned(), SpanKind::Server),
        };
        let mut span = self.start(name, kind, parent.as_ref());
        match protocol {
            Protocol::Http => {
                span.attr("dapr.protocol", "http");
                span.attr("dapr.api", format!("{method} {path}"));
                span.attr("http.request.method", method);
                if let Some((app, m)) = invoke_target(path) {
                    span.attr("dapr.invoke_method", m);
                    span.attr("net.peer.name", app);
                }
            }
            Protocol::Grpc => {
                span.attr("dapr.protocol", "grpc");
                span.attr("dapr.api", path);
                span.attr("rpc.system", "grpc");
                if let Some((svc, _)) = path.trim_start_matches('/').split_once('/') {
                    span.attr("rpc.service", svc);
                }
            }
        }
        if let Ok(v) = HeaderValue::from_str(&span.context.traceparent()) {
            headers.insert("traceparent", v);
        }
        span
    }
}

/// A span for a pub/sub delivery, child of the publisher's span carried in
/// the CloudEvent's `traceparent` (a new trace without one). `None` when
/// tracing is off.
pub fn start_delivery(pubsub: &str, topic: &str, traceparent: Option<&str>) -> Option<ActiveSpan> {
    let t = get()?;
    let parent = traceparent.and_then(TraceContext::parse);
    let mut span = t.start(
        format!("pubsub/{topic}"),
        SpanKind::Consumer,
        parent.as_ref(),
    );
    span.attr("messaging.system", pubsub);
    span.attr("messaging.destination.name", topic);
    span.attr("dapr.protocol", "pubsub");
    Some(span)
}

/// Copies the W3C headers of an API request onto an outgoing gRPC call
/// (sidecar to sidecar), so the callee's span is this span's child.
pub fn inject_grpc(headers: &HeaderMap, md: &mut tonic::metadata::MetadataMap) {
    for h in ["traceparent", "tracestate", "baggage"] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok())
            && let Ok(v) = v.parse()
        {
            md.insert(h, v);
        }
    }
}

fn span_name_http(path: &str) -> String {
    match invoke_target(path) {
        Some((app, method)) => format!("CallLocal/{app}/{method}"),
        None => path.to_owned(),
    }
}

/// `/v1.0/invoke/<app>/method/<method>` → (app, method).
fn invoke_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    let (app, rest) = rest.split_once('/')?;
    let method = rest.strip_prefix("method/")?;
    Some((app, method))
}

/// Random ids from a per-thread splitmix64 seeded once from the OS (UUID v4
/// bytes are not uniformly random: they carry version and variant bits).
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0 ^ uuid::Uuid::new_v4().as_u64_pair().1);
    }
    STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// OpenTelemetry's TraceIdRatioBased rule (which Dapr uses): sampled when
/// the trace id's low 63 bits fall under `ratio × 2^63`.
fn ratio_sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(b) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    x < bound
}

impl ActiveSpan {
    pub fn attr(&mut self, key: &'static str, value: impl Into<String>) {
        if self.context.sampled {
            self.attributes.push((key, value.into()));
        }
    }

    pub fn traceparent(&self) -> String {
        self.context.traceparent()
    }

    /// Ends an HTTP span with Dapr's `dapr.status_code` (≥ 400 is an error).
    pub fn end_http(mut self, status: u16) {
        self.attr("dapr.status_code", status.to_string());
        self.finish(status >= 400);
    }

    /// Ends a gRPC span with the status code.
    pub fn end_grpc(mut self, code: i32) {
        self.attr("dapr.status_code", code.to_string());
        self.attr("rpc.grpc.status_code", code.to_string());
        self.finish(code != 0);
    }

    pub fn finish(self, error: bool) {
        if !self.context.sampled {
            return;
        }
        let record = SpanRecord {
            name: self.name,
            kind: self.kind,
            trace_id: self.context.trace_id,
            span_id: self.context.span_id,
            parent_span_id: self.parent,
            start: self.start,
            end: SystemTime::now().max(self.start + Duration::from_nanos(1)),
            attributes: self.attributes,
            error,
        };
        // A full queue drops the span: tracing never slows the request.
        let _ = self.tracer.tx.try_send(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_bounds() {
        let low = [0u8; 16];
        let mut high = [0u8; 16];
        high[8..].copy_from_slice(&[0xff; 8]);
        assert!(ratio_sampled(&high, 1.0) && !ratio_sampled(&low, 0.0));
        assert!(ratio_sampled(&low, 0.1) && !ratio_sampled(&high, 0.1));
        // Roughly the ratio over many random ids.
        let n = (0..10_000)
            .filter(|_| {
                let mut t = [0u8; 16];
                t[8..].copy_from_slice(&random_u64().to_be_bytes());
                ratio_sampled(&t, 0.1)
            })
            .count();
        assert!((700..1300).contains(&n), "{n}");
    }

    #[test]
    fn invoke_span_names() {
        assert_eq!(
            span_name_http("/v1.0/invoke/b/method/orders/1"),
            "CallLocal/b/orders/1"
        );
        assert_eq!(span_name_http("/v1.0/state/s"), "/v1.0/state/s");
    }
}
