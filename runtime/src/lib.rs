//! dapr-rs sidecar (`daprd`) as a library, so tests and benchmarks can build
//! the API routers in-process. The binary is `src/main.rs`.

pub mod actors;
pub mod api;
pub mod appchannel;
pub mod bindings;
pub mod components;
pub mod configuration;
pub mod crypto;
pub mod error;
pub mod hotreload;
pub mod invoke;
pub mod kubernetes;
pub mod lock;
pub mod middleware;
pub mod mtls;
pub mod options;
pub mod pubsub;
pub mod resources;
pub mod run;
pub mod secrets;
pub mod sidecar;
pub mod state;
pub mod workflow;
