//! Actor state on the component marked `actorStateStore: "true"`, with
//! Dapr's keys: `<appid>||<type>||<id>||<key>`, partition key
//! `<appid>||<type>||<id>`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use dapr_components::state::{
    DeleteRequest, GetRequest, SetRequest, StateStore, TTL_METADATA_KEY, TransactionOp,
};

use super::error::ActorError;
use crate::components::Registry;

const SEPARATOR: &str = "||";
const PARTITION_KEY: &str = "partitionKey";

/// One operation of an actor state transaction.
#[derive(Debug, Clone)]
pub enum ActorStateOp {
    Upsert {
        key: String,
        value: Bytes,
        etag: Option<String>,
        metadata: HashMap<String, String>,
    },
    Delete {
        key: String,
        etag: Option<String>,
    },
}

/// A state value with the store's metadata (e.g. `ttlExpireTime`).
#[derive(Debug, Clone)]
pub struct ActorStateValue {
    pub data: Bytes,
    pub etag: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// The actor state store of this sidecar (resolved per call, so hot reload
/// can swap it).
#[derive(Clone)]
pub struct ActorStateStore {
    pub name: String,
    pub store: Arc<dyn StateStore>,
    app_id: String,
}

impl ActorStateStore {
    /// The store marked `actorStateStore: "true"`; it must be transactional.
    pub fn resolve(registry: &Registry, app_id: &str) -> Result<Self, ActorError> {
        let name = registry
            .infos()
            .into_iter()
            .find(|c| c.type_.starts_with("state.") && c.capabilities.iter().any(|c| c == "ACTOR"))
            .map(|c| c.name)
            .ok_or(ActorError::RuntimeNotFound)?;
        let entry = registry
            .state_store(&name)
            .ok_or(ActorError::RuntimeNotFound)?;
        let f = entry.store.features();
        if !f.transactional || !f.etag {
            return Err(ActorError::StateTransactionSave(format!(
                "state store {name} can't be the actor state store: it must support transactions and etags"
            )));
        }
        Ok(Self {
            name,
            store: entry.store,
            app_id: app_id.to_owned(),
        })
    }

    /// `<appid>||<type>||<id>`, the partition key of one actor.
    pub fn actor_prefix(&self, actor_type: &str, actor_id: &str) -> String {
        format!(
            "{}{SEPARATOR}{actor_type}{SEPARATOR}{actor_id}",
            self.app_id
        )
    }

    /// `<appid>||<type>||<id>||<key>`.
    pub fn key(&self, actor_type: &str, actor_id: &str, key: &str) -> String {
        format!(
            "{}{SEPARATOR}{key}",
            self.actor_prefix(actor_type, actor_id)
        )
    }

    fn metadata(&self, actor_type: &str, actor_id: &str) -> HashMap<String, String> {
        HashMap::from([(
            PARTITION_KEY.to_owned(),
            self.actor_prefix(actor_type, actor_id),
        )])
    }

    pub async fn get(
        &self,
        actor_type: &str,
        actor_id: &str,
        key: &str,
    ) -> Result<Option<ActorStateValue>, ActorError> {
        let req = GetRequest {
            key: self.key(actor_type, actor_id, key),
            metadata: self.metadata(actor_type, actor_id),
            ..Default::default()
        };
        let item = self
            .store
            .get(&req)
            .await
            .map_err(|e| ActorError::StateGet(e.to_string()))?;
        Ok(item.map(|i| ActorStateValue {
            data: i.value,
            etag: i.etag,
            metadata: i.metadata,
        }))
    }

    /// Applies the operations atomically.
    pub async fn transact(
        &self,
        actor_type: &str,
        actor_id: &str,
        ops: Vec<ActorStateOp>,
    ) -> Result<(), ActorError> {
        let base = self.metadata(actor_type, actor_id);
        let save_err = |m: String| ActorError::StateTransactionSave(m);
        let ops = ops
            .into_iter()
            .map(|op| match op {
                ActorStateOp::Upsert {
                    key,
                    value,
                    etag,
                    mut metadata,
                } => {
                    if key.is_empty() {
                        return Err(save_err("missing key".into()));
                    }
                    let ttl = parse_ttl(&metadata).map_err(save_err)?;
                    for (k, v) in &base {
                        metadata.insert(k.clone(), v.clone());
                    }
                    Ok(TransactionOp::Set(SetRequest {
                        key: self.key(actor_type, actor_id, &key),
                        value,
                        etag: etag.filter(|e| !e.is_empty()),
                        ttl,
                        metadata,
                        ..Default::default()
                    }))
                }
                ActorStateOp::Delete { key, etag } => {
                    if key.is_empty() {
                        return Err(save_err("missing key".into()));
                    }
                    Ok(TransactionOp::Delete(DeleteRequest {
                        key: self.key(actor_type, actor_id, &key),
                        etag: etag.filter(|e| !e.is_empty()),
                        metadata: base.clone(),
                        ..Default::default()
                    }))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ops.is_empty() {
            return Ok(());
        }
        self.store
            .transact(&ops)
            .await
            .map_err(|e| save_err(e.to_string()))
    }
}

/// `ttlInSeconds`: a positive integer, or -1 for no expiry.
fn parse_ttl(md: &HashMap<String, String>) -> Result<Option<Duration>, String> {
    let Some(v) = md.get(TTL_METADATA_KEY) else {
        return Ok(None);
    };
    match v.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n as u64))),
        _ => Err(format!(
            "invalid ttlInSeconds {v}: must be a positive integer, or -1 for no expiry"
        )),
    }
}

/// A transaction from the APIs: only for an actor active on this host, as
/// in Dapr (`ERR_ACTOR_INSTANCE_MISSING` otherwise).
pub async fn transact_active(
    rt: &super::ActorRuntime,
    actor_type: &str,
    actor_id: &str,
    ops: Vec<ActorStateOp>,
) -> Result<(), ActorError> {
    let store = rt.state_store()?;
    if !rt.is_active(actor_type, actor_id) {
        return Err(ActorError::InstanceMissing);
    }
    store.transact(actor_type, actor_id, ops).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl() {
        let md = |v: &str| HashMap::from([(TTL_METADATA_KEY.to_owned(), v.to_owned())]);
        assert_eq!(parse_ttl(&md("5")).unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(parse_ttl(&md("-1")).unwrap(), None);
        assert!(parse_ttl(&md("0")).is_err());
        assert!(parse_ttl(&md("x")).is_err());
    }
}
