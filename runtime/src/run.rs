//! Startup, serving and graceful shutdown.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use dapr_crds::{Component, ComponentSpec, Configuration, MetadataItem, ObjectMeta};
use tokio::{net::TcpListener, task::JoinSet};

use dapr_components::{
    ComponentMetadata,
    nameresolution::{
        Instance, NameResolver, kubernetes::KubernetesResolver, mdns::MdnsResolver,
        sqlite::SqliteResolver,
    },
};
use dapr_policy::{acl::AccessControl, resiliency::ResiliencyRegistry};

use crate::{
    api,
    appchannel::AppChannel,
    components::{ComponentLoader, Registry},
    hotreload,
    invoke::{
        self, Invoker,
        grpc_proxy::{self, GrpcRelay, ProxyState},
    },
    kubernetes, middleware,
    mtls::{self, SidecarMtls},
    options::{Mode, Options},
    resources::{self, Sourced},
    sidecar::Sidecar,
};

pub fn init_logging(opts: &Options) -> anyhow::Result<()> {
    dapr_observability::logging::init(&dapr_observability::logging::LogOptions {
        level: opts.log_level.clone(),
        json: opts.log_as_json,
        scope: "dapr.runtime".into(),
        app_id: opts.app_id.clone(),
        version: crate::sidecar::RUNTIME_VERSION.into(),
    })?;
    Ok(())
}

/// The components a bare `daprd --app-id X` starts with: a SQLite state store
/// named `statestore` (also usable as the actor state store).
fn embedded_default_components(opts: &Options) -> anyhow::Result<Vec<Sourced<Component>>> {
    let dir = opts.data_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let db = dir.join("state.db");
    let item = |name: &str, value: &str| MetadataItem {
        name: name.to_owned(),
        value: Some(serde_json::Value::String(value.to_owned())),
        secret_key_ref: None,
        env_ref: None,
    };
    let statestore = Component {
        api_version: "dapr.io/v1alpha1".into(),
        kind: "Component".into(),
        metadata: ObjectMeta {
            name: "statestore".into(),
            ..ObjectMeta::default()
        },
        spec: ComponentSpec {
            type_: "state.sqlite".into(),
            version: "v1".into(),
            ignore_errors: false,
            init_timeout: None,
            metadata: vec![
                item("connectionString", &db.to_string_lossy()),
                item("actorStateStore", "true"),
            ],
        },
        auth: Default::default(),
        scopes: Vec::new(),
    };
    // Dapr's default pub/sub is named `pubsub`; here it lives in-process.
    let pubsub = Component {
        metadata: ObjectMeta {
            name: "pubsub".into(),
            ..ObjectMeta::default()
        },
        spec: ComponentSpec {
            type_: "pubsub.in-memory".into(),
            version: "v1".into(),
            ignore_errors: false,
            init_timeout: None,
            metadata: Vec::new(),
        },
        ..statestore.clone()
    };
    Ok(vec![
        Sourced {
            file: PathBuf::from("<embedded default>"),
            resource: statestore,
        },
        Sourced {
            file: PathBuf::from("<embedded default>"),
            resource: pubsub,
        },
    ])
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    if opts.app_id.is_empty() {
        bail!("--app-id is required");
    }
    let namespace = std::env::var("NAMESPACE").unwrap_or_default();
    let api_token = std::env::var("DAPR_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    // Kubernetes mode: every resource comes from the operator.
    let operator = if opts.mode == Mode::Kubernetes {
        Some(kubernetes::Operator::start(&opts, &namespace).await?)
    } else {
        None
    };

    let configuration: Option<Configuration> = match opts.config.first() {
        // In Kubernetes mode --config names a Configuration resource.
        Some(name) if operator.is_some() => match &operator {
            Some(op) => Some(op.client.get_configuration(name).await?),
            None => None,
        },
        Some(path) => Some(
            resources::load_configuration(path)?
                .with_context(|| format!("--config {path} holds no Configuration"))?,
        ),
        None => None,
    };
    let features: Vec<String> = configuration
        .as_ref()
        .map(|c| {
            c.spec
                .features
                .iter()
                .filter(|f| f.enabled)
                .map(|f| f.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let hot_reload = features.iter().any(|f| f == "HotReload");
    let observability = dapr_observability::daprd::start(dapr_observability::daprd::Settings {
        app_id: &opts.app_id,
        namespace: &namespace,
        enable_metrics: opts.enable_metrics,
        metrics_port: opts.metrics_port,
        metrics_listen_address: &opts.metrics_listen_address,
        enable_api_logging: opts.enable_api_logging,
        configuration: configuration.as_ref().map(|c| &c.spec.extra),
    })
    .await?;

    let registry = Arc::new(Registry::default());
    let max_message = usize::try_from(opts.max_body_size).unwrap_or(usize::MAX);
    let resolver = name_resolver(&opts, configuration.as_ref())?;
    let resources = if let Some(op) = &operator {
        op.load_resources(&opts.app_id).await?
    } else if opts.resources_paths.is_empty() {
        resources::Resources::default()
    } else {
        resources::load(&opts.resources_paths)?
    };
    let acl = AccessControl::from_configuration(
        configuration
            .as_ref()
            .and_then(|c| c.spec.access_control.as_ref()),
    )
    .context("Configuration accessControl")?;
    let resiliency_docs: Vec<dapr_crds::Resource> = resources
        .others
        .iter()
        .map(|o| dapr_crds::Resource::Other {
            kind: o.resource.0.clone(),
            document: o.resource.1.clone(),
        })
        .collect();
    let (resiliency, resiliency_errors) =
        ResiliencyRegistry::from_resources(&opts.app_id, &resiliency_docs);
    if let Some(e) = resiliency_errors.first() {
        bail!("invalid Resiliency resource: {e}");
    }
    // The certificate is requested with the app trust domain, as in Dapr.
    let mtls = if let Some(m) = operator
        .as_ref()
        .and_then(|o| o.mtls_for(acl.trust_domain()))
    {
        Some(m)
    } else if opts.enable_mtls {
        Some(SidecarMtls::start(&opts, &opts.app_id, &namespace, acl.trust_domain()).await?)
    } else {
        None
    };
    let mut invoker = Invoker::new(
        opts.app_id.clone(),
        namespace.clone(),
        AppChannel::from_options(&opts),
        resolver.clone(),
        max_message,
    )
    .with_policies(resiliency, acl);
    if let Some(m) = &mtls {
        invoker = invoker.with_mtls(m.clone());
    }
    let invoker = Arc::new(invoker);
    let sidecar = Sidecar::new(&opts, registry, invoker.clone(), api_token, features);
    let loader = Arc::new(ComponentLoader {
        app_id: opts.app_id.clone(),
        namespace: namespace.clone(),
        registry: sidecar.registry.clone(),
    });
    let components = if opts.resources_paths.is_empty() && operator.is_none() {
        embedded_default_components(&opts)?
    } else {
        kubernetes::with_builtin_secret_store(&opts, resources.components.clone())
    };
    sidecar.registry.set_pubsub_resiliency(Arc::new(
        ResiliencyRegistry::from_resources(&opts.app_id, &resiliency_docs).0,
    ));
    sidecar
        .registry
        .set_secret_scopes(crate::secrets::SecretScopes::from_configuration(
            configuration.as_ref(),
        )?);
    loader.load_all(&components).await?;
    let clustered =
        !crate::actors::placement_addresses(opts.placement_host_address.as_deref()).is_empty();
    if let Some(engine) =
        crate::workflow::start(&sidecar.registry, &opts.app_id, &namespace, clustered).await?
    {
        sidecar.workflows.set(engine);
    }
    let declarative_subscriptions =
        crate::pubsub::subscriptions::declarative(&resources.others, &opts.app_id)?;
    let subscriptions = Arc::new(crate::pubsub::manager::SubscriptionManager::default());
    let input_bindings = Arc::new(crate::bindings::input::InputBindingManager::default());
    subscriptions
        .start_outbox(&sidecar.registry, &opts.app_id, &namespace)
        .await;
    // HTTPEndpoints after components: their secretKeyRefs read secret stores.
    let endpoints =
        invoke::external::build_all(&resources.http_endpoints, &sidecar.registry, &opts.app_id)
            .await?;
    invoker.endpoints.replace(endpoints);

    let empty_spec = dapr_crds::ConfigurationSpec::default();
    let http_pipeline = middleware::build_pipeline(
        configuration
            .as_ref()
            .map(|c| &c.spec)
            .unwrap_or(&empty_spec),
        middleware::PipelineKind::Http,
        components.iter().map(|c| &c.resource),
    )
    .context("Configuration httpPipeline")?;
    http_pipeline.prefetch().await.context("httpPipeline")?;
    let http_pipeline = middleware::SharedPipeline::new(http_pipeline);
    // appHttpPipeline: middleware on the calls daprd makes to its app.
    let app_pipeline = middleware::build_pipeline(
        configuration
            .as_ref()
            .map(|c| &c.spec)
            .unwrap_or(&empty_spec),
        middleware::PipelineKind::AppHttp,
        components.iter().map(|c| &c.resource),
    )
    .context("Configuration appHttpPipeline")?;
    app_pipeline.prefetch().await.context("appHttpPipeline")?;
    if let Some(app) = &invoker.app {
        app.pipeline.set(app_pipeline);
    }

    let mut servers = JoinSet::new();
    let listen = opts.listen_addresses().map_err(anyhow::Error::msg)?;
    for ip in &listen {
        let addr = SocketAddr::new(*ip, opts.dapr_http_port);
        let listener = bind(addr, "HTTP API").await?;
        let router = api::http::router_with_pipeline(sidecar.clone(), &http_pipeline)
            .layer(observability.http.clone());
        let token = sidecar.shutdown.clone();
        servers.spawn(async move {
            axum::serve(
                listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                // The peer address feeds middleware such as ratelimit.
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("HTTP API server")
        });
    }
    if let Some(port) = opts.dapr_public_port {
        let ip = match &opts.dapr_public_listen_address {
            Some(a) => a
                .parse()
                .with_context(|| format!("invalid --dapr-public-listen-address '{a}'"))?,
            None => std::net::IpAddr::from([0, 0, 0, 0]),
        };
        let listener = bind(SocketAddr::new(ip, port), "public HTTP").await?;
        let router = api::http::public_router(sidecar.clone());
        let token = sidecar.shutdown.clone();
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("public HTTP server")
        });
    }
    let proxy = ProxyState {
        invoker: invoker.clone(),
        relay: match &mtls {
            Some(m) => GrpcRelay::with_mtls(m.clone()),
            None => GrpcRelay::default(),
        },
        api_token: sidecar.api_token.clone(),
    };
    for ip in &listen {
        let addr = SocketAddr::new(*ip, opts.dapr_grpc_port);
        let listener = bind(addr, "gRPC API").await?;
        // Dapr's services, plus proxying of any other service to `dapr-app-id`.
        let mut grpc_routes = tonic::service::Routes::new(api::grpc::service(sidecar.clone()));
        if let Ok(engine) = sidecar.workflows.get() {
            grpc_routes = grpc_routes.add_service(api::grpc::workflow::task_hub(
                engine.clone(),
                sidecar.api_token.clone(),
            ));
        }
        let router = grpc_routes
            .into_axum_router()
            .fallback_service(
                axum::routing::any(grpc_proxy::api_fallback).with_state(proxy.clone()),
            )
            .layer(observability.grpc.clone());
        spawn_h2_server(
            &mut servers,
            listener,
            router,
            sidecar.shutdown.clone(),
            "gRPC API server",
        );
    }

    // Internal gRPC server for sidecar-to-sidecar calls, then announce it.
    let (internal_ip, advertised_ip) = internal_addresses(&opts)?;
    let internal = bind(
        SocketAddr::new(internal_ip, opts.dapr_internal_grpc_port.unwrap_or(0)),
        "internal gRPC",
    )
    .await?;
    let internal_port = internal.local_addr()?.port();
    {
        let router = tonic::service::Routes::new(invoke::internal::service_with_actors(
            invoker.clone(),
            max_message,
            sidecar.actors.clone(),
        ))
        .into_axum_router()
        .fallback_service(
            axum::routing::any(grpc_proxy::internal_fallback).with_state(proxy.clone()),
        )
        .layer(observability.internal.clone());
        match &mtls {
            Some(m) => {
                let config = Arc::new(m.internal_server_config()?);
                let token = sidecar.shutdown.clone();
                servers.spawn(async move {
                    mtls::serve_mtls(internal, config, router, token)
                        .await
                        .context("internal gRPC server (mTLS)")
                });
            }
            None => spawn_h2_server(
                &mut servers,
                internal,
                router,
                sidecar.shutdown.clone(),
                "internal gRPC server",
            ),
        }
    }
    crate::actors::start_runtime(
        &opts,
        &sidecar,
        &namespace,
        format!("{advertised_ip}:{internal_port}"),
        internal_port,
    )?;
    if let (Ok(engine), Some(rt)) = (sidecar.workflows.get(), sidecar.actors.try_get()) {
        crate::workflow::attach(engine, rt, &opts.app_id, &namespace);
    }
    resolver
        .register(&Instance {
            app_id: opts.app_id.clone(),
            namespace: namespace.clone(),
            address: format!("{advertised_ip}:{internal_port}"),
        })
        .await
        .context("name resolution registration")?;

    if let Some(op) = &operator {
        op.spawn_watches(
            loader.clone(),
            invoker.clone(),
            &resources,
            configuration.as_ref(),
            sidecar.shutdown.clone(),
        );
    } else if hot_reload && !opts.resources_paths.is_empty() {
        tokio::spawn(hotreload::watch(
            hotreload::Reloader {
                paths: opts.resources_paths.clone(),
                loader: loader.clone(),
                invoker: invoker.clone(),
                app_id: opts.app_id.clone(),
                config: configuration
                    .as_ref()
                    .map(|c| c.spec.clone())
                    .unwrap_or_default(),
                http_pipeline: http_pipeline.clone(),
            },
            sidecar.shutdown.clone(),
        ));
    }

    sidecar.set_outbound_ready();
    if let Some(app) = &invoker.app {
        tokio::select! {
            _ = app.wait_for_app() => {}
            _ = sidecar.shutdown.cancelled() => {}
        }
    }
    if let Some(app) = invoker.app.clone()
        && opts.enable_app_health_check
    {
        let stop = sidecar.shutdown.clone();
        let (path, interval, timeout, threshold) = (
            opts.app_health_check_path.clone(),
            std::time::Duration::from_secs(opts.app_health_probe_interval.max(1)),
            std::time::Duration::from_millis(opts.app_health_probe_timeout.max(1)),
            opts.app_health_threshold,
        );
        tokio::spawn(async move {
            app.probe_health(path, interval, timeout, threshold, stop)
                .await
        });
    }
    // Deliveries start once the app listens (and only while it is healthy),
    // before readiness: an event published once daprd reports ready is
    // not missed by a subscription still starting.
    if let Some(app) = &invoker.app {
        tokio::select! {
            _ = subscriptions.start(&sidecar.registry, app, &opts.app_id, declarative_subscriptions) => {}
            _ = sidecar.shutdown.cancelled() => {}
        }
    }
    if let (Some(op), Some(app)) = (&operator, &invoker.app) {
        op.spawn_subscription_watch(
            kubernetes::SubscriptionTarget {
                manager: subscriptions.clone(),
                registry: sidecar.registry.clone(),
                app: app.clone(),
                app_id: opts.app_id.clone(),
                grace: opts.graceful_shutdown(),
            },
            &resources,
            configuration.as_ref(),
            sidecar.shutdown.clone(),
        );
    }
    if let Some(app) = &invoker.app {
        tokio::select! {
            _ = input_bindings.start(&sidecar.registry, app) => {}
            _ = sidecar.shutdown.cancelled() => {}
        }
    }
    sidecar.set_ready();
    tracing::info!(
        app_id = %opts.app_id,
        http_port = opts.dapr_http_port,
        grpc_port = opts.dapr_grpc_port,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dapr initialized. Status: Running"
    );

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("received shutdown signal"),
        _ = sidecar.shutdown.cancelled() => {}
        Some(res) = servers.join_next() => {
            // A server also ends when shutdown was requested; only an
            // unrequested stop is an error.
            if !sidecar.shutdown.is_cancelled() {
                sidecar.shutdown.cancel();
                res.context("server task")??;
                bail!("a server stopped unexpectedly");
            }
        }
    }
    sidecar.shutdown.cancel();
    subscriptions.stop_all(opts.graceful_shutdown()).await;
    input_bindings.stop_all(opts.graceful_shutdown()).await;
    if let Err(e) = resolver.unregister().await {
        tracing::warn!("name resolution: {e}");
    }
    let grace = opts.graceful_shutdown();
    tracing::info!("draining in-flight requests (up to {grace:?})");
    let drained = tokio::time::timeout(grace, async {
        while let Some(res) = servers.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!("{e:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("graceful shutdown timed out; closing remaining connections");
    }
    tracing::info!("daprd stopped");
    Ok(())
}

/// The name resolver selected by the Configuration (`nameResolution`). Without
/// one, a SQLite registry shared by every sidecar of this user
/// (`<data-dir>/nameresolution.db`): works on one machine with no multicast.
fn name_resolver(
    opts: &Options,
    config: Option<&Configuration>,
) -> anyhow::Result<Arc<dyn NameResolver>> {
    let spec = config.and_then(|c| c.spec.name_resolution.as_ref());
    let component = spec.map(|s| s.component.as_str()).unwrap_or("");
    let mut md = ComponentMetadata::new("nameresolution", &opts.app_id);
    if let Some(serde_json::Value::Object(cfg)) = spec.map(|s| &s.configuration) {
        for (k, v) in cfg {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            md.insert(k, v);
        }
    }
    // Kubernetes mode defaults to Kubernetes DNS, as in Dapr.
    let component = match (component, opts.mode) {
        ("", Mode::Kubernetes) => "kubernetes",
        (c, _) => c,
    };
    match component {
        "" | "sqlite" => {
            if md.get("connectionString").is_none() {
                let dir = opts.data_dir();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
                md.insert(
                    "connectionString",
                    dir.join("nameresolution.db").to_string_lossy(),
                );
            }
            Ok(Arc::new(
                SqliteResolver::open(&md).context("nameresolution.sqlite")?,
            ))
        }
        "mdns" => Ok(Arc::new(
            MdnsResolver::new(&md).context("nameresolution.mdns")?,
        )),
        "kubernetes" => {
            md.namespace = std::env::var("NAMESPACE").unwrap_or_default();
            Ok(Arc::new(
                KubernetesResolver::new(&md).context("nameresolution.kubernetes")?,
            ))
        }
        other => bail!(
            "name resolution component '{other}' is not available in this build (use sqlite, mdns or kubernetes)"
        ),
    }
}

/// Where the internal gRPC server listens and the address it advertises.
fn internal_addresses(opts: &Options) -> anyhow::Result<(std::net::IpAddr, std::net::IpAddr)> {
    let host_ip = match std::env::var("DAPR_HOST_IP") {
        Ok(ip) if !ip.is_empty() => Some(
            ip.parse::<std::net::IpAddr>()
                .with_context(|| format!("invalid DAPR_HOST_IP '{ip}'"))?,
        ),
        _ => None,
    };
    let listen = match &opts.dapr_internal_grpc_listen_address {
        Some(a) => a
            .parse()
            .with_context(|| format!("invalid --dapr-internal-grpc-listen-address '{a}'"))?,
        // Only reachable from this machine unless a host IP is configured.
        None if host_ip.is_none() && opts.mode == Mode::Standalone => {
            std::net::IpAddr::from([127, 0, 0, 1])
        }
        None => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    let advertised = host_ip.unwrap_or(if listen.is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        listen
    });
    Ok((listen, advertised))
}

/// Serves a router (gRPC services included) over h2c/HTTP/1 until shutdown.
fn spawn_h2_server(
    servers: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    router: axum::Router,
    token: tokio_util::sync::CancellationToken,
    what: &'static str,
) {
    servers.spawn(async move {
        axum::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router,
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await
        .context(what)
    });
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
