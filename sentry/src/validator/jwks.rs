//! The `jwks` validator: the token is a JWT signed by a key of a JSON Web
//! Key Set. `aud` must contain Sentry's SPIFFE id and `sub` must equal the
//! SPIFFE id being requested; `exp` is required (5 minutes of leeway).
//! Only asymmetric algorithms are accepted.
//!
//! The JWKS comes from a file (re-read periodically), an inline JSON
//! document, or base64 of one. HTTP(S) sources are not supported yet.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use base64::Engine as _;
use dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest;
use dapr_security::SpiffeId;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet},
};
use thiserror::Error;

use super::{Identity, ValidationError};
use crate::config::JwksOptions;

/// Clock skew tolerated on `exp`/`nbf`.
pub const LEEWAY_SECS: u64 = 300;
/// Default re-read interval of a JWKS file.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("jwks validator: option 'source' is required")]
    MissingSource,
    #[error("jwks validator: HTTP(S) sources are not supported; use a file or an inline JWKS")]
    UrlSource,
    #[error("jwks validator: reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("jwks validator: source is not a file, a JWKS document, or base64 of one")]
    Unrecognised,
    #[error("jwks validator: invalid JWKS: {0}")]
    Invalid(String),
}

/// Validates tokens against a JWKS.
pub struct JwksValidator {
    sentry_audience: String,
    keys: Arc<ArcSwap<JwkSet>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for JwksValidator {
    fn drop(&mut self) {
        if let Some(h) = self.refresher.take() {
            h.abort();
        }
    }
}

fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, JwksError> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| JwksError::Invalid(e.to_string()))?;
    if set.keys.is_empty() {
        return Err(JwksError::Invalid("no keys".into()));
    }
    Ok(set)
}

fn read_file(path: &Path) -> Result<(JwkSet, Vec<u8>), JwksError> {
    let bytes = std::fs::read(path).map_err(|source| JwksError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok((parse_jwks(&bytes)?, bytes))
}

impl JwksValidator {
    /// Builds the validator from Configuration options. A file source is
    /// re-read every `minRefreshInterval` (default 5 s); must be called
    /// inside a tokio runtime.
    pub fn from_options(opts: &JwksOptions, sentry_id: &SpiffeId) -> Result<Self, JwksError> {
        let source = opts.source.trim();
        if source.is_empty() {
            return Err(JwksError::MissingSource);
        }
        if source.starts_with("http://") || source.starts_with("https://") {
            return Err(JwksError::UrlSource);
        }
        if source.starts_with('{') {
            return Self::from_jwks_json(source.as_bytes(), sentry_id.to_string());
        }
        let path = Path::new(source);
        if path.is_file() {
            let (set, bytes) = read_file(path)?;
            let keys = Arc::new(ArcSwap::from_pointee(set));
            let interval = opts.min_refresh_interval.unwrap_or(DEFAULT_FILE_REFRESH);
            let refresher =
                spawn_refresher(path.to_owned(), bytes, Arc::downgrade(&keys), interval);
            return Ok(Self {
                sentry_audience: sentry_id.to_string(),
                keys,
                refresher: Some(refresher),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(source)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(source))
            .map_err(|_| JwksError::Unrecognised)?;
        Self::from_jwks_json(&decoded, sentry_id.to_string())
    }

    /// A validator over a fixed JWKS document.
    pub fn from_jwks_json(json: &[u8], sentry_audience: String) -> Result<Self, JwksError> {
        Ok(Self {
            sentry_audience,
            keys: Arc::new(ArcSwap::from_pointee(parse_jwks(json)?)),
            refresher: None,
        })
    }

    /// Checks the request's token. `requested_td` comes from the common checks.
    pub fn validate(
        &self,
        req: &SignCertificateRequest,
        requested_td: String,
    ) -> Result<Identity, ValidationError> {
        let unauth = |m: &str| ValidationError::Unauthenticated(m.to_owned());
        if req.token.is_empty() {
            return Err(unauth("the request does not contain a token"));
        }
        let header = jsonwebtoken::decode_header(&req.token)
            .map_err(|_| unauth("the token is not a valid JWT"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(unauth("the token uses an unsupported algorithm"));
        }
        let subject = SpiffeId::new(&requested_td, &req.namespace, &req.id)
            .map_err(|e| ValidationError::InvalidArgument(e.to_string()))?
            .to_string();

        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.sentry_audience]);
        validation.sub = Some(subject);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);

        let set = self.keys.load();
        let mut last_error = None;
        let mut tried = 0usize;
        for jwk in set.keys.iter().filter(|k| match &header.kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        }) {
            if !key_fits(jwk, header.alg) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            tried += 1;
            match jsonwebtoken::decode::<serde_json::Value>(&req.token, &key, &validation) {
                Ok(_) => {
                    return Ok(Identity {
                        trust_domain: requested_td,
                    });
                }
                Err(e) => last_error = Some(e.into_kind()),
            }
        }
        if tried == 0 {
            return Err(unauth("no key of the JWKS can verify the token"));
        }
        Err(match last_error {
            Some(ErrorKind::InvalidAudience) => ValidationError::PermissionDenied(
                "token audience does not include Sentry's SPIFFE id".into(),
            ),
            Some(ErrorKind::InvalidSubject) => ValidationError::PermissionDenied(
                "token subject does not match the requested identity".into(),
            ),
            Some(ErrorKind::ExpiredSignature) => unauth("the token has expired"),
            Some(ErrorKind::ImmatureSignature) => unauth("the token is not valid yet"),
            Some(ErrorKind::MissingRequiredClaim(c)) => {
                ValidationError::Unauthenticated(format!("the token lacks the '{c}' claim"))
            }
            Some(ErrorKind::InvalidSignature) => unauth("the token signature is invalid"),
            _ => unauth("token validation failed"),
        })
    }
}

/// Whether `jwk` can verify a token signed with `alg`.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(ka) = jwk.common.key_algorithm {
        match Algorithm::from_str(&ka.to_string()) {
            Ok(a) if a == alg => {}
            _ => return false,
        }
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => matches!(
            (&p.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::OctetKeyPair(p) => {
            p.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        // Symmetric and unknown keys are never used.
        _ => false,
    }
}

fn spawn_refresher(
    path: PathBuf,
    loaded: Vec<u8>,
    keys: std::sync::Weak<ArcSwap<JwkSet>>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Compare with what was parsed at start, not what is on disk when
        // this task first runs (the file may have changed in between).
        let mut last = Some(loaded);
        loop {
            tokio::time::sleep(interval).await;
            let Some(keys) = keys.upgrade() else {
                return;
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "JWKS file unreadable; keeping the current keys");
                    continue;
                }
            };
            if last.as_deref() == Some(&bytes[..]) {
                continue;
            }
            match parse_jwks(&bytes) {
                Ok(set) => {
                    tracing::info!(path = %path.display(), keys = set.keys.len(), "JWKS reloaded");
                    keys.store(Arc::new(set));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "JWKS file invalid; keeping the current keys");
                }
            }
            last = Some(bytes);
        }
    })
}
