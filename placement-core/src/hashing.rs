//! The consistent-hash ring used to place actors on hosts.
//!
//! Bit-for-bit the algorithm Dapr's sidecars use, so a dapr-rs sidecar and a
//! Go daprd that hold the same placement table pick the same host for every
//! actor:
//!
//! * `hash(s)` is the first 8 bytes of BLAKE2b-512 over the UTF-8 bytes of
//!   `s`, read as a little-endian `u64`;
//! * every host contributes `replication_factor` virtual nodes, the i-th at
//!   `hash(host_name + decimal(i))` for `i` in `0..replication_factor`;
//! * an actor id `k` belongs to the host of the first virtual node whose hash
//!   is `>= hash(k)`, wrapping to the smallest virtual node past the end.
//!
//! Two virtual nodes of different hosts with the same 64-bit hash (odds about
//! `(hosts * factor)^2 / 2^65`) are resolved in Dapr by Go map iteration
//! order, i.e. not deterministically; here the host with the smaller name
//! keeps the point, so every dapr-rs sidecar at least agrees with the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use blake2::{Blake2b512, Digest};

/// Default number of virtual nodes per host (Dapr's `--replicationFactor`).
pub const DEFAULT_REPLICATION_FACTOR: i64 = 100;

/// The ring hash: first 8 bytes of BLAKE2b-512, little-endian.
pub fn hash(key: &[u8]) -> u64 {
    let digest = Blake2b512::digest(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The virtual-node hashes of one host, in index order (not sorted).
pub fn virtual_node_hashes(host: &str, replication_factor: i64) -> Vec<u64> {
    let count = usize::try_from(replication_factor).unwrap_or(0);
    let mut key = String::with_capacity(host.len() + 20);
    (0..count)
        .map(|i| {
            key.clear();
            key.push_str(host);
            key.push_str(&i.to_string());
            hash(key.as_bytes())
        })
        .collect()
}

/// Virtual-node hashes per host name.
type HostHashes = HashMap<String, Arc<[u64]>>;

/// Process-wide memo of virtual-node hashes per (replication factor, host),
/// so rebuilding the rings after every table update rehashes only new hosts.
#[derive(Debug, Default)]
pub struct VirtualNodesCache {
    data: Mutex<HashMap<i64, HostHashes>>,
}

impl VirtualNodesCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The hashes of `host`'s virtual nodes, computed once.
    pub fn hashes(&self, replication_factor: i64, host: &str) -> Arc<[u64]> {
        if let Ok(guard) = self.data.lock()
            && let Some(h) = guard.get(&replication_factor).and_then(|m| m.get(host))
        {
            return h.clone();
        }
        let computed: Arc<[u64]> = virtual_node_hashes(host, replication_factor).into();
        if let Ok(mut guard) = self.data.lock() {
            guard
                .entry(replication_factor)
                .or_default()
                .entry(host.to_owned())
                .or_insert_with(|| computed.clone());
        }
        computed
    }

    /// Forgets hosts not in `keep` (bounds the cache on long-lived sidecars).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut guard) = self.data.lock() {
            for hosts in guard.values_mut() {
                hosts.retain(|name, _| keep(name));
            }
        }
    }

    /// Number of hosts cached, over all replication factors.
    pub fn len(&self) -> usize {
        self.data
            .lock()
            .map(|g| g.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A host in a ring: what a placement table says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RingHost {
    /// `"<ip>:<internal gRPC port>"`: the address actor calls are sent to.
    pub name: String,
    /// App ID of the host.
    pub app_id: String,
    /// Internal gRPC port.
    pub port: i64,
}

impl RingHost {
    /// A host entry.
    pub fn new(name: impl Into<String>, app_id: impl Into<String>, port: i64) -> Self {
        Self {
            name: name.into(),
            app_id: app_id.into(),
            port,
        }
    }
}

/// A consistent-hash ring over a set of hosts (one per actor type).
#[derive(Debug, Clone, Default)]
pub struct Ring {
    replication_factor: i64,
    /// Hosts sorted by ring key.
    hosts: Vec<(String, RingHost)>,
    /// Virtual nodes sorted by hash (unique), with the index into `hosts`.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds a ring. Each host is given as (ring key, host); the ring key is
    /// the key of Dapr's `load_map`, normally equal to the host name. Later
    /// duplicates of a key replace earlier ones.
    pub fn new(
        hosts: impl IntoIterator<Item = (String, RingHost)>,
        replication_factor: i64,
        cache: Option<&VirtualNodesCache>,
    ) -> Self {
        let mut by_key: HashMap<String, RingHost> = HashMap::new();
        for (key, host) in hosts {
            by_key.insert(key, host);
        }
        let mut hosts: Vec<(String, RingHost)> = by_key.into_iter().collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));

        let per_host = usize::try_from(replication_factor).unwrap_or(0);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(hosts.len() * per_host);
        for (idx, (key, _)) in hosts.iter().enumerate() {
            let Ok(idx) = u32::try_from(idx) else { break };
            match cache {
                Some(cache) => points.extend(
                    cache
                        .hashes(replication_factor, key)
                        .iter()
                        .map(|h| (*h, idx)),
                ),
                None => points.extend(
                    virtual_node_hashes(key, replication_factor)
                        .into_iter()
                        .map(|h| (h, idx)),
                ),
            }
        }
        // Sort by hash, then by host order: on a collision the host whose key
        // sorts first keeps the point.
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Self {
            replication_factor,
            hosts,
            points,
        }
    }

    /// Convenience: a ring keyed by host name.
    pub fn from_hosts(hosts: impl IntoIterator<Item = RingHost>, replication_factor: i64) -> Self {
        Self::new(
            hosts.into_iter().map(|h| (h.name.clone(), h)),
            replication_factor,
            None,
        )
    }

    /// The host owning `key` (an actor id), or `None` for an empty ring.
    pub fn get(&self, key: &str) -> Option<&RingHost> {
        let idx = self.search(hash(key.as_bytes()))?;
        let (_, host_idx) = self.points[idx];
        self.hosts.get(host_idx as usize).map(|(_, h)| h)
    }

    /// Index into the sorted points of the first point `>= h`, wrapping.
    fn search(&self, h: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let idx = self.points.partition_point(|p| p.0 < h);
        Some(if idx >= self.points.len() { 0 } else { idx })
    }

    /// The sorted, de-duplicated virtual-node hashes.
    pub fn sorted_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.points.iter().map(|p| p.0)
    }

    /// Hosts of the ring, sorted by key.
    pub fn hosts(&self) -> impl Iterator<Item = &RingHost> {
        self.hosts.iter().map(|(_, h)| h)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the ring has no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Virtual nodes per host.
    pub fn replication_factor(&self) -> i64 {
        self.replication_factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_blake2b512_prefix_le() {
        // BLAKE2b-512("") = 786a02f742015903c6c6fd85...
        assert_eq!(
            hash(b""),
            u64::from_le_bytes([0x78, 0x6a, 0x02, 0xf7, 0x42, 0x01, 0x59, 0x03])
        );
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let ring = Ring::from_hosts(Vec::new(), 100);
        assert!(ring.get("a").is_none());
        let ring = Ring::from_hosts(vec![RingHost::new("h:1", "a", 1)], 0);
        assert!(ring.get("a").is_none());
    }

    #[test]
    fn single_host_owns_everything() {
        let ring = Ring::from_hosts(vec![RingHost::new("h:1", "a", 1)], 100);
        for i in 0..50 {
            assert_eq!(
                ring.get(&i.to_string()).map(|h| h.name.as_str()),
                Some("h:1")
            );
        }
    }

    #[test]
    fn removing_a_host_moves_only_its_keys() {
        let names = ["node1", "node2", "node3", "node4", "node5"];
        let all = Ring::from_hosts(names.iter().map(|n| RingHost::new(*n, *n, 1)), 100);
        let without = Ring::from_hosts(
            names
                .iter()
                .filter(|n| **n != "node3")
                .map(|n| RingHost::new(*n, *n, 1)),
            100,
        );
        for i in 0..1000 {
            let k = i.to_string();
            let before = all.get(&k).map(|h| h.name.clone());
            if before.as_deref() != Some("node3") {
                assert_eq!(before, without.get(&k).map(|h| h.name.clone()));
            }
        }
    }

    #[test]
    fn cache_and_direct_agree() {
        let cache = VirtualNodesCache::new();
        let hosts: Vec<_> = (0..20)
            .map(|i| RingHost::new(format!("10.0.0.{i}:5000"), "a", 5000))
            .collect();
        let direct = Ring::from_hosts(hosts.clone(), 100);
        let cached = Ring::new(
            hosts.into_iter().map(|h| (h.name.clone(), h)),
            100,
            Some(&cache),
        );
        assert_eq!(cache.len(), 20);
        assert!(direct.sorted_hashes().eq(cached.sorted_hashes()));
        for i in 0..200 {
            let k = format!("actor-{i}");
            assert_eq!(direct.get(&k), cached.get(&k));
        }
    }
}
