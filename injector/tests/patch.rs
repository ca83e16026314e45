//! The injection patch: golden files for a plain and a fully annotated pod,
//! one check per annotation, and every patch applied to its pod with a real
//! JSON-patch implementation and read back as a Pod.

use std::collections::BTreeMap;

use dapr_injector::{
    patch::{self, PatchError, Request},
    settings::{ActorsService, ServiceRef, Settings},
};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn settings() -> Settings {
    Settings::new("dapr-rs/daprd:dev", "dapr-system")
}

fn pod(annotations: &[(&str, &str)]) -> Value {
    let ann: BTreeMap<&str, &str> = [("dapr.io/enabled", "true")]
        .into_iter()
        .chain(annotations.iter().copied())
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orders-7d9f", "namespace": "shop", "labels": {"app": "orders"}, "annotations": ann},
        "spec": {"containers": [{"name": "app", "image": "orders:1"}]}
    })
}

fn req() -> Request<'static> {
    Request {
        namespace: "shop",
        trust_anchors: ANCHORS,
        mtls_enabled: true,
    }
}

/// The patch as JSON, and the pod it produces.
fn run_with(pod_json: &Value, s: &Settings, r: &Request<'_>) -> (Value, Pod) {
    let pod: Pod = serde_json::from_value(pod_json.clone()).unwrap();
    let p = patch::build(&pod, s, r).unwrap().expect("a patch");
    let mut doc = pod_json.clone();
    json_patch::patch(&mut doc, &p).expect("the patch applies");
    let patched: Pod = serde_json::from_value(doc).expect("the result is a Pod");
    (serde_json::to_value(&p).unwrap(), patched)
}

fn run(pod_json: &Value) -> (Value, Pod) {
    run_with(pod_json, &settings(), &req())
}

fn daprd(p: &Pod) -> Container {
    p.spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == "daprd")
        .cloned()
        .expect("daprd container")
}

fn args(annotations: &[(&str, &str)]) -> Vec<String> {
    daprd(&run(&pod(annotations)).1).args.unwrap()
}

/// `flag value` (or a lone flag when `value` is None) appears in `args`.
fn has(args: &[String], flag: &str, value: Option<&str>) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a == flag && value.is_none_or(|v| args.get(i + 1).map(String::as_str) == Some(v))
    })
}

fn golden(name: &str, got: &Value) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        text, want,
        "golden {name} differs (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn plain_pod_golden() {
    let (p, _) = run(&pod(&[
        ("dapr.io/app-id", "orders"),
        ("dapr.io/app-port", "8080"),
    ]));
    golden("plain_pod.patch.json", &p);
}

#[test]
fn fully_annotated_pod_golden() {
    let mut pj = pod(&[
        ("dapr.io/app-id", "orders"),
        ("dapr.io/app-port", "8080"),
        ("dapr.io/app-protocol", "grpc"),
        ("dapr.io/config", "tracing"),
        ("dapr.io/log-level", "debug"),
        ("dapr.io/log-as-json", "true"),
        ("dapr.io/enable-metrics", "true"),
        ("dapr.io/metrics-port", "9191"),
        ("dapr.io/api-token-secret", "dapr-api-token"),
        ("dapr.io/app-token-secret", "app-token"),
        ("dapr.io/app-max-concurrency", "10"),
        ("dapr.io/enable-app-health-check", "true"),
        ("dapr.io/app-health-check-path", "/ready"),
        ("dapr.io/app-health-probe-interval", "3"),
        ("dapr.io/app-health-probe-timeout", "200"),
        ("dapr.io/app-health-threshold", "2"),
        ("dapr.io/sidecar-cpu-request", "100m"),
        ("dapr.io/sidecar-cpu-limit", "1"),
        ("dapr.io/sidecar-memory-request", "64Mi"),
        ("dapr.io/sidecar-memory-limit", "256Mi"),
        ("dapr.io/sidecar-liveness-probe-delay-seconds", "11"),
        ("dapr.io/sidecar-liveness-probe-timeout-seconds", "12"),
        ("dapr.io/sidecar-liveness-probe-period-seconds", "13"),
        ("dapr.io/sidecar-liveness-probe-threshold", "14"),
        ("dapr.io/sidecar-readiness-probe-delay-seconds", "21"),
        ("dapr.io/sidecar-readiness-probe-timeout-seconds", "22"),
        ("dapr.io/sidecar-readiness-probe-period-seconds", "23"),
        ("dapr.io/sidecar-readiness-probe-threshold", "24"),
        ("dapr.io/http-max-request-size", "16"),
        ("dapr.io/http-read-buffer-size", "8"),
        ("dapr.io/graceful-shutdown-seconds", "30"),
        ("dapr.io/enable-api-logging", "false"),
        ("dapr.io/unix-domain-socket-path", "/tmp/dapr"),
        ("dapr.io/volume-mounts", "certs:/certs"),
        ("dapr.io/volume-mounts-rw", "scratch:/scratch"),
        ("dapr.io/env", "LOG_FORMAT=text,GOMAXPROCS=2"),
        ("dapr.io/env-from-secret", "PASSWORD=db-secret:password"),
        ("dapr.io/placement-host-address", "placement:50005"),
        ("dapr.io/disable-builtin-k8s-secret-store", "true"),
        ("dapr.io/sidecar-image", "dapr-rs/daprd:custom"),
        ("dapr.io/sidecar-listen-addresses", "0.0.0.0"),
        ("dapr.io/sidecar-seccomp-profile-type", "Unconfined"),
    ]);
    pj["spec"]["volumes"] =
        json!([{"name": "certs", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}]);
    pj["spec"]["containers"][0]["env"] = json!([{"name": "DAPR_HTTP_PORT", "value": "1234"}]);
    let (p, patched) = run(&pj);
    golden("full_pod.patch.json", &p);
    // The user's DAPR_HTTP_PORT stays; the others are appended.
    let app = &patched.spec.as_ref().unwrap().containers[0];
    let env: Vec<(String, Option<String>)> = app
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        env,
        vec![
            ("DAPR_HTTP_PORT".into(), Some("1234".into())),
            ("DAPR_GRPC_PORT".into(), Some("50001".into())),
            ("APP_PROTOCOL".into(), Some("grpc".into())),
        ]
    );
}

#[test]
fn base_args_env_probes_and_security() {
    let (_, p) = run(&pod(&[("dapr.io/app-id", "orders")]));
    let c = daprd(&p);
    let a = c.args.clone().unwrap();
    assert_eq!(a[0], "/daprd");
    for (f, v) in [
        ("--mode", "kubernetes"),
        ("--dapr-http-port", "3500"),
        ("--dapr-grpc-port", "50001"),
        ("--dapr-internal-grpc-port", "50002"),
        ("--dapr-public-port", "3501"),
        ("--dapr-listen-addresses", "[::1],127.0.0.1"),
        ("--app-id", "orders"),
        ("--app-protocol", "http"),
        ("--log-level", "info"),
        ("--dapr-graceful-shutdown-seconds", "-1"),
        ("--metrics-port", "9090"),
        (
            "--control-plane-address",
            "dapr-api.dapr-system.svc.cluster.local:443",
        ),
        (
            "--sentry-address",
            "dapr-sentry.dapr-system.svc.cluster.local:443",
        ),
        (
            "--placement-host-address",
            "dapr-placement-server.dapr-system.svc.cluster.local:50005",
        ),
        (
            "--scheduler-host-address",
            "dapr-scheduler-server-a.dapr-system.svc.cluster.local:443",
        ),
    ] {
        assert!(has(&a, f, Some(v)), "{f} {v} missing in {a:?}");
    }
    assert!(has(&a, "--enable-metrics", None));
    assert!(has(&a, "--enable-mtls", None));
    assert!(!has(&a, "--app-port", None));
    assert_eq!(c.command, None);
    assert_eq!(c.image.as_deref(), Some("dapr-rs/daprd:dev"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));

    let ports: Vec<(String, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dapr-http".into(), 3500),
            ("dapr-grpc".into(), 50001),
            ("dapr-internal".into(), 50002),
            ("dapr-metrics".into(), 9090)
        ]
    );

    let env: BTreeMap<String, Value> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect();
    assert_eq!(env["NAMESPACE"]["value"], "shop");
    assert_eq!(env["DAPR_TRUST_ANCHORS"]["value"], ANCHORS);
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env["DAPR_CONTROLPLANE_NAMESPACE"]["value"], "dapr-system");
    assert_eq!(
        env["DAPR_CONTROLPLANE_TRUST_DOMAIN"]["value"],
        "cluster.local"
    );
    assert_eq!(
        env["DAPR_SENTRY_TOKEN_FILE"]["value"],
        "/var/run/secrets/dapr.io/sentrytoken/token"
    );
    assert!(!env.contains_key("DAPR_API_TOKEN"));

    let ready = c.readiness_probe.unwrap();
    let hg = ready.http_get.unwrap();
    assert_eq!(hg.path.as_deref(), Some("/v1.0/healthz"));
    assert_eq!(serde_json::to_value(&hg.port).unwrap(), json!(3501));
    assert_eq!(
        (
            ready.initial_delay_seconds,
            ready.timeout_seconds,
            ready.period_seconds,
            ready.failure_threshold
        ),
        (Some(1), Some(1), Some(1), Some(5))
    );
    let live = c.liveness_probe.unwrap();
    assert_eq!(
        serde_json::to_value(&live.tcp_socket.unwrap().port).unwrap(),
        json!(3501)
    );
    assert_eq!(
        (
            live.initial_delay_seconds,
            live.timeout_seconds,
            live.period_seconds,
            live.failure_threshold
        ),
        (Some(180), Some(3), Some(10), Some(5))
    );

    let sc = serde_json::to_value(c.security_context.unwrap()).unwrap();
    assert_eq!(
        sc,
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    assert_eq!(c.resources, None);

    // The projected token volume for Sentry, mounted read-only.
    let vols = serde_json::to_value(p.spec.as_ref().unwrap().volumes.clone().unwrap()).unwrap();
    assert_eq!(
        vols,
        json!([{"name": "dapr-identity-token", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"audience": "spiffe://cluster.local/ns/dapr-system/dapr-sentry", "expirationSeconds": 7200, "path": "token"}}
        ]}}])
    );
    assert_eq!(
        serde_json::to_value(c.volume_mounts.unwrap()).unwrap(),
        json!([{"name": "dapr-identity-token", "mountPath": "/var/run/secrets/dapr.io/sentrytoken", "readOnly": true}])
    );

    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels["dapr.io/sidecar-injected"], "true");
    assert_eq!(labels["dapr.io/app-id"], "orders");
    assert_eq!(labels["dapr.io/metrics-enabled"], "true");
    assert_eq!(labels["app"], "orders");
}

#[test]
fn each_annotation_maps_to_its_flag() {
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("dapr.io/app-port", "8080", "--app-port", Some("8080")),
        ("dapr.io/app-protocol", "h2c", "--app-protocol", Some("h2c")),
        ("dapr.io/config", "appconfig", "--config", Some("appconfig")),
        ("dapr.io/log-level", "warn", "--log-level", Some("warn")),
        ("dapr.io/log-as-json", "true", "--log-as-json", None),
        (
            "dapr.io/enable-profiling",
            "true",
            "--enable-profiling",
            None,
        ),
        (
            "dapr.io/metrics-port",
            "9999",
            "--metrics-port",
            Some("9999"),
        ),
        (
            "dapr.io/app-max-concurrency",
            "5",
            "--app-max-concurrency",
            Some("5"),
        ),
        (
            "dapr.io/app-max-concurrency",
            "-1",
            "--app-max-concurrency",
            Some("-1"),
        ),
        (
            "dapr.io/http-max-request-size",
            "32",
            "--dapr-http-max-request-size",
            Some("32"),
        ),
        (
            "dapr.io/max-body-size",
            "16Mi",
            "--max-body-size",
            Some("16Mi"),
        ),
        (
            "dapr.io/http-read-buffer-size",
            "4",
            "--dapr-http-read-buffer-size",
            Some("4"),
        ),
        (
            "dapr.io/read-buffer-size",
            "8Ki",
            "--read-buffer-size",
            Some("8Ki"),
        ),
        (
            "dapr.io/graceful-shutdown-seconds",
            "12",
            "--dapr-graceful-shutdown-seconds",
            Some("12"),
        ),
        (
            "dapr.io/block-shutdown-duration",
            "5s",
            "--dapr-block-shutdown-duration",
            Some("5s"),
        ),
        (
            "dapr.io/enable-api-logging",
            "true",
            "--enable-api-logging=true",
            None,
        ),
        (
            "dapr.io/enable-api-logging",
            "false",
            "--enable-api-logging=false",
            None,
        ),
        (
            "dapr.io/unix-domain-socket-path",
            "/tmp/d",
            "--unix-domain-socket",
            Some("/var/run/dapr-sockets"),
        ),
        (
            "dapr.io/disable-builtin-k8s-secret-store",
            "true",
            "--disable-builtin-k8s-secret-store",
            None,
        ),
        (
            "dapr.io/placement-host-address",
            "p:1",
            "--placement-host-address",
            Some("p:1"),
        ),
        (
            "dapr.io/scheduler-host-address",
            "s:2",
            "--scheduler-host-address",
            Some("s:2"),
        ),
        (
            "dapr.io/sidecar-listen-addresses",
            "0.0.0.0",
            "--dapr-listen-addresses",
            Some("0.0.0.0"),
        ),
        (
            "dapr.io/grpc-port",
            "40001",
            "--dapr-grpc-port",
            Some("40001"),
        ),
        (
            "dapr.io/internal-grpc-port",
            "40002",
            "--dapr-internal-grpc-port",
            Some("40002"),
        ),
        (
            "dapr.io/app-channel-address",
            "10.0.0.1",
            "--app-channel-address",
            Some("10.0.0.1"),
        ),
        ("dapr.io/app-ssl", "true", "--app-ssl", None),
        (
            "dapr.io/sentry-request-jwt-audiences",
            "a,b",
            "--sentry-request-jwt-audiences",
            Some("a,b"),
        ),
        (
            "dapr.io/app-binding-options-timeout",
            "3s",
            "--app-binding-options-timeout",
            Some("3s"),
        ),
        (
            "dapr.io/actors-disseminate-timeout",
            "2s",
            "--actors-disseminate-timeout",
            Some("2s"),
        ),
        (
            "dapr.io/disable-init-endpoints",
            "metadata",
            "--disable-init-endpoints",
            Some("metadata"),
        ),
        (
            "dapr.io/enable-app-health-check",
            "true",
            "--app-health-check-path",
            Some("/healthz"),
        ),
    ];
    for (key, value, flag, expect) in cases {
        let a = args(&[(key, value)]);
        assert!(
            has(&a, flag, *expect),
            "{key}={value}: {flag} {expect:?} not in {a:?}"
        );
    }
    let a = args(&[
        ("dapr.io/enable-app-health-check", "yes"),
        ("dapr.io/app-health-check-path", "/up"),
        ("dapr.io/app-health-probe-interval", "7"),
        ("dapr.io/app-health-probe-timeout", "900"),
        ("dapr.io/app-health-threshold", "4"),
    ]);
    assert!(has(&a, "--enable-app-health-check", None));
    assert!(has(&a, "--app-health-check-path", Some("/up")));
    assert!(has(&a, "--app-health-probe-interval", Some("7")));
    assert!(has(&a, "--app-health-probe-timeout", Some("900")));
    assert!(has(&a, "--app-health-threshold", Some("4")));
    // Disabled things are absent.
    let a = args(&[
        ("dapr.io/enable-metrics", "false"),
        ("dapr.io/placement-host-address", " "),
    ]);
    assert!(!has(&a, "--enable-metrics", None));
    assert!(!has(&a, "--metrics-port", None));
    assert!(!has(&a, "--placement-host-address", None));
    assert!(!has(&a, "--enable-app-health-check", None));
    assert!(!has(&a, "--enable-api-logging=true", None));
    let (_, p) = run(&pod(&[("dapr.io/enable-metrics", "false")]));
    assert_eq!(
        p.metadata.labels.unwrap()["dapr.io/metrics-enabled"],
        "false"
    );
}

#[test]
fn debug_wraps_daprd_in_dlv() {
    let c = daprd(
        &run(&pod(&[
            ("dapr.io/enable-debug", "true"),
            ("dapr.io/debug-port", "40001"),
        ]))
        .1,
    );
    let a = c.args.unwrap();
    assert_eq!(
        &a[..4],
        [
            "/dlv",
            "--listen=:40001",
            "--accept-multiclient",
            "--headless=true"
        ]
    );
    assert!(a.iter().any(|x| x == "/daprd"));
    assert!(
        c.ports
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("dapr-debug") && p.container_port == 40001)
    );
}

#[test]
fn resources_env_and_token_secrets() {
    let c = daprd(
        &run(&pod(&[
            ("dapr.io/sidecar-cpu-limit", "500m"),
            ("dapr.io/sidecar-memory-request", "128Mi"),
            ("dapr.io/api-token-secret", "api-tok"),
            ("dapr.io/app-token-secret", "app-tok"),
            ("dapr.io/env", "A=1,B=two,three"),
            ("dapr.io/env-from-secret", "S1=sec1,S2=sec2:key2"),
        ]))
        .1,
    );
    assert_eq!(
        serde_json::to_value(c.resources.unwrap()).unwrap(),
        json!({"limits": {"cpu": "500m"}, "requests": {"memory": "128Mi"}})
    );
    let env: BTreeMap<String, Value> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect();
    assert_eq!(env["A"]["value"], "1");
    assert_eq!(env["B"]["value"], "two,three");
    assert_eq!(
        env["S1"]["valueFrom"]["secretKeyRef"],
        json!({"name": "sec1", "key": "sec1"})
    );
    assert_eq!(
        env["S2"]["valueFrom"]["secretKeyRef"],
        json!({"name": "sec2", "key": "key2"})
    );
    assert_eq!(env["DAPR_ENV_KEYS"]["value"], "A B S1 S2");
    assert_eq!(
        env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"],
        json!({"name": "api-tok", "key": "token"})
    );
    assert_eq!(
        env["APP_API_TOKEN"]["valueFrom"]["secretKeyRef"],
        json!({"name": "app-tok", "key": "token"})
    );
}

#[test]
fn security_settings_and_ssl_cert_dir() {
    let mut s = settings();
    s.run_as_user = Some(1000);
    s.run_as_group = Some(3000);
    s.drop_all_capabilities = false;
    s.default_seccomp_profile = None;
    s.read_only_root_filesystem = false;
    s.pull_policy = "IfNotPresent".into();
    s.enable_k8s_downward_apis = true;
    let (_, p) = run_with(&pod(&[]), &s, &req());
    let c = daprd(&p);
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        serde_json::to_value(c.security_context.unwrap()).unwrap(),
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false, "runAsGroup": 3000, "runAsNonRoot": true, "runAsUser": 1000})
    );
    assert!(c.env.unwrap().iter().any(|e| e.name == "DAPR_HOST_IP"));

    let c = daprd(&run(&pod(&[("dapr.io/env", "SSL_CERT_DIR=/certs")])).1);
    let sc = c.security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(false));
    assert_eq!(
        sc.windows_options.unwrap().run_as_user_name.as_deref(),
        Some("ContainerAdministrator")
    );
}

#[test]
fn cluster_settings_change_addresses() {
    let mut s = settings();
    s.cluster_domain = "corp.local".into();
    s.control_plane_trust_domain = "corp".into();
    s.actors = ActorsService::Other {
        name: "actors".into(),
        service: ServiceRef::new("dapr-actors", 5000),
    };
    s.reminders = Some(("reminders".into(), ServiceRef::new("dapr-reminders", 6000)));
    s.scheduler_enabled = false;
    let r = Request {
        namespace: "shop",
        trust_anchors: ANCHORS,
        mtls_enabled: false,
    };
    let (_, p) = run_with(&pod(&[]), &s, &r);
    let c = daprd(&p);
    let a = c.args.clone().unwrap();
    assert!(has(
        &a,
        "--actors-service",
        Some("actors:dapr-actors.dapr-system.svc.corp.local:5000")
    ));
    assert!(has(
        &a,
        "--reminders-service",
        Some("reminders:dapr-reminders.dapr-system.svc.corp.local:6000")
    ));
    assert!(has(
        &a,
        "--sentry-address",
        Some("dapr-sentry.dapr-system.svc.corp.local:443")
    ));
    assert!(!has(&a, "--placement-host-address", None));
    assert!(!has(&a, "--scheduler-host-address", None));
    assert!(!has(&a, "--enable-mtls", None));
    let vols = serde_json::to_value(p.spec.unwrap().volumes.unwrap()).unwrap();
    assert_eq!(
        vols[0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "spiffe://corp/ns/dapr-system/dapr-sentry"
    );
    // Actors disabled: no placement unless the pod asks for it.
    s.actors = ActorsService::Disabled;
    let a = daprd(&run_with(&pod(&[]), &s, &r).1).args.unwrap();
    assert!(!has(&a, "--placement-host-address", None) && !has(&a, "--actors-service", None));
    let a = daprd(
        &run_with(
            &pod(&[("dapr.io/placement-host-address", "p:50005")]),
            &s,
            &r,
        )
        .1,
    )
    .args
    .unwrap();
    assert!(has(&a, "--placement-host-address", Some("p:50005")));
}

#[test]
fn entrypoint_tolerations_move_daprd_to_command() {
    let mut s = settings();
    s.ignore_entrypoint_tolerations = serde_json::from_value(
        json!([{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}]),
    )
    .unwrap();
    let mut pj = pod(&[]);
    pj["spec"]["tolerations"] =
        json!([{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}]);
    let c = daprd(&run_with(&pj, &s, &req()).1);
    assert_eq!(c.command, Some(vec!["/daprd".to_owned()]));
    assert_eq!(c.args.unwrap()[0], "--dapr-http-port");
}

#[test]
fn volumes_mounts_and_unix_socket() {
    let mut pj = pod(&[
        ("dapr.io/volume-mounts", "certs:/mnt/certs"),
        ("dapr.io/unix-domain-socket-path", "/tmp/dapr-sock"),
    ]);
    pj["spec"]["volumes"] = json!([{"name": "certs", "secret": {"secretName": "c"}}, {"name": "dapr-identity-token", "emptyDir": {}}]);
    pj["spec"]["containers"] = json!([
        {"name": "app", "image": "a", "volumeMounts": [{"name": "certs", "mountPath": "/certs"}]},
        {"name": "helper", "image": "h"}
    ]);
    let (p, patched) = run(&pj);
    // Existing volumes: appended one by one; a name already taken is skipped.
    let ops = p.as_array().unwrap();
    let vol_ops: Vec<&Value> = ops
        .iter()
        .filter(|o| o["path"] == "/spec/volumes/-")
        .collect();
    assert_eq!(vol_ops.len(), 1);
    assert_eq!(vol_ops[0]["value"]["name"], "dapr-unix-domain-socket");
    assert_eq!(vol_ops[0]["value"]["emptyDir"]["medium"], "Memory");
    let spec = patched.spec.unwrap();
    let c = spec.containers.iter().find(|c| c.name == "daprd").unwrap();
    let mounts: Vec<(String, String, Option<bool>)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("certs".into(), "/mnt/certs".into(), Some(true)),
            (
                "dapr-unix-domain-socket".into(),
                "/var/run/dapr-sockets".into(),
                None
            ),
            (
                "dapr-identity-token".into(),
                "/var/run/secrets/dapr.io/sentrytoken".into(),
                Some(true)
            ),
        ]
    );
    for name in ["app", "helper"] {
        let app = spec.containers.iter().find(|c| c.name == name).unwrap();
        assert!(
            app.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "dapr-unix-domain-socket" && m.mount_path == "/tmp/dapr-sock"),
            "{name} lacks the socket mount"
        );
        assert!(app.env.iter().flatten().any(|e| e.name == "DAPR_GRPC_PORT"));
    }
}

#[test]
fn untouched_pods() {
    let s = settings();
    // Not enabled.
    let mut pj = pod(&[]);
    pj["metadata"]["annotations"]["dapr.io/enabled"] = json!("false");
    let p: Pod = serde_json::from_value(pj).unwrap();
    assert!(patch::build(&p, &s, &req()).unwrap().is_none());
    // No annotations at all.
    let mut pj = pod(&[]);
    pj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let p: Pod = serde_json::from_value(pj).unwrap();
    assert!(patch::build(&p, &s, &req()).unwrap().is_none());
    // Already has daprd.
    let mut pj = pod(&[]);
    pj["spec"]["containers"] =
        json!([{"name": "app", "image": "a"}, {"name": "daprd", "image": "d"}]);
    let p: Pod = serde_json::from_value(pj).unwrap();
    assert!(patch::build(&p, &s, &req()).unwrap().is_none());
}

#[test]
fn app_id_defaults() {
    // Pod name.
    let (_, p) = run(&pod(&[]));
    assert!(has(
        &daprd(&p).args.unwrap(),
        "--app-id",
        Some("orders-7d9f")
    ));
    // A Deployment's pod at admission time: no name, owned by a ReplicaSet.
    let mut pj = pod(&[]);
    let meta = pj["metadata"].as_object_mut().unwrap();
    meta.remove("name");
    meta.insert("generateName".into(), json!("checkout-5c8f7b9d4-"));
    meta.insert(
        "labels".into(),
        json!({"app": "checkout", "pod-template-hash": "5c8f7b9d4"}),
    );
    meta.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5c8f7b9d4", "uid": "u", "controller": true}]),
    );
    let (_, p) = run(&pj);
    assert!(has(&daprd(&p).args.unwrap(), "--app-id", Some("checkout")));
    assert_eq!(p.metadata.labels.unwrap()["dapr.io/app-id"], "checkout");
    // generateName only.
    let mut pj = pod(&[]);
    let meta = pj["metadata"].as_object_mut().unwrap();
    meta.remove("name");
    meta.insert("generateName".into(), json!("batch-"));
    let (_, p) = run(&pj);
    assert!(has(&daprd(&p).args.unwrap(), "--app-id", Some("batch")));
    // Nothing to derive from.
    let mut pj = pod(&[]);
    pj["metadata"].as_object_mut().unwrap().remove("name");
    let p: Pod = serde_json::from_value(pj).unwrap();
    assert!(matches!(
        patch::build(&p, &settings(), &req()),
        Err(PatchError::NoAppId)
    ));
    // A derived id that is not a valid Dapr id.
    let mut pj = pod(&[]);
    pj["metadata"]["name"] = json!("x".repeat(62));
    let p: Pod = serde_json::from_value(pj).unwrap();
    let e = patch::build(&p, &settings(), &req()).unwrap_err();
    assert!(e.to_string().contains("dapr.io/app-id"), "{e}");
}

#[test]
fn pod_without_labels_or_containers_gets_them_created() {
    let pj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "annotations": {"dapr.io/enabled": "true"}},
        "spec": {"containers": []}
    });
    let (p, patched) = run(&pj);
    let ops = p.as_array().unwrap();
    assert_eq!(
        ops[0],
        json!({"op": "add", "path": "/spec/containers", "value": []})
    );
    assert_eq!(
        ops[1],
        json!({"op": "add", "path": "/metadata/labels", "value": {}})
    );
    assert_eq!(patched.spec.unwrap().containers.len(), 1);
}

#[test]
fn invalid_annotations_are_refused_with_their_name_and_value() {
    let s = settings();
    for (key, value) in [
        ("dapr.io/app-port", "abc"),
        ("dapr.io/sidecar-cpu-limit", "two cores"),
        ("dapr.io/sidecar-memory-limit", "1GB"),
        ("dapr.io/app-protocol", "tcp"),
        ("dapr.io/sidecar-liveness-probe-period-seconds", "-3"),
        ("dapr.io/app-id", "Bad_Id"),
    ] {
        let p: Pod = serde_json::from_value(pod(&[(key, value)])).unwrap();
        let e = patch::build(&p, &s, &req()).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(value), "{key}={value}: {e}");
    }
    let p: Pod = serde_json::from_value(pod(&[("dapr.io/volume-mounts", "missing:/m")])).unwrap();
    let e = patch::build(&p, &s, &req()).unwrap_err().to_string();
    assert_eq!(
        e,
        "annotation dapr.io/volume-mounts mounts volume 'missing', which the pod does not define in spec.volumes"
    );
}
