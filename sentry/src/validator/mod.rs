//! Authentication of `SignCertificate` callers.
//!
//! * `insecure`: no token; only the shape of the request is checked.
//! * `jwks`: a JWT signed by a key of a configured JWKS, `aud` containing
//!   Sentry's SPIFFE id and `sub` equal to the requested SPIFFE id.
//! * `kubernetes`: a projected service-account token checked with a
//!   TokenReview, then the pod it was issued for must match the request.

pub mod jwks;
pub mod kubernetes;

use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, sign_certificate_request::TokenValidator,
};
use dapr_security::{
    DEFAULT_APP_TRUST_DOMAIN,
    spiffe::{validate_requested_app_id, validate_requested_namespace, validate_trust_domain},
};
use thiserror::Error;

pub use jwks::JwksValidator;
pub use kubernetes::KubernetesValidator;

/// A refused request. The message is returned to the caller and logged, so
/// it never contains the token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// The request is malformed (id, namespace, trust domain, validator).
    #[error("{0}")]
    InvalidArgument(String),
    /// No token, or a token that is not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token that does not entitle the caller to the identity asked for.
    #[error("{0}")]
    PermissionDenied(String),
    /// The validator could not decide (API server unreachable...).
    #[error("{0}")]
    Unavailable(String),
}

impl ValidationError {
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::InvalidArgument(m) => tonic::Status::invalid_argument(m.clone()),
            Self::Unauthenticated(m) => tonic::Status::unauthenticated(m.clone()),
            Self::PermissionDenied(m) => tonic::Status::permission_denied(m.clone()),
            Self::Unavailable(m) => tonic::Status::unavailable(m.clone()),
        }
    }

    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Unavailable(_) => "validator_unavailable",
        }
    }
}

/// What a validator established about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Trust domain of the certificate to issue.
    pub trust_domain: String,
}

/// Checks every validator applies: a well-formed app id and namespace, a
/// CSR present, and a valid trust domain (empty means `public`). Returns
/// the requested trust domain.
pub fn common_checks(req: &SignCertificateRequest) -> Result<String, ValidationError> {
    let bad = |m: String| ValidationError::InvalidArgument(format!("invalid request: {m}"));
    validate_requested_app_id(&req.id).map_err(|e| bad(e.to_string()))?;
    validate_requested_namespace(&req.namespace).map_err(|e| bad(e.to_string()))?;
    if req.certificate_signing_request.is_empty() {
        return Err(bad("CSR is required".into()));
    }
    if req.trust_domain.is_empty() {
        return Ok(DEFAULT_APP_TRUST_DOMAIN.to_owned());
    }
    validate_trust_domain(&req.trust_domain).map_err(|e| bad(e.to_string()))?;
    Ok(req.trust_domain.clone())
}

/// The enabled validators.
pub struct Validators {
    pub default: TokenValidator,
    pub insecure: bool,
    pub jwks: Option<JwksValidator>,
    pub kubernetes: Option<KubernetesValidator>,
}

impl Validators {
    /// Resolves which validator a request uses.
    pub fn select(&self, requested: i32) -> Result<TokenValidator, ValidationError> {
        let requested = TokenValidator::try_from(requested)
            .map_err(|_| ValidationError::InvalidArgument("unknown token validator".into()))?;
        let v = if requested == TokenValidator::Unknown {
            self.default
        } else {
            requested
        };
        let enabled = match v {
            TokenValidator::Unknown => {
                return Err(ValidationError::InvalidArgument(
                    "a validator name must be specified in this environment".into(),
                ));
            }
            TokenValidator::Insecure => self.insecure,
            TokenValidator::Jwks => self.jwks.is_some(),
            TokenValidator::Kubernetes => self.kubernetes.is_some(),
        };
        if !enabled {
            return Err(ValidationError::InvalidArgument(
                "the requested validator is not enabled".into(),
            ));
        }
        Ok(v)
    }

    /// Authenticates `req` with validator `which` (from [`select`](Self::select)).
    pub async fn validate(
        &self,
        which: TokenValidator,
        req: &SignCertificateRequest,
    ) -> Result<Identity, ValidationError> {
        let requested_td = common_checks(req)?;
        match which {
            TokenValidator::Insecure if self.insecure => Ok(Identity {
                trust_domain: requested_td,
            }),
            TokenValidator::Jwks => match &self.jwks {
                Some(v) => v.validate(req, requested_td),
                None => Err(not_enabled()),
            },
            TokenValidator::Kubernetes => match &self.kubernetes {
                Some(v) => v.validate(req).await,
                None => Err(not_enabled()),
            },
            _ => Err(not_enabled()),
        }
    }
}

fn not_enabled() -> ValidationError {
    ValidationError::InvalidArgument("the requested validator is not enabled".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, ns: &str, td: &str) -> SignCertificateRequest {
        SignCertificateRequest {
            id: id.into(),
            namespace: ns.into(),
            trust_domain: td.into(),
            certificate_signing_request: b"x".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn common_rules() {
        assert_eq!(common_checks(&req("app", "default", "")).unwrap(), "public");
        assert_eq!(
            common_checks(&req("app", "default", "example.org")).unwrap(),
            "example.org"
        );
        for bad in [
            req("", "default", ""),
            req("a.b", "default", ""),
            req(&"a".repeat(65), "default", ""),
            req("app", "", ""),
            req("app", "de/fault", ""),
            req("app", "default", "Bad TD"),
            SignCertificateRequest {
                certificate_signing_request: vec![],
                ..req("app", "default", "")
            },
        ] {
            assert!(matches!(
                common_checks(&bad),
                Err(ValidationError::InvalidArgument(_))
            ));
        }
    }

    #[tokio::test]
    async fn selection() {
        let v = Validators {
            default: TokenValidator::Insecure,
            insecure: true,
            jwks: None,
            kubernetes: None,
        };
        assert_eq!(v.select(0).unwrap(), TokenValidator::Insecure);
        assert_eq!(v.select(1).unwrap(), TokenValidator::Insecure);
        assert!(v.select(2).is_err());
        assert!(v.select(3).is_err());
        assert!(v.select(42).is_err());
        let id = v
            .validate(TokenValidator::Insecure, &req("app", "default", ""))
            .await
            .unwrap();
        assert_eq!(id.trust_domain, "public");
        let none = Validators {
            default: TokenValidator::Unknown,
            insecure: false,
            jwks: None,
            kubernetes: None,
        };
        assert!(
            matches!(none.select(0), Err(ValidationError::InvalidArgument(m)) if m.contains("must be specified"))
        );
        assert!(
            none.validate(TokenValidator::Insecure, &req("app", "default", ""))
                .await
                .is_err()
        );
    }
}
