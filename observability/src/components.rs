//! Per-component metrics as decorators applied once, where the component
//! registry stores a component, so no building block records by hand:
//! `dapr_component_state_*`, `dapr_component_secret_*`,
//! `dapr_component_configuration_*`, `dapr_component_output_binding_*` and
//! `dapr_component_input_binding_*` with Dapr's operation names.

use std::{collections::HashMap, sync::Arc, time::Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dapr_components::{
    bindings::{
        Binding, BindingError, BindingEvent, EventHandler, HandlerError, InputBinding,
        InvokeRequest, InvokeResponse, OutputBinding, Reader,
    },
    configuration::{ConfigurationError, ConfigurationStore, Items},
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

/// Wraps a configuration store when metrics are on.
pub fn metered_configuration(
    name: &str,
    store: Arc<dyn ConfigurationStore>,
) -> Arc<dyn ConfigurationStore> {
    if metrics::get().is_none() {
        return store;
    }
    Arc::new(MeteredConfiguration {
        name: name.to_owned(),
        inner: store,
    })
}

/// Wraps both sides of a binding component when metrics are on: output
/// calls by operation, input events by the app's outcome (Dapr measures the
/// delivery of each event to the app).
pub fn metered_binding(name: &str, binding: Binding) -> Binding {
    if metrics::get().is_none() {
        return binding;
    }
    Binding {
        input: binding.input.map(|inner| {
            Arc::new(MeteredInput {
                name: name.to_owned(),
                inner,
            }) as Arc<dyn InputBinding>
        }),
        output: binding.output.map(|inner| {
            Arc::new(MeteredOutput {
                name: name.to_owned(),
                inner,
            }) as Arc<dyn OutputBinding>
        }),
    }
}

struct MeteredConfiguration {
    name: String,
    inner: Arc<dyn ConfigurationStore>,
}

#[async_trait]
impl ConfigurationStore for MeteredConfiguration {
    async fn get(
        &self,
        keys: &[String],
        metadata: &HashMap<String, String>,
    ) -> Result<Items, ConfigurationError> {
        let t = Instant::now();
        let r = self.inner.get(keys, metadata).await;
        record(Block::Configuration, &self.name, "get", r.is_ok(), t);
        r
    }

    async fn subscribe(
        &self,
        keys: &[String],
        metadata: &HashMap<String, String>,
        updates: tokio::sync::mpsc::Sender<Items>,
    ) -> Result<(), ConfigurationError> {
        let t = Instant::now();
        let r = self.inner.subscribe(keys, metadata, updates).await;
        record(Block::Configuration, &self.name, "subscribe", r.is_ok(), t);
        r
    }
}

struct MeteredOutput {
    name: String,
    inner: Arc<dyn OutputBinding>,
}

#[async_trait]
impl OutputBinding for MeteredOutput {
    fn operations(&self) -> Vec<String> {
        self.inner.operations()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let op = req.operation.clone();
        let t = Instant::now();
        let r = self.inner.invoke(req).await;
        record(Block::OutputBinding, &self.name, &op, r.is_ok(), t);
        r
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

struct MeteredInput {
    name: String,
    inner: Arc<dyn InputBinding>,
}

#[async_trait]
impl InputBinding for MeteredInput {
    async fn read(&self, handler: Arc<dyn EventHandler>) -> Result<Reader, BindingError> {
        self.inner
            .read(Arc::new(MeteredHandler {
                name: self.name.clone(),
                inner: handler,
            }))
            .await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

struct MeteredHandler {
    name: String,
    inner: Arc<dyn EventHandler>,
}

#[async_trait]
impl EventHandler for MeteredHandler {
    async fn handle(&self, event: BindingEvent) -> Result<Bytes, HandlerError> {
        let t = Instant::now();
        let r = self.inner.handle(event).await;
        if let Some(m) = metrics::get() {
            m.component
                .input_binding(&self.name, r.is_ok(), elapsed_ms(t));
        }
        r
    }
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
