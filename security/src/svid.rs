//! X.509 SVIDs (a SPIFFE certificate chain with its private key) and a
//! lock-free holder that TLS configs read on every handshake.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use rustls::{
    SignatureScheme,
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// An SVID could not be assembled.
#[derive(Debug, Error)]
pub enum SvidError {
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("leaf certificate could not be parsed")]
    Parse,
    #[error("leaf certificate identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("private key is not usable: {0}")]
    Key(String),
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
}

/// A workload identity: certificate chain (leaf first) and private key.
pub struct Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Svid {
    /// Builds an SVID, reading the SPIFFE id and validity from the leaf and
    /// checking that `key` matches it.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::EmptyChain)?;
        let id = SpiffeId::from_cert_der(leaf.as_ref())?;
        let (not_before, not_after) = {
            let (_, cert) =
                X509Certificate::from_der(leaf.as_ref()).map_err(|_| SvidError::Parse)?;
            (
                to_system(cert.validity().not_before.timestamp()),
                to_system(cert.validity().not_after.timestamp()),
            )
        };
        let signing_key = crate::provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| SvidError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain.clone(), signing_key);
        certified.keys_match().map_err(|_| SvidError::KeyMismatch)?;
        Ok(Self {
            id,
            chain,
            key,
            not_before,
            not_after,
            certified: Arc::new(certified),
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Leaf first, then the issuer chain.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Half-way through the validity period, when the SVID should be renewed.
    pub fn renewal_time(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }

    /// The chain and key as a rustls certified key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        crate::pem::encode_certs(&self.chain)
    }

    /// The private key as PEM. Secret: never log it.
    pub fn private_key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        crate::pem::encode(label, self.key.secret_der())
    }
}

fn to_system(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        UNIX_EPOCH
    }
}

/// The current SVID of a process, replaced atomically on renewal.
pub struct SvidStore {
    current: ArcSwapOption<Svid>,
    version: watch::Sender<u64>,
    /// Failed renewals so far (for the sidecar's rotation metrics).
    failures: watch::Sender<u64>,
}

impl fmt::Debug for SvidStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidStore")
            .field(
                "current",
                &self.current.load().as_ref().map(|s| s.id().clone()),
            )
            .finish()
    }
}

impl Default for SvidStore {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            version: watch::channel(0).0,
            failures: watch::channel(0).0,
        }
    }
}

impl SvidStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The SVID in force, if any has been obtained.
    pub fn current(&self) -> Option<Arc<Svid>> {
        self.current.load_full()
    }

    /// Installs a new SVID; the next handshake uses it.
    pub fn set(&self, svid: Svid) {
        self.current.store(Some(Arc::new(svid)));
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes whenever a new SVID is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Notes a failed renewal (the old SVID stays in force).
    pub fn renewal_failed(&self) {
        self.failures.send_modify(|v| *v += 1);
    }

    /// A receiver that changes whenever a renewal fails.
    pub fn subscribe_failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// Waits until an SVID is present.
    pub async fn ready(&self) -> Arc<Svid> {
        let mut rx = self.subscribe();
        loop {
            if let Some(s) = self.current() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while
                // `self` is borrowed; loop defensively anyway.
                tokio::task::yield_now().await;
            }
        }
    }

    /// A rustls certificate resolver backed by this store (server and client).
    pub fn resolver(self: &Arc<Self>) -> Arc<SvidResolver> {
        Arc::new(SvidResolver(self.clone()))
    }
}

/// Serves the store's current SVID in TLS handshakes.
#[derive(Debug)]
pub struct SvidResolver(Arc<SvidStore>);

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|s| s.certified_key())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|s| s.certified_key())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}
