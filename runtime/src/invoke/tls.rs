//! TLS client configurations (rustls on ring) for calls leaving the sidecar:
//! to HTTPEndpoints (verified, optional private root CA and client
//! certificate) and to the app over `https`/`grpcs` (not verified, as Dapr:
//! the app's certificate is usually self-signed on the same host).

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid root CA: {0}")]
    RootCa(String),
    #[error("invalid client certificate: {0}")]
    Certificate(String),
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verified TLS: the PEM `root_ca` if given, else the system's roots; a
/// client certificate when both `cert` and `key` are given.
pub fn endpoint_config(
    root_ca: Option<&str>,
    client_cert: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let versions = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match root_ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| TlsError::RootCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::RootCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::RootCa("no PEM certificate found".into()));
            }
            versions.with_root_certificates(roots)
        }
        None => {
            use hyper_rustls::ConfigBuilderExt;
            versions
                .with_native_roots()
                .map_err(|e| TlsError::RootCa(format!("system roots: {e}")))?
        }
    };
    let mut config = match client_cert {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(TlsError::Certificate("no PEM certificate found".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| TlsError::PrivateKey(e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Certificate(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// TLS to the app without certificate verification (Dapr sets
/// `InsecureSkipVerify` for `https` and `grpcs` app channels).
pub fn app_config(alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts any server certificate, but still checks the handshake
/// signatures (so the peer proves it holds the certificate's key).
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
