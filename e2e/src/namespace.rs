//! A unique namespace per test, deleted when the test is done.

use std::time::Duration;

use crate::{E2eError, Kubectl, eventually};

/// A namespace created for one test. Dropping it deletes it (without waiting);
/// if the test is panicking, pods and events are printed first to help debugging.
/// Set `DAPR_RS_E2E_KEEP=1` to keep failed tests' namespaces.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: Kubectl,
    cluster_kubectl: Kubectl,
}

impl TestNamespace {
    pub(crate) fn create(cluster_kubectl: &Kubectl, prefix: &str) -> Result<Self, E2eError> {
        let name = unique_name(prefix);
        cluster_kubectl.run(&["create", "namespace", &name])?;
        // Pods are refused until the controller-manager has made the namespace's `default` ServiceAccount.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Err(e) = cluster_kubectl.run(&["-n", &name, "get", "serviceaccount", "default"]) {
            if std::time::Instant::now() >= deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Self {
            kubectl: cluster_kubectl.in_namespace(&name),
            cluster_kubectl: cluster_kubectl.clone(),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `kubectl -n <ns> <args>`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, E2eError> {
        self.kubectl.run(args)
    }

    /// `kubectl -n <ns> apply -f -` (objects without a namespace land in this one).
    pub fn apply(&self, manifest: &str) -> Result<String, E2eError> {
        self.kubectl.apply(manifest)
    }

    /// The namespaced kubectl itself, e.g. for `run_with_stdin`.
    pub fn kubectl_handle(&self) -> &Kubectl {
        &self.kubectl
    }

    /// Waits until at least `count` pods match `selector` (e.g. `app=web`) and all of them are
    /// Ready; returns their names and pod IPs.
    pub async fn wait_pods_ready(
        &self,
        selector: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, E2eError> {
        let what = format!("{count} ready pod(s) with {selector} in {}", self.name);
        eventually(&what, timeout, Duration::from_millis(500), || async {
            let text = self.kubectl(&["get", "pods", "-l", selector, "-o", "json"])?;
            let list: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| E2eError::Output {
                    what: "kubectl get pods -o json".into(),
                    message: e.to_string(),
                })?;
            let pods = list["items"].as_array().cloned().unwrap_or_default();
            let ready: Vec<(String, String)> = pods
                .iter()
                .filter(|p| pod_is_ready(p))
                .map(|p| {
                    (
                        p["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        p["status"]["podIP"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            Ok::<_, E2eError>((pods.len() >= count && ready.len() == pods.len()).then_some(ready))
        })
        .await
    }

    /// Pods, services, endpoints and events of the namespace, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for args in [
            &["get", "pods,svc,endpoints", "-o", "wide"][..],
            &["describe", "pods"][..],
            &["get", "events", "--sort-by=.lastTimestamp"][..],
        ] {
            out.push_str(&format!("$ kubectl -n {} {}\n", self.name, args.join(" ")));
            match self.kubectl.run(args) {
                Ok(text) => out.push_str(&text),
                Err(e) => out.push_str(&format!("{e}\n")),
            }
        }
        out
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- namespace {} at failure ----\n{}",
                self.name,
                self.describe()
            );
            if std::env::var_os("DAPR_RS_E2E_KEEP").is_some() {
                eprintln!("DAPR_RS_E2E_KEEP set: namespace {} kept", self.name);
                return;
            }
        }
        if let Err(e) =
            self.cluster_kubectl
                .run(&["delete", "namespace", &self.name, "--wait=false"])
        {
            eprintln!("warning: deleting namespace {}: {e}", self.name);
        }
    }
}

fn pod_is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|conds| {
        conds
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// `<prefix>-<8 hex>`, a valid DNS-1123 label (prefix is lower-cased and trimmed to fit).
pub fn unique_name(prefix: &str) -> String {
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let clean = clean.trim_matches('-');
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}",
        if clean.is_empty() { "e2e" } else { clean },
        &id[..8]
    )
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("Operator_Test");
        let b = unique_name("Operator_Test");
        assert_ne!(a, b);
        assert!(a.starts_with("operator-test-"), "{a}");
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(unique_name("--").starts_with("e2e-"));
    }
}
