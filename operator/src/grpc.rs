//! `dapr.proto.operator.v1.Operator`: resources for sidecars, scoped to the
//! caller's namespace (and app id, for scoped kinds) taken from its SPIFFE
//! certificate.

use std::{pin::Pin, sync::Arc};

use dapr_rs_proto::generated::dapr::proto::operator::v1::{
    self as pb, ResourceEventType, operator_server::Operator,
};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    cache::{Cache, Entry},
    kinds, scope,
    secrets::{self, KubeSecrets, SecretError, SecretSource},
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Per-kind caches the API serves from.
#[derive(Clone)]
pub struct Caches {
    pub components: Arc<Cache>,
    pub configurations: Arc<Cache>,
    pub subscriptions: Arc<Cache>,
    pub resiliencies: Arc<Cache>,
    pub http_endpoints: Arc<Cache>,
}

impl Caches {
    pub fn new() -> Self {
        Self {
            components: Cache::new(&kinds::COMPONENT),
            configurations: Cache::new(&kinds::CONFIGURATION),
            subscriptions: Cache::new(&kinds::SUBSCRIPTION),
            resiliencies: Cache::new(&kinds::RESILIENCY),
            http_endpoints: Cache::new(&kinds::HTTP_ENDPOINT),
        }
    }

    pub fn all(&self) -> [&Arc<Cache>; 5] {
        [
            &self.components,
            &self.configurations,
            &self.subscriptions,
            &self.resiliencies,
            &self.http_endpoints,
        ]
    }
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

/// How callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// mTLS: the namespace and app id come from the client certificate.
    Spiffe,
    /// Development plaintext: the request's namespace is trusted.
    Trusting,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub namespace: String,
    /// None without mTLS: no scope filtering.
    pub app_id: Option<String>,
}

/// Secret resolution applied to a kind before sending.
#[derive(Debug, Clone, Copy)]
enum Resolve {
    None,
    Component,
    HttpEndpoint,
}

pub struct OperatorApi {
    caches: Caches,
    secrets: KubeSecrets,
    auth: Auth,
}

impl OperatorApi {
    pub fn new(caches: Caches, secrets: KubeSecrets, auth: Auth) -> Self {
        Self {
            caches,
            secrets,
            auth,
        }
    }

    /// Dapr's rule: the caller's namespace must equal the requested one.
    fn caller<T>(&self, req: &Request<T>, namespace: &str) -> Result<Caller, Status> {
        match self.auth {
            Auth::Trusting => {
                if namespace.is_empty() {
                    return Err(Status::invalid_argument("namespace is required"));
                }
                Ok(Caller {
                    namespace: namespace.to_owned(),
                    app_id: None,
                })
            }
            Auth::Spiffe => {
                let id = dapr_security::tls::peer_spiffe_id_from_request(req)
                    .map_err(|_| Status::permission_denied("failed to determine identity"))?;
                if namespace.is_empty() || id.namespace() != namespace {
                    return Err(Status::permission_denied(format!(
                        "identity does not match requested namespace exp={namespace} got={}",
                        id.namespace()
                    )));
                }
                Ok(Caller {
                    namespace: namespace.to_owned(),
                    app_id: Some(id.app_id().to_owned()),
                })
            }
        }
    }
}

/// The JSON of `entry` with its secrets resolved, or why not.
async fn render(
    entry: &Entry,
    resolve: Resolve,
    secrets: &impl SecretSource,
) -> Result<Vec<u8>, RenderError> {
    if matches!(resolve, Resolve::None) || !entry.has_secret_refs {
        return Ok(entry.json.to_vec());
    }
    let mut json = entry.value()?;
    match resolve {
        Resolve::None => {}
        Resolve::Component => {
            secrets::resolve_component(&mut json, &entry.namespace, secrets).await?
        }
        Resolve::HttpEndpoint => {
            secrets::resolve_http_endpoint(&mut json, &entry.namespace, secrets).await?
        }
    }
    Ok(serde_json::to_vec(&json)?)
}

#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
}

/// Renders every entry visible to `caller`; failures are logged with the
/// resource's name and skipped so the others are still served.
async fn render_visible(
    cache: &Cache,
    caller: &Caller,
    resolve: Resolve,
    secrets: &impl SecretSource,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let secrets = secrets::Memo::new(secrets);
    for entry in cache.list(&caller.namespace) {
        if let Some(app) = &caller.app_id
            && cache.spec.scoped
            && !entry.in_scope(app)
        {
            continue;
        }
        match render(&entry, resolve, &secrets).await {
            Ok(b) => out.push(b),
            Err(e) => tracing::warn!(
                kind = cache.spec.kind,
                namespace = %entry.namespace,
                name = %entry.name,
                reason = %e,
                "not serving resource"
            ),
        }
    }
    out
}

/// An update stream for one sidecar: changes of `cache` visible to `caller`,
/// rendered, until the client goes away. A sidecar that falls too far behind
/// gets an error and reconnects (then lists again).
fn update_stream<T: Send + 'static>(
    cache: &Arc<Cache>,
    caller: Caller,
    resolve: Resolve,
    secrets: KubeSecrets,
    wrap: fn(Vec<u8>, ResourceEventType) -> T,
) -> BoxStream<T> {
    let mut rx = cache.subscribe();
    let (tx, out) = mpsc::channel(16);
    let kind = cache.spec.kind;
    let scoped = cache.spec.scoped;
    tokio::spawn(async move {
        tracing::info!(kind, namespace = %caller.namespace, app_id = ?caller.app_id, "sidecar connected for updates");
        loop {
            let change = tokio::select! {
                c = rx.recv() => c,
                _ = tx.closed() => break,
            };
            let change = match change {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "update stream fell {n} events behind; reconnect"
                        ))))
                        .await;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let app = if scoped {
                caller.app_id.as_deref()
            } else {
                None
            };
            let Some((entry, ty)) = scope::event_for(&change, &caller.namespace, app) else {
                continue;
            };
            let bytes = if ty == ResourceEventType::Deleted {
                // A deletion needs no secrets: the sidecar only drops it.
                entry.json.to_vec()
            } else {
                match render(&entry, resolve, &secrets).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(kind, namespace = %entry.namespace, name = %entry.name, reason = %e, "not sending update");
                        continue;
                    }
                }
            };
            if tx.send(Ok(wrap(bytes, ty))).await.is_err() {
                break;
            }
        }
        tracing::debug!(kind, namespace = %caller.namespace, "update stream closed");
    });
    Box::pin(ReceiverStream::new(out))
}

fn found(entry: Option<Arc<Entry>>, kind: &str, ns: &str, name: &str) -> Result<Vec<u8>, Status> {
    let entry = entry.ok_or_else(|| Status::not_found(format!("{kind} {ns}/{name} not found")))?;
    Ok(entry.json.to_vec())
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    async fn component_update(
        &self,
        request: Request<pb::ComponentUpdateRequest>,
    ) -> Result<Response<BoxStream<pb::ComponentUpdateEvent>>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        Ok(Response::new(update_stream(
            &self.caches.components,
            caller,
            Resolve::Component,
            self.secrets.clone(),
            |component, ty| pb::ComponentUpdateEvent {
                component,
                r#type: ty as i32,
            },
        )))
    }

    async fn list_components(
        &self,
        request: Request<pb::ListComponentsRequest>,
    ) -> Result<Response<pb::ListComponentResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        let components = render_visible(
            &self.caches.components,
            &caller,
            Resolve::Component,
            &self.secrets,
        )
        .await;
        Ok(Response::new(pb::ListComponentResponse { components }))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let req = request.get_ref();
        let caller = self.caller(&request, &req.namespace)?;
        let entry = self.caches.configurations.get(&caller.namespace, &req.name);
        let configuration = found(entry, "configuration", &caller.namespace, &req.name)?;
        Ok(Response::new(pb::GetConfigurationResponse {
            configuration,
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        // Deprecated and namespace-less: with mTLS answer for the caller's
        // namespace, without it for every namespace.
        let entries: Vec<Arc<Entry>> = match self.auth {
            Auth::Trusting => self.caches.subscriptions.list_all(),
            Auth::Spiffe => {
                let id = dapr_security::tls::peer_spiffe_id_from_request(&request)
                    .map_err(|_| Status::permission_denied("failed to determine identity"))?;
                self.caches
                    .subscriptions
                    .list(id.namespace())
                    .into_iter()
                    .filter(|e| e.in_scope(id.app_id()))
                    .collect()
            }
        };
        let subscriptions = entries
            .iter()
            .filter_map(|e| {
                let v = e.value().ok()?;
                serde_json::to_vec(&kinds::subscription_as_v1alpha1(v)).ok()
            })
            .collect();
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn get_resiliency(
        &self,
        request: Request<pb::GetResiliencyRequest>,
    ) -> Result<Response<pb::GetResiliencyResponse>, Status> {
        let req = request.get_ref();
        let caller = self.caller(&request, &req.namespace)?;
        let entry = self.caches.resiliencies.get(&caller.namespace, &req.name);
        let resiliency = found(entry, "resiliency", &caller.namespace, &req.name)?;
        Ok(Response::new(pb::GetResiliencyResponse { resiliency }))
    }

    async fn list_resiliency(
        &self,
        request: Request<pb::ListResiliencyRequest>,
    ) -> Result<Response<pb::ListResiliencyResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        let resiliencies = render_visible(
            &self.caches.resiliencies,
            &caller,
            Resolve::None,
            &self.secrets,
        )
        .await;
        Ok(Response::new(pb::ListResiliencyResponse { resiliencies }))
    }

    async fn list_subscriptions_v2(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        let subscriptions = render_visible(
            &self.caches.subscriptions,
            &caller,
            Resolve::None,
            &self.secrets,
        )
        .await;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn subscription_update(
        &self,
        request: Request<pb::SubscriptionUpdateRequest>,
    ) -> Result<Response<BoxStream<pb::SubscriptionUpdateEvent>>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        Ok(Response::new(update_stream(
            &self.caches.subscriptions,
            caller,
            Resolve::None,
            self.secrets.clone(),
            |subscription, ty| pb::SubscriptionUpdateEvent {
                subscription,
                r#type: ty as i32,
            },
        )))
    }

    async fn list_http_endpoints(
        &self,
        request: Request<pb::ListHttpEndpointsRequest>,
    ) -> Result<Response<pb::ListHttpEndpointsResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        let http_endpoints = render_visible(
            &self.caches.http_endpoints,
            &caller,
            Resolve::HttpEndpoint,
            &self.secrets,
        )
        .await;
        Ok(Response::new(pb::ListHttpEndpointsResponse {
            http_endpoints,
        }))
    }

    async fn http_endpoint_update(
        &self,
        request: Request<pb::HttpEndpointUpdateRequest>,
    ) -> Result<Response<BoxStream<pb::HttpEndpointUpdateEvent>>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        Ok(Response::new(update_stream(
            &self.caches.http_endpoints,
            caller,
            Resolve::HttpEndpoint,
            self.secrets.clone(),
            |http_endpoints, ty| pb::HttpEndpointUpdateEvent {
                http_endpoints,
                r#type: ty as i32,
            },
        )))
    }

    async fn configuration_update(
        &self,
        request: Request<pb::ConfigurationUpdateRequest>,
    ) -> Result<Response<BoxStream<pb::ConfigurationUpdateEvent>>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        Ok(Response::new(update_stream(
            &self.caches.configurations,
            caller,
            Resolve::None,
            self.secrets.clone(),
            |configuration, ty| pb::ConfigurationUpdateEvent {
                configuration,
                r#type: ty as i32,
            },
        )))
    }

    async fn resiliency_update(
        &self,
        request: Request<pb::ResiliencyUpdateRequest>,
    ) -> Result<Response<BoxStream<pb::ResiliencyUpdateEvent>>, Status> {
        let caller = self.caller(&request, &request.get_ref().namespace)?;
        Ok(Response::new(update_stream(
            &self.caches.resiliencies,
            caller,
            Resolve::None,
            self.secrets.clone(),
            |resiliency, ty| pb::ResiliencyUpdateEvent {
                resiliency,
                r#type: ty as i32,
            },
        )))
    }
}
