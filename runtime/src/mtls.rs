//! Sidecar mTLS (`--enable-mtls`): the sidecar's identity from Sentry, the
//! internal gRPC port served with mutual TLS, and outbound channels that
//! accept only the expected SPIFFE id of the target sidecar.
//!
//! The caller's identity on the internal port comes from its verified client
//! certificate: every request carries it as a [`VerifiedCaller`] extension,
//! and the `dapr-caller-app-id` / `dapr-caller-namespace` headers are
//! overwritten with it so metadata cannot claim another identity.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use dapr_security::{
    SpiffeId,
    client::TokenSource,
    identity::{AnchorsSource, DEFAULT_ANCHORS_POLL, Identity, IdentityConfig},
    net,
    tls::{self, PeerAuthorizer},
};
use http::HeaderValue;
use hyper_util::{
    rt::TokioExecutor, server::graceful::GracefulShutdown, service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::{
    invoke::{CALLER_APP_ID, CALLER_NAMESPACE},
    options::{Mode, Options},
};

/// Namespace of a sidecar started without `NAMESPACE` (Dapr's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The identity of the peer sidecar, proven by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCaller(pub SpiffeId);

/// A sidecar's mTLS state.
pub struct SidecarMtls {
    identity: Identity,
    /// Trust domain of application identities (Configuration
    /// `accessControl.trustDomain`, default `public`).
    trust_domain: String,
}

impl std::fmt::Debug for SidecarMtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarMtls")
            .field("identity", &self.identity)
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

/// A namespace as it appears in SPIFFE ids: empty means `default`.
pub fn spiffe_namespace(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

impl SidecarMtls {
    /// Obtains the sidecar's certificate from Sentry (`--sentry-address`),
    /// failing after a bounded wait with the address and cause.
    pub async fn start(
        opts: &Options,
        app_id: &str,
        namespace: &str,
        trust_domain: &str,
    ) -> anyhow::Result<Arc<Self>> {
        let sentry = opts
            .sentry_address
            .as_deref()
            .filter(|a| !a.is_empty())
            .context("--enable-mtls requires --sentry-address")?;
        let env_pem = std::env::var(dapr_security::TRUST_ANCHORS_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let anchors = match (env_pem, &opts.trust_anchors_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "trust anchors cannot be given both in {} and --trust-anchors-file",
                dapr_security::TRUST_ANCHORS_ENV
            ),
            (Some(pem), None) => AnchorsSource::Pem(pem.into_bytes()),
            (None, Some(path)) => AnchorsSource::File(path.clone()),
            (None, None) => anyhow::bail!(
                "--enable-mtls requires trust anchors: set {} or --trust-anchors-file",
                dapr_security::TRUST_ANCHORS_ENV
            ),
        };
        let (token, token_validator) = TokenSource::from_dapr_env(opts.mode == Mode::Kubernetes);
        let cfg = IdentityConfig {
            sentry_address: sentry.to_owned(),
            control_plane_trust_domain: opts.control_plane_trust_domain.clone(),
            control_plane_namespace: opts.control_plane_namespace.clone(),
            app_id: app_id.to_owned(),
            namespace: spiffe_namespace(namespace).to_owned(),
            trust_domain: Some(trust_domain.to_owned()),
            anchors,
            token,
            token_validator,
            jwt_audiences: opts.sentry_request_jwt_audiences.clone(),
            sentry_wait: Duration::from_secs(opts.sentry_wait_seconds.max(1)),
            anchors_poll: DEFAULT_ANCHORS_POLL,
        };
        let identity = match Identity::obtain(cfg).await {
            Ok(i) => {
                dapr_observability::metrics::mtls_init(Ok(()));
                watch_rotations(i.svids().clone());
                i
            }
            Err(e) => {
                dapr_observability::metrics::mtls_init(Err("sentry"));
                return Err(e).context("mTLS: cannot obtain the sidecar's certificate");
            }
        };
        if let Some(id) = identity.id() {
            tracing::info!(%id, "mTLS enabled");
        }
        Ok(Arc::new(Self {
            identity,
            trust_domain: trust_domain.to_owned(),
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The SPIFFE id the sidecar of `app_id` in `namespace` must present.
    pub fn expected_id(&self, app_id: &str, namespace: &str) -> Result<SpiffeId, String> {
        SpiffeId::new(&self.trust_domain, spiffe_namespace(namespace), app_id)
            .map_err(|e| format!("no valid SPIFFE id for app {app_id}: {e}"))
    }

    /// An mTLS channel to the internal port of `app_id`'s sidecar at
    /// `address` that accepts exactly the target's SPIFFE id.
    pub fn channel_to(
        &self,
        address: &str,
        app_id: &str,
        namespace: &str,
    ) -> Result<Channel, String> {
        let expected = self.expected_id(app_id, namespace)?;
        self.identity
            .channel(address, expected)
            .map_err(|e| e.to_string())
    }

    /// Server config of the internal port: any sidecar certificate chained
    /// to the trust anchors (authorization is access control's job).
    pub fn internal_server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        Ok(self.identity.server_config(PeerAuthorizer::any())?)
    }
}

/// Counts workload certificate renewals and failed renewals
/// (`dapr_runtime_mtls_workload_cert_rotated[_fail]_total`) for as long as
/// the store lives.
fn watch_rotations(store: Arc<dapr_security::svid::SvidStore>) {
    let mut renewed = store.subscribe();
    let mut failed = store.subscribe_failures();
    // The first certificate is installed already: only changes count.
    renewed.mark_unchanged();
    failed.mark_unchanged();
    drop(store);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = renewed.changed() => {
                    if r.is_err() { return; }
                    dapr_observability::metrics::cert_rotation(Ok(()));
                }
                r = failed.changed() => {
                    if r.is_err() { return; }
                    dapr_observability::metrics::cert_rotation(Err("sentry"));
                }
            }
        }
    });
}

/// Serves `router` over mutual TLS on `listener` until `token` is
/// cancelled, then lets open connections finish.
pub async fn serve_mtls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut incoming = net::tls_incoming(listener, config, net::HANDSHAKE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            s = incoming.next() => s,
            _ = token.cancelled() => break,
        };
        let Some(stream) = stream else { break };
        let tls = match stream {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "internal mTLS connection failed");
                continue;
            }
        };
        // The handshake verified the chain and the SPIFFE id; read it once
        // per connection.
        let caller = match tls::peer_spiffe_id_from_connection(tls.get_ref().1) {
            Ok(id) => VerifiedCaller(id),
            Err(e) => {
                tracing::debug!(error = %e, "internal mTLS peer without identity");
                continue;
            }
        };
        let router = router.clone();
        let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            stamp_caller(&mut req, &caller);
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = http2.serve_connection(
            hyper_util::rt::TokioIo::new(tls),
            TowerToHyperService::new(svc),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "internal mTLS connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Attaches the verified caller and replaces any caller headers with it.
fn stamp_caller<B>(req: &mut http::Request<B>, caller: &VerifiedCaller) {
    let h = req.headers_mut();
    for (k, v) in [
        (CALLER_APP_ID, caller.0.app_id()),
        (CALLER_NAMESPACE, caller.0.namespace()),
    ] {
        match HeaderValue::from_str(v) {
            Ok(v) => {
                h.insert(k, v);
            }
            Err(_) => {
                h.remove(k);
            }
        }
    }
    req.extensions_mut().insert(caller.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_headers_are_replaced_by_the_verified_identity() {
        let mut req = http::Request::builder()
            .header(CALLER_APP_ID, "admin")
            .header(CALLER_NAMESPACE, "prod")
            .body(())
            .unwrap();
        let id = SpiffeId::new("public", "default", "checkout").unwrap();
        stamp_caller(&mut req, &VerifiedCaller(id.clone()));
        assert_eq!(req.headers()[CALLER_APP_ID], "checkout");
        assert_eq!(req.headers()[CALLER_NAMESPACE], "default");
        assert_eq!(req.headers().get_all(CALLER_APP_ID).iter().count(), 1);
        assert_eq!(
            req.extensions().get::<VerifiedCaller>(),
            Some(&VerifiedCaller(id))
        );
    }

    #[test]
    fn empty_namespace_is_default() {
        assert_eq!(spiffe_namespace(""), "default");
        assert_eq!(spiffe_namespace("prod"), "prod");
    }
}
