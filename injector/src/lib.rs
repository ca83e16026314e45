//! `dapr-injector`: Dapr's sidecar injector, a mutating admission webhook
//! that adds the `daprd` container to pods annotated `dapr.io/enabled: "true"`.
//!
//! * [`annotations`]: the `dapr.io/*` annotations, validated.
//! * [`sidecar`] and [`patch`]: the daprd container and the JSON patch.
//! * [`authz`]: which requesters get their pods injected.
//! * [`admission`]: AdmissionReview in, AdmissionReview out.
//! * [`tls`], [`server`], [`webhook_ca`], [`mtls`], [`metrics`]: serving.

pub mod admission;
pub mod annotations;
pub mod app;
pub mod authz;
pub mod cli;
pub mod metrics;
pub mod mtls;
pub mod patch;
pub mod quantity;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod tls;
pub mod webhook_ca;
