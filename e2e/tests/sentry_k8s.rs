//! The real `dapr-sentry` binary in Kubernetes mode against the real
//! kube-apiserver (tier 1 is enough: pods only need to exist, not run).
//!
//! * `kubernetes_validator_*`: tokens minted with TokenRequest, bound to pods
//!   and carrying Sentry's audience, go through `CA/SignCertificate`. The
//!   pod's own token gets a certificate for exactly its SPIFFE id; every
//!   token that does not prove the requested identity is refused with a
//!   clear gRPC status, and no token is ever written to Sentry's log.
//! * `trust_bundle_*`: the first start creates the Secret and ConfigMap
//!   `dapr-trust-bundle`; later starts reuse them (same root), restore a
//!   deleted ConfigMap, and a partial Secret stops Sentry without being
//!   overwritten.
//!
//! Build the binary first: `cargo build -p dapr-sentry`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dapr_e2e::{Cluster, E2eError, eventually, profile_dir};
use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_client::CaClient,
    sign_certificate_request::TokenValidator,
};
use dapr_security::{
    SpiffeId, TrustAnchors,
    net::tls_channel,
    pem::parse_certs,
    tls::{PeerAuthorizer, SpiffeServerVerifier, client_config},
};
use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
    },
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use serde_json::json;
use tonic::{Code, transport::Channel};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Sentry's control-plane trust domain in these tests.
const TD: &str = "cluster.local";
const BUNDLE: &str = "dapr-trust-bundle";

fn sentry_bin() -> PathBuf {
    let b = profile_dir().join("dapr-sentry");
    assert!(
        b.is_file(),
        "{} is not built; run `cargo build -p dapr-sentry` first",
        b.display()
    );
    b
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `dapr-sentry` process, killed on drop.
struct Sentry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentry {
    /// Starts Sentry in Kubernetes mode with `namespace` as its control-plane
    /// namespace. `kubeconfig_env` passes the kubeconfig as `$KUBECONFIG`
    /// instead of `--kubeconfig`.
    fn spawn(cluster: &Cluster, namespace: &str, dir: &Path, kubeconfig_env: bool) -> Sentry {
        let port = free_port();
        let log = dir.join(format!("sentry-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(sentry_bin());
        cmd.env_clear()
            .env("NAMESPACE", namespace)
            .args([
                "--mode=kubernetes".to_owned(),
                format!("--trust-domain={TD}"),
                "--listen-address=127.0.0.1".to_owned(),
                format!("--port={port}"),
                "--healthz-listen-address=127.0.0.1".to_owned(),
                format!("--healthz-port={}", free_port()),
                "--enable-metrics=false".to_owned(),
                "--log-level=debug".to_owned(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        if kubeconfig_env {
            cmd.env("KUBECONFIG", cluster.kubeconfig());
        } else {
            cmd.arg(format!("--kubeconfig={}", cluster.kubeconfig().display()));
        }
        Sentry {
            child: cmd.spawn().expect("spawn dapr-sentry"),
            port,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the CA port accepts connections (it opens after the
    /// credentials are loaded or created).
    async fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().ok().flatten() {
                return Err(format!("dapr-sentry exited ({s}):\n{}", self.log_text()));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("dapr-sentry not serving:\n{}", self.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A gRPC channel that verifies Sentry's own identity against `anchors`.
    fn channel(&self, namespace: &str, anchors: &[u8]) -> Channel {
        let anchors = TrustAnchors::from_pem(anchors).expect("trust anchors");
        let id = SpiffeId::sentry(TD, namespace).expect("sentry id");
        let cfg = client_config(None, anchors, PeerAuthorizer::exact(id)).expect("client config");
        tls_channel(
            &format!("127.0.0.1:{}", self.port),
            Arc::new(cfg),
            Duration::from_secs(5),
        )
        .expect("channel")
    }
}

/// The ConfigMap's `ca.crt`, once Sentry has written it.
async fn configmap_anchors(client: &Client, ns: &str) -> Result<String, E2eError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually(
        "the dapr-trust-bundle ConfigMap",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let cms = cms.clone();
            async move {
                Ok::<_, kube::Error>(
                    cms.get_opt(BUNDLE)
                        .await?
                        .and_then(|c| c.data)
                        .and_then(|d| d.get("ca.crt").cloned()),
                )
            }
        },
    )
    .await
}

async fn create_sa(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}
    }))
    .expect("service account");
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .map(|_| ())
}

/// A pod that never runs (its node selector matches no node), which is all
/// the validator needs.
async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    sa: &str,
    annotations: &[(&str, &str)],
) -> Result<Pod, kube::Error> {
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": ann},
        "spec": {"serviceAccountName": sa, "automountServiceAccountToken": false,
                 "nodeSelector": {"dapr-rs-e2e/never": "scheduled"},
                 "containers": [{"name": "app", "image": "dapr-rs/e2e-app:dev", "imagePullPolicy": "Never"}]}
    }))
    .expect("pod");
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
}

async fn delete_pod(client: &Client, ns: &str, name: &str) -> TestResult {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await?;
    eventually(
        "the pod to be gone",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let pods = pods.clone();
            async move { Ok::<_, kube::Error>(pods.get_opt(name).await?.is_none().then_some(())) }
        },
    )
    .await?;
    Ok(())
}

/// Sends the never-reviewed `tokens` of a pod that is gone, one per
/// 500 ms, each asking for one of `ids`: every one is refused (by Sentry's
/// pod checks while the apiserver still authenticates it), until the
/// apiserver itself refuses one as invalidated.
async fn until_apiserver_refuses(
    ch: &Channel,
    ns: &str,
    ids: &[&str],
    tokens: &[String],
    what: &str,
) {
    for (n, t) in tokens.iter().enumerate() {
        let id = ids[n % ids.len()];
        let r = sign(ch, id, ns, t).await;
        let by_apiserver = matches!(&r, Err(s) if s.code() == Code::Unauthenticated);
        assert_refused_any(
            &format!("unused token #{n} of a {what}, asking for {id}"),
            r,
            &[Code::PermissionDenied, Code::Unauthenticated],
            t,
        );
        if by_apiserver {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "the apiserver still authenticated tokens of a {what} after {} s",
        tokens.len() / 2
    );
}

/// A TokenRequest token for `ns/sa`, bound to `pod` when given.
async fn mint(
    client: &Client,
    ns: &str,
    sa: &str,
    pod: Option<&Pod>,
    audience: &str,
) -> Result<String, kube::Error> {
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            bound_object_ref: pod.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
        },
        ..Default::default()
    };
    let minted: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &tr)
        .await?;
    Ok(minted.status.map(|s| s.token).unwrap_or_default())
}

/// `token` with its time claims replaced and re-signed (RS256, `openssl`)
/// with the test cluster's service-account signing key: the apiserver's own
/// key, so the only thing that differs from a TokenRequest token is time.
fn resign_with_times(
    cluster: &Cluster,
    token: &str,
    iat: i64,
    exp: i64,
) -> Result<String, Box<dyn std::error::Error>> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
    let key = cluster
        .kubeconfig()
        .parent()
        .ok_or("kubeconfig has no directory")?
        .join("pki/sa.key");
    let mut parts = token.split('.');
    let (header, payload) = (
        parts.next().ok_or("no header")?,
        parts.next().ok_or("no payload")?,
    );
    let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload)?)?;
    claims["iat"] = json!(iat);
    claims["nbf"] = json!(iat);
    claims["exp"] = json!(exp);
    let input = format!("{header}.{}", B64.encode(serde_json::to_vec(&claims)?));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("openssl: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(format!("{input}.{}", B64.encode(out.stdout)))
}

/// SignCertificate with a fresh P-256 CSR (no SANs, as daprd sends).
async fn sign(
    channel: &Channel,
    id: &str,
    ns: &str,
    token: &str,
) -> Result<SignCertificateResponse, tonic::Status> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let req = SignCertificateRequest {
        id: id.into(),
        namespace: ns.into(),
        token: token.into(),
        certificate_signing_request: csr.into_bytes(),
        token_validator: TokenValidator::Kubernetes as i32,
        ..Default::default()
    };
    CaClient::new(channel.clone())
        .sign_certificate(req)
        .await
        .map(|r| r.into_inner())
}

/// The issued chain verifies against `anchors` and names exactly `expected`;
/// returns the leaf's SPIFFE id.
fn verify_issued(resp: &SignCertificateResponse, anchors: &str, expected: &str) -> String {
    assert_eq!(
        resp.trust_chain_certificates,
        vec![anchors.as_bytes().to_vec()],
        "the response's trust chain is the ConfigMap's ca.crt"
    );
    let chain = parse_certs(&resp.workload_certificate).expect("workload certificate PEM");
    let leaf_id = SpiffeId::from_cert_der(chain[0].as_ref())
        .expect("SPIFFE URI SAN")
        .to_string();
    assert_eq!(leaf_id, expected);
    let verifier = SpiffeServerVerifier::new(
        TrustAnchors::from_pem(anchors.as_bytes()).expect("anchors"),
        PeerAuthorizer::exact(SpiffeId::parse(expected).expect("expected id")),
    );
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from("unused").expect("name"),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("issued chain does not verify for {expected}: {e}"));
    let until = resp.valid_until.as_ref().expect("valid_until").seconds;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (until - now - 24 * 3600).abs() < 120,
        "workload TTL is 24h: valid_until {until}, now {now}"
    );
    leaf_id
}

/// A refusal with `code`, a non-empty message that does not echo the token.
fn assert_refused(
    what: &str,
    r: Result<SignCertificateResponse, tonic::Status>,
    code: Code,
    token: &str,
) {
    assert_refused_any(what, r, &[code], token)
}

/// Refusals asserted so far (each one must be in Sentry's log).
static REFUSALS: AtomicUsize = AtomicUsize::new(0);

/// A refusal with one of `codes`.
fn assert_refused_any(
    what: &str,
    r: Result<SignCertificateResponse, tonic::Status>,
    codes: &[Code],
    token: &str,
) {
    match r {
        Ok(resp) => {
            let ids: Vec<String> = parse_certs(&resp.workload_certificate)
                .unwrap_or_default()
                .iter()
                .take(1)
                .filter_map(|c| SpiffeId::from_cert_der(c.as_ref()).ok())
                .map(|i| i.to_string())
                .collect();
            panic!("{what}: a certificate was issued for {ids:?}");
        }
        Err(s) => {
            assert!(codes.contains(&s.code()), "{what}: {s:?}");
            assert!(!s.message().is_empty(), "{what}: empty message");
            if token.len() > 16 {
                assert!(!s.message().contains(token), "{what}: token echoed");
            }
            REFUSALS.fetch_add(1, Ordering::SeqCst);
            println!("refused ({what}): {:?} {}", s.code(), s.message());
        }
    }
}

#[tokio::test]
async fn kubernetes_validator_issues_only_what_the_token_proves() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let client = cluster.client();
    let dir = tempfile::tempdir()?;
    let cp_ns = cluster.namespace("sentry-cp")?;
    let apps_ns = cluster.namespace("sentry-apps")?;
    let other_ns = cluster.namespace("sentry-other")?;
    let (cp, apps, other) = (cp_ns.name(), apps_ns.name(), other_ns.name());

    let mut sentry = Sentry::spawn(&cluster, cp, dir.path(), false);
    sentry.wait_serving().await?;
    let anchors = configmap_anchors(&client, cp).await?;
    let ch = sentry.channel(cp, anchors.as_bytes());
    let aud = format!("spiffe://{TD}/ns/{cp}/dapr-sentry");

    for (ns, sa) in [
        (apps, "app1-sa"),
        (apps, "other-sa"),
        (other, "app1-sa"),
        (cp, "dapr-operator"),
    ] {
        create_sa(&client, ns, sa).await?;
    }
    let app_id = |id: &'static str| [("dapr.io/app-id", id)];
    let app1 = create_pod(&client, apps, "app1", "app1-sa", &app_id("app1")).await?;
    let app2 = create_pod(&client, apps, "app2", "other-sa", &app_id("app2")).await?;
    let other_app1 = create_pod(&client, other, "app1", "app1-sa", &app_id("app1")).await?;
    let operator_ann = [("dapr.io/control-plane", "operator")];
    let fake_op = create_pod(&client, apps, "fake-operator", "app1-sa", &operator_ann).await?;
    let impostor = create_pod(
        &client,
        apps,
        "impostor",
        "app1-sa",
        &app_id("dapr-operator"),
    )
    .await?;
    let cp_op = create_pod(
        &client,
        cp,
        "dapr-operator-0",
        "dapr-operator",
        &operator_ann,
    )
    .await?;
    let doomed = create_pod(&client, apps, "doomed", "app1-sa", &app_id("app1")).await?;
    let reborn = create_pod(&client, apps, "reborn", "app1-sa", &app_id("app1")).await?;

    let t_app1 = mint(&client, apps, "app1-sa", Some(&app1), &aud).await?;
    let t_app1_legacy = mint(&client, apps, "app1-sa", Some(&app1), "dapr.io/sentry").await?;
    let t_app2 = mint(&client, apps, "other-sa", Some(&app2), &aud).await?;
    let t_other_ns = mint(&client, other, "app1-sa", Some(&other_app1), &aud).await?;
    let t_fake_op = mint(&client, apps, "app1-sa", Some(&fake_op), &aud).await?;
    let t_impostor = mint(&client, apps, "app1-sa", Some(&impostor), &aud).await?;
    let t_cp = mint(&client, cp, "dapr-operator", Some(&cp_op), &aud).await?;
    let t_doomed = mint(&client, apps, "app1-sa", Some(&doomed), &aud).await?;
    let t_reborn = mint(&client, apps, "app1-sa", Some(&reborn), &aud).await?;
    let t_unbound = mint(&client, apps, "app1-sa", None, &aud).await?;
    let other_aud = format!("spiffe://{TD}/ns/{cp}/not-sentry");
    let t_wrong_aud = mint(&client, apps, "app1-sa", Some(&app1), &other_aud).await?;
    let tokens = [
        &t_app1,
        &t_app1_legacy,
        &t_app2,
        &t_other_ns,
        &t_fake_op,
        &t_impostor,
        &t_cp,
        &t_doomed,
        &t_reborn,
        &t_unbound,
        &t_wrong_aud,
    ];
    assert!(tokens.iter().all(|t| t.split('.').count() == 3));

    // The apiserver itself refuses to bind a token of one service account to
    // a pod running as another, so "another service account" reaches Sentry
    // only as a token of that account for its own pod (below).
    let cross = mint(&client, apps, "other-sa", Some(&app1), &aud).await;
    assert!(
        cross.is_err(),
        "TokenRequest bound a token of other-sa to a pod of app1-sa"
    );

    // --- issued: exactly the identity the token proves ----------------------
    let app1_id = format!("spiffe://public/ns/{apps}/app1");
    let r = sign(&ch, "app1", apps, &t_app1).await?;
    verify_issued(&r, &anchors, &app1_id);
    // Dapr's legacy audience is accepted too.
    let r = sign(&ch, "app1", apps, &t_app1_legacy).await?;
    verify_issued(&r, &anchors, &app1_id);
    // The app1 pod of the other namespace gets its own namespace's id.
    let r = sign(&ch, "app1", other, &t_other_ns).await?;
    verify_issued(&r, &anchors, &format!("spiffe://public/ns/{other}/app1"));
    // A control-plane pod in the control-plane namespace: control-plane id
    // in Sentry's trust domain.
    let r = sign(&ch, "dapr-operator", cp, &t_cp).await?;
    verify_issued(
        &r,
        &anchors,
        &format!("spiffe://{TD}/ns/{cp}/dapr-operator"),
    );

    // --- refused ------------------------------------------------------------
    let denied = Code::PermissionDenied;
    let unauth = Code::Unauthenticated;
    // A token for another pod (app2, annotated app2) asking for app1.
    assert_refused(
        "token of another pod",
        sign(&ch, "app1", apps, &t_app2).await,
        denied,
        &t_app2,
    );
    // A token from another namespace asking for this namespace's app1.
    assert_refused(
        "token of another namespace",
        sign(&ch, "app1", apps, &t_other_ns).await,
        denied,
        &t_other_ns,
    );
    assert_refused(
        "app1's token asking for the other namespace",
        sign(&ch, "app1", other, &t_app1).await,
        denied,
        &t_app1,
    );
    // Another service account: other-sa's token (for its own pod) for app1,
    // and app1-sa's own token when it is bound to no pod at all.
    assert_refused(
        "token of another service account",
        sign(&ch, "app1", apps, &t_app2).await,
        denied,
        &t_app2,
    );
    assert_refused(
        "token bound to no pod",
        sign(&ch, "app1", apps, &t_unbound).await,
        denied,
        &t_unbound,
    );
    // The pod's own token, an app id its annotation does not carry.
    for id in ["app2", "app1x", "reborn"] {
        assert_refused(
            &format!("app id {id} not on the pod"),
            sign(&ch, id, apps, &t_app1).await,
            denied,
            &t_app1,
        );
    }
    // Control-plane ids outside the control-plane namespace.
    assert_refused(
        "control-plane annotation outside the control-plane namespace",
        sign(&ch, "dapr-operator", apps, &t_fake_op).await,
        denied,
        &t_fake_op,
    );
    assert_refused(
        "app id annotation naming a control-plane service",
        sign(&ch, "dapr-operator", apps, &t_impostor).await,
        denied,
        &t_impostor,
    );
    assert_refused(
        "app token asking for dapr-sentry",
        sign(&ch, "dapr-sentry", apps, &t_app1).await,
        denied,
        &t_app1,
    );
    assert_refused(
        "app token asking for a control-plane id in the control-plane namespace",
        sign(&ch, "dapr-operator", cp, &t_app1).await,
        denied,
        &t_app1,
    );
    // Tokens the apiserver does not authenticate for Sentry.
    assert_refused(
        "token for another audience",
        sign(&ch, "app1", apps, &t_wrong_aud).await,
        unauth,
        &t_wrong_aud,
    );
    // One signature character changed well before the end (the last one
    // may carry only padding bits).
    let at = t_app1.len() - 10;
    let flipped = if t_app1.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flipped}{}", &t_app1[..at], &t_app1[at + 1..]);
    for (what, t) in [
        ("garbage token", "garbage"),
        ("three garbage segments", "a.b.c"),
        ("empty token", ""),
        ("token with a tampered signature", tampered.as_str()),
    ] {
        assert_refused(what, sign(&ch, "app1", apps, t).await, unauth, t);
    }

    // Tokens of pods that are gone. TokenRequest will not mint tokens shorter
    // than 600 s, so instead of waiting for an expiry the token's pod is
    // deleted: the apiserver then invalidates a bound token exactly as it
    // does an expired one (TokenReview: not authenticated). It does so only
    // once its pod informer has seen the deletion (seconds on a loaded
    // machine), and it caches successful reviews for 10 s, so for a while
    // such a token still passes review: then Sentry's own pod lookup (pod
    // gone, or another UID) must refuse it. Each pod has one token used
    // while it lived and spare tokens never reviewed, sent one per 500 ms
    // after the deletion until the apiserver itself refuses one.
    let spares = |pod: Pod| {
        let (client, aud) = (client.clone(), aud.clone());
        async move {
            let mut v = Vec::new();
            for _ in 0..40 {
                v.push(mint(&client, apps, "app1-sa", Some(&pod), &aud).await?);
            }
            Ok::<_, kube::Error>(v)
        }
    };
    let doomed_spares = spares(doomed).await?;
    sign(&ch, "app1", apps, &t_doomed).await?;
    delete_pod(&client, apps, "doomed").await?;
    assert_refused_any(
        "used token whose pod was deleted",
        sign(&ch, "app1", apps, &t_doomed).await,
        &[denied, unauth],
        &t_doomed,
    );
    until_apiserver_refuses(&ch, apps, &["app1"], &doomed_spares, "deleted pod").await;
    // Deleted and re-created under the same name (another UID) by someone
    // who gave the new pod another app id: the old pod's tokens prove
    // neither identity.
    let reborn_spares = spares(reborn).await?;
    sign(&ch, "app1", apps, &t_reborn).await?;
    delete_pod(&client, apps, "reborn").await?;
    create_pod(&client, apps, "reborn", "app1-sa", &app_id("payments")).await?;
    for id in ["payments", "app1"] {
        assert_refused_any(
            &format!("used token of a re-created pod, asking for {id}"),
            sign(&ch, id, apps, &t_reborn).await,
            &[denied, unauth],
            &t_reborn,
        );
    }
    let ids = ["payments", "app1"];
    until_apiserver_refuses(&ch, apps, &ids, &reborn_spares, "re-created pod").await;

    // A really expired token: app1's token with its times moved an hour into
    // the past, signed again with the cluster's service-account key. The
    // same token re-signed with a future expiry is accepted, so the refusal
    // is the expiry alone.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let t_fresh = resign_with_times(&cluster, &t_app1, now - 60, now + 600)?;
    let r = sign(&ch, "app1", apps, &t_fresh).await?;
    verify_issued(&r, &anchors, &app1_id);
    let t_expired = resign_with_times(&cluster, &t_app1, now - 7200, now - 3600)?;
    assert_refused(
        "expired token",
        sign(&ch, "app1", apps, &t_expired).await,
        unauth,
        &t_expired,
    );

    // Sentry logged every refusal, and never a token.
    assert!(sentry.child.try_wait()?.is_none(), "dapr-sentry died");
    let log = sentry.log_text();
    let logged = log.matches("SignCertificate refused").count();
    let refused = REFUSALS.load(Ordering::SeqCst);
    assert_eq!(logged, refused, "refusals logged vs refused:\n{log}");
    let more = [&t_fresh, &t_expired, &tampered];
    let spares = doomed_spares.iter().chain(&reborn_spares);
    for t in tokens.into_iter().chain(more).chain(spares) {
        // The signature part alone would already be a leak.
        let sig = t.rsplit('.').next().unwrap_or(t);
        assert!(!log.contains(sig), "a token is in Sentry's log");
    }
    Ok(())
}

/// A Secret data value as text.
fn data_str(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn trust_bundle_is_created_once_and_reused() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let client = cluster.client();
    let dir = tempfile::tempdir()?;
    let ns_guard = cluster.namespace("sentry-bundle")?;
    let ns = ns_guard.name();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    assert!(secrets.get_opt(BUNDLE).await?.is_none());
    assert!(cms.get_opt(BUNDLE).await?.is_none());

    // A control-plane pod whose token proves dapr-placement, to get real
    // certificates from each start.
    create_sa(&client, ns, "dapr-placement").await?;
    let pod = create_pod(
        &client,
        ns,
        "dapr-placement-server-0",
        "dapr-placement",
        &[("dapr.io/control-plane", "placement")],
    )
    .await?;
    let aud = format!("spiffe://{TD}/ns/{ns}/dapr-sentry");
    let token = mint(&client, ns, "dapr-placement", Some(&pod), &aud).await?;
    let placement_id = format!("spiffe://{TD}/ns/{ns}/dapr-placement");

    // First start: generates the CA into the Secret and the ConfigMap.
    let mut first = Sentry::spawn(&cluster, ns, dir.path(), false);
    first.wait_serving().await?;
    let anchors = configmap_anchors(&client, ns).await?;
    let secret = secrets.get(BUNDLE).await?;
    let (ca, issuer, key) = (
        data_str(&secret, "ca.crt"),
        data_str(&secret, "issuer.crt"),
        data_str(&secret, "issuer.key"),
    );
    assert_eq!(ca, anchors, "ConfigMap ca.crt equals the Secret's");
    assert_eq!(parse_certs(ca.as_bytes())?.len(), 1, "one root");
    assert!(!parse_certs(issuer.as_bytes())?.is_empty());
    assert!(key.contains("PRIVATE KEY"), "issuer.key holds a key");
    assert!(
        !cms.get(BUNDLE)
            .await?
            .data
            .unwrap_or_default()
            .contains_key("issuer.key"),
        "the ConfigMap never carries the key"
    );
    let r = sign(
        &first.channel(ns, ca.as_bytes()),
        "dapr-placement",
        ns,
        &token,
    )
    .await?;
    verify_issued(&r, &ca, &placement_id);
    assert!(
        first
            .log_text()
            .contains("Generated a self-signed CA and stored it in the trust-bundle Secret"),
        "{}",
        first.log_text()
    );
    let secret_rv = secret.metadata.resource_version.clone();
    let cm_rv = cms.get(BUNDLE).await?.metadata.resource_version;
    drop(first);

    // Second start (kubeconfig from $KUBECONFIG this time): same root and
    // issuer, nothing rewritten; its certificates chain to the first root.
    let mut second = Sentry::spawn(&cluster, ns, dir.path(), true);
    second.wait_serving().await?;
    let again = secrets.get(BUNDLE).await?;
    assert_eq!(
        again.metadata.resource_version, secret_rv,
        "Secret rewritten"
    );
    assert_eq!(data_str(&again, "ca.crt"), ca);
    assert_eq!(data_str(&again, "issuer.crt"), issuer);
    assert_eq!(data_str(&again, "issuer.key"), key);
    assert_eq!(cms.get(BUNDLE).await?.metadata.resource_version, cm_rv);
    let r = sign(
        &second.channel(ns, ca.as_bytes()),
        "dapr-placement",
        ns,
        &token,
    )
    .await?;
    verify_issued(&r, &ca, &placement_id);
    assert!(
        second
            .log_text()
            .contains("Root and issuer certs found in the trust-bundle Secret"),
        "{}",
        second.log_text()
    );
    drop(second);

    // A deleted ConfigMap is restored from the Secret at the next start.
    cms.delete(BUNDLE, &DeleteParams::default()).await?;
    let mut third = Sentry::spawn(&cluster, ns, dir.path(), false);
    third.wait_serving().await?;
    assert_eq!(configmap_anchors(&client, ns).await?, ca);
    assert_eq!(
        secrets.get(BUNDLE).await?.metadata.resource_version,
        secret_rv
    );
    drop(third);

    // A Secret holding only some of the keys stops Sentry, untouched.
    let mut partial = secrets.get(BUNDLE).await?;
    partial.data = Some(BTreeMap::from([(
        "ca.crt".to_owned(),
        ByteString(ca.clone().into_bytes()),
    )]));
    secrets
        .replace(BUNDLE, &PostParams::default(), &partial)
        .await?;
    let partial_rv = secrets.get(BUNDLE).await?.metadata.resource_version;
    let mut fourth = Sentry::spawn(&cluster, ns, dir.path(), false);
    let err = fourth
        .wait_serving()
        .await
        .expect_err("Sentry served with a partial Secret");
    assert!(
        err.contains("exited") && err.contains("issuer.crt") && err.contains("issuer.key"),
        "{err}"
    );
    assert_eq!(
        secrets.get(BUNDLE).await?.metadata.resource_version,
        partial_rv,
        "a partial Secret is never overwritten"
    );
    Ok(())
}
