//! Validation of the PKCS#10 requests Sentry receives.
//!
//! Sentry only takes the public key from a CSR; everything else in the
//! certificate is decided by Sentry. A CSR is accepted when:
//! * it is at most [`MAX_CSR_BYTES`](crate::MAX_CSR_BYTES) of PEM, in a
//!   `CERTIFICATE REQUEST` block (or the legacy `CERTIFICATE` label old Go
//!   sidecars used), with no trailing bytes after the DER;
//! * its self-signature verifies and does not use SHA-1;
//! * its key is ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits
//!   (Go sidecars send P-256);
//! * any requested subject alternative names are a subset of the names
//!   Sentry assigns (checked by [`ValidatedCsr::check_requested_sans`]).
//!
//! Other requested extensions (key usage, basic constraints, ...) are
//! ignored, never copied.

use rustls_pki_types::pem::SectionKind;
use thiserror::Error;
use x509_parser::{
    certification_request::X509CertificationRequest,
    cri_attributes::ParsedCriAttribute,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
        OID_PKCS1_SHA1WITHRSA, OID_PKCS9_EXTENSION_REQUEST, OID_SHA1_WITH_RSA, OID_SIG_ED25519,
        OID_X509_EXT_SUBJECT_ALT_NAME,
    },
    prelude::FromDer,
    x509::SubjectPublicKeyInfo,
};

use crate::{MAX_CSR_BYTES, pem};

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 8192;

/// Why a CSR was refused. Messages are safe to return to the caller.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CsrError {
    #[error("certificate signing request is empty")]
    Empty,
    #[error("certificate signing request is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("certificate signing request is not a PEM CERTIFICATE REQUEST block")]
    NotPem,
    #[error("certificate signing request could not be parsed")]
    Parse,
    #[error("certificate signing request has trailing data")]
    TrailingData,
    #[error("certificate signing request uses a SHA-1 signature")]
    WeakSignature,
    #[error("certificate signing request signature is invalid")]
    BadSignature,
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    #[error("RSA key of {bits} bits is too small (minimum {MIN_RSA_BITS})")]
    RsaTooSmall { bits: usize },
    #[error("RSA key of {bits} bits is too large (maximum {MAX_RSA_BITS})")]
    RsaTooLarge { bits: usize },
    #[error(
        "certificate signing request asks for a subject alternative name Sentry does not assign: {0}"
    )]
    SanNotAllowed(String),
    #[error("certificate signing request has a malformed extension request")]
    BadExtensionRequest,
}

/// Kind of key certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa { bits: usize },
}

/// A CSR that passed [`parse_csr_pem`].
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    public_key: rcgen::SubjectPublicKeyInfo,
    key_kind: KeyKind,
    requested_uris: Vec<String>,
    requested_dns: Vec<String>,
}

impl ValidatedCsr {
    /// The requester's public key, ready for [`Ca::sign`](crate::Ca::sign).
    pub fn public_key(&self) -> &rcgen::SubjectPublicKeyInfo {
        &self.public_key
    }

    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// URI SANs the request asked for.
    pub fn requested_uris(&self) -> &[String] {
        &self.requested_uris
    }

    /// DNS SANs the request asked for.
    pub fn requested_dns(&self) -> &[String] {
        &self.requested_dns
    }

    /// Refuses the CSR if it asks for a URI other than `assigned_uri` or a
    /// DNS name not in `assigned_dns`.
    pub fn check_requested_sans(
        &self,
        assigned_uri: &str,
        assigned_dns: &[String],
    ) -> Result<(), CsrError> {
        if let Some(uri) = self.requested_uris.iter().find(|u| *u != assigned_uri) {
            return Err(CsrError::SanNotAllowed(format!("URI {}", truncate(uri))));
        }
        if let Some(dns) = self
            .requested_dns
            .iter()
            .find(|d| !assigned_dns.iter().any(|a| a.eq_ignore_ascii_case(d)))
        {
            return Err(CsrError::SanNotAllowed(format!("DNS {}", truncate(dns))));
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 128;
    let clean: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(MAX)
        .collect();
    if s.len() > MAX {
        format!("{clean}...")
    } else {
        clean
    }
}

/// Parses and validates a PEM CSR (see the module documentation).
pub fn parse_csr_pem(pem_bytes: &[u8]) -> Result<ValidatedCsr, CsrError> {
    if pem_bytes.is_empty() {
        return Err(CsrError::Empty);
    }
    if pem_bytes.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { max: MAX_CSR_BYTES });
    }
    let (_, der) = pem::first_section(pem_bytes, &[SectionKind::Csr, SectionKind::Certificate])
        .map_err(|_| CsrError::NotPem)?;
    parse_csr_der(&der)
}

/// Validates a DER CSR (see the module documentation; no size limit here).
pub fn parse_csr_der(der: &[u8]) -> Result<ValidatedCsr, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Parse)?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData);
    }

    let info = &csr.certification_request_info;
    let key_kind = check_key(&info.subject_pki)?;

    let sig_alg = &csr.signature_algorithm.algorithm;
    if *sig_alg == OID_PKCS1_SHA1WITHRSA || *sig_alg == OID_SHA1_WITH_RSA {
        return Err(CsrError::WeakSignature);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let mut requested_uris = Vec::new();
    let mut requested_dns = Vec::new();
    for attr in info.iter_attributes() {
        let is_ext_req = attr.oid == OID_PKCS9_EXTENSION_REQUEST;
        match attr.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(req) => {
                for ext in &req.extensions {
                    if ext.oid != OID_X509_EXT_SUBJECT_ALT_NAME {
                        continue;
                    }
                    let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension()
                    else {
                        return Err(CsrError::BadExtensionRequest);
                    };
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => requested_uris.push((*u).to_owned()),
                            GeneralName::DNSName(d) => requested_dns.push((*d).to_owned()),
                            other => {
                                return Err(CsrError::SanNotAllowed(truncate(&format!("{other}"))));
                            }
                        }
                    }
                }
            }
            _ if is_ext_req => return Err(CsrError::BadExtensionRequest),
            _ => {}
        }
    }

    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|_| CsrError::UnsupportedKey("unrecognised key encoding".into()))?;
    Ok(ValidatedCsr {
        public_key,
        key_kind,
        requested_uris,
        requested_dns,
    })
}

fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            Ok(KeyKind::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(KeyKind::EcdsaP384)
        } else {
            Err(CsrError::UnsupportedKey(format!("EC curve {curve}")))
        }
    } else if *alg == OID_SIG_ED25519 {
        Ok(KeyKind::Ed25519)
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let x509_parser::public_key::PublicKey::RSA(rsa) = spki
            .parsed()
            .map_err(|_| CsrError::UnsupportedKey("malformed RSA key".into()))?
        else {
            return Err(CsrError::UnsupportedKey("malformed RSA key".into()));
        };
        let bits = bit_length(rsa.modulus);
        if bits < MIN_RSA_BITS {
            Err(CsrError::RsaTooSmall { bits })
        } else if bits > MAX_RSA_BITS {
            Err(CsrError::RsaTooLarge { bits })
        } else {
            Ok(KeyKind::Rsa { bits })
        }
    } else {
        Err(CsrError::UnsupportedKey(format!("algorithm {alg}")))
    }
}

/// Bit length of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn csr_pem(params: &CertificateParams, key: &KeyPair) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_plain_p256_csr() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = parse_csr_pem(csr_pem(&CertificateParams::default(), &key).as_bytes()).unwrap();
        assert_eq!(csr.key_kind(), KeyKind::EcdsaP256);
        assert!(csr.requested_uris().is_empty());
        use rcgen::PublicKeyData;
        assert_eq!(
            csr.public_key().subject_public_key_info(),
            key.subject_public_key_info()
        );
        csr.check_requested_sans("spiffe://public/ns/default/app", &[])
            .unwrap();
    }

    #[test]
    fn accepts_p384_and_ed25519() {
        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr =
                parse_csr_pem(csr_pem(&CertificateParams::default(), &key).as_bytes()).unwrap();
            assert_eq!(csr.key_kind(), kind);
        }
    }

    #[test]
    fn san_policy() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let own = "spiffe://public/ns/default/app";
        let params = CertificateParams::new(vec!["dapr-webhook.dapr-system.svc".into()]).unwrap();
        let mut params = params;
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(own.try_into().unwrap()));
        let csr = parse_csr_pem(csr_pem(&params, &key).as_bytes()).unwrap();
        assert!(csr.check_requested_sans(own, &[]).is_err());
        csr.check_requested_sans(own, &["dapr-webhook.dapr-system.svc".into()])
            .unwrap();
        assert!(matches!(
            csr.check_requested_sans(
                "spiffe://public/ns/default/other",
                &["dapr-webhook.dapr-system.svc".into()]
            ),
            Err(CsrError::SanNotAllowed(_))
        ));

        let mut params = CertificateParams::default();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        assert!(matches!(
            parse_csr_pem(csr_pem(&params, &key).as_bytes()),
            Err(CsrError::SanNotAllowed(_))
        ));
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert_eq!(parse_csr_pem(b"").err(), Some(CsrError::Empty));
        assert_eq!(
            parse_csr_pem(b"not pem at all").err(),
            Some(CsrError::NotPem)
        );
        let junk = crate::pem::encode("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
        assert_eq!(parse_csr_pem(junk.as_bytes()).err(), Some(CsrError::Parse));
        let big = vec![b'A'; MAX_CSR_BYTES + 1];
        assert_eq!(
            parse_csr_pem(&big).err(),
            Some(CsrError::TooLarge { max: MAX_CSR_BYTES })
        );
    }

    #[test]
    fn rejects_tampered_signature() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "aaaaaaaa");
        let csr = params.serialize_request(&key).unwrap();
        let mut der = csr.der().to_vec();
        let pos = der.windows(8).position(|w| w == b"aaaaaaaa").unwrap();
        der[pos] = b'b';
        assert_eq!(parse_csr_der(&der).err(), Some(CsrError::BadSignature));
        let mut trailing = csr.der().to_vec();
        trailing.push(0);
        assert_eq!(parse_csr_der(&trailing).err(), Some(CsrError::TrailingData));
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0, 0]), 0);
    }
}
