//! Resiliency policies: timeouts, retries and circuit breakers.
//!
//! Build a [`ResiliencyRegistry`] from the loaded `Resiliency` resources, ask
//! it for the [`Policy`] of a target (app, actor, component, built-in), and
//! run the operation through [`Policy::execute`]:
//!
//! ```no_run
//! # use dapr_policy::resiliency::{ResiliencyRegistry, RetryableError, PolicyError};
//! # #[derive(Debug)] struct CallError(u16);
//! # impl RetryableError for CallError { fn http_status(&self) -> Option<u16> { Some(self.0) } }
//! # async fn call(_attempt: u32) -> Result<String, CallError> { Ok(String::new()) }
//! # async fn demo(registry: &ResiliencyRegistry) {
//! let policy = registry.policy_for_endpoint("orders", "orders:create");
//! match policy.execute(|attempt| call(attempt)).await {
//!     Ok(body) => {}
//!     Err(e) if e.is_circuit_breaker() => { /* "circuit breaker is open" */ }
//!     Err(PolicyError::Timeout { .. }) => {}
//!     Err(e) => {}
//! }
//! # }
//! ```

mod breaker;
mod lru;
mod metrics;
mod policy;
mod registry;
mod retry;

pub use breaker::{
    BreakerCounts, BreakerSettings, BreakerState, CircuitBreaker, DEFAULT_BREAKER_TIMEOUT,
    DEFAULT_TRIP, Permit, Rejection, TRIP_VARIABLES, TripCondition, TripError,
};
pub use metrics::{Direction, NoopMetrics, PolicyKind, PolicyTarget, ResiliencyMetrics};
pub use policy::{Policy, PolicyError};
pub use registry::{
    ActorBreakerScope, BuiltInPolicy, ComponentKind, DEFAULT_ACTOR_BREAKER_CACHE_SIZE,
    DEFAULT_APP_BREAKER_CACHE_SIZE, ResiliencyError, ResiliencyRegistry, parse_policy_duration,
};
pub use retry::{
    Backoff, DEFAULT_CONSTANT_DURATION, DEFAULT_INITIAL_INTERVAL, DEFAULT_MAX_ELAPSED_TIME,
    DEFAULT_MAX_INTERVAL, DEFAULT_MULTIPLIER, DEFAULT_RANDOMIZATION_FACTOR, ExponentialBackoff,
    GRPC_CODE_RANGE, HTTP_STATUS_RANGE, PatternError, RandomSource, RetryPolicy, RetryableError,
    StatusMatching,
};

#[cfg(test)]
mod tests;
