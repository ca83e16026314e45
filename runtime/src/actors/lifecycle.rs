//! Deactivation: actors idle longer than their `actorIdleTimeout` (checked
//! every `actorScanInterval`), and actors placement moved to another host
//! (after draining ongoing calls for `drainOngoingCallTimeout` when
//! `drainRebalancedActors` is on). Both end with `DELETE /actors/{type}/{id}`.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use super::{ActorRuntime, Owner, app, table::ActiveActor};

pub(super) fn spawn(rt: &Arc<ActorRuntime>) {
    tokio::spawn(idle_loop(Arc::downgrade(rt), rt.shutdown.clone()));
    tokio::spawn(rebalance_loop(
        Arc::downgrade(rt),
        rt.placement.subscribe(),
        rt.shutdown.clone(),
    ));
}

async fn idle_loop(rt: Weak<ActorRuntime>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let interval = match rt.upgrade() {
            Some(rt) => rt.host_config().scan_interval,
            None => return,
        }
        .max(Duration::from_millis(10));
        let interval = if interval.is_zero() {
            super::config::DEFAULT_SCAN_INTERVAL
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let Some(rt) = rt.upgrade() else { return };
        for actor in rt.table.snapshot() {
            if actor.idle_for() >= actor.idle_timeout && actor.lock.pending() == 0 {
                let rt = rt.clone();
                tokio::spawn(
                    async move { rt.deactivate(actor, Some(Duration::ZERO), "idle").await },
                );
            }
        }
    }
}

async fn rebalance_loop(
    rt: Weak<ActorRuntime>,
    mut state: tokio::sync::watch::Receiver<dapr_placement_core::ClientState>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut handled = 0u64;
    loop {
        let (version, ready) = {
            let s = state.borrow_and_update();
            (
                s.tables_version,
                s.ready && s.phase == dapr_placement_core::Phase::Unlocked,
            )
        };
        if version != handled {
            let Some(rt) = rt.upgrade() else { return };
            rt.rebalance().await;
            handled = version;
        }
        if ready
            && version == handled
            && let Some(rt) = rt.upgrade()
        {
            rt.table_updates.send_if_modified(|v| {
                let changed = *v != version;
                *v = version;
                changed
            });
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

impl ActorRuntime {
    /// Deactivates every active actor the new tables place elsewhere.
    async fn rebalance(self: &Arc<Self>) {
        let moved: Vec<Arc<ActiveActor>> = self
            .table
            .snapshot()
            .into_iter()
            .filter(|a| !matches!(self.lookup(&a.actor_type, &a.actor_id), Owner::Local))
            .collect();
        if moved.is_empty() {
            return;
        }
        tracing::info!(
            count = moved.len(),
            "deactivating actors placed on other hosts"
        );
        let cfg = self.host_config();
        let tasks: Vec<_> = moved
            .into_iter()
            .map(|a| {
                let tc = cfg.type_config(&a.actor_type);
                let drain = tc
                    .drain_rebalanced_actors
                    .then_some(tc.drain_ongoing_call_timeout);
                let rt = self.clone();
                tokio::spawn(async move {
                    rt.deactivate(a, drain.or(Some(Duration::ZERO)), "rebalanced")
                        .await
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Takes the actor's turn (waiting up to `drain` for ongoing calls),
    /// removes it from the table and tells the app.
    pub(super) async fn deactivate(
        self: &Arc<Self>,
        actor: Arc<ActiveActor>,
        drain: Option<Duration>,
        why: &'static str,
    ) {
        let turn = match drain {
            Some(d) if d.is_zero() && actor.lock.pending() > 0 => None,
            Some(d) => {
                tokio::time::timeout(d.max(Duration::from_millis(1)), actor.lock.acquire(None))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => actor.lock.acquire(None).await.ok(),
        };
        if why == "idle" && (turn.is_none() || actor.idle_for() < actor.idle_timeout) {
            // A call arrived meanwhile: still in use.
            return;
        }
        actor.mark_deactivated();
        self.table.remove(&actor);
        // Its timers go with the activation.
        self.reminders
            .actor_deactivated(&actor.actor_type, &actor.actor_id);
        let res = app::deactivate(&self.invoker, &actor.actor_type, &actor.actor_id).await;
        dapr_observability::metrics::actor_deactivated(&actor.actor_type, res.is_ok(), why);
        match res {
            Ok(()) => {
                tracing::debug!(actor_type = %actor.actor_type, actor_id = %actor.actor_id, why, "actor deactivated")
            }
            Err(e) => {
                tracing::warn!(actor_type = %actor.actor_type, actor_id = %actor.actor_id, why, "deactivating actor: {e}")
            }
        }
        drop(turn);
    }
}
