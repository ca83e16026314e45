//! `dapr_grpc_io_server_*` and `dapr_grpc_io_client_*` (OpenCensus' ocgrpc
//! view names as Dapr registers them; status labels are Go's code names).

use prometheus::{HistogramVec, IntCounterVec};

use super::{Factory, MetricsError, SIZE_BUCKETS};

pub struct GrpcMetrics {
    server_completed: IntCounterVec,
    server_latency: HistogramVec,
    server_received: HistogramVec,
    server_sent: HistogramVec,
    client_completed: IntCounterVec,
    client_latency: HistogramVec,
    client_sent: HistogramVec,
    client_received: HistogramVec,
}

impl GrpcMetrics {
    pub(crate) fn new(f: &Factory<'_>, latency: &[f64]) -> Result<Self, MetricsError> {
        let sm = &["grpc_server_method"];
        let sms = &["grpc_server_method", "grpc_server_status"];
        let cm = &["grpc_client_method"];
        let cms = &["grpc_client_method", "grpc_client_status"];
        Ok(Self {
            server_completed: f.counter(
                "dapr_grpc_io_server_completed_rpcs",
                "Distribution of bytes sent per RPC, by method.",
                sms,
            )?,
            server_latency: f.histogram(
                "dapr_grpc_io_server_server_latency",
                "Time between first byte of request received to last byte of response sent, or terminal error.",
                sms,
                latency,
            )?,
            server_received: f.histogram(
                "dapr_grpc_io_server_received_bytes_per_rpc",
                "Total bytes received across all messages per RPC.",
                sm,
                SIZE_BUCKETS,
            )?,
            server_sent: f.histogram(
                "dapr_grpc_io_server_sent_bytes_per_rpc",
                "Total bytes sent in across all response messages per RPC.",
                sm,
                SIZE_BUCKETS,
            )?,
            client_completed: f.counter(
                "dapr_grpc_io_client_completed_rpcs",
                "Count of RPCs by method and status.",
                cms,
            )?,
            client_latency: f.histogram(
                "dapr_grpc_io_client_roundtrip_latency",
                "Time between first byte of request sent to last byte of response received, or terminal error.",
                cms,
                latency,
            )?,
            client_sent: f.histogram(
                "dapr_grpc_io_client_sent_bytes_per_rpc",
                "Total bytes sent across all request messages per RPC.",
                cm,
                SIZE_BUCKETS,
            )?,
            client_received: f.histogram(
                "dapr_grpc_io_client_received_bytes_per_rpc",
                "Total bytes received across all response messages per RPC.",
                cm,
                SIZE_BUCKETS,
            )?,
        })
    }

    /// One RPC served; `method` is the full `/package.Service/Method`.
    pub fn server_done(&self, method: &str, code: i32, received: u64, sent: u64, latency_ms: f64) {
        let status = code_name(code);
        self.server_completed
            .with_label_values(&[method, status])
            .inc();
        self.server_latency
            .with_label_values(&[method, status])
            .observe(latency_ms);
        self.server_received
            .with_label_values(&[method])
            .observe(received as f64);
        self.server_sent
            .with_label_values(&[method])
            .observe(sent as f64);
    }

    /// One RPC made by daprd (to another sidecar or a gRPC app).
    pub fn client_done(&self, method: &str, code: i32, sent: u64, received: u64, latency_ms: f64) {
        let status = code_name(code);
        self.client_completed
            .with_label_values(&[method, status])
            .inc();
        self.client_latency
            .with_label_values(&[method, status])
            .observe(latency_ms);
        self.client_sent
            .with_label_values(&[method])
            .observe(sent as f64);
        self.client_received
            .with_label_values(&[method])
            .observe(received as f64);
    }
}

/// Go's `codes.Code.String()` names, which Dapr uses as label values.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
