//! The app's actor configuration (`GET /dapr/config`) and the per-type
//! settings derived from it, with Dapr's defaults.

use std::{collections::HashMap, time::Duration};

use dapr_components::duration::parse_go_duration;
use serde::Deserialize;

/// Dapr's defaults (pkg/actors/api/config.go).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_DRAIN_ONGOING_CALL_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REENTRANCY_STACK_LIMIT: usize = 32;
/// How often idle actors are looked for when the app does not say.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(30);

/// `reentrancy` as the app sends it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReentrancyJson {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub max_stack_depth: Option<i64>,
}

/// One `entitiesConfig` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityConfigJson {
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default)]
    pub actor_idle_timeout: String,
    #[serde(default)]
    pub drain_ongoing_call_timeout: String,
    #[serde(default)]
    pub drain_rebalanced_actors: Option<bool>,
    #[serde(default)]
    pub reentrancy: Option<ReentrancyJson>,
    #[serde(default)]
    pub reminders_storage_partitions: i64,
}

/// The body of `GET /dapr/config` (Dapr's `ApplicationConfig`, plus the
/// `actorScanInterval` the SDKs still send).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppConfigJson {
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default)]
    pub actor_idle_timeout: String,
    #[serde(default)]
    pub actor_scan_interval: String,
    #[serde(default)]
    pub drain_ongoing_call_timeout: String,
    #[serde(default)]
    pub drain_rebalanced_actors: Option<bool>,
    #[serde(default)]
    pub reentrancy: Option<ReentrancyJson>,
    #[serde(default)]
    pub reminders_storage_partitions: i64,
    #[serde(default)]
    pub entities_config: Vec<EntityConfigJson>,
}

/// Reentrancy of one actor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reentrancy {
    pub enabled: bool,
    pub max_stack_depth: usize,
}

impl Default for Reentrancy {
    fn default() -> Self {
        Self {
            enabled: false,
            max_stack_depth: DEFAULT_REENTRANCY_STACK_LIMIT,
        }
    }
}

/// Settings of one hosted actor type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeConfig {
    pub idle_timeout: Duration,
    pub drain_ongoing_call_timeout: Duration,
    pub drain_rebalanced_actors: bool,
    pub reentrancy: Reentrancy,
    pub reminders_storage_partitions: i64,
}

impl Default for TypeConfig {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_ongoing_call_timeout: DEFAULT_DRAIN_ONGOING_CALL_TIMEOUT,
            drain_rebalanced_actors: true,
            reentrancy: Reentrancy::default(),
            reminders_storage_partitions: 0,
        }
    }
}

/// What this host serves: its actor types and their settings.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    pub types: HashMap<String, TypeConfig>,
    pub scan_interval: Duration,
}

impl HostConfig {
    /// Hosted actor types, sorted.
    pub fn entities(&self) -> Vec<String> {
        let mut v: Vec<String> = self.types.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn hosts(&self, actor_type: &str) -> bool {
        self.types.contains_key(actor_type)
    }

    pub fn type_config(&self, actor_type: &str) -> TypeConfig {
        self.types.get(actor_type).cloned().unwrap_or_default()
    }

    /// Builds the host configuration. Invalid durations fall back to the
    /// default with a warning, as Dapr does.
    pub fn from_app(app: &AppConfigJson) -> Self {
        let base = TypeConfig {
            idle_timeout: duration_or(
                &app.actor_idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
                "actorIdleTimeout",
            ),
            drain_ongoing_call_timeout: duration_or(
                &app.drain_ongoing_call_timeout,
                DEFAULT_DRAIN_ONGOING_CALL_TIMEOUT,
                "drainOngoingCallTimeout",
            ),
            drain_rebalanced_actors: app.drain_rebalanced_actors.unwrap_or(true),
            reentrancy: reentrancy(app.reentrancy.as_ref()),
            reminders_storage_partitions: app.reminders_storage_partitions,
        };
        let mut types: HashMap<String, TypeConfig> = app
            .entities
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| (e.clone(), base.clone()))
            .collect();
        for ec in &app.entities_config {
            // A per-type entry replaces the globals it sets (Dapr: the entity
            // config is built from defaults, not from the global values).
            let cfg = TypeConfig {
                idle_timeout: duration_or(
                    &ec.actor_idle_timeout,
                    base.idle_timeout,
                    "actorIdleTimeout",
                ),
                drain_ongoing_call_timeout: duration_or(
                    &ec.drain_ongoing_call_timeout,
                    base.drain_ongoing_call_timeout,
                    "drainOngoingCallTimeout",
                ),
                drain_rebalanced_actors: ec
                    .drain_rebalanced_actors
                    .unwrap_or(base.drain_rebalanced_actors),
                reentrancy: match &ec.reentrancy {
                    Some(r) => reentrancy(Some(r)),
                    None => base.reentrancy,
                },
                reminders_storage_partitions: if ec.reminders_storage_partitions > 0 {
                    ec.reminders_storage_partitions
                } else {
                    base.reminders_storage_partitions
                },
            };
            for e in &ec.entities {
                match types.get_mut(e) {
                    Some(t) => *t = cfg.clone(),
                    None => {
                        tracing::warn!(actor_type = %e, "entitiesConfig names an actor type the app does not host")
                    }
                }
            }
        }
        Self {
            types,
            scan_interval: duration_or(
                &app.actor_scan_interval,
                DEFAULT_SCAN_INTERVAL,
                "actorScanInterval",
            )
            .max(Duration::from_millis(10)),
        }
    }
}

fn reentrancy(r: Option<&ReentrancyJson>) -> Reentrancy {
    match r {
        None => Reentrancy::default(),
        Some(r) => Reentrancy {
            enabled: r.enabled,
            max_stack_depth: r
                .max_stack_depth
                .and_then(|d| usize::try_from(d).ok())
                .unwrap_or(DEFAULT_REENTRANCY_STACK_LIMIT),
        },
    }
}

/// A Go duration (`1h0m0s`, `30s`), or the default when empty or invalid.
fn duration_or(s: &str, default: Duration, what: &str) -> Duration {
    if s.trim().is_empty() {
        return default;
    }
    match parse_go_duration(s) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("invalid {what} in the app's /dapr/config ({e}); using {default:?}");
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sdk_config_with_overrides() {
        let j = r#"{"entities":["A","B"],"actorIdleTimeout":"1h0m0s","actorScanInterval":"30s",
            "drainOngoingCallTimeout":"1m0s","drainRebalancedActors":true,
            "reentrancy":{"enabled":true,"maxStackDepth":4},
            "entitiesConfig":[{"entities":["B"],"actorIdleTimeout":"5s","reentrancy":{"enabled":false}}]}"#;
        let app: AppConfigJson = serde_json::from_str(j).unwrap();
        let h = HostConfig::from_app(&app);
        assert_eq!(h.entities(), vec!["A", "B"]);
        let a = h.type_config("A");
        assert_eq!(a.idle_timeout, Duration::from_secs(3600));
        assert_eq!(a.drain_ongoing_call_timeout, Duration::from_secs(60));
        assert_eq!(
            a.reentrancy,
            Reentrancy {
                enabled: true,
                max_stack_depth: 4
            }
        );
        let b = h.type_config("B");
        assert_eq!(b.idle_timeout, Duration::from_secs(5));
        assert!(!b.reentrancy.enabled);
        assert_eq!(b.reentrancy.max_stack_depth, 32);
        assert_eq!(h.scan_interval, Duration::from_secs(30));
    }

    #[test]
    fn defaults_and_bad_values() {
        let app: AppConfigJson =
            serde_json::from_str(r#"{"entities":["A"],"actorIdleTimeout":"soon"}"#).unwrap();
        let h = HostConfig::from_app(&app);
        assert_eq!(h.type_config("A"), TypeConfig::default());
        assert!(!h.hosts("Z"));
    }
}
