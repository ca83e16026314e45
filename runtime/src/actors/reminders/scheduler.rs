//! One task fires every timer and reminder of this sidecar: entries sit in a
//! `BTreeMap` ordered by due instant, the task sleeps until the earliest, pops
//! everything due and hands each fire to a short-lived delivery task (bounded
//! by a semaphore). A reminder is re-queued only after its delivery finished,
//! so ticks of one reminder never overlap (Dapr's behaviour).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::model::{Kind, Reminder};

/// (kind, `type||id||name`).
pub type EntryId = (Kind, String);

struct Entry {
    generation: u64,
    /// The stored definition's first tick: a reminder replaced in the store
    /// (by any host) has a different one.
    origin: DateTime<Utc>,
    /// `None` while a delivery holds it.
    reminder: Option<Reminder>,
    /// The callback body (fixed per definition), built once.
    body: Bytes,
    /// A track of this reminder is in the store.
    tracked: bool,
    due: Option<(Instant, u64)>,
}

#[derive(Default)]
pub struct Queue {
    order: BTreeMap<(Instant, u64), EntryId>,
    entries: HashMap<EntryId, Entry>,
    seq: u64,
    /// actor key → timer names, to drop an actor's timers on deactivation.
    timers_by_actor: HashMap<String, HashSet<String>>,
}

/// A fire taken off the queue.
pub struct Fire {
    pub id: EntryId,
    pub generation: u64,
    pub reminder: Reminder,
    pub body: Bytes,
    pub tracked: bool,
}

pub fn instant_for(t: DateTime<Utc>) -> Instant {
    let now = Instant::now();
    match (t - Utc::now()).to_std() {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

impl Queue {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Inserts or replaces; returns the new generation and whether it is now
    /// the earliest entry (the task must wake).
    pub fn upsert(&mut self, kind: Kind, reminder: Reminder) -> (u64, bool) {
        let origin = reminder.registered_time;
        self.upsert_from(kind, reminder, origin, false)
    }

    /// As [`Queue::upsert`] for a stored reminder resumed from its track:
    /// `origin` is the stored first tick.
    pub fn upsert_from(
        &mut self,
        kind: Kind,
        reminder: Reminder,
        origin: DateTime<Utc>,
        tracked: bool,
    ) -> (u64, bool) {
        let id = (kind, reminder.key());
        self.remove(&id);
        if kind == Kind::Timer {
            self.timers_by_actor
                .entry(reminder.actor_key())
                .or_default()
                .insert(reminder.name.clone());
        }
        let generation = self.next_seq();
        let due = (instant_for(reminder.registered_time), self.next_seq());
        let earliest = self.order.keys().next().is_none_or(|first| due < *first);
        self.order.insert(due, id.clone());
        self.entries.insert(
            id,
            Entry {
                generation,
                origin,
                body: reminder.callback_body(kind),
                tracked,
                reminder: Some(reminder),
                due: Some(due),
            },
        );
        (generation, earliest)
    }

    pub fn contains(&self, id: &EntryId) -> bool {
        self.entries.contains_key(id)
    }

    /// The stored first tick of a scheduled entry.
    pub fn origin(&self, id: &EntryId) -> Option<DateTime<Utc>> {
        self.entries.get(id).map(|e| e.origin)
    }

    /// Removes an entry (queued or in flight); true when it existed.
    pub fn remove(&mut self, id: &EntryId) -> bool {
        let Some(e) = self.entries.remove(id) else {
            return false;
        };
        if let Some(due) = e.due {
            self.order.remove(&due);
        }
        if id.0 == Kind::Timer
            && let Some(r) = &e.reminder
        {
            self.forget_timer(&r.actor_key(), &r.name);
        } else if id.0 == Kind::Timer {
            // In flight: find the actor from the key (`type||id||name`).
            if let Some((actor, name)) = id.1.rsplit_once("||") {
                self.forget_timer(actor, name);
            }
        }
        true
    }

    fn forget_timer(&mut self, actor_key: &str, name: &str) {
        if let Some(set) = self.timers_by_actor.get_mut(actor_key) {
            set.remove(name);
            if set.is_empty() {
                self.timers_by_actor.remove(actor_key);
            }
        }
    }

    /// Removes only if the entry is still the given generation.
    pub fn remove_if(&mut self, id: &EntryId, generation: u64) -> bool {
        if self
            .entries
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            return self.remove(id);
        }
        false
    }

    /// Every timer of one actor.
    pub fn remove_actor_timers(&mut self, actor_key: &str) -> usize {
        let Some(names) = self.timers_by_actor.remove(actor_key) else {
            return 0;
        };
        let mut n = 0;
        for name in names {
            let id = (Kind::Timer, format!("{actor_key}||{name}"));
            if let Some(e) = self.entries.remove(&id) {
                if let Some(due) = e.due {
                    self.order.remove(&due);
                }
                n += 1;
            }
        }
        n
    }

    /// Every reminder key of one actor type that is scheduled here.
    pub fn reminder_keys_of_type(&self, actor_type: &str) -> Vec<String> {
        let prefix = format!("{actor_type}||");
        self.entries
            .keys()
            .filter(|(k, key)| *k == Kind::Reminder && key.starts_with(&prefix))
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Takes up to `max` due fires; returns them and the next due instant.
    pub fn pop_due(&mut self, now: Instant, max: usize) -> (Vec<Fire>, Option<Instant>) {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((&due, _)) = self.order.iter().next() else {
                break;
            };
            if due.0 > now {
                break;
            }
            let Some(id) = self.order.remove(&due) else {
                break;
            };
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            e.due = None;
            if let Some(reminder) = e.reminder.take() {
                out.push(Fire {
                    id,
                    generation: e.generation,
                    reminder,
                    body: e.body.clone(),
                    tracked: e.tracked,
                });
            }
        }
        let next = self.order.keys().next().map(|d| d.0);
        (out, next)
    }

    /// Puts a fired entry back for its next tick, unless it was removed or
    /// replaced meanwhile. Returns whether it is now the earliest.
    pub fn requeue(&mut self, fire: Fire, at: Instant) -> bool {
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(&fire.id) else {
            return false;
        };
        if e.generation != fire.generation {
            return false;
        }
        let due = (at, seq);
        let earliest = self.order.keys().next().is_none_or(|first| due < *first);
        e.reminder = Some(fire.reminder);
        e.tracked = fire.tracked;
        e.due = Some(due);
        self.order.insert(due, fire.id);
        earliest
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The queue behind a std mutex: every critical section is short and never
/// awaits.
pub type SharedQueue = Mutex<Queue>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::reminders::model::CreateRequest;

    fn r(id: &str, due: &str) -> Reminder {
        CreateRequest {
            actor_type: "T".into(),
            actor_id: id.into(),
            name: "n".into(),
            due_time: due.into(),
            ..Default::default()
        }
        .build(Kind::Timer, Utc::now())
        .unwrap()
    }

    #[test]
    fn pops_in_due_order_and_respects_generations() {
        let mut q = Queue::default();
        q.upsert(Kind::Timer, r("b", "50ms"));
        q.upsert(Kind::Timer, r("a", "0s"));
        let later = Instant::now() + std::time::Duration::from_secs(1);
        let (fires, next) = q.pop_due(later, 10);
        let ids: Vec<_> = fires.iter().map(|f| f.reminder.actor_id.clone()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(next.is_none());
        let mut fires = fires.into_iter();
        let a = fires.next().unwrap();
        // Replaced while in flight: the old fire does not come back.
        q.upsert(Kind::Timer, r("a", "10s"));
        assert!(!q.requeue(a, later));
        assert_eq!(q.len(), 2);
        assert_eq!(q.remove_actor_timers("T||a"), 1);
        assert_eq!(q.remove_actor_timers("T||b"), 1);
        assert!(q.is_empty());
    }
}
