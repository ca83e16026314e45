//! Resolving Resiliency resources into per-target [`Policy`] values.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dapr_components::duration::{DurationError, parse_go_duration};
use dapr_crds::{
    CircuitBreakerPolicySpec, PolicyNames, Resiliency, ResiliencyParseError, Resource,
    RetryPolicySpec,
};

use super::breaker::{BreakerSettings, CircuitBreaker, DEFAULT_BREAKER_TIMEOUT, TripCondition};
use super::lru::LruCache;
use super::metrics::{Direction, NoopMetrics, PolicyKind, PolicyTarget, ResiliencyMetrics};
use super::policy::Policy;
use super::retry::{
    Backoff, DEFAULT_CONSTANT_DURATION, DEFAULT_MAX_INTERVAL, ExponentialBackoff, RandomSource,
    RetryPolicy, StatusMatching,
};

/// Breakers kept per app (one per endpoint) unless the target sets a size.
pub const DEFAULT_APP_BREAKER_CACHE_SIZE: usize = 100;
/// Breakers kept per actor type unless the target sets a size.
pub const DEFAULT_ACTOR_BREAKER_CACHE_SIZE: usize = 5000;

/// A Resiliency resource that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResiliencyError {
    #[error(transparent)]
    Parse(#[from] ResiliencyParseError),
    #[error("invalid Resiliency '{resource}': {field}: {reason}")]
    Invalid {
        resource: String,
        /// Path of the offending field, e.g. `spec.policies.retries.fast.duration`.
        field: String,
        reason: String,
    },
}

/// Retry policies daprd uses for its own internal retries. Each can be
/// redefined under `spec.policies.retries` by name, except
/// `DaprBuiltInActorNotFoundRetries`; redefinitions keep at least 3 retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltInPolicy {
    /// Service invocation to another daprd, when no app policy targets it.
    ServiceRetries,
    ActorRetries,
    ActorReminderRetries,
    /// Protected: cannot be redefined.
    ActorNotFoundRetries,
    InitializationRetries,
}

impl BuiltInPolicy {
    pub const ALL: [BuiltInPolicy; 5] = [
        BuiltInPolicy::ServiceRetries,
        BuiltInPolicy::ActorRetries,
        BuiltInPolicy::ActorReminderRetries,
        BuiltInPolicy::ActorNotFoundRetries,
        BuiltInPolicy::InitializationRetries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltInPolicy::ServiceRetries => "DaprBuiltInServiceRetries",
            BuiltInPolicy::ActorRetries => "DaprBuiltInActorRetries",
            BuiltInPolicy::ActorReminderRetries => "DaprBuiltInActorReminderRetries",
            BuiltInPolicy::ActorNotFoundRetries => "DaprBuiltInActorNotFoundRetries",
            BuiltInPolicy::InitializationRetries => "DaprBuiltInInitializationRetries",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    fn is_protected(self) -> bool {
        self == BuiltInPolicy::ActorNotFoundRetries
    }

    /// The policy as daprd defines it.
    pub fn default_policy(self) -> RetryPolicy {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        match self {
            BuiltInPolicy::ServiceRetries | BuiltInPolicy::ActorRetries => {
                RetryPolicy::constant(secs(1), Some(3))
            }
            BuiltInPolicy::ActorNotFoundRetries => RetryPolicy::constant(secs(1), Some(5)),
            BuiltInPolicy::ActorReminderRetries => RetryPolicy {
                backoff: Backoff::Exponential(ExponentialBackoff {
                    initial_interval: ms(500),
                    multiplier: 1.5,
                    randomization_factor: 0.5,
                    max_interval: secs(60),
                    max_elapsed_time: Some(secs(15 * 60)),
                }),
                max_retries: None,
                matching: StatusMatching::default(),
            },
            BuiltInPolicy::InitializationRetries => RetryPolicy {
                backoff: Backoff::Exponential(ExponentialBackoff {
                    initial_interval: ms(500),
                    multiplier: 1.5,
                    randomization_factor: 0.5,
                    max_interval: secs(1),
                    max_elapsed_time: Some(secs(10)),
                }),
                max_retries: Some(3),
                matching: StatusMatching::default(),
            },
        }
    }
}

/// A component's building block, for the `Default<Kind>Component<Dir>...` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    Binding,
    Configuration,
    Lock,
    Pubsub,
    Crypto,
    Conversation,
    Secretstore,
    Statestore,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 8] = [
        ComponentKind::Binding,
        ComponentKind::Configuration,
        ComponentKind::Lock,
        ComponentKind::Pubsub,
        ComponentKind::Crypto,
        ComponentKind::Conversation,
        ComponentKind::Secretstore,
        ComponentKind::Statestore,
    ];

    /// The word used in default policy names, e.g. `Statestore`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Binding => "Binding",
            ComponentKind::Configuration => "Configuration",
            ComponentKind::Lock => "Lock",
            ComponentKind::Pubsub => "Pubsub",
            ComponentKind::Crypto => "Crypto",
            ComponentKind::Conversation => "Conversation",
            ComponentKind::Secretstore => "Secretstore",
            ComponentKind::Statestore => "Statestore",
        }
    }

    /// From a component `spec.type` such as `state.redis` or `bindings.kafka`.
    pub fn from_component_type(type_: &str) -> Option<Self> {
        Some(match type_.split('.').next()? {
            "bindings" => ComponentKind::Binding,
            "configuration" => ComponentKind::Configuration,
            "lock" => ComponentKind::Lock,
            "pubsub" => ComponentKind::Pubsub,
            "crypto" => ComponentKind::Crypto,
            "conversation" => ComponentKind::Conversation,
            "secretstores" => ComponentKind::Secretstore,
            "state" => ComponentKind::Statestore,
            _ => return None,
        })
    }
}

/// Which instance of an actor type's breaker a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorBreakerScope {
    /// One breaker for the whole type.
    Type,
    /// One breaker per actor id.
    Id,
    /// Dapr accepts it but treats it as `Id`.
    Both,
}

impl ActorBreakerScope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "type" => Some(Self::Type),
            "id" => Some(Self::Id),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Names {
    timeout: Option<String>,
    retry: Option<String>,
    circuit_breaker: Option<String>,
}

impl Names {
    fn new(timeout: &str, retry: &str, circuit_breaker: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            timeout: opt(timeout),
            retry: opt(retry),
            circuit_breaker: opt(circuit_breaker),
        }
    }

    fn from_spec(n: &PolicyNames) -> Self {
        Self::new(&n.timeout, &n.retry, &n.circuit_breaker)
    }

    fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.circuit_breaker.is_none()
    }
}

#[derive(Debug, Clone)]
struct AppTarget {
    names: Names,
    cache_size: usize,
}

#[derive(Debug, Clone)]
struct ActorTarget {
    names: Names,
    scope: ActorBreakerScope,
    cache_size: usize,
}

#[derive(Debug, Clone)]
struct ComponentTarget {
    inbound: Names,
    outbound: Names,
}

/// The implicit `Default...Policy` names in effect, worked out after each load.
#[derive(Debug, Default)]
struct Defaults {
    app: Names,
    actor: Names,
    components: HashMap<(Option<ComponentKind>, Direction), Names>,
}

/// Everything one Resiliency resource defines, validated.
#[derive(Default)]
struct Compiled {
    timeouts: Vec<(String, Duration)>,
    retries: Vec<(String, RetryPolicy)>,
    breakers: Vec<(String, BreakerSettings)>,
    apps: Vec<(String, AppTarget)>,
    actors: Vec<(String, ActorTarget)>,
    components: Vec<(String, ComponentTarget)>,
}

/// The resiliency policies loaded for one app, and the breaker instances
/// created from them. Share it behind an `Arc`; rebuild it to reload.
pub struct ResiliencyRegistry {
    app_id: String,
    timeouts: HashMap<String, Duration>,
    retries: HashMap<String, Arc<RetryPolicy>>,
    breakers: HashMap<String, Arc<BreakerSettings>>,
    apps: HashMap<String, AppTarget>,
    actors: HashMap<String, ActorTarget>,
    components: HashMap<String, ComponentTarget>,
    defaults: Defaults,
    app_breakers: Mutex<HashMap<String, LruCache<Arc<CircuitBreaker>>>>,
    actor_breakers: Mutex<HashMap<String, LruCache<Arc<CircuitBreaker>>>>,
    component_breakers: Mutex<HashMap<(String, Direction), Arc<CircuitBreaker>>>,
    metrics: Arc<dyn ResiliencyMetrics>,
    random: RandomSource,
}

impl fmt::Debug for ResiliencyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResiliencyRegistry")
            .field("app_id", &self.app_id)
            .field("timeouts", &self.timeouts)
            .field("retries", &self.retries.keys())
            .field("circuit_breakers", &self.breakers.keys())
            .field("apps", &self.apps.keys())
            .field("actors", &self.actors.keys())
            .field("components", &self.components.keys())
            .finish()
    }
}

impl Default for ResiliencyRegistry {
    /// Built-in policies only.
    fn default() -> Self {
        Self::empty("")
    }
}

impl ResiliencyRegistry {
    /// A registry with the built-in policies and nothing else.
    pub fn empty(app_id: &str) -> Self {
        let retries = BuiltInPolicy::ALL
            .into_iter()
            .map(|b| (b.name().to_owned(), Arc::new(b.default_policy())))
            .collect();
        Self {
            app_id: app_id.to_owned(),
            timeouts: HashMap::new(),
            retries,
            breakers: HashMap::new(),
            apps: HashMap::new(),
            actors: HashMap::new(),
            components: HashMap::new(),
            defaults: Defaults::default(),
            app_breakers: Mutex::new(HashMap::new()),
            actor_breakers: Mutex::new(HashMap::new()),
            component_breakers: Mutex::new(HashMap::new()),
            metrics: Arc::new(NoopMetrics),
            random: RandomSource::default(),
        }
    }

    /// Loads every resource scoped to `app_id`, in order (a later definition
    /// of a name replaces an earlier one). Fails on the first invalid one.
    pub fn new(app_id: &str, resources: &[Resiliency]) -> Result<Self, ResiliencyError> {
        let mut registry = Self::empty(app_id);
        for r in resources {
            registry.add(r)?;
        }
        registry.warn_dangling_references();
        Ok(registry)
    }

    /// Like [`new`](Self::new) but, as daprd does, skips an invalid resource
    /// (logging it) and keeps the rest. Returns the skipped resources' errors.
    pub fn load(app_id: &str, resources: &[Resiliency]) -> (Self, Vec<ResiliencyError>) {
        let mut registry = Self::empty(app_id);
        let mut errors = Vec::new();
        for r in resources {
            if let Err(e) = registry.add(r) {
                tracing::error!(error = %e, "could not load resiliency policy");
                errors.push(e);
            }
        }
        registry.warn_dangling_references();
        (registry, errors)
    }

    /// [`load`](Self::load) over the `Resiliency` documents among parsed
    /// resource files; documents that don't deserialize are reported too.
    pub fn from_resources(app_id: &str, resources: &[Resource]) -> (Self, Vec<ResiliencyError>) {
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        for parsed in dapr_crds::resiliencies(resources) {
            match parsed {
                Ok(r) => specs.push(r),
                Err(e) => {
                    tracing::error!(error = %e, "could not parse resiliency policy");
                    errors.push(ResiliencyError::from(e));
                }
            }
        }
        let (registry, load_errors) = Self::load(app_id, &specs);
        errors.extend(load_errors);
        (registry, errors)
    }

    /// Sends resiliency events to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn ResiliencyMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The jitter source handed to every policy (tests use a fixed one).
    pub fn with_random(mut self, random: RandomSource) -> Self {
        self.random = random;
        self
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A named timeout policy.
    pub fn timeout(&self, name: &str) -> Option<Duration> {
        self.timeouts.get(name).copied()
    }

    /// A named retry policy (built-ins included).
    pub fn retry(&self, name: &str) -> Option<&RetryPolicy> {
        self.retries.get(name).map(Arc::as_ref)
    }

    /// A named circuit-breaker policy.
    pub fn circuit_breaker(&self, name: &str) -> Option<&BreakerSettings> {
        self.breakers.get(name).map(Arc::as_ref)
    }

    /// Whether `targets.apps` names `app_id` (daprd then skips its built-in
    /// service-invocation retries).
    pub fn app_policy_defined(&self, app_id: &str) -> bool {
        self.apps.contains_key(app_id)
    }

    pub fn actor_policy_defined(&self, actor_type: &str) -> bool {
        self.actors.contains_key(actor_type)
    }

    pub fn component_policy_defined(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }

    /// The policy for calls to `app_id` with one breaker for the whole app.
    /// Equivalent to `policy_for_endpoint(app_id, app_id)`.
    pub fn policy_for_app(&self, app_id: &str) -> Policy {
        self.policy_for_endpoint(app_id, app_id)
    }

    /// The policy for calls to `endpoint` of `app_id`. Breakers are per
    /// endpoint (daprd uses `"<app>:<method>"`), kept in an LRU per app.
    pub fn policy_for_endpoint(&self, app_id: &str, endpoint: &str) -> Policy {
        let name = format!("endpoint[{app_id}, {endpoint}]");
        let (names, cache_size) = match self.apps.get(app_id) {
            Some(t) => (t.names.clone(), t.cache_size),
            None => (self.defaults.app.clone(), DEFAULT_APP_BREAKER_CACHE_SIZE),
        };
        let breaker = self.breaker_template(&names).map(|template| {
            let mut caches = lock(&self.app_breakers);
            let cache = caches
                .entry(app_id.to_owned())
                .or_insert_with(|| LruCache::new(cache_size));
            cache.get_or_insert_with(endpoint, || {
                Arc::new(CircuitBreaker::new(endpoint, Arc::clone(template)))
            })
        });
        self.build(
            name,
            PolicyTarget::App(app_id.to_owned()),
            Direction::Outbound,
            &names,
            true,
            true,
            breaker,
        )
    }

    /// Everything that applies to a call to actor `actor_type`/`actor_id`:
    /// timeout, retry and circuit breaker together. Use the pre/post-lock
    /// variants where the actor lock sits between them.
    pub fn policy_for_actor(&self, actor_type: &str, actor_id: &str) -> Policy {
        self.actor_policy(actor_type, actor_id, true, true)
    }

    /// Retry and circuit breaker, applied before the actor lock is taken.
    pub fn actor_pre_lock_policy(&self, actor_type: &str, actor_id: &str) -> Policy {
        self.actor_policy(actor_type, actor_id, false, true)
    }

    /// Timeout only, applied once the actor lock is held.
    pub fn actor_post_lock_policy(&self, actor_type: &str, actor_id: &str) -> Policy {
        self.actor_policy(actor_type, actor_id, true, false)
    }

    fn actor_policy(
        &self,
        actor_type: &str,
        actor_id: &str,
        with_timeout: bool,
        with_retry_and_breaker: bool,
    ) -> Policy {
        let name = format!("actor[{actor_type}, {actor_id}]");
        let (names, scope, cache_size) = match self.actors.get(actor_type) {
            Some(t) => (t.names.clone(), t.scope, t.cache_size),
            // Default policies share one breaker per type.
            None => (
                self.defaults.actor.clone(),
                ActorBreakerScope::Type,
                DEFAULT_APP_BREAKER_CACHE_SIZE,
            ),
        };
        let breaker = self
            .breaker_template(&names)
            .filter(|_| with_retry_and_breaker)
            .map(|template| {
                let key = match scope {
                    ActorBreakerScope::Type => actor_type.to_owned(),
                    ActorBreakerScope::Id | ActorBreakerScope::Both => {
                        format!("{actor_type}-{actor_id}")
                    }
                };
                let mut caches = lock(&self.actor_breakers);
                let cache = caches
                    .entry(actor_type.to_owned())
                    .or_insert_with(|| LruCache::new(cache_size));
                cache.get_or_insert_with(&key, || {
                    Arc::new(CircuitBreaker::new(key.clone(), Arc::clone(template)))
                })
            });
        self.build(
            name,
            PolicyTarget::Actor(actor_type.to_owned()),
            Direction::Outbound,
            &names,
            with_timeout,
            with_retry_and_breaker,
            breaker,
        )
    }

    /// The policy for operations on component `name` in `direction`, without
    /// knowing its kind (skips the `Default<Kind>Component...` level).
    pub fn policy_for_component(&self, name: &str, direction: Direction) -> Policy {
        self.resolve_component(name, None, direction)
    }

    /// The policy for operations on component `name` of `kind` in `direction`.
    pub fn policy_for_component_kind(
        &self,
        name: &str,
        kind: ComponentKind,
        direction: Direction,
    ) -> Policy {
        self.resolve_component(name, Some(kind), direction)
    }

    fn resolve_component(
        &self,
        name: &str,
        kind: Option<ComponentKind>,
        direction: Direction,
    ) -> Policy {
        let label = match direction {
            Direction::Outbound => format!("component[{name}] output"),
            Direction::Inbound => format!("component[{name}] input"),
        };
        let names = match self.components.get(name) {
            Some(t) => match direction {
                Direction::Inbound => t.inbound.clone(),
                Direction::Outbound => t.outbound.clone(),
            },
            None => self
                .defaults
                .components
                .get(&(kind, direction))
                .cloned()
                .unwrap_or_default(),
        };
        let breaker = self.breaker_template(&names).map(|template| {
            let mut breakers = lock(&self.component_breakers);
            Arc::clone(
                breakers
                    .entry((name.to_owned(), direction))
                    .or_insert_with(|| {
                        Arc::new(CircuitBreaker::new(
                            format!("{}-{name}", template.name),
                            Arc::clone(template),
                        ))
                    }),
            )
        });
        self.build(
            label,
            PolicyTarget::Component {
                name: name.to_owned(),
                kind: kind.map(|k| k.as_str().to_owned()),
            },
            direction,
            &names,
            true,
            true,
            breaker,
        )
    }

    /// A built-in retry policy (possibly redefined by a resource).
    pub fn builtin_policy(&self, builtin: BuiltInPolicy) -> Policy {
        let retry = self
            .retries
            .get(builtin.name())
            .cloned()
            .unwrap_or_else(|| Arc::new(builtin.default_policy()));
        Policy::none(builtin.name())
            .with_retry(Some(retry))
            .with_random(self.random.clone())
    }

    /// Number of breaker instances held for `app_id`'s endpoints.
    pub fn app_breaker_count(&self, app_id: &str) -> usize {
        lock(&self.app_breakers)
            .get(app_id)
            .map_or(0, LruCache::len)
    }

    /// Number of breaker instances held for `actor_type`.
    pub fn actor_breaker_count(&self, actor_type: &str) -> usize {
        lock(&self.actor_breakers)
            .get(actor_type)
            .map_or(0, LruCache::len)
    }

    /// The policy names that apply when no target names the app, actor type or
    /// component: for each policy kind, the first defined of
    /// `Default<level>XPolicy` over `levels`, then `DefaultXPolicy`.
    fn refresh_defaults(&mut self) {
        let mut components = HashMap::new();
        for kind in ComponentKind::ALL.map(Some).into_iter().chain([None]) {
            for direction in [Direction::Inbound, Direction::Outbound] {
                let dir = direction.policy_word();
                let kind_word = kind.map_or("", ComponentKind::as_str);
                let names = self.default_names(&[
                    format!("{kind_word}Component{dir}"),
                    format!("Component{dir}"),
                    "Component".to_owned(),
                ]);
                components.insert((kind, direction), names);
            }
        }
        self.defaults = Defaults {
            app: self.default_names(&["App".to_owned()]),
            actor: self.default_names(&["Actor".to_owned()]),
            components,
        };
    }

    fn default_names(&self, levels: &[String]) -> Names {
        let pick = |what: &str, defined: &dyn Fn(&str) -> bool| {
            levels
                .iter()
                .map(|level| format!("Default{level}{what}Policy"))
                .chain(std::iter::once(format!("Default{what}Policy")))
                .find(|candidate| defined(candidate))
        };
        Names {
            timeout: pick("Timeout", &|n| self.timeouts.contains_key(n)),
            retry: pick("Retry", &|n| self.retries.contains_key(n)),
            circuit_breaker: pick("CircuitBreaker", &|n| self.breakers.contains_key(n)),
        }
    }

    fn breaker_template(&self, names: &Names) -> Option<&Arc<BreakerSettings>> {
        names
            .circuit_breaker
            .as_deref()
            .and_then(|n| self.breakers.get(n))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        label: String,
        target: PolicyTarget,
        direction: Direction,
        names: &Names,
        with_timeout: bool,
        with_retry: bool,
        breaker: Option<Arc<CircuitBreaker>>,
    ) -> Policy {
        let timeout = names
            .timeout
            .as_deref()
            .filter(|_| with_timeout)
            .and_then(|n| self.timeouts.get(n).copied())
            .filter(|t| !t.is_zero());
        let retry = names
            .retry
            .as_deref()
            .filter(|_| with_retry)
            .and_then(|n| self.retries.get(n).cloned());
        if !names.is_empty() {
            tracing::debug!(policy = %label, ?names, "resolved resiliency policy");
        }
        if timeout.is_some() {
            self.metrics
                .policy_instantiated(&target, direction, PolicyKind::Timeout);
        }
        if retry.is_some() {
            self.metrics
                .policy_instantiated(&target, direction, PolicyKind::Retry);
        }
        if let Some(b) = &breaker {
            self.metrics
                .policy_instantiated(&target, direction, PolicyKind::CircuitBreaker);
            self.metrics
                .circuit_breaker_state(&target, direction, b.name(), b.state());
        }
        Policy::none(label)
            .with_timeout(timeout)
            .with_retry(retry)
            .with_circuit_breaker(breaker)
            .with_random(self.random.clone())
            .with_metrics(Arc::clone(&self.metrics), target, direction)
    }

    /// Loads one more resource if it is scoped to this app (returns whether
    /// it was). Names it defines replace earlier ones. On error nothing of
    /// the resource is applied.
    pub fn add(&mut self, resource: &Resiliency) -> Result<bool, ResiliencyError> {
        if !resource.in_scope(&self.app_id) {
            return Ok(false);
        }
        let compiled = compile(resource)?;
        tracing::info!(
            resiliency = resource.name(),
            "loading resiliency configuration"
        );
        for (name, d) in compiled.timeouts {
            self.timeouts.insert(name, d);
        }
        for (name, retry) in compiled.retries {
            self.retries.insert(name, Arc::new(retry));
        }
        for (name, settings) in compiled.breakers {
            self.breakers.insert(name, Arc::new(settings));
        }
        for (name, target) in compiled.apps {
            self.apps.insert(name, target);
        }
        for (name, target) in compiled.actors {
            self.actors.insert(name, target);
        }
        for (name, target) in compiled.components {
            self.components.insert(name, target);
        }
        self.refresh_defaults();
        // Breakers made so far may follow templates, targets or cache sizes
        // that this resource just changed.
        clear(&mut self.app_breakers);
        clear(&mut self.actor_breakers);
        clear(&mut self.component_breakers);
        self.metrics.policy_loaded(
            resource.name(),
            resource.metadata.namespace.as_deref().unwrap_or(""),
        );
        Ok(true)
    }

    fn warn_dangling_references(&self) {
        let check = |target: String, names: &Names| {
            let refs = [
                (
                    "timeout",
                    &names.timeout,
                    self.timeouts.keys().collect::<Vec<_>>(),
                ),
                ("retry", &names.retry, self.retries.keys().collect()),
                (
                    "circuitBreaker",
                    &names.circuit_breaker,
                    self.breakers.keys().collect(),
                ),
            ];
            for (kind, name, defined) in refs {
                if let Some(name) = name.as_ref().filter(|n| !defined.contains(n)) {
                    tracing::warn!(%target, policy = %name, kind, "resiliency target names an undefined policy; it is ignored");
                }
            }
        };
        for (name, t) in &self.apps {
            check(format!("apps.{name}"), &t.names);
        }
        for (name, t) in &self.actors {
            check(format!("actors.{name}"), &t.names);
        }
        for (name, t) in &self.components {
            check(format!("components.{name}.inbound"), &t.inbound);
            check(format!("components.{name}.outbound"), &t.outbound);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn clear<K, V>(m: &mut Mutex<HashMap<K, V>>) {
    m.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
}

/// A policy duration: a bare integer is milliseconds, anything else a Go
/// duration (`5s`, `1m30s`).
/// Negative durations are rejected.
pub fn parse_policy_duration(value: &str) -> Result<Duration, DurationError> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| DurationError(value.to_owned()));
    }
    parse_go_duration(v)
}

fn compile(r: &Resiliency) -> Result<Compiled, ResiliencyError> {
    let invalid = |field: String, reason: String| ResiliencyError::Invalid {
        resource: r.name().to_owned(),
        field,
        reason,
    };
    let policies = &r.spec.policies;
    let mut out = Compiled::default();

    for (name, value) in &policies.timeouts {
        let d = parse_policy_duration(value)
            .map_err(|e| invalid(format!("spec.policies.timeouts.{name}"), e.to_string()))?;
        out.timeouts.push((name.clone(), d));
    }

    for (name, spec) in &policies.retries {
        let field = format!("spec.policies.retries.{name}");
        let builtin = BuiltInPolicy::from_name(name);
        if builtin.is_some_and(BuiltInPolicy::is_protected) {
            tracing::warn!(
                policy = %name,
                "built-in policy cannot be redefined; the definition is ignored"
            );
            continue;
        }
        let mut retry =
            compile_retry(spec).map_err(|(sub, e)| invalid(format!("{field}.{sub}"), e))?;
        if builtin.is_some() && retry.max_retries.is_none_or(|n| n < 3) {
            tracing::warn!(policy = %name, "built-in policy redefined with fewer than 3 retries; using 3");
            retry.max_retries = Some(3);
        }
        out.retries.push((name.clone(), retry));
    }

    for (name, spec) in &policies.circuit_breakers {
        let field = format!("spec.policies.circuitBreakers.{name}");
        let settings =
            compile_breaker(name, spec).map_err(|(sub, e)| invalid(format!("{field}.{sub}"), e))?;
        out.breakers.push((name.clone(), settings));
    }

    let targets = &r.spec.targets;
    for (app, t) in &targets.apps {
        out.apps.push((
            app.clone(),
            AppTarget {
                names: Names::new(&t.timeout, &t.retry, &t.circuit_breaker),
                cache_size: cache_size(
                    t.circuit_breaker_cache_size,
                    DEFAULT_APP_BREAKER_CACHE_SIZE,
                ),
            },
        ));
    }
    for (actor_type, t) in &targets.actors {
        let field = format!("spec.targets.actors.{actor_type}.circuitBreakerScope");
        let scope = if t.circuit_breaker.is_empty() {
            ActorBreakerScope::parse(&t.circuit_breaker_scope).unwrap_or(ActorBreakerScope::Type)
        } else if t.circuit_breaker_scope.is_empty() {
            return Err(invalid(
                field,
                "required when circuitBreaker is set (type, id or both)".to_owned(),
            ));
        } else {
            ActorBreakerScope::parse(&t.circuit_breaker_scope).ok_or_else(|| {
                invalid(
                    field,
                    format!(
                        "unknown scope '{}': expected type, id or both",
                        t.circuit_breaker_scope
                    ),
                )
            })?
        };
        out.actors.push((
            actor_type.clone(),
            ActorTarget {
                names: Names::new(&t.timeout, &t.retry, &t.circuit_breaker),
                scope,
                cache_size: cache_size(
                    t.circuit_breaker_cache_size,
                    DEFAULT_ACTOR_BREAKER_CACHE_SIZE,
                ),
            },
        ));
    }
    for (component, t) in &targets.components {
        out.components.push((
            component.clone(),
            ComponentTarget {
                inbound: Names::from_spec(&t.inbound),
                outbound: Names::from_spec(&t.outbound),
            },
        ));
    }
    Ok(out)
}

/// Dapr drops empty strings before decoding, so they mean "use the default".
fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

fn cache_size(configured: Option<u32>, default: usize) -> usize {
    match configured {
        None | Some(0) => default,
        Some(n) => usize::try_from(n).unwrap_or(default),
    }
}

fn compile_retry(spec: &RetryPolicySpec) -> Result<RetryPolicy, (&'static str, String)> {
    let duration = |field: &'static str, v: &Option<String>, default: Duration| match non_empty(v) {
        None => Ok(default),
        Some(s) => parse_policy_duration(s).map_err(|e| (field, e.to_string())),
    };
    let max_retries = match spec.max_retries {
        None => None,
        Some(n) => u64::try_from(n).ok(),
    };
    let matching = match &spec.matching {
        None => StatusMatching::default(),
        Some(m) => StatusMatching::parse(
            m.http_status_codes.as_deref(),
            m.grpc_status_codes.as_deref(),
        )
        .map_err(|e| ("matching", e.to_string()))?,
    };
    let policy = spec.policy.as_deref().unwrap_or("").trim();
    let backoff = if policy.is_empty() || policy.eq_ignore_ascii_case("constant") {
        Backoff::Constant(duration(
            "duration",
            &spec.duration,
            DEFAULT_CONSTANT_DURATION,
        )?)
    } else if policy.eq_ignore_ascii_case("exponential") {
        Backoff::Exponential(ExponentialBackoff {
            max_interval: duration("maxInterval", &spec.max_interval, DEFAULT_MAX_INTERVAL)?,
            ..ExponentialBackoff::default()
        })
    } else {
        return Err((
            "policy",
            format!("unknown back-off policy '{policy}': expected constant or exponential"),
        ));
    };
    Ok(RetryPolicy {
        backoff,
        max_retries,
        matching,
    })
}

fn compile_breaker(
    name: &str,
    spec: &CircuitBreakerPolicySpec,
) -> Result<BreakerSettings, (&'static str, String)> {
    let duration = |field: &'static str, v: &Option<String>| match non_empty(v) {
        None => Ok(Duration::ZERO),
        Some(s) => parse_policy_duration(s).map_err(|e| (field, e.to_string())),
    };
    let timeout = duration("timeout", &spec.timeout)?;
    let trip = match non_empty(&spec.trip) {
        None => TripCondition::default_condition(),
        Some(expr) => TripCondition::compile(expr).map_err(|e| ("trip", e.to_string()))?,
    };
    Ok(BreakerSettings {
        name: name.to_owned(),
        max_requests: spec.max_requests.unwrap_or(0).max(1),
        interval: duration("interval", &spec.interval)?,
        timeout: if timeout.is_zero() {
            DEFAULT_BREAKER_TIMEOUT
        } else {
            timeout
        },
        trip,
    })
}
