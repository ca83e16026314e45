//! rustls configurations for SPIFFE-authenticated mTLS.
//!
//! * Servers require a client certificate that chains to the current trust
//!   anchors and carries a Dapr SPIFFE id accepted by a [`PeerAuthorizer`];
//!   the application reads the peer's id with [`peer_spiffe_id`] (or
//!   [`peer_spiffe_id_from_request`] in a tonic handler).
//! * Clients verify that the server certificate chains to the current trust
//!   anchors and that its SPIFFE id is accepted by a [`PeerAuthorizer`],
//!   usually [`PeerAuthorizer::exact`] for the app id + namespace + trust
//!   domain being called. DNS names are not checked: identities are SPIFFE
//!   ids.
//!
//! Verifiers read [`TrustAnchors::current`] on every handshake and the
//! certificate resolvers read the [`SvidStore`] on every handshake, so anchor
//! reloads and certificate renewals need no config rebuild.

use std::{fmt, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::{
        ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;

use crate::{
    anchors::TrustAnchors,
    spiffe::{SpiffeId, SpiffeIdError},
    svid::SvidStore,
};

/// ALPN protocol ids for gRPC (HTTP/2); Go gRPC clients require `h2`.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a peer's identity was refused.
#[derive(Debug, Error, Clone)]
pub enum PeerIdentityError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate has no valid SPIFFE id: {0}")]
    BadIdentity(#[from] SpiffeIdError),
    #[error("peer {id} is not authorized: {reason}")]
    NotAuthorized { id: String, reason: String },
}

impl From<PeerIdentityError> for rustls::Error {
    fn from(e: PeerIdentityError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

type AuthorizeFn = dyn Fn(&SpiffeId) -> Result<(), String> + Send + Sync;

/// Decides which SPIFFE ids a TLS peer may have.
#[derive(Clone)]
pub struct PeerAuthorizer {
    f: Arc<AuthorizeFn>,
    description: String,
}

impl fmt::Debug for PeerAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerAuthorizer({})", self.description)
    }
}

impl PeerAuthorizer {
    /// Any well-formed Dapr SPIFFE id (chaining to the anchors is still required).
    pub fn any() -> Self {
        Self {
            f: Arc::new(|_| Ok(())),
            description: "any".into(),
        }
    }

    /// Exactly `id` (trust domain, namespace and app id).
    pub fn exact(id: SpiffeId) -> Self {
        let description = id.to_string();
        Self {
            f: Arc::new(move |peer| {
                if *peer == id {
                    Ok(())
                } else {
                    Err(format!("expected {id}"))
                }
            }),
            description,
        }
    }

    /// Any id in one of the given trust domains.
    pub fn trust_domains(tds: Vec<String>) -> Self {
        let description = format!("trust domains {tds:?}");
        Self {
            f: Arc::new(move |peer| {
                if tds.iter().any(|td| td == peer.trust_domain()) {
                    Ok(())
                } else {
                    Err(format!("trust domain not in {tds:?}"))
                }
            }),
            description,
        }
    }

    /// A custom rule; the error string is reported in the handshake failure.
    pub fn custom(
        description: impl Into<String>,
        f: impl Fn(&SpiffeId) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            f: Arc::new(f),
            description: description.into(),
        }
    }

    /// Applies the rule.
    pub fn authorize(&self, id: &SpiffeId) -> Result<(), PeerIdentityError> {
        (self.f)(id).map_err(|reason| PeerIdentityError::NotAuthorized {
            id: id.to_string(),
            reason,
        })
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::provider().signature_verification_algorithms
}

/// Server-side verifier of client certificates (mTLS).
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    anchors: Arc<TrustAnchors>,
    authorizer: PeerAuthorizer,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    pub fn new(anchors: Arc<TrustAnchors>, authorizer: PeerAuthorizer) -> Self {
        Self {
            anchors,
            authorizer,
            algs: algorithms(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Anchors change at run time; send no hints (clients send their
        // only certificate anyway).
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.anchors
            .current()
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = SpiffeId::from_cert_der(end_entity.as_ref()).map_err(PeerIdentityError::from)?;
        self.authorizer.authorize(&id)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client-side verifier of server certificates.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    anchors: Arc<TrustAnchors>,
    authorizer: PeerAuthorizer,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(anchors: Arc<TrustAnchors>, authorizer: PeerAuthorizer) -> Self {
        Self {
            anchors,
            authorizer,
            algs: algorithms(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            self.anchors.current().roots(),
            intermediates,
            now,
            self.algs.all,
        )?;
        let id = SpiffeId::from_cert_der(end_entity.as_ref()).map_err(PeerIdentityError::from)?;
        self.authorizer.authorize(&id)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Building a config failed (only if the ring provider lacks TLS versions).
#[derive(Debug, Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

/// mTLS server config: serves the store's current SVID, requires a client
/// certificate chained to `anchors` whose SPIFFE id `authorizer` accepts.
/// ALPN is `h2`.
pub fn server_config(
    svids: &Arc<SvidStore>,
    anchors: Arc<TrustAnchors>,
    authorizer: PeerAuthorizer,
) -> Result<ServerConfig, TlsConfigError> {
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(anchors, authorizer)))
        .with_cert_resolver(svids.resolver());
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// TLS server config without client authentication (Sentry's own port:
/// callers authenticate with the token in the request). ALPN is `h2`.
pub fn server_config_no_client_auth(
    svids: &Arc<SvidStore>,
) -> Result<ServerConfig, TlsConfigError> {
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(svids.resolver());
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// Client config: verifies the server against `anchors` and `authorizer`;
/// presents the store's SVID when `svids` is given (mTLS). ALPN is `h2`.
pub fn client_config(
    svids: Option<&Arc<SvidStore>>,
    anchors: Arc<TrustAnchors>,
    authorizer: PeerAuthorizer,
) -> Result<ClientConfig, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(anchors, authorizer)));
    let mut cfg = match svids {
        Some(store) => builder.with_client_cert_resolver(store.resolver()),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// The SPIFFE id of a peer from the certificates it presented (leaf first),
/// as returned by `rustls::CommonState::peer_certificates` or tonic's
/// `Request::peer_certs`. The chain was already verified in the handshake.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = certs.first().ok_or(PeerIdentityError::NoCertificate)?;
    Ok(SpiffeId::from_cert_der(leaf.as_ref())?)
}

/// The SPIFFE id of the caller of a tonic handler served over
/// `tokio_rustls::server::TlsStream<TcpStream>` (see [`crate::net`]).
pub fn peer_spiffe_id_from_request<T>(
    req: &tonic::Request<T>,
) -> Result<SpiffeId, PeerIdentityError> {
    let certs = req.peer_certs().ok_or(PeerIdentityError::NoCertificate)?;
    peer_spiffe_id(&certs)
}

/// The SPIFFE id of the peer of an established rustls connection.
pub fn peer_spiffe_id_from_connection(
    conn: &rustls::CommonState,
) -> Result<SpiffeId, PeerIdentityError> {
    peer_spiffe_id(conn.peer_certificates().unwrap_or_default())
}
