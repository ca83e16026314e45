//! Live updates from the operator's streams (`ComponentUpdate`,
//! `HTTPEndpointUpdate`), as Dapr's hot reloader does in Kubernetes mode:
//!
//! * every event is applied on its own: a created or updated component is
//!   built and swapped in (the previous instance serves until then), a
//!   deleted one is dropped;
//! * after each (re)connection, and every [`RECONCILE_INTERVAL`] as a
//!   backstop, the full list is fetched and diffed against what is loaded,
//!   so changes made while the stream was down (operator restart) are not
//!   lost; the stream is opened before listing, so nothing falls in between;
//! * a dropped stream is reopened with capped exponential backoff.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use dapr_crds::{Component, HttpEndpoint};
use dapr_rs_proto::generated::dapr::proto::operator::v1::{self as pb, ResourceEventType};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::client::{OperatorClient, OperatorError, describe};
use crate::{
    components::ComponentLoader,
    invoke::{Invoker, external},
    resources::Sourced,
};

/// Backstop full reconcile (Dapr's default reconcile interval).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a watch stopped for good.
#[derive(Debug)]
enum Stop {
    /// The sidecar is shutting down.
    Shutdown,
    /// A component failed without `ignoreErrors`: Dapr exits in that case.
    Fatal,
}

/// One kind's stream: how to open it, list the kind, and apply events.
#[tonic::async_trait]
trait Watched: Send + Sync {
    type Event: Send + 'static;
    const KIND: &'static str;
    async fn open(&self) -> Result<Streaming<Self::Event>, Status>;
    /// Fetches the full list and applies the difference. An `Err(Ok(e))`
    /// means the list could not be fetched (reconnect), `Err(Err(stop))`
    /// that the watch must end.
    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>>;
    async fn apply(&self, event: Self::Event) -> Result<(), Stop>;
}

/// Follows one stream until `stop` is cancelled (or a fatal error).
async fn run<W: Watched>(watched: W, stop: CancellationToken) -> Result<(), Stop> {
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return Err(Stop::Shutdown),
            s = watched.open() => s,
        };
        match opened {
            Ok(mut stream) => {
                if connected_before {
                    tracing::info!(kind = W::KIND, "reconnected to the operator");
                }
                connected_before = true;
                match watched.relist().await {
                    Ok(()) => backoff = FIRST_BACKOFF,
                    Err(Err(s)) => return Err(s),
                    Err(Ok(e)) => tracing::warn!(kind = W::KIND, error = %e, "re-list failed"),
                }
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + RECONCILE_INTERVAL,
                    RECONCILE_INTERVAL,
                );
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stop::Shutdown),
                        _ = tick.tick() => match watched.relist().await {
                            Ok(()) => {}
                            Err(Err(s)) => return Err(s),
                            Err(Ok(e)) => tracing::warn!(kind = W::KIND, error = %e, "periodic re-list failed"),
                        },
                        msg = stream.message() => match msg {
                            Ok(Some(event)) => {
                                backoff = FIRST_BACKOFF;
                                watched.apply(event).await?;
                            }
                            Ok(None) => {
                                tracing::warn!(kind = W::KIND, "operator closed the update stream; reconnecting");
                                break;
                            }
                            Err(status) => {
                                tracing::warn!(kind = W::KIND, error = %describe(&status), "update stream from the operator failed; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
            Err(status) => {
                tracing::warn!(kind = W::KIND, error = %describe(&status), retry_in = ?backoff, "cannot open the operator's update stream");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Stop::Shutdown),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies `ComponentUpdate` events to the component registry until
/// `shutdown` is cancelled. A component that fails without `ignoreErrors`
/// makes daprd shut down gracefully, as Dapr's reconciler does.
pub async fn watch_components(
    client: OperatorClient,
    loader: Arc<ComponentLoader>,
    shutdown: CancellationToken,
) {
    let watched = Components { client, loader };
    if let Err(Stop::Fatal) = run(watched, shutdown.clone()).await {
        shutdown.cancel();
    }
}

/// Keeps the invoker's HTTPEndpoints current from `HTTPEndpointUpdate`
/// until `shutdown`. `initial` is what startup loaded.
pub async fn watch_http_endpoints(
    client: OperatorClient,
    loader: Arc<ComponentLoader>,
    invoker: Arc<Invoker>,
    initial: Vec<Sourced<HttpEndpoint>>,
    app_id: String,
    shutdown: CancellationToken,
) {
    let known = initial
        .into_iter()
        .map(|e| (e.resource.name().to_owned(), e))
        .collect();
    let watched = Endpoints {
        client,
        loader,
        invoker,
        app_id,
        known: Mutex::new(known),
    };
    let _ = run(watched, shutdown).await;
}

struct Components {
    client: OperatorClient,
    loader: Arc<ComponentLoader>,
}

impl Components {
    /// Builds and swaps in one created/updated definition.
    async fn upsert(&self, c: &Sourced<Component>) -> Result<(), Stop> {
        let name = c.resource.name();
        if !self.loader.visible(&c.resource) {
            // Scoped away from this app (or another namespace): Dapr treats
            // it as a deletion.
            if self.loader.unload(name) {
                tracing::info!(component = name, "component removed (not in scope)");
            }
            return Ok(());
        }
        match self.loader.apply(c).await {
            Ok(true) => {
                tracing::info!(component = name, r#type = %c.resource.type_version(), "component updated from the operator")
            }
            Ok(false) => tracing::debug!(component = name, "component unchanged"),
            Err(e) if c.resource.spec.ignore_errors => {
                // Dapr closes the old instance before building the new one.
                self.loader.unload(name);
                tracing::error!("ignoring failed component (ignoreErrors: true): {e}");
            }
            Err(e) => {
                tracing::error!(
                    "{e}; daprd will exit gracefully (the component does not set ignoreErrors: true)"
                );
                return Err(Stop::Fatal);
            }
        }
        Ok(())
    }

    fn is_builtin(&self, name: &str) -> bool {
        name == super::BUILTIN_SECRET_STORE
            && self
                .loader
                .registry
                .infos()
                .iter()
                .any(|i| i.name == name && i.type_ == "secretstores.kubernetes")
    }

    fn delete(&self, name: &str) {
        if self.loader.unload(name) {
            tracing::info!(component = name, "component deleted");
        }
    }
}

#[tonic::async_trait]
impl Watched for Components {
    type Event = pb::ComponentUpdateEvent;
    const KIND: &'static str = "Component";

    async fn open(&self) -> Result<Streaming<Self::Event>, Status> {
        let req = pb::ComponentUpdateRequest {
            namespace: self.client.namespace().to_owned(),
        };
        Ok(self.client.grpc().component_update(req).await?.into_inner())
    }

    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>> {
        let listed = self.client.list_components().await.map_err(Ok)?;
        let wanted: HashMap<String, Sourced<Component>> = listed
            .into_iter()
            .filter(|c| self.loader.visible(&c.resource))
            .map(|c| (c.resource.name().to_owned(), c))
            .collect();
        for name in self.loader.loaded_names() {
            // The built-in store is daprd's own, never listed by the operator.
            if !wanted.contains_key(&name) && !self.is_builtin(&name) {
                self.delete(&name);
            }
        }
        // Secret stores first: the others may reference them.
        let mut ordered: Vec<&Sourced<Component>> = wanted.values().collect();
        ordered.sort_by_key(|c| !c.resource.spec.type_.starts_with("secretstores."));
        for c in ordered {
            self.upsert(c).await.map_err(Err)?;
        }
        Ok(())
    }

    async fn apply(&self, event: Self::Event) -> Result<(), Stop> {
        let c = match self.client.component(&event.component) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("ignoring component update: {e}");
                return Ok(());
            }
        };
        match ResourceEventType::try_from(event.r#type) {
            Ok(ResourceEventType::Created | ResourceEventType::Updated) => self.upsert(&c).await,
            Ok(ResourceEventType::Deleted) => {
                self.delete(c.resource.name());
                Ok(())
            }
            _ => {
                tracing::warn!(
                    component = c.resource.name(),
                    event = event.r#type,
                    "ignoring component event of unknown type"
                );
                Ok(())
            }
        }
    }
}

struct Endpoints {
    client: OperatorClient,
    loader: Arc<ComponentLoader>,
    invoker: Arc<Invoker>,
    app_id: String,
    /// Every definition the operator sent, by name.
    known: Mutex<BTreeMap<String, Sourced<HttpEndpoint>>>,
}

impl Endpoints {
    /// Builds every known endpoint in scope and swaps the set into the
    /// invoker; one that fails is logged with its name and left out, so the
    /// others keep working.
    async fn rebuild(&self) {
        let wanted: Vec<Sourced<HttpEndpoint>> = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.resource.in_scope(&self.app_id))
            .cloned()
            .collect();
        let mut built = Vec::with_capacity(wanted.len());
        for ep in &wanted {
            match external::build(&ep.resource, &self.loader.registry).await {
                Ok(e) => built.push(e),
                Err(e) => tracing::error!(
                    http_endpoint = ep.resource.name(),
                    "HTTPEndpoint from the operator not applied: {e}"
                ),
            }
        }
        self.invoker.endpoints.replace(built);
        tracing::info!(endpoints = ?self.invoker.endpoints.names(), "HTTPEndpoints updated from the operator");
    }
}

#[tonic::async_trait]
impl Watched for Endpoints {
    type Event = pb::HttpEndpointUpdateEvent;
    const KIND: &'static str = "HTTPEndpoint";

    async fn open(&self) -> Result<Streaming<Self::Event>, Status> {
        let req = pb::HttpEndpointUpdateRequest {
            namespace: self.client.namespace().to_owned(),
        };
        Ok(self
            .client
            .grpc()
            .http_endpoint_update(req)
            .await?
            .into_inner())
    }

    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>> {
        let listed = self.client.list_http_endpoints().await.map_err(Ok)?;
        let fresh: BTreeMap<String, Sourced<HttpEndpoint>> = listed
            .into_iter()
            .map(|e| (e.resource.name().to_owned(), e))
            .collect();
        let changed = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            let changed = known.len() != fresh.len()
                || known
                    .iter()
                    .any(|(k, v)| fresh.get(k).is_none_or(|f| f.resource != v.resource));
            *known = fresh;
            changed
        };
        if changed {
            self.rebuild().await;
        }
        Ok(())
    }

    async fn apply(&self, event: Self::Event) -> Result<(), Stop> {
        let e = match self.client.http_endpoint(&event.http_endpoints) {
            Ok(e) => e,
            Err(err) => {
                tracing::error!("ignoring HTTPEndpoint update: {err}");
                return Ok(());
            }
        };
        let name = e.resource.name().to_owned();
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if event.r#type == ResourceEventType::Deleted as i32 {
                known.remove(&name);
            } else {
                known.insert(name, e);
            }
        }
        self.rebuild().await;
        Ok(())
    }
}
