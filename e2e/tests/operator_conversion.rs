//! The Subscription conversion webhook through the real apiserver (tier 1):
//! the `dapr-operator` binary serves `/convert` with its certificate and
//! keeps the CRD's `caBundle` current; objects written as v1alpha1 read back
//! as v2alpha1 and the other way round, nothing lost.
//!
//! The CRD is a copy of the chart's Subscription CRD under a group of this
//! test's own, pointing at the operator on the host
//! (`clientConfig.url`), so the cluster-wide `subscriptions.dapr.io` that
//! other tests share is left alone. Build first:
//! `cargo build -p dapr-operator`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use base64::Engine as _;
use dapr_e2e::{Cluster, E2eError, eventually, profile_dir, repo_root, unique_name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The operator process, killed (by its pid) when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root CA and an operator certificate (SPIFFE id, `127.0.0.1`) signed by
/// it, written as PEM files: (ca, cert, key).
fn pki(dir: &Path, ns: &str) -> Result<(PathBuf, PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, unique_name("conversion-root"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![
        SanType::URI(format!("spiffe://cluster.local/ns/{ns}/dapr-operator").try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress("127.0.0.1".parse()?),
    ];
    let cert = leaf.signed_by(&key, &issuer)?;
    let paths = (dir.join("ca.pem"), dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&paths.0, &ca_pem)?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

fn apply_dapr_crds(cluster: &Cluster) -> Result<(), E2eError> {
    let dir = repo_root().join("crds/generated");
    for f in [
        "components",
        "configuration",
        "resiliency",
        "subscription",
        "httpendpoints",
    ] {
        let yaml = std::fs::read_to_string(dir.join(format!("{f}.yaml"))).map_err(|e| {
            E2eError::Output {
                what: format!("{f}.yaml"),
                message: e.to_string(),
            }
        })?;
        cluster.apply(&yaml)?;
    }
    Ok(())
}

fn get_json(cluster: &Cluster, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&cluster.kubectl(&all)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_convert_between_v1alpha1_and_v2alpha1_through_the_webhook() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_dapr_crds(&cluster)?;
    let ns = cluster.namespace("conversion")?;
    let dir = std::env::temp_dir().join(unique_name("conversion"));
    std::fs::create_dir_all(&dir)?;
    let (ca, cert, key) = pki(&dir, ns.name())?;

    // The chart's Subscription CRD, under this test's group, calling the
    // operator on the host. No caBundle: the operator must write it.
    let group = format!("{}.e2e.dapr-rs.dev", unique_name("conv"));
    let crd_name = format!("subscriptions.{group}");
    let webhook_port = free_port();
    let mut crd = dapr_crds::crd::all()
        .into_iter()
        .find(|g| g.file_name == "subscription.yaml")
        .ok_or("no subscription CRD")?
        .chart_crd();
    assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook");
    crd["metadata"]["name"] = json!(crd_name);
    crd["spec"]["group"] = json!(group);
    crd["spec"]["conversion"]["webhook"]["clientConfig"] =
        json!({"url": format!("https://127.0.0.1:{webhook_port}/convert")});
    cluster.apply(&serde_json::to_string(&crd)?)?;
    let cleanup = CrdCleanup(&cluster, crd_name.clone());
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/{crd_name}"),
    ])?;

    let log = dir.join("operator.log");
    let out = std::fs::File::create(&log)?;
    let bin = profile_dir().join("dapr-operator");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p dapr-operator",
        bin.display()
    );
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let child = Command::new(&bin)
        .args([
            "--kubeconfig",
            &s(cluster.kubeconfig()),
            "--port",
            &free_port().to_string(),
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            &free_port().to_string(),
            "--healthz-listen-address",
            "127.0.0.1",
            "--enable-metrics=false",
            "--disable-leader-election",
            "--disable-service-reconciler",
            "--watch-namespace",
            ns.name(),
            "--namespace",
            ns.name(),
            "--tls-cert-file",
            &s(&cert),
            "--tls-key-file",
            &s(&key),
            "--trust-anchors-file",
            &s(&ca),
            "--webhook-port",
            &webhook_port.to_string(),
            "--webhook-listen-address",
            "127.0.0.1",
            "--conversion-crd",
            &crd_name,
        ])
        .env_remove("DAPR_RS_LOG")
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let operator = Operator { child, log };

    // caBundle written by the operator: the root of its certificate.
    let want = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca)?);
    eventually(
        "caBundle patched by the operator",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let crd = get_json(&cluster, &["crd", &crd_name]).map_err(|e| e.to_string())?;
            Ok::<_, String>(
                (crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"] == want.as_str())
                    .then_some(()),
            )
        },
    )
    .await
    .map_err(|e| format!("{e}\n--- operator ---\n{}", operator.logs()))?;

    // Written as v1alpha1, read as v2alpha1 (the storage version, so this
    // went through the webhook on write).
    let v1 = format!(
        "apiVersion: {group}/v1alpha1\nkind: Subscription\nmetadata: {{name: old}}\nspec:\n  pubsubname: pubsub\n  topic: orders\n  route: /orders\n  deadLetterTopic: dlq\n  metadata: {{rawPayload: \"true\"}}\n  bulkSubscribe: {{enabled: true, maxMessagesCount: 7}}\nscopes: [app1]\n"
    );
    eventually(
        "v1alpha1 object accepted (webhook serving)",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async { Ok::<_, E2eError>(ns.apply(&v1).ok().map(|_| ())) },
    )
    .await
    .map_err(|e| format!("{e}\n--- operator ---\n{}", operator.logs()))?;
    let got = get_json(
        &cluster,
        &[
            "-n",
            ns.name(),
            &format!("subscriptions.v2alpha1.{group}"),
            "old",
        ],
    )?;
    assert_eq!(got["apiVersion"], format!("{group}/v2alpha1"));
    assert_eq!(
        got["spec"]["routes"],
        json!({"default": "/orders"}),
        "{got}"
    );
    assert!(got["spec"].get("route").is_none(), "{got}");
    assert_eq!(got["spec"]["deadLetterTopic"], "dlq");
    assert_eq!(got["spec"]["metadata"]["rawPayload"], "true");
    assert_eq!(got["spec"]["bulkSubscribe"]["maxMessagesCount"], 7);
    assert_eq!(got["scopes"], json!(["app1"]));
    // ... and read back as v1alpha1 unchanged.
    let back = get_json(
        &cluster,
        &[
            "-n",
            ns.name(),
            &format!("subscriptions.v1alpha1.{group}"),
            "old",
        ],
    )?;
    assert_eq!(back["spec"]["route"], "/orders", "{back}");
    assert!(back["spec"].get("routes").is_none(), "{back}");

    // Written as v2alpha1 with rules, read as v1alpha1: the default route is
    // `route`, the rules ride in an annotation and come back on a write.
    ns.apply(&format!(
        "apiVersion: {group}/v2alpha1\nkind: Subscription\nmetadata: {{name: new}}\nspec:\n  pubsubname: pubsub\n  topic: widgets\n  routes:\n    rules: [{{match: 'event.type == \"w\"', path: /w}}]\n    default: /d\n"
    ))?;
    let as_v1 = get_json(
        &cluster,
        &[
            "-n",
            ns.name(),
            &format!("subscriptions.v1alpha1.{group}"),
            "new",
        ],
    )?;
    assert_eq!(as_v1["apiVersion"], format!("{group}/v1alpha1"));
    assert_eq!(as_v1["spec"]["route"], "/d", "{as_v1}");
    let stash = as_v1["metadata"]["annotations"][dapr_operator::conversion::RULES_ANNOTATION]
        .as_str()
        .ok_or_else(|| format!("no rules annotation: {as_v1}"))?;
    assert!(stash.contains("/w"), "{stash}");
    // Replace through v1alpha1 (as an old client would): rules survive.
    let mut edited = as_v1.clone();
    edited["spec"]["topic"] = json!("widgets2");
    for f in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        if let Some(m) = edited["metadata"].as_object_mut() {
            m.remove(f);
        }
    }
    cluster
        .kubectl_handle()
        .run_with_stdin(
            &["-n", ns.name(), "replace", "-f", "-"],
            Some(&serde_json::to_string(&edited)?),
        )
        .map_err(|e| format!("replace through v1alpha1: {e}"))?;
    let v2 = get_json(
        &cluster,
        &[
            "-n",
            ns.name(),
            &format!("subscriptions.v2alpha1.{group}"),
            "new",
        ],
    )?;
    assert_eq!(v2["spec"]["topic"], "widgets2");
    assert_eq!(
        v2["spec"]["routes"],
        json!({"rules": [{"match": "event.type == \"w\"", "path": "/w"}], "default": "/d"}),
        "{v2}"
    );
    assert!(
        v2["metadata"]["annotations"]
            .get(dapr_operator::conversion::RULES_ANNOTATION)
            .is_none(),
        "{v2}"
    );

    // The shared dapr.io CRD (installed with `strategy: None`) is not touched.
    let shared = get_json(&cluster, &["crd", "subscriptions.dapr.io"])?;
    assert_eq!(shared["spec"]["conversion"]["strategy"], "None");
    drop(operator);
    drop(cleanup);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Deletes the test's CRD (and with it its objects) at the end.
struct CrdCleanup<'a>(&'a Cluster, String);

impl Drop for CrdCleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["delete", "crd", &self.1, "--wait=false"]);
    }
}
