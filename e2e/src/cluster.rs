//! Bringing the machine's single-node cluster up (once) and handing tests a client for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{E2eError, Kubectl, TestNamespace};

/// Which part of the cluster a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// etcd + kube-apiserver + kube-controller-manager: API objects, CRDs, webhooks, tokens. No pods run.
    One,
    /// Tier 1 + kube-scheduler, containerd, kubelet, kube-proxy, cluster DNS: pods run.
    Two,
}

impl Tier {
    fn arg(self) -> &'static str {
        match self {
            Tier::One => "tier1",
            Tier::Two => "tier2",
        }
    }
}

/// The highest tier this process already brought up, and its kubeconfig.
/// Every test gets its own `Client` (a client is bound to the runtime that made it).
static UP: Mutex<Option<(Tier, PathBuf)>> = Mutex::new(None);

/// A handle on the running cluster.
pub struct Cluster {
    tier: Tier,
    kubeconfig: PathBuf,
    client: kube::Client,
    kubectl: Kubectl,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("tier", &self.tier)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The API server tier. `None` means "skip this test" (already announced loudly);
    /// with `CI=true` a cluster that cannot come up panics instead.
    pub async fn tier1() -> Option<Cluster> {
        Self::require(Tier::One).await
    }

    /// The tier where pods run. Same skip policy as [`Cluster::tier1`].
    pub async fn tier2() -> Option<Cluster> {
        Self::require(Tier::Two).await
    }

    /// Like `tier1()`/`tier2()` but returning the error instead of applying the skip policy.
    pub async fn try_up(tier: Tier) -> Result<Cluster, E2eError> {
        let kubeconfig = {
            let ensured = tokio::task::spawn_blocking(move || ensure_up(tier)).await;
            match ensured {
                Ok(r) => r?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        };
        let client = client_for(&kubeconfig).await?;
        Ok(Cluster {
            tier,
            kubectl: Kubectl::new(&kubeconfig),
            kubeconfig,
            client,
        })
    }

    async fn require(tier: Tier) -> Option<Cluster> {
        if std::env::var_os("DAPR_RS_E2E_SKIP").is_some_and(|v| !v.is_empty()) {
            eprintln!(
                "\n!!! SKIPPED: DAPR_RS_E2E_SKIP is set, so this {} Kubernetes test does not run.\n",
                tier.arg()
            );
            return None;
        }
        match Self::try_up(tier).await {
            Ok(c) => Some(c),
            Err(e) if in_ci() => panic!(
                "CI=true and the {} Kubernetes cluster could not be brought up: {e}",
                tier.arg()
            ),
            Err(e) => {
                announce_skip(tier, &e.to_string());
                None
            }
        }
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// A client for the cluster (admin credentials), bound to the calling test's runtime.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig (for processes a test starts itself, e.g. an operator on the host).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl <args>` as cluster admin; stdout on success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, E2eError> {
        self.kubectl.run(args)
    }

    /// `kubectl apply -f -` of cluster-scoped or fully namespaced manifests.
    pub fn apply(&self, manifest: &str) -> Result<String, E2eError> {
        self.kubectl.apply(manifest)
    }

    pub fn kubectl_handle(&self) -> &Kubectl {
        &self.kubectl
    }

    /// Creates `<prefix>-<random>`; it is deleted when the returned value is dropped.
    pub fn namespace(&self, prefix: &str) -> Result<TestNamespace, E2eError> {
        TestNamespace::create(&self.kubectl, prefix)
    }

    /// Builds and imports the images (`dapr-rs/<binary>:dev`) of every dapr-rs binary found in
    /// `profile_dir` (e.g. `target/debug`). Tier 2 only (which already has the pause image).
    /// Re-imports only binaries that changed since the last import into this cluster.
    pub fn import_images(&self, profile_dir: &Path) -> Result<(), E2eError> {
        self.import_images_only(profile_dir, &[])
    }

    /// Like [`Cluster::import_images`] for the named binaries only (e.g. `&["e2e-app"]`).
    pub fn import_images_only(&self, profile_dir: &Path, names: &[&str]) -> Result<(), E2eError> {
        if self.tier < Tier::Two {
            return Err(E2eError::NeedsTier2);
        }
        let dir = profile_dir.to_string_lossy();
        let mut args = vec!["images", dir.as_ref()];
        args.extend_from_slice(names);
        run_script(&args).map(|_| ())
    }
}

/// `dapr-rs/<name>:dev`, the reference of an image made by `import_images`.
pub fn image(name: &str) -> String {
    format!("dapr-rs/{name}:dev")
}

/// The cargo profile directory the running test binary was built into
/// (`target/debug` for `cargo test`), where the workspace's binaries are.
pub fn profile_dir() -> PathBuf {
    // A test executable lives in <target>/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("target/debug"))
}

/// The repository root (the e2e crate's parent).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `e2e/k8s/cluster.sh`.
pub fn cluster_script() -> PathBuf {
    repo_root().join("e2e/k8s/cluster.sh")
}

fn ensure_up(tier: Tier) -> Result<PathBuf, E2eError> {
    // Held across the script run so tests of one binary don't queue up many `up` calls;
    // the script's own flock serializes separate test binaries.
    let mut up = UP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((have, path)) = up.as_ref()
        && *have >= tier
        && path.exists()
    {
        return Ok(path.clone());
    }
    let out = run_script(&["up", tier.arg()])?;
    let path = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| E2eError::Kubeconfig {
            path: PathBuf::from("(cluster.sh stdout)"),
            message: format!("expected the kubeconfig path as the last line, got {out:?}"),
        })?;
    *up = Some((tier, path.clone()));
    Ok(path)
}

/// Runs `bash cluster.sh <args>`; its stderr (progress) goes to the test output, stdout is returned.
fn run_script(args: &[&str]) -> Result<String, E2eError> {
    let script = cluster_script();
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| E2eError::Spawn {
            program: format!("bash {}", script.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(E2eError::Script {
            script,
            action: args.join(" "),
            status: out.status,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn client_for(path: &Path) -> Result<kube::Client, E2eError> {
    let err = |message: String| E2eError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn announce_skip(tier: Tier, why: &str) {
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!!! SKIPPED: this end-to-end test needs the {} Kubernetes cluster\n!!! (e2e/k8s/cluster.sh), which could not be brought up here:\n!!!   {why}\n!!! With CI=true this is a failure, not a skip.\n{bar}\n",
        tier.arg()
    );
}
