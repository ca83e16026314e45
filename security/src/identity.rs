//! A process's own mTLS identity, end to end: trust anchors (hot reloaded
//! from a file when they come from one), an SVID from Sentry obtained within
//! a bounded wait and renewed at half its lifetime, and the rustls configs
//! and gRPC channels built on them.
//!
//! daprd and every control-plane service use [`Identity::obtain`]; see
//! [`crate::controlplane`] for the control-plane presets.

use std::{
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::sign_certificate_request::TokenValidator;
use rustls::{ClientConfig, ServerConfig};
use thiserror::Error;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::{
    SpiffeId, SvidStore, TrustAnchors,
    anchors::AnchorsError,
    client::{ClientError, SentryClient, SentryClientConfig, TokenSource},
    net,
    tls::{self, PeerAuthorizer, TlsConfigError},
};

/// Default bound on waiting for Sentry at start.
pub const DEFAULT_SENTRY_WAIT: Duration = Duration::from_secs(30);
/// How often a trust-anchor file is checked for changes.
pub const DEFAULT_ANCHORS_POLL: Duration = Duration::from_secs(5);
/// Connect limit of channels built by [`Identity::channel`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the trust anchors come from.
#[derive(Debug, Clone)]
pub enum AnchorsSource {
    /// PEM given directly (e.g. `DAPR_TRUST_ANCHORS`); fixed for the process.
    Pem(Vec<u8>),
    /// A PEM file, reloaded when its content changes.
    File(PathBuf),
}

/// What [`Identity::obtain`] needs.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `host:port` of Sentry.
    pub sentry_address: String,
    /// Control-plane trust domain and namespace: Sentry's own id is
    /// `spiffe://<td>/ns/<ns>/dapr-sentry`.
    pub control_plane_trust_domain: String,
    pub control_plane_namespace: String,
    /// The identity to obtain.
    pub app_id: String,
    pub namespace: String,
    /// Trust domain requested from Sentry (`None`: Sentry decides, `public`
    /// for the insecure validator).
    pub trust_domain: Option<String>,
    pub anchors: AnchorsSource,
    pub token: TokenSource,
    pub token_validator: TokenValidator,
    /// `jwt_audiences` of the SignCertificate request.
    pub jwt_audiences: Vec<String>,
    /// How long to keep retrying Sentry at start before giving up.
    pub sentry_wait: Duration,
    pub anchors_poll: Duration,
}

/// Why an identity could not be set up.
#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("trust anchors: {0}")]
    Anchors(#[from] AnchorsError),
    #[error("invalid identity configuration: {0}")]
    Config(String),
    #[error("no certificate from Sentry at {address} after {waited:?}: {cause}")]
    SentryUnavailable {
        address: String,
        waited: Duration,
        cause: ClientError,
    },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// The process's identity: current SVID, trust anchors and the background
/// tasks keeping both fresh (stopped when the identity is dropped).
pub struct Identity {
    svids: Arc<SvidStore>,
    anchors: Arc<TrustAnchors>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("svids", &self.svids)
            .finish_non_exhaustive()
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Identity {
    /// Loads the anchors, obtains the first SVID from Sentry (retrying for
    /// at most `cfg.sentry_wait`), and starts renewal at half-life and, for
    /// file anchors, the anchor reload.
    pub async fn obtain(cfg: IdentityConfig) -> Result<Self, IdentityError> {
        crate::ensure_crypto_provider();
        let anchors = match &cfg.anchors {
            AnchorsSource::Pem(pem) => TrustAnchors::from_pem(pem)?,
            AnchorsSource::File(path) => TrustAnchors::from_file(path)?,
        };
        let sentry_id = SpiffeId::sentry(
            &cfg.control_plane_trust_domain,
            &cfg.control_plane_namespace,
        )
        .map_err(|e| IdentityError::Config(format!("Sentry identity: {e}")))?;
        let mut client_cfg = SentryClientConfig::new(
            cfg.sentry_address.clone(),
            sentry_id,
            cfg.app_id.clone(),
            cfg.namespace.clone(),
        );
        client_cfg.trust_domain = cfg.trust_domain.clone();
        client_cfg.token = cfg.token.clone();
        client_cfg.token_validator = cfg.token_validator;
        client_cfg.jwt_audiences = cfg.jwt_audiences.clone();
        let client = Arc::new(
            SentryClient::new(client_cfg, anchors.clone())
                .map_err(|e| IdentityError::Config(e.to_string()))?,
        );
        let svids = SvidStore::new();
        first_svid(&client, &svids, cfg.sentry_wait).await?;
        let mut tasks = vec![tokio::spawn(client.rotate(svids.clone()))];
        if let AnchorsSource::File(path) = &cfg.anchors {
            tasks.push(anchors.watch_file(path.clone(), cfg.anchors_poll));
        }
        Ok(Self {
            svids,
            anchors,
            tasks,
        })
    }

    /// An identity from an existing SVID store and anchors (tests, or a
    /// process that manages its certificate itself).
    pub fn from_parts(svids: Arc<SvidStore>, anchors: Arc<TrustAnchors>) -> Self {
        Self {
            svids,
            anchors,
            tasks: Vec::new(),
        }
    }

    /// The SPIFFE id currently certified.
    pub fn id(&self) -> Option<SpiffeId> {
        self.svids.current().map(|s| s.id().clone())
    }

    pub fn svids(&self) -> &Arc<SvidStore> {
        &self.svids
    }

    pub fn anchors(&self) -> &Arc<TrustAnchors> {
        &self.anchors
    }

    /// mTLS server config: client certificates are required, must chain to
    /// the anchors and pass `authorizer`.
    pub fn server_config(&self, authorizer: PeerAuthorizer) -> Result<ServerConfig, IdentityError> {
        Ok(tls::server_config(
            &self.svids,
            self.anchors.clone(),
            authorizer,
        )?)
    }

    /// mTLS client config presenting this identity and accepting a server
    /// that chains to the anchors and passes `authorizer`.
    pub fn client_config(&self, authorizer: PeerAuthorizer) -> Result<ClientConfig, IdentityError> {
        Ok(tls::client_config(
            Some(&self.svids),
            self.anchors.clone(),
            authorizer,
        )?)
    }

    /// A lazily connecting mTLS gRPC channel to `address` whose server must
    /// be exactly `expected`.
    pub fn channel(&self, address: &str, expected: SpiffeId) -> Result<Channel, IdentityError> {
        let cfg = self.client_config(PeerAuthorizer::exact(expected))?;
        net::tls_channel(address, Arc::new(cfg), CONNECT_TIMEOUT)
            .map_err(|e| IdentityError::Config(format!("address {address}: {e}")))
    }
}

/// Retries the first SignCertificate until `wait` has passed.
async fn first_svid(
    client: &Arc<SentryClient>,
    svids: &Arc<SvidStore>,
    wait: Duration,
) -> Result<(), IdentityError> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let result =
            match tokio::time::timeout(left.max(Duration::from_millis(1)), client.fetch_svid())
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ClientError::Rpc(tonic::Status::deadline_exceeded(
                    "SignCertificate did not answer in time",
                ))),
            };
        match result {
            Ok(svid) => {
                tracing::info!(id = %svid.id(), not_after = ?svid.not_after(), "workload certificate obtained from Sentry");
                svids.set(svid);
                return Ok(());
            }
            Err(cause) => {
                // An answer Sentry gave (refusal, wrong identity) will not
                // change by waiting; only transport failures are retried.
                let retry = matches!(&cause, ClientError::Rpc(s)
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown));
                if !retry || Instant::now() + Duration::from_millis(500) >= deadline {
                    return Err(IdentityError::SentryUnavailable {
                        address: client.config().sentry_address.clone(),
                        waited: started.elapsed(),
                        cause,
                    });
                }
                tracing::debug!(error = %cause, attempt, "Sentry not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
