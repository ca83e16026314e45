//! Virtual actors in the sidecar: registration from the app's `/dapr/config`,
//! placement lookups, turn-based calls routed to the owning host, actor state,
//! and (in `reminders`) timers and reminders.
//!
//! Modules: [`config`] (the app's settings), [`table`] (active actors),
//! [`turn`] (turn lock and reentrancy), [`router`] (local or remote),
//! [`app`] (callbacks to the app), [`remote`] (the internal `CallActor`),
//! [`lifecycle`] (idle and rebalance deactivation), [`state`] (actor state).
//!
//! What `reminders` uses (stable): [`ActorRuntime::owner`],
//! [`ActorRuntime::wait_owner`], [`ActorRuntime::deliver_callback`],
//! [`ActorRuntime::state_store`], [`ActorRuntime::table_updates`],
//! [`ActorRuntime::hosts_type`], [`ActorRuntime::app_id`].

pub mod app;
pub mod config;
pub mod error;
pub mod internal;
pub mod lifecycle;
pub mod reminders;
pub mod remote;
pub mod router;
pub mod state;
pub mod table;
pub mod turn;

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use dapr_placement_core::{ClientOptions, PlacementClient};
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{HostConfig, TypeConfig};
pub use error::ActorError;
pub use state::{ActorStateOp, ActorStateStore, ActorStateValue};

use crate::{components::Registry, invoke::Invoker};

/// Header carrying the reentrancy chain id.
pub const REENTRANCY_ID_HEADER: &str = "Dapr-Reentrancy-Id";
/// Header an app sets on a reminder/timer callback to cancel it.
pub const REMINDER_CANCEL_HEADER: &str = "X-DaprReminderCancel";
/// Header an app (.NET SDK) sets on a failed call whose response is passed on.
pub const ERROR_RESPONSE_HEADER: &str = "X-DaprErrorResponseHeader";

/// Where an actor lives right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This sidecar.
    Local,
    /// Another sidecar: its internal gRPC address and app id.
    Remote { address: String, app_id: String },
    /// Placement tables are not ready or are being changed; ask again later
    /// (or use [`ActorRuntime::wait_owner`]).
    NotReady,
    /// No host serves this actor type.
    NoHost,
}

/// An actor method call as both APIs and the internal port describe it.
#[derive(Debug, Clone)]
pub struct ActorCall {
    pub actor_type: String,
    pub actor_id: String,
    /// Method name, or `remind/<name>` / `timer/<name>` for callbacks.
    pub method: String,
    pub verb: Method,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub data: Bytes,
}

/// The app's answer to an actor call.
#[derive(Debug, Clone)]
pub struct ActorResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub data: Bytes,
}

impl ActorResponse {
    fn content_type(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }
}

/// A reminder or timer firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackKind {
    /// `PUT /actors/{type}/{id}/method/remind/{name}`.
    Reminder { name: String },
    /// `PUT /actors/{type}/{id}/method/timer/{name}`.
    Timer { name: String, callback: String },
}

/// What [`ActorRuntime::deliver_callback`] sends. The app receives Dapr's
/// JSON: `{"data","dueTime","period"}` (timers add `"callback"`); `data` is
/// omitted when `None`.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub actor_type: String,
    pub actor_id: String,
    pub kind: CallbackKind,
    pub data: Option<serde_json::Value>,
    pub due_time: String,
    pub period: String,
}

/// How a delivered callback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Delivered,
    /// The app answered with `X-DaprReminderCancel: true`.
    Cancel,
}

/// How the runtime is started.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub placement_addresses: Vec<String>,
    pub app_id: String,
    pub namespace: String,
    /// `"<ip>:<internal gRPC port>"`, the name placement knows this host by.
    pub host_name: String,
    pub internal_port: u16,
    /// Longest an actor call waits for placement tables (dissemination,
    /// leader change) before failing.
    pub placement_wait: Duration,
}

/// The actor runtime of one sidecar.
pub struct ActorRuntime {
    app_id: String,
    host_name: String,
    placement: PlacementClient,
    invoker: Arc<Invoker>,
    registry: Arc<Registry>,
    config: RwLock<Arc<HostConfig>>,
    table: table::ActiveActors,
    /// Version of the placement tables, sent once each dissemination is
    /// complete (after moved actors were deactivated).
    table_updates: watch::Sender<u64>,
    /// The app's `/dapr/config` was read (hosted types known).
    registered: watch::Sender<bool>,
    placement_wait: Duration,
    /// Timers and reminders (`reminders`).
    reminders: Arc<reminders::Reminders>,
    /// Types daprd hosts itself (`internal`).
    internal: internal::InternalSlot,
    shutdown: CancellationToken,
}

impl ActorRuntime {
    /// Starts the placement client (reporting no actor types until the app's
    /// configuration is read with [`ActorRuntime::register_hosted`]) and the
    /// deactivation loops.
    pub fn start(
        opts: RuntimeOptions,
        invoker: Arc<Invoker>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, dapr_placement_core::ClientError> {
        let client = PlacementClient::start(
            ClientOptions::new(
                opts.placement_addresses,
                opts.host_name.clone(),
                i64::from(opts.internal_port),
                opts.app_id.clone(),
                opts.namespace,
                Vec::new(),
            ),
            None,
        )?;
        let rt = Arc::new(Self {
            app_id: opts.app_id,
            host_name: opts.host_name,
            placement: client,
            invoker,
            registry,
            config: RwLock::new(Arc::new(HostConfig::default())),
            table: table::ActiveActors::default(),
            table_updates: watch::Sender::new(0),
            registered: watch::Sender::new(false),
            placement_wait: opts.placement_wait,
            reminders: reminders::Reminders::new(Default::default(), shutdown.clone()),
            internal: Default::default(),
            shutdown,
        });
        lifecycle::spawn(&rt);
        reminders::host::attach(&rt.reminders, &rt);
        Ok(rt)
    }

    /// Timers and reminders of this host.
    pub fn reminders(&self) -> &Arc<reminders::Reminders> {
        &self.reminders
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The name placement knows this host by (`ip:port`).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    pub fn placement(&self) -> &PlacementClient {
        &self.placement
    }

    pub fn host_config(&self) -> Arc<HostConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this sidecar's app hosts `actor_type`.
    pub fn hosts_type(&self, actor_type: &str) -> bool {
        self.host_config().hosts(actor_type)
    }

    /// Installs the hosted types and reports them to placement.
    pub fn set_host_config(&self, cfg: HostConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
        let entities = self.entities();
        if !entities.is_empty() {
            tracing::info!(?entities, "registering hosted actor types with placement");
        }
        self.placement.set_entities(entities);
        self.registered.send_replace(true);
    }

    /// Reads the app's `GET /dapr/config` (a missing or failing endpoint
    /// means the app hosts no actors) and registers its types.
    pub async fn register_hosted(&self) {
        let cfg = app::fetch_config(&self.invoker).await;
        self.set_host_config(cfg);
    }

    /// The owner of an actor per the installed tables, without waiting.
    pub fn owner(&self, actor_type: &str, actor_id: &str) -> Owner {
        let s = self.placement.state();
        if !s.ready || s.phase != dapr_placement_core::Phase::Unlocked {
            return Owner::NotReady;
        }
        self.lookup(actor_type, actor_id)
    }

    fn lookup(&self, actor_type: &str, actor_id: &str) -> Owner {
        match self.placement.lookup(actor_type, actor_id) {
            None => Owner::NoHost,
            Some(h) if h.name == self.host_name => Owner::Local,
            Some(h) => Owner::Remote {
                address: h.name.clone(),
                app_id: h.app_id.clone(),
            },
        }
    }

    /// The owner of an actor, waiting up to `timeout` for tables that are
    /// not ready or being disseminated. Never returns `NotReady`.
    pub async fn wait_owner(
        &self,
        actor_type: &str,
        actor_id: &str,
        timeout: Duration,
    ) -> Result<Owner, ActorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ActorError::Closed);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.placement.wait_unlocked(left).await.is_err() {
                return Err(ActorError::Invoke(format!(
                    "timed out after {timeout:?} waiting for the actor placement tables (placement: {})",
                    if self.placement.state().connected {
                        "connected"
                    } else {
                        "disconnected"
                    }
                )));
            }
            // Re-check: the tables may have been locked again meanwhile.
            match self.owner(actor_type, actor_id) {
                Owner::NotReady => continue,
                o => return Ok(o),
            }
        }
    }

    /// The actor state store (`actorStateStore: "true"`), resolved now.
    pub fn state_store(&self) -> Result<ActorStateStore, ActorError> {
        ActorStateStore::resolve(&self.registry, &self.app_id)
    }

    /// Placement table versions, updated when a dissemination is complete
    /// and this host has deactivated the actors it no longer owns.
    pub fn table_updates(&self) -> watch::Receiver<u64> {
        self.table_updates.subscribe()
    }

    /// Whether the actor is active on this host.
    pub fn is_active(&self, actor_type: &str, actor_id: &str) -> bool {
        self.table.contains(actor_type, actor_id)
    }

    /// Active actors per type.
    pub fn active_counts(&self) -> BTreeMap<String, usize> {
        self.table.counts()
    }

    /// Delivers a reminder or timer to the actor, wherever it lives: on this
    /// host it takes the actor's turn and calls the app; elsewhere it goes
    /// through the owner's `CallActor`. Reports whether the app asked to
    /// cancel (`X-DaprReminderCancel: true`).
    pub async fn deliver_callback(
        &self,
        req: CallbackRequest,
    ) -> Result<CallbackOutcome, ActorError> {
        let call = app::callback_call(&req)?;
        self.deliver_call(call).await
    }

    /// [`ActorRuntime::deliver_callback`] with the JSON body already built
    /// (`method` is `remind/<name>` or `timer/<name>`).
    pub async fn deliver_callback_body(
        &self,
        actor_type: String,
        actor_id: String,
        method: String,
        body: Bytes,
    ) -> Result<CallbackOutcome, ActorError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        self.deliver_call(ActorCall {
            actor_type,
            actor_id,
            method,
            verb: Method::PUT,
            query: None,
            headers,
            data: body,
        })
        .await
    }

    async fn deliver_call(&self, call: ActorCall) -> Result<CallbackOutcome, ActorError> {
        let resp = self.call(call).await?;
        let cancel = resp
            .headers
            .get(REMINDER_CANCEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_truthy);
        Ok(if cancel {
            CallbackOutcome::Cancel
        } else {
            CallbackOutcome::Delivered
        })
    }

    /// What the metadata API reports.
    pub fn metadata(&self) -> RuntimeMetadata {
        let s = self.placement.state();
        let registered = *self.registered.borrow();
        RuntimeMetadata {
            status: if registered {
                "RUNNING"
            } else {
                "INITIALIZING"
            },
            host_ready: registered && s.ready,
            placement: if s.connected {
                "placement: connected"
            } else {
                "placement: disconnected"
            }
            .to_owned(),
            active: self.table.counts(),
        }
    }
}

/// Dapr's truthy strings (kit/strings.IsTruthy).
pub fn is_truthy(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

/// The `actorRuntime` block of the metadata API.
#[derive(Debug, Clone)]
pub struct RuntimeMetadata {
    /// `INITIALIZING`, `DISABLED` or `RUNNING`.
    pub status: &'static str,
    pub host_ready: bool,
    pub placement: String,
    pub active: BTreeMap<String, usize>,
}

impl RuntimeMetadata {
    /// The runtime without `--placement-host-address`.
    pub fn disabled() -> Self {
        Self {
            status: "DISABLED",
            host_ready: false,
            placement: "placement: disconnected".to_owned(),
            active: BTreeMap::new(),
        }
    }

    /// `ActorRuntime.runtime_status` enum value.
    pub fn status_code(&self) -> i32 {
        match self.status {
            "DISABLED" => 1,
            "RUNNING" => 2,
            _ => 0,
        }
    }
}

/// Where API handlers find the actor runtime. Empty without placement;
/// with placement it is filled during startup, and callers arriving before
/// that wait (bounded).
#[derive(Clone)]
pub struct ActorSlot {
    configured: bool,
    runtime: watch::Sender<Option<Arc<ActorRuntime>>>,
}

impl Default for ActorSlot {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ActorSlot {
    /// `configured`: `--placement-host-address` was given.
    pub fn new(configured: bool) -> Self {
        Self {
            configured,
            runtime: watch::Sender::new(None),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.configured
    }

    pub fn set(&self, rt: Arc<ActorRuntime>) {
        self.runtime.send_replace(Some(rt));
    }

    pub fn try_get(&self) -> Option<Arc<ActorRuntime>> {
        self.runtime.borrow().clone()
    }

    /// The runtime, or `ERR_ACTOR_NO_PLACEMENT` when actors are off.
    pub async fn get(&self) -> Result<Arc<ActorRuntime>, ActorError> {
        if !self.configured {
            return Err(ActorError::NoPlacement);
        }
        let mut rx = self.runtime.subscribe();
        let wait = rx.wait_for(|r| r.is_some());
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(r)) => r.clone().ok_or(ActorError::RuntimeNotFound),
            _ => Err(ActorError::Invoke(
                "the actor runtime is still starting".into(),
            )),
        }
    }

    /// The metadata API's view.
    pub fn metadata(&self) -> RuntimeMetadata {
        match self.try_get() {
            Some(rt) => rt.metadata(),
            None if self.configured => RuntimeMetadata {
                status: "INITIALIZING",
                host_ready: false,
                placement: String::new(),
                active: BTreeMap::new(),
            },
            None => RuntimeMetadata::disabled(),
        }
    }
}

/// The placement addresses of `--placement-host-address` (comma list;
/// empty or quoted-empty means none, as in Dapr).
pub fn placement_addresses(flag: Option<&str>) -> Vec<String> {
    flag.unwrap_or("")
        .split(',')
        .map(|a| a.trim().trim_matches(['"', '\'']).trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect()
}

/// Starts the actor runtime when placement is configured and puts it in
/// the sidecar's slot; the app's `/dapr/config` is read once the app
/// listens. `host_name` is `"<ip>:<internal port>"`.
pub fn start_runtime(
    opts: &crate::options::Options,
    sidecar: &Arc<crate::sidecar::Sidecar>,
    namespace: &str,
    host_name: String,
    internal_port: u16,
) -> anyhow::Result<()> {
    let addresses = placement_addresses(opts.placement_host_address.as_deref());
    if addresses.is_empty() {
        tracing::info!("actor runtime disabled: placement service is not configured");
        return Ok(());
    }
    let rt = ActorRuntime::start(
        RuntimeOptions {
            placement_addresses: addresses,
            app_id: opts.app_id.clone(),
            namespace: namespace.to_owned(),
            host_name,
            internal_port,
            placement_wait: Duration::from_secs(30),
        },
        sidecar.invoker.clone(),
        sidecar.registry.clone(),
        sidecar.shutdown.clone(),
    )
    .map_err(|e| anyhow::anyhow!("actor runtime: {e}"))?;
    sidecar.actors.set(rt.clone());
    tokio::spawn(async move {
        if let Some(app) = &rt.invoker.app {
            tokio::select! {
                _ = app.wait_for_app() => {}
                _ = rt.shutdown.cancelled() => return,
            }
        }
        rt.register_hosted().await;
    });
    Ok(())
}

/// Dapr rejects empty names and path tricks in actor types and ids.
pub fn validate_name(what: &str, v: &str) -> Result<(), ActorError> {
    let bad = v.is_empty()
        || v == "."
        || v == ".."
        || v.bytes()
            .any(|b| matches!(b, b'/' | b'\\' | b'#' | b'?') || b < 0x20 || b == 0x7f);
    if bad {
        return Err(ActorError::BadRequest(format!("invalid {what}: {v:?}")));
    }
    Ok(())
}
