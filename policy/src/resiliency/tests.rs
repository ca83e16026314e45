//! Registry resolution and runner behaviour, driven by Resiliency YAML.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr_crds::{Resiliency, parse_documents};
use tokio::time::Instant;

use super::*;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum TestError {
    #[error("http {0}")]
    Http(u16),
    #[error("grpc {0}")]
    Grpc(i32),
    #[error("plain failure")]
    Plain,
    #[error("permanent failure")]
    Permanent,
}

impl RetryableError for TestError {
    fn http_status(&self) -> Option<u16> {
        match self {
            TestError::Http(s) => Some(*s),
            _ => None,
        }
    }
    fn grpc_code(&self) -> Option<i32> {
        match self {
            TestError::Grpc(c) => Some(*c),
            _ => None,
        }
    }
    fn is_permanent(&self) -> bool {
        matches!(self, TestError::Permanent)
    }
}

fn resources(yaml: &str) -> Vec<Resiliency> {
    let docs = parse_documents(yaml).unwrap();
    dapr_crds::resiliencies(&docs)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn registry(app_id: &str, yaml: &str) -> ResiliencyRegistry {
    ResiliencyRegistry::new(app_id, &resources(yaml))
        .unwrap()
        .with_random(RandomSource::fixed(0.5))
}

/// Runs `policy` with an operation that fails with `errors` in turn, then
/// succeeds; returns the result, the attempt count and the attempt start times.
async fn run_with(
    policy: &Policy,
    errors: Vec<TestError>,
) -> (Result<u32, PolicyError<TestError>>, u32, Vec<Duration>) {
    let start = Instant::now();
    let calls = AtomicU32::new(0);
    let times = Mutex::new(Vec::new());
    let errors = Mutex::new(errors.into_iter());
    let result = policy
        .execute(|attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            times.lock().unwrap().push(start.elapsed());
            let next = errors.lock().unwrap().next();
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok(attempt),
                }
            }
        })
        .await;
    (
        result,
        calls.load(Ordering::SeqCst),
        times.into_inner().unwrap(),
    )
}

const APP_YAML: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: checkout-resiliency
  namespace: default
scopes: [checkout]
spec:
  policies:
    timeouts:
      general: 5s
      fast: 1s
      numeric: 250
    retries:
      threeTimes:
        policy: constant
        duration: 1s
        maxRetries: 3
      forever:
        policy: constant
        duration: 100ms
        maxRetries: -1
      backoff:
        policy: exponential
        maxInterval: 2s
        maxRetries: 6
      serverErrors:
        policy: constant
        duration: 1s
        maxRetries: 5
        matching:
          httpStatusCodes: 500,502-504
          gRPCStatusCodes: 1-4
    circuitBreakers:
      sharedCB:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 3
      totalCB:
        maxRequests: 2
        interval: 10s
        timeout: 15s
        trip: totalFailures > 3
  targets:
    apps:
      orders:
        timeout: fast
        retry: threeTimes
        circuitBreaker: sharedCB
        circuitBreakerCacheSize: 2
      plain:
        retry: threeTimes
      slow:
        timeout: fast
        retry: threeTimes
      payments:
        retry: serverErrors
      inventory:
        retry: backoff
      audit:
        retry: forever
        circuitBreaker: totalCB
    actors:
      Cart:
        timeout: general
        retry: threeTimes
        circuitBreaker: sharedCB
        circuitBreakerScope: id
        circuitBreakerCacheSize: 2
      Ledger:
        retry: threeTimes
        circuitBreaker: sharedCB
        circuitBreakerScope: type
    components:
      statestore:
        outbound:
          timeout: general
          retry: threeTimes
          circuitBreaker: sharedCB
      orderspubsub:
        inbound:
          timeout: numeric
          retry: forever
"#;

#[test]
fn loads_and_resolves_targets() {
    let r = registry("checkout", APP_YAML);
    assert_eq!(
        r.timeout("numeric"),
        Some(Duration::from_millis(250)),
        "bare int is ms"
    );
    let orders = r.policy_for_app("orders");
    assert_eq!(orders.timeout(), Some(Duration::from_secs(1)));
    assert_eq!(orders.retry().unwrap().max_retries, Some(3));
    assert_eq!(
        orders
            .circuit_breaker()
            .unwrap()
            .settings()
            .trip
            .expression(),
        "consecutiveFailures >= 3"
    );
    assert_eq!(orders.name(), "endpoint[orders, orders]");

    let payments = r.policy_for_app("payments");
    assert!(payments.timeout().is_none() && payments.circuit_breaker().is_none());
    assert!(payments.has_retries());

    let store = r.policy_for_component("statestore", Direction::Outbound);
    assert_eq!(store.timeout(), Some(Duration::from_secs(5)));
    assert!(store.circuit_breaker().is_some());
    let store_in = r.policy_for_component("statestore", Direction::Inbound);
    assert!(
        store_in.is_noop(),
        "a target without inbound names gets no defaults"
    );
    let sub = r.policy_for_component("orderspubsub", Direction::Inbound);
    assert_eq!(sub.timeout(), Some(Duration::from_millis(250)));
    assert_eq!(sub.retry().unwrap().max_retries, None);

    assert!(r.app_policy_defined("orders") && !r.app_policy_defined("nobody"));
    assert!(r.actor_policy_defined("Cart"));
    assert!(r.component_policy_defined("statestore"));
    assert!(r.policy_for_app("nobody").is_noop());
}

#[test]
fn scopes_limit_resources_to_listed_apps() {
    let r = registry("other-app", APP_YAML);
    assert!(r.policy_for_app("orders").is_noop());
    assert!(r.timeout("general").is_none());
    // Built-ins are always there.
    assert!(r.retry(BuiltInPolicy::ServiceRetries.name()).is_some());
}

#[tokio::test(start_paused = true)]
async fn constant_retries_count_and_spacing() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("plain");
    let (result, calls, times) = run_with(&policy, vec![TestError::Plain; 10]).await;
    assert_eq!(
        result.unwrap_err(),
        PolicyError::Operation(TestError::Plain)
    );
    assert_eq!(calls, 4, "first attempt + maxRetries 3");
    let secs: Vec<u64> = times.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![0, 1, 2, 3]);

    // Recovers when an attempt succeeds; the attempt number is passed along.
    let r = registry("checkout", APP_YAML);
    let (result, calls, _) = run_with(&r.policy_for_app("plain"), vec![TestError::Plain; 2]).await;
    assert_eq!(result.unwrap(), 3);
    assert_eq!(calls, 3);
}

#[tokio::test(start_paused = true)]
async fn max_retries_minus_one_retries_until_success() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_component("orderspubsub", Direction::Inbound);
    let (result, calls, times) = run_with(&policy, vec![TestError::Plain; 40]).await;
    assert_eq!(result.unwrap(), 41);
    assert_eq!(calls, 41);
    assert_eq!(
        times.last().copied(),
        Some(Duration::from_secs(4)),
        "40 × 100ms"
    );
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_timing() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("inventory");
    let (result, calls, times) = run_with(&policy, vec![TestError::Plain; 10]).await;
    assert!(result.is_err());
    assert_eq!(calls, 7, "maxRetries 6");
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // 500ms × 1.5 per retry, capped at maxInterval 2s (jitter pinned to the
    // middle); tokio's timer rounds 1687.5ms up to the next millisecond.
    assert_eq!(gaps, vec![500, 750, 1125, 1688, 2000, 2000]);
}

#[tokio::test(start_paused = true)]
async fn exponential_jitter_with_default_random() {
    let r = ResiliencyRegistry::new("checkout", &resources(APP_YAML)).unwrap();
    let policy = r.policy_for_app("inventory");
    let (_, _, times) = run_with(&policy, vec![TestError::Plain; 2]).await;
    let first = times[1] - times[0];
    assert!(
        first >= Duration::from_millis(250) && first <= Duration::from_millis(750),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn matching_decides_which_codes_are_retried() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("payments");
    for (err, retried) in [
        (TestError::Http(500), true),
        (TestError::Http(503), true),
        (TestError::Http(501), false),
        (TestError::Http(404), false),
        (TestError::Grpc(2), true),
        (TestError::Grpc(14), false),
        (TestError::Plain, true),
        (TestError::Permanent, false),
    ] {
        let (result, calls, _) = run_with(&policy, vec![err.clone()]).await;
        if retried {
            assert_eq!((result.unwrap(), calls), (2, 2), "{err:?}");
        } else {
            assert_eq!(result.unwrap_err(), PolicyError::Operation(err.clone()));
            assert_eq!(calls, 1, "{err:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_matching_every_error_is_retried() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("plain");
    for err in [
        TestError::Http(404),
        TestError::Http(500),
        TestError::Grpc(5),
        TestError::Plain,
    ] {
        let (result, calls, _) = run_with(&policy, vec![err.clone()]).await;
        assert_eq!((result.unwrap(), calls), (2, 2), "{err:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_applies_per_attempt() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("slow");
    let start = Instant::now();
    let calls = AtomicU32::new(0);
    let result: Result<(), _> = policy
        .execute(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, TestError>(())
            }
        })
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(calls.load(Ordering::SeqCst), 4, "timeouts are retried");
    // 4 attempts × 1s timeout + 3 × 1s back-off.
    assert_eq!(start.elapsed(), Duration::from_secs(7));

    // An attempt that finishes within the timeout succeeds.
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("slow");
    let result = policy
        .execute(|attempt| async move {
            let d = if attempt < 3 { 5000 } else { 900 };
            tokio::time::sleep(Duration::from_millis(d)).await;
            Ok::<_, TestError>(attempt)
        })
        .await;
    assert_eq!(result.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_stops_retries_and_recovers() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_endpoint("orders", "orders:create");
    // sharedCB trips at 3 consecutive failures: attempts 1-3 fail, then the
    // open breaker ends the retries before the 4th attempt.
    let (result, calls, _) = run_with(&policy, vec![TestError::Plain; 10]).await;
    let err = result.unwrap_err();
    assert!(err.is_circuit_breaker(), "{err:?}");
    assert_eq!(err.to_string(), "circuit breaker is open");
    assert_eq!(calls, 3);

    let breaker = Arc::clone(policy.circuit_breaker().unwrap());
    assert_eq!(breaker.state(), BreakerState::Open);
    let (result, calls, _) = run_with(&policy, vec![]).await;
    assert!(matches!(
        result,
        Err(PolicyError::CircuitBreakerOpen { .. })
    ));
    assert_eq!(calls, 0, "an open breaker doesn't call the operation");

    // The same endpoint resolves to the same breaker instance.
    let again = r.policy_for_endpoint("orders", "orders:create");
    assert!(Arc::ptr_eq(again.circuit_breaker().unwrap(), &breaker));
    // Another endpoint has its own.
    let other = r.policy_for_endpoint("orders", "orders:list");
    assert_eq!(
        other.circuit_breaker().unwrap().state(),
        BreakerState::Closed
    );

    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let (result, calls, _) = run_with(&policy, vec![]).await;
    assert_eq!((result.unwrap(), calls), (1, 1));
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "maxRequests 1 success closes"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_through_runner() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_endpoint("orders", "e");
    let (result, _, _) = run_with(&policy, vec![TestError::Plain; 3]).await;
    assert!(result.unwrap_err().is_circuit_breaker());
    tokio::time::advance(Duration::from_secs(30)).await;
    // Half-open: the trial attempt fails and the breaker opens again, which
    // also ends the retries.
    let (result, calls, _) = run_with(&policy, vec![TestError::Plain; 3]).await;
    assert!(result.unwrap_err().is_circuit_breaker());
    assert_eq!(calls, 1);
    assert_eq!(
        policy.circuit_breaker().unwrap().state(),
        BreakerState::Open
    );
}

#[tokio::test(start_paused = true)]
async fn total_failures_trip_expression() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("audit");
    let breaker = Arc::clone(policy.circuit_breaker().unwrap());
    // Failures interleaved with successes: consecutive never exceeds 1, but
    // the 4th failure in total trips `totalFailures > 3`.
    for _ in 0..3 {
        let (result, _, _) = run_with(&policy, vec![TestError::Plain]).await;
        assert!(result.is_ok());
    }
    assert_eq!(breaker.counts().total_failures, 3);
    assert_eq!(breaker.state(), BreakerState::Closed);
    let (result, calls, _) = run_with(&policy, vec![TestError::Plain]).await;
    assert!(result.unwrap_err().is_circuit_breaker());
    assert_eq!(calls, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn interval_resets_closed_counts() {
    let r = registry("checkout", APP_YAML);
    let policy = r.policy_for_app("audit");
    let breaker = Arc::clone(policy.circuit_breaker().unwrap());
    for _ in 0..3 {
        let (result, _, _) = run_with(&policy, vec![TestError::Plain]).await;
        assert!(result.is_ok());
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        breaker.counts().total_failures,
        0,
        "interval 10s cleared counts"
    );
    let (result, _, _) = run_with(&policy, vec![TestError::Plain]).await;
    assert!(result.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn invalid_trip_expression_is_rejected_at_load() {
    let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: broken
spec:
  policies:
    circuitBreakers:
      bad:
        trip: "consecutiveFailures >>> 5"
"#;
    let err = ResiliencyRegistry::new("app", &resources(yaml)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("broken") && msg.contains("spec.policies.circuitBreakers.bad.trip"),
        "{msg}"
    );
    assert!(msg.contains("consecutiveFailures >>> 5"), "{msg}");

    let yaml = yaml.replace("consecutiveFailures >>> 5", "failures > 5");
    let err = ResiliencyRegistry::new("app", &resources(&yaml)).unwrap_err();
    assert!(
        err.to_string().contains("unknown variable 'failures'"),
        "{err}"
    );
}

#[test]
fn invalid_fields_name_the_field() {
    for (policies, field) in [
        ("timeouts:\n      t: soon", "spec.policies.timeouts.t"),
        ("timeouts:\n      t: -5", "spec.policies.timeouts.t"),
        (
            "retries:\n      r:\n        policy: linear",
            "spec.policies.retries.r.policy",
        ),
        (
            "retries:\n      r:\n        duration: 5x",
            "spec.policies.retries.r.duration",
        ),
        (
            "retries:\n      r:\n        policy: exponential\n        maxInterval: x",
            "spec.policies.retries.r.maxInterval",
        ),
        (
            "retries:\n      r:\n        matching:\n          httpStatusCodes: 500-600",
            "spec.policies.retries.r.matching",
        ),
        (
            "circuitBreakers:\n      c:\n        timeout: later",
            "spec.policies.circuitBreakers.c.timeout",
        ),
    ] {
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r1\nspec:\n  policies:\n    {policies}\n"
        );
        let err = ResiliencyRegistry::new("app", &resources(&yaml)).unwrap_err();
        match &err {
            ResiliencyError::Invalid {
                resource, field: f, ..
            } => {
                assert_eq!((resource.as_str(), f.as_str()), ("r1", field), "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn actor_breaker_scope_is_required_and_validated() {
    let base = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: a\nspec:\n  policies:\n    circuitBreakers:\n      cb: {}\n  targets:\n    actors:\n      T:\n        circuitBreaker: cb\n";
    let err = ResiliencyRegistry::new("app", &resources(base)).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.targets.actors.T.circuitBreakerScope"),
        "{err}"
    );
    let bad = format!("{base}        circuitBreakerScope: everything\n");
    let err = ResiliencyRegistry::new("app", &resources(&bad)).unwrap_err();
    assert!(err.to_string().contains("everything"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn actor_breakers_follow_scope_and_lock_phases() {
    let r = registry("checkout", APP_YAML);
    // Cart: scope id → one breaker per actor id.
    let a = r.actor_pre_lock_policy("Cart", "a");
    let b = r.actor_pre_lock_policy("Cart", "b");
    let (ba, bb) = (a.circuit_breaker().unwrap(), b.circuit_breaker().unwrap());
    assert!(!Arc::ptr_eq(ba, bb));
    assert_eq!(ba.name(), "Cart-a");
    // Ledger: scope type → shared.
    let x = r.actor_pre_lock_policy("Ledger", "x");
    let y = r.actor_pre_lock_policy("Ledger", "y");
    assert!(Arc::ptr_eq(
        x.circuit_breaker().unwrap(),
        y.circuit_breaker().unwrap()
    ));

    // Pre-lock: retry + breaker; post-lock: timeout; combined: all three.
    assert!(a.timeout().is_none() && a.retry().is_some());
    let post = r.actor_post_lock_policy("Cart", "a");
    assert_eq!(post.timeout(), Some(Duration::from_secs(5)));
    assert!(post.retry().is_none() && post.circuit_breaker().is_none());
    let all = r.policy_for_actor("Cart", "a");
    assert!(all.timeout().is_some() && all.retry().is_some());
    assert!(Arc::ptr_eq(all.circuit_breaker().unwrap(), ba));
}

#[test]
fn breaker_caches_are_bounded_lru() {
    let r = registry("checkout", APP_YAML);
    // orders: circuitBreakerCacheSize 2.
    let first = Arc::clone(
        r.policy_for_endpoint("orders", "e1")
            .circuit_breaker()
            .unwrap(),
    );
    r.policy_for_endpoint("orders", "e2");
    r.policy_for_endpoint("orders", "e1"); // e1 is now most recent
    r.policy_for_endpoint("orders", "e3"); // evicts e2
    assert_eq!(r.app_breaker_count("orders"), 2);
    let e1 = r.policy_for_endpoint("orders", "e1");
    assert!(
        Arc::ptr_eq(e1.circuit_breaker().unwrap(), &first),
        "e1 kept"
    );
    r.policy_for_endpoint("orders", "e2"); // recreated, evicts e3
    assert_eq!(r.app_breaker_count("orders"), 2);

    // Cart actors: cache size 2, keyed per id.
    for id in ["a", "b", "c", "d"] {
        r.actor_pre_lock_policy("Cart", id);
    }
    assert_eq!(r.actor_breaker_count("Cart"), 2);
}

#[tokio::test(start_paused = true)]
async fn evicted_breaker_starts_closed() {
    let r = registry("checkout", APP_YAML);
    let p = r.policy_for_endpoint("orders", "e1");
    let (result, _, _) = run_with(&p, vec![TestError::Plain; 3]).await;
    assert!(result.unwrap_err().is_circuit_breaker());
    r.policy_for_endpoint("orders", "e2");
    r.policy_for_endpoint("orders", "e3");
    let fresh = r.policy_for_endpoint("orders", "e1");
    assert_eq!(
        fresh.circuit_breaker().unwrap().state(),
        BreakerState::Closed
    );
}

#[test]
fn component_breakers_are_per_name_and_direction() {
    let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: c
spec:
  policies:
    circuitBreakers:
      cb: {}
  targets:
    components:
      kafka:
        inbound: {circuitBreaker: cb}
        outbound: {circuitBreaker: cb}
"#;
    let r = registry("app", yaml);
    let out1 = r.policy_for_component("kafka", Direction::Outbound);
    let out2 = r.policy_for_component("kafka", Direction::Outbound);
    let inb = r.policy_for_component("kafka", Direction::Inbound);
    assert!(Arc::ptr_eq(
        out1.circuit_breaker().unwrap(),
        out2.circuit_breaker().unwrap()
    ));
    assert!(!Arc::ptr_eq(
        out1.circuit_breaker().unwrap(),
        inb.circuit_breaker().unwrap()
    ));
    assert_eq!(out1.circuit_breaker().unwrap().name(), "cb-kafka");
    let s = out1.circuit_breaker().unwrap().settings();
    assert_eq!(
        (s.max_requests, s.interval, s.timeout, s.trip.expression()),
        (
            1,
            Duration::ZERO,
            Duration::from_secs(60),
            "consecutiveFailures > 5"
        ),
        "breaker defaults"
    );
}

const DEFAULTS_YAML: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: defaults
spec:
  policies:
    timeouts:
      DefaultTimeoutPolicy: 10s
      DefaultComponentTimeoutPolicy: 9s
      DefaultComponentOutboundTimeoutPolicy: 8s
      DefaultStatestoreComponentOutboundTimeoutPolicy: 7s
      DefaultAppTimeoutPolicy: 6s
    retries:
      DefaultRetryPolicy:
        maxRetries: 1
      DefaultComponentInboundRetryPolicy:
        maxRetries: 2
      DefaultActorRetryPolicy:
        maxRetries: 4
    circuitBreakers:
      DefaultPubsubComponentInboundCircuitBreakerPolicy:
        trip: consecutiveFailures > 1
      DefaultCircuitBreakerPolicy:
        trip: consecutiveFailures > 9
  targets:
    components:
      explicit:
        outbound:
          retry: DefaultRetryPolicy
"#;

#[test]
fn default_policy_resolution_order() {
    let r = registry("app", DEFAULTS_YAML);
    let secs = |p: &Policy| p.timeout().map(|t| t.as_secs());
    let retries = |p: &Policy| p.retry().and_then(|r| r.max_retries);
    let trip = |p: &Policy| {
        p.circuit_breaker()
            .map(|b| b.settings().trip.expression().to_owned())
    };

    // Components: <Kind>Component<Dir> > Component<Dir> > Component > top level,
    // resolved separately for timeout, retry and breaker.
    let state_out =
        r.policy_for_component_kind("redis", ComponentKind::Statestore, Direction::Outbound);
    assert_eq!(secs(&state_out), Some(7));
    assert_eq!(retries(&state_out), Some(1));
    assert_eq!(trip(&state_out).as_deref(), Some("consecutiveFailures > 9"));

    let binding_out =
        r.policy_for_component_kind("smtp", ComponentKind::Binding, Direction::Outbound);
    assert_eq!(secs(&binding_out), Some(8));

    let pubsub_in = r.policy_for_component_kind("kafka", ComponentKind::Pubsub, Direction::Inbound);
    assert_eq!(secs(&pubsub_in), Some(9));
    assert_eq!(retries(&pubsub_in), Some(2));
    assert_eq!(trip(&pubsub_in).as_deref(), Some("consecutiveFailures > 1"));

    let unknown_kind = r.policy_for_component("x", Direction::Outbound);
    assert_eq!(secs(&unknown_kind), Some(8));

    // A named target gets only what it names, no defaults.
    let explicit = r.policy_for_component("explicit", Direction::Outbound);
    assert_eq!((secs(&explicit), retries(&explicit)), (None, Some(1)));
    assert!(explicit.circuit_breaker().is_none());

    // Apps: DefaultApp*Policy > Default*Policy.
    let app = r.policy_for_app("anyone");
    assert_eq!((secs(&app), retries(&app)), (Some(6), Some(1)));
    assert_eq!(trip(&app).as_deref(), Some("consecutiveFailures > 9"));

    // Actors: DefaultActor*Policy > Default*Policy; timeout only after the lock.
    let actor = r.policy_for_actor("T", "1");
    assert_eq!((secs(&actor), retries(&actor)), (Some(10), Some(4)));
    let pre = r.actor_pre_lock_policy("T", "1");
    let other = r.actor_pre_lock_policy("T", "2");
    assert!(pre.timeout().is_none());
    assert!(
        Arc::ptr_eq(
            pre.circuit_breaker().unwrap(),
            other.circuit_breaker().unwrap()
        ),
        "default actor breakers are per type"
    );
    assert_eq!(pre.circuit_breaker().unwrap().name(), "T");
}

#[test]
fn no_defaults_no_policy() {
    let r = ResiliencyRegistry::empty("app");
    assert!(r.policy_for_app("a").is_noop());
    assert!(r.policy_for_actor("T", "1").is_noop());
    assert!(
        r.policy_for_component_kind("s", ComponentKind::Statestore, Direction::Outbound)
            .is_noop()
    );
}

#[test]
fn builtin_policies_and_overrides() {
    let r = ResiliencyRegistry::default();
    let service = r.builtin_policy(BuiltInPolicy::ServiceRetries);
    assert_eq!(
        service.retry().unwrap(),
        &RetryPolicy::constant(Duration::from_secs(1), Some(3))
    );
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ActorRetries)
            .retry()
            .unwrap(),
        &RetryPolicy::constant(Duration::from_secs(1), Some(3))
    );
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ActorNotFoundRetries)
            .retry()
            .unwrap(),
        &RetryPolicy::constant(Duration::from_secs(1), Some(5))
    );
    let reminder = r.builtin_policy(BuiltInPolicy::ActorReminderRetries);
    let Backoff::Exponential(e) = &reminder.retry().unwrap().backoff else {
        panic!("reminder retries are exponential");
    };
    assert_eq!(e.max_interval, Duration::from_secs(60));
    assert_eq!(e.max_elapsed_time, Some(Duration::from_secs(900)));
    assert_eq!(reminder.retry().unwrap().max_retries, None);
    let init = r.builtin_policy(BuiltInPolicy::InitializationRetries);
    let Backoff::Exponential(e) = &init.retry().unwrap().backoff else {
        panic!("initialization retries are exponential");
    };
    assert_eq!(
        (e.max_interval, e.max_elapsed_time),
        (Duration::from_secs(1), Some(Duration::from_secs(10)))
    );
    assert_eq!(init.retry().unwrap().max_retries, Some(3));

    let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: overrides
spec:
  policies:
    retries:
      DaprBuiltInServiceRetries:
        policy: constant
        duration: 2s
        maxRetries: 1
      DaprBuiltInActorRetries:
        duration: 3s
        maxRetries: 10
      DaprBuiltInActorNotFoundRetries:
        maxRetries: 50
      DaprBuiltInActorReminderRetries:
        maxRetries: -1
"#;
    let r = registry("app", yaml);
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ServiceRetries)
            .retry()
            .unwrap(),
        &RetryPolicy::constant(Duration::from_secs(2), Some(3)),
        "raised to the minimum of 3"
    );
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ActorRetries)
            .retry()
            .unwrap(),
        &RetryPolicy::constant(Duration::from_secs(3), Some(10))
    );
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ActorNotFoundRetries)
            .retry()
            .unwrap()
            .max_retries,
        Some(5),
        "protected"
    );
    assert_eq!(
        r.builtin_policy(BuiltInPolicy::ActorReminderRetries)
            .retry()
            .unwrap()
            .max_retries,
        Some(3),
        "forever is below the minimum too, as in Dapr"
    );
}

#[tokio::test(start_paused = true)]
async fn builtin_service_retries_run_one_second_apart() {
    let r = ResiliencyRegistry::default();
    let policy = r.builtin_policy(BuiltInPolicy::ServiceRetries);
    let (result, calls, times) = run_with(&policy, vec![TestError::Grpc(14); 9]).await;
    assert!(result.is_err());
    assert_eq!(calls, 4);
    assert_eq!(times.last().copied(), Some(Duration::from_secs(3)));
}

#[test]
fn later_resources_override_earlier_names() {
    let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: first
spec:
  policies:
    timeouts:
      t: 1s
      keep: 2s
  targets:
    apps:
      a: {timeout: t}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: second
spec:
  policies:
    timeouts:
      t: 3s
"#;
    let r = registry("app", yaml);
    assert_eq!(r.timeout("t"), Some(Duration::from_secs(3)));
    assert_eq!(r.timeout("keep"), Some(Duration::from_secs(2)));
    assert_eq!(
        r.policy_for_app("a").timeout(),
        Some(Duration::from_secs(3)),
        "targets resolve names across resources"
    );
}

#[test]
fn lenient_loading_skips_only_broken_resources() {
    let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: good
spec:
  policies:
    timeouts:
      t: 1s
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: bad
spec:
  policies:
    timeouts:
      u: 2s
    circuitBreakers:
      cb:
        trip: "requests >"
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: unparseable
spec:
  policies:
    retries:
      r:
        maxRetries: many
"#;
    let docs = parse_documents(yaml).unwrap();
    let (r, errors) = ResiliencyRegistry::from_resources("app", &docs);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.to_string().contains("'bad'")));
    assert!(errors.iter().any(|e| e.to_string().contains("unparseable")));
    assert_eq!(r.timeout("t"), Some(Duration::from_secs(1)));
    assert_eq!(r.timeout("u"), None, "a broken resource is skipped whole");
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl ResiliencyMetrics for Recorder {
    fn policy_loaded(&self, resource: &str, namespace: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("loaded {resource} {namespace}"));
    }
    fn policy_instantiated(&self, target: &PolicyTarget, direction: Direction, kind: PolicyKind) {
        self.0.lock().unwrap().push(format!(
            "instantiated {target} {} {}",
            direction.as_str(),
            kind.as_str()
        ));
    }
    fn policy_activated(&self, target: &PolicyTarget, _: Direction, kind: PolicyKind) {
        self.0
            .lock()
            .unwrap()
            .push(format!("activated {target} {}", kind.as_str()));
    }
    fn circuit_breaker_state(
        &self,
        target: &PolicyTarget,
        _: Direction,
        breaker: &str,
        state: BreakerState,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(format!("cb {target} {breaker} {state}"));
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_hooks_fire() {
    let recorder = Arc::new(Recorder::default());
    let mut registry = ResiliencyRegistry::empty("checkout")
        .with_metrics(recorder.clone())
        .with_random(RandomSource::fixed(0.5));
    for r in resources(APP_YAML) {
        assert!(registry.add(&r).unwrap());
    }
    let policy = registry.policy_for_endpoint("orders", "o:m");
    let _ = policy
        .execute(|_| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, TestError>(())
        })
        .await;
    let events = recorder.0.lock().unwrap().clone();
    for expected in [
        "loaded checkout-resiliency default",
        "instantiated app_orders outbound timeout",
        "instantiated app_orders outbound retry",
        "instantiated app_orders outbound circuitbreaker",
        "cb app_orders o:m closed",
        "activated app_orders timeout",
        "activated app_orders retry",
        "cb app_orders o:m open",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected} in {events:?}"
        );
    }
    let component = registry.policy_for_component_kind(
        "statestore",
        ComponentKind::Statestore,
        Direction::Outbound,
    );
    drop(component);
    let events = recorder.0.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e == "instantiated component_statestore_Statestore outbound timeout"),
        "{events:?}"
    );
}

#[test]
fn component_kinds_from_types() {
    assert_eq!(
        ComponentKind::from_component_type("state.redis"),
        Some(ComponentKind::Statestore)
    );
    assert_eq!(
        ComponentKind::from_component_type("bindings.kafka"),
        Some(ComponentKind::Binding)
    );
    assert_eq!(
        ComponentKind::from_component_type("secretstores.local.file"),
        Some(ComponentKind::Secretstore)
    );
    assert_eq!(
        ComponentKind::from_component_type("pubsub.in-memory"),
        Some(ComponentKind::Pubsub)
    );
    assert_eq!(
        ComponentKind::from_component_type("middleware.http.x"),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn noop_policy_runs_once() {
    let policy = Policy::none("plain");
    let (result, calls, _) = run_with(&policy, vec![TestError::Plain]).await;
    assert_eq!(
        result.unwrap_err(),
        PolicyError::Operation(TestError::Plain)
    );
    assert_eq!(calls, 1);
    assert!(!policy.has_retries());
    let zero = Policy::none("z").with_retry(Some(Arc::new(RetryPolicy::constant(
        Duration::from_secs(1),
        Some(0),
    ))));
    assert!(!zero.has_retries());
}

#[tokio::test(start_paused = true)]
async fn cancelled_execution_counts_as_breaker_failure() {
    let mut settings = BreakerSettings::new("cb");
    settings.trip = TripCondition::compile("consecutiveFailures >= 1").unwrap();
    let breaker = Arc::new(CircuitBreaker::new("cb", Arc::new(settings)));
    let policy = Policy::none("p").with_circuit_breaker(Some(Arc::clone(&breaker)));
    let fut = policy.execute(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, TestError>(())
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test]
async fn execute_future_is_send() {
    let policy = registry("checkout", APP_YAML).policy_for_app("orders");
    let handle = tokio::spawn(async move {
        policy
            .execute(|attempt| async move { Ok::<_, TestError>(attempt) })
            .await
    });
    assert_eq!(handle.await.unwrap(), Ok(1));
}
