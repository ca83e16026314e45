//! The real `dapr-injector` binary as the mutating webhook of a real
//! Kubernetes 1.20 apiserver (tier 1): it fills in the caBundle of a
//! MutatingWebhookConfiguration that calls it at `https://127.0.0.1:<port>`,
//! then injects daprd into an annotated Pod and into a Deployment's pods,
//! refuses a pod with a bad annotation with its own message, and leaves
//! unannotated pods and pods of other users alone.
//!
//! Build the binary first: `cargo build -p dapr-injector`.

#[path = "../../injector/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use dapr_e2e::{Cluster, eventually, profile_dir, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Container, Pod},
};
use kube::{
    Api, Client, Config,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

/// Deletes the (cluster-scoped) webhook configuration even if the test fails,
/// so no other test's pods are sent to a webhook that is gone.
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

fn pod_json(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "dapr-rs/e2e-app:dev", "imagePullPolicy": "Never"}]}
    }))
    .expect("pod json")
}

fn daprd(p: &Pod) -> Option<Container> {
    p.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "daprd")
        .cloned()
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[tokio::test]
async fn injector_mutates_pods_on_a_real_apiserver() -> Result<(), Box<dyn std::error::Error>> {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let binary = profile_dir().join("dapr-injector");
    assert!(
        binary.is_file(),
        "{} is not built; run `cargo build -p dapr-injector` first",
        binary.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = support::write_pki(dir.path(), "webhook");
    let ns = cluster.namespace("injector")?;
    let selector = unique_name("inj");
    cluster.kubectl(&[
        "label",
        "ns",
        ns.name(),
        &format!("dapr-rs-e2e-injector={selector}"),
    ])?;

    // The webhook, scoped to this test's namespace, created WITHOUT a
    // caBundle: until the injector writes it, the apiserver cannot call it.
    let port = support::free_port();
    let mwc_name = unique_name("dapr-sidecar-injector-e2e");
    let _guard = WebhookGuard {
        cluster: &cluster,
        name: mwc_name.clone(),
    };
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name, "labels": {"app": "dapr-sidecar-injector"}},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
            "namespaceSelector": {"matchLabels": {"dapr-rs-e2e-injector": selector}}
        }]
    }))
    .expect("webhook json");
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(cluster.client());
    mwcs.create(&PostParams::default(), &mwc).await?;

    let mut inj = support::InjectorProcess::start_on(
        &binary,
        &pki,
        port,
        &[
            format!("--kubeconfig={}", cluster.kubeconfig().display()),
            format!("--webhook-config-name={mwc_name}"),
            format!("--tls-ca-file={}", pki.ca_path.display()),
        ],
        &[],
    );
    // Healthy only once the caBundle is written.
    inj.wait_healthy(Duration::from_secs(60)).await;
    let stored = mwcs.get(&mwc_name).await?;
    let bundle = stored.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle set by the injector");
    assert_eq!(bundle.0, pki.ca_pem.as_bytes());

    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());

    // 1. An annotated Pod created by an admin (system:masters): injected.
    pods.create(
        &PostParams::default(),
        &pod_json(
            "orders",
            json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080",
                   "dapr.io/sidecar-cpu-limit": "500m", "dapr.io/log-level": "debug"}),
        ),
    )
    .await?;
    let stored = pods.get("orders").await?;
    let c = daprd(&stored).expect("daprd injected into the stored pod");
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("/daprd"));
    assert_eq!(arg_after(&args, "--mode"), Some("kubernetes"));
    assert_eq!(arg_after(&args, "--app-id"), Some("orders"));
    assert_eq!(arg_after(&args, "--app-port"), Some("8080"));
    assert_eq!(arg_after(&args, "--log-level"), Some("debug"));
    assert_eq!(
        arg_after(&args, "--sentry-address"),
        Some("dapr-sentry.dapr-system.svc.cluster.local:443")
    );
    assert!(args.iter().any(|a| a == "--enable-mtls"), "{args:?}");
    assert_eq!(c.image.as_deref(), Some("dapr-rs/daprd:dev"));
    assert_eq!(env_value(&c, "NAMESPACE").as_deref(), Some(ns.name()));
    assert_eq!(
        env_value(&c, "DAPR_TRUST_ANCHORS"),
        Some(pki.ca_pem.clone())
    );
    assert_eq!(
        env_value(&c, "DAPR_CONTROLPLANE_NAMESPACE").as_deref(),
        Some("dapr-system")
    );
    let limits = c.resources.and_then(|r| r.limits).unwrap_or_default();
    assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("500m"));
    let sc = c.security_context.expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let spec = stored.spec.clone().unwrap_or_default();
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "dapr-identity-token")
        .expect("token volume");
    let sat = token
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.clone())
        .expect("serviceAccountToken projection");
    assert_eq!(
        sat.audience.as_deref(),
        Some("spiffe://cluster.local/ns/dapr-system/dapr-sentry")
    );
    let app = spec
        .containers
        .iter()
        .find(|c| c.name == "app")
        .expect("app");
    assert_eq!(env_value(app, "DAPR_HTTP_PORT").as_deref(), Some("3500"));
    assert_eq!(env_value(app, "DAPR_GRPC_PORT").as_deref(), Some("50001"));
    let labels = stored.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("dapr.io/sidecar-injected").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels.get("dapr.io/app-id").map(String::as_str),
        Some("orders")
    );

    // 2. A bad annotation: the create is refused with the injector's message.
    let err = pods
        .create(
            &PostParams::default(),
            &pod_json(
                "bad",
                json!({"dapr.io/enabled": "true", "dapr.io/app-port": "abc"}),
            ),
        )
        .await
        .expect_err("a pod with dapr.io/app-port=abc must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("invalid value 'abc' for annotation dapr.io/app-port: not an integer"),
        "{msg}"
    );
    assert!(pods.get_opt("bad").await?.is_none());

    // 3. An unannotated pod: stored as written.
    pods.create(&PostParams::default(), &pod_json("plain", json!({})))
        .await?;
    let plain = pods.get("plain").await?;
    assert!(daprd(&plain).is_none());
    assert!(
        !plain
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("dapr.io/sidecar-injected")
    );

    // 4. An annotated pod created by a user that is not an allowed
    //    controller (the namespace's default service account): not injected.
    ns.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: default-edit}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}\n\
         subjects: [{{kind: ServiceAccount, name: default, namespace: {}}}]\n",
        ns.name()
    ))?;
    let mut config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("kube config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{}:default", ns.name()));
    let as_sa: Api<Pod> = Api::namespaced(Client::try_from(config).expect("client"), ns.name());
    let by_sa = eventually(
        "a pod created as the default service account",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            let as_sa = as_sa.clone();
            async move {
                as_sa
                    .create(
                        &PostParams::default(),
                        &pod_json("by-user", json!({"dapr.io/enabled": "true"})),
                    )
                    .await
                    .map(Some)
            }
        },
    )
    .await?;
    assert!(
        daprd(&by_sa).is_none(),
        "pods of other users are not injected"
    );

    // 5. A Deployment: its pods come from the replicaset-controller and get
    //    daprd, with the app id derived from the Deployment's name.
    let deploys: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}, "annotations": {"dapr.io/enabled": "true", "dapr.io/app-port": "3000"}},
                "spec": {"containers": [{"name": "app", "image": "dapr-rs/e2e-app:dev", "imagePullPolicy": "Never"}]}
            }
        }
    }))
    .expect("deployment json");
    deploys.create(&PostParams::default(), &d).await?;
    let pod = eventually(
        "the Deployment's pod",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=checkout"))
                    .await?;
                Ok::<_, kube::Error>(list.items.into_iter().next())
            }
        },
    )
    .await?;
    let c = daprd(&pod).expect("daprd injected into the Deployment's pod");
    let args = c.args.unwrap_or_default();
    assert_eq!(arg_after(&args, "--app-id"), Some("checkout"), "{args:?}");
    assert_eq!(arg_after(&args, "--app-port"), Some("3000"));
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("dapr.io/app-id")
            .map(String::as_str),
        Some("checkout")
    );

    // The injector counted what it did.
    let (_, metrics) = support::plain_get(inj.metrics_port, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"checkout\"} 1"),
        "{metrics}"
    );
    assert!(
        inj.child.try_wait().expect("wait").is_none(),
        "injector died"
    );
    Ok(())
}
