//! Live updates from the operator's streams, as Dapr's hot reloader does in
//! Kubernetes mode:
//!
//! * `ComponentUpdate`, `SubscriptionUpdate`, `HTTPEndpointUpdate` apply in
//!   place, each event on its own: a created or updated component is built
//!   and swapped in (the previous instance serves until then), a deleted one
//!   is dropped; a changed Subscription's topic is unsubscribed and
//!   subscribed again with the new definition; HTTPEndpoints are rebuilt;
//! * `ConfigurationUpdate` (of the Configuration named by `--config`) and
//!   `ResiliencyUpdate` restart daprd in place when the resource really
//!   changed, as Dapr's SIGHUP reconcilers do: these settings are read all
//!   over the runtime at start;
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

use dapr_crds::{Component, ConfigurationSpec, HttpEndpoint};
use dapr_rs_proto::generated::dapr::proto::operator::v1::{self as pb, ResourceEventType};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::client::{OperatorClient, OperatorError, describe};
use crate::{
    appchannel::AppChannel,
    components::{ComponentLoader, Registry},
    invoke::{Invoker, external},
    pubsub::{manager::SubscriptionManager, subscriptions},
    resources::Sourced,
};

/// A resource document as the pub/sub block and the policy registry read it.
type Document = Sourced<(String, serde_json::Value)>;

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
    /// A change that only a restart applies (Configuration, Resiliency).
    Restart(String),
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

/// Ends a watch that found a change only a restart applies: records why and
/// starts the graceful shutdown after which daprd re-executes itself.
fn finish(result: Result<(), Stop>, shutdown: &CancellationToken) {
    match result {
        Err(Stop::Restart(reason)) => super::request_restart(reason, shutdown),
        Err(Stop::Fatal) => shutdown.cancel(),
        Ok(()) | Err(Stop::Shutdown) => {}
    }
}

/// Restarts daprd in place when the Configuration named `name` (the one
/// `--config` loaded, `loaded`) is changed or deleted. Other Configurations
/// of the namespace do not concern this sidecar.
pub async fn watch_configuration(
    client: OperatorClient,
    name: String,
    loaded: ConfigurationSpec,
    shutdown: CancellationToken,
) {
    let watched = ConfigurationWatch {
        client,
        name,
        loaded,
    };
    finish(run(watched, shutdown.clone()).await, &shutdown);
}

struct ConfigurationWatch {
    client: OperatorClient,
    name: String,
    loaded: ConfigurationSpec,
}

impl ConfigurationWatch {
    fn restart(&self, what: &str) -> Stop {
        Stop::Restart(format!("Configuration {} {what}", self.name))
    }
}

#[tonic::async_trait]
impl Watched for ConfigurationWatch {
    type Event = pb::ConfigurationUpdateEvent;
    const KIND: &'static str = "Configuration";

    async fn open(&self) -> Result<Streaming<Self::Event>, Status> {
        let req = pb::ConfigurationUpdateRequest {
            namespace: self.client.namespace().to_owned(),
        };
        Ok(self
            .client
            .grpc()
            .configuration_update(req)
            .await?
            .into_inner())
    }

    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>> {
        match self.client.get_configuration(&self.name).await {
            Ok(c) if c.spec == self.loaded => Ok(()),
            Ok(_) => Err(Err(self.restart("changed"))),
            Err(OperatorError::ConfigurationNotFound { .. }) => Err(Err(self.restart("deleted"))),
            Err(e) => Err(Ok(e)),
        }
    }

    async fn apply(&self, event: Self::Event) -> Result<(), Stop> {
        let c = match self.client.configuration(&event.configuration) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("ignoring configuration update: {e}");
                return Ok(());
            }
        };
        if c.metadata.name != self.name {
            return Ok(());
        }
        if event.r#type == ResourceEventType::Deleted as i32 {
            return Err(self.restart("deleted"));
        }
        if c.spec == self.loaded {
            tracing::debug!(configuration = %self.name, "configuration unchanged");
            return Ok(());
        }
        Err(self.restart("changed"))
    }
}

/// What of a scoped resource matters to this sidecar: its spec and scopes,
/// when `app_id` is in scope (None otherwise).
fn relevant(doc: &serde_json::Value, app_id: &str) -> Option<serde_json::Value> {
    let scopes = doc.get("scopes").and_then(|s| s.as_array());
    let in_scope = scopes.is_none_or(|s| s.is_empty() || s.iter().any(|a| a == app_id));
    in_scope.then(|| serde_json::json!([doc.get("spec"), doc.get("scopes")]))
}

fn doc_name(doc: &serde_json::Value) -> String {
    doc.pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Restarts daprd in place when a Resiliency in scope for `app_id` is
/// created, changed or deleted (or scoped in or away). `initial` is what
/// startup loaded.
pub async fn watch_resiliency(
    client: OperatorClient,
    app_id: String,
    initial: &[Document],
    shutdown: CancellationToken,
) {
    let loaded = initial
        .iter()
        .filter(|d| d.resource.0 == dapr_crds::RESILIENCY_KIND)
        .filter_map(|d| Some((doc_name(&d.resource.1), relevant(&d.resource.1, &app_id)?)))
        .collect();
    let watched = ResiliencyWatch {
        client,
        app_id,
        loaded,
    };
    finish(run(watched, shutdown.clone()).await, &shutdown);
}

struct ResiliencyWatch {
    client: OperatorClient,
    app_id: String,
    /// In-scope policies at start, by name. Never updated: any difference
    /// restarts daprd.
    loaded: BTreeMap<String, serde_json::Value>,
}

#[tonic::async_trait]
impl Watched for ResiliencyWatch {
    type Event = pb::ResiliencyUpdateEvent;
    const KIND: &'static str = "Resiliency";

    async fn open(&self) -> Result<Streaming<Self::Event>, Status> {
        let req = pb::ResiliencyUpdateRequest {
            namespace: self.client.namespace().to_owned(),
        };
        Ok(self
            .client
            .grpc()
            .resiliency_update(req)
            .await?
            .into_inner())
    }

    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>> {
        let listed = self.client.list_resiliency().await.map_err(Ok)?;
        let now: BTreeMap<String, serde_json::Value> = listed
            .iter()
            .filter_map(|d| {
                Some((
                    doc_name(&d.resource.1),
                    relevant(&d.resource.1, &self.app_id)?,
                ))
            })
            .collect();
        if now == self.loaded {
            return Ok(());
        }
        let changed: Vec<&String> = now
            .keys()
            .chain(self.loaded.keys())
            .filter(|k| now.get(*k) != self.loaded.get(*k))
            .collect();
        Err(Err(Stop::Restart(format!(
            "Resiliency {changed:?} changed"
        ))))
    }

    async fn apply(&self, event: Self::Event) -> Result<(), Stop> {
        let doc = match self.client.resiliency(&event.resiliency) {
            Ok(d) => d.resource.1,
            Err(e) => {
                tracing::error!("ignoring resiliency update: {e}");
                return Ok(());
            }
        };
        let name = doc_name(&doc);
        let now = if event.r#type == ResourceEventType::Deleted as i32 {
            None
        } else {
            relevant(&doc, &self.app_id)
        };
        if now.as_ref() == self.loaded.get(&name) {
            tracing::debug!(resiliency = %name, "resiliency unchanged for this app");
            return Ok(());
        }
        Err(Stop::Restart(format!("Resiliency {name} changed")))
    }
}

/// What the Subscription watch needs to (re)subscribe on the app's behalf.
pub struct SubscriptionTarget {
    pub manager: Arc<SubscriptionManager>,
    pub registry: Arc<Registry>,
    pub app: AppChannel,
    pub app_id: String,
    /// Time deliveries in flight get when their subscription is replaced.
    pub grace: Duration,
}

/// Applies `SubscriptionUpdate` events in place until `shutdown`: the
/// topics of a created, changed or deleted Subscription are subscribed
/// again with what is now declared. `initial` is what startup subscribed.
pub async fn watch_subscriptions(
    client: OperatorClient,
    target: SubscriptionTarget,
    initial: &[Document],
    shutdown: CancellationToken,
) {
    let known = initial
        .iter()
        .filter(|d| d.resource.0 == dapr_crds::SUBSCRIPTION_KIND)
        .map(|d| (doc_name(&d.resource.1), d.clone()))
        .collect();
    let watched = SubscriptionWatch {
        client,
        target,
        known: tokio::sync::Mutex::new(known),
    };
    finish(run(watched, shutdown.clone()).await, &shutdown);
}

struct SubscriptionWatch {
    client: OperatorClient,
    target: SubscriptionTarget,
    /// Every Subscription of the namespace the operator sent, by name.
    known: tokio::sync::Mutex<BTreeMap<String, Document>>,
}

/// Same definition (metadata such as resourceVersion aside).
fn same_subscription(a: &Document, b: &Document) -> bool {
    let (a, b) = (&a.resource.1, &b.resource.1);
    a.get("spec") == b.get("spec") && a.get("scopes") == b.get("scopes")
}

/// The (pubsub, topic) a Subscription document subscribes to.
fn topic_key(doc: &serde_json::Value) -> Option<(String, String)> {
    let sub = dapr_crds::subscription_from_document(doc).ok()?;
    Some((sub.spec.pubsubname, sub.spec.topic))
}

impl SubscriptionWatch {
    /// Replaces the named documents (None = deleted) and re-subscribes the
    /// topics they declared before or declare now.
    async fn change(&self, changes: Vec<(String, Option<Document>)>) {
        let mut known = self.known.lock().await;
        let mut keys = std::collections::HashSet::new();
        let mut names = Vec::new();
        for (name, doc) in changes {
            let old = match doc {
                Some(d) => {
                    keys.extend(topic_key(&d.resource.1));
                    known.insert(name.clone(), d)
                }
                None => known.remove(&name),
            };
            keys.extend(old.and_then(|o| topic_key(&o.resource.1)));
            names.push(name);
        }
        if keys.is_empty() {
            return;
        }
        // One document at a time, so an invalid one is reported by name and
        // the others still apply.
        let mut subs = Vec::new();
        for doc in known.values() {
            match subscriptions::declarative(std::slice::from_ref(doc), &self.target.app_id) {
                Ok(s) => subs.extend(s),
                Err(e) => tracing::error!(
                    subscription = %doc_name(&doc.resource.1),
                    "Subscription from the operator not applied: {e}"
                ),
            }
        }
        tracing::info!(subscriptions = ?names, topics = ?keys, "Subscriptions updated from the operator");
        let t = &self.target;
        t.manager
            .replace_declarative(&t.registry, &t.app, &t.app_id, &keys, subs, t.grace)
            .await;
    }
}

#[tonic::async_trait]
impl Watched for SubscriptionWatch {
    type Event = pb::SubscriptionUpdateEvent;
    const KIND: &'static str = "Subscription";

    async fn open(&self) -> Result<Streaming<Self::Event>, Status> {
        let req = pb::SubscriptionUpdateRequest {
            namespace: self.client.namespace().to_owned(),
        };
        Ok(self
            .client
            .grpc()
            .subscription_update(req)
            .await?
            .into_inner())
    }

    async fn relist(&self) -> Result<(), Result<OperatorError, Stop>> {
        let listed = self.client.list_subscriptions().await.map_err(Ok)?;
        let fresh: BTreeMap<String, Document> = listed
            .into_iter()
            .map(|d| (doc_name(&d.resource.1), d))
            .collect();
        let changes: Vec<(String, Option<Document>)> = {
            let known = self.known.lock().await;
            let mut changes: Vec<_> = fresh
                .iter()
                .filter(|(k, v)| known.get(*k).is_none_or(|o| !same_subscription(o, v)))
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            changes.extend(
                known
                    .keys()
                    .filter(|k| !fresh.contains_key(*k))
                    .map(|k| (k.clone(), None)),
            );
            changes
        };
        if !changes.is_empty() {
            self.change(changes).await;
        }
        Ok(())
    }

    async fn apply(&self, event: Self::Event) -> Result<(), Stop> {
        let doc = match self.client.subscription(&event.subscription) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("ignoring subscription update: {e}");
                return Ok(());
            }
        };
        let name = doc_name(&doc.resource.1);
        if event.r#type == ResourceEventType::Deleted as i32 {
            self.change(vec![(name, None)]).await;
            return Ok(());
        }
        let unchanged = self
            .known
            .lock()
            .await
            .get(&name)
            .is_some_and(|o| same_subscription(o, &doc));
        if !unchanged {
            self.change(vec![(name, Some(doc))]).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod decision_tests {
    use serde_json::json;

    use super::*;

    fn doc(spec: serde_json::Value, scopes: Option<serde_json::Value>) -> Document {
        let mut d = json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "resourceVersion": "1"}, "spec": spec});
        if let Some(s) = scopes {
            d["scopes"] = s;
        }
        Sourced {
            file: "operator".into(),
            resource: (dapr_crds::SUBSCRIPTION_KIND.to_owned(), d),
        }
    }

    #[test]
    fn only_in_scope_resources_matter_and_metadata_is_ignored() {
        let spec = json!({"pubsubname": "p", "topic": "t", "routes": {"default": "/a"}});
        let open = doc(spec.clone(), None);
        let mine = doc(spec.clone(), Some(json!(["app"])));
        let other = doc(spec.clone(), Some(json!(["other"])));
        assert!(relevant(&open.resource.1, "app").is_some());
        assert!(relevant(&mine.resource.1, "app").is_some());
        assert!(relevant(&other.resource.1, "app").is_none());
        // A new resourceVersion alone is no change.
        let mut bumped = open.clone();
        bumped.resource.1["metadata"]["resourceVersion"] = json!("2");
        assert!(same_subscription(&open, &bumped));
        assert_eq!(
            relevant(&open.resource.1, "app"),
            relevant(&bumped.resource.1, "app")
        );
        let moved = doc(
            json!({"pubsubname": "p", "topic": "t", "routes": {"default": "/b"}}),
            None,
        );
        assert!(!same_subscription(&open, &moved));
        assert!(!same_subscription(&open, &mine));
        assert_eq!(topic_key(&open.resource.1), Some(("p".into(), "t".into())));
        assert_eq!(doc_name(&open.resource.1), "s");
    }
}
