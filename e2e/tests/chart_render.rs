//! `charts/dapr` without a cluster: `helm lint`, and `helm template` output
//! parsed and checked object by object (hardening, least-privilege RBAC, HA
//! mode, PDB API selection, webhook, trust bundle, image references, CRDs).

mod chart_support;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use chart_support::*;
use serde_json::Value;

const HA: &[&str] = &["--set", "global.ha.enabled=true"];

/// (kind, name) of every object the default values render.
fn expected_default_objects() -> BTreeSet<(String, String)> {
    [
        ("Deployment", "dapr-operator"),
        ("Deployment", "dapr-sentry"),
        ("Deployment", "dapr-sidecar-injector"),
        ("StatefulSet", "dapr-placement-server"),
        ("Service", "dapr-api"),
        ("Service", "dapr-webhook"),
        ("Service", "dapr-sentry"),
        ("Service", "dapr-sidecar-injector"),
        ("Service", "dapr-placement-server"),
        ("ServiceAccount", "dapr-operator"),
        ("ServiceAccount", "dapr-sentry"),
        ("ServiceAccount", "dapr-injector"),
        ("ServiceAccount", "dapr-placement"),
        ("ClusterRole", "dapr-operator-admin"),
        ("ClusterRoleBinding", "dapr-operator-admin"),
        ("Role", "dapr-operator"),
        ("RoleBinding", "dapr-operator"),
        ("ClusterRole", "dapr-sentry"),
        ("ClusterRoleBinding", "dapr-sentry"),
        ("Role", "dapr-sentry"),
        ("RoleBinding", "dapr-sentry"),
        ("ClusterRole", "dapr-injector"),
        ("ClusterRoleBinding", "dapr-injector"),
        ("Role", "dapr-injector"),
        ("RoleBinding", "dapr-injector"),
        ("Role", "secret-reader"),
        ("RoleBinding", "dapr-secret-reader"),
        ("MutatingWebhookConfiguration", "dapr-sidecar-injector"),
        ("Secret", "dapr-trust-bundle"),
        ("ConfigMap", "dapr-trust-bundle"),
        ("Configuration", "daprsystem"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect()
}

#[test]
fn lint_is_clean_with_default_and_ha_values() {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    for extra in [
        &[][..],
        HA,
        &[
            "--set",
            "global.ha.enabled=true",
            "--set",
            "dapr_placement.cluster.forceInMemoryLog=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_ref()];
        args.extend_from_slice(extra);
        let out = run_helm(&args).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{out}"
        );
    }
}

#[test]
fn default_values_render_exactly_the_control_plane() {
    let docs = render(&[]);
    let got: BTreeSet<(String, String)> = docs
        .iter()
        .map(|d| (kind(d).to_string(), name(d).to_string()))
        .collect();
    assert_eq!(got, expected_default_objects());
    assert_eq!(got.len(), docs.len(), "duplicate objects: {:?}", ids(&docs));
    // Namespaced objects land in the release namespace (secret-reader in its own).
    for d in &docs {
        let ns = d["metadata"]["namespace"].as_str();
        match kind(d) {
            "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration" => {
                assert_eq!(ns, None, "{}", name(d))
            }
            "Role" | "RoleBinding" if name(d).contains("secret-reader") => {
                assert_eq!(ns, Some("default"))
            }
            _ => assert_eq!(ns, Some(NS), "{}/{}", kind(d), name(d)),
        }
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "dapr",
            "{}",
            name(d)
        );
    }
}

/// Every container: resources, hardened security context, /healthz probes on
/// its healthz port, the per-binary image, an existing service account.
fn assert_workloads_hardened(docs: &[Value]) {
    let images: BTreeMap<&str, &str> = [
        ("dapr-operator", "dapr-rs/dapr-operator:dev"),
        ("dapr-sentry", "dapr-rs/dapr-sentry:dev"),
        ("dapr-sidecar-injector", "dapr-rs/dapr-injector:dev"),
        ("dapr-placement-server", "dapr-rs/dapr-placement:dev"),
    ]
    .into();
    let workloads = workloads(docs);
    assert_eq!(workloads.len(), 4, "{:?}", ids(docs));
    for w in workloads {
        let wname = name(w);
        let pod = &w["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{wname} pod runAsNonRoot");
        assert!(
            psc["runAsUser"].as_i64().is_some_and(|u| u > 0),
            "{wname} runAsUser"
        );
        let sa = pod["serviceAccountName"].as_str().unwrap_or_default();
        get(docs, "ServiceAccount", sa);
        assert_eq!(pod["hostNetwork"], Value::Null, "{wname} hostNetwork");
        let cp = w["spec"]["template"]["metadata"]["annotations"]["dapr.io/control-plane"]
            .as_str()
            .unwrap_or_default();
        assert!(
            ["operator", "sentry", "injector", "placement"].contains(&cp),
            "{wname} dapr.io/control-plane annotation: {cp:?}"
        );
        let cs = containers(w);
        assert_eq!(cs.len(), 1, "{wname}");
        for c in cs {
            assert_eq!(c["image"], images[wname], "{wname} image");
            let r = &c["resources"];
            assert!(r["requests"]["cpu"].is_string(), "{wname} cpu request: {r}");
            assert!(
                r["requests"]["memory"].is_string(),
                "{wname} memory request: {r}"
            );
            assert!(
                r["limits"]["memory"].is_string(),
                "{wname} memory limit: {r}"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{wname}: {sc}");
            assert_eq!(sc["privileged"], false, "{wname}: {sc}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{wname}: {sc}");
            assert_eq!(sc["runAsNonRoot"], true, "{wname}: {sc}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{wname}: {sc}"
            );
            assert_eq!(sc["capabilities"]["add"], Value::Null, "{wname}: {sc}");
            let healthz = c["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "healthz"))
                .and_then(|p| p["containerPort"].as_i64())
                .unwrap_or_else(|| panic!("{wname} declares no healthz port"));
            let args = args(c);
            assert_eq!(
                flag_value(&args, "--healthz-port").as_deref(),
                Some(healthz.to_string().as_str()),
                "{wname} --healthz-port"
            );
            for probe in ["livenessProbe", "readinessProbe"] {
                let p = &c[probe]["httpGet"];
                assert_eq!(p["path"], "/healthz", "{wname} {probe}");
                assert_eq!(p["port"].as_i64(), Some(healthz), "{wname} {probe}");
            }
        }
    }
}

#[test]
fn workloads_are_hardened_with_resources_and_probes() {
    assert_workloads_hardened(&render(&[]));
    assert_workloads_hardened(&render(HA));
}

/// Rules of every Role/ClusterRole: no wildcards, no privilege-granting
/// verbs, Secrets only by name or read-only `get`; every role bound to one
/// rendered ServiceAccount.
#[test]
fn rbac_is_least_privilege() {
    for extra in [&[][..], HA] {
        let docs = render(extra);
        for role in docs
            .iter()
            .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        {
            let rname = name(role);
            let rules = role["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("{rname} rules"));
            assert!(!rules.is_empty(), "{rname} has no rules: drop it instead");
            for rule in rules {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    for v in rule[field].as_array().into_iter().flatten() {
                        let v = v.as_str().unwrap_or_default();
                        assert!(!v.contains('*'), "{rname}: wildcard in {field}: {rule}");
                    }
                }
                let verbs: BTreeSet<&str> = rule["verbs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(!verbs.is_empty(), "{rname}: rule without verbs: {rule}");
                for bad in ["escalate", "bind", "impersonate", "deletecollection"] {
                    assert!(!verbs.contains(bad), "{rname}: {bad} in {rule}");
                }
                let resources: Vec<&str> = rule["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if resources.contains(&"secrets") {
                    let named = rule["resourceNames"]
                        .as_array()
                        .is_some_and(|n| !n.is_empty());
                    assert!(
                        named || verbs == BTreeSet::from(["get"]),
                        "{rname}: secrets must be named or get-only: {rule}"
                    );
                }
                for r in [
                    "clusterroles",
                    "clusterrolebindings",
                    "roles",
                    "rolebindings",
                    "serviceaccounts/token",
                    "nodes",
                ] {
                    assert!(!resources.contains(&r), "{rname} may touch {r}: {rule}");
                }
            }
            let bind_kind = if kind(role) == "Role" {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            };
            let bindings: Vec<&Value> = of_kind(&docs, bind_kind)
                .into_iter()
                .filter(|b| b["roleRef"]["name"] == rname && b["roleRef"]["kind"] == kind(role))
                .collect();
            assert_eq!(bindings.len(), 1, "{rname} bindings");
            let subjects = bindings[0]["subjects"].as_array().expect("subjects");
            assert_eq!(subjects.len(), 1, "{rname} subjects");
            assert_eq!(subjects[0]["kind"], "ServiceAccount");
            if rname != "secret-reader" {
                get(
                    &docs,
                    "ServiceAccount",
                    subjects[0]["name"].as_str().unwrap_or_default(),
                );
                assert_eq!(subjects[0]["namespace"], NS);
            }
        }
        // The mutating-webhook and trust-bundle rights are limited to those objects.
        let injector = get(&docs, "ClusterRole", "dapr-injector");
        let mwc = injector["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resources"][0] == "mutatingwebhookconfigurations")
            .expect("injector may patch its webhook");
        assert_eq!(
            mwc["resourceNames"],
            serde_json::json!(["dapr-sidecar-injector"])
        );
        let sentry = get(&docs, "Role", "dapr-sentry");
        for rule in sentry["rules"].as_array().into_iter().flatten() {
            assert_eq!(
                rule["resourceNames"],
                serde_json::json!(["dapr-trust-bundle"]),
                "{rule}"
            );
        }
        // Placement never calls the API server.
        let placement = get(&docs, "ServiceAccount", "dapr-placement");
        assert_eq!(placement["automountServiceAccountToken"], false);
        assert!(
            docs.iter().all(|d| !d["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == "dapr-placement")),
            "dapr-placement is bound to a role"
        );
    }
}

fn pdbs(docs: &[Value]) -> Vec<&Value> {
    of_kind(docs, "PodDisruptionBudget")
}

#[test]
fn pdbs_only_in_ha_with_the_api_the_cluster_serves() {
    assert!(pdbs(&render(&[])).is_empty());
    assert!(pdbs(&render(&["--kube-version", "1.20.2"])).is_empty());

    // Kubernetes 1.20 (the test cluster) serves only policy/v1beta1.
    let v120 = render(&[
        "--set",
        "global.ha.enabled=true",
        "--kube-version",
        "1.20.2",
        "--api-versions",
        "policy/v1beta1",
    ]);
    let got = pdbs(&v120);
    let names: BTreeSet<&str> = got.iter().map(|d| name(d)).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "dapr-operator-disruption-budget",
            "dapr-sentry-budget",
            "dapr-sidecar-injector-disruption-budget",
            "dapr-placement-server-disruption-budget",
        ])
    );
    for pdb in &got {
        assert_eq!(pdb["apiVersion"], "policy/v1beta1", "{}", name(pdb));
        assert_eq!(pdb["spec"]["maxUnavailable"], "25%");
        // The selector must pick the workload's pods.
        let app = pdb["spec"]["selector"]["matchLabels"]["app"]
            .as_str()
            .expect("app selector");
        let w = workloads(&v120)
            .into_iter()
            .find(|w| w["spec"]["template"]["metadata"]["labels"]["app"] == app)
            .unwrap_or_else(|| panic!("{} selects no workload", name(pdb)));
        assert!(
            w["spec"]["replicas"].as_i64().unwrap_or(0) > 1,
            "{} guards a single replica",
            name(w)
        );
    }

    // A cluster that lists policy/v1 PodDisruptionBudgets gets policy/v1.
    let served = render(&[
        "--set",
        "global.ha.enabled=true",
        "--kube-version",
        "1.20.2",
        "--api-versions",
        "policy/v1/PodDisruptionBudget",
    ]);
    assert!(pdbs(&served).iter().all(|p| p["apiVersion"] == "policy/v1"));
    assert_eq!(pdbs(&served).len(), 4);
    // helm's own default capabilities (a current Kubernetes) also get policy/v1.
    let current = render(HA);
    assert!(
        pdbs(&current)
            .iter()
            .all(|p| p["apiVersion"] == "policy/v1")
    );
    assert_eq!(pdbs(&current).len(), 4);

    // minAvailable instead of maxUnavailable.
    let min = render(&[
        "--set",
        "global.ha.enabled=true",
        "--set",
        "global.ha.disruption.minimumAvailable=1",
        "--set",
        "global.ha.disruption.maximumUnavailable=",
    ]);
    for pdb in pdbs(&min) {
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{}", name(pdb));
        assert_eq!(pdb["spec"]["maxUnavailable"], Value::Null, "{}", name(pdb));
    }
}

#[test]
fn ha_mode_runs_three_replicas_and_a_raft_cluster() {
    let docs = render(HA);
    for d in of_kind(&docs, "Deployment") {
        assert_eq!(d["spec"]["replicas"], 3, "{}", name(d));
        let anti = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
        assert!(anti.is_object(), "{} has no anti-affinity", name(d));
    }
    let sts = get(&docs, "StatefulSet", "dapr-placement-server");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(sts["spec"]["serviceName"], "dapr-placement-server");
    let c = &containers(sts)[0];
    let a = args(c);
    assert_eq!(flag_value(&a, "--id").as_deref(), Some("$(PLACEMENT_ID)"));
    let peers = flag_value(&a, "--initial-cluster").expect("--initial-cluster");
    let want: Vec<String> = (0..3)
        .map(|i| {
            format!("dapr-placement-server-{i}=dapr-placement-server-{i}.dapr-placement-server.{NS}.svc.cluster.local:8201")
        })
        .collect();
    assert_eq!(peers, want.join(","));
    // $(PLACEMENT_ID) is the pod name, which is the peer id.
    let env = c["env"].as_array().expect("env");
    let id = env
        .iter()
        .find(|e| e["name"] == "PLACEMENT_ID")
        .expect("PLACEMENT_ID");
    assert_eq!(id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    // Persistent Raft log by default.
    assert_eq!(
        flag_value(&a, "--raft-logstore-path").as_deref(),
        Some("/var/run/dapr/raft-log/cluster-v2-nonroot-$(PLACEMENT_ID)")
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "raft-log"
    );
    assert!(
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "raft-log")
    );
    // The headless Service gives each peer its DNS name before it is Ready.
    let svc = get(&docs, "Service", "dapr-placement-server");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let ports: BTreeSet<i64> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert!(ports.contains(&50005) && ports.contains(&8201), "{ports:?}");

    // In-memory log: no volume, no path.
    let mem = render(&[
        "--set",
        "global.ha.enabled=true",
        "--set",
        "dapr_placement.cluster.forceInMemoryLog=true",
    ]);
    let sts = get(&mem, "StatefulSet", "dapr-placement-server");
    assert_eq!(sts["spec"]["volumeClaimTemplates"], Value::Null);
    assert_eq!(
        flag_value(&args(&containers(sts)[0]), "--raft-logstore-path"),
        None
    );

    // Single node: no Raft flags, so placement runs its one-node default.
    let single = render(&[]);
    let sts = get(&single, "StatefulSet", "dapr-placement-server");
    assert_eq!(sts["spec"]["replicas"], 1);
    let a = args(&containers(sts)[0]);
    assert_eq!(flag_value(&a, "--initial-cluster"), None);
    assert_eq!(flag_value(&a, "--id"), None);
    // Placement alone in HA (Dapr's dapr_placement.ha).
    let p_ha = render(&[
        "--set",
        "dapr_placement.ha=true",
        "--set",
        "dapr_placement.cluster.forceInMemoryLog=true",
    ]);
    assert_eq!(
        get(&p_ha, "StatefulSet", "dapr-placement-server")["spec"]["replicas"],
        3
    );
    assert_eq!(
        get(&p_ha, "Deployment", "dapr-operator")["spec"]["replicas"],
        1
    );
    assert!(pdbs(&p_ha).is_empty());
}

#[test]
fn actors_disabled_drops_placement() {
    let docs = render(&["--set", "global.actors.enabled=false"]);
    assert!(
        docs.iter().all(|d| !name(d).contains("placement")),
        "{:?}",
        ids(&docs)
    );
    let inj = get(&docs, "Deployment", "dapr-sidecar-injector");
    assert_eq!(
        env_value(&containers(inj)[0], "ACTORS_ENABLED").as_deref(),
        Some("false")
    );
}

#[test]
fn webhook_configuration_follows_values() {
    let docs = render(&[]);
    let mwc = get(
        &docs,
        "MutatingWebhookConfiguration",
        "dapr-sidecar-injector",
    );
    let hooks = mwc["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h["name"], "sidecar-injector.dapr.io");
    assert_eq!(h["failurePolicy"], "Ignore");
    assert_eq!(h["sideEffects"], "None");
    assert_eq!(h["reinvocationPolicy"], "IfNeeded");
    assert_eq!(
        h["clientConfig"]["service"],
        serde_json::json!({"namespace": NS, "name": "dapr-sidecar-injector", "path": "/mutate", "port": 443})
    );
    // The injector owns the caBundle; helm must not overwrite it.
    assert_eq!(h["clientConfig"]["caBundle"], Value::Null);
    assert_eq!(
        h["rules"],
        serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}])
    );
    assert_eq!(h["namespaceSelector"], Value::Null);
    assert_eq!(h["objectSelector"], Value::Null);
    // The Service it names exists and routes to the injector's https port.
    let svc = get(&docs, "Service", "dapr-sidecar-injector");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "https");
    let inj = get(&docs, "Deployment", "dapr-sidecar-injector");
    assert!(
        containers(inj)[0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "https")
    );

    let docs = render(&[
        "--set",
        "dapr_sidecar_injector.webhookFailurePolicy=Fail",
        "--set-json",
        r#"dapr_sidecar_injector.namespaceSelector={"matchLabels":{"dapr":"on"}}"#,
        "--set-json",
        r#"dapr_sidecar_injector.objectSelector={"matchExpressions":[{"key":"dapr.io/enabled","operator":"In","values":["true"]}]}"#,
    ]);
    let h = &get(
        &docs,
        "MutatingWebhookConfiguration",
        "dapr-sidecar-injector",
    )["webhooks"][0];
    assert_eq!(h["failurePolicy"], "Fail");
    assert_eq!(
        h["namespaceSelector"],
        serde_json::json!({"matchLabels": {"dapr": "on"}})
    );
    assert_eq!(
        h["objectSelector"]["matchExpressions"][0]["key"],
        "dapr.io/enabled"
    );

    let off = render(&["--set", "dapr_sidecar_injector.enabled=false"]);
    assert!(
        off.iter().all(|d| !name(d).contains("injector")),
        "{:?}",
        ids(&off)
    );
}

#[test]
fn injector_environment_describes_the_sidecar() {
    let docs = render(&[
        "--set",
        "dapr_sidecar_injector.sidecarImagePullPolicy=Never",
        "--set",
        "dapr_sidecar_injector.allowedServiceAccounts=ns1:sa1",
        "--set",
        "dapr_sidecar_injector.sidecarRunAsUser=1234",
    ]);
    let c = &containers(get(&docs, "Deployment", "dapr-sidecar-injector"))[0];
    let want = [
        ("SIDECAR_IMAGE", "dapr-rs/daprd:dev"),
        ("SIDECAR_IMAGE_PULL_POLICY", "Never"),
        ("SIDECAR_RUN_AS_NON_ROOT", "true"),
        ("SIDECAR_RUN_AS_USER", "1234"),
        ("SIDECAR_READ_ONLY_ROOT_FILESYSTEM", "true"),
        ("SIDECAR_DROP_ALL_CAPABILITIES", "false"),
        ("KUBE_CLUSTER_DOMAIN", "cluster.local"),
        ("ALLOWED_SERVICE_ACCOUNTS", "ns1:sa1"),
        ("ACTORS_ENABLED", "true"),
        ("ACTORS_SERVICE_NAME", "placement"),
        ("ACTORS_SERVICE_ADDRESS", "dapr-placement-server:50005"),
        (
            "DAPR_TRUST_ANCHORS_FILE",
            "/var/run/secrets/dapr.io/tls/ca.crt",
        ),
        ("DAPR_CONTROL_PLANE_TRUST_DOMAIN", "cluster.local"),
        (
            "DAPR_SENTRY_ADDRESS",
            "dapr-sentry.dapr-system.svc.cluster.local:443",
        ),
    ];
    for (k, v) in want {
        assert_eq!(env_value(c, k).as_deref(), Some(v), "{k}");
    }
    // Dapr's default list, as JSON the injector can parse.
    let tolerations: Value = serde_json::from_str(
        &env_value(c, "IGNORE_ENTRYPOINT_TOLERATIONS").expect("IGNORE_ENTRYPOINT_TOLERATIONS"),
    )
    .expect("IGNORE_ENTRYPOINT_TOLERATIONS is JSON");
    assert_eq!(tolerations.as_array().map(Vec::len), Some(4));
    assert_eq!(
        tolerations[3],
        serde_json::json!({"effect": "NoSchedule", "key": "huawei.com/cci"})
    );
    // Dapr's guard: a non-root sidecar needs a positive uid.
    let err =
        template_text(&["--set", "dapr_sidecar_injector.sidecarRunAsUser=0"]).expect_err("uid 0");
    assert!(err.contains("sidecarRunAsUser"), "{err}");
}

#[test]
fn trust_bundle_is_empty_for_sentry_or_carries_the_given_pems() {
    let docs = render(&[]);
    assert_eq!(
        get(&docs, "Secret", "dapr-trust-bundle")["data"],
        Value::Null
    );
    assert_eq!(
        get(&docs, "ConfigMap", "dapr-trust-bundle")["data"],
        Value::Null
    );

    let root = "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n";
    let cert = "-----BEGIN CERTIFICATE-----\nSVNTVUVS\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n";
    let set = [
        "--set-string",
        &format!("dapr_sentry.tls.root.certPEM={root}"),
        "--set-string",
        &format!("dapr_sentry.tls.issuer.certPEM={cert}"),
        "--set-string",
        &format!("dapr_sentry.tls.issuer.keyPEM={key}"),
    ];
    let set: Vec<&str> = set.iter().map(|s| s.as_ref()).collect();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let docs = render(&set);
    let data = &get(&docs, "Secret", "dapr-trust-bundle")["data"];
    assert_eq!(
        data,
        &serde_json::json!({"ca.crt": b64(root), "issuer.crt": b64(cert), "issuer.key": b64(key)})
    );
    assert_eq!(
        get(&docs, "ConfigMap", "dapr-trust-bundle")["data"],
        serde_json::json!({"ca.crt": root})
    );

    // cert-manager's file names: the keys and Sentry's flags follow.
    let mut cm = set.clone();
    cm.extend([
        "--set",
        "global.issuerFilenames.ca=ca.crt",
        "--set",
        "global.issuerFilenames.cert=tls.crt",
        "--set",
        "global.issuerFilenames.key=tls.key",
    ]);
    let docs = render(&cm);
    let data = &get(&docs, "Secret", "dapr-trust-bundle")["data"];
    assert_eq!(
        data,
        &serde_json::json!({"ca.crt": b64(root), "tls.crt": b64(cert), "tls.key": b64(key)})
    );
    let a = args(&containers(get(&docs, "Deployment", "dapr-sentry"))[0]);
    assert_eq!(
        flag_value(&a, "--issuer-ca-filename").as_deref(),
        Some("ca.crt")
    );
    assert_eq!(
        flag_value(&a, "--issuer-certificate-filename").as_deref(),
        Some("tls.crt")
    );
    assert_eq!(
        flag_value(&a, "--issuer-key-filename").as_deref(),
        Some("tls.key")
    );
    // Without them Sentry keeps its defaults.
    let a = args(&containers(get(&render(&[]), "Deployment", "dapr-sentry"))[0]);
    assert_eq!(flag_value(&a, "--issuer-ca-filename"), None);

    // Half a bring-your-own CA is refused with a message, not rendered.
    let err = template_text(&set[..2]).expect_err("partial tls");
    assert!(err.contains("dapr_sentry.tls"), "{err}");
}

#[test]
fn sentry_runs_in_kubernetes_mode_with_the_control_plane_trust_domain() {
    let docs = render(&["--set", "global.mtls.controlPlaneTrustDomain=example.org"]);
    let sentry = &containers(get(&docs, "Deployment", "dapr-sentry"))[0];
    let a = args(sentry);
    assert_eq!(flag_value(&a, "--mode").as_deref(), Some("kubernetes"));
    assert_eq!(
        flag_value(&a, "--trust-domain").as_deref(),
        Some("example.org")
    );
    assert_eq!(flag_value(&a, "--port").as_deref(), Some("50001"));
    let svc = get(&docs, "Service", "dapr-sentry");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 50001);
    // Everyone else presents a token with Sentry's SPIFFE id as audience.
    for w in ["dapr-operator", "dapr-sidecar-injector"] {
        let vols = &get(&docs, "Deployment", w)["spec"]["template"]["spec"]["volumes"];
        let token = vols
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "dapr-identity-token")
            .unwrap_or_else(|| panic!("{w} has no identity token"));
        assert_eq!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "spiffe://example.org/ns/dapr-system/dapr-sentry"
        );
    }
    // The root is mounted by key, so pods wait for Sentry to publish it.
    for w in workloads(&docs)
        .into_iter()
        .filter(|w| name(w) != "dapr-sentry")
    {
        let vols = &w["spec"]["template"]["spec"]["volumes"];
        let tb = vols
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "dapr-trust-bundle")
            .unwrap_or_else(|| panic!("{} has no trust bundle", name(w)));
        assert_eq!(tb["configMap"]["name"], "dapr-trust-bundle");
        assert_eq!(
            tb["configMap"]["items"],
            serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}])
        );
        let mounts = &containers(w)[0]["volumeMounts"];
        assert!(
            mounts
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == "dapr-trust-bundle"
                    && m["mountPath"] == "/var/run/secrets/dapr.io/tls"
                    && m["readOnly"] == true),
            "{}",
            name(w)
        );
    }
    let api = get(&docs, "Service", "dapr-api");
    assert_eq!(api["spec"]["ports"][0]["port"], 443);
    assert_eq!(api["spec"]["ports"][0]["targetPort"], 6500);
}

#[test]
fn daprsystem_configuration_carries_the_mtls_values() {
    let docs = render(&[
        "--set",
        "global.mtls.workloadCertTTL=1h",
        "--set",
        "global.mtls.allowedClockSkew=5m",
        "--set",
        "global.mtls.enabled=false",
    ]);
    let cfg = get(&docs, "Configuration", "daprsystem");
    assert_eq!(cfg["apiVersion"], "dapr.io/v1alpha1");
    assert_eq!(
        cfg["spec"]["mtls"],
        serde_json::json!({
            "enabled": false,
            "workloadCertTTL": "1h",
            "allowedClockSkew": "5m",
            "controlPlaneTrustDomain": "cluster.local",
            "sentryAddress": "dapr-sentry.dapr-system.svc.cluster.local:443",
        })
    );
}

#[test]
fn images_follow_registry_tag_and_full_references() {
    let docs = render(&[
        "--set",
        "global.registry=registry.example:5000/team",
        "--set",
        "global.tag=1.2.3",
        "--set",
        "global.imagePullPolicy=Never",
        "--set",
        "dapr_sentry.image.name=elsewhere.example/sentry@sha256:abc",
    ]);
    let want = [
        (
            "dapr-operator",
            "registry.example:5000/team/dapr-operator:1.2.3",
        ),
        ("dapr-sentry", "elsewhere.example/sentry@sha256:abc"),
        (
            "dapr-sidecar-injector",
            "registry.example:5000/team/dapr-injector:1.2.3",
        ),
        (
            "dapr-placement-server",
            "registry.example:5000/team/dapr-placement:1.2.3",
        ),
    ];
    for (w, image) in want {
        let wl = workloads(&docs)
            .into_iter()
            .find(|d| name(d) == w)
            .expect(w);
        assert_eq!(containers(wl)[0]["image"], image);
        assert_eq!(containers(wl)[0]["imagePullPolicy"], "Never");
    }
    let inj = &containers(get(&docs, "Deployment", "dapr-sidecar-injector"))[0];
    assert_eq!(
        env_value(inj, "SIDECAR_IMAGE").as_deref(),
        Some("registry.example:5000/team/daprd:1.2.3")
    );
}

#[test]
fn scheduling_values_reach_every_pod() {
    let docs = render(&[
        "--set-json",
        r#"global.nodeSelector={"disk":"ssd"}"#,
        "--set-json",
        r#"global.tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]"#,
        "--set",
        "global.priorityClassName=system-cluster-critical",
        "--set",
        "global.imagePullSecrets=regcred",
        "--set",
        "global.seccompProfile=RuntimeDefault",
        "--set",
        "global.logAsJson=true",
        "--set",
        "global.prometheus.enabled=false",
    ]);
    for w in workloads(&docs) {
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"],
            serde_json::json!({"disk": "ssd"}),
            "{}",
            name(w)
        );
        assert_eq!(pod["tolerations"][0]["key"], "dedicated", "{}", name(w));
        assert_eq!(
            pod["priorityClassName"],
            "system-cluster-critical",
            "{}",
            name(w)
        );
        assert_eq!(
            pod["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}]),
            "{}",
            name(w)
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault",
            "{}",
            name(w)
        );
        let a = args(&containers(w)[0]);
        assert!(
            a.contains(&"--log-as-json".to_string()),
            "{}: {a:?}",
            name(w)
        );
        assert!(
            a.contains(&"--enable-metrics=false".to_string()),
            "{}: {a:?}",
            name(w)
        );
        assert!(
            containers(w)[0]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| p["name"] != "metrics"),
            "{}",
            name(w)
        );
    }
    for s in of_kind(&docs, "Service") {
        assert!(
            s["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| p["name"] != "metrics"),
            "{}",
            name(s)
        );
    }
}

/// The CRDs come from `charts/dapr/crds` (helm installs them before the
/// templates and never deletes them).
#[test]
fn crds_are_shipped_with_the_chart() {
    // `helm show crds` concatenates the files without separators; the
    // install path (`--include-crds`) is what matters anyway.
    let docs = render(&["--include-crds"]);
    let names: BTreeSet<&str> = of_kind(&docs, "CustomResourceDefinition")
        .into_iter()
        .map(name)
        .collect();
    for want in [
        "components.dapr.io",
        "configurations.dapr.io",
        "subscriptions.dapr.io",
        "resiliencies.dapr.io",
        "httpendpoints.dapr.io",
    ] {
        assert!(names.contains(want), "missing CRD {want}; have {names:?}");
    }
    for crd in of_kind(&docs, "CustomResourceDefinition") {
        assert_eq!(
            crd["apiVersion"],
            "apiextensions.k8s.io/v1",
            "{}",
            name(crd)
        );
        assert_eq!(crd["spec"]["group"], "dapr.io", "{}", name(crd));
    }
}
