//! `dapr_runtime_actor_*`: reminder and timer fires, deactivations and
//! rebalancing, with Dapr's view names and `actor_type` labels.

use prometheus::IntCounterVec;

use super::{Factory, MetricsError};

pub struct ActorMetrics {
    reminders_fired: IntCounterVec,
    timers_fired: IntCounterVec,
    deactivated: IntCounterVec,
    deactivated_failed: IntCounterVec,
    rebalanced: IntCounterVec,
}

impl ActorMetrics {
    pub(crate) fn new(f: &Factory<'_>) -> Result<Self, MetricsError> {
        Ok(Self {
            reminders_fired: f.counter(
                "dapr_runtime_actor_reminders_fired_total",
                "The number of actor reminders fired requests.",
                &["actor_type", "success"],
            )?,
            timers_fired: f.counter(
                "dapr_runtime_actor_timers_fired_total",
                "The number of actor timers fired requests.",
                &["actor_type", "success"],
            )?,
            deactivated: f.counter(
                "dapr_runtime_actor_deactivated_total",
                "The number of the successful actor deactivation.",
                &["actor_type"],
            )?,
            deactivated_failed: f.counter(
                "dapr_runtime_actor_deactivated_failed_total",
                "The number of the failed actor deactivation.",
                &["actor_type"],
            )?,
            rebalanced: f.counter(
                "dapr_runtime_actor_rebalanced_total",
                "The number of the actor rebalance requests.",
                &["actor_type"],
            )?,
        })
    }

    /// A reminder (`timer == false`) or timer tick delivered to the app.
    pub fn fired(&self, actor_type: &str, timer: bool, success: bool) {
        let c = if timer {
            &self.timers_fired
        } else {
            &self.reminders_fired
        };
        c.with_label_values(&[actor_type, if success { "true" } else { "false" }])
            .inc();
    }

    /// An activation ended (`ok`: the app acknowledged the deactivation);
    /// `rebalanced`: because placement moved the actor away.
    pub fn deactivated(&self, actor_type: &str, ok: bool, rebalanced: bool) {
        if ok {
            self.deactivated.with_label_values(&[actor_type]).inc();
        } else {
            self.deactivated_failed
                .with_label_values(&[actor_type])
                .inc();
        }
        if rebalanced {
            self.rebalanced.with_label_values(&[actor_type]).inc();
        }
    }
}
