//! The bindings building block: output bindings the app invokes with an
//! operation, and input bindings that deliver events from outside to the app.
//!
//! A binding component only talks to its backend. The runtime owns the
//! `direction` metadata, the app delivery (HTTP `POST /<name>` or gRPC
//! `OnBindingEvent`), resiliency and the API shapes. An input binding hands
//! each event to an [`EventHandler`]; `Ok` (carrying the app's response body)
//! means the app took it and the component may acknowledge it to its source,
//! `Err` means it did not (the component nacks or requeues if its source can).

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ComponentMetadata, MetadataError};

pub use crate::pubsub::{StopSignal, Subscription as Reader};

pub mod cron;
pub mod http;
pub mod localstorage;
pub mod mqtt;
pub mod mysql;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod sql;

/// Component types this build can create.
pub const SUPPORTED_TYPES: &[&str] = &[
    "bindings.cron",
    "bindings.http",
    "bindings.localstorage",
    "bindings.redis",
    "bindings.postgres",
    "bindings.postgresql",
    "bindings.mysql",
    "bindings.rabbitmq",
    "bindings.mqtt3",
];

/// Operation names Dapr's components share (contrib's `OperationKind`).
pub mod ops {
    pub const CREATE: &str = "create";
    pub const GET: &str = "get";
    pub const DELETE: &str = "delete";
    pub const LIST: &str = "list";
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("unsupported binding type '{0}' (this build supports {list})", list = SUPPORTED_TYPES.join(", "))]
    Unsupported(String),
    /// The request is malformed for this component (missing request metadata,
    /// bad data); the message says which field.
    #[error("{0}")]
    InvalidRequest(String),
    /// The backend refused or failed the operation.
    #[error("{0}")]
    Backend(String),
    /// The operation failed but the backend answered: Dapr still returns
    /// the response metadata (e.g. `bindings.http` on a non-2xx status).
    #[error("{message}")]
    WithResponse {
        message: String,
        response: Box<InvokeResponse>,
    },
    #[error("the binding is closed")]
    Closed,
}

impl BindingError {
    /// A component metadata field that fails validation at init.
    pub fn invalid_metadata(field: &str, reason: impl Into<String>) -> Self {
        BindingError::Metadata(MetadataError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        })
    }
}

/// One call of an output binding.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    pub operation: String,
    pub data: Bytes,
    pub metadata: HashMap<String, String>,
}

impl InvokeRequest {
    /// A request metadata value, ignoring case as Dapr's components do;
    /// blank counts as absent.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// What an output binding returns: `data` becomes the HTTP body,
/// `metadata` the `metadata.<key>` headers.
#[derive(Debug, Clone, Default)]
pub struct InvokeResponse {
    pub data: Bytes,
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
}

/// One event read by an input binding.
#[derive(Debug, Clone, Default)]
pub struct BindingEvent {
    pub data: Bytes,
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
}

/// The app did not take the event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// Receives input binding events (the runtime's delivery to the app).
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// `Ok` carries the app's response body.
    async fn handle(&self, event: BindingEvent) -> Result<Bytes, HandlerError>;
}

#[async_trait]
pub trait OutputBinding: Send + Sync {
    /// Operation names this component accepts.
    fn operations(&self) -> Vec<String>;

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError>;

    /// Releases connections; called when the component is unloaded.
    async fn close(&self) {}
}

#[async_trait]
pub trait InputBinding: Send + Sync {
    /// Starts reading and handing events to `handler` until the returned
    /// [`Reader`] is stopped or dropped.
    async fn read(&self, handler: Arc<dyn EventHandler>) -> Result<Reader, BindingError>;

    async fn close(&self) {}
}

/// A built binding component: an input side, an output side, or both.
#[derive(Clone, Default)]
pub struct Binding {
    pub input: Option<Arc<dyn InputBinding>>,
    pub output: Option<Arc<dyn OutputBinding>>,
}

impl Binding {
    pub fn input(b: Arc<dyn InputBinding>) -> Self {
        Self {
            input: Some(b),
            output: None,
        }
    }

    pub fn output(b: Arc<dyn OutputBinding>) -> Self {
        Self {
            input: None,
            output: Some(b),
        }
    }

    /// A component that is both (e.g. a broker): one instance serves both.
    pub fn both<T: InputBinding + OutputBinding + 'static>(b: Arc<T>) -> Self {
        Self {
            input: Some(b.clone()),
            output: Some(b),
        }
    }
}

/// Builds a binding component from its `spec.type` and metadata. The
/// runtime drops the side the `direction` metadata excludes.
pub async fn create(type_: &str, metadata: &ComponentMetadata) -> Result<Binding, BindingError> {
    Ok(match type_ {
        "bindings.cron" => Binding::input(Arc::new(cron::CronBinding::new(metadata)?)),
        "bindings.http" => Binding::output(Arc::new(http::HttpBinding::new(metadata)?)),
        "bindings.localstorage" => Binding::output(Arc::new(
            localstorage::LocalStorageBinding::new(metadata).await?,
        )),
        "bindings.redis" => {
            Binding::output(Arc::new(redis::RedisBinding::connect(metadata).await?))
        }
        "bindings.postgres" | "bindings.postgresql" => Binding::output(Arc::new(
            postgres::PostgresBinding::connect(metadata).await?,
        )),
        "bindings.mysql" => {
            Binding::output(Arc::new(mysql::MySqlBinding::connect(metadata).await?))
        }
        "bindings.rabbitmq" => Binding::both(Arc::new(
            rabbitmq::RabbitMqBinding::connect(metadata).await?,
        )),
        "bindings.mqtt3" => Binding::both(Arc::new(mqtt::MqttBinding::new(metadata)?)),
        other => return Err(BindingError::Unsupported(other.to_owned())),
    })
}

/// Which sides the `direction` metadata enables (`input`, `output`, or a
/// comma-separated list); without it, every side the component has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    pub input: bool,
    pub output: bool,
    /// `direction` names `input` explicitly: the runtime skips asking the app
    /// whether it listens.
    pub explicit_input: bool,
}

impl Direction {
    pub fn from_metadata(md: &ComponentMetadata) -> Self {
        let Some(v) = md.get("direction") else {
            return Self {
                input: true,
                output: true,
                explicit_input: false,
            };
        };
        let mut d = Self {
            input: false,
            output: false,
            explicit_input: false,
        };
        for part in v.split(',') {
            match part.trim().to_ascii_lowercase().as_str() {
                "input" => {
                    d.input = true;
                    d.explicit_input = true;
                }
                "output" => d.output = true,
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_metadata() {
        let md = ComponentMetadata::new("b", "app");
        assert_eq!(
            Direction::from_metadata(&md),
            Direction {
                input: true,
                output: true,
                explicit_input: false
            }
        );
        let d = Direction::from_metadata(&md.clone().with("direction", " Input "));
        assert!(d.input && d.explicit_input && !d.output);
        let d = Direction::from_metadata(&md.clone().with("direction", "output, input"));
        assert!(d.input && d.output);
        let d = Direction::from_metadata(&md.with("direction", "output"));
        assert!(!d.input && d.output);
    }
}
