//! [`ReminderHost`] for the sidecar's [`ActorRuntime`], and the wiring that
//! re-evaluates reminders whenever a placement dissemination completes.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use dapr_components::state::StateStore;

use super::{Callback, DeliverError, Delivery, Owner, ReminderHost, Reminders};
use crate::actors::{self, ActorError, ActorRuntime, CallbackOutcome};

#[async_trait]
impl ReminderHost for ActorRuntime {
    fn hosted_types(&self) -> Vec<String> {
        self.host_config().entities()
    }

    fn is_hosted(&self, actor_type: &str) -> bool {
        self.hosts_type(actor_type)
    }

    fn reminder_partitions(&self, actor_type: &str) -> u32 {
        let n = self
            .host_config()
            .type_config(actor_type)
            .reminders_storage_partitions;
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }

    fn owner(&self, actor_type: &str, actor_id: &str) -> Owner {
        match ActorRuntime::owner(self, actor_type, actor_id) {
            actors::Owner::Local => Owner::Local,
            actors::Owner::Remote { .. } => Owner::Remote,
            // No host for the type yet: like a table in flux, decide later.
            actors::Owner::NotReady | actors::Owner::NoHost => Owner::NotReady,
        }
    }

    fn is_active(&self, actor_type: &str, actor_id: &str) -> bool {
        ActorRuntime::is_active(self, actor_type, actor_id)
    }

    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        ActorRuntime::state_store(self).ok().map(|s| s.store)
    }

    async fn deliver(&self, cb: Callback) -> Result<Delivery, DeliverError> {
        // The body was built once per reminder (`Callback::body`).
        let method = cb.method();
        match self
            .deliver_callback_body(cb.actor_type, cb.actor_id, method, cb.body)
            .await
        {
            Ok(CallbackOutcome::Delivered) => Ok(Delivery::Done),
            Ok(CallbackOutcome::Cancel) => Ok(Delivery::Cancel),
            Err(ActorError::NotHostedHere(_)) => Err(DeliverError::NotLocal),
            Err(e) => Err(DeliverError::Failed(e.to_string())),
        }
    }
}

/// Starts `reminders` on `rt`: scheduling, and an evaluation after every
/// completed placement dissemination (this is also how reminders stored
/// before a restart, or by a host that left, start firing here).
pub fn attach(reminders: &Arc<Reminders>, rt: &Arc<ActorRuntime>) {
    let weak: Weak<dyn ReminderHost> = Arc::downgrade(rt) as Weak<dyn ReminderHost>;
    reminders.start(weak);
    let mut updates = rt.table_updates();
    let r = reminders.clone();
    tokio::spawn(async move {
        // The current version too: tables may already be in place.
        r.placement_changed();
        while updates.changed().await.is_ok() {
            r.placement_changed();
        }
    });
}
