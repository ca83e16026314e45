//! The public APIs: HTTP on `--dapr-http-port`, gRPC on `--dapr-grpc-port`.
//! Both are thin adapters over the building-block services.

pub mod grpc;
pub mod http;
