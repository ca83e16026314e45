//! Circuit breakers: closed → open when the trip condition holds, open →
//! half-open after `timeout`, half-open → closed after `max_requests`
//! consecutive successes or back to open on any failure.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cel::objects::Value;
use cel::{Context, Env, ExecutionError, Program};
use tokio::time::Instant;

/// How long an open breaker waits before letting a trial request through,
/// when `timeout` is not given (or zero).
pub const DEFAULT_BREAKER_TIMEOUT: Duration = Duration::from_secs(60);
/// The trip condition when `trip` is not given.
pub const DEFAULT_TRIP: &str = "consecutiveFailures > 5";

/// The variables a trip expression can read.
pub const TRIP_VARIABLES: [&str; 5] = [
    "requests",
    "totalSuccesses",
    "totalFailures",
    "consecutiveSuccesses",
    "consecutiveFailures",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Dapr's label for the state (`closed`, `open`, `half-open`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request outcomes counted since the breaker last changed state (or since
/// the last `interval` reset while closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    pub requests: u32,
    pub total_successes: u32,
    pub total_failures: u32,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

impl BreakerCounts {
    fn on_request(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }
    fn on_success(&mut self) {
        self.total_successes = self.total_successes.saturating_add(1);
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        self.consecutive_failures = 0;
    }
    fn on_failure(&mut self) {
        self.total_failures = self.total_failures.saturating_add(1);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
    }
}

/// A trip expression that failed to compile or check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trip expression '{expression}': {reason}")]
pub struct TripError {
    pub expression: String,
    pub reason: String,
}

/// When a closed breaker opens: a CEL expression over [`BreakerCounts`]
/// (variables [`TRIP_VARIABLES`]), evaluated after each failure.
#[derive(Clone)]
pub struct TripCondition {
    source: String,
    compiled: Option<Arc<CompiledTrip>>,
}

struct CompiledTrip {
    env: Arc<Env>,
    program: Program,
}

impl TripCondition {
    /// `consecutiveFailures > 5`, evaluated without CEL.
    pub fn default_condition() -> Self {
        Self {
            source: DEFAULT_TRIP.to_owned(),
            compiled: None,
        }
    }

    /// Compiles `expression` and checks it by evaluating it once: it must only
    /// read [`TRIP_VARIABLES`] and must produce a boolean.
    pub fn compile(expression: &str) -> Result<Self, TripError> {
        let err = |reason: String| TripError {
            expression: expression.to_owned(),
            reason,
        };
        if expression.trim().is_empty() {
            return Err(err("expression is empty".to_owned()));
        }
        let env = Arc::new(Env::stdlib());
        let program = env
            .compile(expression)
            .map_err(|e| err(e.to_string().replace('\n', "; ")))?;
        let compiled = CompiledTrip { env, program };
        let probe = BreakerCounts {
            requests: 1,
            total_successes: 1,
            total_failures: 1,
            consecutive_successes: 1,
            consecutive_failures: 1,
        };
        match compiled.eval(&probe) {
            Ok(Value::Bool(_)) => {}
            Ok(other) => {
                return Err(err(format!(
                    "must evaluate to a boolean, got {:?}",
                    other.type_of()
                )));
            }
            Err(ExecutionError::UndeclaredReference(name)) => {
                return Err(err(format!(
                    "unknown variable '{name}' (known: {})",
                    TRIP_VARIABLES.join(", ")
                )));
            }
            // Data-dependent failures (a division by zero on the probe counts,
            // say) don't make the expression wrong; anything else does.
            Err(
                e @ (ExecutionError::DivisionByZero(_)
                | ExecutionError::RemainderByZero(_)
                | ExecutionError::Overflow(..)
                | ExecutionError::IndexOutOfBounds(_)
                | ExecutionError::NoSuchKey(_)),
            ) => tracing::warn!(
                expression,
                error = %e,
                "trip expression failed on probe counts; it never trips while it keeps failing"
            ),
            Err(e) => return Err(err(e.to_string())),
        }
        Ok(Self {
            source: expression.to_owned(),
            compiled: Some(Arc::new(compiled)),
        })
    }

    pub fn expression(&self) -> &str {
        &self.source
    }

    /// Whether `counts` should open the breaker. An evaluation error or a
    /// non-boolean result never trips.
    pub fn should_trip(&self, counts: &BreakerCounts) -> bool {
        let Some(compiled) = &self.compiled else {
            return counts.consecutive_failures > 5;
        };
        match compiled.eval(counts) {
            Ok(Value::Bool(b)) => b,
            Ok(other) => {
                tracing::debug!(expression = %self.source, value = ?other, "trip expression did not return a boolean");
                false
            }
            Err(e) => {
                tracing::debug!(expression = %self.source, error = %e, "trip expression failed");
                false
            }
        }
    }
}

impl CompiledTrip {
    fn eval(&self, counts: &BreakerCounts) -> Result<Value, ExecutionError> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        let values = [
            counts.requests,
            counts.total_successes,
            counts.total_failures,
            counts.consecutive_successes,
            counts.consecutive_failures,
        ];
        for (name, value) in TRIP_VARIABLES.iter().zip(values) {
            ctx.add_variable_from_value(*name, i64::from(value));
        }
        self.program.execute(&ctx)
    }
}

impl fmt::Debug for TripCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TripCondition").field(&self.source).finish()
    }
}

impl PartialEq for TripCondition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A compiled `circuitBreakers` entry: the template every breaker instance
/// created from that policy shares.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// The policy name.
    pub name: String,
    /// Trial requests allowed while half-open; also the consecutive successes
    /// needed to close again. At least 1.
    pub max_requests: u32,
    /// While closed, counts are cleared every `interval`; zero never clears.
    pub interval: Duration,
    /// How long the breaker stays open.
    pub timeout: Duration,
    pub trip: TripCondition,
}

impl BreakerSettings {
    /// Dapr's defaults: 1 half-open request, no interval, 60 s open, default trip.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_requests: 1,
            interval: Duration::ZERO,
            timeout: DEFAULT_BREAKER_TIMEOUT,
            trip: TripCondition::default_condition(),
        }
    }
}

/// Why a breaker refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The breaker is open.
    Open,
    /// The breaker is half-open and its trial requests are all in flight.
    TooManyRequests,
}

struct Inner {
    state: BreakerState,
    generation: u64,
    counts: BreakerCounts,
    /// Closed: when counts are next cleared (None: never). Open: when the
    /// breaker turns half-open.
    expiry: Option<Instant>,
}

/// One circuit breaker instance (per app endpoint, actor, or component).
pub struct CircuitBreaker {
    name: String,
    settings: Arc<BreakerSettings>,
    inner: Mutex<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("policy", &self.settings.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, settings: Arc<BreakerSettings>) -> Self {
        let now = Instant::now();
        let expiry = closed_expiry(&settings, now);
        Self {
            name: name.into(),
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                counts: BreakerCounts::default(),
                expiry,
            }),
        }
    }

    /// The instance name (used in logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The current state, after applying any time-based transition.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner, Instant::now());
        inner.state
    }

    /// The counts of the current generation.
    pub fn counts(&self) -> BreakerCounts {
        let mut inner = self.lock();
        self.refresh(&mut inner, Instant::now());
        inner.counts
    }

    /// Asks to let one request through. The returned permit records the
    /// outcome; dropping it unrecorded counts as a failure.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejection> {
        let mut inner = self.lock();
        self.refresh(&mut inner, Instant::now());
        match inner.state {
            BreakerState::Open => return Err(Rejection::Open),
            BreakerState::HalfOpen if inner.counts.requests >= self.settings.max_requests => {
                return Err(Rejection::TooManyRequests);
            }
            _ => {}
        }
        inner.counts.on_request();
        Ok(Permit {
            breaker: self,
            generation: inner.generation,
            recorded: false,
        })
    }

    fn record(&self, generation: u64, success: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        if inner.generation != generation {
            // The outcome belongs to a state that has since ended.
            return;
        }
        match (inner.state, success) {
            (BreakerState::Closed, true) => inner.counts.on_success(),
            (BreakerState::Closed, false) => {
                inner.counts.on_failure();
                if self.settings.trip.should_trip(&inner.counts) {
                    self.set_state(&mut inner, BreakerState::Open, now);
                }
            }
            (BreakerState::HalfOpen, true) => {
                inner.counts.on_success();
                if inner.counts.consecutive_successes >= self.settings.max_requests {
                    self.set_state(&mut inner, BreakerState::Closed, now);
                }
            }
            (BreakerState::HalfOpen, false) => {
                self.set_state(&mut inner, BreakerState::Open, now);
            }
            (BreakerState::Open, _) => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held except a bug; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh(&self, inner: &mut Inner, now: Instant) {
        match inner.state {
            BreakerState::Closed => {
                if inner.expiry.is_some_and(|at| at <= now) {
                    self.new_generation(inner, now);
                }
            }
            BreakerState::Open => {
                if inner.expiry.is_some_and(|at| at <= now) {
                    self.set_state(inner, BreakerState::HalfOpen, now);
                }
            }
            BreakerState::HalfOpen => {}
        }
    }

    fn set_state(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        let from = inner.state;
        if from == to {
            return;
        }
        inner.state = to;
        self.new_generation(inner, now);
        tracing::info!(breaker = %self.name, %from, %to, "circuit breaker changed state");
    }

    fn new_generation(&self, inner: &mut Inner, now: Instant) {
        inner.generation = inner.generation.wrapping_add(1);
        inner.counts = BreakerCounts::default();
        inner.expiry = match inner.state {
            BreakerState::Closed => closed_expiry(&self.settings, now),
            BreakerState::Open => now.checked_add(self.settings.timeout),
            BreakerState::HalfOpen => None,
        };
    }
}

fn closed_expiry(settings: &BreakerSettings, now: Instant) -> Option<Instant> {
    if settings.interval.is_zero() {
        None
    } else {
        now.checked_add(settings.interval)
    }
}

/// A request let through by a [`CircuitBreaker`].
#[must_use = "record the outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    recorded: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.recorded = true;
        self.breaker.record(self.generation, true);
    }

    pub fn failure(mut self) {
        self.recorded = true;
        self.breaker.record(self.generation, false);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            // Cancelled mid-flight: count it like Dapr counts a cancelled context.
            self.breaker.record(self.generation, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker::new("test", Arc::new(settings))
    }

    fn fail(cb: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            cb.try_acquire().unwrap().failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn default_trip_opens_after_six_consecutive_failures() {
        let cb = breaker(BreakerSettings::new("cb"));
        fail(&cb, 5);
        assert_eq!(cb.state(), BreakerState::Closed);
        cb.try_acquire().unwrap().success();
        fail(&cb, 5);
        assert_eq!(
            cb.state(),
            BreakerState::Closed,
            "a success resets the streak"
        );
        fail(&cb, 1);
        assert_eq!(cb.state(), BreakerState::Open);
        assert_eq!(cb.try_acquire().err(), Some(Rejection::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn open_half_open_closed_cycle() {
        let mut s = BreakerSettings::new("cb");
        s.max_requests = 2;
        s.timeout = Duration::from_secs(30);
        s.trip = TripCondition::compile("consecutiveFailures >= 2").unwrap();
        let cb = breaker(s);
        fail(&cb, 2);
        assert_eq!(cb.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cb.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cb.state(), BreakerState::HalfOpen);

        // Two trial requests at once; a third is refused.
        let p1 = cb.try_acquire().unwrap();
        let p2 = cb.try_acquire().unwrap();
        assert_eq!(cb.try_acquire().err(), Some(Rejection::TooManyRequests));
        p1.success();
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        p2.success();
        assert_eq!(cb.state(), BreakerState::Closed);
        assert_eq!(cb.counts(), BreakerCounts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_failure_reopens() {
        let mut s = BreakerSettings::new("cb");
        s.timeout = Duration::from_secs(5);
        s.trip = TripCondition::compile("consecutiveFailures > 0").unwrap();
        let cb = breaker(s);
        fail(&cb, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        fail(&cb, 1);
        assert_eq!(cb.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            cb.try_acquire().err(),
            Some(Rejection::Open),
            "timer restarted"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cb.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn interval_clears_counts_while_closed() {
        let mut s = BreakerSettings::new("cb");
        s.interval = Duration::from_secs(10);
        s.trip = TripCondition::compile("totalFailures > 3").unwrap();
        let cb = breaker(s);
        fail(&cb, 3);
        assert_eq!(cb.counts().total_failures, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cb.counts(), BreakerCounts::default());
        fail(&cb, 3);
        assert_eq!(cb.state(), BreakerState::Closed);
        fail(&cb, 1);
        assert_eq!(cb.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_interval_never_clears() {
        let mut s = BreakerSettings::new("cb");
        s.trip = TripCondition::compile("totalFailures > 3").unwrap();
        let cb = breaker(s);
        fail(&cb, 1);
        cb.try_acquire().unwrap().success();
        fail(&cb, 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        fail(&cb, 1);
        cb.try_acquire().unwrap().success();
        assert_eq!(cb.state(), BreakerState::Closed);
        let c = cb.counts();
        assert_eq!((c.requests, c.total_failures, c.total_successes), (5, 3, 2));
        fail(&cb, 1);
        assert_eq!(cb.state(), BreakerState::Open, "totalFailures reached 4");
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_permit_counts_as_failure() {
        let mut s = BreakerSettings::new("cb");
        s.trip = TripCondition::compile("consecutiveFailures >= 1").unwrap();
        let cb = breaker(s);
        drop(cb.try_acquire().unwrap());
        assert_eq!(cb.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_outcomes_are_ignored() {
        let mut s = BreakerSettings::new("cb");
        s.timeout = Duration::from_secs(1);
        s.trip = TripCondition::compile("consecutiveFailures >= 1").unwrap();
        let cb = breaker(s);
        let slow = cb.try_acquire().unwrap();
        fail(&cb, 1);
        assert_eq!(cb.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        // A request admitted while closed finishes during half-open: ignored.
        slow.success();
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        assert_eq!(cb.counts().total_successes, 0);
    }

    #[test]
    fn trip_expressions_see_all_counts() {
        let counts = BreakerCounts {
            requests: 10,
            total_successes: 6,
            total_failures: 4,
            consecutive_successes: 0,
            consecutive_failures: 2,
        };
        for (expr, expected) in [
            ("totalFailures > 3", true),
            ("totalFailures > 4", false),
            ("requests >= 10 && totalSuccesses == 6", true),
            (
                "consecutiveSuccesses == 0 && consecutiveFailures == 2",
                true,
            ),
            ("totalFailures * 100 / requests >= 50", false),
            ("consecutiveFailures > 5", false),
        ] {
            let t = TripCondition::compile(expr).unwrap();
            assert_eq!(t.should_trip(&counts), expected, "{expr}");
        }
        assert!(!TripCondition::default_condition().should_trip(&counts));
    }

    #[test]
    fn invalid_trip_expressions_are_rejected() {
        for (expr, needle) in [
            ("consecutiveFailures >", "invalid trip expression"),
            ("", "empty"),
            ("consecutiveFailures + 1", "boolean"),
            ("failures > 3", "unknown variable 'failures'"),
            ("'a' > 3", "invalid trip expression"),
        ] {
            let err = TripCondition::compile(expr).unwrap_err();
            assert!(err.to_string().contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn data_dependent_errors_do_not_trip() {
        let t = TripCondition::compile("totalFailures / (requests - 1) > 1").unwrap();
        let counts = BreakerCounts {
            requests: 1,
            total_failures: 9,
            ..BreakerCounts::default()
        };
        assert!(!t.should_trip(&counts), "division by zero never trips");
    }

    fn _assert_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<CircuitBreaker>();
        check::<TripCondition>();
    }
}
