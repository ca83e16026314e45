//! Real rustls handshakes between holders of CA-issued certificates, checking
//! the SPIFFE verification rules of `dapr_security::tls`.

use std::{sync::Arc, time::Duration};

use dapr_security::{
    Ca, CaCredentials, SignPolicy, SpiffeId, Svid, SvidStore, TrustAnchors,
    tls::{self, PeerAuthorizer},
};
use rcgen::KeyPair;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn init() {
    dapr_security::ensure_crypto_provider();
}

fn new_ca(td: &str) -> (CaCredentials, Ca) {
    let creds = CaCredentials::generate_default(td, "dapr-system").unwrap();
    let ca = Ca::load(&creds, SignPolicy::default()).unwrap();
    (creds, ca)
}

fn id(td: &str, ns: &str, app: &str) -> SpiffeId {
    SpiffeId::new(td, ns, app).unwrap()
}

fn svid_from(ca: &Ca, id: &SpiffeId) -> Svid {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = ca.sign(&key, id, &[]).unwrap();
    Svid::new(
        cert.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap()
}

fn expired_svid_from(ca: &Ca, id: &SpiffeId) -> Svid {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = ca
        .sign_between(
            &key,
            id,
            &[],
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    Svid::new(
        cert.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap()
}

fn store(svid: Svid) -> Arc<SvidStore> {
    let s = SvidStore::new();
    s.set(svid);
    s
}

/// Runs a handshake plus a 2-byte server->client exchange. Returns the
/// server's view (the client's SPIFFE id) and the client's outcome.
async fn run(
    server: ServerConfig,
    client: ClientConfig,
) -> (Result<SpiffeId, String>, Result<(), String>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = async move {
        let mut tls = TlsAcceptor::from(Arc::new(server))
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        let peer =
            tls::peer_spiffe_id_from_connection(tls.get_ref().1).map_err(|e| e.to_string())?;
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let cli = async move {
        let name = ServerName::try_from("dapr-app").unwrap();
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ok");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(srv, cli) })
        .await
        .expect("handshake hung")
}

struct Pair {
    server: ServerConfig,
    client: ClientConfig,
}

fn pair(
    server_svid: Svid,
    client_svid: Svid,
    server_anchors: Arc<TrustAnchors>,
    client_anchors: Arc<TrustAnchors>,
    server_auth: PeerAuthorizer,
    client_expects: PeerAuthorizer,
) -> Pair {
    Pair {
        server: tls::server_config(&store(server_svid), server_anchors, server_auth).unwrap(),
        client: tls::client_config(Some(&store(client_svid)), client_anchors, client_expects)
            .unwrap(),
    }
}

#[tokio::test]
async fn mutual_tls_with_spiffe_ids() {
    init();
    let (creds, ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = id("public", "default", "orders");
    let client_id = id("public", "default", "checkout");
    let p = pair(
        svid_from(&ca, &server_id),
        svid_from(&ca, &client_id),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::any(),
        PeerAuthorizer::exact(server_id.clone()),
    );
    let (srv, cli) = run(p.server, p.client).await;
    assert_eq!(srv.unwrap(), client_id);
    cli.unwrap();
}

#[tokio::test]
async fn rejects_client_from_another_trust_domain_or_ca() {
    init();
    let (creds, ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = id("public", "default", "orders");

    // Same CA but another trust domain, refused by the server's rule.
    let p = pair(
        svid_from(&ca, &server_id),
        svid_from(&ca, &id("evil", "default", "checkout")),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::trust_domains(vec!["public".into()]),
        PeerAuthorizer::exact(server_id.clone()),
    );
    let (srv, cli) = run(p.server, p.client).await;
    let err = srv.unwrap_err();
    assert!(err.contains("NotAuthorized"), "{err}");
    assert!(cli.is_err());

    // A certificate from a foreign CA (another trust root) is refused by the chain check.
    let (_, other_ca) = new_ca("other.example");
    let p = pair(
        svid_from(&ca, &server_id),
        svid_from(&other_ca, &id("public", "default", "checkout")),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::any(),
        PeerAuthorizer::exact(server_id.clone()),
    );
    let (srv, cli) = run(p.server, p.client).await;
    let err = srv.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
    assert!(cli.is_err());
}

#[tokio::test]
async fn rejects_server_from_foreign_ca() {
    init();
    let (creds, ca) = new_ca("public");
    let (_, other_ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = id("public", "default", "orders");
    let p = pair(
        svid_from(&other_ca, &server_id),
        svid_from(&ca, &id("public", "default", "checkout")),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::any(),
        PeerAuthorizer::exact(server_id),
    );
    let (srv, cli) = run(p.server, p.client).await;
    let err = cli.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
    assert!(srv.is_err());
}

#[tokio::test]
async fn rejects_expired_certificates() {
    init();
    let (creds, ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = id("public", "default", "orders");
    let client_id = id("public", "default", "checkout");

    // Expired client certificate: the server refuses it.
    let p = pair(
        svid_from(&ca, &server_id),
        expired_svid_from(&ca, &client_id),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::any(),
        PeerAuthorizer::exact(server_id.clone()),
    );
    let (srv, cli) = run(p.server, p.client).await;
    let err = srv.unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert!(cli.is_err());

    // Expired server certificate: the client refuses it.
    let p = pair(
        expired_svid_from(&ca, &server_id),
        svid_from(&ca, &client_id),
        anchors.clone(),
        anchors.clone(),
        PeerAuthorizer::any(),
        PeerAuthorizer::exact(server_id.clone()),
    );
    let (srv, cli) = run(p.server, p.client).await;
    let err = cli.unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert!(srv.is_err());
}

#[tokio::test]
async fn rejects_server_with_another_app_id_namespace_or_trust_domain() {
    init();
    let (creds, ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let expected = id("public", "default", "orders");
    for presented in [
        id("public", "default", "payments"),
        id("public", "prod", "orders"),
        id("other", "default", "orders"),
    ] {
        let p = pair(
            svid_from(&ca, &presented),
            svid_from(&ca, &id("public", "default", "checkout")),
            anchors.clone(),
            anchors.clone(),
            PeerAuthorizer::any(),
            PeerAuthorizer::exact(expected.clone()),
        );
        let (srv, cli) = run(p.server, p.client).await;
        let err = cli.unwrap_err();
        assert!(
            err.contains("NotAuthorized") && err.contains(&presented.to_string()),
            "{err}"
        );
        assert!(srv.is_err());
    }
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    init();
    let (creds, ca) = new_ca("public");
    let anchors = TrustAnchors::from_pem(&creds.trust_anchors_pem).unwrap();
    let server_id = id("public", "default", "orders");
    let server = tls::server_config(
        &store(svid_from(&ca, &server_id)),
        anchors.clone(),
        PeerAuthorizer::any(),
    )
    .unwrap();
    let client = tls::client_config(None, anchors, PeerAuthorizer::exact(server_id)).unwrap();
    let (srv, _cli) = run(server, client).await;
    assert!(srv.is_err());
}

#[tokio::test]
async fn trust_anchors_and_svids_reload_without_new_configs() {
    init();
    let (old_creds, old_ca) = new_ca("public");
    let (new_creds, new_ca) = new_ca("public");
    let server_id = id("public", "default", "orders");
    let client_id = id("public", "default", "checkout");

    // Both sides trust only the old root; the server already uses a
    // certificate from the new root.
    let server_anchors = TrustAnchors::from_pem(&old_creds.trust_anchors_pem).unwrap();
    let client_anchors = TrustAnchors::from_pem(&old_creds.trust_anchors_pem).unwrap();
    let server_store = store(svid_from(&new_ca, &server_id));
    let client_store = store(svid_from(&old_ca, &client_id));
    let server_cfg =
        tls::server_config(&server_store, server_anchors.clone(), PeerAuthorizer::any()).unwrap();
    let client_cfg = tls::client_config(
        Some(&client_store),
        client_anchors.clone(),
        PeerAuthorizer::exact(server_id.clone()),
    )
    .unwrap();
    let (_, cli) = run(server_cfg.clone(), client_cfg.clone()).await;
    assert!(cli.is_err());

    // Distribute the bundle (old + new roots): the same configs now work.
    let mut bundle = old_creds.trust_anchors_pem.clone();
    bundle.extend_from_slice(&new_creds.trust_anchors_pem);
    assert!(client_anchors.update_pem(&bundle).unwrap());
    assert!(server_anchors.update_pem(&bundle).unwrap());
    assert!(!server_anchors.update_pem(&bundle).unwrap());
    let (srv, cli) = run(server_cfg.clone(), client_cfg.clone()).await;
    cli.unwrap();
    assert_eq!(srv.unwrap(), client_id);

    // The client renews onto the new root; the next handshake presents it.
    let renewed = svid_from(&new_ca, &client_id);
    let renewed_leaf = renewed.chain()[0].clone();
    client_store.set(renewed);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (srv, cli) = tokio::join!(
        async {
            let tls = TlsAcceptor::from(Arc::new(server_cfg.clone()))
                .accept(a)
                .await
                .unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        },
        async {
            TlsConnector::from(Arc::new(client_cfg.clone()))
                .connect(ServerName::try_from("x").unwrap(), b)
                .await
                .unwrap()
        }
    );
    drop(cli);
    assert_eq!(srv, renewed_leaf);

    // Dropping the old root from the bundle locks out old-root certificates.
    server_anchors
        .update_pem(&new_creds.trust_anchors_pem)
        .unwrap();
    let old_client = store(svid_from(&old_ca, &client_id));
    let client_cfg = tls::client_config(
        Some(&old_client),
        client_anchors,
        PeerAuthorizer::exact(server_id),
    )
    .unwrap();
    let (srv, _) = run(server_cfg, client_cfg).await;
    assert!(srv.is_err());
}

#[tokio::test]
async fn svid_store_renewal_time_is_half_life() {
    init();
    let (_, ca) = new_ca("public");
    let svid = svid_from(&ca, &id("public", "default", "a"));
    let half = svid.renewal_time();
    let life = svid.not_after().duration_since(svid.not_before()).unwrap();
    assert_eq!(half, svid.not_before() + life / 2);
    assert!(format!("{svid:?}").contains("redacted"));
}
