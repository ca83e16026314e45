//! Policies daprd applies around operations:
//!
//! - [`resiliency`]: timeouts, retries and circuit breakers from `Resiliency`
//!   resources, resolved per app, actor or component target, and a runner
//!   that applies them to an async operation.
//! - [`acl`]: the `accessControl` section of a `Configuration`, deciding
//!   whether a caller (by SPIFFE identity) may invoke an operation.

pub mod acl;
pub mod resiliency;
