//! Identity of a control-plane service (placement, operator, injector,
//! scheduler): its own SVID from Sentry for
//! `spiffe://<control-plane td>/ns/<control-plane ns>/<service>`, and a
//! server config that requires client certificates from sidecars.
//!
//! ```no_run
//! # async fn f() -> Result<(), dapr_security::identity::IdentityError> {
//! use dapr_security::controlplane::{ControlPlaneConfig, Identity};
//! let cfg = ControlPlaneConfig::new("dapr-placement", "127.0.0.1:50001");
//! let identity = Identity::obtain(cfg.into_identity_config()).await?;
//! let tls = identity.sidecar_server_config()?; // feed to net::tls_incoming
//! # Ok(()) }
//! ```

use std::{path::PathBuf, time::Duration};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::sign_certificate_request::TokenValidator;
use rustls::ServerConfig;

pub use crate::identity::{AnchorsSource, Identity, IdentityConfig, IdentityError};
use crate::{
    client::TokenSource,
    identity::{DEFAULT_ANCHORS_POLL, DEFAULT_SENTRY_WAIT},
    tls::PeerAuthorizer,
};

/// Overrides the 30 s bound on waiting for Sentry at start (seconds; dapr-rs).
pub const SENTRY_WAIT_ENV: &str = "DAPR_RS_SENTRY_WAIT_SECONDS";

/// Settings a control-plane binary takes from its flags (Dapr's names:
/// `--sentry-address`, `--trust-domain`, `--trust-anchors-file`, and the
/// `NAMESPACE` environment variable).
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// `dapr-placement`, `dapr-operator`, `dapr-injector`, `dapr-scheduler`.
    pub service: String,
    pub sentry_address: String,
    /// Control-plane trust domain (Dapr default `localhost`).
    pub trust_domain: String,
    /// Control-plane namespace (`NAMESPACE`, default `default`).
    pub namespace: String,
    /// PEM trust anchors, reloaded on change (Dapr default
    /// `/var/run/secrets/dapr.io/tls/ca.crt`).
    pub trust_anchors_file: PathBuf,
    /// `true` in Kubernetes: send the projected service-account token and ask
    /// for the Kubernetes validator.
    pub kubernetes: bool,
    pub sentry_wait: Duration,
}

impl ControlPlaneConfig {
    /// Dapr's defaults for `service`; `NAMESPACE` and
    /// `DAPR_RS_SENTRY_WAIT_SECONDS` from the environment.
    pub fn new(service: impl Into<String>, sentry_address: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            sentry_address: sentry_address.into(),
            trust_domain: "localhost".into(),
            namespace: std::env::var("NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            trust_anchors_file: crate::CONTROL_PLANE_TRUST_ANCHORS_PATH.into(),
            kubernetes: false,
            sentry_wait: std::env::var(SENTRY_WAIT_ENV)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(DEFAULT_SENTRY_WAIT),
        }
    }

    /// The general [`IdentityConfig`] for this service.
    pub fn into_identity_config(self) -> IdentityConfig {
        let (token, token_validator) = if self.kubernetes {
            TokenSource::from_dapr_env(true)
        } else {
            (TokenSource::None, TokenValidator::Unknown)
        };
        IdentityConfig {
            sentry_address: self.sentry_address,
            control_plane_trust_domain: self.trust_domain.clone(),
            control_plane_namespace: self.namespace.clone(),
            app_id: self.service,
            namespace: self.namespace,
            trust_domain: Some(self.trust_domain),
            anchors: AnchorsSource::File(self.trust_anchors_file),
            token,
            token_validator,
            jwt_audiences: Vec::new(),
            sentry_wait: self.sentry_wait,
            anchors_poll: DEFAULT_ANCHORS_POLL,
        }
    }
}

impl Identity {
    /// Server config of a control-plane service called by sidecars: a client
    /// certificate chained to the anchors is required, any Dapr SPIFFE id is
    /// accepted (as Dapr does); handlers read the caller with
    /// [`crate::tls::peer_spiffe_id_from_request`].
    pub fn sidecar_server_config(&self) -> Result<ServerConfig, IdentityError> {
        self.server_config(PeerAuthorizer::any())
    }
}
