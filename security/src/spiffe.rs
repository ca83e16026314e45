//! Dapr SPIFFE identities: `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.
//!
//! Character rules follow the SPIFFE ID specification: a trust domain is made
//! of lowercase letters, digits, `.`, `-` and `_`; a path segment of letters,
//! digits, `.`, `-` and `_`, and is neither empty, `.` nor `..`.

use std::{fmt, str::FromStr};

use thiserror::Error;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// Longest SPIFFE id accepted (SPIFFE spec: 2048 bytes).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain accepted (a DNS name).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest app id Sentry certifies (Dapr's limit).
pub const MAX_APP_ID_LEN: usize = 64;
/// Longest namespace accepted (a Kubernetes namespace is at most 63).
pub const MAX_NAMESPACE_LEN: usize = 253;

/// Control-plane services and the ids they request from Sentry.
pub const CONTROL_PLANE_IDS: [&str; 5] = [
    "dapr-operator",
    "dapr-placement",
    "dapr-injector",
    "dapr-sentry",
    "dapr-scheduler",
];

/// App id Sentry itself uses.
pub const SENTRY_APP_ID: &str = "dapr-sentry";

/// Whether `id` is one of the control-plane service ids.
pub fn is_control_plane_id(id: &str) -> bool {
    CONTROL_PLANE_IDS.contains(&id)
}

/// Why a SPIFFE id, trust domain, namespace or app id was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error("SPIFFE id must start with spiffe://")]
    Scheme,
    #[error("SPIFFE id is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("trust domain contains a character other than a-z, 0-9, '.', '-', '_'")]
    TrustDomainChars,
    #[error("SPIFFE id path must be /ns/<namespace>/<app-id>")]
    Path,
    #[error("{what} is empty")]
    EmptySegment { what: &'static str },
    #[error("{what} must not be '.' or '..'")]
    DotSegment { what: &'static str },
    #[error("{what} contains a character other than letters, digits, '.', '-', '_'")]
    SegmentChars { what: &'static str },
    #[error("{what} is longer than {max} bytes")]
    SegmentTooLong { what: &'static str, max: usize },
    #[error("app id must not contain dots")]
    AppIdDots,
    #[error("certificate could not be parsed")]
    CertificateParse,
    #[error("certificate has no URI subject alternative name")]
    NoUriSan,
    #[error("certificate has more than one URI subject alternative name")]
    MultipleUriSans,
}

/// A Dapr SPIFFE identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    app_id: String,
}

impl SpiffeId {
    /// Builds an id, validating each part against the SPIFFE character rules.
    /// (App-id rules specific to requests, such as "no dots", are checked by
    /// [`validate_requested_app_id`].)
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            app_id: app_id.into(),
        };
        validate_trust_domain(&id.trust_domain)?;
        validate_segment(&id.namespace, "namespace", MAX_NAMESPACE_LEN)?;
        validate_segment(&id.app_id, "app id", MAX_SPIFFE_ID_LEN)?;
        if id.to_string().len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(id)
    }

    /// Parses `spiffe://<td>/ns/<namespace>/<app-id>`. The scheme and trust
    /// domain are case-sensitive (lowercase only), as the SPIFFE spec requires.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        let mut segments = path.split('/');
        // The path starts with '/', so the first piece is empty.
        let (Some(""), Some("ns"), Some(ns), Some(app), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(SpiffeIdError::Path);
        };
        Self::new(td, ns, app)
    }

    /// Sentry's own identity in the control-plane trust domain and namespace.
    pub fn sentry(trust_domain: &str, namespace: &str) -> Result<Self, SpiffeIdError> {
        Self::new(trust_domain, namespace, SENTRY_APP_ID)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Reads the SPIFFE id from a DER certificate: exactly one URI SAN, which
    /// must be a Dapr SPIFFE id. Does not verify the certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, SpiffeIdError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|_| SpiffeIdError::CertificateParse)?;
        let san = cert
            .subject_alternative_name()
            .map_err(|_| SpiffeIdError::CertificateParse)?
            .ok_or(SpiffeIdError::NoUriSan)?;
        let mut uris = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        let uri = uris.next().ok_or(SpiffeIdError::NoUriSan)?;
        if uris.next().is_some() {
            return Err(SpiffeIdError::MultipleUriSans);
        }
        Self::parse(uri)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a trust domain name.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::TrustDomainChars);
    }
    Ok(())
}

fn validate_segment(seg: &str, what: &'static str, max: usize) -> Result<(), SpiffeIdError> {
    if seg.is_empty() {
        return Err(SpiffeIdError::EmptySegment { what });
    }
    if seg == "." || seg == ".." {
        return Err(SpiffeIdError::DotSegment { what });
    }
    if seg.len() > max {
        return Err(SpiffeIdError::SegmentTooLong { what, max });
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::SegmentChars { what });
    }
    Ok(())
}

/// Rules for an app id in a `SignCertificate` request: a valid SPIFFE path
/// segment, no dots (Dapr forbids them), at most 64 characters.
pub fn validate_requested_app_id(id: &str) -> Result<(), SpiffeIdError> {
    validate_segment(id, "app id", MAX_APP_ID_LEN)?;
    if id.contains('.') {
        return Err(SpiffeIdError::AppIdDots);
    }
    Ok(())
}

/// Rules for a namespace in a `SignCertificate` request.
pub fn validate_requested_namespace(ns: &str) -> Result<(), SpiffeIdError> {
    validate_segment(ns, "namespace", MAX_NAMESPACE_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = SpiffeId::parse("spiffe://public/ns/default/my-app").unwrap();
        assert_eq!(id.trust_domain(), "public");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.app_id(), "my-app");
        assert_eq!(id.to_string(), "spiffe://public/ns/default/my-app");
        assert_eq!(
            SpiffeId::new("cluster.local", "dapr-system", "dapr-sentry").unwrap(),
            SpiffeId::sentry("cluster.local", "dapr-system").unwrap()
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "http://public/ns/default/app",
            "SPIFFE://public/ns/default/app",
            "spiffe://Public/ns/default/app",
            "spiffe:///ns/default/app",
            "spiffe://public",
            "spiffe://public/",
            "spiffe://public/ns/default",
            "spiffe://public/ns/default/",
            "spiffe://public/ns//app",
            "spiffe://public/xs/default/app",
            "spiffe://public/ns/default/app/extra",
            "spiffe://public/ns/default/a%20b",
            "spiffe://public/ns/../app",
            "spiffe://public/ns/default/..",
            "spiffe://pub lic/ns/default/app",
            "spiffe://public:443/ns/default/app",
            "spiffe://user@public/ns/default/app",
            "spiffe://public/ns/default/app?x=1",
            "spiffe://public/ns/default/app#f",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("spiffe://public/ns/default/{}", "a".repeat(3000));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }

    #[test]
    fn request_rules() {
        assert!(validate_requested_app_id("my-app_1").is_ok());
        assert_eq!(
            validate_requested_app_id("my.app"),
            Err(SpiffeIdError::AppIdDots)
        );
        assert!(validate_requested_app_id(&"a".repeat(65)).is_err());
        assert!(validate_requested_app_id("").is_err());
        assert!(validate_requested_app_id("a/b").is_err());
        assert!(validate_requested_namespace("default").is_ok());
        assert!(validate_requested_namespace("").is_err());
        assert!(validate_requested_namespace("a b").is_err());
        assert!(is_control_plane_id("dapr-placement"));
        assert!(!is_control_plane_id("placement"));
    }
}
