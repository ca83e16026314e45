//! `Identity::obtain` and the control-plane presets against an in-process
//! `CA/SignCertificate` server built on the CA core (the real `dapr-sentry`
//! process is exercised by the daprd and placement tests).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_server,
};
use dapr_security::{
    Ca, CaCredentials, SignPolicy, SpiffeId, Svid, SvidStore,
    controlplane::{ControlPlaneConfig, Identity},
    csr::parse_csr_pem,
    identity::IdentityError,
    net::{HANDSHAKE_TIMEOUT, tls_incoming},
    tls,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Signs whatever is asked for with the trust domain requested (the
/// insecure validator's behaviour), refusing the app id `refused`.
struct Signer(Arc<Ca>);

#[tonic::async_trait]
impl ca_server::Ca for Signer {
    async fn sign_certificate(
        &self,
        request: tonic::Request<SignCertificateRequest>,
    ) -> Result<tonic::Response<SignCertificateResponse>, tonic::Status> {
        let req = request.into_inner();
        if req.id == "refused" {
            return Err(tonic::Status::permission_denied("not you"));
        }
        let csr = parse_csr_pem(&req.certificate_signing_request)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let id = SpiffeId::new(&req.trust_domain, &req.namespace, &req.id)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let cert = self
            .0
            .sign(csr.public_key(), &id, &[])
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(SignCertificateResponse {
            workload_certificate: cert.chain_pem.into_bytes(),
            trust_chain_certificates: vec![self.0.trust_anchors_pem().to_vec()],
            ..Default::default()
        }))
    }
}

/// Starts the signer on 127.0.0.1 with a `dapr-sentry` certificate; writes
/// the anchors to `anchors_file`; returns the address.
async fn start_signer(anchors_file: &Path) -> String {
    dapr_security::ensure_crypto_provider();
    let creds = CaCredentials::generate_default("localhost", "default").unwrap();
    std::fs::write(anchors_file, &creds.trust_anchors_pem).unwrap();
    let ca = Arc::new(Ca::load(&creds, SignPolicy::default()).unwrap());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = ca
        .sign(
            &key,
            &SpiffeId::sentry("localhost", "default").unwrap(),
            &[],
        )
        .unwrap();
    let store = SvidStore::new();
    store.set(
        Svid::new(
            cert.chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap(),
    );
    let cfg = tls::server_config_no_client_auth(&store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _keep = store;
        let _ = tonic::transport::Server::builder()
            .add_service(ca_server::CaServer::new(Signer(ca)))
            .serve_with_incoming(tls_incoming(listener, Arc::new(cfg), HANDSHAKE_TIMEOUT))
            .await;
    });
    addr
}

fn config(service: &str, sentry: &str, anchors: &Path) -> ControlPlaneConfig {
    let mut cfg = ControlPlaneConfig::new(service, sentry);
    cfg.namespace = "default".into();
    cfg.trust_anchors_file = anchors.to_owned();
    cfg.sentry_wait = Duration::from_secs(3);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_identity_serves_mtls_to_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("ca.crt");
    let sentry = start_signer(&anchors).await;

    let placement =
        Identity::obtain(config("dapr-placement", &sentry, &anchors).into_identity_config())
            .await
            .unwrap();
    let placement_id = SpiffeId::new("localhost", "default", "dapr-placement").unwrap();
    assert_eq!(placement.id(), Some(placement_id.clone()));

    // A TLS server with the placement identity requiring client
    // certificates; it reports each verified caller's id.
    let server_cfg = Arc::new(placement.sidecar_server_config().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut incoming = tls_incoming(listener, server_cfg, HANDSHAKE_TIMEOUT);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio_stream::StreamExt;
        while let Some(Ok(tls)) = incoming.next().await {
            let id = tls::peer_spiffe_id_from_connection(tls.get_ref().1);
            let _ = seen_tx.send(id.map(|i| i.to_string())).await;
        }
    });

    // A "sidecar" identity from the same Sentry dials the placement id.
    let mut sidecar_cfg = config("myapp", &sentry, &anchors).into_identity_config();
    sidecar_cfg.trust_domain = Some("public".into());
    let sidecar = Identity::obtain(sidecar_cfg).await.unwrap();
    let client = Arc::new(
        sidecar
            .client_config(tls::PeerAuthorizer::exact(placement_id.clone()))
            .unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(client)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("handshake with the placement identity");
    drop(conn);
    let seen = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen, "spiffe://public/ns/default/myapp");

    // Expecting another control-plane id fails the handshake.
    let wrong = Arc::new(
        sidecar
            .client_config(tls::PeerAuthorizer::exact(
                SpiffeId::new("localhost", "default", "dapr-operator").unwrap(),
            ))
            .unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        tokio_rustls::TlsConnector::from(wrong)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sentry_fails_within_the_bound_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("ca.crt");
    let creds = CaCredentials::generate_default("localhost", "default").unwrap();
    std::fs::write(&anchors, &creds.trust_anchors_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let err = Identity::obtain(config("dapr-operator", &dead, &anchors).into_identity_config())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, IdentityError::SentryUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_fails_at_once_and_missing_anchors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("ca.crt");
    let sentry = start_signer(&anchors).await;
    let started = Instant::now();
    let mut cfg = config("refused", &sentry, &anchors);
    cfg.sentry_wait = Duration::from_secs(20);
    let err = Identity::obtain(cfg.into_identity_config())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal was retried"
    );
    assert!(err.to_string().contains("not you"), "{err}");

    let err = Identity::obtain(
        config("dapr-operator", &sentry, &dir.path().join("missing.crt")).into_identity_config(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
