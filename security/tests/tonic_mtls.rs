//! mTLS between a tonic server and client over `dapr_security::net`, with
//! the caller's SPIFFE id read in the handler.

use std::{sync::Arc, time::Duration};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_client::CaClient, ca_server,
};
use dapr_security::{
    Ca, CaCredentials, SignPolicy, SpiffeId, Svid, SvidStore, TrustAnchors,
    net::{HANDSHAKE_TIMEOUT, tls_channel, tls_incoming},
    tls::{self, PeerAuthorizer},
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Answers with the caller's SPIFFE id in `workload_certificate`.
struct WhoAmI;

#[tonic::async_trait]
impl ca_server::Ca for WhoAmI {
    async fn sign_certificate(
        &self,
        request: tonic::Request<SignCertificateRequest>,
    ) -> Result<tonic::Response<SignCertificateResponse>, tonic::Status> {
        let id = tls::peer_spiffe_id_from_request(&request)
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        Ok(tonic::Response::new(SignCertificateResponse {
            workload_certificate: id.to_string().into_bytes(),
            ..Default::default()
        }))
    }
}

fn svid(ca: &Ca, id: &SpiffeId) -> Arc<SvidStore> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = ca.sign(&key, id, &[]).unwrap();
    let store = SvidStore::new();
    store.set(
        Svid::new(
            cert.chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap(),
    );
    store
}

#[tokio::test]
async fn tonic_mtls_exposes_the_peer_spiffe_id() {
    dapr_security::ensure_crypto_provider();
    let creds = CaCredentials::generate_default("public", "dapr-system").unwrap();
    let ca = Ca::load(&creds, SignPolicy::default()).unwrap();
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = SpiffeId::new("public", "default", "orders").unwrap();
    let client_id = SpiffeId::new("public", "default", "checkout").unwrap();

    // Server: only callers from trust domain "public".
    let server_cfg = tls::server_config(
        &svid(&ca, &server_id),
        anchors.clone(),
        PeerAuthorizer::trust_domains(vec!["public".into()]),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ca_server::CaServer::new(WhoAmI))
            .serve_with_incoming_shutdown(
                tls_incoming(listener, Arc::new(server_cfg), HANDSHAKE_TIMEOUT),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    let call = |store: Arc<SvidStore>, expect: PeerAuthorizer| {
        let anchors = anchors.clone();
        async move {
            let cfg = tls::client_config(Some(&store), anchors, expect).unwrap();
            let channel =
                tls_channel(&addr.to_string(), Arc::new(cfg), Duration::from_secs(5)).unwrap();
            CaClient::new(channel)
                .sign_certificate(SignCertificateRequest::default())
                .await
                .map(|r| String::from_utf8(r.into_inner().workload_certificate).unwrap())
        }
    };

    // The handler sees the client's SPIFFE id.
    let who = call(
        svid(&ca, &client_id),
        PeerAuthorizer::exact(server_id.clone()),
    )
    .await
    .unwrap();
    assert_eq!(who, client_id.to_string());

    // A client from another trust domain is refused at the handshake.
    let other_td = SpiffeId::new("evil", "default", "checkout").unwrap();
    assert!(
        call(
            svid(&ca, &other_td),
            PeerAuthorizer::exact(server_id.clone())
        )
        .await
        .is_err()
    );
    // A client expecting another app refuses the server.
    assert!(
        call(
            svid(&ca, &client_id),
            PeerAuthorizer::exact(SpiffeId::new("public", "default", "payments").unwrap())
        )
        .await
        .is_err()
    );

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
