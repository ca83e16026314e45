//! Tier 2 of e2e/k8s/cluster.sh, exercised for real: a pod from an image built out of the e2e-app
//! binary becomes Running and Ready through its readiness probe; pods reach each other directly, via a
//! ClusterIP Service and via cluster DNS (`<svc>.<ns>.svc.cluster.local`, headless → pod IPs); and a
//! pod cannot reach an address off this machine because the egress rule drops it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dapr_e2e::{Cluster, E2eError, TestNamespace, eventually, image};

fn app_manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        env: [{{name: APP_PORT, value: "8080"}}]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-headless}}
spec: {{clusterIP: None, selector: {{app: web}}, ports: [{{port: 8080}}]}}
"#,
        image = image("e2e-app")
    )
}

/// Runs the e2e-app client inside `pod` (the image has no shell).
fn in_pod(ns: &TestNamespace, pod: &str, args: &[&str]) -> Result<String, E2eError> {
    let mut full = vec!["exec", pod, "--", "/e2e-app"];
    full.extend_from_slice(args);
    ns.kubectl(&full).map(|s| s.trim().to_string())
}

/// Packets counted by the egress DROP rule for pod sources (root only: reads iptables).
fn egress_drops() -> u64 {
    let out = Command::new("iptables")
        .args(["-t", "mangle", "-L", "DAPR-RS-EGRESS", "-v", "-n", "-x"])
        .output()
        .expect("iptables");
    assert!(out.status.success(), "the egress chain must exist");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("pods reach nothing off this machine"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("the egress DROP rule")
}

#[tokio::test]
async fn pods_run_talk_through_services_and_dns_and_cannot_leave_the_machine()
-> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier2().await else {
        return Ok(());
    };
    let bins = Path::new(env!("CARGO_BIN_EXE_e2e-app"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    cluster.import_images_only(&bins, &["e2e-app"])?;

    let ns = cluster.namespace("tier2-net")?;
    ns.apply(&app_manifest())?;
    let pods = ns
        .wait_pods_ready("app=web", 2, Duration::from_secs(120))
        .await?;
    assert_eq!(pods.len(), 2);
    for (name, _) in &pods {
        let phase = ns.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])?;
        assert_eq!(phase, "Running");
    }
    let names: BTreeSet<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
    let ips: BTreeSet<String> = pods.iter().map(|(_, ip)| ip.clone()).collect();
    let (client, _) = &pods[0];
    let (_, other_ip) = &pods[1];

    // Pod to pod, directly.
    let out = in_pod(
        &ns,
        client,
        &["get", &format!("http://{other_ip}:8080/healthz"), "2000"],
    )?;
    assert_eq!(out, "ok");

    // Pod to a ClusterIP (kube-proxy's rules), answered by one of the replicas.
    let cluster_ip = ns.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    let who = in_pod(
        &ns,
        client,
        &["get", &format!("http://{cluster_ip}/whoami"), "2000"],
    )?;
    assert!(
        names.contains(who.as_str()),
        "{who} is not one of {names:?}"
    );

    // The host reaches the ClusterIP too.
    let who_from_host = eventually(
        "host -> ClusterIP",
        Duration::from_secs(10),
        Duration::from_millis(300),
        || async {
            let out = Command::new("curl")
                .args([
                    "-fsS",
                    "--max-time",
                    "2",
                    &format!("http://{cluster_ip}/whoami"),
                ])
                .output();
            Ok::<_, std::io::Error>(
                out.ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
            )
        },
    )
    .await?;
    assert!(names.contains(who_from_host.as_str()));

    // Through cluster DNS: the full name and the short name (search path). The DNS watcher
    // refreshes about every second, so allow it a few.
    let fqdn = format!("web.{}.svc.cluster.local", ns.name());
    for url in [
        format!("http://{fqdn}/whoami"),
        "http://web/whoami".to_string(),
    ] {
        let who = eventually(
            &format!("GET {url} from a pod"),
            Duration::from_secs(15),
            Duration::from_millis(500),
            || async { in_pod(&ns, client, &["get", &url, "2000"]).map(Some) },
        )
        .await?;
        assert!(names.contains(who.as_str()), "{who} via {url}");
    }
    let resolved = in_pod(&ns, client, &["resolve", &fqdn])?;
    assert_eq!(resolved, cluster_ip);

    // A headless Service resolves to the pod IPs.
    let headless = format!("web-headless.{}.svc.cluster.local", ns.name());
    let got = eventually(
        "headless service to resolve to both pods",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async {
            let out = in_pod(&ns, client, &["resolve", &headless])?;
            let got: BTreeSet<String> = out.lines().map(str::to_string).collect();
            Ok::<_, E2eError>((got == ips).then_some(got))
        },
    )
    .await?;
    assert_eq!(got, ips);

    // Off the machine: 192.0.2.1 (TEST-NET-1) must be unreachable, dropped by our rule.
    let before = egress_drops();
    match in_pod(&ns, client, &["get", "http://192.0.2.1/", "2000"]) {
        Err(E2eError::Kubectl { stderr, .. }) => {
            assert!(stderr.contains("192.0.2.1"), "{stderr}")
        }
        Ok(out) => panic!("a pod reached 192.0.2.1: {out}"),
        Err(e) => return Err(e),
    }
    let after = egress_drops();
    assert!(
        after > before,
        "the egress DROP rule did not see the attempt ({before} -> {after})"
    );
    Ok(())
}

/// StatefulSet peers find each other as `<pod>.<headless-svc>.<ns>.svc.cluster.local` (what the
/// placement service's Raft members use), and pods have `<a-b-c-d>.<ns>.pod.cluster.local` names.
#[tokio::test]
async fn statefulset_pods_have_stable_dns_names() -> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier2().await else {
        return Ok(());
    };
    let bins = Path::new(env!("CARGO_BIN_EXE_e2e-app"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    cluster.import_images_only(&bins, &["e2e-app"])?;
    let ns = cluster.namespace("tier2-sts")?;
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: peers}}
spec: {{clusterIP: None, publishNotReadyAddresses: true, selector: {{app: peer}}, ports: [{{port: 8080}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: peer}}
spec:
  serviceName: peers
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: peer}}}}
  template:
    metadata: {{labels: {{app: peer}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"#,
        image = image("e2e-app")
    ))?;
    let pods = ns
        .wait_pods_ready("app=peer", 2, Duration::from_secs(120))
        .await?;
    let ip_of = |name: &str| {
        pods.iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| ip.clone())
            .expect("pod peer-0/peer-1")
    };
    let (ip0, ip1) = (ip_of("peer-0"), ip_of("peer-1"));

    let peer1 = format!("peer-1.peers.{}.svc.cluster.local", ns.name());
    let got = eventually(
        "peer-1's stable name",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async { in_pod(&ns, "peer-0", &["resolve", &peer1]).map(Some) },
    )
    .await?;
    assert_eq!(got, ip1);
    let out = in_pod(
        &ns,
        "peer-0",
        &["get", &format!("http://{peer1}:8080/whoami"), "2000"],
    )?;
    assert_eq!(out, "peer-1");

    let pod_name = format!("{}.{}.pod.cluster.local", ip0.replace('.', "-"), ns.name());
    let got = eventually(
        "a pod A record",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async { in_pod(&ns, "peer-1", &["resolve", &pod_name]).map(Some) },
    )
    .await?;
    assert_eq!(got, ip0);
    Ok(())
}
