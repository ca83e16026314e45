//! Building-block interfaces and the components that implement them.
//!
//! The runtime owns request validation, key prefixing and API shapes; a
//! component only talks to its backend. Each building block has a trait, a
//! typed error, and a `create` function that builds a component from its
//! `type` and metadata.

pub mod bindings;
pub mod configuration;
pub mod crypto;
pub mod duration;
pub mod lock;
pub mod metadata;
pub mod nameresolution;
pub mod pubsub;
pub mod secretstores;
pub mod state;

pub use metadata::{ComponentMetadata, MetadataError};
