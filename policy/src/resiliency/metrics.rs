//! Hooks for resiliency metrics. Every method has a no-op default, so an
//! exporter implements only what it records.

use std::fmt;

use super::BreakerState;

/// Which kind of policy an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Timeout,
    Retry,
    CircuitBreaker,
}

impl PolicyKind {
    /// Dapr's metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Timeout => "timeout",
            PolicyKind::Retry => "retry",
            PolicyKind::CircuitBreaker => "circuitbreaker",
        }
    }
}

/// Whether a policy guards a call from the app outwards or a delivery to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Component to app: input bindings, pub/sub deliveries.
    Inbound,
    /// App (or daprd) to a target: app invocation, actors, component operations.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// `Inbound` / `Outbound`, as in the default policy names.
    pub(crate) fn policy_word(self) -> &'static str {
        match self {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
        }
    }
}

/// What a policy protects, for metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyTarget {
    App(String),
    Actor(String),
    Component { name: String, kind: Option<String> },
}

impl fmt::Display for PolicyTarget {
    /// Dapr's `target` label: `app_<id>`, `actor_<type>`, `component_<name>_<type>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyTarget::App(id) => write!(f, "app_{id}"),
            PolicyTarget::Actor(t) => write!(f, "actor_{t}"),
            PolicyTarget::Component { name, kind } => {
                write!(f, "component_{name}_{}", kind.as_deref().unwrap_or(""))
            }
        }
    }
}

/// Receives resiliency events.
pub trait ResiliencyMetrics: Send + Sync {
    /// A Resiliency resource was loaded.
    fn policy_loaded(&self, _resource: &str, _namespace: &str) {}
    /// A policy of `kind` was resolved for `target` (once per lookup).
    fn policy_instantiated(
        &self,
        _target: &PolicyTarget,
        _direction: Direction,
        _kind: PolicyKind,
    ) {
    }
    /// A timeout fired, or a retry was scheduled.
    fn policy_activated(&self, _target: &PolicyTarget, _direction: Direction, _kind: PolicyKind) {}
    /// A breaker guarding `target` is now in `state`.
    fn circuit_breaker_state(
        &self,
        _target: &PolicyTarget,
        _direction: Direction,
        _breaker: &str,
        _state: BreakerState,
    ) {
    }
}

/// Records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopMetrics;

impl ResiliencyMetrics for NoopMetrics {}
