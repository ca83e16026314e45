//! `dapr-injector` without certificate files, as Dapr's injector runs: it
//! obtains its serving certificate from a real `dapr-sentry` (Kubernetes
//! mode, kubernetes validator, on the tier-1 apiserver) with a projected-style
//! token bound to a control-plane pod, writes Sentry's trust anchors into its
//! MutatingWebhookConfiguration's caBundle, and serves `/mutate` with a
//! certificate for `dapr-sidecar-injector.<ns>.svc` that chains to them.
//!
//! Build the binaries first: `cargo build -p dapr-injector -p dapr-sentry`.

#[path = "../../injector/tests/support/mod.rs"]
mod support;

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use dapr_e2e::{Cluster, eventually, profile_dir, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, Pod, ServiceAccount},
};
use kube::{Api, api::PostParams};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio_rustls::{TlsConnector, rustls};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct WebhookGuard<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for WebhookGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

#[tokio::test]
async fn injector_gets_its_certificate_from_sentry() -> Result<(), Box<dyn std::error::Error>> {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let (injector_bin, sentry_bin) = (
        profile_dir().join("dapr-injector"),
        profile_dir().join("dapr-sentry"),
    );
    for b in [&injector_bin, &sentry_bin] {
        assert!(
            b.is_file(),
            "{} is not built; run `cargo build -p dapr-injector -p dapr-sentry` first",
            b.display()
        );
    }
    let dir = tempfile::tempdir()?;
    // The test namespace plays the control-plane namespace.
    let ns = cluster.namespace("injector-sentry")?;
    let cp = ns.name().to_owned();
    let client = cluster.client();

    // Sentry in Kubernetes mode: generates its CA into the trust-bundle Secret
    // and ConfigMap of the namespace, validates tokens with TokenReview.
    let sentry_port = support::free_port();
    let _sentry = Killed(
        Command::new(&sentry_bin)
            .env_clear()
            .env("NAMESPACE", &cp)
            .args([
                "--mode=kubernetes".to_owned(),
                format!("--kubeconfig={}", cluster.kubeconfig().display()),
                "--trust-domain=cluster.local".to_owned(),
                "--listen-address=127.0.0.1".to_owned(),
                format!("--port={sentry_port}"),
                "--healthz-listen-address=127.0.0.1".to_owned(),
                format!("--healthz-port={}", support::free_port()),
                "--enable-metrics=false".to_owned(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &cp);
    let anchors = eventually(
        "Sentry's trust-bundle ConfigMap",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let cms = cms.clone();
            async move {
                Ok::<_, kube::Error>(
                    cms.get_opt("dapr-trust-bundle")
                        .await?
                        .and_then(|c| c.data)
                        .and_then(|d| d.get("ca.crt").cloned()),
                )
            }
        },
    )
    .await?;
    let anchors_path = dir.path().join("ca.crt");
    std::fs::write(&anchors_path, &anchors)?;

    // The injector's pod (Pending on tier 1, which is enough for Sentry) and a
    // token bound to it with Sentry's audience, as the projected volume holds.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &cp);
    eventually(
        "the default service account",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await }
        },
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cp);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dapr-sidecar-injector-0", "annotations": {"dapr.io/control-plane": "injector"}},
        "spec": {"serviceAccountName": "default", "automountServiceAccountToken": false,
                 "containers": [{"name": "dapr-sidecar-injector", "image": "dapr-rs/dapr-injector:dev", "imagePullPolicy": "Never"}]}
    }))?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![format!("spiffe://cluster.local/ns/{cp}/dapr-sentry")],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
        },
        ..Default::default()
    };
    let minted: TokenRequest = sas
        .create_subresource("token", "default", &PostParams::default(), &tr)
        .await?;
    let token = minted
        .status
        .map(|s| s.token)
        .ok_or("no token in the TokenRequest answer")?;
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, token)?;

    let mwc_name = unique_name("dapr-sidecar-injector-sentry");
    let _guard = WebhookGuard {
        cluster: &cluster,
        name: mwc_name.clone(),
    };
    // Selects nothing (no namespace has this label): only the caBundle matters.
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
            "namespaceSelector": {"matchLabels": {"dapr-rs-e2e-nothing": unique_name("none")}}
        }]
    }))?;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc).await?;

    let (port, healthz) = (support::free_port(), support::free_port());
    let mut inj = Killed(
        Command::new(&injector_bin)
            .env_clear()
            .env("SIDECAR_IMAGE", "dapr-rs/daprd:dev")
            .env("NAMESPACE", &cp)
            .env("KUBE_CLUSTER_DOMAIN", "cluster.local")
            .env("DAPR_SENTRY_ADDRESS", format!("127.0.0.1:{sentry_port}"))
            .env("DAPR_SENTRY_TOKEN_FILE", &token_path)
            .env("DAPR_TRUST_ANCHORS_FILE", &anchors_path)
            .args([
                "--listen-address=127.0.0.1".to_owned(),
                format!("--port={port}"),
                "--healthz-listen-address=127.0.0.1".to_owned(),
                format!("--healthz-port={healthz}"),
                "--enable-metrics=false".to_owned(),
                format!("--kubeconfig={}", cluster.kubeconfig().display()),
                format!("--webhook-config-name={mwc_name}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    eventually(
        "the injector's /healthz",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let exited = inj.0.try_wait().ok().flatten();
            async move {
                if let Some(s) = exited {
                    return Err(format!("dapr-injector exited: {s}"));
                }
                Ok(
                    matches!(support::plain_get(healthz, "/healthz").await, Ok((200, _)))
                        .then_some(()),
                )
            }
        },
    )
    .await?;

    // The caBundle is Sentry's trust anchors.
    let stored = mwcs.get(&mwc_name).await?;
    let bundle = stored.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .ok_or("caBundle not set")?;
    assert_eq!(bundle.0, anchors.as_bytes());

    // The served certificate chains to them under the Service's DNS name and
    // carries the injector's SPIFFE id.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(anchors.as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(format!("dapr-sidecar-injector.{cp}.svc"))?;
    let tls = TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?[0]
        .to_vec();
    let spiffe = format!("spiffe://cluster.local/ns/{cp}/dapr-injector");
    assert!(
        leaf.windows(spiffe.len()).any(|w| w == spiffe.as_bytes()),
        "the serving certificate does not carry {spiffe}"
    );
    assert!(inj.0.try_wait()?.is_none(), "injector died");
    Ok(())
}
