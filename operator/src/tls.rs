//! The operator's serving identity: a certificate from Sentry (renewed at
//! half-life), or certificate files given on the command line.

use std::{path::PathBuf, sync::Arc, time::Duration};

use dapr_security::{
    Svid, SvidStore, TrustAnchors,
    client::{SentryClient, SentryClientConfig, TokenSource},
    spiffe::SpiffeId,
};

use crate::cli::Args;

/// Control-plane id of the operator.
pub const OPERATOR_ID: &str = "dapr-operator";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust anchors {path}: {reason}")]
    Anchors { path: String, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate files: {0}")]
    Files(String),
    #[error("Sentry: {0}")]
    Sentry(String),
}

/// Trust anchors from `--trust-anchors-file`, re-read when the file changes.
pub fn anchors(args: &Args) -> Result<Arc<TrustAnchors>, TlsError> {
    let path = PathBuf::from(&args.trust_anchors_file);
    let anchors = TrustAnchors::from_file(&path).map_err(|e| TlsError::Anchors {
        path: args.trust_anchors_file.clone(),
        reason: e.to_string(),
    })?;
    anchors.watch_file(path, Duration::from_secs(5));
    Ok(anchors)
}

/// An SVID store holding the operator's certificate.
pub async fn svids(args: &Args, anchors: Arc<TrustAnchors>) -> Result<Arc<SvidStore>, TlsError> {
    let store = SvidStore::new();
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        let read = |p: &String| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.clone(),
                source,
            })
        };
        let chain = dapr_security::pem::parse_certs(&read(cert)?)
            .map_err(|e| TlsError::Files(e.to_string()))?;
        let key = dapr_security::pem::parse_private_key(&read(key)?)
            .map_err(|e| TlsError::Files(e.to_string()))?;
        store.set(Svid::new(chain, key).map_err(|e| TlsError::Files(e.to_string()))?);
        return Ok(store);
    }
    let sentry_id = SpiffeId::sentry(&args.trust_domain, &args.namespace)
        .map_err(|e| TlsError::Sentry(e.to_string()))?;
    let mut cfg = SentryClientConfig::new(
        args.sentry_address.clone(),
        sentry_id,
        OPERATOR_ID,
        args.namespace.clone(),
    );
    let (token, validator) = TokenSource::from_dapr_env(true);
    cfg.token = token;
    cfg.token_validator = validator;
    cfg.trust_domain = Some(args.trust_domain.clone());
    let client =
        Arc::new(SentryClient::new(cfg, anchors).map_err(|e| TlsError::Sentry(e.to_string()))?);
    client
        .start(store.clone(), 30)
        .await
        .map_err(|e| TlsError::Sentry(e.to_string()))?;
    Ok(store)
}
