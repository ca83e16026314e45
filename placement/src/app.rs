//! Wiring: Raft node, Raft RPC server, leadership watcher, gRPC server,
//! healthz and metrics servers.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tracing::{info, warn};

use crate::{
    grpc::{LeaderSlot, PlacementService},
    http::{HealthState, healthz_router, metrics_router},
    leader::{Event, Leader, LeaderConfig},
    metrics::Metrics,
    options::{Options, OptionsError, Peer, bind_addr, raft_bind_addr},
    raft::{
        NodeId, PeerNode, Raft, network,
        store::{LogStore, StateMachine, StoreError, open_db},
    },
    serve::{ServeOptions, serve},
};

/// Raft timings (milliseconds). Placement nodes talk over a LAN; these give
/// a leader change in about 1-2 s.
const RAFT_HEARTBEAT_MS: u64 = 200;
const RAFT_ELECTION_MIN_MS: u64 = 800;
const RAFT_ELECTION_MAX_MS: u64 = 1600;

/// Fatal start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad flags.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The log store failed to open.
    #[error("raft log store: {0}")]
    Store(#[from] StoreError),
    /// Invalid Raft configuration.
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    /// Raft failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// A listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--tls-enabled`: no identity from Sentry.
    #[error("mTLS: {0}")]
    Identity(#[from] dapr_security::identity::IdentityError),
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Runs the placement service until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> Result<(), AppError> {
    let peers = opts.peers()?;
    let me = peers
        .iter()
        .find(|p| p.id == opts.id)
        .cloned()
        .ok_or_else(|| OptionsError::SelfNotInCluster(opts.id.clone()))?;
    let my_id = crate::raft::node_id(&me.id);
    if opts.tls_enabled {
        warn!(
            "--tls-enabled is accepted but mTLS is not wired yet (comes with Sentry); serving plaintext"
        );
    }
    if opts.raft_logstore_path.is_none() && !opts.inmem_store_enabled {
        warn!(
            "--inmem-store-enabled=false without --raft-logstore-path: keeping the log in memory"
        );
    }

    // Raft.
    let db = open_db(opts.raft_logstore_path.as_deref())?;
    let log = LogStore::new(db.clone());
    let sm = StateMachine::open(db)?;
    let sm_data = sm.data();
    let config = Config {
        cluster_name: "dapr-placement".into(),
        heartbeat_interval: RAFT_HEARTBEAT_MS,
        election_timeout_min: RAFT_ELECTION_MIN_MS,
        election_timeout_max: RAFT_ELECTION_MAX_MS,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.raft_snapshot_threshold.max(1)),
        max_in_snapshot_log_to_keep: (opts.raft_snapshot_threshold / 10).min(100),
        ..Default::default()
    }
    .validate()?;
    let raft = Raft::new(
        my_id,
        Arc::new(config),
        network::Network::default(),
        log,
        sm,
    )
    .await
    .map_err(|e| AppError::Raft(e.to_string()))?;
    let raft_addr = raft_bind_addr(&me.addr)?;
    let raft_listener = bind(raft_addr).await?;
    info!(id = %me.id, raft_id = my_id, raft = %raft_addr, peers = peers.len(), persistent = opts.raft_logstore_path.is_some(), "raft node started");
    let raft_router = network::router(raft.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(raft_listener, raft_router).await {
            warn!(error = %e, "raft RPC server stopped");
        }
    });
    tokio::spawn(initialize(raft.clone(), me.clone(), peers.clone()));

    // Leadership -> leader loop.
    let metrics = Arc::new(Metrics::default());
    let slot = LeaderSlot::default();
    let leader_cfg = LeaderConfig {
        node: opts.id.clone(),
        replication_factor: opts.replication_factor,
        min_api_level: opts.min_api_level,
        max_api_level: opts.max_api_level(),
        disseminate_timeout: opts.disseminate_timeout,
        coalesce_window: opts.disseminate_coalesce_window,
        heartbeat_timeout: opts.heartbeat_timeout,
        faulty_host_detect_duration: opts.faulty_host_detect_duration,
        raft_write_timeout: Duration::from_secs(5),
    };
    tokio::spawn(watch_leadership(
        raft.clone(),
        my_id,
        slot.clone(),
        leader_cfg,
        sm_data.clone(),
        metrics.clone(),
    ));

    // HTTP servers.
    let ready = Arc::new(AtomicBool::new(false));
    let health = HealthState {
        ready: ready.clone(),
        sm: sm_data,
        min_api_level: opts.min_api_level,
        max_api_level: opts.max_api_level(),
    };
    let healthz_listener =
        bind(bind_addr(&opts.healthz_listen_address, opts.healthz_port)?).await?;
    let healthz_app = healthz_router(health, opts.metadata_enabled);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(healthz_listener, healthz_app).await {
            warn!(error = %e, "healthz server stopped");
        }
    });
    if opts.enable_metrics {
        let metrics_listener =
            bind(bind_addr(&opts.metrics_listen_address, opts.metrics_port)?).await?;
        let app = metrics_router(metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, app).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }

    // gRPC.
    let grpc_addr = bind_addr(&opts.listen_address, opts.port)?;
    let grpc_listener = bind(grpc_addr).await?;
    // Kept alive for the whole run: dropping it stops certificate renewal.
    let identity = if opts.tls_enabled {
        Some(obtain_identity(&opts).await?)
    } else {
        None
    };
    let service = PlacementService::new(&opts.id, slot.clone());
    let serve_opts = ServeOptions {
        keepalive_time: opts.keepalive_time,
        keepalive_timeout: opts.keepalive_timeout,
    };
    // Leadership ends first, so every sidecar stream is closed with a status
    // and the connections can then close gracefully.
    let stop_slot = slot.clone();
    let stopping = async move {
        shutdown_signal().await;
        if let Some(tx) = stop_slot.take() {
            let _ = tx.send(Event::Shutdown).await;
        }
    };
    ready.store(true, Ordering::Relaxed);
    info!(addr = %grpc_addr, tls = identity.is_some(), "placement gRPC server listening");
    match &identity {
        Some(id) => {
            let tls = std::sync::Arc::new(id.sidecar_server_config()?);
            let incoming = dapr_security::net::tls_incoming(
                grpc_listener,
                tls,
                dapr_security::net::HANDSHAKE_TIMEOUT,
            );
            serve(incoming, service, serve_opts, stopping).await;
        }
        None => {
            let incoming = TcpListenerStream::new(grpc_listener).map(|r| {
                r.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
            serve(incoming, service, serve_opts, stopping).await;
        }
    }
    drop(identity);
    ready.store(false, Ordering::Relaxed);
    info!("shutting down");
    if let Some(tx) = slot.take() {
        let _ = tx.send(Event::Shutdown).await;
    }
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    Ok(())
}

/// `--tls-enabled`: this service's SVID from Sentry, with Dapr's flags.
async fn obtain_identity(
    opts: &Options,
) -> Result<dapr_security::controlplane::Identity, AppError> {
    use dapr_security::controlplane::{ControlPlaneConfig, Identity};
    let mut cfg = ControlPlaneConfig::new("dapr-placement", opts.sentry_address.clone());
    if cfg.sentry_address.is_empty() {
        cfg.sentry_address = format!("dapr-sentry.{}.svc:443", cfg.namespace);
    }
    cfg.trust_domain = opts.trust_domain.clone();
    cfg.trust_anchors_file = opts.trust_anchors_file.clone().into();
    cfg.kubernetes = opts.mode == "kubernetes";
    let identity = Identity::obtain(cfg.into_identity_config()).await?;
    if let Some(id) = identity.id() {
        info!(%id, "mTLS enabled: certificate from Sentry");
    }
    Ok(identity)
}

/// Forms the cluster: the node with the lowest id initializes it (after a
/// short wait, so a restarted node with an empty log learns the existing
/// cluster from its leader instead). The others do the same after a longer
/// wait if nobody has contacted them; initializing several nodes with the
/// same membership is safe in openraft.
async fn initialize(raft: Raft, me: Peer, peers: Vec<Peer>) {
    let lowest = peers.iter().map(|p| p.id.as_str()).min() == Some(me.id.as_str());
    let wait = match (peers.len(), lowest) {
        (1, _) => Duration::ZERO,
        (_, true) => Duration::from_millis(2 * RAFT_ELECTION_MAX_MS),
        (_, false) => Duration::from_secs(10),
    };
    tokio::time::sleep(wait).await;
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            warn!(error = %e, "raft stopped before initialization");
            return;
        }
    }
    let members: BTreeMap<NodeId, PeerNode> = peers
        .iter()
        .map(|p| {
            (
                crate::raft::node_id(&p.id),
                PeerNode {
                    name: p.id.clone(),
                    addr: p.addr.clone(),
                },
            )
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => info!(members = peers.len(), "raft cluster initialized"),
        Err(e) => info!(error = %e, "raft cluster already initialized"),
    }
}

/// Starts a leader loop when this node becomes leader, stops it when not.
async fn watch_leadership(
    raft: Raft,
    my_id: NodeId,
    slot: LeaderSlot,
    cfg: LeaderConfig,
    sm: Arc<std::sync::RwLock<crate::raft::store::SmData>>,
    metrics: Arc<Metrics>,
) {
    let mut rx = raft.metrics();
    let mut leading = false;
    let mut term = 0;
    loop {
        let (is_leader, current_term) = {
            let m = rx.borrow_and_update();
            (
                m.state == ServerState::Leader && m.current_leader == Some(my_id),
                m.current_term,
            )
        };
        if is_leader && (!leading || current_term != term) {
            if let Some(old) = slot.take() {
                let _ = old.send(Event::Shutdown).await;
            }
            info!(term = current_term, "became leader; serving sidecars");
            slot.set(Some(Leader::spawn(
                cfg.clone(),
                raft.clone(),
                sm.clone(),
                metrics.clone(),
            )));
            metrics.set_leader(true);
        } else if !is_leader && leading {
            info!(term = current_term, "lost leadership; refusing sidecars");
            if let Some(old) = slot.take() {
                let _ = old.send(Event::Shutdown).await;
            }
            metrics.set_leader(false);
        }
        leading = is_leader;
        term = current_term;
        if rx.changed().await.is_err() {
            break;
        }
    }
    if let Some(old) = slot.take() {
        let _ = old.send(Event::Shutdown).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
