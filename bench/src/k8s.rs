//! `bench k8s`: the Kubernetes figures of issue #5 on the project's
//! single-node 1.20 cluster (`e2e/k8s/cluster.sh`, tier 2):
//!
//! 1. injector admission latency at a fixed rate (200 req/s) and full speed
//!    over TLS, against a canned TLS webhook (`bench injector`'s phases);
//! 2. operator RSS idle and with N Components (default 1000) created with
//!    kubectl, the operator binary running on the host against the cluster;
//! 3. `helm install --wait` of `charts/dapr` → all control-plane pods Ready,
//!    and the RSS of each control-plane container read from `/proc`;
//! 4. an annotated Deployment created → its pod Ready with the injected
//!    sidecar.
//!
//! Binaries come from `--bins` (default `target/release`): the images are
//! made from the same directory. Traffic stays on this machine.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use dapr_e2e::{Cluster, TestNamespace, Tier, eventually, image, repo_root, unique_name};
use serde_json::Value;

use crate::InjectorArgs;

#[derive(Debug, Clone, Args)]
pub struct K8sArgs {
    /// Directory of the dapr-rs binaries (images are built from it).
    #[arg(long, default_value = "target/release")]
    pub bins: PathBuf,
    /// Components created for the operator memory figure.
    #[arg(long, default_value_t = 1000)]
    pub components: usize,
    /// Reviews per second of the injector's fixed-rate phase.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds per injector phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Skip the injector admission phases.
    #[arg(long)]
    pub skip_injector: bool,
    /// Skip the Helm install and Deployment figures (tier 1 suffices then).
    #[arg(long)]
    pub skip_helm: bool,
}

struct Figure {
    what: &'static str,
    value: String,
    target: &'static str,
}

pub async fn run(args: K8sArgs) -> anyhow::Result<()> {
    if args.components == 0 || args.components > 20_000 {
        bail!("--components must be in [1, 20000]");
    }
    let bins = std::fs::canonicalize(&args.bins)
        .with_context(|| format!("--bins {}", args.bins.display()))?;
    for b in ["dapr-operator", "dapr-injector"] {
        if !bins.join(b).exists() {
            bail!(
                "{} missing: cargo build --release -p {b}",
                bins.join(b).display()
            );
        }
    }
    if !args.skip_injector {
        println!(
            "== injector admission ({} req/s fixed rate, then full speed)",
            args.rate
        );
        crate::injector::run(InjectorArgs {
            injector: bins.join("dapr-injector"),
            duration: args.duration,
            concurrency: 8,
            rate: args.rate,
            warmup: 1.0,
        })
        .await?;
    }
    let tier = if args.skip_helm { Tier::One } else { Tier::Two };
    let cluster = Cluster::try_up(tier)
        .await
        .context("bringing up the test cluster (e2e/k8s/cluster.sh)")?;
    let mut figures = Vec::new();
    operator_rss(&cluster, &bins, args.components, &mut figures).await?;
    if !args.skip_helm {
        helm_figures(&cluster, &bins, &mut figures).await?;
    }
    println!("\n== bench k8s ({})", bins.display());
    println!("| measurement | value | target |");
    println!("|---|---|---|");
    for f in &figures {
        println!("| {} | {} | {} |", f.what, f.value, f.target);
    }
    Ok(())
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// (VmRSS, VmHWM) of a process in kB.
fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// (RssAnon, RssFile) of a process in kB: heap and stacks vs mapped binary
/// and libraries, the first split of where resident memory goes.
fn rss_split_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The operator process, killed by its pid when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

/// The count the operator's metrics report for `kind`.
async fn resources(metrics_port: u16, kind: &str) -> Option<u64> {
    let (_, text) = http_get(metrics_port, "/metrics").await?;
    let needle = format!("dapr_operator_resources{{kind=\"{kind}\"}}");
    text.lines()
        .find(|l| l.starts_with(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

async fn operator_rss(
    cluster: &Cluster,
    bins: &Path,
    n: usize,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let crds = repo_root().join("crds/generated");
    for f in [
        "components",
        "configuration",
        "resiliency",
        "subscription",
        "httpendpoints",
    ] {
        cluster.apply(&std::fs::read_to_string(crds.join(format!("{f}.yaml")))?)?;
    }
    let ns = cluster.namespace("bench-operator")?;
    let (healthz, metrics) = (free_port()?, free_port()?);
    let child = Command::new(bins.join("dapr-operator"))
        .args([
            "--kubeconfig",
            &cluster.kubeconfig().to_string_lossy(),
            "--port",
            &free_port()?.to_string(),
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            &healthz.to_string(),
            "--healthz-listen-address",
            "127.0.0.1",
            "--metrics-port",
            &metrics.to_string(),
            "--metrics-listen-address",
            "127.0.0.1",
            "--disable-mtls",
            "--disable-leader-election",
            "--disable-service-reconciler",
            "--watch-namespace",
            ns.name(),
            "--namespace",
            ns.name(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("starting dapr-operator")?;
    let pid = child.id();
    let _op = Proc(child);
    eventually(
        "operator ready",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            Ok::<_, String>(
                http_get(healthz, "/healthz")
                    .await
                    .filter(|(s, _)| *s == 200)
                    .map(|_| ()),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = rss_kb(pid).context("operator RSS")?;
    let (idle_anon, idle_file) = rss_split_kb(pid).unwrap_or_default();
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: bench-{i:05}}}\nspec:\n  type: state.in-memory\n  version: v1\n  metadata: [{{name: keyPrefix, value: bench-{i}}}, {{name: note, value: \"component {i} of the operator memory benchmark\"}}]\n---\n"
        ));
    }
    let started = Instant::now();
    // `create`: no last-applied annotation stored with each object.
    ns.kubectl_handle()
        .run_with_stdin(&["-n", ns.name(), "create", "-f", "-"], Some(&yaml))?;
    let created = started.elapsed();
    let want = n as u64;
    eventually(
        "operator caches every Component",
        Duration::from_secs(180),
        Duration::from_millis(100),
        || async {
            Ok::<_, String>((resources(metrics, "Component").await == Some(want)).then_some(()))
        },
    )
    .await?;
    let loaded = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (with_n, peak) = rss_kb(pid).context("operator RSS")?;
    let (anon, file) = rss_split_kb(pid).unwrap_or_default();
    figures.push(Figure {
        what: "operator RSS idle (host process, --disable-mtls)",
        value: format!(
            "{} (anon {} + file {})",
            mb(idle),
            mb(idle_anon),
            mb(idle_file)
        ),
        target: "",
    });
    figures.push(Figure {
        what: "operator RSS with the Components cached (peak)",
        value: format!(
            "{} with {n} (anon {} + file {}; peak {}); created in {:.1} s, cached after {:.1} s",
            mb(with_n),
            mb(anon),
            mb(file),
            mb(peak),
            created.as_secs_f64(),
            loaded.as_secs_f64()
        ),
        target: "≤ 20 MB",
    });
    Ok(())
}

/// The exclusive lock the chart-installing e2e tests take: the chart's
/// cluster-scoped names are fixed, so one release at a time.
fn chart_lock() -> anyhow::Result<std::fs::File> {
    let dir = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/dapr-rs");
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("chart-release.lock"))?;
    file.lock()?;
    Ok(file)
}

fn helm() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/ensure-helm.sh"))
        .output()
        .context("scripts/ensure-helm.sh")?;
    if !out.status.success() {
        bail!("ensure-helm.sh: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn pods(ns: &TestNamespace, selector: &str) -> anyhow::Result<Vec<Value>> {
    let out = ns.kubectl(&["get", "pods", "-l", selector, "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// Summed (VmRSS, RssAnon) in kB of the host processes in a container's
/// cgroup (containers are ordinary processes on this machine).
fn container_rss_kb(container_id: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let in_container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains(container_id));
        if in_container {
            total.0 += rss_kb(pid).map(|(r, _)| r).unwrap_or(0);
            total.1 += rss_split_kb(pid).map(|(a, _)| a).unwrap_or(0);
        }
    }
    total
}

async fn helm_figures(
    cluster: &Cluster,
    bins: &Path,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    cluster.import_images(bins)?;
    let helm = helm()?;
    let _lock = tokio::task::spawn_blocking(chart_lock).await??;
    let cp = cluster.namespace("bench-cp")?;
    let apps = cluster.namespace("bench-apps")?;
    let release = unique_name("bench");
    let chart = repo_root().join("charts/dapr");
    let only_ours = format!(
        r#"dapr_sidecar_injector.objectSelector={{"matchLabels":{{"dapr-rs.bench/k8s":"{}"}}}}"#,
        apps.name()
    );
    let reader = format!("dapr_rbac.secretReader.namespace={}", apps.name());
    let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();
    let started = Instant::now();
    let out = Command::new(&helm)
        .args([
            "--kubeconfig",
            &kubeconfig,
            "install",
            &release,
            &chart.to_string_lossy(),
            "--namespace",
            cp.name(),
            "--set",
            "global.imagePullPolicy=Never",
            "--set",
            "dapr_sidecar_injector.sidecarImagePullPolicy=Never",
            "--set",
            &reader,
            "--set-json",
            &only_ours,
            "--wait",
            "--timeout",
            "240s",
        ])
        .output()?;
    let install = started.elapsed();
    let uninstall = |helm: &Path| {
        let _ = Command::new(helm)
            .args([
                "--kubeconfig",
                &kubeconfig,
                "uninstall",
                &release,
                "--namespace",
                cp.name(),
                "--wait",
                "--timeout",
                "120s",
            ])
            .output();
    };
    if !out.status.success() {
        eprintln!("{}", cp.describe());
        uninstall(&helm);
        bail!(
            "helm install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    figures.push(Figure {
        what: "`helm install --wait` → all control-plane pods Ready",
        value: format!("{:.1} s", install.as_secs_f64()),
        target: "",
    });
    let mut total = 0;
    let mut parts = Vec::new();
    for pod in pods(&cp, "app")? {
        let name = pod["metadata"]["labels"]["app"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        for c in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(id) = c["containerID"]
                .as_str()
                .and_then(|i| i.rsplit("://").next())
            {
                let (kb, anon) = container_rss_kb(id);
                total += kb;
                parts.push(format!("{name} {} (anon {})", mb(kb), mb(anon)));
            }
        }
    }
    parts.sort();
    figures.push(Figure {
        what: "control-plane RSS (idle, per container)",
        value: format!("{} = {}", parts.join(" / "), mb(total)),
        target: "≤ 20 MB total (Dapr: 61.6 MB)",
    });

    let deployment = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: bench-app, labels: {{app: bench-app}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: bench-app}}}}
  template:
    metadata:
      labels: {{app: bench-app, dapr-rs.bench/k8s: "{ns}"}}
      annotations: {{dapr.io/enabled: "true", dapr.io/app-id: bench-app, dapr.io/app-port: "8080"}}
    spec:
      containers:
        - name: app
          image: {image}
          imagePullPolicy: Never
          env: [{{name: APP_PORT, value: "8080"}}]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"#,
        ns = apps.name(),
        image = image("e2e-app"),
    );
    let started = Instant::now();
    apps.apply(&deployment)?;
    let ready = apps
        .wait_pods_ready("app=bench-app", 1, Duration::from_secs(180))
        .await;
    let secs = started.elapsed().as_secs_f64();
    let outcome = match ready {
        Ok(_) => {
            let p = pods(&apps, "app=bench-app")?;
            let sidecar = p.first().is_some_and(|p| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["name"] == "daprd" && c["ready"] == true)
            });
            if sidecar {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the pod is Ready without a ready daprd container"
                ))
            }
        }
        Err(e) => Err(anyhow::anyhow!("{e}\n{}", apps.describe())),
    };
    drop(apps);
    uninstall(&helm);
    outcome?;
    figures.push(Figure {
        what: "Deployment created → pod Ready with the injected sidecar",
        value: format!("{secs:.1} s"),
        target: "",
    });
    Ok(())
}
