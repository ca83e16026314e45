//! dapr-rs end-to-end harness: a real single-node Kubernetes 1.20 on this machine
//! (`e2e/k8s/cluster.sh`) and helpers for tests that use it. See `e2e/README.md`.
//!
//! ```no_run
//! # async fn t() -> Result<(), dapr_e2e::E2eError> {
//! let Some(cluster) = dapr_e2e::Cluster::tier2().await else { return Ok(()) }; // skipped loudly
//! cluster.import_images_only(&dapr_e2e::profile_dir(), &["e2e-app"])?;
//! let ns = cluster.namespace("my-area")?;
//! ns.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")?;
//! # Ok(()) }
//! ```

mod cluster;
mod error;
mod kubectl;
mod namespace;
mod wait;

pub use cluster::{Cluster, Tier, cluster_script, image, profile_dir, repo_root};
pub use error::E2eError;
pub use kubectl::Kubectl;
pub use namespace::{TestNamespace, unique_name};
pub use wait::eventually;
