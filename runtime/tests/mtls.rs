//! Sidecar mTLS with real processes: `dapr-sentry` issues the certificates,
//! two `daprd --enable-mtls` talk over mutual TLS, and hand-crafted
//! certificates (foreign CA, expired, wrong app id) are refused.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::Request, response::IntoResponse};
use common::*;
use dapr_components::{
    ComponentMetadata,
    nameresolution::{Instance, NameResolver, sqlite::SqliteResolver},
};
use dapr_rs_proto::{
    common as dapr_common,
    generated::dapr::proto::internals::v1::{
        self as internals, service_invocation_client::ServiceInvocationClient,
    },
};
use dapr_security::{
    SpiffeId, Svid, SvidStore, TrustAnchors,
    net::{HANDSHAKE_TIMEOUT, tls_channel, tls_incoming},
    tls::{self, PeerAuthorizer},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio_stream::StreamExt;

// ---------- Sentry as a process ----------

struct Sentry {
    child: Child,
    port: u16,
    creds: PathBuf,
    log: PathBuf,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sentry_bin() -> PathBuf {
    let p = Path::new(DAPRD).with_file_name("dapr-sentry");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p dapr-sentry`",
        p.display()
    );
    p
}

impl Sentry {
    /// Starts dapr-sentry (trust domain `localhost`, namespace `default`)
    /// with credentials in `creds` (generated there when empty).
    async fn start(creds: &Path) -> Sentry {
        for attempt in 1..=5 {
            let port = free_port();
            let healthz = free_port();
            let log = creds.with_file_name(format!("sentry-{port}.log"));
            let child = Command::new(sentry_bin())
                .args(["--port", &port.to_string(), "--listen-address", "127.0.0.1"])
                .args(["--healthz-port", &healthz.to_string()])
                .args(["--healthz-listen-address", "127.0.0.1"])
                .args(["--metrics-port", &free_port().to_string()])
                .args(["--metrics-listen-address", "127.0.0.1"])
                .args(["--issuer-credentials", &creds.display().to_string()])
                .args(["--credentials-poll-interval", "200ms"])
                .args(["--trust-domain", "localhost", "--log-level", "debug"])
                .env("NAMESPACE", "default")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn dapr-sentry");
            let mut s = Sentry {
                child,
                port,
                creds: creds.to_owned(),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = request(
                    "GET",
                    &format!("http://127.0.0.1:{healthz}/healthz"),
                    None,
                    &[],
                )
                .await
                    && r.status == 200
                {
                    return s;
                }
                let exited = s.child.try_wait().ok().flatten().is_some();
                if exited || Instant::now() > deadline {
                    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                    if attempt < 5 && text.contains("Address already in use") {
                        break;
                    }
                    panic!("sentry did not become healthy:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        unreachable!("the last attempt panics")
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.creds.join("ca.crt")).expect("ca.crt")
    }

    fn anchors(&self) -> Arc<TrustAnchors> {
        TrustAnchors::from_pem(self.ca_pem().as_bytes()).expect("anchors")
    }

    /// The issuer Sentry signs with, to craft certificates in tests.
    fn issuer(&self) -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
        let cert = std::fs::read_to_string(self.creds.join("issuer.crt")).unwrap();
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(self.creds.join("issuer.key")).unwrap())
                .unwrap();
        let der = dapr_security::pem::parse_certs(cert.as_bytes()).unwrap()[0].clone();
        (Issuer::from_ca_cert_pem(&cert, key).unwrap(), der)
    }
}

// ---------- certificates ----------

fn ca_params(org: &str, pathlen: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.is_ca = IsCa::Ca(match pathlen {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(600);
    p.not_after = now + Duration::from_secs(30 * 24 * 3600);
    p
}

/// A root: (issuer handle, PEM).
fn root(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = ca_params(name, None);
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

/// Sentry's issuer signed by `root`: (cert PEM, key PEM).
fn sentry_issuer(root: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = ca_params("spiffe://localhost/ns/default/dapr-sentry", Some(0));
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, root).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A workload SVID for `id`, valid from `nb` to `na` (relative to now, in
/// seconds), signed by `issuer` whose certificate is `chain`.
fn svid(
    issuer: &Issuer<'static, KeyPair>,
    chain: &[CertificateDer<'static>],
    id: &str,
    nb: i64,
    na: i64,
) -> Arc<SvidStore> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::seconds(nb);
    p.not_after = now + time::Duration::seconds(na);
    let cert = p.signed_by(&key, issuer).unwrap();
    let mut certs = vec![cert.der().clone()];
    certs.extend_from_slice(chain);
    let store = SvidStore::new();
    store.set(
        Svid::new(
            certs,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap(),
    );
    store
}

// ---------- app and sidecars ----------

/// Echoes the caller headers the app received.
async fn start_app() -> SocketAddr {
    async fn echo(req: Request) -> impl IntoResponse {
        let h = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        axum::Json(serde_json::json!({
            "path": req.uri().path(),
            "caller": h("dapr-caller-app-id"),
            "caller_ns": h("dapr-caller-namespace"),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(echo)).await;
    });
    addr
}

const ACL: &str = "  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /allowed/**\n        httpVerb: ['*']\n        action: allow\n";

struct Env {
    dir: tempfile::TempDir,
    sentry: Sentry,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        let sentry = Sentry::start(&creds).await;
        Env { dir, sentry }
    }

    fn nr_db(&self) -> PathBuf {
        self.dir.path().join("nr.db")
    }

    /// A Configuration with the shared SQLite name resolution and `extra`.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: {}\n{extra}",
                self.nr_db().display()
            ),
        )
        .unwrap();
        path
    }

    /// daprd with --enable-mtls; anchors from the environment unless
    /// `anchors_file` is given. Returns it with its internal port.
    async fn daprd(
        &self,
        app_id: &str,
        app: Option<SocketAddr>,
        config_extra: &str,
        anchors_file: Option<&Path>,
    ) -> (Daprd, u16) {
        let internal = free_port();
        let mut b = DaprdBuilder::new(app_id)
            .arg("--enable-mtls")
            .arg("--sentry-address")
            .arg(self.sentry.address())
            .arg("--dapr-internal-grpc-port")
            .arg(internal.to_string())
            .arg("--config")
            .arg(self.config(app_id, config_extra).display().to_string());
        if let Some(a) = app {
            b = b.arg("--app-port").arg(a.port().to_string());
        }
        b = match anchors_file {
            Some(f) => b.arg("--trust-anchors-file").arg(f.display().to_string()),
            None => b.env("DAPR_TRUST_ANCHORS", &self.sentry.ca_pem()),
        };
        (b.start().await, internal)
    }
}

fn spiffe(app: &str) -> String {
    format!("spiffe://public/ns/default/{app}")
}

/// One `CallLocal` straight to a sidecar's internal port over mTLS with
/// `client` as the client certificate and `claimed` as caller metadata.
async fn call_local(
    port: u16,
    anchors: Arc<TrustAnchors>,
    client: &Arc<SvidStore>,
    expect_server: &str,
    method: &str,
    claimed: &str,
) -> Result<serde_json::Value, String> {
    let cfg = tls::client_config(
        Some(client),
        anchors,
        PeerAuthorizer::exact(SpiffeId::parse(expect_server).unwrap()),
    )
    .unwrap();
    let channel = tls_channel(
        &format!("127.0.0.1:{port}"),
        Arc::new(cfg),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        "dapr-caller-app-id".to_owned(),
        internals::ListStringValue {
            values: vec![claimed.to_owned()],
        },
    );
    let req = internals::InternalInvokeRequest {
        ver: internals::ApiVersion::V1 as i32,
        metadata,
        message: Some(dapr_common::InvokeRequest {
            method: method.to_owned(),
            data: None,
            content_type: String::new(),
            http_extension: Some(dapr_common::HttpExtension {
                verb: dapr_common::http_extension::Verb::Get as i32,
                querystring: String::new(),
            }),
        }),
        actor: None,
    };
    let resp = ServiceInvocationClient::new(channel)
        .call_local(req)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let data = resp
        .message
        .and_then(|m| m.data)
        .map(|a| a.value)
        .unwrap_or_default();
    serde_json::from_slice(&data).map_err(|e| format!("not JSON: {e}"))
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_invoke_over_mtls_with_verified_identity_for_acl() {
    let env = Env::new().await;
    let app = start_app().await;
    let (callee, callee_port) = env.daprd("callee", Some(app), ACL, None).await;
    let (caller, _) = env.daprd("caller", None, "", None).await;

    // Allowed by the ACL for the verified identity `caller`.
    let r = request(
        "GET",
        &caller.url("/v1.0/invoke/callee/method/allowed/x"),
        None,
        &[("dapr-caller-app-id", "admin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), callee.logs());
    let j = r.json();
    assert_eq!(j["caller"], "caller");
    assert_eq!(j["caller_ns"], "default");
    // Denied operation.
    let r = http(
        "GET",
        &caller.url("/v1.0/invoke/callee/method/denied/x"),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");

    // The internal port speaks only mTLS: plaintext h2c gets nowhere.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{callee_port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(ch) = plain {
        let res = ServiceInvocationClient::new(ch)
            .call_local(internals::InternalInvokeRequest::default())
            .await;
        assert!(res.is_err(), "plaintext call succeeded: {res:?}");
    }

    // A direct client with a valid certificate for "mallory" claiming to be
    // "caller" in metadata is judged as mallory: denied.
    let (issuer, issuer_der) = env.sentry.issuer();
    let anchors = env.sentry.anchors();
    let mallory = svid(
        &issuer,
        std::slice::from_ref(&issuer_der),
        &spiffe("mallory"),
        -60,
        3600,
    );
    let err = call_local(
        callee_port,
        anchors.clone(),
        &mallory,
        &spiffe("callee"),
        "allowed/x",
        "caller",
    )
    .await
    .expect_err("spoofed caller metadata must not pass the ACL");
    assert!(err.contains("PermissionDenied"), "{err}");

    // A real `caller` certificate claiming "admin": allowed as caller, and
    // the app sees the verified id, not the claim.
    let real = svid(&issuer, &[issuer_der], &spiffe("caller"), -60, 3600);
    let j = call_local(
        callee_port,
        anchors,
        &real,
        &spiffe("callee"),
        "allowed/y",
        "admin",
    )
    .await
    .expect("verified caller allowed");
    assert_eq!(j["caller"], "caller");
    assert_eq!(j["path"], "/allowed/y");
    drop(callee);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_foreign_expired_and_wrong_identity_certificates() {
    let env = Env::new().await;
    let app = start_app().await;
    let (_callee, callee_port) = env.daprd("callee", Some(app), ACL, None).await;
    let (caller, _) = env.daprd("caller", None, "", None).await;
    let (issuer, issuer_der) = env.sentry.issuer();
    let anchors = env.sentry.anchors();

    // Control: a valid certificate for `caller` from Sentry's issuer works.
    let good = svid(
        &issuer,
        std::slice::from_ref(&issuer_der),
        &spiffe("caller"),
        -60,
        3600,
    );
    call_local(
        callee_port,
        anchors.clone(),
        &good,
        &spiffe("callee"),
        "allowed/ok",
        "caller",
    )
    .await
    .expect("valid certificate accepted");

    // Another trust domain's CA.
    let (foreign, foreign_pem) = root("evil.example");
    let foreign_der = dapr_security::pem::parse_certs(foreign_pem.as_bytes()).unwrap()[0].clone();
    let alien = svid(
        &foreign,
        &[foreign_der],
        "spiffe://evil.example/ns/default/caller",
        -60,
        3600,
    );
    let err = call_local(
        callee_port,
        anchors.clone(),
        &alien,
        &spiffe("callee"),
        "allowed/ok",
        "caller",
    )
    .await
    .expect_err("foreign CA must be refused");
    assert!(
        !err.contains("PermissionDenied"),
        "refused at the handshake, not by ACL: {err}"
    );

    // Expired, from the right issuer.
    let expired = svid(
        &issuer,
        std::slice::from_ref(&issuer_der),
        &spiffe("caller"),
        -7200,
        -3600,
    );
    call_local(
        callee_port,
        anchors.clone(),
        &expired,
        &spiffe("callee"),
        "allowed/ok",
        "caller",
    )
    .await
    .expect_err("expired certificate must be refused");

    // Outbound: an address registered as `victim` whose server certificate
    // (valid, same CA) is for `impostor`: the caller refuses the handshake.
    let rogue_store = svid(
        &issuer,
        std::slice::from_ref(&issuer_der),
        &spiffe("impostor"),
        -60,
        3600,
    );
    let server_cfg =
        tls::server_config(&rogue_store, anchors.clone(), PeerAuthorizer::any()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = listener.local_addr().unwrap();
    let established = Arc::new(AtomicUsize::new(0));
    {
        let established = established.clone();
        let mut incoming = tls_incoming(listener, Arc::new(server_cfg), HANDSHAKE_TIMEOUT);
        tokio::spawn(async move {
            while let Some(s) = incoming.next().await {
                if s.is_ok() {
                    established.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let mut md = ComponentMetadata::new("nameresolution", "test");
    md.insert("connectionString", env.nr_db().display().to_string());
    let registry = SqliteResolver::open(&md).unwrap();
    registry
        .register(&Instance {
            app_id: "victim".into(),
            namespace: String::new(),
            address: rogue_addr.to_string(),
        })
        .await
        .unwrap();
    let r = http("GET", &caller.url("/v1.0/invoke/victim/method/x"), "").await;
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert_eq!(
        established.load(Ordering::SeqCst),
        0,
        "handshake with an impostor completed"
    );
    // The same server with the certificate of `victim` completes handshakes,
    // so the refusal above was about the identity.
    let victim = svid(&issuer, &[issuer_der], &spiffe("victim"), -60, 3600);
    rogue_store.set(
        Svid::new(
            victim.current().unwrap().chain().to_vec(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                dapr_security::pem::parse_private_key(
                    victim.current().unwrap().private_key_pem().as_bytes(),
                )
                .unwrap()
                .secret_der()
                .to_vec(),
            )),
        )
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while established.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no handshake with the right identity"
        );
        let _ = request(
            "GET",
            &caller.url("/v1.0/invoke/victim/method/x"),
            None,
            &[],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = registry.unregister().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_fails_clearly_when_sentry_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca) = root("localhost");
    let dead = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut d = DaprdBuilder::new("lonely")
        .arg("--enable-mtls")
        .arg("--sentry-address")
        .arg(&dead)
        .arg("--data-dir")
        .arg(dir.path().display().to_string())
        .env("DAPR_TRUST_ANCHORS", &ca)
        .env("DAPR_RS_SENTRY_WAIT_SECONDS", "2")
        .no_wait()
        .start()
        .await;
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}",
        started.elapsed()
    );
    let logs = d.logs();
    assert!(logs.contains(&dead), "address not named:\n{logs}");
    assert!(logs.contains("Sentry"), "{logs}");

    // Missing anchors are named too.
    let mut d = DaprdBuilder::new("lonely")
        .arg("--enable-mtls")
        .arg("--sentry-address")
        .arg(&dead)
        .arg("--data-dir")
        .arg(dir.path().display().to_string())
        .no_wait()
        .start()
        .await;
    assert!(!d.wait_exit(Duration::from_secs(20)).success());
    assert!(d.logs().contains("DAPR_TRUST_ANCHORS"), "{}", d.logs());
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Root and issuer rotation while traffic flows: the sidecars reload the
/// anchor bundle from `--trust-anchors-file`, a sidecar started after the
/// rotation holds a certificate from the new root, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_rotation_with_traffic_has_no_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let (root_a, root_a_pem) = root("localhost");
    let (issuer_a, issuer_a_key) = sentry_issuer(&root_a);
    std::fs::write(creds.join("ca.crt"), &root_a_pem).unwrap();
    std::fs::write(creds.join("issuer.crt"), &issuer_a).unwrap();
    std::fs::write(creds.join("issuer.key"), &issuer_a_key).unwrap();
    let anchors_file = dir.path().join("anchors.pem");
    std::fs::write(&anchors_file, &root_a_pem).unwrap();
    let env = Env {
        sentry: Sentry::start(&creds).await,
        dir,
    };

    let app = start_app().await;
    let (callee, _) = env
        .daprd("callee", Some(app), "", Some(&anchors_file))
        .await;
    let (caller, _) = env.daprd("caller", None, "", Some(&anchors_file)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = caller.url("/v1.0/invoke/callee/method/ping");
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match request("GET", &url, None, &[]).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.text())),
                    Err(e) => failed.lock().unwrap().push(e),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // New root B and issuer B; the bundle trusts both roots.
    let (root_b, root_b_pem) = root("localhost");
    let (issuer_b, issuer_b_key) = sentry_issuer(&root_b);
    let bundle = format!("{root_a_pem}{root_b_pem}");
    write_atomic(&anchors_file, bundle.as_bytes());
    write_atomic(&creds.join("ca.crt"), bundle.as_bytes());
    write_atomic(&creds.join("issuer.key"), issuer_b_key.as_bytes());
    write_atomic(&creds.join("issuer.crt"), issuer_b.as_bytes());

    // The caller reloads the bundle (polled every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !caller.logs().contains("trust anchors reloaded") {
        assert!(
            Instant::now() < deadline,
            "caller never reloaded anchors:\n{}",
            caller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A sidecar started now gets its certificate from issuer B (Sentry
    // switched within its 200 ms poll) and is reachable from the caller,
    // whose own certificate is still from root A.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (callee2, callee2_port) = env
        .daprd("callee2", Some(app), "", Some(&anchors_file))
        .await;
    let r = http("GET", &caller.url("/v1.0/invoke/callee2/method/after"), "").await;
    assert_eq!(
        r.status,
        200,
        "{}\ncaller:\n{}\ncallee2:\n{}",
        r.text(),
        caller.logs(),
        callee2.logs()
    );
    assert_eq!(r.json()["caller"], "caller");
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "too little traffic: {}",
        ok.load(Ordering::SeqCst)
    );
    // callee2's serving certificate chains to root B alone.
    let b_only = TrustAnchors::from_pem(root_b_pem.as_bytes()).unwrap();
    let issuer_b_der = dapr_security::pem::parse_certs(issuer_b.as_bytes()).unwrap();
    let client_b = svid(
        &Issuer::from_ca_cert_pem(&issuer_b, KeyPair::from_pem(&issuer_b_key).unwrap()).unwrap(),
        &issuer_b_der,
        &spiffe("caller"),
        -60,
        3600,
    );
    call_local(
        callee2_port,
        b_only,
        &client_b,
        &spiffe("callee2"),
        "after2",
        "caller",
    )
    .await
    .expect("callee2 holds a root-B certificate");
    drop(callee);
}

/// A gRPC app answering with the caller id it was given.
struct WhoCalls;

#[tonic::async_trait]
impl dapr_rs_proto::server::app_callback_server::AppCallback for WhoCalls {
    async fn on_invoke(
        &self,
        req: tonic::Request<dapr_common::InvokeRequest>,
    ) -> Result<tonic::Response<dapr_common::InvokeResponse>, tonic::Status> {
        let caller = req
            .metadata()
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(tonic::Response::new(dapr_common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: format!("{}:{caller}", req.get_ref().method).into_bytes(),
            }),
            content_type: "text/plain".into(),
        }))
    }
}

/// gRPC proxying by `dapr-app-id` crosses the sidecars over mTLS, and the
/// callee's ACL sees the verified caller even if metadata claims another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_goes_over_mtls_with_the_verified_caller() {
    use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
    let env = Env::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                dapr_rs_proto::server::app_callback_server::AppCallbackServer::new(WhoCalls),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    // Only `caller` may call, and only OnInvoke.
    let acl = "  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /dapr.proto.runtime.v1.AppCallback/OnInvoke\n        action: allow\n";
    let internal = free_port();
    let _callee = DaprdBuilder::new("callee")
        .arg("--enable-mtls")
        .arg("--sentry-address")
        .arg(env.sentry.address())
        .arg("--dapr-internal-grpc-port")
        .arg(internal.to_string())
        .arg("--config")
        .arg(env.config("callee", acl).display().to_string())
        .arg("--app-port")
        .arg(app_port.to_string())
        .arg("--app-protocol")
        .arg("grpc")
        .env("DAPR_TRUST_ANCHORS", &env.sentry.ca_pem())
        .start()
        .await;
    let (caller, _) = env.daprd("caller", None, "", None).await;
    let (outsider, _) = env.daprd("outsider", None, "", None).await;

    let call = |port: u16, claim: Option<&'static str>| async move {
        let mut client = AppCallbackClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(dapr_common::InvokeRequest {
            method: "m".into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("dapr-app-id", "callee".parse().unwrap());
        if let Some(c) = claim {
            req.metadata_mut()
                .insert("dapr-caller-app-id", c.parse().unwrap());
        }
        client.on_invoke(req).await.map(|r| {
            String::from_utf8_lossy(&r.into_inner().data.unwrap_or_default().value).into_owned()
        })
    };
    assert_eq!(call(caller.grpc_port, None).await.unwrap(), "m:caller");
    let err = call(outsider.grpc_port, Some("caller")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}
