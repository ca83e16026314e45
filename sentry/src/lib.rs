//! dapr-rs Sentry: the certificate authority of the control plane.
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`server::run`]; the
//! modules are public so tests and the benchmark can drive them in-process.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod duration;
pub mod http;
pub mod kube_store;
pub mod metrics;
pub mod server;
pub mod service;
pub mod validator;
