//! The actors active on this host: their turn locks, when they were last
//! used, and whether they are being deactivated.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{config::TypeConfig, turn::TurnLock};

/// One active actor.
pub struct ActiveActor {
    pub actor_type: String,
    pub actor_id: String,
    pub lock: Arc<TurnLock>,
    pub idle_timeout: Duration,
    last_used: Mutex<Instant>,
    deactivated: AtomicBool,
}

impl ActiveActor {
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Set once the actor is being deactivated: calls that were queued on it
    /// must look the actor up again.
    pub fn is_deactivated(&self) -> bool {
        self.deactivated.load(Ordering::Acquire)
    }

    pub fn mark_deactivated(&self) {
        self.deactivated.store(true, Ordering::Release);
    }
}

type Key = (String, String);

/// Active actors by (type, id).
#[derive(Default)]
pub struct ActiveActors {
    map: Mutex<HashMap<Key, Arc<ActiveActor>>>,
}

impl ActiveActors {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<ActiveActor>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The active actor, activated (in this table) if needed.
    pub fn get_or_activate(
        &self,
        actor_type: &str,
        actor_id: &str,
        cfg: &TypeConfig,
    ) -> Arc<ActiveActor> {
        let mut map = self.map();
        map.entry((actor_type.to_owned(), actor_id.to_owned()))
            .or_insert_with(|| {
                tracing::debug!(actor_type, actor_id, "actor activated");
                Arc::new(ActiveActor {
                    actor_type: actor_type.to_owned(),
                    actor_id: actor_id.to_owned(),
                    lock: TurnLock::new(cfg.reentrancy),
                    idle_timeout: cfg.idle_timeout,
                    last_used: Mutex::new(Instant::now()),
                    deactivated: AtomicBool::new(false),
                })
            })
            .clone()
    }

    pub fn get(&self, actor_type: &str, actor_id: &str) -> Option<Arc<ActiveActor>> {
        self.map()
            .get(&(actor_type.to_owned(), actor_id.to_owned()))
            .cloned()
    }

    pub fn contains(&self, actor_type: &str, actor_id: &str) -> bool {
        self.get(actor_type, actor_id).is_some()
    }

    /// Removes the entry if it is still `actor` (a newer activation stays).
    pub fn remove(&self, actor: &Arc<ActiveActor>) {
        let mut map = self.map();
        let key = (actor.actor_type.clone(), actor.actor_id.clone());
        if map.get(&key).is_some_and(|a| Arc::ptr_eq(a, actor)) {
            map.remove(&key);
        }
    }

    pub fn snapshot(&self) -> Vec<Arc<ActiveActor>> {
        self.map().values().cloned().collect()
    }

    /// Active actors per type.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (t, _) in self.map().keys() {
            *out.entry(t.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
