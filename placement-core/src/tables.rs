//! A sidecar's view of the placement tables of its namespace.
//!
//! Built from a `PlacementTables` message exactly as Dapr's sidecars do: one
//! ring per actor type, made of the keys of that type's `load_map` with the
//! table's `replication_factor`. The deprecated `hosts`/`sorted_set` fields
//! are ignored (placement servers since Dapr 1.13 leave them empty). Rings
//! are built lazily, on the first lookup of a type, so an update costs only
//! for the types a sidecar actually calls.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use dapr_rs_proto::generated::dapr::proto::placement::v1::{Host, PlacementTables};

use crate::hashing::{Ring, RingHost, VirtualNodesCache};

/// The hosts of one actor type and their (lazily built) ring.
#[derive(Debug)]
pub struct TypeTable {
    /// The decoded `load_map`, kept as is (no per-update conversion).
    hosts: HashMap<String, Host>,
    ring: OnceLock<Ring>,
}

impl TypeTable {
    /// Hosts serving this type, as (ring key, host), sorted by key.
    pub fn hosts(&self) -> Vec<(String, RingHost)> {
        let mut v: Vec<(String, RingHost)> = self
            .hosts
            .iter()
            .map(|(k, h)| {
                (
                    k.clone(),
                    RingHost::new(h.name.clone(), h.id.clone(), h.port),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host serves this type.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether the host with ring key `name` serves this type.
    pub fn contains(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }
}

/// Placement tables of one namespace at one version.
#[derive(Debug)]
pub struct ActorTables {
    version: u64,
    replication_factor: i64,
    api_level: u32,
    types: HashMap<String, TypeTable>,
    cache: Arc<VirtualNodesCache>,
}

impl ActorTables {
    /// Tables with no actor type (before the first update).
    pub fn empty(cache: Arc<VirtualNodesCache>) -> Self {
        Self {
            version: 0,
            replication_factor: crate::hashing::DEFAULT_REPLICATION_FACTOR,
            api_level: 0,
            types: HashMap::new(),
            cache,
        }
    }

    /// Takes an "update" order's tables. `version` is the order's version
    /// (or, from old servers, the decimal `tables.version`).
    pub fn from_proto(
        tables: PlacementTables,
        version: u64,
        cache: Arc<VirtualNodesCache>,
    ) -> Self {
        #[allow(deprecated)]
        let api_level = tables.api_level;
        let replication_factor = tables.replication_factor;
        let types = tables
            .entries
            .into_iter()
            .map(|(actor_type, table)| {
                (
                    actor_type,
                    TypeTable {
                        hosts: table.load_map,
                        ring: OnceLock::new(),
                    },
                )
            })
            .collect();
        Self {
            version,
            replication_factor,
            api_level,
            types,
            cache,
        }
    }

    /// Table version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Virtual nodes per host.
    pub fn replication_factor(&self) -> i64 {
        self.replication_factor
    }

    /// Actor API level announced by placement (deprecated field, informative).
    pub fn api_level(&self) -> u32 {
        self.api_level
    }

    /// Actor types with at least one host, sorted.
    pub fn actor_types(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.types.keys().map(String::as_str).collect();
        t.sort_unstable();
        t
    }

    /// The table of one actor type.
    pub fn table(&self, actor_type: &str) -> Option<&TypeTable> {
        self.types.get(actor_type)
    }

    /// The ring of one actor type, built on first use.
    pub fn ring(&self, actor_type: &str) -> Option<&Ring> {
        let t = self.types.get(actor_type)?;
        Some(t.ring.get_or_init(|| {
            Ring::new(
                t.hosts.iter().map(|(k, h)| {
                    (
                        k.clone(),
                        RingHost::new(h.name.clone(), h.id.clone(), h.port),
                    )
                }),
                self.replication_factor,
                Some(&self.cache),
            )
        }))
    }

    /// The host owning actor `actor_id` of type `actor_type`.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Option<&RingHost> {
        self.ring(actor_type)?.get(actor_id)
    }

    /// Total number of (type, host) entries.
    pub fn entry_count(&self) -> usize {
        self.types.values().map(|t| t.hosts.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use dapr_rs_proto::generated::dapr::proto::placement::v1::{Host, PlacementTable};

    use super::*;

    fn host(name: &str, id: &str) -> Host {
        Host {
            name: name.into(),
            id: id.into(),
            port: 1,
            ..Default::default()
        }
    }

    #[test]
    fn builds_rings_from_load_map_keys() {
        let mut load_map = HashMap::new();
        load_map.insert("a:1".to_string(), host("a:1", "app-a"));
        load_map.insert("b:1".to_string(), host("b:1", "app-b"));
        let mut entries = HashMap::new();
        entries.insert(
            "T".to_string(),
            PlacementTable {
                load_map,
                ..Default::default()
            },
        );
        let tables = PlacementTables {
            entries,
            replication_factor: 100,
            ..Default::default()
        };
        let view = ActorTables::from_proto(tables, 7, Arc::new(VirtualNodesCache::new()));
        assert_eq!(view.version(), 7);
        assert_eq!(view.actor_types(), vec!["T"]);
        let direct = Ring::from_hosts(
            vec![
                RingHost::new("a:1", "app-a", 1),
                RingHost::new("b:1", "app-b", 1),
            ],
            100,
        );
        for i in 0..100 {
            let id = format!("id-{i}");
            assert_eq!(view.lookup("T", &id), direct.get(&id));
        }
        assert!(view.lookup("Other", "x").is_none());
    }
}
