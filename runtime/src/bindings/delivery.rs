//! Delivery of one input binding event to the app, as Dapr does: HTTP apps
//! get `POST /<route>` with the data as body and the event metadata as
//! headers; gRPC apps get `OnBindingEvent`. Attempts run under the binding's
//! inbound resiliency policy; the outcome goes back to the component (`Ok`:
//! it may acknowledge the event to its source).
//!
//! A gRPC app may still answer with `to` (output bindings) and `data`: the
//! data is sent to each with the `create` operation, in order or in parallel
//! per `concurrency`. Dapr ignores the HTTP app's response body for this (only
//! its gRPC channel reads `to`), and so do we.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use dapr_components::bindings::{BindingEvent, EventHandler, HandlerError, InvokeRequest};
use dapr_policy::resiliency::{Policy, PolicyError, RetryableError};
use dapr_rs_proto::runtime::{
    self as pb, app_callback_client::AppCallbackClient,
    binding_event_response::BindingEventConcurrency,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use tonic::transport::Channel;

use crate::{appchannel::AppChannel, components::Registry, pubsub::delivery::with_app_token};

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("fails to send binding event to http app channel, status code: {status} body: {body}")]
    Status { status: u16, body: String },
    #[error("error invoking app: {0}")]
    Channel(String),
    #[error("error invoking app: {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
}

impl RetryableError for DeliveryError {
    fn http_status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn grpc_code(&self) -> Option<i32> {
        match self {
            DeliveryError::Grpc { code, .. } => Some(*code as i32),
            _ => None,
        }
    }
}

/// Hands one input binding's events to the app.
pub struct BindingDeliverer {
    pub name: String,
    /// Path for HTTP apps, without the leading slash.
    pub route: String,
    pub app: AppChannel,
    pub policy: Policy,
    /// Set for gRPC apps.
    pub grpc: Option<AppCallbackClient<Channel>>,
    /// For `to` in a gRPC app's answer.
    pub registry: Arc<Registry>,
}

impl BindingDeliverer {
    async fn wait_healthy(&self) {
        while !self.app.health.is_healthy() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn attempt_http(&self, event: &BindingEvent) -> Result<Bytes, DeliveryError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &event.metadata {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(name, value);
            }
        }
        // Dapr sends binding events as JSON whatever they hold.
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(http::header::CONTENT_LENGTH);
        let resp = self
            .app
            .call_http(
                Method::POST,
                &format!("/{}", self.route),
                &headers,
                axum::body::Body::from(event.data.clone()),
            )
            .await
            .map_err(|e| DeliveryError::Channel(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| DeliveryError::Channel(format!("failed to read response body: {e}")))?;
        if !status.is_success() {
            return Err(DeliveryError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }

    async fn attempt_grpc(
        &self,
        mut client: AppCallbackClient<Channel>,
        event: &BindingEvent,
    ) -> Result<pb::BindingEventResponse, DeliveryError> {
        let req = pb::BindingEventRequest {
            name: self.name.clone(),
            data: event.data.to_vec(),
            metadata: event.metadata.clone(),
        };
        client
            .on_binding_event(with_app_token(req))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| DeliveryError::Grpc {
                code: s.code(),
                message: s.message().to_owned(),
            })
    }

    /// Sends a gRPC app's answer on to the output bindings it names.
    async fn forward(&self, resp: &pb::BindingEventResponse) {
        if resp.to.is_empty() {
            return;
        }
        // Dapr re-encodes the data as JSON (`null` when it is not JSON).
        let data = serde_json::from_slice::<serde_json::Value>(&resp.data)
            .unwrap_or(serde_json::Value::Null)
            .to_string();
        let req = InvokeRequest {
            operation: "create".to_owned(),
            data: Bytes::from(data),
            metadata: Default::default(),
        };
        if resp.concurrency == BindingEventConcurrency::Parallel as i32 {
            for to in resp.to.clone() {
                let registry = self.registry.clone();
                let req = req.clone();
                tokio::spawn(async move {
                    if let Err(e) = super::invoke_output(&registry, &to, req).await {
                        tracing::error!("{}", e.message);
                    }
                });
            }
        } else {
            for to in &resp.to {
                if let Err(e) = super::invoke_output(&self.registry, to, req.clone()).await {
                    tracing::error!("error executing app response: {}", e.message);
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl EventHandler for BindingDeliverer {
    async fn handle(&self, event: BindingEvent) -> Result<Bytes, HandlerError> {
        self.wait_healthy().await;
        let result = match &self.grpc {
            None => self.policy.execute(|_| self.attempt_http(&event)).await,
            Some(client) => {
                let answer = self
                    .policy
                    .execute(|_| self.attempt_grpc(client.clone(), &event))
                    .await;
                match answer {
                    Ok(resp) => {
                        self.forward(&resp).await;
                        Ok(Bytes::from(resp.data))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.map_err(|e| {
            let e = match e {
                PolicyError::Operation(op) => op.to_string(),
                other => other.to_string(),
            };
            tracing::debug!(binding = %self.name, "error from app consumer for binding: {e}");
            HandlerError(e)
        })
    }
}
