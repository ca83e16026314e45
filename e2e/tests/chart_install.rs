//! `charts/dapr` on the real tier-2 cluster: `helm install --wait` brings
//! every control-plane pod to Ready, and `helm uninstall` removes every
//! object of the release.
//!
//! The chart's cluster-scoped objects (ClusterRoles, the webhook
//! configuration) have fixed names, as in Dapr, so only one release of the
//! chart can exist in the cluster at a time; this test installs into its own
//! namespace and puts the secret-reader Role there too.

mod chart_support;

use std::time::{Duration, Instant};

use chart_support::*;
use dapr_e2e::{Cluster, E2eError, TestNamespace, eventually, profile_dir};
use serde_json::Value;

const BINARIES: [&str; 5] = [
    "daprd",
    "dapr-operator",
    "dapr-sentry",
    "dapr-injector",
    "dapr-placement",
];

/// helm against the test cluster.
fn helm_k(cluster: &Cluster, args: &[&str]) -> Result<String, String> {
    let kc = cluster.kubeconfig().to_string_lossy().into_owned();
    let mut full: Vec<&str> = vec!["--kubeconfig", &kc];
    full.extend_from_slice(args);
    run_helm(&full)
}

/// Pods that are not Ready or restarted: (name, ready).
type Troubled = Vec<(String, bool)>;

/// One line per pod: name, phase, ready, restarts and, when not ready, why;
/// and the troubled pods.
fn pod_report(ns: &TestNamespace) -> Result<(Vec<String>, Troubled), E2eError> {
    let text = ns.kubectl(&["get", "pods", "-o", "json"])?;
    let list: Value = serde_json::from_str(&text).map_err(|e| E2eError::Output {
        what: "kubectl get pods -o json".into(),
        message: e.to_string(),
    })?;
    let mut lines = Vec::new();
    let mut not_ready = Vec::new();
    for p in list["items"].as_array().into_iter().flatten() {
        let name = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let phase = p["status"]["phase"].as_str().unwrap_or("?");
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let cs = &p["status"]["containerStatuses"][0];
        let restarts = cs["restartCount"].as_i64().unwrap_or(0);
        let why = [&cs["state"]["waiting"], &cs["lastState"]["terminated"]]
            .iter()
            .filter_map(|s| {
                let reason = s["reason"].as_str()?;
                Some(format!(
                    "{reason} {} {}",
                    s["exitCode"]
                        .as_i64()
                        .map(|c| format!("exit={c}"))
                        .unwrap_or_default(),
                    s["message"].as_str().unwrap_or_default()
                ))
            })
            .collect::<Vec<_>>()
            .join("; ");
        lines.push(format!(
            "{name:<45} {phase:<9} ready={ready:<5} restarts={restarts} {why}"
        ));
        if !ready || restarts > 0 {
            not_ready.push((name, ready));
        }
    }
    Ok((lines, not_ready))
}

/// (kind, name) of every object in a rendered manifest.
fn manifest_objects(manifest: &str) -> Vec<(String, String)> {
    parse_docs(manifest)
        .iter()
        .map(|d| (kind(d).to_string(), name(d).to_string()))
        .collect()
}

/// With only the chart's RBAC, each component did what it must: Sentry filled
/// the trust bundle, the injector wrote its webhook's caBundle, the operator
/// holds its Lease, and no component logged an authorization refusal.
async fn control_plane_did_its_work(cluster: &Cluster, ns: &TestNamespace) -> Result<(), String> {
    let json = |args: &[&str]| -> Result<Value, String> {
        let text = ns.kubectl(args).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let secret = json(&["get", "secret", "dapr-trust-bundle", "-o", "json"])?;
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        if secret["data"][key].as_str().is_none_or(str::is_empty) {
            return Err(format!(
                "Sentry did not write {key} into the dapr-trust-bundle Secret"
            ));
        }
    }
    let cm = json(&["get", "configmap", "dapr-trust-bundle", "-o", "json"])?;
    if !cm["data"]["ca.crt"]
        .as_str()
        .is_some_and(|v| v.contains("BEGIN CERTIFICATE"))
    {
        return Err("Sentry did not publish ca.crt in the dapr-trust-bundle ConfigMap".into());
    }
    let ca_bundle = eventually(
        "the injector's caBundle in its MutatingWebhookConfiguration",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let text = cluster.kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                "dapr-sidecar-injector",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])?;
            Ok::<_, E2eError>((!text.trim().is_empty()).then_some(()))
        },
    )
    .await;
    ca_bundle.map_err(|e| e.to_string())?;
    let lease = eventually(
        "the operator's leader Lease",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let v = json(&["get", "lease", "operator.dapr.io", "-o", "json"]);
            Ok::<_, String>(v.ok().and_then(|v| {
                v["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| h.starts_with("dapr-operator-"))
                    .map(str::to_string)
            }))
        },
    )
    .await;
    lease.map_err(|e| e.to_string())?;
    for selector in [
        "app=dapr-operator",
        "app=dapr-sentry",
        "app=dapr-sidecar-injector",
        "app=dapr-placement-server",
    ] {
        let logs = ns
            .kubectl(&["logs", "-l", selector, "--tail", "-1"])
            .map_err(|e| e.to_string())?;
        if let Some(line) = logs
            .lines()
            .find(|l| l.contains("forbidden") || l.contains("Forbidden"))
        {
            return Err(format!("{selector} was refused by RBAC: {line}"));
        }
    }
    Ok(())
}

/// One release at a time: the chart's cluster-scoped objects have fixed names.
static ONE_RELEASE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs the chart with `values` into a fresh namespace and waits; checks
/// `pods` control-plane pods are Ready without restarts, that the components
/// did their work, then `extra` (given the release manifest); uninstalls and
/// checks nothing of the release is left. Returns the seconds to Ready.
async fn install_check_uninstall<F, Fut>(
    cluster: &Cluster,
    values: &[&str],
    pods: usize,
    extra: F,
) -> Result<f64, E2eError>
where
    F: FnOnce(String, TestNamespace) -> Fut,
    Fut: std::future::Future<Output = (TestNamespace, Result<(), String>)>,
{
    let bins = profile_dir();
    for b in BINARIES {
        assert!(
            bins.join(b).is_file(),
            "{}/{b} is not built; build the binaries first (cargo build --bins)",
            bins.display()
        );
    }
    cluster.import_images_only(&bins, &BINARIES)?;

    // Another release of the chart (e.g. another e2e test) owns the fixed
    // cluster-scoped names until it is uninstalled: wait for it.
    eventually(
        "no other release of charts/dapr in the cluster (ClusterRole dapr-operator-admin)",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async {
            let other = cluster.kubectl(&[
                "get",
                "clusterrole",
                "dapr-operator-admin",
                "--ignore-not-found",
                "-o",
                "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-namespace}",
            ])?;
            if !other.trim().is_empty() {
                eprintln!(
                    "waiting for the chart release in namespace {} to go away",
                    other.trim()
                );
            }
            Ok::<_, E2eError>(other.trim().is_empty().then_some(()))
        },
    )
    .await?;

    let ns = cluster.namespace("dapr-chart")?;
    let release = "dapr-chart-test";
    let chart = chart_dir().to_string_lossy().into_owned();
    let reader_ns = format!("dapr_rbac.secretReader.namespace={}", ns.name());
    // Other tests may create pods meanwhile: this release's webhook only
    // sees pods labelled for it.
    let only_ours = format!(
        r#"dapr_sidecar_injector.objectSelector={{"matchLabels":{{"dapr-rs.e2e/chart-test":"{}"}}}}"#,
        ns.name()
    );
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        ns.name(),
        "--set",
        "global.imagePullPolicy=Never",
        "--set",
        "dapr_sidecar_injector.sidecarImagePullPolicy=Never",
        "--set",
        &reader_ns,
        "--set-json",
        &only_ours,
        "--wait",
        "--timeout",
        "240s",
    ];
    args.extend_from_slice(values);
    let started = Instant::now();
    let installed = helm_k(cluster, &args);
    let install_secs = started.elapsed().as_secs_f64();
    let (report, troubled) = pod_report(&ns)?;
    eprintln!(
        "helm install {values:?} --wait: {} after {install_secs:.1} s\n{}",
        if installed.is_ok() { "ok" } else { "FAILED" },
        report.join("\n")
    );
    for (pod, ready) in &troubled {
        if let Ok(logs) = ns.kubectl(&["logs", pod, "--previous", "--tail", "20"]) {
            eprintln!("--- last lines before the restart of {pod}:\n{logs}");
        }
        if !ready && let Ok(logs) = ns.kubectl(&["logs", pod, "--tail", "15"]) {
            eprintln!("--- last log lines of {pod}:\n{logs}");
        }
    }
    // The trust anchors are mounted by key, so no component starts (and
    // crashes) before Sentry has published them: no restarts expected.
    let restarted: Vec<&String> = troubled
        .iter()
        .filter(|(_, r)| *r)
        .map(|(p, _)| p)
        .collect();
    let not_ready: Vec<&String> = troubled
        .iter()
        .filter(|(_, r)| !*r)
        .map(|(p, _)| p)
        .collect();
    let installed = installed.and_then(|_| {
        if not_ready.is_empty() && restarted.is_empty() && report.len() == pods {
            Ok(())
        } else {
            Err(format!(
                "expected {pods} Ready control-plane pods without restarts, got {}; not ready: {not_ready:?}, restarted: {restarted:?}",
                report.len()
            ))
        }
    });
    let working = match &installed {
        Ok(()) => control_plane_did_its_work(cluster, &ns).await,
        Err(_) => Err("not installed".to_string()),
    };

    if let Err(e) = &installed
        && helm_k(cluster, &["status", release, "--namespace", ns.name()]).is_err()
    {
        panic!("helm install: {e}");
    }
    // The objects of the release, for the leftover check after uninstall.
    let manifest = helm_k(
        cluster,
        &["get", "manifest", release, "--namespace", ns.name()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let objects = manifest_objects(&manifest);
    assert!(objects.len() > 20, "release manifest: {objects:?}");
    let (ns, extra) = match &working {
        Ok(()) => extra(manifest, ns).await,
        Err(_) => (ns, Ok(())),
    };

    // Uninstall whatever happened above, then check nothing of it is left.
    helm_k(
        cluster,
        &[
            "uninstall",
            release,
            "--namespace",
            ns.name(),
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // HA releases stop a dozen pods with grace periods; on a loaded 2-core
    // node that can take more than a minute.
    let leftovers = eventually(
        "every object of the release gone",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let mut left = Vec::new();
            for (k, n) in &objects {
                let cluster_scoped = matches!(
                    k.as_str(),
                    "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
                );
                let target = format!("{}/{n}", k.to_lowercase());
                let got = if cluster_scoped {
                    cluster.kubectl(&["get", &target, "--ignore-not-found", "-o", "name"])
                } else {
                    ns.kubectl(&["get", &target, "--ignore-not-found", "-o", "name"])
                };
                match got {
                    Ok(s) if s.trim().is_empty() => {}
                    Ok(_) => left.push(target),
                    Err(e) => return Err(e),
                }
            }
            // What the workloads owned: pods, ReplicaSets, revisions.
            let owned = ns.kubectl(&[
                "get",
                "pods,replicasets,controllerrevisions,poddisruptionbudgets",
                "-o",
                "name",
            ])?;
            left.extend(owned.lines().map(str::to_string));
            Ok(if left.is_empty() { Some(()) } else { None })
        },
    )
    .await;
    // Objects the running binaries created themselves (not the chart's).
    let runtime = ns
        .kubectl(&["get", "leases,services,endpoints", "-o", "name"])
        .unwrap_or_default();
    eprintln!(
        "after helm uninstall, runtime-created objects in {}: {:?}",
        ns.name(),
        runtime.lines().collect::<Vec<_>>()
    );

    if let Err(e) = installed {
        panic!("helm install: {e}");
    }
    if let Err(e) = working {
        panic!("control plane installed but not working with the chart's RBAC: {e}");
    }
    if let Err(e) = extra {
        panic!("{e}");
    }
    leftovers?;
    Ok(install_secs)
}

#[tokio::test]
async fn helm_install_brings_the_control_plane_ready_and_uninstall_cleans_up()
-> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier2().await else {
        return Ok(());
    };
    let _one = ONE_RELEASE.lock().await;
    let secs = install_check_uninstall(&cluster, &[], 4, |_, ns| async { (ns, Ok(())) }).await?;
    eprintln!("time from helm install to all control-plane pods Ready: {secs:.1} s");
    Ok(())
}

/// HA on the live 1.20 API server: three replicas each, a three-node Raft
/// cluster that elects one leader, and PodDisruptionBudgets rendered as
/// policy/v1beta1 because the server does not serve policy/v1.
#[tokio::test]
async fn helm_install_in_ha_mode_forms_a_raft_cluster_with_v1beta1_pdbs() -> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier2().await else {
        return Ok(());
    };
    let _one = ONE_RELEASE.lock().await;
    let values = [
        "--set",
        "global.ha.enabled=true",
        // No storage provisioner in the test cluster.
        "--set",
        "dapr_placement.cluster.forceInMemoryLog=true",
    ];
    let served_v1 = cluster
        .kubectl(&["api-versions"])?
        .lines()
        .any(|l| l.trim() == "policy/v1");
    let cluster_ref = &cluster;
    let secs = install_check_uninstall(&cluster, &values, 12, |manifest, ns| async move {
        let check = async {
            let docs = parse_docs(&manifest);
            let pdbs = of_kind(&docs, "PodDisruptionBudget");
            let want = if served_v1 { "policy/v1" } else { "policy/v1beta1" };
            if pdbs.len() != 4 || pdbs.iter().any(|p| p["apiVersion"] != want) {
                return Err(format!(
                    "expected 4 PodDisruptionBudgets as {want}: {:?}",
                    pdbs.iter().map(|p| (name(p), p["apiVersion"].clone())).collect::<Vec<_>>()
                ));
            }
            // Exactly one placement peer reports Raft leadership (metrics through
            // the API server's pod proxy).
            let leaders = eventually(
                "one Raft leader among the placement peers",
                Duration::from_secs(60),
                Duration::from_secs(1),
                || async {
                    let mut leaders = 0;
                    for i in 0..3 {
                        let path = format!(
                            "/api/v1/namespaces/{}/pods/dapr-placement-server-{i}:9090/proxy/metrics",
                            ns.name()
                        );
                        let text = cluster_ref.kubectl(&["get", "--raw", &path])?;
                        leaders += text
                            .lines()
                            .filter(|l| l.starts_with("dapr_placement_raft_leader_status"))
                            .filter(|l| l.trim_end().ends_with(" 1"))
                            .count();
                    }
                    Ok::<_, E2eError>((leaders == 1).then_some(leaders))
                },
            )
            .await;
            leaders.map(|_| ()).map_err(|e| e.to_string())
        };
        let r = check.await;
        (ns, r)
    })
    .await?;
    eprintln!("time from helm install (HA) to all 12 control-plane pods Ready: {secs:.1} s");
    Ok(())
}
