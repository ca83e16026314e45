//! Hot-reloadable trust anchors.
//!
//! Verifiers built by [`crate::tls`] read [`TrustAnchors::current`] on every
//! handshake, so replacing the anchors (for instance when the trust bundle
//! file changes during a root rotation) affects the next handshake without
//! rebuilding any rustls config.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{RootCertStore, server::WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::pem::{self, PemError};

/// Trust anchors could not be loaded.
#[derive(Debug, Error)]
pub enum AnchorsError {
    #[error("trust anchors: {0}")]
    Pem(#[from] PemError),
    #[error("trust anchor rejected: {0}")]
    Rejected(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(&'static str),
}

/// One immutable set of anchors with the verifier state derived from it.
pub struct AnchorSet {
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl std::fmt::Debug for AnchorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorSet")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl AnchorSet {
    fn from_pem(pem_bytes: &[u8]) -> Result<Self, AnchorsError> {
        let certs = pem::parse_certs(pem_bytes)?;
        let mut roots = RootCertStore::empty();
        for c in &certs {
            roots
                .add(c.clone())
                .map_err(|e| AnchorsError::Rejected(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::provider())
                .build()
                .map_err(|e| AnchorsError::Rejected(e.to_string()))?;
        Ok(Self {
            pem: pem_bytes.to_vec(),
            certs,
            roots,
            client_verifier,
        })
    }

    /// The PEM the set was built from.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    pub(crate) fn client_verifier(&self) -> &Arc<dyn rustls::server::danger::ClientCertVerifier> {
        &self.client_verifier
    }
}

/// The current trust anchors, swappable at run time.
#[derive(Debug)]
pub struct TrustAnchors {
    current: ArcSwap<AnchorSet>,
}

impl TrustAnchors {
    /// Anchors from PEM (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Arc<Self>, AnchorsError> {
        crate::ensure_crypto_provider();
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(AnchorSet::from_pem(pem_bytes)?),
        }))
    }

    /// Anchors from the PEM in `DAPR_TRUST_ANCHORS`.
    pub fn from_env() -> Result<Arc<Self>, AnchorsError> {
        match std::env::var(crate::TRUST_ANCHORS_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::from_pem(v.as_bytes()),
            _ => Err(AnchorsError::MissingEnv(crate::TRUST_ANCHORS_ENV)),
        }
    }

    /// Anchors from a PEM file.
    pub fn from_file(path: &Path) -> Result<Arc<Self>, AnchorsError> {
        Self::from_pem(&read(path)?)
    }

    /// The anchors in force now.
    pub fn current(&self) -> Arc<AnchorSet> {
        self.current.load_full()
    }

    /// Replaces the anchors if `pem_bytes` differs from the current PEM.
    /// Returns whether they changed; on error the current anchors stay.
    pub fn update_pem(&self, pem_bytes: &[u8]) -> Result<bool, AnchorsError> {
        if self.current.load().pem == pem_bytes {
            return Ok(false);
        }
        self.current
            .store(Arc::new(AnchorSet::from_pem(pem_bytes)?));
        Ok(true)
    }

    /// Polls `path` every `interval` and reloads the anchors when its content
    /// changes. A file that cannot be read or parsed is logged and ignored
    /// (the previous anchors stay in force). Ends when the task is aborted.
    pub fn watch_file(
        self: &Arc<Self>,
        path: PathBuf,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_error: Option<String> = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(anchors) = this.upgrade() else {
                    return;
                };
                let result = read(&path).and_then(|b| anchors.update_pem(&b));
                match result {
                    Ok(true) => {
                        last_error = None;
                        tracing::info!(path = %path.display(), count = anchors.current().certs.len(), "trust anchors reloaded");
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(path = %path.display(), error = %msg, "trust anchors not reloaded; keeping the current ones");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AnchorsError> {
    std::fs::read(path).map_err(|source| AnchorsError::Io {
        path: path.to_owned(),
        source,
    })
}
