//! A resolved policy and the runner that applies it to an operation.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{CircuitBreaker, Rejection};
use super::metrics::{Direction, NoopMetrics, PolicyKind, PolicyTarget, ResiliencyMetrics};
use super::retry::{RandomSource, RetryPolicy, RetryableError};

/// Why a policy-wrapped operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError<E> {
    /// The circuit breaker is open; the operation was not attempted.
    #[error("circuit breaker is open")]
    CircuitBreakerOpen { breaker: String },
    /// The breaker is half-open and all its trial requests are in flight.
    #[error("too many requests")]
    CircuitBreakerTooManyRequests { breaker: String },
    /// The last attempt did not finish within the policy's timeout.
    #[error("operation timed out after {timeout:?}")]
    Timeout { timeout: Duration },
    /// The last attempt failed with this error.
    #[error(transparent)]
    Operation(E),
}

impl<E> PolicyError<E> {
    /// Open or half-open-and-full breaker (Dapr's `IsCircuitBreakerError`).
    pub fn is_circuit_breaker(&self) -> bool {
        matches!(
            self,
            PolicyError::CircuitBreakerOpen { .. }
                | PolicyError::CircuitBreakerTooManyRequests { .. }
        )
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, PolicyError::Timeout { .. })
    }

    /// The operation's own error, if that is what ended the run.
    pub fn into_operation_error(self) -> Option<E> {
        match self {
            PolicyError::Operation(e) => Some(e),
            _ => None,
        }
    }

    pub fn operation_error(&self) -> Option<&E> {
        match self {
            PolicyError::Operation(e) => Some(e),
            _ => None,
        }
    }
}

/// Timeout, retry and circuit breaker resolved for one target. Cheap to
/// clone; breakers are shared with the registry that resolved them.
#[derive(Clone)]
pub struct Policy {
    name: String,
    target: Option<(PolicyTarget, Direction)>,
    timeout: Option<Duration>,
    retry: Option<Arc<RetryPolicy>>,
    breaker: Option<Arc<CircuitBreaker>>,
    metrics: Arc<dyn ResiliencyMetrics>,
    random: RandomSource,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl Policy {
    /// A policy that applies nothing: the operation runs once.
    pub fn none(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            target: None,
            timeout: None,
            retry: None,
            breaker: None,
            metrics: Arc::new(NoopMetrics),
            random: RandomSource::default(),
        }
    }

    /// Per-attempt timeout; zero means none.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    pub fn with_retry(mut self, retry: Option<Arc<RetryPolicy>>) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_circuit_breaker(mut self, breaker: Option<Arc<CircuitBreaker>>) -> Self {
        self.breaker = breaker;
        self
    }

    /// The jitter source for exponential back-off (tests use a fixed one).
    pub fn with_random(mut self, random: RandomSource) -> Self {
        self.random = random;
        self
    }

    pub fn with_metrics(
        mut self,
        metrics: Arc<dyn ResiliencyMetrics>,
        target: PolicyTarget,
        direction: Direction,
    ) -> Self {
        self.metrics = metrics;
        self.target = Some((target, direction));
        self
    }

    /// The name used in logs, e.g. `endpoint[app, app:method]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_deref()
    }

    pub fn circuit_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// Whether a failed attempt may be retried at all (Dapr's `HasRetries`).
    /// Callers use it to decide whether a request body must be buffered.
    pub fn has_retries(&self) -> bool {
        self.retry
            .as_ref()
            .is_some_and(|r| r.max_retries != Some(0))
    }

    /// Whether the policy applies nothing.
    pub fn is_noop(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }

    /// Runs `op` under the policy. `op` receives the attempt number (from 1)
    /// and is called again for each retry. Each attempt is bounded by the
    /// timeout and counted by the breaker; retries follow the back-off while
    /// the error is retriable. Dropping the returned future cancels the
    /// attempt in flight.
    pub async fn execute<T, E, F, Fut>(&self, mut op: F) -> Result<T, PolicyError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: RetryableError,
    {
        let Some(retry) = self.retry.as_deref() else {
            return self.attempt(&mut op, 1).await;
        };
        let mut schedule = retry.schedule(Instant::now());
        let mut attempt = 1u32;
        loop {
            let err = match self.attempt(&mut op, attempt).await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(policy = %self.name, attempts = attempt, "recovered processing operation");
                    }
                    return Ok(value);
                }
                Err(err) => err,
            };
            let retriable = match &err {
                PolicyError::CircuitBreakerOpen { .. }
                | PolicyError::CircuitBreakerTooManyRequests { .. } => false,
                PolicyError::Timeout { .. } => true,
                PolicyError::Operation(e) => retry.should_retry(e),
            };
            if !retriable {
                return Err(err);
            }
            let Some(delay) = schedule.next_delay(Instant::now(), &self.random) else {
                return Err(err);
            };
            self.activated(PolicyKind::Retry);
            tracing::warn!(policy = %self.name, attempt, ?delay, "error processing operation, retrying");
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn attempt<T, E, F, Fut>(&self, op: &mut F, attempt: u32) -> Result<T, PolicyError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(breaker) = self.breaker.as_deref() else {
            return self.timed(op(attempt)).await;
        };
        let before = breaker.state();
        let result = match breaker.try_acquire() {
            Err(rejection) => {
                let name = breaker.name().to_owned();
                Err(match rejection {
                    Rejection::Open => PolicyError::CircuitBreakerOpen { breaker: name },
                    Rejection::TooManyRequests => {
                        PolicyError::CircuitBreakerTooManyRequests { breaker: name }
                    }
                })
            }
            Ok(permit) => {
                let result = self.timed(op(attempt)).await;
                if result.is_ok() {
                    permit.success();
                } else {
                    permit.failure();
                }
                result
            }
        };
        let after = breaker.state();
        if before != after
            && let Some((target, direction)) = &self.target
        {
            self.metrics
                .circuit_breaker_state(target, *direction, breaker.name(), after);
        }
        result
    }

    async fn timed<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, PolicyError<E>> {
        let Some(timeout) = self.timeout else {
            return fut.await.map_err(PolicyError::Operation);
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result.map_err(PolicyError::Operation),
            Err(_) => {
                self.activated(PolicyKind::Timeout);
                Err(PolicyError::Timeout { timeout })
            }
        }
    }

    fn activated(&self, kind: PolicyKind) {
        if let Some((target, direction)) = &self.target {
            self.metrics.policy_activated(target, *direction, kind);
        }
    }
}
