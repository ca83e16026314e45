//! The state building block as both APIs see it: store lookup, Dapr's key
//! scheme, TTL parsing and error mapping. HTTP and gRPC handlers only convert
//! their wire types to these calls.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use dapr_components::state::{
    BulkGetItem, Concurrency, Consistency, DeleteRequest, GetRequest, SetRequest, StateError,
    StateItem, TTL_METADATA_KEY, TransactionOp, query::Query,
};

use crate::{
    components::{KeyPrefix, Registry, StateStoreEntry},
    error::ApiError,
};

const SEPARATOR: &str = "||";

/// Write options as both APIs carry them.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    pub concurrency: Concurrency,
    pub consistency: Consistency,
}

/// One item to save, before key prefixing.
#[derive(Debug, Clone, Default)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub options: WriteOptions,
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
}

/// One item to delete, before key prefixing.
#[derive(Debug, Clone, Default)]
pub struct DeleteItem {
    pub key: String,
    pub etag: Option<String>,
    pub options: WriteOptions,
    pub metadata: HashMap<String, String>,
}

/// One transaction operation, before key prefixing.
#[derive(Debug, Clone)]
pub enum TxOperation {
    Upsert(SaveItem),
    Delete(DeleteItem),
}

/// A query result with the user's key (prefix removed).
#[derive(Debug, Clone)]
pub struct QueryItem {
    pub key: String,
    pub item: StateItem,
}

#[derive(Clone)]
pub struct StateApi {
    registry: Arc<Registry>,
    app_id: String,
    namespace: String,
}

impl StateApi {
    pub fn new(registry: Arc<Registry>, app_id: String, namespace: String) -> Self {
        Self {
            registry,
            app_id,
            namespace,
        }
    }

    fn store(&self, name: &str) -> Result<StateStoreEntry, ApiError> {
        if let Some(entry) = self.registry.state_store(name) {
            return Ok(entry);
        }
        if self.registry.has_state_stores() {
            Err(ApiError::StateStoreNotFound(name.to_owned()))
        } else {
            Err(ApiError::StateStoresNotConfigured)
        }
    }

    /// Dapr's key scheme: `<prefix>||<key>` (see `keyPrefix`).
    fn store_key(&self, store: &str, prefix: &KeyPrefix, key: &str) -> Result<String, ApiError> {
        if key.is_empty() {
            return Err(ApiError::EmptyStateKey);
        }
        let prefix = match prefix {
            KeyPrefix::None => return Ok(key.to_owned()),
            KeyPrefix::AppId => self.app_id.clone(),
            KeyPrefix::Name => store.to_owned(),
            KeyPrefix::Namespace if self.namespace.is_empty() => self.app_id.clone(),
            KeyPrefix::Namespace => format!("{}.{}", self.namespace, self.app_id),
            KeyPrefix::Custom(p) => p.clone(),
        };
        if key.contains(SEPARATOR) {
            return Err(ApiError::IllegalStateKey(key.to_owned()));
        }
        Ok(format!("{prefix}{SEPARATOR}{key}"))
    }

    /// The prefix of every key this app owns in `store`.
    fn key_prefix(&self, store: &str, prefix: &KeyPrefix) -> String {
        match prefix {
            KeyPrefix::None => String::new(),
            _ => self
                .store_key(store, prefix, "x")
                .map(|k| k[..k.len() - 1].to_owned())
                .unwrap_or_default(),
        }
    }

    pub async fn get(
        &self,
        store_name: &str,
        key: &str,
        consistency: Consistency,
        metadata: HashMap<String, String>,
    ) -> Result<Option<StateItem>, ApiError> {
        let entry = self.store(store_name)?;
        let req = GetRequest {
            key: self.store_key(store_name, &entry.prefix, key)?,
            consistency,
            metadata,
        };
        entry
            .store
            .get(&req)
            .await
            .map_err(|source| ApiError::StateGet {
                store: store_name.to_owned(),
                key: key.to_owned(),
                source,
            })
    }

    pub async fn bulk_get(
        &self,
        store_name: &str,
        keys: &[String],
        parallelism: usize,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<BulkGetItem>, ApiError> {
        let entry = self.store(store_name)?;
        let reqs = keys
            .iter()
            .map(|k| {
                Ok(GetRequest {
                    key: self.store_key(store_name, &entry.prefix, k)?,
                    consistency: Consistency::default(),
                    metadata: metadata.clone(),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let parallelism = if parallelism == 0 { 100 } else { parallelism };
        let mut items = entry.store.bulk_get(&reqs, parallelism).await;
        for (item, key) in items.iter_mut().zip(keys) {
            item.key = key.clone();
        }
        Ok(items)
    }

    fn set_request(
        &self,
        store_name: &str,
        entry: &StateStoreEntry,
        item: SaveItem,
    ) -> Result<SetRequest, ApiError> {
        let ttl = parse_ttl(&item.metadata).map_err(|source| ApiError::StateSave {
            store: store_name.to_owned(),
            source,
        })?;
        Ok(SetRequest {
            key: self.store_key(store_name, &entry.prefix, &item.key)?,
            value: item.value,
            etag: item.etag.filter(|e| !e.is_empty()),
            concurrency: item.options.concurrency,
            consistency: item.options.consistency,
            ttl,
            content_type: item.content_type,
            metadata: item.metadata,
        })
    }

    /// Saves items; with a transactional store, all of them or none.
    pub async fn save(&self, store_name: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
        let entry = self.store(store_name)?;
        let reqs = items
            .into_iter()
            .map(|i| self.set_request(store_name, &entry, i))
            .collect::<Result<Vec<_>, _>>()?;
        let result = match reqs.as_slice() {
            [] => Ok(()),
            [one] => entry.store.set(one).await,
            many => entry.store.bulk_set(many).await,
        };
        result.map_err(|source| ApiError::StateSave {
            store: store_name.to_owned(),
            source,
        })
    }

    pub async fn delete(
        &self,
        store_name: &str,
        key: &str,
        etag: Option<String>,
        options: WriteOptions,
        metadata: HashMap<String, String>,
    ) -> Result<(), ApiError> {
        let entry = self.store(store_name)?;
        let req = DeleteRequest {
            key: self.store_key(store_name, &entry.prefix, key)?,
            etag: etag.filter(|e| !e.is_empty()),
            concurrency: options.concurrency,
            consistency: options.consistency,
            metadata,
        };
        entry
            .store
            .delete(&req)
            .await
            .map_err(|source| ApiError::StateDelete {
                store: store_name.to_owned(),
                key: key.to_owned(),
                source,
            })
    }

    pub async fn bulk_delete(
        &self,
        store_name: &str,
        items: Vec<DeleteItem>,
    ) -> Result<(), ApiError> {
        let entry = self.store(store_name)?;
        let reqs = items
            .into_iter()
            .map(
                |DeleteItem {
                     key,
                     etag,
                     options,
                     metadata,
                 }| {
                    Ok(DeleteRequest {
                        key: self.store_key(store_name, &entry.prefix, &key)?,
                        etag: etag.filter(|e| !e.is_empty()),
                        concurrency: options.concurrency,
                        consistency: options.consistency,
                        metadata,
                    })
                },
            )
            .collect::<Result<Vec<_>, ApiError>>()?;
        entry
            .store
            .bulk_delete(&reqs)
            .await
            .map_err(|source| ApiError::StateDelete {
                store: store_name.to_owned(),
                key: String::new(),
                source,
            })
    }

    pub async fn transact(
        &self,
        store_name: &str,
        ops: Vec<TxOperation>,
        metadata: HashMap<String, String>,
    ) -> Result<(), ApiError> {
        let entry = self.store(store_name)?;
        if !entry.store.features().transactional {
            return Err(ApiError::StateNotTransactional(store_name.to_owned()));
        }
        let ops = ops
            .into_iter()
            .map(|op| {
                Ok(match op {
                    TxOperation::Upsert(mut item) => {
                        for (k, v) in &metadata {
                            item.metadata.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                        TransactionOp::Set(self.set_request(store_name, &entry, item)?)
                    }
                    TxOperation::Delete(DeleteItem {
                        key,
                        etag,
                        options,
                        metadata: mut op_md,
                    }) => {
                        for (k, v) in &metadata {
                            op_md.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                        TransactionOp::Delete(DeleteRequest {
                            key: self.store_key(store_name, &entry.prefix, &key)?,
                            etag: etag.filter(|e| !e.is_empty()),
                            concurrency: options.concurrency,
                            consistency: options.consistency,
                            metadata: op_md,
                        })
                    }
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        if ops.is_empty() {
            return Ok(());
        }
        // Transactional outbox: the events go out only if this commits.
        let ops = match &entry.outbox {
            Some(outbox) => crate::pubsub::outbox::publish_internal(
                &self.registry,
                outbox,
                &self.app_id,
                &self.namespace,
                ops,
                &crate::pubsub::new_traceparent(),
            )
            .await
            .map_err(|e| ApiError::PubSubOutbox {
                app_id: self.app_id.clone(),
                reason: e.to_string(),
            })?,
            None => ops,
        };
        entry
            .store
            .transact(&ops)
            .await
            .map_err(|source| match source {
                StateError::TooManyOperations { count, max } => ApiError::TooManyTransactionOps {
                    store: store_name.to_owned(),
                    count,
                    max,
                },
                source => ApiError::StateTransaction {
                    store: store_name.to_owned(),
                    source,
                },
            })
    }

    pub async fn query(
        &self,
        store_name: &str,
        body: &[u8],
    ) -> Result<(Vec<QueryItem>, Option<String>), ApiError> {
        let entry = self.store(store_name)?;
        if !entry.store.features().query {
            return Err(ApiError::StateQueryNotSupported(store_name.to_owned()));
        }
        let query = Query::parse(body).map_err(|e| ApiError::MalformedRequest(e.to_string()))?;
        let prefix = self.key_prefix(store_name, &entry.prefix);
        let resp =
            entry
                .store
                .query(&prefix, &query)
                .await
                .map_err(|source| ApiError::StateQuery {
                    store: store_name.to_owned(),
                    source,
                })?;
        let items = resp
            .results
            .into_iter()
            .map(|r| QueryItem {
                key: r.key,
                item: r.item,
            })
            .collect();
        Ok((items, resp.token))
    }
}

/// `metadata.ttlInSeconds`: a whole number of seconds; -1 means never expire.
fn parse_ttl(metadata: &HashMap<String, String>) -> Result<Option<Duration>, StateError> {
    let Some(raw) = metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TTL_METADATA_KEY))
        .map(|(_, v)| v.trim())
    else {
        return Ok(None);
    };
    let secs: i64 = raw.parse().map_err(|_| {
        StateError::InvalidRequest(format!(
            "invalid ttlInSeconds '{raw}': expected a whole number of seconds"
        ))
    })?;
    match secs {
        -1 => Ok(None),
        s if s > 0 => Ok(Some(Duration::from_secs(s as u64))),
        s => Err(StateError::InvalidRequest(format!(
            "invalid ttlInSeconds {s}: must be positive, or -1 for no expiry"
        ))),
    }
}

/// Dapr's wire names for concurrency and consistency.
pub fn parse_concurrency(s: &str) -> Result<Concurrency, ApiError> {
    match s {
        "" | "last-write" => Ok(Concurrency::LastWrite),
        "first-write" => Ok(Concurrency::FirstWrite),
        other => Err(ApiError::BadRequest(format!(
            "invalid concurrency '{other}': expected first-write or last-write"
        ))),
    }
}

pub fn parse_consistency(s: &str) -> Result<Consistency, ApiError> {
    match s {
        "" | "eventual" => Ok(Consistency::Eventual),
        "strong" => Ok(Consistency::Strong),
        other => Err(ApiError::BadRequest(format!(
            "invalid consistency '{other}': expected eventual or strong"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(ns: &str) -> StateApi {
        StateApi::new(Arc::new(Registry::default()), "myapp".into(), ns.into())
    }

    #[test]
    fn dapr_key_scheme() {
        let a = api("");
        assert_eq!(
            a.store_key("s", &KeyPrefix::AppId, "k").unwrap(),
            "myapp||k"
        );
        assert_eq!(a.store_key("s", &KeyPrefix::Name, "k").unwrap(), "s||k");
        assert_eq!(a.store_key("s", &KeyPrefix::None, "a||b").unwrap(), "a||b");
        assert_eq!(
            a.store_key("s", &KeyPrefix::Custom("p".into()), "k")
                .unwrap(),
            "p||k"
        );
        assert_eq!(
            api("prod")
                .store_key("s", &KeyPrefix::Namespace, "k")
                .unwrap(),
            "prod.myapp||k"
        );
        assert!(matches!(
            a.store_key("s", &KeyPrefix::AppId, "a||b"),
            Err(ApiError::IllegalStateKey(_))
        ));
        assert!(matches!(
            a.store_key("s", &KeyPrefix::AppId, ""),
            Err(ApiError::EmptyStateKey)
        ));
        assert_eq!(a.key_prefix("s", &KeyPrefix::AppId), "myapp||");
    }

    #[test]
    fn ttl_parsing() {
        let md = |v: &str| HashMap::from([("ttlInSeconds".to_string(), v.to_string())]);
        assert_eq!(parse_ttl(&md("10")).unwrap(), Some(Duration::from_secs(10)));
        assert_eq!(parse_ttl(&md("-1")).unwrap(), None);
        assert!(parse_ttl(&md("0")).is_err());
        assert!(parse_ttl(&md("1.5")).is_err());
        assert_eq!(parse_ttl(&HashMap::new()).unwrap(), None);
    }
}
