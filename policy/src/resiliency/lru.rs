//! A small least-recently-used map for circuit-breaker instances.

use std::collections::{BTreeMap, HashMap};

pub(crate) struct LruCache<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (V, u64)>,
    /// Last-use tick to key; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
}

impl<V: Clone> LruCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value for `key`, created with `make` if absent; evicts the least
    /// recently used entry when full.
    pub(crate) fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> V {
        self.tick += 1;
        let tick = self.tick;
        if let Some((value, last)) = self.entries.get_mut(key) {
            self.order.remove(last);
            *last = tick;
            self.order.insert(tick, key.to_owned());
            return value.clone();
        }
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        let value = make();
        self.entries.insert(key.to_owned(), (value.clone(), tick));
        self.order.insert(tick, key.to_owned());
        value
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = LruCache::new(2);
        assert_eq!(c.get_or_insert_with("a", || 1), 1);
        assert_eq!(c.get_or_insert_with("b", || 2), 2);
        assert_eq!(c.get_or_insert_with("a", || 99), 1, "hit keeps the value");
        assert_eq!(c.get_or_insert_with("c", || 3), 3);
        assert_eq!(c.len(), 2);
        assert!(c.contains("a") && c.contains("c") && !c.contains("b"));
        assert_eq!(
            c.get_or_insert_with("b", || 4),
            4,
            "evicted entries start over"
        );
        assert!(!c.contains("a"));
    }

    #[test]
    fn zero_capacity_holds_one() {
        let mut c = LruCache::new(0);
        c.get_or_insert_with("a", || 1);
        c.get_or_insert_with("b", || 2);
        assert_eq!((c.len(), c.capacity()), (1, 1));
    }
}
