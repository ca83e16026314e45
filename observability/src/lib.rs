//! dapr-rs observability, shared by every binary:
//!
//! - [`metrics`]: Dapr's Prometheus metrics (names, labels, buckets) and the
//!   `--metrics-port` server;
//! - [`trace`]: W3C trace context, spans with Dapr's attributes, OTLP and
//!   Zipkin export, sampling;
//! - [`layer`]: the tower layer that applies both (and API logging) to
//!   daprd's HTTP and gRPC servers;
//! - [`client`]: the same for daprd's HTTP and gRPC clients (app channel,
//!   sidecar-to-sidecar calls);
//! - [`logging`]: `--log-level` / `--log-as-json` with Dapr's JSON fields.

pub mod client;
#[cfg(feature = "sidecar")]
pub mod components;
pub mod config;
pub mod daprd;
pub mod layer;
pub mod logging;
pub mod metrics;
pub mod trace;

pub use config::ObservabilityConfig;
pub use layer::{ApiLog, ObservabilityLayer, Protocol};
