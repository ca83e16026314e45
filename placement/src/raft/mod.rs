//! Raft (openraft 0.9, storage v2) replicating the daprd membership.
//!
//! * [`store`]: the log on redb (a file with `--raft-logstore-path`, redb's
//!   in-memory backend otherwise) and the membership state machine.
//! * [`network`]: Raft RPCs as JSON over HTTP/1.1 on the Raft port.

pub mod network;
pub mod store;

use std::{fmt, io::Cursor};

use serde::{Deserialize, Serialize};

use crate::membership::{ApplyResult, Command};

/// Raft node id: derived from the placement id (see [`node_id`]).
pub type NodeId = u64;

/// A placement node as Raft knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `--id` of the node, e.g. `dapr-placement-0`.
    pub name: String,
    /// Raft address, `host:port`.
    pub addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of the placement service.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// Stable numeric Raft id of a placement id: the ring hash of the name, so
/// every node derives the same id from `--initial-cluster` on its own.
pub fn node_id(name: &str) -> NodeId {
    dapr_placement_core::hashing::hash(name.as_bytes())
}
