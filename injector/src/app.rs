//! Wiring: configuration → certificate source → servers → caBundle upkeep.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use arc_swap::ArcSwap;
use dapr_security::{
    SpiffeId, SvidStore, TrustAnchors,
    client::{SentryClient, SentryClientConfig, TokenSource},
};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use rustls::server::ResolvesServerCert;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{
    admission::Injector,
    cli::Args,
    metrics::Metrics,
    mtls::MtlsLookup,
    server::{self, Health},
    tls::{self, ReloadingCert},
    webhook_ca,
};

/// Identity the injector asks Sentry for (Sentry adds the DNS name
/// `dapr-sidecar-injector.<namespace>.svc` for it).
pub const SENTRY_APP_ID: &str = "dapr-injector";

async fn kube_client(args: &Args) -> anyhow::Result<Option<Client>> {
    let config = if let Some(path) = &args.kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Config::incluster().context("loading the in-cluster configuration")?
    } else {
        return Ok(None);
    };
    Ok(Some(
        Client::try_from(config).context("building the Kubernetes client")?,
    ))
}

/// Latest content of a watched PEM file.
type PemWatch = watch::Receiver<Arc<Vec<u8>>>;

/// Polls a PEM file and publishes its content whenever it changes.
fn watch_pem(path: PathBuf, first: Vec<u8>, every: Duration) -> PemWatch {
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if tx.is_closed() {
                return;
            }
            match std::fs::read(&path) {
                Ok(b) if !b.is_empty() && b != **tx.borrow() => {
                    tracing::info!(path = %path.display(), "PEM file changed");
                    tx.send_replace(Arc::new(b));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read PEM file")
                }
            }
        }
    });
    rx
}

fn read_pem(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let allowed = args.allowed()?;
    let namespace = settings.namespace.clone();
    let every = args.cert_reload_interval();
    let kube = kube_client(&args).await?;
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());

    // Trust anchors handed to sidecars; with Sentry they also verify Sentry
    // and become the caBundle.
    let sentry_mode = args.tls_cert_file.is_none();
    let anchors_pem = match read_pem(&args.trust_anchors_file, "trust anchors") {
        Ok(p) => p,
        Err(e) if !sentry_mode => {
            tracing::warn!(error = %format!("{e:#}"), "no trust anchors: injected sidecars get an empty DAPR_TRUST_ANCHORS");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let anchors_rx = watch_pem(args.trust_anchors_file.clone(), anchors_pem.clone(), every);
    let anchors_text = Arc::new(ArcSwap::from_pointee(
        String::from_utf8_lossy(&anchors_pem).into_owned(),
    ));
    {
        let mut rx = anchors_rx.clone();
        let text = anchors_text.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let pem = rx.borrow_and_update().clone();
                text.store(Arc::new(String::from_utf8_lossy(&pem).into_owned()));
            }
        });
    }

    let (resolver, ca_bundle): (Arc<dyn ResolvesServerCert>, Option<PemWatch>) = match (
        &args.tls_cert_file,
        &args.tls_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let c = ReloadingCert::from_files(cert.clone(), key.clone(), every)
                .context("loading the webhook certificate")?;
            tracing::info!(cert = %cert.display(), "serving the webhook certificate from files");
            let ca = match &args.tls_ca_file {
                Some(p) => Some(watch_pem(p.clone(), read_pem(p, "CA bundle")?, every)),
                None => None,
            };
            (c, ca)
        }
        _ => {
            let anchors =
                TrustAnchors::from_pem(&anchors_pem).context("parsing the trust anchors")?;
            let _anchor_watch = anchors.watch_file(args.trust_anchors_file.clone(), every);
            let sentry_id = SpiffeId::new(
                &settings.control_plane_trust_domain,
                &namespace,
                "dapr-sentry",
            )
            .context("building Sentry's SPIFFE id")?;
            let address = args.sentry_address.clone().unwrap_or_else(|| {
                format!(
                    "dapr-sentry.{namespace}.svc.{}:443",
                    settings.cluster_domain
                )
            });
            let mut cfg = SentryClientConfig::new(&address, sentry_id, SENTRY_APP_ID, &namespace);
            let (token, validator) = TokenSource::from_dapr_env(true);
            cfg.token = token;
            cfg.token_validator = validator;
            cfg.trust_domain = Some(settings.control_plane_trust_domain.clone());
            let client = Arc::new(SentryClient::new(cfg, anchors).context("Sentry client")?);
            let store = SvidStore::new();
            client.start(store.clone(), 30).await.with_context(|| {
                format!("obtaining the webhook certificate from Sentry at {address}")
            })?;
            tracing::info!(address, "serving the webhook certificate from Sentry");
            (store.resolver(), Some(anchors_rx.clone()))
        }
    };

    let mtls = match &kube {
        Some(c) => MtlsLookup::kube(c.clone(), &namespace),
        None => MtlsLookup::Fixed(true),
    };
    match (&kube, ca_bundle) {
        (Some(client), Some(ca)) => {
            tokio::spawn(webhook_ca::keep_current(
                client.clone(),
                args.webhook_config_name.clone(),
                ca,
                health.clone(),
            ));
        }
        _ => health.ca_bundle_current.store(true, Ordering::Relaxed),
    }

    let injector = Arc::new(Injector {
        settings,
        allowed,
        trust_anchors: anchors_text,
        mtls,
        metrics: metrics.clone(),
    });
    let tls = tls::server_config(resolver)?;
    let addr =
        server::listen_addr(&args.listen_address, args.port).context("invalid --listen-address")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the webhook to {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "sidecar injector is listening, patching Dapr-enabled pods");
    tokio::spawn(server::serve_tls(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        server::webhook_router(injector),
    ));
    health.webhook_listening.store(true, Ordering::Relaxed);

    let haddr = server::listen_addr(&args.healthz_listen_address, args.healthz_port)
        .context("invalid --healthz-listen-address")?;
    let hl = TcpListener::bind(haddr)
        .await
        .with_context(|| format!("binding healthz to {haddr}"))?;
    tokio::spawn(server::serve_plain(hl, server::healthz_router(health)));
    if args.enable_metrics {
        let maddr = server::listen_addr(&args.metrics_listen_address, args.metrics_port)
            .context("invalid --metrics-listen-address")?;
        let ml = TcpListener::bind(maddr)
            .await
            .with_context(|| format!("binding metrics to {maddr}"))?;
        tokio::spawn(server::serve_plain(ml, server::metrics_router(metrics)));
    }

    shutdown_signal().await;
    tracing::info!("Dapr sidecar injector shut down gracefully");
    Ok(())
}
