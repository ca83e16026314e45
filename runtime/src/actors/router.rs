//! Routes an actor call to its owner: this host (turn lock, then the app)
//! or the owning sidecar's internal `CallActor`. Lookups wait for
//! placement (bounded); a call whose owner moved or died is looked up again.

use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::{
    ActorCall, ActorResponse, ActorRuntime, Owner, REENTRANCY_ID_HEADER, app, error::ActorError,
    remote,
};

/// Pause before looking an owner up again after it moved or went away.
const REROUTE_PAUSE: Duration = Duration::from_millis(50);

impl ActorRuntime {
    /// Calls an actor method wherever the actor lives.
    pub async fn call(&self, call: ActorCall) -> Result<ActorResponse, ActorError> {
        // Fast path: owned here with the tables settled (no waiting needed).
        if self.owner(&call.actor_type, &call.actor_id) == Owner::Local {
            match self.call_local(call.clone()).await {
                Err(e) if e.is_retriable_routing() => {}
                other => return other,
            }
        }
        let deadline = Instant::now() + self.placement_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let owner = self
                .wait_owner(&call.actor_type, &call.actor_id, left)
                .await?;
            let result = match owner {
                Owner::Local => self.call_local(call.clone()).await,
                Owner::Remote { address, app_id } => {
                    remote::call(&self.invoker, &address, &app_id, call.clone()).await
                }
                Owner::NoHost => {
                    return Err(ActorError::NoAddress(format!(
                        "{}||{}",
                        call.actor_type, call.actor_id
                    )));
                }
                Owner::NotReady => Err(ActorError::NotHostedHere(String::new())),
            };
            match result {
                Err(e) if e.is_retriable_routing() && Instant::now() < deadline => {
                    tracing::debug!(actor_type = %call.actor_type, actor_id = %call.actor_id, "rerouting actor call: {e}");
                    tokio::time::sleep(REROUTE_PAUSE).await;
                }
                Err(ActorError::NotHostedHere(_)) => {
                    return Err(ActorError::Invoke(format!(
                        "timed out after {:?} finding the host of actor {}||{}",
                        self.placement_wait, call.actor_type, call.actor_id
                    )));
                }
                other => return other,
            }
        }
    }

    /// A call another sidecar routed here: served only if this host owns
    /// the actor per its own tables.
    pub async fn call_hosted(&self, call: ActorCall) -> Result<ActorResponse, ActorError> {
        let owner = self
            .wait_owner(&call.actor_type, &call.actor_id, self.placement_wait)
            .await?;
        if owner != Owner::Local {
            return Err(ActorError::NotHostedHere(format!(
                "{}||{}",
                call.actor_type, call.actor_id
            )));
        }
        self.call_local(call).await
    }

    /// Runs the call on this host: activation, turn, app.
    async fn call_local(&self, mut call: ActorCall) -> Result<ActorResponse, ActorError> {
        if self.shutdown.is_cancelled() {
            return Err(ActorError::Closed);
        }
        if let Some(handler) = self.internal_handler(&call.actor_type) {
            return handler?.call(call).await;
        }
        let cfg = self.host_config();
        if !cfg.hosts(&call.actor_type) {
            // Placed here, but the app did not register the type (yet).
            return Err(ActorError::NotHostedHere(format!(
                "{}||{}",
                call.actor_type, call.actor_id
            )));
        }
        let type_cfg = cfg.type_config(&call.actor_type);
        if type_cfg.reentrancy.enabled && !call.headers.contains_key(REENTRANCY_ID_HEADER) {
            // Starts a chain; the app passes the id on to its own calls.
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(v) = HeaderValue::from_str(&id) {
                call.headers.insert(REENTRANCY_ID_HEADER, v);
            }
        }
        let reentrancy_id = call
            .headers
            .get(REENTRANCY_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let actor = self
            .table
            .get_or_activate(&call.actor_type, &call.actor_id, &type_cfg);
        let turn = tokio::select! {
            t = actor.lock.acquire(reentrancy_id.as_deref()) => t?,
            _ = self.shutdown.cancelled() => return Err(ActorError::Closed),
        };
        if actor.is_deactivated() {
            // Deactivated (moved away or idle) while this call waited.
            drop(turn);
            return Err(ActorError::NotHostedHere(format!(
                "{}||{}",
                call.actor_type, call.actor_id
            )));
        }
        actor.touch();
        let result = app::invoke(&self.invoker, &call).await;
        actor.touch();
        drop(turn);
        result
    }
}
