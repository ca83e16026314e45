//! Durable workflows for dapr-rs.
//!
//! The Dapr workflow SDKs are Durable Task workers: they connect to the
//! sidecar's `TaskHubSidecarService`, receive work items (run this
//! orchestrator over this history, run this activity) and report the
//! results. This crate is the sidecar's side of that protocol: the engine
//! that persists every instance's history in a transactional state store
//! before acknowledging anything, dispatches work items to the connected
//! workers, and fires durable timers.

pub mod proto {
    //! The Durable Task protocol as the SDKs speak it (no proto package, so
    //! the gRPC paths are `/TaskHubSidecarService/<Method>`).
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub mod cluster;
pub mod engine;
pub mod error;
pub mod service;
pub mod store;

pub use engine::{Engine, InstanceStatus, StartRequest, status_name};
pub use error::WorkflowError;
pub use service::TaskHubService;
pub use store::WorkflowStore;
