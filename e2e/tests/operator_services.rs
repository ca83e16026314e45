//! dapr-operator's Service reconciler and leader election against the real
//! apiserver (tier 1: the controller-manager runs the garbage collector that
//! removes a workload's Service through its owner reference).

use std::time::Duration;

use dapr_e2e::{Cluster, E2eError, TestNamespace, eventually};
use dapr_operator::{Running, cli::Args};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::Api;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn start_operator(
    cluster: &Cluster,
    ns: &str,
    extra: &[&str],
) -> Result<Running, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut argv = vec![
        "dapr-operator",
        "--port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-port",
        "0",
        "--healthz-listen-address",
        "127.0.0.1",
        "--enable-metrics=false",
        "--disable-mtls",
        "--watch-namespace",
        ns,
        "--namespace",
        ns,
    ];
    argv.extend_from_slice(extra);
    Ok(dapr_operator::start(Args::from_argv(argv)?, cluster.client()).await?)
}

fn deployment(name: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}, tier: web}}}}
  template:
    metadata:
      labels: {{app: {name}, tier: web}}
      annotations: {{{annotations}}}
    spec:
      containers: [{{name: app, image: dapr-rs/e2e-app:dev, imagePullPolicy: Never}}]
"#
    )
}

async fn service(
    api: &Api<Service>,
    name: &str,
    present: bool,
) -> Result<Option<Service>, E2eError> {
    eventually(
        &format!(
            "service {name} {}",
            if present { "present" } else { "absent" }
        ),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async move {
            let got = api.get_opt(name).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(match (present, got) {
                (true, Some(s)) => Some(Some(s)),
                (false, None) => Some(None),
                _ => None,
            })
        },
    )
    .await
}

#[tokio::test]
async fn dapr_services_follow_annotated_workloads() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let ns: TestNamespace = cluster.namespace("operator-svc")?;
    let _running = start_operator(&cluster, ns.name(), &["--disable-leader-election"]).await?;
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());

    // Annotated Deployment with an explicit app id.
    ns.apply(&deployment(
        "web",
        r#"dapr.io/enabled: "true", dapr.io/app-id: shop"#,
    ))?;
    let svc = service(&services, "shop-dapr", true)
        .await?
        .ok_or("no service")?;
    let spec = svc.spec.clone().ok_or("no spec")?;
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let selector = spec.selector.clone().unwrap_or_default();
    assert_eq!(
        (selector["app"].as_str(), selector["tier"].as_str()),
        ("web", "web")
    );
    let ports: Vec<(String, i32)> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("dapr-http".to_owned(), 80),
            ("dapr-grpc".to_owned(), 50001),
            ("dapr-internal".to_owned(), 50002),
            ("dapr-metrics".to_owned(), 9090)
        ]
    );
    let owner = &svc.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(
        svc.metadata
            .annotations
            .as_ref()
            .map(|a| a["dapr.io/app-id"].clone()),
        Some("shop".into())
    );

    // Unannotated and disabled workloads get nothing.
    ns.apply(&deployment("plain", ""))?;
    ns.apply(&deployment("disabled", r#"dapr.io/enabled: "false""#))?;

    // Annotation removed: the Service goes away.
    ns.apply(&deployment("web", r#"dapr.io/app-id: shop"#))?;
    service(&services, "shop-dapr", false).await?;

    // App id defaults to the workload name; deleting the Deployment lets the
    // garbage collector remove the Service.
    ns.apply(&deployment("cart", r#"dapr.io/enabled: "true""#))?;
    service(&services, "cart-dapr", true).await?;
    ns.kubectl(&["delete", "deployment", "cart"])?;
    service(&services, "cart-dapr", false).await?;

    // StatefulSets are reconciled the same way.
    ns.apply(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {dapr.io/enabled: "true", dapr.io/metrics-port: "9999"}
    spec:
      containers: [{name: app, image: dapr-rs/e2e-app:dev, imagePullPolicy: Never}]
"#,
    )?;
    let svc = service(&services, "db-dapr", true)
        .await?
        .ok_or("no service")?;
    let owner = &svc.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(owner.kind, "StatefulSet");
    assert_eq!(
        svc.metadata
            .annotations
            .as_ref()
            .map(|a| a["prometheus.io/port"].clone()),
        Some("9999".into())
    );

    let all = ns.kubectl(&["get", "services", "-o", "name"])?;
    let mut all: Vec<&str> = all.lines().collect();
    all.sort();
    assert_eq!(
        all,
        ["service/db-dapr"],
        "only annotated workloads have dapr services"
    );
    Ok(())
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let ns = cluster.namespace("operator-leader")?;
    let first = start_operator(&cluster, ns.name(), &["--pod-name", "op-1"]).await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), ns.name());
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("operator.dapr.io")
            .await
            .map(|l| l.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    eventually(
        "op-1 leads",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let leases = leases.clone();
            async move { Ok::<_, kube::Error>(holder(leases).await?.filter(|h| h == "op-1")) }
        },
    )
    .await?;
    let second = start_operator(&cluster, ns.name(), &["--pod-name", "op-2"]).await?;
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    ns.apply(&deployment("a", r#"dapr.io/enabled: "true""#))?;
    service(&services, "a-dapr", true).await?;
    assert_eq!(holder(leases.clone()).await?.as_deref(), Some("op-1"));

    // The leader stops without releasing; after the lease expires op-2 leads
    // and reconciles.
    drop(first);
    eventually(
        "op-2 leads",
        Duration::from_secs(45),
        Duration::from_millis(500),
        || {
            let leases = leases.clone();
            async move { Ok::<_, kube::Error>(holder(leases).await?.filter(|h| h == "op-2")) }
        },
    )
    .await?;
    ns.apply(&deployment("b", r#"dapr.io/enabled: "true""#))?;
    service(&services, "b-dapr", true).await?;
    // Both replicas served the API meanwhile; the standby was ready before leading.
    assert!(second.health.is_ready());
    Ok(())
}
