//! Running the machine's `kubectl` against the test cluster's kubeconfig.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::E2eError;

/// A `kubectl` bound to one kubeconfig (and optionally one namespace).
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    namespace: Option<String>,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: None,
        }
    }

    /// The same kubectl with `-n <namespace>` added to every call.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            kubeconfig: self.kubeconfig.clone(),
            namespace: Some(namespace.to_string()),
        }
    }

    /// Runs `kubectl <args>`; stdout on success, stderr in the error otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, E2eError> {
        self.run_with_stdin(args, None)
    }

    /// Runs `kubectl <args>` with `input` on stdin (e.g. `apply -f -`).
    pub fn run_with_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String, E2eError> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        // Keep kubectl's discovery cache with the cluster's state, not in ~/.kube.
        if let Some(dir) = self.kubeconfig.parent() {
            cmd.arg("--cache-dir").arg(dir.join("kubectl-cache"));
        }
        if let Some(ns) = &self.namespace {
            cmd.arg("-n").arg(ns);
        }
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| E2eError::Spawn {
            program: "kubectl".into(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(E2eError::Kubectl {
                args: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `kubectl apply -f -` with the given YAML/JSON manifest(s).
    pub fn apply(&self, manifest: &str) -> Result<String, E2eError> {
        self.run_with_stdin(&["apply", "-f", "-"], Some(manifest))
    }
}
