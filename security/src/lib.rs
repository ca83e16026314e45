//! Security primitives shared by dapr-rs binaries.
//!
//! * [`spiffe`]: Dapr's SPIFFE identities, `spiffe://<td>/ns/<namespace>/<app-id>`.
//! * [`ca`]: the certificate authority core used by `dapr-sentry`: root and
//!   issuer generation or loading, and signing of workload certificates.
//! * [`csr`]: validation of certificate signing requests received by Sentry.
//! * [`svid`] and [`client`]: the workload side: an in-memory P-256 key,
//!   a CSR sent to Sentry's `SignCertificate`, and a hot-swappable certificate
//!   renewed at half its lifetime.
//! * [`anchors`] and [`tls`]: hot-reloadable trust anchors and rustls server
//!   and client configurations for SPIFFE-authenticated mTLS.
//! * [`identity`] and [`controlplane`]: a process's own identity end to end
//!   (anchors, first SVID within a bounded wait, renewal, configs); the
//!   presets control-plane services use.
//!
//! Cryptography is ring (through rustls and rcgen); certificates are built by
//! rcgen and parsed by x509-parser and webpki.

pub mod anchors;
pub mod ca;
pub mod client;
pub mod controlplane;
pub mod csr;
pub mod identity;
pub mod net;
pub mod pem;
pub mod spiffe;
pub mod svid;
pub mod tls;

use std::time::Duration;

pub use anchors::TrustAnchors;
pub use ca::{Ca, CaCredentials, CaError, SignPolicy};
pub use spiffe::SpiffeId;
pub use svid::{Svid, SvidStore};

/// Default lifetime of a workload certificate (Dapr `workloadCertTTL`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default backdating of NotBefore (Dapr `allowedClockSkew`).
pub const DEFAULT_ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a self-generated root or issuer certificate.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Largest CSR (PEM bytes) Sentry accepts.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Delay before retrying a failed certificate renewal.
pub const RENEWAL_RETRY: Duration = Duration::from_secs(10);

/// Environment variable holding the PEM trust anchors of a sidecar.
pub const TRUST_ANCHORS_ENV: &str = "DAPR_TRUST_ANCHORS";
/// Environment variable naming a file with a token for the JWKS validator.
pub const SENTRY_TOKEN_FILE_ENV: &str = "DAPR_SENTRY_TOKEN_FILE";
/// Projected service-account token mounted into Dapr pods for Sentry.
pub const KUBE_SENTRY_TOKEN_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken/token";
/// Default trust-anchor file of control-plane services.
pub const CONTROL_PLANE_TRUST_ANCHORS_PATH: &str = "/var/run/secrets/dapr.io/tls/ca.crt";
/// Audience Sentry accepted before it used its own SPIFFE id as audience.
pub const LEGACY_SENTRY_AUDIENCE: &str = "dapr.io/sentry";
/// Name of the Secret and ConfigMap holding the trust bundle on Kubernetes.
pub const TRUST_BUNDLE_NAME: &str = "dapr-trust-bundle";
/// Trust domain of application identities when none is configured.
pub const DEFAULT_APP_TRUST_DOMAIN: &str = "public";

/// Installs ring as rustls' process-wide crypto provider if none is set yet.
/// Binaries should call `rustls::crypto::ring::default_provider().install_default()`
/// themselves at start; this helper makes library entry points and tests safe.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: some provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The ring provider, used explicitly so verification never depends on
/// what else a process installed.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
