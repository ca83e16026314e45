//! Actor types the sidecar itself hosts (Dapr's `dapr.internal.*` types:
//! workflow instances and activities). They are placed like app actors, but
//! a call that lands on this host goes to a handler inside daprd instead of
//! the app, without the turn lock (the handler serializes what it must),
//! and the types are registered with placement only while the handler says
//! it is hosting (a workflow worker is connected).

use std::sync::{Arc, RwLock};

use super::{ActorCall, ActorError, ActorResponse, ActorRuntime};

/// Serves calls to the internal actor types on this host.
#[async_trait::async_trait]
pub trait InternalHandler: Send + Sync + 'static {
    async fn call(&self, call: ActorCall) -> Result<ActorResponse, ActorError>;
}

#[derive(Default)]
pub(super) struct InternalTypes {
    types: Vec<String>,
    handler: Option<Arc<dyn InternalHandler>>,
    hosting: bool,
}

pub(super) type InternalSlot = RwLock<InternalTypes>;

impl ActorRuntime {
    fn internal(&self) -> std::sync::RwLockReadGuard<'_, InternalTypes> {
        self.internal.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the handler of the internal `types` (once per sidecar).
    pub fn set_internal_handler(&self, types: Vec<String>, handler: Arc<dyn InternalHandler>) {
        let mut g = self.internal.write().unwrap_or_else(|e| e.into_inner());
        g.types = types;
        g.handler = Some(handler);
    }

    /// Registers (or withdraws) the internal types with placement.
    pub fn set_internal_hosting(&self, hosting: bool) {
        {
            let mut g = self.internal.write().unwrap_or_else(|e| e.into_inner());
            if g.hosting == hosting {
                return;
            }
            g.hosting = hosting;
        }
        let entities = self.entities();
        tracing::info!(hosting, ?entities, "internal actor types updated");
        self.placement.set_entities(entities);
    }

    /// The app's types plus the internal ones while hosting.
    pub(super) fn entities(&self) -> Vec<String> {
        let mut entities = self.host_config().entities();
        let g = self.internal();
        if g.hosting {
            entities.extend(g.types.iter().cloned());
        }
        entities
    }

    /// The handler for `actor_type` if it is an internal type; `Err` when it
    /// is one this host does not serve right now.
    pub(super) fn internal_handler(
        &self,
        actor_type: &str,
    ) -> Option<Result<Arc<dyn InternalHandler>, ActorError>> {
        let g = self.internal();
        if !g.types.iter().any(|t| t == actor_type) {
            return None;
        }
        Some(match (&g.handler, g.hosting) {
            (Some(h), true) => Ok(h.clone()),
            _ => Err(ActorError::NotHostedHere(actor_type.to_owned())),
        })
    }
}
