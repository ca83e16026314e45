//! The configuration API: get items, and subscriptions that stream changes to
//! a gRPC caller or POST them to the app (`/configuration/{store}/{key}`).
//! HTTP and gRPC only adapt shapes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use dapr_components::configuration::{ConfigurationError, ConfigurationStore, Items};
use http::StatusCode;
use tokio::sync::mpsc;
use tonic::Code;

use crate::{error::MappedError, sidecar::Sidecar};

/// Updates buffered per subscription before the store waits for the reader.
const UPDATE_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationApiError {
    #[error("configuration stores not configured")]
    NotConfigured,
    #[error("configuration store {0} not found")]
    StoreNotFound(String),
    #[error("failed to get {keys:?} from Configuration store {store}: {source}")]
    Get {
        store: String,
        keys: Vec<String>,
        source: ConfigurationError,
    },
    #[error("failed to subscribe {keys:?} from Configuration store {store}: {reason}")]
    Subscribe {
        store: String,
        keys: Vec<String>,
        reason: String,
    },
    #[error("failed to unsubscribe to configuration request {0}: subscription not found")]
    Unsubscribe(String),
}

impl From<ConfigurationApiError> for MappedError {
    fn from(e: ConfigurationApiError) -> Self {
        use ConfigurationApiError::*;
        let (code, http, grpc) = match &e {
            NotConfigured => (
                "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
            ),
            StoreNotFound(_) => (
                "ERR_CONFIGURATION_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            Get { .. } => (
                "ERR_CONFIGURATION_GET",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            Subscribe { .. } => (
                "ERR_CONFIGURATION_SUBSCRIBE",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            Unsubscribe(_) => (
                "ERR_CONFIGURATION_UNSUBSCRIBE",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        };
        MappedError::new(code, http, grpc, e.to_string())
    }
}

/// Live subscriptions by id; removing one drops its receiver, which stops
/// the store's watcher.
#[derive(Default)]
pub struct Subscriptions {
    stops: Mutex<HashMap<String, tokio_util::sync::CancellationToken>>,
}

impl Subscriptions {
    fn add(&self, id: &str) -> tokio_util::sync::CancellationToken {
        let token = tokio_util::sync::CancellationToken::new();
        self.stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), token.clone());
        token
    }

    fn remove(&self, id: &str) -> bool {
        match self
            .stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

fn store(
    sidecar: &Sidecar,
    name: &str,
) -> Result<Arc<dyn ConfigurationStore>, ConfigurationApiError> {
    if !sidecar.registry.has_configuration_stores() {
        return Err(ConfigurationApiError::NotConfigured);
    }
    sidecar
        .registry
        .configuration_store(name)
        .ok_or_else(|| ConfigurationApiError::StoreNotFound(name.to_owned()))
}

pub async fn get(
    sidecar: &Sidecar,
    store_name: &str,
    keys: &[String],
    metadata: &HashMap<String, String>,
) -> Result<Items, ConfigurationApiError> {
    store(sidecar, store_name)?
        .get(keys, metadata)
        .await
        .map_err(|source| ConfigurationApiError::Get {
            store: store_name.to_owned(),
            keys: keys.to_vec(),
            source,
        })
}

/// A started subscription: its id and the updates until it is unsubscribed.
pub struct Subscription {
    pub id: String,
    pub updates: mpsc::Receiver<Items>,
}

pub async fn subscribe(
    sidecar: &Sidecar,
    store_name: &str,
    keys: &[String],
    metadata: &HashMap<String, String>,
) -> Result<Subscription, ConfigurationApiError> {
    let store = store(sidecar, store_name)?;
    let (tx, rx) = mpsc::channel(UPDATE_BUFFER);
    store
        .subscribe(keys, metadata, tx)
        .await
        .map_err(|e| ConfigurationApiError::Subscribe {
            store: store_name.to_owned(),
            keys: keys.to_vec(),
            reason: e.to_string(),
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let stop = sidecar.registry.configuration_subscriptions.add(&id);
    // The receiver is handed out wrapped so unsubscribing ends it.
    let (out_tx, out_rx) = mpsc::channel(UPDATE_BUFFER);
    tokio::spawn(forward(rx, out_tx, stop));
    Ok(Subscription {
        id,
        updates: out_rx,
    })
}

async fn forward(
    mut from: mpsc::Receiver<Items>,
    to: mpsc::Sender<Items>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = to.closed() => return,
            item = from.recv() => match item {
                Some(items) => if to.send(items).await.is_err() { return },
                None => return,
            },
        }
    }
}

pub fn unsubscribe(sidecar: &Sidecar, id: &str) -> Result<(), ConfigurationApiError> {
    if sidecar.registry.configuration_subscriptions.remove(id) {
        Ok(())
    } else {
        Err(ConfigurationApiError::Unsubscribe(id.to_owned()))
    }
}

/// The HTTP API's subscription: each update is POSTed to the app, one request
/// per key, body `{"id":..,"items":{key:{value,version,metadata}}}`.
pub async fn subscribe_for_app(
    sidecar: Arc<Sidecar>,
    store_name: &str,
    keys: &[String],
    metadata: &HashMap<String, String>,
) -> Result<String, ConfigurationApiError> {
    let Some(app) = sidecar.invoker.app.clone() else {
        return Err(ConfigurationApiError::Subscribe {
            store: store_name.to_owned(),
            keys: keys.to_vec(),
            reason: "app channel is not initialized (no --app-port)".into(),
        });
    };
    let mut sub = subscribe(&sidecar, store_name, keys, metadata).await?;
    let id = sub.id.clone();
    let store = store_name.to_owned();
    tokio::spawn(async move {
        while let Some(items) = sub.updates.recv().await {
            for (key, item) in items {
                let body = serde_json::json!({
                    "id": sub.id,
                    "items": { key.clone(): item },
                });
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                let path = format!("/configuration/{store}/{key}");
                match app
                    .call_http(
                        http::Method::POST,
                        &path,
                        &headers,
                        axum::body::Body::from(body.to_string()),
                    )
                    .await
                {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    Ok(r) => tracing::warn!(
                        %path, status = r.status().as_u16(),
                        "the app refused a configuration update"
                    ),
                    Err(e) => {
                        tracing::warn!(%path, "sending a configuration update to the app: {e}")
                    }
                }
            }
        }
    });
    Ok(id)
}
