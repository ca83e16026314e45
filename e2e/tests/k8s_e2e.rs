//! The whole Kubernetes story on the real tier-2 cluster, with one Helm
//! release shared by every step (issue 5, items 6, 7 tier 2, 8 and 9):
//!
//! 1. `helm install` of `charts/dapr` (images `dapr-rs/*:dev` from
//!    `target/<profile>`) with a test-made root and issuer in a
//!    cert-manager-shaped Secret (`ca.crt`/`tls.crt`/`tls.key`); time to Ready.
//! 2. Two annotated Deployments of `e2e-app`: injected `daprd` sidecars get
//!    their certificate from Sentry (kubernetes validator, projected token)
//!    and their Components from the operator; time to sidecar Ready.
//! 3. App A invokes app B through its sidecar (mTLS, Kubernetes DNS); B sees
//!    `dapr-caller-app-id`.
//! 4. State through the sidecar with a `kubectl apply`d Component.
//! 5. A new Component applied live (no pod restart).
//! 6. A Component of an unknown type: reported by name, the others work.
//! 7. Issuer rotation by replacing the Secret's contents while A→B traffic
//!    flows: no failed request; Sentry and new workloads use the new issuer.
//! 8. Measurements: control-plane RSS per pod (host /proc, found by container
//!    id), operator RSS with 1000 Components.
//! 9. `helm uninstall` leaves nothing of the release; CRDs stay (Helm never
//!    deletes `crds/`, as with Dapr's chart).
//!
//! Every step runs even when an earlier independent one failed; the summary
//! at the end names each step's outcome, and the test fails if any failed.
//! Build first: `cargo build -p daprd -p dapr-operator -p dapr-sentry
//! -p dapr-injector -p dapr-placement -p dapr-e2e --bins`.
//! `DAPR_RS_K8S_BINS=target/release` takes the control-plane and daprd
//! images from another directory (e.g. release builds for the RSS figures).

mod chart_support;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chart_support::{kind, name, parse_docs, run_helm};
use dapr_e2e::{Cluster, TestNamespace, eventually, image, profile_dir, unique_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONTROL_PLANE: [&str; 5] = [
    "daprd",
    "dapr-operator",
    "dapr-sentry",
    "dapr-injector",
    "dapr-placement",
];
const RELEASE: &str = "dapr-k8s-e2e";
const APP_A: &str = "app-a";
const APP_B: &str = "app-b";

type Res<T> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---------- step bookkeeping ----------

/// Each step's outcome and the measured figures, printed at the end.
#[derive(Default)]
struct Report {
    steps: Vec<(String, Res<String>)>,
    figures: Vec<(String, String)>,
}

impl Report {
    fn record(&mut self, step: &str, outcome: Res<String>) -> bool {
        match &outcome {
            Ok(detail) => eprintln!("=== PASS {step}: {detail}"),
            Err(e) => eprintln!("=== FAIL {step}: {e}"),
        }
        let ok = outcome.is_ok();
        self.steps.push((step.to_owned(), outcome));
        ok
    }

    fn figure(&mut self, what: &str, value: String) {
        eprintln!("=== FIGURE {what}: {value}");
        self.figures.push((what.to_owned(), value));
    }

    fn summary(&self) -> String {
        let mut out = String::from("\n======== k8s e2e summary ========\n");
        for (step, r) in &self.steps {
            match r {
                Ok(d) => out.push_str(&format!("PASS  {step}: {d}\n")),
                Err(e) => out.push_str(&format!("FAIL  {step}: {e}\n")),
            }
        }
        out.push_str("-------- figures --------\n");
        for (what, v) in &self.figures {
            out.push_str(&format!("{what}: {v}\n"));
        }
        out
    }
}

// ---------- helpers ----------

/// The chart's cluster-scoped objects (ClusterRoles, the webhook
/// configuration) have fixed names, as in Dapr, so only one release may exist
/// at a time across test processes: an exclusive lock on a file next to the
/// cluster's state, held for the test's lifetime.
async fn one_release() -> std::fs::File {
    let dir = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/dapr-rs");
    let path = dir.join("chart-release.lock");
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).expect("lock directory");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
        file
    })
    .await
    .expect("lock task")
}

fn helm_k(cluster: &Cluster, args: &[&str]) -> Res<String> {
    let kc = cluster.kubeconfig().to_string_lossy().into_owned();
    let mut full: Vec<&str> = vec!["--kubeconfig", &kc];
    full.extend_from_slice(args);
    run_helm(&full)
}

fn json(text: &str) -> Res<Value> {
    serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))
}

/// Where the control-plane and daprd binaries for the images are.
fn bins_dir() -> PathBuf {
    match std::env::var_os("DAPR_RS_K8S_BINS") {
        Some(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                dapr_e2e::repo_root().join(p)
            }
        }
        _ => profile_dir(),
    }
}

/// One HTTP/1.1 request (connection: close) to `addr`: (status, body).
async fn http(method: &str, addr: &str, path: &str, body: &str) -> Res<(u16, String)> {
    let exchange = async {
        let mut sock = tokio::net::TcpStream::connect(addr).await.map_err(s)?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(req.as_bytes()).await.map_err(s)?;
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw).await.map_err(s)?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| format!("{method} {addr}{path}: no answer within 15 s"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {addr}{path}: bad response {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A 2xx answer's body, or an error naming the status and body.
async fn ok_body(method: &str, addr: &str, path: &str, body: &str) -> Res<String> {
    let (status, text) = http(method, addr, path, body).await?;
    if (200..300).contains(&status) {
        Ok(text)
    } else {
        Err(format!("{method} {path} → {status}: {text}"))
    }
}

// ---------- PKI (the cert-manager-shaped issuer Secret) ----------

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "dapr-rs e2e");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

struct Root {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_root() -> Res<Root> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(s)?;
    let params = ca_params(&unique_name("dapr-e2e-root"), None);
    let pem = params.self_signed(&key).map_err(s)?.pem();
    Ok(Root {
        issuer: Issuer::new(params, key),
        pem,
    })
}

/// An issuer signed by the root: (common name, cert PEM, key PEM, cert DER).
fn new_issuer(root: &Root) -> Res<(String, String, String, Vec<u8>)> {
    let cn = unique_name("dapr-e2e-issuer");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(s)?;
    let cert = ca_params(&cn, Some(0))
        .signed_by(&key, &root.issuer)
        .map_err(s)?;
    Ok((cn, cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

/// The certificate chain a TLS server presents (captured during the
/// handshake; the server may then refuse us for lacking a client certificate,
/// which does not matter here).
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<Vec<u8>>>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut c) = self.chain.lock() {
            *c = chain;
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &rustls_pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &rustls_pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The chain (leaf first, DER) served by the TLS server at `addr`.
async fn served_chain(addr: &str) -> Res<Vec<Vec<u8>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(s)?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timeout"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let server = rustls_pki_types::ServerName::try_from("dapr-e2e").map_err(s)?;
    // The outcome does not matter: the chain is captured before any refusal.
    let _ = tokio::time::timeout(Duration::from_secs(5), connector.connect(server, tcp)).await;
    let chain = capture.chain.lock().map_err(s)?.clone();
    if chain.is_empty() {
        return Err(format!("{addr} presented no certificate"));
    }
    Ok(chain)
}

/// Whether `leaf`'s issuer is the certificate named `cn` (the issuer's CN is
/// unique per run, so finding it in the leaf's DER, where only the issuer
/// name can hold it, is enough), or the chain carries that issuer's DER.
fn issued_by(chain: &[Vec<u8>], cn: &str, issuer_der: &[u8]) -> bool {
    let leaf = &chain[0];
    let in_leaf = leaf.windows(cn.len()).any(|w| w == cn.as_bytes());
    in_leaf || chain.iter().skip(1).any(|c| c == issuer_der)
}

// ---------- pods ----------

fn pods_json(ns: &TestNamespace, selector: &str) -> Res<Vec<Value>> {
    let text = ns
        .kubectl(&["get", "pods", "-l", selector, "-o", "json"])
        .map_err(s)?;
    Ok(json(&text)?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn container_ids(pod: &Value) -> Vec<(String, String)> {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let id = c["containerID"].as_str()?.rsplit("://").next()?.to_owned();
            Some((c["name"].as_str().unwrap_or_default().to_owned(), id))
        })
        .collect()
}

fn restarts(pods: &[Value]) -> i64 {
    pods.iter()
        .flat_map(|p| p["status"]["containerStatuses"].as_array().cloned())
        .flatten()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum()
}

/// Host processes whose cgroup names the container id; summed VmRSS in kB.
/// Containers are ordinary processes on this machine (containerd + runc).
fn container_rss_kb(container_id: &str) -> Res<u64> {
    let mut total = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").map_err(s)?.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if !cgroup.contains(container_id) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            total += kb;
            found = true;
        }
    }
    if found {
        Ok(total)
    } else {
        Err(format!(
            "no host process in the cgroup of container {container_id}"
        ))
    }
}

/// (pod, container, RSS kB) for every container of the pods matching `selector`.
fn pods_rss(ns: &TestNamespace, selector: &str) -> Res<Vec<(String, String, u64)>> {
    let mut out = Vec::new();
    for pod in pods_json(ns, selector)? {
        let pod_name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for (container, id) in container_ids(&pod) {
            out.push((pod_name.clone(), container, container_rss_kb(&id)?));
        }
    }
    Ok(out)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn app_deployment(app: &str, injector_label: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  labels: {{app: {app}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels:
        app: {app}
        dapr-rs.e2e/k8s-e2e: "{injector_label}"
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: "{app}"
        dapr.io/app-port: "8080"
    spec:
      containers:
        - name: app
          image: {image}
          imagePullPolicy: Never
          env: [{{name: APP_PORT, value: "8080"}}]
          ports: [{{containerPort: 8080, name: http}}]
          readinessProbe:
            httpGet: {{path: /healthz, port: 8080}}
            periodSeconds: 1
"#,
        image = image("e2e-app"),
    )
}

/// The injector is Ready before the API server can always reach it (the
/// Service's endpoints and kube-proxy rules follow a moment later), and a
/// `failurePolicy: Ignore` webhook admits pods without a sidecar meanwhile:
/// waits until a server-side dry run of an annotated pod comes back with
/// `daprd`. After 60 s it goes on, and step 2 reports what it sees.
async fn wait_injection_effective(apps: &TestNamespace, injector_label: &str) {
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: injection-probe
  labels: {{dapr-rs.e2e/k8s-e2e: "{injector_label}"}}
  annotations: {{dapr.io/enabled: "true", dapr.io/app-id: injection-probe}}
spec:
  containers: [{{name: app, image: {image}, imagePullPolicy: Never}}]
"#,
        image = image("e2e-app"),
    );
    let probe = eventually(
        "the injector patching pods",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let out = apps
                .kubectl_handle()
                .run_with_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(&pod),
                )
                .map_err(s)?;
            let injected = json(&out)?["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == "daprd");
            Ok::<_, String>(injected.then_some(()))
        },
    )
    .await;
    if let Err(e) = probe {
        eprintln!("injection probe: {e}");
    }
}

fn component(name: &str, type_: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: {type_}\n  version: v1\n  metadata: []\n"
    )
}

/// `/e2e-app get URL` inside the pod's app container (the sidecar's HTTP API
/// listens on the pod's loopback only).
fn in_pod_get(ns: &TestNamespace, pod: &str, url: &str) -> Res<String> {
    ns.kubectl(&[
        "exec", pod, "-c", "app", "--", "/e2e-app", "get", url, "5000",
    ])
    .map_err(s)
}

// ---------- the test ----------

#[tokio::test]
async fn kubernetes_end_to_end_with_helm_injected_sidecars_mtls_and_issuer_rotation() {
    let Some(cluster) = Cluster::tier2().await else {
        return;
    };
    let bins = bins_dir();
    for b in CONTROL_PLANE {
        assert!(
            bins.join(b).is_file(),
            "{}/{b} is not built (cargo build -p {b} --bins)",
            bins.display()
        );
    }
    assert!(
        profile_dir().join("e2e-app").is_file(),
        "e2e-app is not built (cargo build -p dapr-e2e --bins)"
    );
    cluster
        .import_images_only(&bins, &CONTROL_PLANE)
        .unwrap_or_else(|e| panic!("importing images: {e}"));
    cluster
        .import_images_only(&profile_dir(), &["e2e-app"])
        .unwrap_or_else(|e| panic!("importing e2e-app: {e}"));
    eprintln!("images from {}", bins.display());

    let _release = one_release().await;
    let cp = cluster
        .namespace("dapr-e2e-cp")
        .expect("control-plane namespace");
    let apps = cluster.namespace("dapr-e2e-apps").expect("apps namespace");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut report = Report::default();

    let root = new_root().expect("root CA");
    let issuer1 = new_issuer(&root).expect("issuer");
    let installed = install(
        &cluster,
        &cp,
        &apps,
        &root,
        &issuer1,
        tmp.path(),
        &mut report,
    )
    .await;

    let mut pods = None;
    if installed {
        pods = deploy_apps(&cp, &apps, &issuer1, &mut report).await;
    }
    if let Some((a, b)) = &pods {
        let a_addr = format!("{}:8080", a.1);
        let outcome = invoke_with_identity(&a_addr).await;
        report.record(
            "3 A invokes B over mTLS via Kubernetes DNS, B sees the caller",
            outcome,
        );
        let outcome = state_through_sidecar(&a_addr).await;
        report.record(
            "4 state through the sidecar (kubectl-applied Component)",
            outcome,
        );
        let outcome = component_applies_live(&apps, &a_addr).await;
        report.record("5 a new Component applies live, no restart", outcome);
        let outcome = unknown_component_type(&apps, &a.0, &a_addr).await;
        report.record(
            "8 unknown component type reported, others keep working",
            outcome,
        );
        let outcome = conversion_through_the_service(&cluster, &cp, &apps, &root).await;
        report.record(
            "10 Subscription conversion through the dapr-webhook Service",
            outcome,
        );
        let outcome = rotate_issuer(&cp, &apps, &root, &a_addr, &b.0, &mut report).await;
        report.record(
            "6 issuer rotation (cert-manager Secret) under traffic",
            outcome,
        );
    }
    if installed {
        let outcome = measure_rss(&cluster, &cp, &apps, &mut report).await;
        report.record(
            "9 RSS: control plane per pod; operator with 1000 Components",
            outcome,
        );
        // The apps go first so nothing recreates pods while the webhook goes away.
        let _ = apps.kubectl(&[
            "delete",
            "deployment",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ]);
        let outcome = uninstall(&cluster, &cp).await;
        report.record("7 helm uninstall leaves nothing behind", outcome);
    }
    let summary = report.summary();
    eprintln!("{summary}");
    let failed: Vec<&str> = report
        .steps
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(failed.is_empty(), "failed steps: {failed:?}{summary}");
}

/// Step 1. `helm install --wait` with the test's root and issuer in the
/// cert-manager key names; all four control-plane pods Ready, no restarts.
async fn install(
    cluster: &Cluster,
    cp: &TestNamespace,
    apps: &TestNamespace,
    root: &Root,
    issuer: &(String, String, String, Vec<u8>),
    dir: &Path,
    report: &mut Report,
) -> bool {
    let files = [
        ("root.crt", root.pem.as_str()),
        ("issuer.crt", issuer.1.as_str()),
        ("issuer.key", issuer.2.as_str()),
    ];
    for (f, pem) in files {
        std::fs::write(dir.join(f), pem).expect("writing PEM");
    }
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let set_root = format!("dapr_sentry.tls.root.certPEM={}", p("root.crt"));
    let set_cert = format!("dapr_sentry.tls.issuer.certPEM={}", p("issuer.crt"));
    let set_key = format!("dapr_sentry.tls.issuer.keyPEM={}", p("issuer.key"));
    let reader_ns = format!("dapr_rbac.secretReader.namespace={}", apps.name());
    // Other tests may create pods meanwhile: this release's webhook only
    // sees pods labelled for it.
    let only_ours = format!(
        r#"dapr_sidecar_injector.objectSelector={{"matchLabels":{{"dapr-rs.e2e/k8s-e2e":"{}"}}}}"#,
        cp.name()
    );
    let chart = chart_support::chart_dir().to_string_lossy().into_owned();
    let args = [
        "install",
        RELEASE,
        &chart,
        "--namespace",
        cp.name(),
        "--set",
        "global.imagePullPolicy=Never",
        "--set",
        "dapr_sidecar_injector.sidecarImagePullPolicy=Never",
        "--set",
        "global.issuerFilenames.ca=ca.crt",
        "--set",
        "global.issuerFilenames.cert=tls.crt",
        "--set",
        "global.issuerFilenames.key=tls.key",
        "--set-file",
        &set_root,
        "--set-file",
        &set_cert,
        "--set-file",
        &set_key,
        "--set",
        &reader_ns,
        "--set-json",
        &only_ours,
        "--wait",
        "--timeout",
        "240s",
    ];
    let started = Instant::now();
    let helm = helm_k(cluster, &args);
    let secs = started.elapsed().as_secs_f64();
    let outcome = async {
        helm?;
        let pods = pods_json(cp, "app")?;
        let ready = pods
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if pods.len() != 4 || ready != 4 {
            return Err(format!(
                "{ready} of {} control-plane pods Ready, want 4",
                pods.len()
            ));
        }
        let r = restarts(&pods);
        if r != 0 {
            return Err(format!("{r} container restarts"));
        }
        // Sentry took the given issuer from the cert-manager key names.
        let secret = json(
            &cp.kubectl(&["get", "secret", "dapr-trust-bundle", "-o", "json"])
                .map_err(s)?,
        )?;
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            if secret["data"][key].as_str().is_none_or(str::is_empty) {
                return Err(format!("dapr-trust-bundle Secret has no {key}"));
            }
        }
        Ok(format!("4 pods Ready in {secs:.1} s"))
    }
    .await;
    if outcome.is_ok() {
        report.figure("helm install → control plane Ready", format!("{secs:.1} s"));
    } else {
        eprintln!("{}", cp.describe());
    }
    report.record("1 helm install brings the control plane to Ready", outcome)
}

/// Step 2. Both Deployments get the sidecar; it is Ready with a certificate
/// from Sentry (chained to the test's issuer) and the operator's Components.
/// Returns ((pod, ip) of A, (pod, ip) of B).
async fn deploy_apps(
    cp: &TestNamespace,
    apps: &TestNamespace,
    issuer: &(String, String, String, Vec<u8>),
    report: &mut Report,
) -> Option<((String, String), (String, String))> {
    let outcome = async {
        apps.apply(&component("statestore", "state.in-memory"))
            .map_err(s)?;
        wait_injection_effective(apps, cp.name()).await;
        let started = Instant::now();
        apps.apply(&format!(
            "{}---\n{}",
            app_deployment(APP_A, cp.name()),
            app_deployment(APP_B, cp.name())
        ))
        .map_err(s)?;
        let mut ready = Vec::new();
        let mut firsts = Vec::new();
        // Polled together: the time to the first is each one's, the last is both.
        for app in [APP_A, APP_B] {
            let pods = apps
                .wait_pods_ready(&format!("app={app}"), 1, Duration::from_secs(120))
                .await
                .map_err(s)?;
            firsts.push(started.elapsed().as_secs_f64());
            ready.push(pods[0].clone());
        }
        let secs = started.elapsed().as_secs_f64();
        for app in [APP_A, APP_B] {
            let pods = pods_json(apps, &format!("app={app}"))?;
            let pod = pods.first().ok_or("no pod")?;
            let names: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            if names != ["app", "daprd"] {
                return Err(format!("{app}: containers {names:?}, want [app, daprd]"));
            }
            let daprd_ready = pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == "daprd" && c["ready"] == true);
            if !daprd_ready {
                return Err(format!("{app}: daprd not ready"));
            }
            let projected = pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == "dapr-identity-token" && v["projected"].is_object());
            if !projected {
                return Err(format!("{app}: no projected dapr-identity-token volume"));
            }
        }
        // The certificate on B's internal gRPC port comes from Sentry: only
        // Sentry holds the issuer's key.
        let chain = served_chain(&format!("{}:50002", ready[1].1)).await?;
        if !issued_by(&chain, &issuer.0, &issuer.3) {
            return Err("B's sidecar certificate is not signed by the installed issuer".into());
        }
        // The Components came from the operator.
        let meta = in_pod_get(apps, &ready[0].0, "http://127.0.0.1:3500/v1.0/metadata")?;
        let meta = json(&meta)?;
        let has_store = meta["components"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "statestore" && c["type"] == "state.in-memory");
        if !has_store {
            return Err(format!("A's metadata lacks statestore: {meta}"));
        }
        // The operator learns a caller's app id only from its verified
        // SPIFFE certificate: A's sidecar opened its update streams over
        // mTLS with the certificate Sentry issued it.
        let op_logs = cp.kubectl(&["logs", "deploy/dapr-operator"]).map_err(s)?;
        let authenticated = op_logs
            .lines()
            .any(|l| l.contains("sidecar connected for updates") && l.contains(APP_A));
        if !authenticated {
            return Err(format!(
                "the operator never saw {APP_A} by its SPIFFE id:\n{op_logs}"
            ));
        }
        Ok((ready, secs, firsts))
    }
    .await;
    match outcome {
        Ok((ready, secs, firsts)) => {
            report.figure(
                "Deployment created → sidecar Ready",
                format!(
                    "{secs:.1} s for both (A {:.1} s, B {:.1} s)",
                    firsts[0], firsts[1]
                ),
            );
            report.record(
                "2 annotated Deployments run with the injected sidecar (Sentry cert, operator Components)",
                Ok(format!("both Ready in {secs:.1} s; B serves a Sentry-issued cert; A lists statestore")),
            );
            let mut it = ready.into_iter();
            Some((it.next()?, it.next()?))
        }
        Err(e) => {
            eprintln!("{}", apps.describe());
            for app in [APP_A, APP_B] {
                if let Ok(l) = apps.kubectl(&[
                    "logs",
                    &format!("deploy/{app}"),
                    "-c",
                    "daprd",
                    "--tail",
                    "30",
                ]) {
                    eprintln!("--- daprd of {app}:\n{l}");
                }
            }
            report.record("2 annotated Deployments run with the injected sidecar (Sentry cert, operator Components)", Err(e));
            None
        }
    }
}

/// Step 3. A's app calls its sidecar, which finds B through
/// `app-b-dapr.<ns>.svc.cluster.local` and calls B's sidecar over mTLS.
async fn invoke_with_identity(a_addr: &str) -> Res<String> {
    let body = eventually(
        "A → B invocation",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            Ok::<_, String>(
                ok_body("GET", a_addr, &format!("/invoke/{APP_B}/headers"), "")
                    .await
                    .ok(),
            )
        },
    )
    .await
    .map_err(s)?;
    let headers = json(&body)?;
    let caller = headers["dapr-caller-app-id"].as_str().unwrap_or_default();
    if caller != APP_A {
        return Err(format!(
            "B saw dapr-caller-app-id {caller:?}, want {APP_A:?}: {headers}"
        ));
    }
    let callee = headers["dapr-callee-app-id"].as_str().unwrap_or("-");
    Ok(format!(
        "B saw dapr-caller-app-id={caller} (callee {callee})"
    ))
}

/// Step 4.
async fn state_through_sidecar(a_addr: &str) -> Res<String> {
    ok_body(
        "POST",
        a_addr,
        "/state/statestore/greeting",
        "\"hello from k8s\"",
    )
    .await?;
    let got = ok_body("GET", a_addr, "/state/statestore/greeting", "").await?;
    if got.trim() != "\"hello from k8s\"" {
        return Err(format!("read back {got:?}"));
    }
    Ok("saved and read back through A's sidecar".into())
}

/// Step 5. A Component created after the pods started becomes usable.
async fn component_applies_live(apps: &TestNamespace, a_addr: &str) -> Res<String> {
    let before = restarts(&pods_json(apps, "app")?);
    let started = Instant::now();
    apps.apply(&component("livestore", "state.in-memory"))
        .map_err(s)?;
    eventually(
        "livestore usable through A's sidecar",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            Ok::<_, String>(
                ok_body("POST", a_addr, "/state/livestore/k", "\"live\"")
                    .await
                    .ok(),
            )
        },
    )
    .await
    .map_err(s)?;
    let secs = started.elapsed().as_secs_f64();
    let got = ok_body("GET", a_addr, "/state/livestore/k", "").await?;
    if got.trim() != "\"live\"" {
        return Err(format!("livestore read back {got:?}"));
    }
    let after = restarts(&pods_json(apps, "app")?);
    if after != before {
        return Err(format!("container restarts went from {before} to {after}"));
    }
    Ok(format!(
        "usable {secs:.1} s after kubectl apply, restarts unchanged ({after})"
    ))
}

/// Step 8 (bad input). An unknown type: the sidecar names the component and
/// the reason; the components it already had keep working. As in Dapr, a
/// component that fails without `ignoreErrors: true` makes daprd exit (it
/// names the component on the way out and then crash-loops on it at start);
/// with `ignoreErrors: true` it is logged and skipped, which is checked here.
/// Step 10. The apiserver converts Subscriptions through the chart's
/// `dapr-webhook` Service to the operator pod (port 19443, its Sentry
/// certificate for `dapr-webhook.<ns>.svc`, verified against the root). The
/// chart's Subscription CRD is copied under a group of this test's own, so
/// the cluster-wide `subscriptions.dapr.io` other tests share (installed
/// with `strategy: None` from `crds/generated`) stays as it is.
async fn conversion_through_the_service(
    cluster: &Cluster,
    cp: &TestNamespace,
    apps: &TestNamespace,
    root: &Root,
) -> Res<String> {
    use base64::Engine as _;
    let group = format!("{}.e2e.dapr-rs.dev", unique_name("k8sconv"));
    let crd_name = format!("subscriptions.{group}");
    let mut crd = dapr_crds::crd::all()
        .into_iter()
        .find(|g| g.file_name == "subscription.yaml")
        .ok_or("no Subscription CRD")?
        .chart_crd();
    crd["metadata"]["name"] = serde_json::json!(crd_name);
    crd["spec"]["group"] = serde_json::json!(group);
    let client = &mut crd["spec"]["conversion"]["webhook"]["clientConfig"];
    client["service"]["namespace"] = serde_json::json!(cp.name());
    client["caBundle"] =
        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&root.pem));
    cluster.apply(&crd.to_string()).map_err(s)?;
    let result = async {
        cluster
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &format!("crd/{crd_name}"),
            ])
            .map_err(s)?;
        let v1 = format!(
            "apiVersion: {group}/v1alpha1\nkind: Subscription\nmetadata: {{name: orders}}\nspec: {{pubsubname: pubsub, topic: orders, route: /orders, deadLetterTopic: dlq}}\n"
        );
        let started = Instant::now();
        eventually(
            "v1alpha1 Subscription converted by the operator pod",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async { Ok::<_, String>(apps.apply(&v1).ok().map(|_| ())) },
        )
        .await
        .map_err(|e| format!("{e}\n{}", cp.kubectl(&["logs", "deploy/dapr-operator", "--tail=30"]).unwrap_or_default()))?;
        let got = apps
            .kubectl(&["get", &format!("subscriptions.v2alpha1.{group}"), "orders", "-o", "json"])
            .map_err(s)?;
        let got: Value = serde_json::from_str(&got).map_err(s)?;
        if got["spec"]["routes"]["default"] != "/orders" || got["spec"]["deadLetterTopic"] != "dlq" {
            return Err(format!("v2alpha1 view: {got}"));
        }
        Ok(format!(
            "v1alpha1 written, read as v2alpha1 routes.default=/orders ({:.1} s to the first conversion)",
            started.elapsed().as_secs_f64()
        ))
    }
    .await;
    let _ = cluster.kubectl(&["delete", "crd", &crd_name, "--wait=false"]);
    result
}

async fn unknown_component_type(apps: &TestNamespace, a_pod: &str, a_addr: &str) -> Res<String> {
    let before = restarts(&pods_json(apps, "app")?);
    apps.apply(
        &component("brokenstore", "state.doesnotexist")
            .replace("  version: v1\n", "  version: v1\n  ignoreErrors: true\n"),
    )
    .map_err(s)?;
    let line = eventually(
        "A's daprd reports brokenstore",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let logs = apps.kubectl(&["logs", a_pod, "-c", "daprd"]).map_err(s)?;
            Ok::<_, String>(
                logs.lines()
                    .find(|l| l.contains("brokenstore") && l.contains("doesnotexist"))
                    .map(str::to_owned),
            )
        },
    )
    .await
    .map_err(s)?;
    ok_body("POST", a_addr, "/state/statestore/after-broken", "1").await?;
    ok_body("GET", a_addr, "/state/livestore/k", "").await?;
    let meta = json(&in_pod_get(
        apps,
        a_pod,
        "http://127.0.0.1:3500/v1.0/metadata",
    )?)?;
    let listed = meta["components"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "brokenstore");
    // The broken component must not pose as loaded.
    if listed {
        return Err(format!("brokenstore listed as loaded: {meta}"));
    }
    let (status, body) = http("GET", a_addr, "/state/brokenstore/k", "").await?;
    if (200..300).contains(&status) {
        return Err(format!("brokenstore answered {status}: {body}"));
    }
    let after = restarts(&pods_json(apps, "app")?);
    if after != before {
        return Err(format!("container restarts went from {before} to {after}"));
    }
    apps.kubectl(&["delete", "components.dapr.io", "brokenstore"])
        .map_err(s)?;
    Ok(format!(
        "log: {}; brokenstore → {status} {}; statestore and livestore still work",
        line.trim(),
        body.trim()
    ))
}

/// Step 6. Replaces the issuer in the cert-manager-shaped Secret (same root)
/// while A → B invocations run back to back; none may fail. Sentry's own
/// certificate and a new B pod's certificate then come from the new issuer.
async fn rotate_issuer(
    cp: &TestNamespace,
    apps: &TestNamespace,
    root: &Root,
    a_addr: &str,
    b_pod: &str,
    report: &mut Report,
) -> Res<String> {
    let issuer2 = new_issuer(root)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let addr = a_addr.to_owned();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match ok_body("GET", &addr, &format!("/invoke/{APP_B}/whoami"), "").await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut f) = failures.lock() {
                            f.push(e);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let outcome = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sentry_pod = pods_json(cp, "app=dapr-sentry")?
            .first()
            .and_then(|p| p["status"]["podIP"].as_str().map(str::to_owned))
            .ok_or("no Sentry pod IP")?;
        let sentry_addr = format!("{sentry_pod}:50001");
        // What cert-manager does on renewal: the same Secret, new contents.
        let b64 = |t: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(t)
        };
        let patch = serde_json::json!({"data": {
            "ca.crt": b64(&root.pem),
            "tls.crt": b64(&issuer2.1),
            "tls.key": b64(&issuer2.2),
        }})
        .to_string();
        let started = Instant::now();
        cp.kubectl(&[
            "patch",
            "secret",
            "dapr-trust-bundle",
            "--type",
            "merge",
            "-p",
            &patch,
        ])
        .map_err(s)?;
        eventually(
            "Sentry serving a certificate from the new issuer",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let chain = served_chain(&sentry_addr).await?;
                Ok::<_, String>(issued_by(&chain, &issuer2.0, &issuer2.3).then_some(()))
            },
        )
        .await
        .map_err(s)?;
        let sentry_secs = started.elapsed().as_secs_f64();
        report.figure(
            "issuer Secret replaced → Sentry serving from the new issuer",
            format!("{sentry_secs:.1} s"),
        );
        // A new workload certificate: a second B replica, which the running
        // traffic also reaches (the headless Service lists both pods).
        apps.kubectl(&["scale", "deployment", APP_B, "--replicas", "2"])
            .map_err(s)?;
        let b_pods = apps
            .wait_pods_ready(&format!("app={APP_B}"), 2, Duration::from_secs(90))
            .await
            .map_err(s)?;
        let (_, new_ip) = b_pods
            .iter()
            .find(|(n, _)| n != b_pod)
            .ok_or("no new B pod")?;
        let chain = served_chain(&format!("{new_ip}:50002")).await?;
        if !issued_by(&chain, &issuer2.0, &issuer2.3) {
            return Err("the new B pod's certificate is not from the new issuer".into());
        }
        // Across issuers: the new B pod (new-issuer certificate) calls A
        // (old-issuer certificate); both verify each other against the root.
        // A's own calls keep one connection to the first B pod it resolved
        // (as Dapr's connection pool does), so this is the path that mixes them.
        let cross = eventually(
            "new B pod → A",
            Duration::from_secs(30),
            Duration::from_millis(300),
            || async {
                Ok::<_, String>(
                    ok_body(
                        "GET",
                        &format!("{new_ip}:8080"),
                        &format!("/invoke/{APP_A}/whoami"),
                        "",
                    )
                    .await
                    .ok(),
                )
            },
        )
        .await
        .map_err(|e| format!("the new-issuer B pod cannot invoke the old-issuer A: {e}"))?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cross = cross.trim().to_owned();
        Ok::<_, String>((sentry_secs, cross))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    let ok = ok.load(Ordering::Relaxed);
    let failures = failures.lock().map_err(s)?.clone();
    let (sentry_secs, cross) = outcome?;
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} invocations failed during rotation; first: {}",
            failures.len(),
            ok + failures.len() as u64,
            failures[0]
        ));
    }
    if ok < 50 {
        return Err(format!("only {ok} invocations ran during rotation"));
    }
    Ok(format!(
        "{ok} A→B invocations, 0 failed; Sentry on the new issuer after {sentry_secs:.1} s; the new B pod's certificate is from the new issuer and it invoked A (answered by {cross}) across issuers"
    ))
}

/// Step 9. RSS of every control-plane container (host processes found by
/// container id in their cgroup), then the operator's with 1000 Components
/// in one namespace (cached and watched by the operator).
async fn measure_rss(
    cluster: &Cluster,
    cp: &TestNamespace,
    apps: &TestNamespace,
    report: &mut Report,
) -> Res<String> {
    let rss = pods_rss(cp, "app")?;
    let total: u64 = rss.iter().map(|(_, _, kb)| kb).sum();
    for (pod, container, kb) in &rss {
        report.figure(&format!("RSS {pod}/{container}"), mb(*kb));
    }
    report.figure(
        "RSS control plane total (4 pods)",
        format!("{} (target ≤ 20 MB; Dapr 61.6 MB)", mb(total)),
    );
    if let Ok(side) = pods_rss(apps, "app") {
        for (pod, container, kb) in side.iter().filter(|(_, c, _)| c == "daprd") {
            report.figure(&format!("RSS sidecar {pod}/{container}"), mb(*kb));
        }
    }

    let operator_kb = || -> Res<u64> {
        Ok(pods_rss(cp, "app=dapr-operator")?
            .iter()
            .map(|(_, _, kb)| kb)
            .sum())
    };
    let before = operator_kb()?;
    let bulk = cluster.namespace("dapr-e2e-bulk").map_err(s)?;
    let mut yaml = String::new();
    for i in 0..1000 {
        yaml.push_str(&format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: bulk-{i:04}}}\nspec:\n  type: state.in-memory\n  version: v1\n  metadata: [{{name: keyPrefix, value: bulk-{i}}}, {{name: note, value: \"component number {i} of the operator memory benchmark\"}}]\n---\n"
        ));
    }
    let started = Instant::now();
    bulk.kubectl_handle()
        .run_with_stdin(&["create", "-f", "-", "-o", "name"], Some(&yaml))
        .map_err(s)?;
    let create_secs = started.elapsed().as_secs_f64();
    let count = bulk
        .kubectl(&["get", "components.dapr.io", "-o", "name"])
        .map_err(s)?
        .lines()
        .count();
    if count != 1000 {
        return Err(format!("{count} Components created, want 1000"));
    }
    // Let the watch deliver and the allocator settle; the highest reading of
    // the last few is the figure.
    let mut peak = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(operator_kb()?);
    }
    let after = operator_kb()?;
    report.figure(
        "RSS dapr-operator idle → with 1000 Components",
        format!(
            "{} → {} (peak {}; target ≤ 20 MB); kubectl create of 1000 took {create_secs:.1} s",
            mb(before),
            mb(after),
            mb(peak)
        ),
    );
    drop(bulk);
    Ok(format!(
        "control plane {} total; operator {} → {} with 1000 Components",
        mb(total),
        mb(before),
        mb(after)
    ))
}

/// Step 7. Every object of the release is gone; CRDs stay, as Helm keeps
/// `crds/` (Dapr's chart behaves the same).
async fn uninstall(cluster: &Cluster, cp: &TestNamespace) -> Res<String> {
    let manifest = helm_k(
        cluster,
        &["get", "manifest", RELEASE, "--namespace", cp.name()],
    )?;
    let objects: Vec<(String, String)> = parse_docs(&manifest)
        .iter()
        .map(|d| (kind(d).to_owned(), name(d).to_owned()))
        .collect();
    let started = Instant::now();
    helm_k(
        cluster,
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            cp.name(),
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    let secs = started.elapsed().as_secs_f64();
    // Pods terminate at the kubelet's pace, which on a loaded 2-core CI
    // machine can exceed a minute (as in chart_install's HA case).
    eventually(
        "every object of the release gone",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let mut left = Vec::new();
            for (k, n) in &objects {
                let target = format!("{}/{n}", k.to_lowercase());
                let cluster_scoped = matches!(
                    k.as_str(),
                    "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
                );
                let got = if cluster_scoped {
                    cluster.kubectl(&["get", &target, "--ignore-not-found", "-o", "name"])
                } else {
                    cp.kubectl(&["get", &target, "--ignore-not-found", "-o", "name"])
                }
                .map_err(s)?;
                if !got.trim().is_empty() {
                    left.push(target);
                }
            }
            let owned = cp
                .kubectl(&[
                    "get",
                    "pods,replicasets,controllerrevisions,services,configmaps,secrets",
                    "-l",
                    "app.kubernetes.io/managed-by=Helm",
                    "-o",
                    "name",
                ])
                .map_err(s)?;
            left.extend(owned.lines().map(str::to_owned));
            let pods = cp.kubectl(&["get", "pods", "-o", "name"]).map_err(s)?;
            left.extend(pods.lines().map(str::to_owned));
            let hooks = cluster
                .kubectl(&["get", "mutatingwebhookconfigurations", "-o", "name"])
                .map_err(s)?;
            left.extend(
                hooks
                    .lines()
                    .filter(|l| l.contains("dapr-sidecar-injector"))
                    .map(str::to_owned),
            );
            Ok::<_, String>(if left.is_empty() {
                Some(())
            } else {
                eprintln!("left: {left:?}");
                None
            })
        },
    )
    .await
    .map_err(s)?;
    let crds = cluster
        .kubectl(&[
            "get",
            "crd",
            "components.dapr.io",
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .map_err(s)?;
    let leftover_runtime = cp
        .kubectl(&["get", "leases,services,endpoints,configmaps", "-o", "name"])
        .unwrap_or_default();
    Ok(format!(
        "{} objects of the release gone ({secs:.1} s); CRDs kept by Helm: {}; created at runtime and left in the namespace (removed with it): {:?}",
        objects.len(),
        if crds.trim().is_empty() { "no" } else { "yes" },
        leftover_runtime.lines().collect::<Vec<_>>()
    ))
}
