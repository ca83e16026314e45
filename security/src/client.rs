//! The workload side of Sentry: obtain and renew an X.509 SVID.
//!
//! A [`SentryClient`] generates a fresh ECDSA P-256 key in memory for every
//! request, sends a CSR with a token to `dapr.proto.sentry.v1.CA/SignCertificate`
//! over TLS (Sentry's certificate must carry Sentry's SPIFFE id and chain to
//! the trust anchors), checks the answer (key, identity, chain) and installs
//! it in an [`SvidStore`]. [`SentryClient::start`] then renews at half of the
//! certificate's lifetime, retrying every 10 seconds on failure.

use std::{
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_client::CaClient,
    sign_certificate_request::TokenValidator,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::{client::verify_server_cert_signed_by_trust_anchor, server::ParsedCertificate};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use thiserror::Error;
use tonic::transport::Channel;

use crate::{
    RENEWAL_RETRY,
    anchors::TrustAnchors,
    net,
    pem::{self, PemError},
    spiffe::SpiffeId,
    svid::{Svid, SvidError, SvidStore},
    tls::{self, PeerAuthorizer},
};

/// Failure to obtain an SVID.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("reading the Sentry token from {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Sentry token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("generating the key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("SignCertificate failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("Sentry returned an unusable certificate chain: {0}")]
    Chain(#[from] PemError),
    #[error("Sentry returned an unusable certificate: {0}")]
    Svid(#[from] SvidError),
    #[error("Sentry certified {got}, expected {expected}")]
    WrongIdentity { got: String, expected: String },
    #[error("the issued certificate does not verify against the trust anchors: {0}")]
    Untrusted(String),
}

/// Where the token sent to Sentry comes from.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No token (the insecure validator).
    #[default]
    None,
    /// A fixed token.
    Static(String),
    /// A file read before every request (projected tokens are rotated).
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Static(_) => f.write_str("Static(<redacted>)"),
            Self::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl TokenSource {
    /// The token Dapr's sidecar would send, and the validator it asks for:
    /// `DAPR_SENTRY_TOKEN_FILE` (JWKS, or Kubernetes in Kubernetes mode), else
    /// on Kubernetes the projected token for Sentry, else nothing.
    pub fn from_dapr_env(kubernetes: bool) -> (Self, TokenValidator) {
        if let Some(path) = std::env::var_os(crate::SENTRY_TOKEN_FILE_ENV)
            && !path.is_empty()
        {
            let v = if kubernetes {
                TokenValidator::Kubernetes
            } else {
                TokenValidator::Jwks
            };
            return (Self::File(path.into()), v);
        }
        if kubernetes {
            return (
                Self::File(crate::KUBE_SENTRY_TOKEN_PATH.into()),
                TokenValidator::Kubernetes,
            );
        }
        (Self::None, TokenValidator::Unknown)
    }

    async fn read(&self) -> Result<String, ClientError> {
        match self {
            Self::None => Ok(String::new()),
            Self::Static(t) => Ok(t.clone()),
            Self::File(path) => {
                let t =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| ClientError::Token {
                            path: path.clone(),
                            source,
                        })?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(ClientError::EmptyToken(path.clone()));
                }
                Ok(t)
            }
        }
    }
}

/// What to ask Sentry for.
#[derive(Debug, Clone)]
pub struct SentryClientConfig {
    /// `host:port` of Sentry (default port 50001), or a `https://` URI.
    pub sentry_address: String,
    /// Identity Sentry's serving certificate must have,
    /// `spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry`.
    pub sentry_id: SpiffeId,
    /// App id (or control-plane service id) to certify.
    pub app_id: String,
    pub namespace: String,
    /// Trust domain to request. `None` sends an empty string, which Sentry
    /// maps to `public` (or, with the Kubernetes validator, decides itself).
    pub trust_domain: Option<String>,
    pub token: TokenSource,
    pub token_validator: TokenValidator,
    pub jwt_audiences: Vec<String>,
    /// Limit for one SignCertificate call (connect + RPC).
    pub request_timeout: Duration,
}

impl SentryClientConfig {
    /// Defaults for a self-hosted sidecar (insecure validator).
    pub fn new(
        sentry_address: impl Into<String>,
        sentry_id: SpiffeId,
        app_id: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            sentry_address: sentry_address.into(),
            sentry_id,
            app_id: app_id.into(),
            namespace: namespace.into(),
            trust_domain: None,
            token: TokenSource::None,
            token_validator: TokenValidator::Unknown,
            jwt_audiences: Vec::new(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Talks to Sentry. Cheap to share (`Arc`); the gRPC channel is reused and
/// reconnects by itself.
pub struct SentryClient {
    cfg: SentryClientConfig,
    anchors: Arc<TrustAnchors>,
    channel: Channel,
}

impl fmt::Debug for SentryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryClient")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl SentryClient {
    /// Builds a client; no connection is made until the first request.
    pub fn new(cfg: SentryClientConfig, anchors: Arc<TrustAnchors>) -> Result<Self, ClientError> {
        crate::ensure_crypto_provider();
        crate::spiffe::validate_requested_app_id(&cfg.app_id)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        crate::spiffe::validate_requested_namespace(&cfg.namespace)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let tls = tls::client_config(
            None,
            anchors.clone(),
            PeerAuthorizer::exact(cfg.sentry_id.clone()),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        let channel = net::tls_channel(&cfg.sentry_address, Arc::new(tls), cfg.request_timeout)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self {
            cfg,
            anchors,
            channel,
        })
    }

    pub fn config(&self) -> &SentryClientConfig {
        &self.cfg
    }

    /// The gRPC channel to Sentry (for callers that send their own requests).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Sends one SignCertificate with the given CSR PEM and this client's
    /// identity and token; returns Sentry's raw answer.
    pub async fn sign_csr(&self, csr_pem: Vec<u8>) -> Result<SignCertificateResponse, ClientError> {
        let token = self.cfg.token.read().await?;
        let req = SignCertificateRequest {
            id: self.cfg.app_id.clone(),
            token,
            trust_domain: self.cfg.trust_domain.clone().unwrap_or_default(),
            namespace: self.cfg.namespace.clone(),
            certificate_signing_request: csr_pem,
            token_validator: self.cfg.token_validator as i32,
            jwt_audiences: self.cfg.jwt_audiences.clone(),
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.cfg.request_timeout);
        let mut client = CaClient::new(self.channel.clone());
        let resp = tokio::time::timeout(self.cfg.request_timeout, client.sign_certificate(req))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("SignCertificate timed out"))??;
        Ok(resp.into_inner())
    }

    /// Generates a key, has Sentry certify it and checks the result: the
    /// certificate is for our key, carries the requested identity and chains
    /// to the trust anchors.
    pub async fn fetch_svid(&self) -> Result<Svid, ClientError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        let csr_pem = csr.pem()?;
        let resp = self.sign_csr(csr_pem.into_bytes()).await?;

        let chain = pem::parse_certs(&resp.workload_certificate)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let svid = Svid::new(chain, key_der)?;

        let id = svid.id();
        let td_ok = self
            .cfg
            .trust_domain
            .as_deref()
            .is_none_or(|td| td.is_empty() || td == id.trust_domain());
        if !td_ok || id.namespace() != self.cfg.namespace || id.app_id() != self.cfg.app_id {
            return Err(ClientError::WrongIdentity {
                got: id.to_string(),
                expected: format!(
                    "spiffe://{}/ns/{}/{}",
                    self.cfg.trust_domain.as_deref().unwrap_or("*"),
                    self.cfg.namespace,
                    self.cfg.app_id
                ),
            });
        }
        let leaf = ParsedCertificate::try_from(&svid.chain()[0])
            .map_err(|e| ClientError::Untrusted(e.to_string()))?;
        verify_server_cert_signed_by_trust_anchor(
            &leaf,
            self.anchors.current().roots(),
            &svid.chain()[1..],
            UnixTime::now(),
            crate::provider().signature_verification_algorithms.all,
        )
        .map_err(|e| ClientError::Untrusted(e.to_string()))?;
        Ok(svid)
    }

    /// Obtains the first SVID (retrying up to `attempts` times, 1 s apart),
    /// installs it in `store`, and spawns the renewal loop.
    pub async fn start(
        self: Arc<Self>,
        store: Arc<SvidStore>,
        attempts: u32,
    ) -> Result<tokio::task::JoinHandle<()>, ClientError> {
        let mut last = None;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self.fetch_svid().await {
                Ok(svid) => {
                    tracing::info!(id = %svid.id(), not_after = ?svid.not_after(), "workload certificate obtained from Sentry");
                    store.set(svid);
                    last = None;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "requesting a workload certificate from Sentry failed");
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        Ok(tokio::spawn(self.rotate(store)))
    }

    /// Renews the store's SVID at half its lifetime forever (until aborted);
    /// failures are retried every 10 seconds.
    pub async fn rotate(self: Arc<Self>, store: Arc<SvidStore>) {
        loop {
            let renew_at = store
                .current()
                .map(|s| s.renewal_time())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            // Sleep in bounded steps so wall-clock jumps are noticed.
            let wait = renew_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
            match self.fetch_svid().await {
                Ok(svid) => {
                    tracing::info!(id = %svid.id(), not_after = ?svid.not_after(), "workload certificate renewed");
                    store.set(svid);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the workload certificate failed; retrying in 10s");
                    store.renewal_failed();
                    tokio::time::sleep(RENEWAL_RETRY).await;
                }
            }
        }
    }
}
