//! Per-component metrics as decorators applied once, where the component
//! registry stores a component, so no building block records by hand:
//! `dapr_component_state_*` and `dapr_component_secret_*` with Dapr's
//! operation names.

use std::{collections::HashMap, sync::Arc, time::Instant};

use async_trait::async_trait;
use dapr_components::{
    secretstores::{Secret, SecretError, SecretStore},
    state::{
        BulkGetItem, DeleteRequest, Features, GetRequest, SetRequest, StateError, StateItem,
        StateStore, TransactionOp, query,
    },
};

use crate::metrics::{self, component::Block, elapsed_ms};

fn record(block: Block, name: &str, op: &str, ok: bool, start: Instant) {
    if let Some(m) = metrics::get() {
        m.component.record(block, name, op, ok, elapsed_ms(start));
    }
}

/// Wraps a state store when metrics are on (otherwise returns it as is).
pub fn metered_state(name: &str, store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
    if metrics::get().is_none() {
        return store;
    }
    Arc::new(MeteredState {
        name: name.to_owned(),
        inner: store,
    })
}

/// Wraps a secret store when metrics are on.
pub fn metered_secrets(name: &str, store: Arc<dyn SecretStore>) -> Arc<dyn SecretStore> {
    if metrics::get().is_none() {
        return store;
    }
    Arc::new(MeteredSecrets {
        name: name.to_owned(),
        inner: store,
    })
}

struct MeteredState {
    name: String,
    inner: Arc<dyn StateStore>,
}

#[async_trait]
impl StateStore for MeteredState {
    fn features(&self) -> Features {
        self.inner.features()
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        let t = Instant::now();
        let r = self.inner.get(req).await;
        record(Block::State, &self.name, "get", r.is_ok(), t);
        r
    }

    async fn bulk_get(&self, reqs: &[GetRequest], parallelism: usize) -> Vec<BulkGetItem> {
        let t = Instant::now();
        let r = self.inner.bulk_get(reqs, parallelism).await;
        let ok = r.iter().all(|i| i.result.is_ok());
        record(Block::State, &self.name, "bulk_get", ok, t);
        r
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let t = Instant::now();
        let r = self.inner.set(req).await;
        record(Block::State, &self.name, "set", r.is_ok(), t);
        r
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let t = Instant::now();
        let r = self.inner.delete(req).await;
        record(Block::State, &self.name, "delete", r.is_ok(), t);
        r
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        let t = Instant::now();
        let r = self.inner.transact(ops).await;
        record(Block::State, &self.name, "transaction", r.is_ok(), t);
        r
    }

    async fn bulk_set(&self, reqs: &[SetRequest]) -> Result<(), StateError> {
        let t = Instant::now();
        let r = self.inner.bulk_set(reqs).await;
        record(Block::State, &self.name, "bulk_set", r.is_ok(), t);
        r
    }

    async fn bulk_delete(&self, reqs: &[DeleteRequest]) -> Result<(), StateError> {
        let t = Instant::now();
        let r = self.inner.bulk_delete(reqs).await;
        record(Block::State, &self.name, "bulk_delete", r.is_ok(), t);
        r
    }

    async fn query(
        &self,
        key_prefix: &str,
        q: &query::Query,
    ) -> Result<query::QueryResponse, StateError> {
        let t = Instant::now();
        let r = self.inner.query(key_prefix, q).await;
        record(Block::State, &self.name, "query", r.is_ok(), t);
        r
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.inner.ping().await
    }
}

struct MeteredSecrets {
    name: String,
    inner: Arc<dyn SecretStore>,
}

#[async_trait]
impl SecretStore for MeteredSecrets {
    async fn get(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Secret, SecretError> {
        let t = Instant::now();
        let r = self.inner.get(name, metadata).await;
        record(Block::Secret, &self.name, "get", r.is_ok(), t);
        r
    }

    async fn bulk_get(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, Secret>, SecretError> {
        let t = Instant::now();
        let r = self.inner.bulk_get(metadata).await;
        record(Block::Secret, &self.name, "bulk_get", r.is_ok(), t);
        r
    }
}
