//! Retry policies: back-off schedules and which errors are retried.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Delay between attempts of a constant policy when `duration` is not given.
pub const DEFAULT_CONSTANT_DURATION: Duration = Duration::from_secs(5);
/// First delay of an exponential policy.
pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_millis(500);
/// Growth of the delay between attempts of an exponential policy.
pub const DEFAULT_MULTIPLIER: f64 = 1.5;
/// Each exponential delay is drawn from `[d·(1-f), d·(1+f)]`.
pub const DEFAULT_RANDOMIZATION_FACTOR: f64 = 0.5;
/// Cap on the (un-randomized) exponential delay when `maxInterval` is not given.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// An exponential policy gives up once this much time has passed.
pub const DEFAULT_MAX_ELAPSED_TIME: Duration = Duration::from_secs(15 * 60);

/// Valid HTTP status codes for `matching.httpStatusCodes`.
pub const HTTP_STATUS_RANGE: RangeInclusive<u32> = 100..=599;
/// Valid gRPC codes for `matching.gRPCStatusCodes`.
pub const GRPC_CODE_RANGE: RangeInclusive<u32> = 0..=16;

/// What an operation's error tells the runner about retrying it.
///
/// Implement it on the error type of the operations you run through a
/// [`Policy`](super::Policy). Errors that report neither code are retried
/// whenever the policy has retries; coded errors are retried only if the
/// policy's `matching` block allows the code (no block: all valid codes).
pub trait RetryableError {
    /// The HTTP status of a failed call to an HTTP app or endpoint.
    fn http_status(&self) -> Option<u16> {
        None
    }
    /// The gRPC status code of a failed gRPC call.
    fn grpc_code(&self) -> Option<i32> {
        None
    }
    /// Never retry this error, whatever the policy says.
    fn is_permanent(&self) -> bool {
        false
    }
}

/// How long to wait between attempts.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same delay every time.
    Constant(Duration),
    /// Growing, randomized delays.
    Exponential(ExponentialBackoff),
}

/// Exponential back-off parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialBackoff {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
    /// Cap on the un-randomized interval; a randomized delay may exceed it by
    /// up to `randomization_factor`.
    pub max_interval: Duration,
    /// Stop retrying once this much time has passed since the first attempt.
    pub max_elapsed_time: Option<Duration>,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self {
            initial_interval: DEFAULT_INITIAL_INTERVAL,
            multiplier: DEFAULT_MULTIPLIER,
            randomization_factor: DEFAULT_RANDOMIZATION_FACTOR,
            max_interval: DEFAULT_MAX_INTERVAL,
            max_elapsed_time: Some(DEFAULT_MAX_ELAPSED_TIME),
        }
    }
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Retries after the first attempt; `None` retries until something else
    /// (max elapsed time, a permanent error, an open breaker) stops it.
    pub max_retries: Option<u64>,
    pub matching: StatusMatching,
}

impl RetryPolicy {
    /// A constant policy: `max_retries` retries, `interval` apart, retrying every error.
    pub fn constant(interval: Duration, max_retries: Option<u64>) -> Self {
        Self {
            backoff: Backoff::Constant(interval),
            max_retries,
            matching: StatusMatching::default(),
        }
    }

    /// An exponential policy with Dapr's fixed internals and the given cap.
    pub fn exponential(max_interval: Duration, max_retries: Option<u64>) -> Self {
        Self {
            backoff: Backoff::Exponential(ExponentialBackoff {
                max_interval,
                ..ExponentialBackoff::default()
            }),
            max_retries,
            matching: StatusMatching::default(),
        }
    }

    pub fn with_matching(mut self, matching: StatusMatching) -> Self {
        self.matching = matching;
        self
    }

    /// Whether `err` may be retried under this policy.
    pub fn should_retry<E: RetryableError + ?Sized>(&self, err: &E) -> bool {
        !err.is_permanent() && self.matching.allows(err)
    }

    pub(crate) fn schedule(&self, start: Instant) -> BackoffSchedule<'_> {
        let current = match &self.backoff {
            Backoff::Constant(d) => *d,
            Backoff::Exponential(e) => e.initial_interval,
        };
        BackoffSchedule {
            policy: self,
            start,
            retries: 0,
            current,
        }
    }
}

/// The delays of one execution of a retry policy.
pub(crate) struct BackoffSchedule<'a> {
    policy: &'a RetryPolicy,
    start: Instant,
    retries: u64,
    current: Duration,
}

impl BackoffSchedule<'_> {
    /// The delay before the next retry, or `None` when retries are exhausted.
    pub(crate) fn next_delay(&mut self, now: Instant, random: &RandomSource) -> Option<Duration> {
        if self
            .policy
            .max_retries
            .is_some_and(|max| self.retries >= max)
        {
            return None;
        }
        self.retries += 1;
        match &self.policy.backoff {
            Backoff::Constant(d) => Some(*d),
            Backoff::Exponential(e) => {
                let elapsed = now.saturating_duration_since(self.start);
                let delay = randomize(self.current, e.randomization_factor, random.next());
                // Grow the base interval for next time, never past the cap.
                let cap = e.max_interval.as_secs_f64();
                let grown = self.current.as_secs_f64() * e.multiplier;
                self.current = if e.multiplier <= 0.0 || grown >= cap {
                    e.max_interval
                } else {
                    Duration::from_secs_f64(grown)
                };
                match e.max_elapsed_time {
                    Some(max) if elapsed + delay > max => None,
                    _ => Some(delay),
                }
            }
        }
    }
}

/// A delay drawn uniformly from `[d·(1-f), d·(1+f)]`; `unit` is in `[0, 1)`.
fn randomize(interval: Duration, factor: f64, unit: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let base = interval.as_secs_f64();
    let delta = factor * base;
    let low = (base - delta).max(0.0);
    let high = base + delta;
    let secs = low + unit.clamp(0.0, 1.0) * (high - low);
    Duration::try_from_secs_f64(secs).unwrap_or(interval)
}

/// A source of uniform numbers in `[0, 1)` for back-off jitter.
#[derive(Clone)]
pub struct RandomSource(Arc<dyn Fn() -> f64 + Send + Sync>);

impl RandomSource {
    /// A fixed value: `0.5` removes jitter entirely. Meant for tests.
    pub fn fixed(value: f64) -> Self {
        Self(Arc::new(move || value))
    }

    pub fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn next(&self) -> f64 {
        (self.0)()
    }
}

impl Default for RandomSource {
    fn default() -> Self {
        Self(Arc::new(process_random))
    }
}

impl fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RandomSource")
    }
}

/// A splitmix64 stream seeded once per process from std's hasher keys.
/// Jitter needs spread, not unpredictability.
fn process_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish()
    });
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Which coded errors a retry policy retries (`matching` in the spec). A
/// missing list for a protocol retries every valid code of that protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusMatching {
    http: Option<Vec<RangeInclusive<u32>>>,
    grpc: Option<Vec<RangeInclusive<u32>>>,
}

/// A malformed `matching` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status code pattern '{pattern}': {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl StatusMatching {
    /// Parses `httpStatusCodes` / `gRPCStatusCodes` patterns such as
    /// `"500,502-504"`. Empty or absent patterns match every code.
    pub fn parse(http: Option<&str>, grpc: Option<&str>) -> Result<Self, PatternError> {
        Ok(Self {
            http: parse_patterns(http.unwrap_or(""), HTTP_STATUS_RANGE)?,
            grpc: parse_patterns(grpc.unwrap_or(""), GRPC_CODE_RANGE)?,
        })
    }

    /// Whether `err` passes the filter. HTTP status is consulted first, then
    /// the gRPC code; an error without either passes.
    pub fn allows<E: RetryableError + ?Sized>(&self, err: &E) -> bool {
        if let Some(status) = err.http_status() {
            return matches_code(u32::from(status), HTTP_STATUS_RANGE, self.http.as_deref());
        }
        if let Some(code) = err.grpc_code() {
            return u32::try_from(code)
                .is_ok_and(|c| matches_code(c, GRPC_CODE_RANGE, self.grpc.as_deref()));
        }
        true
    }

    pub fn http_ranges(&self) -> Option<&[RangeInclusive<u32>]> {
        self.http.as_deref()
    }

    pub fn grpc_ranges(&self) -> Option<&[RangeInclusive<u32>]> {
        self.grpc.as_deref()
    }
}

fn matches_code(
    code: u32,
    valid: RangeInclusive<u32>,
    allowed: Option<&[RangeInclusive<u32>]>,
) -> bool {
    if !valid.contains(&code) {
        return false;
    }
    match allowed {
        None => true,
        Some(ranges) => ranges.iter().any(|r| r.contains(&code)),
    }
}

fn parse_patterns(
    patterns: &str,
    valid: RangeInclusive<u32>,
) -> Result<Option<Vec<RangeInclusive<u32>>>, PatternError> {
    if patterns.trim().is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let err = |reason: String| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let mut parts = pattern.split('-');
        let (start, end) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), None, _) => (s, s),
            (Some(s), Some(e), None) => (s, e),
            _ => return Err(err("more than one '-'".to_owned())),
        };
        let parse = |s: &str, what: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| err(format!("{what} code '{s}' is not a number")))
        };
        let (start, end) = (parse(start, "start")?, parse(end, "end")?);
        for code in [start, end] {
            if !valid.contains(&code) {
                return Err(err(format!(
                    "code {code} is outside {}-{}",
                    valid.start(),
                    valid.end()
                )));
            }
        }
        if end < start {
            return Err(err("range start is greater than its end".to_owned()));
        }
        out.push(start..=end);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Http(u16);
    impl RetryableError for Http {
        fn http_status(&self) -> Option<u16> {
            Some(self.0)
        }
    }
    struct Grpc(i32);
    impl RetryableError for Grpc {
        fn grpc_code(&self) -> Option<i32> {
            Some(self.0)
        }
    }
    struct Plain;
    impl RetryableError for Plain {}
    struct Permanent;
    impl RetryableError for Permanent {
        fn is_permanent(&self) -> bool {
            true
        }
    }

    #[test]
    fn matching_status_ranges() {
        let m = StatusMatching::parse(Some("500,502-504"), Some("1-4")).unwrap();
        for code in [500, 502, 503, 504] {
            assert!(m.allows(&Http(code)), "{code}");
        }
        for code in [501, 505, 404, 200] {
            assert!(!m.allows(&Http(code)), "{code}");
        }
        for code in 1..=4 {
            assert!(m.allows(&Grpc(code)), "{code}");
        }
        for code in [0, 5, 14, -1, 17] {
            assert!(!m.allows(&Grpc(code)), "{code}");
        }
        assert!(m.allows(&Plain), "uncoded errors are always retried");
    }

    #[test]
    fn absent_lists_allow_every_valid_code() {
        let m = StatusMatching::parse(Some("503"), None).unwrap();
        assert!(m.allows(&Grpc(14)) && m.allows(&Grpc(0)));
        assert!(!m.allows(&Grpc(99)), "outside the gRPC range");
        assert!(!m.allows(&Http(500)));
        let all = StatusMatching::default();
        assert!(all.allows(&Http(404)) && all.allows(&Grpc(2)) && all.allows(&Plain));
        assert!(!all.allows(&Http(600)), "not a valid status");
    }

    #[test]
    fn empty_entries_are_ignored_and_whitespace_trimmed() {
        let m = StatusMatching::parse(Some("500,, 502 - 503 ,"), Some("")).unwrap();
        assert_eq!(m.http_ranges().unwrap(), &[500..=500, 502..=503]);
        assert!(m.grpc_ranges().is_none());
    }

    #[test]
    fn rejects_bad_patterns() {
        for (http, grpc) in [
            (Some("500-502-504"), None),
            (Some("abc"), None),
            (Some("99"), None),
            (Some("500-600"), None),
            (Some("504-500"), None),
            (None, Some("17")),
            (None, Some("-1")),
            (None, Some("4-1")),
        ] {
            assert!(
                StatusMatching::parse(http, grpc).is_err(),
                "{http:?} {grpc:?}"
            );
        }
        let err = StatusMatching::parse(Some("500-502-504"), None).unwrap_err();
        assert!(err.to_string().contains("500-502-504"), "{err}");
    }

    #[test]
    fn permanent_errors_are_never_retried() {
        let p = RetryPolicy::constant(Duration::from_secs(1), None);
        assert!(p.should_retry(&Plain));
        assert!(!p.should_retry(&Permanent));
    }

    #[test]
    fn constant_schedule_counts_retries() {
        let p = RetryPolicy::constant(Duration::from_secs(2), Some(3));
        let random = RandomSource::fixed(0.5);
        let now = Instant::now();
        let mut s = p.schedule(now);
        let delays: Vec<_> = std::iter::from_fn(|| s.next_delay(now, &random)).collect();
        assert_eq!(delays, vec![Duration::from_secs(2); 3]);

        let none = RetryPolicy::constant(Duration::from_secs(2), Some(0));
        assert_eq!(none.schedule(now).next_delay(now, &random), None);
    }

    #[test]
    fn exponential_schedule_grows_and_caps() {
        let p = RetryPolicy::exponential(Duration::from_secs(2), Some(8));
        let random = RandomSource::fixed(0.5);
        let now = Instant::now();
        let mut s = p.schedule(now);
        let ms: Vec<u128> = std::iter::from_fn(|| s.next_delay(now, &random))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, vec![500, 750, 1125, 1687, 2000, 2000, 2000, 2000]);
    }

    #[test]
    fn exponential_jitter_stays_within_factor() {
        let p = RetryPolicy::exponential(Duration::from_secs(60), Some(1));
        let now = Instant::now();
        let low = p
            .schedule(now)
            .next_delay(now, &RandomSource::fixed(0.0))
            .unwrap();
        let high = p
            .schedule(now)
            .next_delay(now, &RandomSource::fixed(0.999_999))
            .unwrap();
        assert_eq!(low, Duration::from_millis(250));
        assert!(high > Duration::from_millis(749) && high <= Duration::from_millis(750));
        let random = RandomSource::default();
        for _ in 0..200 {
            let d = p.schedule(now).next_delay(now, &random).unwrap();
            assert!(
                (Duration::from_millis(250)..=Duration::from_millis(750)).contains(&d),
                "{d:?}"
            );
        }
    }

    #[test]
    fn exponential_stops_after_max_elapsed_time() {
        let p = RetryPolicy::exponential(Duration::from_secs(60), None);
        let random = RandomSource::fixed(0.5);
        let start = Instant::now();
        let mut s = p.schedule(start);
        assert!(s.next_delay(start, &random).is_some());
        let late = start + DEFAULT_MAX_ELAPSED_TIME;
        assert_eq!(s.next_delay(late, &random), None);
    }
}
