//! The `daprd` container, as Dapr's injector builds it.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
        ObjectFieldSelector, Pod, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
        SecurityContext, TCPSocketAction, VolumeMount, WindowsSecurityContextOptions,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use crate::{
    annotations::SidecarAnnotations,
    settings::{ActorsService, Settings},
};

pub const CONTAINER_NAME: &str = "daprd";
pub const TOKEN_VOLUME_NAME: &str = "dapr-identity-token";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken";
pub const UDS_VOLUME_NAME: &str = "dapr-unix-domain-socket";
pub const UDS_DAPRD_PATH: &str = "/var/run/dapr-sockets";

/// Per-pod inputs that do not come from annotations.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub app_id: &'a str,
    /// Namespace of the admission request (the pod's).
    pub namespace: &'a str,
    /// PEM trust anchors given to daprd in `DAPR_TRUST_ANCHORS`.
    pub trust_anchors: &'a str,
    pub mtls_enabled: bool,
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..Default::default()
        }),
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        ..Default::default()
    }
}

/// daprd's command line (without the `/daprd` itself).
pub fn daprd_args(a: &SidecarAnnotations, s: &Settings, ctx: &PodContext<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--dapr-http-port".into(),
        a.http_port.to_string(),
        "--dapr-grpc-port".into(),
        a.grpc_port.to_string(),
        "--dapr-internal-grpc-port".into(),
        a.internal_grpc_port.to_string(),
        "--dapr-listen-addresses".into(),
        a.listen_addresses.clone(),
        "--dapr-public-port".into(),
        a.public_port.to_string(),
        "--app-id".into(),
        ctx.app_id.to_owned(),
        "--app-protocol".into(),
        a.app_protocol.clone(),
        "--log-level".into(),
        a.log_level.clone(),
        "--dapr-graceful-shutdown-seconds".into(),
        a.graceful_shutdown_seconds.to_string(),
        "--mode".into(),
        "kubernetes".into(),
        "--control-plane-address".into(),
        format!("dapr-api.{}.svc.{}:443", s.namespace, s.cluster_domain),
        "--sentry-address".into(),
        format!("dapr-sentry.{}.svc.{}:443", s.namespace, s.cluster_domain),
    ];
    let mut push = |flag: &str, value: Option<String>| {
        args.push(flag.to_owned());
        if let Some(v) = value {
            args.push(v);
        }
    };
    if let Some(p) = a.app_port {
        push("--app-port", Some(p.to_string()));
    }
    if a.enable_metrics {
        push("--enable-metrics", None);
        push("--metrics-port", Some(a.metrics_port.to_string()));
    }
    if let Some(c) = &a.config {
        push("--config", Some(c.clone()));
    }
    if let Some(c) = &a.app_channel_address {
        push("--app-channel-address", Some(c.clone()));
    }
    // The annotation wins over the cluster-wide actors service, and an empty
    // annotation turns placement off for the pod.
    let placement = match (&a.placement_host_address, &s.actors) {
        (Some(p), _) => Some(p.clone()).filter(|p| !p.is_empty()),
        (None, ActorsService::Placement(svc)) => Some(s.service_address(svc)),
        _ => None,
    };
    if let Some(p) = placement {
        push("--placement-host-address", Some(p));
    } else if let (None, ActorsService::Other { name, service }) =
        (&a.placement_host_address, &s.actors)
    {
        push(
            "--actors-service",
            Some(format!("{name}:{}", s.service_address(service))),
        );
    }
    if let Some((name, svc)) = &s.reminders {
        push(
            "--reminders-service",
            Some(format!("{name}:{}", s.service_address(svc))),
        );
    }
    if let Some(aud) = &a.sentry_request_jwt_audiences {
        push("--sentry-request-jwt-audiences", Some(aud.clone()));
    }
    if let Some(on) = a.enable_api_logging {
        push(&format!("--enable-api-logging={on}"), None);
    }
    if a.disable_builtin_k8s_secret_store {
        push("--disable-builtin-k8s-secret-store", None);
    }
    if a.enable_app_health_check {
        push("--enable-app-health-check", None);
        push(
            "--app-health-check-path",
            Some(a.app_health_check_path.clone()),
        );
        push(
            "--app-health-probe-interval",
            Some(a.app_health_probe_interval.to_string()),
        );
        push(
            "--app-health-probe-timeout",
            Some(a.app_health_probe_timeout.to_string()),
        );
        push(
            "--app-health-threshold",
            Some(a.app_health_threshold.to_string()),
        );
    }
    if let Some(t) = &a.app_binding_options_timeout {
        push("--app-binding-options-timeout", Some(t.clone()));
    }
    if a.log_as_json {
        push("--log-as-json", None);
    }
    if a.enable_profiling {
        push("--enable-profiling", None);
    }
    if ctx.mtls_enabled {
        push("--enable-mtls", None);
    }
    if a.app_ssl {
        push("--app-ssl", None);
    }
    if let Some(n) = a.app_max_concurrency {
        push("--app-max-concurrency", Some(n.to_string()));
    }
    if let Some(n) = a.http_max_request_size {
        push("--dapr-http-max-request-size", Some(n.to_string()));
    }
    if let Some(v) = &a.max_body_size {
        push("--max-body-size", Some(v.clone()));
    }
    if let Some(n) = a.http_read_buffer_size {
        push("--dapr-http-read-buffer-size", Some(n.to_string()));
    }
    if let Some(v) = &a.read_buffer_size {
        push("--read-buffer-size", Some(v.clone()));
    }
    if a.unix_domain_socket_path.is_some() {
        push("--unix-domain-socket", Some(UDS_DAPRD_PATH.to_owned()));
    }
    if let Some(d) = &a.block_shutdown_duration {
        push("--dapr-block-shutdown-duration", Some(d.clone()));
    }
    if let Some(d) = &a.actors_disseminate_timeout {
        push("--actors-disseminate-timeout", Some(d.clone()));
    }
    if let Some(addr) = &a.scheduler_host_address {
        push("--scheduler-host-address", Some(addr.clone()));
    } else if s.scheduler_enabled {
        push(
            "--scheduler-host-address",
            Some(format!(
                "dapr-scheduler-server-a.{}.svc.{}:443",
                s.namespace, s.cluster_domain
            )),
        );
    }
    if let Some(v) = &a.disable_init_endpoints {
        push("--disable-init-endpoints", Some(v.clone()));
    }
    args
}

fn security_context(a: &SidecarAnnotations, s: &Settings) -> SecurityContext {
    let seccomp = a
        .seccomp_profile_type
        .clone()
        .or_else(|| s.default_seccomp_profile.clone());
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(s.run_as_non_root),
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        read_only_root_filesystem: Some(s.read_only_root_filesystem),
        seccomp_profile: seccomp.map(|type_| SeccompProfile {
            type_,
            localhost_profile: None,
        }),
        capabilities: s.drop_all_capabilities.then(|| Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..Default::default()
    }
}

fn resources(a: &SidecarAnnotations) -> Option<ResourceRequirements> {
    let pick = |pairs: [(&str, &Option<String>); 2]| {
        let m: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let requests = pick([("cpu", &a.cpu_request), ("memory", &a.memory_request)]);
    let limits = pick([("cpu", &a.cpu_limit), ("memory", &a.memory_limit)]);
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..Default::default()
    })
}

fn probe(timings: crate::annotations::ProbeTimings, http: Option<&str>, port: u16) -> Probe {
    let port = IntOrString::Int(i32::from(port));
    Probe {
        http_get: http.map(|path| HTTPGetAction {
            path: Some(path.to_owned()),
            port: port.clone(),
            ..Default::default()
        }),
        tcp_socket: http
            .is_none()
            .then_some(TCPSocketAction { port, host: None }),
        initial_delay_seconds: Some(timings.delay),
        timeout_seconds: Some(timings.timeout),
        period_seconds: Some(timings.period),
        failure_threshold: Some(timings.threshold),
        ..Default::default()
    }
}

fn has_any_toleration(pod: &Pod, wanted: &[k8s_openapi::api::core::v1::Toleration]) -> bool {
    let Some(have) = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref()) else {
        return false;
    };
    wanted.iter().any(|t| have.contains(t))
}

/// The daprd container for a pod. `mounts` are the daprd volume mounts
/// (annotation mounts, the UDS and the token).
pub fn container(
    a: &SidecarAnnotations,
    s: &Settings,
    ctx: &PodContext<'_>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let mut ports = vec![
        port("dapr-http", a.http_port),
        port("dapr-grpc", a.grpc_port),
        port("dapr-internal", a.internal_grpc_port),
        port("dapr-metrics", a.metrics_port),
    ];
    let mut command = vec!["/daprd".to_owned()];
    let mut args = daprd_args(a, s, ctx);
    if a.enable_debug {
        ports.push(port("dapr-debug", a.debug_port));
        command = vec!["/dlv".to_owned()];
        let mut dlv: Vec<String> = [
            format!("--listen=:{}", a.debug_port),
            "--accept-multiclient".into(),
            "--headless=true".into(),
            "--log".into(),
            "--api-version=2".into(),
            "exec".into(),
            "/daprd".into(),
            "--".into(),
        ]
        .into();
        dlv.append(&mut args);
        args = dlv;
    }

    let mut env_vars = vec![
        env("NAMESPACE", ctx.namespace),
        env(dapr_security::TRUST_ANCHORS_ENV, ctx.trust_anchors),
        env_from_field("POD_NAME", "metadata.name"),
        env("DAPR_CONTROLPLANE_NAMESPACE", &s.namespace),
        env(
            "DAPR_CONTROLPLANE_TRUST_DOMAIN",
            &s.control_plane_trust_domain,
        ),
        env(
            dapr_security::SENTRY_TOKEN_FILE_ENV,
            dapr_security::KUBE_SENTRY_TOKEN_PATH,
        ),
    ];
    if s.enable_k8s_downward_apis {
        env_vars.push(env_from_field("DAPR_HOST_IP", "status.podIP"));
    }
    let mut env_keys = Vec::new();
    for e in &a.env {
        env_keys.push(e.name.clone());
        env_vars.push(env(&e.name, &e.value));
    }
    for e in &a.env_from_secret {
        env_keys.push(e.name.clone());
        // `secret` or `secret:key`; a bare name is also the key (Dapr).
        let v = e.value.trim();
        let (secret, key) = v.split_once(':').unwrap_or((v, v));
        env_vars.push(env_from_secret(&e.name, secret.trim(), key.trim()));
    }
    if !env_keys.is_empty() {
        env_vars.push(env("DAPR_ENV_KEYS", &env_keys.join(" ")));
    }
    if let Some(secret) = &a.api_token_secret {
        env_vars.push(env_from_secret("DAPR_API_TOKEN", secret, "token"));
    }
    if let Some(secret) = &a.app_token_secret {
        env_vars.push(env_from_secret("APP_API_TOKEN", secret, "token"));
    }

    let mut sc = security_context(a, s);
    // Dapr: SSL_CERT_DIR means a Windows image installing certificates, which
    // needs an administrator and a writable root filesystem.
    if a.env.iter().any(|e| e.name == "SSL_CERT_DIR") {
        sc.windows_options = Some(WindowsSecurityContextOptions {
            run_as_user_name: Some("ContainerAdministrator".to_owned()),
            ..Default::default()
        });
        sc.run_as_non_root = Some(false);
        sc.read_only_root_filesystem = Some(false);
        sc.run_as_user = None;
        sc.run_as_group = None;
    }

    let (command, args) = if has_any_toleration(ctx.pod, &s.ignore_entrypoint_tolerations) {
        (Some(command), args)
    } else {
        command.append(&mut args);
        (None, command)
    };

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(
            a.sidecar_image
                .clone()
                .unwrap_or_else(|| s.sidecar_image.clone()),
        ),
        image_pull_policy: Some(s.pull_policy().to_owned()),
        security_context: Some(sc),
        ports: Some(ports),
        command,
        args: Some(args),
        env: Some(env_vars),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        readiness_probe: Some(probe(a.readiness, Some("/v1.0/healthz"), a.public_port)),
        liveness_probe: Some(probe(a.liveness, None, a.public_port)),
        resources: resources(a),
        ..Default::default()
    }
}
