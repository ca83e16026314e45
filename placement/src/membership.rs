//! The replicated state: which daprd hosts serve which actor types, per
//! namespace. Changed only by committed Raft commands, so every placement
//! node holds the same tables and a new leader starts from them.

use std::collections::BTreeMap;

use dapr_placement_core::proto::{Host, PlacementTables};
use serde::{Deserialize, Serialize};

/// A daprd host with at least one actor type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMember {
    /// `"<ip>:<internal gRPC port>"`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// App ID.
    pub app_id: String,
    /// Actor types, sorted and de-duplicated.
    pub entities: Vec<String>,
    /// Internal gRPC port.
    pub port: i64,
    /// Actor API level reported by the host.
    pub api_level: u32,
    /// When the leader last changed this entry (Unix nanoseconds).
    pub updated_at: i64,
}

impl HostMember {
    /// A member from a host report (entities normalised).
    #[allow(deprecated)]
    pub fn from_report(h: &Host, updated_at: i64) -> Self {
        let mut entities = h.entities.clone();
        entities.sort();
        entities.dedup();
        entities.retain(|e| !e.is_empty());
        Self {
            name: h.name.clone(),
            namespace: h.namespace.clone(),
            app_id: h.id.clone(),
            entities,
            port: h.port,
            api_level: h.api_level,
            updated_at,
        }
    }

    /// Same placement-relevant content (everything but `updated_at`).
    pub fn same_as(&self, other: &HostMember) -> bool {
        self.name == other.name
            && self.namespace == other.namespace
            && self.app_id == other.app_id
            && self.entities == other.entities
            && self.port == other.port
            && self.api_level == other.api_level
    }
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add or replace a host (a host without entities is removed).
    Upsert(HostMember),
    /// Remove a host.
    Remove {
        /// Namespace.
        namespace: String,
        /// Host name.
        name: String,
    },
}

/// The Raft command: a batch of changes applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Changes, applied in order.
    pub changes: Vec<Change>,
}

/// Result of applying a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Table generation after the command.
    pub generation: u64,
    /// Namespaces whose tables changed, sorted.
    pub changed_namespaces: Vec<String>,
}

/// All members, per namespace, plus the table generation (bumped by every
/// command that changes something).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// namespace -> host name -> member.
    pub namespaces: BTreeMap<String, BTreeMap<String, HostMember>>,
    /// Table generation.
    pub table_generation: u64,
}

impl Membership {
    /// Applies a command.
    pub fn apply(&mut self, cmd: &Command) -> ApplyResult {
        let mut changed: Vec<String> = Vec::new();
        for change in &cmd.changes {
            let (ns, did) = match change {
                Change::Upsert(m) if m.entities.is_empty() => {
                    (m.namespace.clone(), self.remove(&m.namespace, &m.name))
                }
                Change::Upsert(m) => {
                    let hosts = self.namespaces.entry(m.namespace.clone()).or_default();
                    let did = match hosts.get(&m.name) {
                        Some(old) if old.same_as(m) => false,
                        _ => {
                            hosts.insert(m.name.clone(), m.clone());
                            true
                        }
                    };
                    (m.namespace.clone(), did)
                }
                Change::Remove { namespace, name } => {
                    (namespace.clone(), self.remove(namespace, name))
                }
            };
            if did && !changed.contains(&ns) {
                changed.push(ns);
            }
        }
        if !changed.is_empty() {
            self.table_generation += 1;
        }
        changed.sort();
        ApplyResult {
            generation: self.table_generation,
            changed_namespaces: changed,
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let Some(hosts) = self.namespaces.get_mut(namespace) else {
            return false;
        };
        let did = hosts.remove(name).is_some();
        if hosts.is_empty() {
            self.namespaces.remove(namespace);
        }
        did
    }

    /// The member `name` of `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&HostMember> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Members of every namespace.
    pub fn members(&self) -> impl Iterator<Item = &HostMember> {
        self.namespaces.values().flat_map(BTreeMap::values)
    }

    /// Actor API level of a namespace: the lowest level its hosts report,
    /// clamped to `[min, max]` (Dapr's `--min-api-level`/`--max-api-level`).
    pub fn api_level(&self, namespace: &str, min: u32, max: Option<u32>) -> u32 {
        let lowest = self
            .namespaces
            .get(namespace)
            .and_then(|h| h.values().map(|m| m.api_level).min())
            .unwrap_or(0);
        let level = lowest.max(min);
        max.map_or(level, |m| level.min(m))
    }

    /// The placement tables of a namespace, as sent in an "update" order.
    #[allow(deprecated)]
    pub fn placement_tables(
        &self,
        namespace: &str,
        replication_factor: i64,
        api_level: u32,
    ) -> PlacementTables {
        let mut tables = PlacementTables {
            version: self.table_generation.to_string(),
            api_level,
            replication_factor,
            ..Default::default()
        };
        if let Some(hosts) = self.namespaces.get(namespace) {
            for m in hosts.values() {
                for entity in &m.entities {
                    let table = tables.entries.entry(entity.clone()).or_default();
                    table.load_map.insert(
                        m.name.clone(),
                        Host {
                            name: m.name.clone(),
                            port: m.port,
                            id: m.app_id.clone(),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ns: &str, types: &[&str]) -> HostMember {
        HostMember {
            name: name.into(),
            namespace: ns.into(),
            app_id: format!("app-{name}"),
            entities: types.iter().map(|t| t.to_string()).collect(),
            port: 5000,
            api_level: 20,
            updated_at: 1,
        }
    }

    #[test]
    fn upsert_remove_and_generation() {
        let mut m = Membership::default();
        let r = m.apply(&Command {
            changes: vec![
                Change::Upsert(member("a:1", "ns1", &["T"])),
                Change::Upsert(member("b:1", "ns2", &["T", "U"])),
            ],
        });
        assert_eq!(r.generation, 1);
        assert_eq!(r.changed_namespaces, vec!["ns1", "ns2"]);

        // Same content, newer timestamp: no change.
        let mut same = member("a:1", "ns1", &["T"]);
        same.updated_at = 99;
        let r = m.apply(&Command {
            changes: vec![Change::Upsert(same)],
        });
        assert_eq!(r.generation, 1);
        assert!(r.changed_namespaces.is_empty());

        // Upsert without entities removes.
        let r = m.apply(&Command {
            changes: vec![Change::Upsert(member("a:1", "ns1", &[]))],
        });
        assert_eq!(r.changed_namespaces, vec!["ns1"]);
        assert!(!m.namespaces.contains_key("ns1"));

        let t = m.placement_tables("ns2", 100, 10);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries["U"].load_map["b:1"].id, "app-b:1");
        #[allow(deprecated)]
        {
            assert_eq!(t.version, "2");
        }
        assert_eq!(m.api_level("ns2", 0, Some(10)), 10);
        assert_eq!(m.api_level("none", 5, Some(10)), 5);
    }
}
