//! The state every API handler shares: identity, components, readiness,
//! metadata and the shutdown trigger.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_util::sync::CancellationToken;

use crate::{
    components::{ComponentInfo, Registry},
    invoke::Invoker,
    options::{AppProtocol, Options},
    state::StateApi,
};

pub const RUNTIME_VERSION: &str = concat!("dapr-rs-", env!("CARGO_PKG_VERSION"));

/// What `GET /v1.0/metadata` and gRPC `GetMetadata` report, in one shape.
#[derive(Debug, Clone)]
pub struct MetadataSnapshot {
    pub id: String,
    pub runtime_version: String,
    pub enabled_features: Vec<String>,
    pub components: Vec<ComponentInfo>,
    pub extended: BTreeMap<String, String>,
    pub app: AppConnection,
}

#[derive(Debug, Clone)]
pub struct AppConnection {
    pub port: Option<u16>,
    pub protocol: &'static str,
    pub channel_address: String,
    pub max_concurrency: i64,
    pub health: Option<AppHealth>,
}

#[derive(Debug, Clone)]
pub struct AppHealth {
    pub path: String,
    pub interval: String,
    pub timeout: String,
    pub threshold: u32,
}

pub struct Sidecar {
    pub app_id: String,
    pub api_token: Option<String>,
    pub max_body_size: u64,
    pub registry: Arc<Registry>,
    pub state: StateApi,
    pub invoker: Arc<Invoker>,
    /// The actor runtime (empty without `--placement-host-address`).
    pub actors: crate::actors::ActorSlot,
    /// The workflow engine, once started on the actor state store.
    pub workflows: crate::workflow::WorkflowSlot,
    pub enabled_features: Vec<String>,
    app: AppConnection,
    extended: RwLock<BTreeMap<String, String>>,
    ready: AtomicBool,
    outbound_ready: AtomicBool,
    /// Cancelled when the sidecar should stop (signal or `/v1.0/shutdown`).
    pub shutdown: CancellationToken,
}

impl Sidecar {
    pub fn new(
        opts: &Options,
        registry: Arc<Registry>,
        invoker: Arc<Invoker>,
        api_token: Option<String>,
        enabled_features: Vec<String>,
    ) -> Arc<Self> {
        let namespace = invoker.namespace.clone();
        let protocol = match opts.app_protocol {
            AppProtocol::Http => "http",
            AppProtocol::Https => "https",
            AppProtocol::H2c => "h2c",
            AppProtocol::Grpc => "grpc",
            AppProtocol::Grpcs => "grpcs",
        };
        let app = AppConnection {
            port: opts.app_port,
            protocol,
            channel_address: opts.app_channel_address.clone(),
            max_concurrency: opts.app_max_concurrency,
            health: opts.enable_app_health_check.then(|| AppHealth {
                path: opts.app_health_check_path.clone(),
                interval: format!("{}s", opts.app_health_probe_interval),
                timeout: format!("{}ms", opts.app_health_probe_timeout),
                threshold: opts.app_health_threshold,
            }),
        };
        Arc::new(Self {
            app_id: opts.app_id.clone(),
            api_token,
            max_body_size: opts.max_body_size,
            state: StateApi::new(registry.clone(), opts.app_id.clone(), namespace),
            invoker,
            actors: crate::actors::ActorSlot::new(
                opts.placement_host_address
                    .as_deref()
                    .is_some_and(|a| !a.trim().trim_matches(['"', '\'']).trim().is_empty()),
            ),
            workflows: Default::default(),
            registry,
            enabled_features,
            app,
            extended: RwLock::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            outbound_ready: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        })
    }

    /// Components are loaded: the sidecar can make outbound calls.
    pub fn set_outbound_ready(&self) {
        self.outbound_ready.store(true, Ordering::Release);
    }

    /// Fully initialised, app included.
    pub fn set_ready(&self) {
        self.outbound_ready.store(true, Ordering::Release);
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_outbound_ready(&self) -> bool {
        self.outbound_ready.load(Ordering::Acquire)
    }

    pub fn set_extended(&self, key: String, value: String) {
        self.extended
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    pub fn metadata(&self) -> MetadataSnapshot {
        let mut extended = self
            .extended
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        extended
            .entry("daprRuntimeVersion".to_owned())
            .or_insert_with(|| RUNTIME_VERSION.to_owned());
        MetadataSnapshot {
            id: self.app_id.clone(),
            runtime_version: RUNTIME_VERSION.to_owned(),
            enabled_features: self.enabled_features.clone(),
            components: self.registry.infos(),
            extended,
            app: self.app.clone(),
        }
    }
}
