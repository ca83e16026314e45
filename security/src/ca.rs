//! The certificate authority core of Sentry.
//!
//! A [`Ca`] holds the trust anchors (root certificates), the issuer
//! certificate chain and the issuer private key, and signs workload
//! certificates. It is immutable: rotation builds a new `Ca` and swaps it in.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::{
    RootCertStore, SignatureAlgorithm, SignatureScheme,
    client::verify_server_cert_signed_by_trust_anchor,
    server::ParsedCertificate,
    sign::{Signer, SigningKey},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{
    DEFAULT_ALLOWED_CLOCK_SKEW, DEFAULT_CA_TTL, DEFAULT_WORKLOAD_CERT_TTL,
    pem::{self, PemError},
    spiffe::SpiffeId,
};

/// Errors building or using a CA.
#[derive(Debug, Error)]
pub enum CaError {
    #[error("trust anchors: {0}")]
    TrustAnchorsPem(PemError),
    #[error("issuer certificate: {0}")]
    IssuerCertPem(PemError),
    #[error("issuer key: {0}")]
    IssuerKeyPem(PemError),
    #[error("trust anchor #{index} is not a usable root: {reason}")]
    BadTrustAnchor { index: usize, reason: String },
    #[error("issuer certificate is not usable: {0}")]
    BadIssuer(String),
    #[error("issuer key is not usable: {0}")]
    BadIssuerKey(String),
    #[error("issuer key does not match the issuer certificate")]
    KeyMismatch,
    #[error("issuer chain does not verify against the trust anchors: {0}")]
    ChainVerification(String),
    #[error("issuer certificate has expired")]
    IssuerExpired,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("random number generation failed")]
    Random,
}

/// The three PEM documents a CA is made of, as stored in the credentials
/// directory (`ca.crt`, `issuer.crt`, `issuer.key`) or the trust-bundle Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCredentials {
    /// One or more self-signed root certificates (the trust bundle).
    pub trust_anchors_pem: Vec<u8>,
    /// The issuer certificate, optionally followed by intermediates
    /// (and possibly the root, which is dropped).
    pub issuer_chain_pem: Vec<u8>,
    /// The issuer private key (PKCS#8, SEC1 or PKCS#1).
    pub issuer_key_pem: Vec<u8>,
}

impl fmt::Debug for CaCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCredentials")
            .field(
                "trust_anchors_pem",
                &format_args!("{} bytes", self.trust_anchors_pem.len()),
            )
            .field(
                "issuer_chain_pem",
                &format_args!("{} bytes", self.issuer_chain_pem.len()),
            )
            .field("issuer_key_pem", &"<redacted>")
            .finish()
    }
}

impl CaCredentials {
    /// Generates a self-signed ECDSA P-256 root (Subject `O=<trust domain>`)
    /// and an issuer signed by it (Subject `O=spiffe://<td>/ns/<namespace>/dapr-sentry`),
    /// both valid for `ttl` from now, NotBefore backdated by `clock_skew`.
    /// The root key is discarded, as Dapr does.
    pub fn generate(
        trust_domain: &str,
        control_plane_namespace: &str,
        ttl: Duration,
        clock_skew: Duration,
    ) -> Result<Self, CaError> {
        let now = now_seconds();
        let not_before = now - clock_skew;
        let not_after = now + ttl;

        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut root = CertificateParams::default();
        root.distinguished_name = DistinguishedName::new();
        root.distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        root.not_before = not_before;
        root.not_after = not_after;
        root.serial_number = Some(random_serial()?);
        let root_cert = root.self_signed(&root_key)?;

        let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let sentry_org = format!(
            "spiffe://{trust_domain}/ns/{control_plane_namespace}/{}",
            crate::spiffe::SENTRY_APP_ID
        );
        let mut issuer = CertificateParams::default();
        issuer.distinguished_name = DistinguishedName::new();
        issuer
            .distinguished_name
            .push(DnType::OrganizationName, sentry_org);
        // The issuer signs only workload certificates, never another CA.
        issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuer.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        issuer.not_before = not_before;
        issuer.not_after = not_after;
        issuer.serial_number = Some(random_serial()?);
        issuer.use_authority_key_identifier_extension = true;
        let root_issuer = Issuer::from_params(&root, &root_key);
        let issuer_cert = issuer.signed_by(&issuer_key, &root_issuer)?;

        Ok(Self {
            trust_anchors_pem: root_cert.pem().into_bytes(),
            issuer_chain_pem: issuer_cert.pem().into_bytes(),
            issuer_key_pem: issuer_key.serialize_pem().into_bytes(),
        })
    }

    /// [`generate`](Self::generate) with Dapr's defaults (1 year, 15 minutes skew).
    pub fn generate_default(
        trust_domain: &str,
        control_plane_namespace: &str,
    ) -> Result<Self, CaError> {
        Self::generate(
            trust_domain,
            control_plane_namespace,
            DEFAULT_CA_TTL,
            DEFAULT_ALLOWED_CLOCK_SKEW,
        )
    }
}

/// How workload certificates are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignPolicy {
    /// Lifetime of a workload certificate.
    pub workload_ttl: Duration,
    /// How far NotBefore is backdated.
    pub clock_skew: Duration,
}

impl Default for SignPolicy {
    fn default() -> Self {
        Self {
            workload_ttl: DEFAULT_WORKLOAD_CERT_TTL,
            clock_skew: DEFAULT_ALLOWED_CLOCK_SKEW,
        }
    }
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Leaf first, then the issuer chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The same chain as concatenated PEM blocks.
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A loaded, verified certificate authority.
pub struct Ca {
    anchors_pem: Vec<u8>,
    anchors: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    issuer_chain: Vec<CertificateDer<'static>>,
    issuer_chain_pem: String,
    issuer: Issuer<'static, IssuerKey>,
    issuer_not_after: SystemTime,
    earliest_anchor_expiry: SystemTime,
    issuer_serial: String,
    policy: SignPolicy,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("anchors", &self.anchors.len())
            .field("issuer_serial", &self.issuer_serial)
            .field("issuer_not_after", &self.issuer_not_after)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads and verifies credentials: every trust anchor is a self-signed
    /// CA; the issuer is a CA whose key matches `issuer.key`; and a
    /// certificate signed by the issuer verifies against the trust anchors
    /// now (so an expired issuer, a chain to another root, or a subject that
    /// does not re-encode identically are all refused here, not at first use).
    pub fn load(creds: &CaCredentials, policy: SignPolicy) -> Result<Self, CaError> {
        crate::ensure_crypto_provider();
        let anchors =
            pem::parse_certs(&creds.trust_anchors_pem).map_err(CaError::TrustAnchorsPem)?;
        let mut roots = RootCertStore::empty();
        let mut earliest_anchor_expiry = None::<SystemTime>;
        for (index, der) in anchors.iter().enumerate() {
            let bad = |reason: &str| CaError::BadTrustAnchor {
                index,
                reason: reason.to_owned(),
            };
            let (_, cert) =
                X509Certificate::from_der(der.as_ref()).map_err(|_| bad("unparseable"))?;
            if !cert.is_ca() {
                return Err(bad("not a CA certificate"));
            }
            cert.verify_signature(None)
                .map_err(|_| bad("not self-signed"))?;
            let exp = asn1_to_system(cert.validity().not_after.timestamp());
            earliest_anchor_expiry = Some(earliest_anchor_expiry.map_or(exp, |e| e.min(exp)));
            roots.add(der.clone()).map_err(|e| bad(&e.to_string()))?;
        }
        let earliest_anchor_expiry = earliest_anchor_expiry.unwrap_or(UNIX_EPOCH);

        let mut chain =
            pem::parse_certs(&creds.issuer_chain_pem).map_err(CaError::IssuerCertPem)?;
        // A root appended to the issuer chain is not sent to clients.
        if chain.len() > 1
            && let Some(last) = chain.last()
            && X509Certificate::from_der(last.as_ref())
                .map(|(_, c)| c.verify_signature(None).is_ok())
                .unwrap_or(false)
        {
            chain.pop();
        }
        let (issuer_not_after, issuer_serial, issuer_spki) = {
            let (_, cert) = X509Certificate::from_der(chain[0].as_ref())
                .map_err(|_| CaError::BadIssuer("unparseable".into()))?;
            if !cert.is_ca() {
                return Err(CaError::BadIssuer("not a CA certificate".into()));
            }
            if let Ok(Some(ku)) = cert.key_usage()
                && !ku.value.key_cert_sign()
            {
                return Err(CaError::BadIssuer("key usage lacks keyCertSign".into()));
            }
            (
                asn1_to_system(cert.validity().not_after.timestamp()),
                cert.raw_serial_as_string(),
                (
                    cert.public_key().algorithm.algorithm.to_id_string(),
                    cert.public_key().subject_public_key.data.to_vec(),
                ),
            )
        };
        if issuer_not_after <= SystemTime::now() {
            return Err(CaError::IssuerExpired);
        }

        let key = pem::parse_private_key(&creds.issuer_key_pem).map_err(CaError::IssuerKeyPem)?;
        let key = IssuerKey::new(&key)?;
        if key.spki_identity()? != issuer_spki {
            return Err(CaError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| CaError::BadIssuer(e.to_string()))?;

        let ca = Self {
            anchors_pem: pem::encode_certs(&anchors).into_bytes(),
            anchors,
            roots: Arc::new(roots),
            issuer_chain_pem: pem::encode_certs(&chain),
            issuer_chain: chain,
            issuer,
            issuer_not_after,
            earliest_anchor_expiry,
            issuer_serial,
            policy,
        };
        ca.self_test()?;
        Ok(ca)
    }

    /// Signs a throwaway certificate and verifies it against the anchors.
    fn self_test(&self) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "dapr-sentry self-test");
        let now = now_seconds();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + Duration::from_secs(60);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let parsed = ParsedCertificate::try_from(leaf.der())
            .map_err(|e| CaError::ChainVerification(e.to_string()))?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            &self.issuer_chain,
            UnixTime::now(),
            crate::provider().signature_verification_algorithms.all,
        )
        .map_err(|e| CaError::ChainVerification(e.to_string()))
    }

    /// Signs a workload certificate for `id` over `public_key`: URI SAN = the
    /// SPIFFE id, optional DNS SANs, EKU serverAuth+clientAuth, key usage
    /// digitalSignature+keyEncipherment, NotBefore = now - skew, NotAfter =
    /// now + TTL (capped at the issuer's NotAfter). The caller has already
    /// authenticated and authorised the request.
    pub fn sign(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
    ) -> Result<IssuedCert, CaError> {
        self.sign_with_ttl(public_key, id, dns_names, self.policy.workload_ttl)
    }

    /// [`sign`](Self::sign) with an explicit lifetime (tests, short-lived certs).
    pub fn sign_with_ttl(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<IssuedCert, CaError> {
        let now = now_seconds();
        let not_before = now - self.policy.clock_skew;
        let issuer_not_after = OffsetDateTime::from(self.issuer_not_after);
        let not_after = (now + ttl).min(issuer_not_after);
        self.sign_between(public_key, id, dns_names, not_before, not_after)
    }

    /// Signs with an explicit validity window. Used by tests to mint expired
    /// certificates; Sentry itself always goes through [`sign`](Self::sign).
    pub fn sign_between(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, CaError> {
        let mut params = CertificateParams::default();
        // Empty subject: the identity is the URI SAN (marked critical by rcgen).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = Vec::with_capacity(1 + dns_names.len());
        params
            .subject_alt_names
            .push(SanType::URI(id.to_string().try_into()?));
        for dns in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(public_key, &self.issuer)?;

        let mut chain_pem = leaf.pem();
        chain_pem.push_str(&self.issuer_chain_pem);
        let mut chain = Vec::with_capacity(1 + self.issuer_chain.len());
        chain.push(leaf.der().clone());
        chain.extend(self.issuer_chain.iter().cloned());
        Ok(IssuedCert {
            chain,
            chain_pem,
            not_before: not_before.into(),
            not_after: not_after.into(),
        })
    }

    /// Generates a P-256 key in memory and certifies it for `id` (Sentry's own
    /// serving certificate).
    pub fn issue_with_new_key(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
    ) -> Result<(IssuedCert, PrivatePkcs8KeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign(&key, id, dns_names)?;
        Ok((cert, PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// The trust anchors as normalised PEM (comments stripped).
    pub fn trust_anchors_pem(&self) -> &[u8] {
        &self.anchors_pem
    }

    pub fn trust_anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    /// The trust anchors as a rustls root store.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// Issuer first, then any intermediates (never the root).
    pub fn issuer_chain(&self) -> &[CertificateDer<'static>] {
        &self.issuer_chain
    }

    pub fn issuer_chain_pem(&self) -> &str {
        &self.issuer_chain_pem
    }

    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    /// NotAfter of the trust anchor that expires first.
    pub fn earliest_anchor_expiry(&self) -> SystemTime {
        self.earliest_anchor_expiry
    }

    /// Hex serial number of the issuer certificate (for logs).
    pub fn issuer_serial(&self) -> &str {
        &self.issuer_serial
    }

    pub fn policy(&self) -> SignPolicy {
        self.policy
    }
}

/// The issuer private key as an rcgen signer, backed by a rustls/ring
/// signing key (which reads PKCS#8, SEC1 and PKCS#1 keys).
struct IssuerKey {
    signer: Box<dyn Signer>,
    spki: rcgen::SubjectPublicKeyInfo,
    spki_der: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl IssuerKey {
    fn new(der: &PrivateKeyDer<'_>) -> Result<Self, CaError> {
        let key: Arc<dyn SigningKey> = rustls::crypto::ring::sign::any_supported_type(der)
            .map_err(|e| CaError::BadIssuerKey(e.to_string()))?;
        let (scheme, alg) = match key.algorithm() {
            SignatureAlgorithm::ECDSA => {
                if key
                    .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                    .is_some()
                {
                    (
                        SignatureScheme::ECDSA_NISTP256_SHA256,
                        &rcgen::PKCS_ECDSA_P256_SHA256,
                    )
                } else {
                    (
                        SignatureScheme::ECDSA_NISTP384_SHA384,
                        &rcgen::PKCS_ECDSA_P384_SHA384,
                    )
                }
            }
            SignatureAlgorithm::ED25519 => (SignatureScheme::ED25519, &rcgen::PKCS_ED25519),
            SignatureAlgorithm::RSA => (SignatureScheme::RSA_PKCS1_SHA256, &rcgen::PKCS_RSA_SHA256),
            other => {
                return Err(CaError::BadIssuerKey(format!(
                    "unsupported key algorithm {other:?}"
                )));
            }
        };
        let signer = key
            .choose_scheme(&[scheme])
            .ok_or_else(|| CaError::BadIssuerKey("no usable signature scheme".into()))?;
        let spki_der = key
            .public_key()
            .ok_or_else(|| CaError::BadIssuerKey("public key unavailable".into()))?
            .as_ref()
            .to_vec();
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|e| CaError::BadIssuerKey(e.to_string()))?;
        Ok(Self {
            signer,
            spki,
            spki_der,
            alg,
        })
    }

    /// (algorithm OID, public key bits), to compare with a certificate's SPKI.
    fn spki_identity(&self) -> Result<(String, Vec<u8>), CaError> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki_der)
            .map_err(|_| CaError::BadIssuerKey("unparseable public key".into()))?;
        Ok((
            spki.algorithm.algorithm.to_id_string(),
            spki.subject_public_key.data.to_vec(),
        ))
    }
}

impl PublicKeyData for IssuerKey {
    fn der_bytes(&self) -> &[u8] {
        self.spki.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for IssuerKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// 16 random bytes, top bit cleared so the serial is a positive INTEGER.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    crate::provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| CaError::Random)?;
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 0x01;
    }
    Ok(SerialNumber::from_slice(&b))
}

/// Now, truncated to whole seconds (X.509 time resolution).
fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn asn1_to_system(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        UNIX_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Ca {
        let creds = CaCredentials::generate_default("cluster.local", "dapr-system").unwrap();
        Ca::load(&creds, SignPolicy::default()).unwrap()
    }

    #[test]
    fn generated_credentials_load_and_sign() {
        let ca = ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let id = SpiffeId::new("public", "default", "app").unwrap();
        let cert = ca.sign(&key, &id, &[]).unwrap();
        assert_eq!(cert.chain.len(), 2);
        assert_eq!(SpiffeId::from_cert_der(cert.chain[0].as_ref()).unwrap(), id);
        let lifetime = cert.not_after.duration_since(cert.not_before).unwrap();
        assert_eq!(
            lifetime,
            DEFAULT_WORKLOAD_CERT_TTL + DEFAULT_ALLOWED_CLOCK_SKEW
        );

        let (_, leaf) = X509Certificate::from_der(cert.chain[0].as_ref()).unwrap();
        assert!(!leaf.is_ca());
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert_eq!(leaf.public_key().raw, &key.subject_public_key_info()[..]);
    }

    #[test]
    fn root_and_issuer_subjects() {
        let creds = CaCredentials::generate_default("example.org", "dapr-system").unwrap();
        let anchors = pem::parse_certs(&creds.trust_anchors_pem).unwrap();
        let (_, root) = X509Certificate::from_der(anchors[0].as_ref()).unwrap();
        assert_eq!(root.subject().to_string(), "O=example.org");
        let chain = pem::parse_certs(&creds.issuer_chain_pem).unwrap();
        let (_, issuer) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
        assert_eq!(
            issuer.subject().to_string(),
            "O=spiffe://example.org/ns/dapr-system/dapr-sentry"
        );
        let ttl =
            issuer.validity().not_after.timestamp() - issuer.validity().not_before.timestamp();
        assert_eq!(
            ttl as u64,
            (DEFAULT_CA_TTL + DEFAULT_ALLOWED_CLOCK_SKEW).as_secs()
        );
    }

    #[test]
    fn rejects_mismatched_key_and_foreign_chain() {
        let a = CaCredentials::generate_default("a", "ns").unwrap();
        let b = CaCredentials::generate_default("b", "ns").unwrap();
        let wrong_key = CaCredentials {
            issuer_key_pem: b.issuer_key_pem.clone(),
            ..a.clone()
        };
        assert!(matches!(
            Ca::load(&wrong_key, SignPolicy::default()),
            Err(CaError::KeyMismatch)
        ));
        let foreign_root = CaCredentials {
            trust_anchors_pem: b.trust_anchors_pem.clone(),
            ..a.clone()
        };
        assert!(matches!(
            Ca::load(&foreign_root, SignPolicy::default()),
            Err(CaError::ChainVerification(_))
        ));
        // A bundle holding both roots accepts either issuer.
        let mut bundle = a.trust_anchors_pem.clone();
        bundle.extend_from_slice(&b.trust_anchors_pem);
        let both = CaCredentials {
            trust_anchors_pem: bundle,
            ..b.clone()
        };
        let ca = Ca::load(&both, SignPolicy::default()).unwrap();
        assert_eq!(ca.trust_anchors().len(), 2);
        // The issuer is not a root.
        let issuer_as_root = CaCredentials {
            trust_anchors_pem: a.issuer_chain_pem.clone(),
            ..a.clone()
        };
        assert!(Ca::load(&issuer_as_root, SignPolicy::default()).is_err());
        assert!(
            Ca::load(
                &CaCredentials {
                    issuer_key_pem: b"junk".to_vec(),
                    ..a.clone()
                },
                SignPolicy::default()
            )
            .is_err()
        );
    }

    #[test]
    fn issuer_chain_with_root_appended_and_sec1_key() {
        let a = CaCredentials::generate_default("a", "ns").unwrap();
        let mut chain = a.issuer_chain_pem.clone();
        chain.extend_from_slice(&a.trust_anchors_pem);
        let ca = Ca::load(
            &CaCredentials {
                issuer_chain_pem: chain,
                ..a.clone()
            },
            SignPolicy::default(),
        )
        .unwrap();
        assert_eq!(ca.issuer_chain().len(), 1);

        // cert-manager writes EC keys as SEC1 ("EC PRIVATE KEY") by default.
        use p256::pkcs8::DecodePrivateKey;
        let secret =
            p256::SecretKey::from_pkcs8_pem(std::str::from_utf8(&a.issuer_key_pem).unwrap())
                .unwrap();
        let sec1 = secret.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let ca = Ca::load(
            &CaCredentials {
                issuer_key_pem: sec1.as_bytes().to_vec(),
                ..a.clone()
            },
            SignPolicy::default(),
        )
        .unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let id = SpiffeId::new("a", "ns", "app").unwrap();
        ca.sign(&key, &id, &[]).unwrap();
    }

    #[test]
    fn workload_ttl_capped_by_issuer() {
        let creds = CaCredentials::generate(
            "td",
            "ns",
            Duration::from_secs(3600),
            Duration::from_secs(0),
        )
        .unwrap();
        let ca = Ca::load(&creds, SignPolicy::default()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let id = SpiffeId::new("td", "ns", "app").unwrap();
        let cert = ca.sign(&key, &id, &[]).unwrap();
        assert!(cert.not_after <= ca.issuer_not_after());
    }

    #[test]
    fn debug_redacts_key() {
        let a = CaCredentials::generate_default("a", "ns").unwrap();
        let s = format!("{a:?}");
        assert!(s.contains("redacted") && !s.contains("PRIVATE"));
    }
}
