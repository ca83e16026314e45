//! `dapr-operator`: serves `dapr.io` resources to sidecars over
//! `dapr.proto.operator.v1.Operator` and reconciles `<app-id>-dapr` Services.
//!
//! * [`cache`]: one watcher-fed cache per kind ([`kinds`]), with change broadcast.
//! * [`grpc`]: the Operator API, scoped by the caller's SPIFFE id ([`scope`]),
//!   with `secretKeyRef`s resolved from Kubernetes Secrets ([`secrets`]).
//! * [`reconciler`]: the Service reconciler, run by the Lease holder ([`leader`]).

pub mod cache;
pub mod cli;
pub mod conversion;
pub mod grpc;
pub mod http;
pub mod kinds;
pub mod leader;
pub mod reconciler;
pub mod scope;
pub mod secrets;
pub mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use dapr_rs_proto::generated::dapr::proto::operator::v1::operator_server::OperatorServer;
use kube::{Client, Config, config::KubeConfigOptions};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;

use crate::{
    cli::Args,
    grpc::{Auth, Caches, OperatorApi},
    http::Health,
    secrets::KubeSecrets,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
}

/// A started operator.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub caches: Caches,
    pub health: Arc<Health>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every background task (watchers, reconciler, servers' accept loops).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A client from `--kubeconfig`, else in-cluster / $KUBECONFIG.
pub async fn kube_client(kubeconfig: Option<&str>) -> Result<Client, StartError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| StartError::Kube(format!("{path}: {e}")))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| StartError::Kube(format!("{path}: {e}")))?
        }
        None => Config::infer()
            .await
            .map_err(|e| StartError::Kube(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| StartError::Kube(e.to_string()))
}

async fn bind(addr: String) -> Result<TcpListener, StartError> {
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn identity(args: &Args) -> String {
    if !args.pod_name.is_empty() {
        return args.pod_name.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dapr-operator".to_owned());
    format!("{host}_{}", std::process::id())
}

/// Starts everything and returns once the listeners are bound; readiness
/// (`/healthz`) follows when every cache has loaded.
pub async fn start(args: Args, client: Client) -> Result<Running, StartError> {
    let health = Arc::new(Health::default());
    let caches = Caches::new();
    let mut tasks = Vec::new();
    for cache in caches.all() {
        tasks.push(tokio::spawn(
            cache
                .clone()
                .run(client.clone(), args.watch_namespace.clone()),
        ));
    }

    let healthz = bind(Args::socket(
        &args.healthz_listen_address,
        args.healthz_port,
    ))
    .await?;
    let healthz_addr = healthz.local_addr().map_err(|source| StartError::Bind {
        addr: "healthz".into(),
        source,
    })?;
    let router = http::health_router(health.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(healthz, router).await {
            tracing::error!(error = %e, "healthz server failed");
        }
    }));
    let metrics_addr = if args.enable_metrics {
        let addr: SocketAddr = Args::socket(&args.metrics_listen_address, args.metrics_port)
            .parse()
            .map_err(|e| StartError::Bind {
                addr: args.metrics_listen_address.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        Some(
            http::serve(addr, http::metrics_router(caches.clone()))
                .await
                .map_err(|source| StartError::Bind {
                    addr: addr.to_string(),
                    source,
                })?,
        )
    } else {
        None
    };

    let listener = bind(Args::socket(&args.listen_address, args.port)).await?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: "grpc".into(),
        source,
    })?;
    let auth = if args.disable_mtls {
        tracing::warn!("mTLS disabled: the Operator API trusts the namespace in each request");
        Auth::Trusting
    } else {
        Auth::Spiffe
    };
    let api = OperatorServer::new(OperatorApi::new(
        caches.clone(),
        KubeSecrets(client.clone()),
        auth,
    ));
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(api);
    if args.disable_mtls {
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    } else {
        let anchors = tls::anchors(&args)?;
        let svids = tls::svids(&args, anchors.clone()).await?;
        let cfg = dapr_security::tls::server_config(
            &svids,
            anchors,
            dapr_security::tls::PeerAuthorizer::any(),
        )
        .map_err(|e| StartError::TlsConfig(e.to_string()))?;
        if !args.disable_conversion_webhook {
            let webhook = bind(Args::socket(
                &args.webhook_listen_address,
                args.webhook_port,
            ))
            .await?;
            let mut web_cfg = dapr_security::tls::server_config_no_client_auth(&svids)
                .map_err(|e| StartError::TlsConfig(e.to_string()))?;
            // The apiserver speaks HTTP/2 or HTTP/1.1 to webhooks.
            web_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tracing::info!(addr = ?webhook.local_addr().ok(), crd = %args.conversion_crd, "conversion webhook listening");
            tasks.push(tokio::spawn(conversion::serve(webhook, Arc::new(web_cfg))));
            tasks.push(tokio::spawn(conversion::keep_ca_bundle(
                client.clone(),
                args.conversion_crd.clone(),
                args.trust_anchors_file.clone(),
                args.namespace.clone(),
                Duration::from_secs(30),
            )));
        }
        let incoming = dapr_security::net::tls_incoming(
            listener,
            Arc::new(cfg),
            dapr_security::net::HANDSHAKE_TIMEOUT,
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    }
    tracing::info!(%grpc_addr, mtls = !args.disable_mtls, "Operator API listening");

    {
        let caches = caches.clone();
        let health = health.clone();
        tasks.push(tokio::spawn(async move {
            for c in caches.all() {
                c.wait_synced().await;
            }
            tracing::info!("all dapr.io resources loaded");
            health.set_ready(true);
        }));
    }

    if !args.disable_service_reconciler {
        let ns = args.watch_namespace.clone();
        let c = client.clone();
        let work = move || reconciler::run(c.clone(), ns.clone());
        if args.disable_leader_election {
            tasks.push(tokio::spawn(work()));
        } else {
            let elector = leader::LeaderElector::new(
                client.clone(),
                &args.namespace,
                &args.leader_election_id,
                &identity(&args),
                leader::Timings::default(),
            );
            tasks.push(tokio::spawn(elector.run(work)));
        }
    }

    Ok(Running {
        grpc_addr,
        healthz_addr,
        metrics_addr,
        caches,
        health,
        tasks,
    })
}
