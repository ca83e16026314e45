//! Start-up, serving, credential rotation and shutdown.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use dapr_security::{
    Ca, CaCredentials, SignPolicy, SpiffeId, net::tls_incoming, tls::server_config_no_client_auth,
};
use tokio::sync::watch;

use crate::{
    cli::{Args, Mode},
    config::SentryConfig,
    credentials::{CredentialPaths, FileState, read_files, write_files},
    duration::parse_go_duration,
    http::{Health, health_router, metrics_router, serve},
    kube_store::KubeStore,
    metrics::Metrics,
    service::{CaService, SentryState},
    validator::{JwksValidator, KubernetesValidator, Validators},
};

/// How long before expiry Sentry starts warning about the root or issuer.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Sets up `tracing` from `--log-level` / `--log-as-json` (Dapr's JSON
/// fields, scope `dapr.sentry`). An unknown level falls back to `info`.
pub fn init_logging(args: &Args) {
    let level = match args.log_level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        _ => "info",
    };
    if let Err(e) =
        dapr_observability::logging::init_control_plane("dapr.sentry", level, args.log_as_json, "")
    {
        eprintln!("dapr-sentry: {e}");
    }
}

/// The control-plane namespace: `$NAMESPACE`, else `default` (as Dapr).
pub fn control_plane_namespace() -> String {
    std::env::var("NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

fn listen_addr(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let ip: IpAddr = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("invalid listen address {host:?}"))?
    };
    Ok(SocketAddr::new(ip, port))
}

/// The cluster DNS domain from `/etc/resolv.conf` (`svc.<domain>` search entry).
fn cluster_domain_from_resolv_conf() -> Option<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(|l| l.split_whitespace())
        .find_map(|d| d.strip_prefix("svc.").map(str::to_owned))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where credentials live and how to re-read them.
enum Source {
    Files(CredentialPaths),
    Kube(KubeStore),
}

impl Source {
    async fn read(&self) -> anyhow::Result<Option<CaCredentials>> {
        match self {
            Source::Files(p) => match read_files(p)? {
                FileState::Present(c) => Ok(Some(c)),
                FileState::Missing | FileState::Partial(_) => Ok(None),
            },
            Source::Kube(k) => Ok(k.read().await?),
        }
    }
}

/// Loads credentials at start, generating and persisting them when absent.
async fn initial_credentials(
    source: &Source,
    trust_domain: &str,
    namespace: &str,
) -> anyhow::Result<CaCredentials> {
    match source {
        Source::Files(paths) => match read_files(paths).context("reading issuer credentials")? {
            FileState::Present(c) => {
                tracing::info!(
                    "Root and issuer certs found: using credentials from the file system"
                );
                Ok(c)
            }
            FileState::Missing => {
                tracing::info!("Root and issuer certs not found: generating a self-signed CA");
                let creds = CaCredentials::generate_default(trust_domain, namespace)?;
                write_files(paths, &creds).context("writing the generated credentials")?;
                tracing::info!(
                    ca = %paths.trust_anchors.display(),
                    issuer = %paths.issuer_cert.display(),
                    "Self-signed root and issuer generated and written"
                );
                Ok(creds)
            }
            FileState::Partial(missing) => bail!(
                "issuer credentials are incomplete (missing {missing:?}); refusing to overwrite the others"
            ),
        },
        Source::Kube(store) => {
            let (creds, generated) = store
                .load_or_init(|| CaCredentials::generate_default(trust_domain, namespace))
                .await
                .context("loading the trust bundle from Kubernetes")?;
            if generated {
                tracing::info!(
                    "Generated a self-signed CA and stored it in the trust-bundle Secret"
                );
            } else {
                tracing::info!("Root and issuer certs found in the trust-bundle Secret");
            }
            Ok(creds)
        }
    }
}

/// Runs Sentry until SIGTERM / Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    dapr_security::ensure_crypto_provider();
    let kubernetes = args.mode == Mode::Kubernetes;
    if kubernetes && std::env::var_os("NAMESPACE").is_none() {
        tracing::warn!("NAMESPACE is not set; assuming the control plane runs in 'default'");
    }
    let namespace = control_plane_namespace();
    let sentry_id = SpiffeId::sentry(&args.trust_domain, &namespace)
        .context("invalid --trust-domain or NAMESPACE")?;
    let poll = parse_go_duration(&args.credentials_poll_interval)
        .context("--credentials-poll-interval")?
        .max(Duration::from_millis(100));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mode = ?args.mode,
        %sentry_id,
        "Starting dapr-rs Sentry certificate authority"
    );

    let kube_client = if kubernetes {
        let client = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {path}"))?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .context("kubeconfig")?;
                kube::Client::try_from(cfg).context("Kubernetes client")?
            }
            None => kube::Client::try_default()
                .await
                .context("Kubernetes client")?,
        };
        Some(client)
    } else {
        None
    };

    // Configuration (spec.mtls).
    let config = match &kube_client {
        None => match SentryConfig::load_file(Path::new(&args.config), false)? {
            Some(c) => c,
            None => {
                tracing::info!(config = %args.config, "Configuration file not found; using defaults");
                SentryConfig::defaults(false)
            }
        },
        Some(client) => load_kube_config(client, &namespace, &args.config).await?,
    };
    tracing::info!(
        workload_cert_ttl = ?config.policy.workload_ttl,
        allowed_clock_skew = ?config.policy.clock_skew,
        "Certificate policy"
    );

    let paths = CredentialPaths::new(
        Path::new(&args.issuer_credentials),
        &args.issuer_ca_filename,
        &args.issuer_certificate_filename,
        &args.issuer_key_filename,
    );
    let source = match &kube_client {
        None => Source::Files(paths),
        Some(client) => Source::Kube(KubeStore::new(
            client.clone(),
            namespace.clone(),
            &args.issuer_ca_filename,
            &args.issuer_certificate_filename,
            &args.issuer_key_filename,
        )),
    };
    let creds = initial_credentials(&source, &args.trust_domain, &namespace).await?;
    let ca = Ca::load(&creds, config.policy).context("issuer credentials are not usable")?;
    tracing::info!(issuer_serial = %ca.issuer_serial(), anchors = ca.trust_anchors().len(), "CA certificate key pair ready");

    // Validators.
    let v = &config.validators;
    let validators = Validators {
        default: v.default,
        insecure: v.insecure,
        jwks: match &v.jwks {
            Some(opts) => Some(JwksValidator::from_options(opts, &sentry_id)?),
            None => None,
        },
        kubernetes: match (&kube_client, v.kubernetes) {
            (Some(client), true) => Some(KubernetesValidator::new(client.clone(), &sentry_id)),
            (None, true) => bail!("the kubernetes validator needs --mode kubernetes"),
            _ => None,
        },
    };
    for (name, on) in [
        ("insecure", validators.insecure),
        ("jwks", validators.jwks.is_some()),
        ("kubernetes", validators.kubernetes.is_some()),
    ] {
        if on {
            tracing::info!("Adding validator '{name}'");
        }
    }

    let cluster_domain = if kubernetes {
        cluster_domain_from_resolv_conf().unwrap_or_else(|| args.trust_domain.clone())
    } else {
        args.trust_domain.clone()
    };
    let metrics = Arc::new(Metrics::default());
    let state = SentryState::new(ca, validators, sentry_id, cluster_domain, metrics.clone())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    // HTTP endpoints.
    let health = Arc::new(Health::default());
    let health_addr = listen_addr(&args.healthz_listen_address, args.healthz_port)?;
    let health_task = serve(health_addr, health_router(health.clone()), stopped())
        .await
        .with_context(|| format!("binding the healthz endpoint {health_addr}"))?;
    let metrics_task = if args.enable_metrics {
        let addr = listen_addr(&args.metrics_listen_address, args.metrics_port)?;
        Some(
            serve(addr, metrics_router(metrics.clone()), stopped())
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?,
        )
    } else {
        None
    };

    // gRPC over TLS with Sentry's own certificate; no client certificates.
    let grpc_addr = listen_addr(&args.listen_address, args.port)?;
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding the CA service {grpc_addr}"))?;
    let tls = Arc::new(server_config_no_client_auth(&state.server_svids)?);
    let incoming = tls_incoming(listener, tls, dapr_security::net::HANDSHAKE_TIMEOUT);
    let grpc = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .add_service(CaService::new(state.clone()).into_server())
        .serve_with_incoming_shutdown(incoming, stopped());
    let grpc_task = tokio::spawn(grpc);
    tracing::info!(%grpc_addr, "Running gRPC server");
    health.set_ready(true);

    let rotation = tokio::spawn(watch_credentials(
        source,
        state.clone(),
        config.policy,
        creds,
        poll,
        kubernetes,
    ));
    let renewal = tokio::spawn(renew_server_cert(state.clone()));

    shutdown_signal().await;
    tracing::info!("Shutting down");
    health.set_ready(false);
    rotation.abort();
    renewal.abort();
    let _ = stop_tx.send(true);
    match grpc_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server error"),
        Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
    }
    let _ = health_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    Ok(())
}

async fn load_kube_config(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<SentryConfig> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "configurations");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &ar);
    match api.get_opt(name).await {
        Ok(Some(obj)) => Ok(SentryConfig::from_spec_json(
            obj.data.get("spec").unwrap_or(&serde_json::Value::Null),
            true,
        )?),
        Ok(None) => {
            tracing::warn!(
                configuration = name,
                "Configuration not found; using defaults"
            );
            Ok(SentryConfig::defaults(true))
        }
        Err(e) => {
            tracing::warn!(configuration = name, error = %e, "Configuration unreadable; using defaults");
            Ok(SentryConfig::defaults(true))
        }
    }
}

/// Polls the credential source and switches to new credentials without a
/// restart. A change must be seen unchanged on two consecutive polls (so
/// the three files of a rotation are read together); credentials that fail
/// verification are logged and skipped, the current CA stays in force.
async fn watch_credentials(
    source: Source,
    state: Arc<SentryState>,
    policy: SignPolicy,
    mut current: CaCredentials,
    interval: Duration,
    kubernetes: bool,
) {
    let interval = if kubernetes {
        interval.max(Duration::from_secs(5))
    } else {
        interval
    };
    let mut pending: Option<CaCredentials> = None;
    let mut rejected: Option<CaCredentials> = None;
    let mut last_error: Option<String> = None;
    let mut next_expiry_check = SystemTime::now();
    loop {
        tokio::time::sleep(interval).await;
        if SystemTime::now() >= next_expiry_check {
            warn_on_expiry(&state.ca());
            next_expiry_check = SystemTime::now() + Duration::from_secs(3600);
        }
        let seen = match source.read().await {
            Ok(Some(c)) => {
                last_error = None;
                c
            }
            Ok(None) => continue,
            Err(e) => {
                let msg = format!("{e:#}");
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "cannot read issuer credentials");
                    last_error = Some(msg);
                }
                continue;
            }
        };
        if seen == current {
            pending = None;
            continue;
        }
        if rejected.as_ref() == Some(&seen) {
            continue;
        }
        if pending.as_ref() != Some(&seen) {
            tracing::debug!("issuer credentials changed; waiting for them to settle");
            pending = Some(seen);
            continue;
        }
        pending = None;
        match Ca::load(&seen, policy) {
            Ok(ca) => {
                let serial = ca.issuer_serial().to_owned();
                let anchors = ca.trust_anchors().len();
                match state.install_ca(ca) {
                    Ok(()) => {
                        tracing::warn!(issuer_serial = %serial, anchors, "Issuer credentials changed; now signing with the new issuer")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "new issuer installed but Sentry's serving certificate could not be re-issued")
                    }
                }
                current = seen;
                rejected = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "new issuer credentials rejected; still signing with the previous issuer");
                rejected = Some(seen);
            }
        }
    }
}

fn warn_on_expiry(ca: &Ca) {
    let now = SystemTime::now();
    for (what, t) in [
        ("root", ca.earliest_anchor_expiry()),
        ("issuer", ca.issuer_not_after()),
    ] {
        match t.duration_since(now) {
            Ok(left) if left < EXPIRY_WARNING => tracing::warn!(
                "The {what} certificate expires in {} days; rotate it (see the Sentry README)",
                left.as_secs() / 86400
            ),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "A {what} certificate has expired; remove it from the trust bundle or rotate it"
            ),
        }
    }
}

/// Re-issues Sentry's serving certificate at half its lifetime.
async fn renew_server_cert(state: Arc<SentryState>) {
    let mut changes = state.server_svids.subscribe();
    loop {
        let wait = state
            .server_svids
            .current()
            .map(|s| {
                s.renewal_time()
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            _ = changes.changed() => continue,
        }
        let due = state
            .server_svids
            .current()
            .is_none_or(|s| SystemTime::now() >= s.renewal_time());
        if !due {
            continue;
        }
        match state.renew_server_cert() {
            Ok(()) => tracing::info!("Sentry serving certificate renewed"),
            Err(e) => {
                tracing::error!(error = %e, "renewing Sentry's serving certificate failed; retrying in 10s");
                tokio::time::sleep(dapr_security::RENEWAL_RETRY).await;
            }
        }
    }
}
