//! The webhook's serving certificate: from PEM files (reloaded when they
//! change) or from Sentry (renewed at half its lifetime by
//! `dapr_security::client::SentryClient`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwapOption;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCert(PathBuf),
    #[error("{path} holds no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads a certificate chain and its key from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCert(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| CertError::Key {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| CertError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(ck)
}

/// A certificate swapped in place when its files change.
#[derive(Debug, Default)]
pub struct ReloadingCert {
    current: ArcSwapOption<CertifiedKey>,
}

impl ReloadingCert {
    /// Loads the pair now (failing if it cannot) and polls the files every
    /// `interval`; a changed pair that does not load is logged and the
    /// previous certificate stays in use.
    pub fn from_files(
        cert: PathBuf,
        key: PathBuf,
        interval: Duration,
    ) -> Result<Arc<Self>, CertError> {
        let first = load_pair(&cert, &key)?;
        let this = Arc::new(Self {
            current: ArcSwapOption::from_pointee(first),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut last = (read(&cert).ok(), read(&key).ok());
            loop {
                tokio::time::sleep(interval).await;
                let Some(this) = weak.upgrade() else { return };
                let now = (read(&cert).ok(), read(&key).ok());
                if now == last {
                    continue;
                }
                match load_pair(&cert, &key) {
                    Ok(ck) => {
                        this.current.store(Some(Arc::new(ck)));
                        tracing::info!(cert = %cert.display(), "webhook serving certificate reloaded");
                        last = now;
                    }
                    // Often the cert is written before its key: retry next tick.
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook certificate files changed but do not load; keeping the current certificate");
                    }
                }
            }
        });
        Ok(this)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// TLS for the webhook: no client certificates (the apiserver authenticates
/// us, not the other way round), HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, CertError> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
