//! daprd in Kubernetes mode (`--mode kubernetes`): the Configuration,
//! Components, Resiliency, Subscriptions and HTTPEndpoints come from
//! `dapr-operator` (`--control-plane-address`) instead of files, and the
//! operator's update streams are applied live.
//!
//! * [`client`]: the Operator API client (mTLS with the operator's SPIFFE
//!   id, bounded retries, typed payloads).
//! * [`watch`]: the update streams, with reconnection and re-listing.

pub mod client;
pub mod watch;

use std::{path::PathBuf, sync::Arc, time::Duration};

use dapr_crds::{Component, ComponentSpec, Configuration, ObjectMeta};
use tokio_util::sync::CancellationToken;

pub use client::{OperatorClient, OperatorError};
pub use watch::{
    SubscriptionTarget, watch_components, watch_configuration, watch_http_endpoints,
    watch_resiliency, watch_subscriptions,
};

use crate::{
    components::ComponentLoader,
    invoke::Invoker,
    mtls::{SidecarMtls, spiffe_namespace},
    options::{Mode, Options},
    resources::{Resources, Sourced},
};

/// Name of the secret store daprd provides in Kubernetes mode (Dapr's
/// `kubernetes`), used by the secrets API and as the default
/// `auth.secretStore` (whose `secretKeyRef`s the operator resolves).
pub const BUILTIN_SECRET_STORE: &str = "kubernetes";

/// `components` plus, in Kubernetes mode without
/// `--disable-builtin-k8s-secret-store`, the built-in `kubernetes` store
/// (`secretstores.kubernetes` on the pod's service account), first so the
/// others can reference it. A Component the user named `kubernetes` wins.
pub fn with_builtin_secret_store(
    opts: &Options,
    mut components: Vec<Sourced<Component>>,
) -> Vec<Sourced<Component>> {
    if opts.mode != Mode::Kubernetes
        || opts.disable_builtin_k8s_secret_store
        || components
            .iter()
            .any(|c| c.resource.name() == BUILTIN_SECRET_STORE)
    {
        return components;
    }
    let builtin = Component {
        api_version: "dapr.io/v1alpha1".into(),
        kind: "Component".into(),
        metadata: ObjectMeta {
            name: BUILTIN_SECRET_STORE.into(),
            ..ObjectMeta::default()
        },
        spec: ComponentSpec {
            type_: "secretstores.kubernetes".into(),
            version: "v1".into(),
            // Deviation: Dapr exits when the built-in store cannot start; a
            // pod without service-account credentials in the sidecar (not
            // yet proven on the e2e cluster) keeps running without it.
            ignore_errors: true,
            init_timeout: None,
            metadata: Vec::new(),
        },
        auth: Default::default(),
        scopes: Vec::new(),
    };
    components.insert(
        0,
        Sourced {
            file: PathBuf::from("<built-in>"),
            resource: builtin,
        },
    );
    components
}

/// The Configuration feature that turns live updates on or off.
pub const HOT_RELOAD: &str = "HotReload";

/// Whether operator updates are applied live. Dapr enables `HotReload` by
/// default; a Configuration can still switch it off with `enabled: false`.
pub fn hot_reload_enabled(config: Option<&Configuration>) -> bool {
    !config.is_some_and(|c| {
        c.spec
            .features
            .iter()
            .any(|f| f.name == HOT_RELOAD && !f.enabled)
    })
}

/// Why daprd is restarting itself, once a watch asked for it.
static RESTART: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Asks for an in-place restart: daprd shuts down gracefully (in-flight
/// requests drain, subscriptions stop) and `main` then re-executes it.
pub fn request_restart(reason: String, shutdown: &CancellationToken) {
    if RESTART.set(reason.clone()).is_ok() {
        tracing::info!(%reason, "restarting daprd in place to apply the change");
    }
    shutdown.cancel();
}

/// The reason of a requested in-place restart, if any.
pub fn restart_requested() -> Option<&'static str> {
    RESTART.get().map(String::as_str)
}

/// Replaces this process with a fresh daprd: same pid, arguments and
/// environment, so the pod's container does not restart. Dapr re-runs its
/// runtime inside the process on such changes (SIGHUP); a re-exec gives the
/// same clean start with nothing left of the old instance. Returns only if
/// the exec failed.
#[cfg(unix)]
pub fn exec_self() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next();
    // /proc/self/exe stays valid even if the file was replaced on disk.
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        PathBuf::from("/proc/self/exe")
    } else {
        match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return e,
        }
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(a) = arg0 {
        cmd.arg0(a);
    }
    cmd.args(args).exec()
}

#[cfg(not(unix))]
pub fn exec_self() -> std::io::Error {
    std::io::Error::other("in-place restart needs a unix exec")
}

/// Trust domain of application identities when the Configuration does not
/// set `accessControl.trustDomain` (Dapr's default).
const DEFAULT_APP_TRUST_DOMAIN: &str = "public";

/// The operator connection of a sidecar in Kubernetes mode.
pub struct Operator {
    pub client: OperatorClient,
    /// The SVID used toward the operator and the trust domain it was issued
    /// for, reused for sidecar mTLS when the Configuration agrees.
    mtls: Option<(String, Arc<SidecarMtls>)>,
}

impl Operator {
    /// Obtains the sidecar's certificate first when `--enable-mtls` (the
    /// operator only talks mTLS then), and prepares the client. The
    /// Configuration is not known yet, so the certificate is for Dapr's
    /// default application trust domain.
    pub async fn start(opts: &Options, namespace: &str) -> anyhow::Result<Self> {
        if !opts.resources_paths.is_empty() {
            tracing::warn!(
                "--resources-path is ignored in kubernetes mode: resources come from the operator"
            );
        }
        let namespace = spiffe_namespace(namespace);
        let mtls = if opts.enable_mtls {
            let m =
                SidecarMtls::start(opts, &opts.app_id, namespace, DEFAULT_APP_TRUST_DOMAIN).await?;
            Some((DEFAULT_APP_TRUST_DOMAIN.to_owned(), m))
        } else {
            None
        };
        let client = connect(opts, namespace, mtls.as_ref().map(|(_, m)| m.as_ref()))?;
        Ok(Self { client, mtls })
    }

    /// The operator's SVID, if it was issued for `trust_domain`.
    pub fn mtls_for(&self, trust_domain: &str) -> Option<Arc<SidecarMtls>> {
        self.mtls
            .as_ref()
            .filter(|(td, _)| td == trust_domain)
            .map(|(_, m)| m.clone())
    }

    /// Lists every kind daprd reads (the Configuration aside).
    pub async fn load_resources(&self, app_id: &str) -> Result<Resources, OperatorError> {
        let resources = self.client.load_resources().await?;
        let components = resources
            .components
            .iter()
            .filter(|c| c.resource.in_scope(app_id))
            .count();
        let http_endpoints = resources
            .http_endpoints
            .iter()
            .filter(|e| e.resource.in_scope(app_id))
            .count();
        tracing::info!(
            app_id,
            components,
            http_endpoints,
            others = resources.others.len(),
            "resources loaded from the operator"
        );
        Ok(resources)
    }

    /// Starts applying the update streams, unless the Configuration turned
    /// `HotReload` off.
    pub fn spawn_watches(
        &self,
        loader: Arc<ComponentLoader>,
        invoker: Arc<Invoker>,
        resources: &Resources,
        config: Option<&Configuration>,
        shutdown: CancellationToken,
    ) {
        if !hot_reload_enabled(config) {
            tracing::info!(
                "HotReload disabled by the Configuration: operator updates apply at the next start"
            );
            return;
        }
        let app_id = loader.app_id.clone();
        tokio::spawn(watch_components(
            self.client.clone(),
            loader.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(watch_http_endpoints(
            self.client.clone(),
            loader,
            invoker,
            resources.http_endpoints.clone(),
            app_id.clone(),
            shutdown.clone(),
        ));
        // Restart-to-apply kinds, as Dapr's SIGHUP reconcilers.
        if let Some(c) = config {
            tokio::spawn(watch_configuration(
                self.client.clone(),
                c.metadata.name.clone(),
                c.spec.clone(),
                shutdown.clone(),
            ));
        }
        let client = self.client.clone();
        let initial = resources.others.clone();
        tokio::spawn(async move { watch_resiliency(client, app_id, &initial, shutdown).await });
    }

    /// Applies Subscription changes in place once the app's subscriptions
    /// have started (`initial` is what they were started from), unless the
    /// Configuration turned `HotReload` off.
    pub fn spawn_subscription_watch(
        &self,
        target: SubscriptionTarget,
        resources: &Resources,
        config: Option<&Configuration>,
        shutdown: CancellationToken,
    ) {
        if !hot_reload_enabled(config) {
            return;
        }
        let client = self.client.clone();
        let initial = resources.others.clone();
        tokio::spawn(async move { watch_subscriptions(client, target, &initial, shutdown).await });
    }
}

/// The operator client for this sidecar: mTLS with its SVID when
/// `--enable-mtls`, plaintext otherwise.
pub fn connect(
    opts: &Options,
    namespace: &str,
    mtls: Option<&SidecarMtls>,
) -> Result<OperatorClient, OperatorError> {
    let address = opts
        .control_plane_address
        .as_deref()
        .ok_or(OperatorError::NoAddress)?;
    let mtls = mtls.map(|m| {
        (
            m.identity(),
            opts.control_plane_trust_domain.as_str(),
            opts.control_plane_namespace.as_str(),
        )
    });
    let client = OperatorClient::new(
        address,
        namespace,
        mtls,
        Duration::from_secs(opts.operator_wait_seconds.max(1)),
    )?;
    tracing::info!(
        operator = %client.address(),
        namespace,
        mtls = mtls.is_some(),
        "loading resources from the operator"
    );
    Ok(client)
}

#[cfg(test)]
mod tests;
