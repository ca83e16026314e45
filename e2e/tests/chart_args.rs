//! The command lines the chart renders are accepted by the dapr-rs binaries
//! they run: each container's args (with `$(VAR)` expanded as the kubelet
//! does) are given to the binary followed by `--help`. clap rejects an
//! unknown flag or a bad value before it reaches `--help`, so exit status 0
//! means every rendered flag parses.
//!
//! Uses the binaries next to this test (`target/<profile>/`); build them first,
//! e.g. `cargo build -p dapr-operator -p dapr-sentry -p dapr-injector -p dapr-placement`.

mod chart_support;

use std::process::Command;

use chart_support::*;
use serde_json::Value;

/// Value renders that together switch on every optional flag.
const VARIANTS: &[&[&str]] = &[
    &[],
    &["--set", "global.ha.enabled=true"],
    &[
        "--set",
        "global.ha.enabled=true",
        "--set",
        "dapr_placement.cluster.forceInMemoryLog=true",
    ],
    &[
        "--set",
        "global.logAsJson=true",
        "--set",
        "global.prometheus.enabled=false",
        "--set",
        "global.issuerFilenames.ca=ca.crt",
        "--set",
        "global.issuerFilenames.cert=tls.crt",
        "--set",
        "global.issuerFilenames.key=tls.key",
        "--set",
        "dapr_placement.metadataEnabled=true",
        "--set",
        "dapr_operator.watchNamespace=apps",
        "--set",
        "dapr_operator.serviceReconciler.enabled=false",
        "--set",
        "dapr_sidecar_injector.healthzPort=8081",
    ],
];

/// `$(NAME)` → the value the kubelet would substitute.
fn expand(arg: &str, container: &Value, pod_name: &str) -> String {
    let mut out = arg.replace("$(PLACEMENT_ID)", pod_name);
    for e in container["env"].as_array().into_iter().flatten() {
        if let (Some(n), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
            out = out.replace(&format!("$({n})"), v);
        }
    }
    out
}

#[test]
fn rendered_args_parse_in_the_binaries() {
    let dir = dapr_e2e::profile_dir();
    let mut failures = Vec::new();
    let mut checked = 0;
    for variant in VARIANTS {
        let docs = render(variant);
        for w in workloads(&docs) {
            let pod_name = format!("{}-0", name(w));
            for c in containers(w) {
                let image = c["image"].as_str().unwrap_or_default();
                let binary = image
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.split(':').next())
                    .unwrap_or_default();
                let path = dir.join(binary);
                assert!(
                    path.is_file(),
                    "{} is not built; run `cargo build -p {binary}` first",
                    path.display()
                );
                let args: Vec<String> = args(c)
                    .iter()
                    .map(|a| expand(a, c, &pod_name))
                    .chain(["--help".to_string()])
                    .collect();
                let out = Command::new(&path)
                    .args(&args)
                    .env_clear()
                    .output()
                    .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
                checked += 1;
                if !out.status.success() {
                    failures.push(format!(
                        "{binary} (values {variant:?}) rejects {args:?}:\n{}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 4 * VARIANTS.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
