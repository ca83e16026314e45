//! Dapr's gRPC surface, shared by every dapr-rs binary.
//!
//! Messages come from the `dapr` crate (generated from Dapr's own protos); the
//! server traits are regenerated here with default `Unimplemented` bodies so a
//! service implements only the methods it serves.

pub use dapr::dapr::proto::{common::v1 as common, runtime::v1 as runtime};
pub use dapr::google::rpc;

/// Server stubs for `dapr.proto.runtime.v1` with default bodies.
pub mod server {
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    include!(concat!(
        env!("OUT_DIR"),
        "/dapr_stubs/dapr.proto.runtime.v1.rs"
    ));
}

/// Control-plane and internal services (`protos/`): Sentry, operator,
/// placement, sidecar-to-sidecar invocation. Modules follow the proto
/// packages, e.g. `generated::dapr::proto::sentry::v1`.
pub mod generated {
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

/// The descriptor set the stubs were generated from (for gRPC reflection and tests).
pub const DAPR_RUNTIME_DESCRIPTORS: &[u8] = include_bytes!("../descriptors/dapr-runtime.bin");

/// `google.rpc` error-detail messages that Dapr attaches to gRPC statuses
/// (the `dapr` crate ships only `google.rpc.Status`).
pub mod error_details {
    use std::collections::HashMap;

    /// `google.rpc.ErrorInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ErrorInfo {
        #[prost(string, tag = "1")]
        pub reason: String,
        #[prost(string, tag = "2")]
        pub domain: String,
        #[prost(map = "string, string", tag = "3")]
        pub metadata: HashMap<String, String>,
    }

    /// `google.rpc.ResourceInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceInfo {
        #[prost(string, tag = "1")]
        pub resource_type: String,
        #[prost(string, tag = "2")]
        pub resource_name: String,
        #[prost(string, tag = "3")]
        pub owner: String,
        #[prost(string, tag = "4")]
        pub description: String,
    }
}
