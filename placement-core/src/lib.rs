//! Actor placement for dapr-rs, shared by the placement service and daprd.
//!
//! * [`hashing`]: the consistent-hash ring, identical to Dapr's (BLAKE2b-512,
//!   100 virtual nodes per host, first virtual node at or after the key).
//! * [`tables`]: a sidecar's decoded view of `PlacementTables`.
//! * [`client`]: the sidecar-side `ReportDaprStatus` client (leader
//!   discovery, heartbeats, lock/update/unlock, lookups, readiness).
//! * [`proto`]: the `dapr.proto.placement.v1` messages and stubs.

pub mod client;
pub mod hashing;
pub mod tables;

/// `dapr.proto.placement.v1`.
pub mod proto {
    pub use dapr_rs_proto::generated::dapr::proto::placement::v1::*;
}

pub use client::{ClientError, ClientOptions, ClientState, Phase, PlacementClient};
pub use hashing::{DEFAULT_REPLICATION_FACTOR, Ring, RingHost, VirtualNodesCache};
pub use tables::ActorTables;
