//! PEM helpers on top of `rustls-pki-types` (decoding) and base64 (encoding).

use base64::Engine as _;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{PemObject, SectionKind},
};
use thiserror::Error;

/// A PEM input could not be used.
#[derive(Debug, Error)]
pub enum PemError {
    #[error("malformed PEM: {0}")]
    Malformed(String),
    #[error("no {0} found in PEM input")]
    Missing(&'static str),
    #[error("more than one private key in PEM input")]
    MultipleKeys,
}

/// Every `CERTIFICATE` block in `pem`, in order. Other block types are
/// skipped; at least one certificate is required.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::Missing("CERTIFICATE"));
    }
    Ok(certs)
}

/// The single private key in `pem`: PKCS#8 (`PRIVATE KEY`), SEC1
/// (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    let mut found = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| PemError::Malformed(e.to_string()))?;
        let key = match kind {
            SectionKind::PrivateKey | SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => {
                PrivateKeyDer::from_pem(kind, der)
            }
            _ => None,
        };
        if let Some(key) = key {
            if found.is_some() {
                return Err(PemError::MultipleKeys);
            }
            found = Some(key);
        }
    }
    found.ok_or(PemError::Missing("private key"))
}

/// The first block of `pem` whose label is one of `kinds`, with its kind.
pub fn first_section(
    pem: &[u8],
    kinds: &[SectionKind],
) -> Result<(SectionKind, Vec<u8>), PemError> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| PemError::Malformed(e.to_string()))?;
        if kinds.contains(&kind) {
            return Ok((kind, der));
        }
    }
    Err(PemError::Missing("PEM block of the expected type"))
}

/// Encodes one DER object as a PEM block with 64-column lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Encodes certificates as concatenated `CERTIFICATE` blocks.
pub fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|c| encode("CERTIFICATE", c.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let der = vec![0x30u8; 200];
        let pem = encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let certs = parse_certs(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_ref(), &der[..]);
        assert!(parse_certs(b"garbage").is_err());
        assert!(parse_private_key(pem.as_bytes()).is_err());
    }
}
