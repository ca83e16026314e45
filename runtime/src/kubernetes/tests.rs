//! The operator client and the component watch against a small in-test
//! `Operator` server on loopback (the real operator is exercised by
//! `e2e/tests/kubernetes_mode.rs`).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use dapr_rs_proto::generated::dapr::proto::operator::v1::{
    self as pb, ResourceEventType,
    operator_server::{Operator, OperatorServer},
};
use futures::Stream;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::*;
use crate::components::{ComponentLoader, KeyPrefix, Registry};

type Events = Pin<Box<dyn Stream<Item = Result<pb::ComponentUpdateEvent, Status>> + Send>>;

/// What the fake operator serves; tests change it while daprd watches.
#[derive(Default)]
struct Fake {
    components: Mutex<Vec<serde_json::Value>>,
    /// The open update stream (dropping it ends the stream).
    stream: Mutex<Option<mpsc::Sender<Result<pb::ComponentUpdateEvent, Status>>>>,
    streams_opened: Mutex<u32>,
    namespaces: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct FakeOperator(Arc<Fake>);

#[tonic::async_trait]
impl Operator for FakeOperator {
    async fn list_components(
        &self,
        request: Request<pb::ListComponentsRequest>,
    ) -> Result<Response<pb::ListComponentResponse>, Status> {
        self.0
            .namespaces
            .lock()
            .unwrap()
            .push(request.into_inner().namespace);
        let components = self
            .0
            .components
            .lock()
            .unwrap()
            .iter()
            .map(|c| serde_json::to_vec(c).unwrap())
            .collect();
        Ok(Response::new(pb::ListComponentResponse { components }))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let req = request.into_inner();
        if req.name != "appconfig" {
            return Err(Status::not_found("configuration not found"));
        }
        let cfg = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "appconfig", "namespace": req.namespace},
            "spec": {"features": [{"name": "HotReload", "enabled": false}]}
        });
        Ok(Response::new(pb::GetConfigurationResponse {
            configuration: serde_json::to_vec(&cfg).unwrap(),
        }))
    }

    async fn component_update(
        &self,
        _request: Request<pb::ComponentUpdateRequest>,
    ) -> Result<Response<Events>, Status> {
        let (tx, rx) = mpsc::channel(16);
        *self.0.stream.lock().unwrap() = Some(tx);
        *self.0.streams_opened.lock().unwrap() += 1;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn component(
    name: &str,
    type_: &str,
    md: &[(&str, &str)],
    ignore_errors: bool,
) -> serde_json::Value {
    let metadata: Vec<_> = md
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": "team", "uid": "x", "resourceVersion": "7"},
        "spec": {"type": type_, "version": "v1", "ignoreErrors": ignore_errors, "metadata": metadata}
    })
}

async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OperatorServer::new(FakeOperator(fake)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

async fn send(fake: &Fake, ty: ResourceEventType, c: &serde_json::Value) {
    let tx = fake.stream.lock().unwrap().clone().expect("stream open");
    tx.send(Ok(pb::ComponentUpdateEvent {
        component: serde_json::to_vec(c).unwrap(),
        r#type: ty as i32,
    }))
    .await
    .unwrap();
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn loader(registry: &Arc<Registry>) -> Arc<ComponentLoader> {
    Arc::new(ComponentLoader {
        app_id: "app".into(),
        namespace: "team".into(),
        registry: registry.clone(),
    })
}

#[tokio::test]
async fn updates_apply_live_and_reconnect_relists() {
    let fake = Arc::new(Fake::default());
    fake.components
        .lock()
        .unwrap()
        .push(component("a", "state.in-memory", &[], false));
    let addr = serve(fake.clone()).await;
    let client = OperatorClient::new(&addr, "team", None, Duration::from_secs(5)).unwrap();

    let registry = Arc::new(Registry::default());
    let loader = loader(&registry);
    let listed = client.list_components().await.unwrap();
    assert_eq!(listed.len(), 1);
    loader.load_all(&listed).await.unwrap();
    assert_eq!(fake.namespaces.lock().unwrap().as_slice(), ["team"]);

    let stop = CancellationToken::new();
    tokio::spawn(watch_components(client, loader.clone(), stop.clone()));
    until("stream", || fake.stream.lock().unwrap().is_some()).await;

    // Created, then updated (keyPrefix), then deleted.
    let b = component("b", "state.in-memory", &[], false);
    send(&fake, ResourceEventType::Created, &b).await;
    until("b created", || registry.state_store("b").is_some()).await;
    let a2 = component("a", "state.in-memory", &[("keyPrefix", "none")], false);
    send(&fake, ResourceEventType::Updated, &a2).await;
    until("a updated", || {
        registry.state_store("a").map(|e| e.prefix) == Some(KeyPrefix::None)
    })
    .await;
    send(&fake, ResourceEventType::Deleted, &b).await;
    until("b deleted", || registry.state_store("b").is_none()).await;

    // Unknown type with ignoreErrors: logged, the others keep working.
    let bad = component("bad", "state.nope", &[], true);
    send(&fake, ResourceEventType::Created, &bad).await;
    let c = component("c", "state.in-memory", &[], false);
    send(&fake, ResourceEventType::Created, &c).await;
    until("c created", || registry.state_store("c").is_some()).await;
    assert!(registry.state_store("bad").is_none());
    assert!(registry.state_store("a").is_some());

    // The stream drops while the list changes: the reconnect re-lists.
    *fake.components.lock().unwrap() =
        vec![a2.clone(), component("d", "state.in-memory", &[], false)];
    fake.stream.lock().unwrap().take();
    until("re-listed", || {
        registry.state_store("d").is_some() && registry.state_store("c").is_none()
    })
    .await;
    assert!(*fake.streams_opened.lock().unwrap() >= 2);
    assert!(!stop.is_cancelled());

    // A failing component without ignoreErrors: daprd shuts down (Dapr).
    until("stream reopened", || fake.stream.lock().unwrap().is_some()).await;
    send(
        &fake,
        ResourceEventType::Created,
        &component("fatal", "state.nope", &[], false),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(5), stop.cancelled())
        .await
        .expect("watch requested shutdown");
}

#[tokio::test]
async fn out_of_scope_updates_remove_the_component() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let client = OperatorClient::new(&addr, "team", None, Duration::from_secs(5)).unwrap();
    let registry = Arc::new(Registry::default());
    let stop = CancellationToken::new();
    tokio::spawn(watch_components(client, loader(&registry), stop.clone()));
    until("stream", || fake.stream.lock().unwrap().is_some()).await;
    let mut s = component("s", "state.in-memory", &[], false);
    send(&fake, ResourceEventType::Created, &s).await;
    until("s created", || registry.state_store("s").is_some()).await;
    s["scopes"] = json!(["other-app"]);
    send(&fake, ResourceEventType::Updated, &s).await;
    until("s unloaded", || registry.state_store("s").is_none()).await;
    stop.cancel();
}

#[tokio::test]
async fn configuration_by_name_and_not_found() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake).await;
    let client = OperatorClient::new(&addr, "team", None, Duration::from_secs(5)).unwrap();
    let cfg = client.get_configuration("appconfig").await.unwrap();
    assert_eq!(cfg.metadata.name, "appconfig");
    assert!(!hot_reload_enabled(Some(&cfg)));
    assert!(hot_reload_enabled(None));
    let err = client.get_configuration("nope").await.unwrap_err();
    assert!(
        matches!(err, OperatorError::ConfigurationNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nope") && err.to_string().contains("team"));
}

#[tokio::test]
async fn unreachable_operator_fails_in_bounded_time_naming_the_address() {
    // A port nothing listens on: bind one, then free it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = OperatorClient::new(&addr, "team", None, Duration::from_secs(1)).unwrap();
    let started = std::time::Instant::now();
    let err = client.list_components().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        matches!(err, OperatorError::Unreachable { attempts, .. } if attempts > 1),
        "{text}"
    );
    assert!(
        text.contains(&addr) && text.contains("ListComponents"),
        "{text}"
    );
}

#[test]
fn empty_address_is_a_clear_error() {
    let err = OperatorClient::new("  ", "team", None, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("--control-plane-address"), "{err}");
}

/// mTLS toward the operator: certificates from a test CA (no Sentry).
mod mtls {
    use std::sync::Arc;

    use dapr_security::{
        anchors::TrustAnchors,
        identity::Identity,
        net,
        svid::{Svid, SvidStore},
        tls::{PeerAuthorizer, peer_spiffe_id_from_request},
    };
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "test");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    fn identity(ca: &Ca, id: &str) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let store = SvidStore::new();
        store.set(
            Svid::new(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        );
        Identity::from_parts(store, TrustAnchors::from_pem(ca.pem.as_bytes()).unwrap())
    }

    /// Answers ListComponents with the caller's SPIFFE id as the component
    /// name, so the test sees what the server verified.
    struct WhoAmI;

    #[tonic::async_trait]
    impl Operator for WhoAmI {
        async fn list_components(
            &self,
            request: Request<pb::ListComponentsRequest>,
        ) -> Result<Response<pb::ListComponentResponse>, Status> {
            let id = peer_spiffe_id_from_request(&request)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            let c = component(id.app_id(), "state.in-memory", &[], false);
            Ok(Response::new(pb::ListComponentResponse {
                components: vec![serde_json::to_vec(&c).unwrap()],
            }))
        }
    }

    async fn serve_mtls(server: Identity) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = Arc::new(server.server_config(PeerAuthorizer::any()).unwrap());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(OperatorServer::new(WhoAmI))
                .serve_with_incoming(net::tls_incoming(listener, cfg, net::HANDSHAKE_TIMEOUT))
                .await
        });
        addr
    }

    #[tokio::test]
    async fn operator_identity_is_verified_and_the_svid_presented() {
        let ca = ca();
        let operator = identity(&ca, "spiffe://cluster.local/ns/dapr-system/dapr-operator");
        let sidecar = identity(&ca, "spiffe://public/ns/team/myapp");
        let addr = serve_mtls(operator).await;

        let ok = OperatorClient::new(
            &addr,
            "team",
            Some((&sidecar, "cluster.local", "dapr-system")),
            Duration::from_secs(2),
        )
        .unwrap();
        let listed = ok.list_components().await.unwrap();
        // The server saw the sidecar's certificate.
        assert_eq!(listed[0].resource.name(), "myapp");

        // Expecting the operator in another namespace: the handshake fails.
        let wrong = OperatorClient::new(
            &addr,
            "team",
            Some((&sidecar, "cluster.local", "elsewhere")),
            Duration::from_secs(1),
        )
        .unwrap();
        let err = wrong.list_components().await.unwrap_err().to_string();
        assert!(
            err.contains(&addr)
                && err.contains("expected spiffe://cluster.local/ns/elsewhere/dapr-operator"),
            "{err}"
        );

        // A plaintext client gets nowhere either.
        let plain = OperatorClient::new(&addr, "team", None, Duration::from_secs(1)).unwrap();
        assert!(plain.list_components().await.is_err());
    }
}
