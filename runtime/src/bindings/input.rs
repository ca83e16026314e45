//! Starts reading the input bindings the app listens to, once the app is
//! reachable, and stops them on shutdown.
//!
//! Whether the app listens: `direction: input` says so outright; otherwise an
//! HTTP app is asked with `OPTIONS /<route>` (any 2xx, or 405 for a route that
//! exists for other methods, means yes; 404 means no) and a gRPC app with
//! `ListInputBindings` — Dapr's discovery.

use std::{sync::Arc, time::Duration};

use dapr_components::bindings::{EventHandler, Reader};
use dapr_policy::resiliency::Direction;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::Mutex;

use super::delivery::BindingDeliverer;
use crate::{
    appchannel::AppChannel,
    components::Registry,
    options::AppProtocol,
    pubsub::delivery::{app_callback_client, with_app_token},
};

/// Dapr's default for the `OPTIONS` discovery request.
const OPTIONS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct InputBindingManager {
    running: Mutex<Vec<(String, Reader)>>,
}

impl InputBindingManager {
    /// Starts every input binding the app listens to.
    pub async fn start(&self, registry: &Arc<Registry>, app: &AppChannel) {
        let mut inputs: Vec<_> = registry
            .bindings()
            .into_iter()
            .filter(|(_, e)| e.binding.input.is_some())
            .collect();
        if inputs.is_empty() {
            return;
        }
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        let grpc = match app.protocol {
            AppProtocol::Grpc => match app_callback_client(app) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("input bindings: cannot reach the gRPC app: {e}");
                    return;
                }
            },
            _ => None,
        };
        // Asked once, as Dapr does.
        let mut grpc_list: Option<Vec<String>> = None;
        for (name, entry) in inputs {
            let Some(input) = entry.binding.input.clone() else {
                continue;
            };
            let subscribed = if entry.direction.explicit_input {
                true
            } else if let Some(client) = &grpc {
                if grpc_list.is_none() {
                    grpc_list = Some(list_input_bindings(client.clone()).await);
                }
                grpc_list.as_ref().is_some_and(|l| l.contains(&name))
            } else {
                match probe_http(app, &entry.route).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(binding = %name, "{e}");
                        false
                    }
                }
            };
            if !subscribed {
                tracing::info!("app has not subscribed to binding {name}.");
                continue;
            }
            let handler: Arc<dyn EventHandler> = Arc::new(BindingDeliverer {
                name: name.clone(),
                route: entry.route.clone(),
                app: app.clone(),
                policy: registry.binding_policy(&name, Direction::Inbound),
                grpc: grpc.clone(),
                registry: registry.clone(),
            });
            match input.read(handler).await {
                Ok(reader) => {
                    tracing::info!(binding = %name, route = %entry.route, "reading from input binding");
                    self.running.lock().await.push((name, reader));
                }
                Err(e) => tracing::error!("error reading from input binding {name}: {e}"),
            }
        }
    }

    /// Names of the bindings being read, for the metadata API.
    pub async fn active(&self) -> Vec<String> {
        self.running
            .lock()
            .await
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stops reading; events in flight get up to `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let running = std::mem::take(&mut *self.running.lock().await);
        futures::future::join_all(running.into_iter().map(|(_, r)| r.stop(grace))).await;
    }
}

async fn list_input_bindings(
    mut client: dapr_rs_proto::runtime::app_callback_client::AppCallbackClient<
        tonic::transport::Channel,
    >,
) -> Vec<String> {
    match client.list_input_bindings(with_app_token(())).await {
        Ok(r) => r.into_inner().bindings,
        Err(e) => {
            tracing::debug!("ListInputBindings: {e}");
            Vec::new()
        }
    }
}

async fn probe_http(app: &AppChannel, route: &str) -> Result<bool, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let path = format!("/{route}");
    let call = app.call_http(Method::OPTIONS, &path, &headers, axum::body::Body::empty());
    let resp = tokio::time::timeout(OPTIONS_TIMEOUT, call)
        .await
        .map_err(|_| format!("OPTIONS {path} to the app timed out after {OPTIONS_TIMEOUT:?}"))?
        .map_err(|e| {
            format!("could not invoke OPTIONS method on input binding subscription endpoint {path:?}: {e}")
        })?;
    let status = resp.status();
    Ok(status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED)
}
