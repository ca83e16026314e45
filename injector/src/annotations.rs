//! The `dapr.io/*` pod annotations, read into typed settings.
//!
//! Names and defaults are Dapr's. Where Dapr silently ignores a value it
//! cannot parse (a port of `abc`, a CPU limit of `lots`), this injector
//! refuses the pod with an [`AnnotationError`] naming the annotation and the
//! value: the pod would otherwise start with a sidecar configured differently
//! from what its author wrote.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::quantity;

pub const ENABLED: &str = "dapr.io/enabled";
pub const APP_ID: &str = "dapr.io/app-id";
pub const APP_PORT: &str = "dapr.io/app-port";
pub const APP_PROTOCOL: &str = "dapr.io/app-protocol";
pub const APP_SSL: &str = "dapr.io/app-ssl";
pub const APP_CHANNEL_ADDRESS: &str = "dapr.io/app-channel-address";
pub const APP_MAX_CONCURRENCY: &str = "dapr.io/app-max-concurrency";
pub const CONFIG: &str = "dapr.io/config";
pub const LOG_LEVEL: &str = "dapr.io/log-level";
pub const LOG_AS_JSON: &str = "dapr.io/log-as-json";
pub const ENABLE_API_LOGGING: &str = "dapr.io/enable-api-logging";
pub const ENABLE_PROFILING: &str = "dapr.io/enable-profiling";
pub const ENABLE_METRICS: &str = "dapr.io/enable-metrics";
pub const METRICS_PORT: &str = "dapr.io/metrics-port";
pub const ENABLE_DEBUG: &str = "dapr.io/enable-debug";
pub const DEBUG_PORT: &str = "dapr.io/debug-port";
pub const API_TOKEN_SECRET: &str = "dapr.io/api-token-secret";
pub const APP_TOKEN_SECRET: &str = "dapr.io/app-token-secret";
pub const ENV: &str = "dapr.io/env";
pub const ENV_FROM_SECRET: &str = "dapr.io/env-from-secret";
pub const GRPC_PORT: &str = "dapr.io/grpc-port";
pub const INTERNAL_GRPC_PORT: &str = "dapr.io/internal-grpc-port";
pub const CPU_REQUEST: &str = "dapr.io/sidecar-cpu-request";
pub const CPU_LIMIT: &str = "dapr.io/sidecar-cpu-limit";
pub const MEMORY_REQUEST: &str = "dapr.io/sidecar-memory-request";
pub const MEMORY_LIMIT: &str = "dapr.io/sidecar-memory-limit";
pub const LISTEN_ADDRESSES: &str = "dapr.io/sidecar-listen-addresses";
pub const LIVENESS_DELAY: &str = "dapr.io/sidecar-liveness-probe-delay-seconds";
pub const LIVENESS_TIMEOUT: &str = "dapr.io/sidecar-liveness-probe-timeout-seconds";
pub const LIVENESS_PERIOD: &str = "dapr.io/sidecar-liveness-probe-period-seconds";
pub const LIVENESS_THRESHOLD: &str = "dapr.io/sidecar-liveness-probe-threshold";
pub const READINESS_DELAY: &str = "dapr.io/sidecar-readiness-probe-delay-seconds";
pub const READINESS_TIMEOUT: &str = "dapr.io/sidecar-readiness-probe-timeout-seconds";
pub const READINESS_PERIOD: &str = "dapr.io/sidecar-readiness-probe-period-seconds";
pub const READINESS_THRESHOLD: &str = "dapr.io/sidecar-readiness-probe-threshold";
pub const SIDECAR_IMAGE: &str = "dapr.io/sidecar-image";
pub const SECCOMP_PROFILE_TYPE: &str = "dapr.io/sidecar-seccomp-profile-type";
pub const HTTP_MAX_REQUEST_SIZE: &str = "dapr.io/http-max-request-size";
pub const MAX_BODY_SIZE: &str = "dapr.io/max-body-size";
pub const HTTP_READ_BUFFER_SIZE: &str = "dapr.io/http-read-buffer-size";
pub const READ_BUFFER_SIZE: &str = "dapr.io/read-buffer-size";
pub const GRACEFUL_SHUTDOWN_SECONDS: &str = "dapr.io/graceful-shutdown-seconds";
pub const BLOCK_SHUTDOWN_DURATION: &str = "dapr.io/block-shutdown-duration";
pub const UNIX_DOMAIN_SOCKET_PATH: &str = "dapr.io/unix-domain-socket-path";
pub const VOLUME_MOUNTS: &str = "dapr.io/volume-mounts";
pub const VOLUME_MOUNTS_RW: &str = "dapr.io/volume-mounts-rw";
pub const DISABLE_BUILTIN_K8S_SECRET_STORE: &str = "dapr.io/disable-builtin-k8s-secret-store";
pub const ENABLE_APP_HEALTH_CHECK: &str = "dapr.io/enable-app-health-check";
pub const APP_HEALTH_CHECK_PATH: &str = "dapr.io/app-health-check-path";
pub const APP_HEALTH_PROBE_INTERVAL: &str = "dapr.io/app-health-probe-interval";
pub const APP_HEALTH_PROBE_TIMEOUT: &str = "dapr.io/app-health-probe-timeout";
pub const APP_HEALTH_THRESHOLD: &str = "dapr.io/app-health-threshold";
pub const APP_BINDING_OPTIONS_TIMEOUT: &str = "dapr.io/app-binding-options-timeout";
pub const PLACEMENT_HOST_ADDRESS: &str = "dapr.io/placement-host-address";
pub const ACTORS_DISSEMINATE_TIMEOUT: &str = "dapr.io/actors-disseminate-timeout";
pub const SCHEDULER_HOST_ADDRESS: &str = "dapr.io/scheduler-host-address";
pub const SENTRY_REQUEST_JWT_AUDIENCES: &str = "dapr.io/sentry-request-jwt-audiences";
pub const DISABLE_INIT_ENDPOINTS: &str = "dapr.io/disable-init-endpoints";

/// An annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid value '{value}' for annotation {key}: {reason}")]
pub struct AnnotationError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl AnnotationError {
    fn new(key: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            key,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A `dapr.io/volume-mounts[-rw]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMountSpec {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

/// A `dapr.io/env` or `dapr.io/env-from-secret` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub name: String,
    pub value: String,
}

/// Everything the annotations say, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarAnnotations {
    pub enabled: bool,
    pub app_id: Option<String>,
    pub app_port: Option<u16>,
    pub app_protocol: String,
    pub app_ssl: bool,
    pub app_channel_address: Option<String>,
    pub app_max_concurrency: Option<i64>,
    pub config: Option<String>,
    pub log_level: String,
    pub log_as_json: bool,
    pub enable_api_logging: Option<bool>,
    pub enable_profiling: bool,
    pub enable_metrics: bool,
    pub metrics_port: u16,
    pub enable_debug: bool,
    pub debug_port: u16,
    pub api_token_secret: Option<String>,
    pub app_token_secret: Option<String>,
    pub env: Vec<EnvEntry>,
    pub env_from_secret: Vec<EnvEntry>,
    pub http_port: u16,
    pub grpc_port: u16,
    pub internal_grpc_port: u16,
    pub public_port: u16,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    pub listen_addresses: String,
    pub liveness: ProbeTimings,
    pub readiness: ProbeTimings,
    pub sidecar_image: Option<String>,
    pub seccomp_profile_type: Option<String>,
    pub http_max_request_size: Option<i64>,
    pub max_body_size: Option<String>,
    pub http_read_buffer_size: Option<i64>,
    pub read_buffer_size: Option<String>,
    pub graceful_shutdown_seconds: i64,
    pub block_shutdown_duration: Option<String>,
    pub unix_domain_socket_path: Option<String>,
    pub volume_mounts: Vec<VolumeMountSpec>,
    pub disable_builtin_k8s_secret_store: bool,
    pub enable_app_health_check: bool,
    pub app_health_check_path: String,
    pub app_health_probe_interval: i64,
    pub app_health_probe_timeout: i64,
    pub app_health_threshold: i64,
    pub app_binding_options_timeout: Option<String>,
    pub placement_host_address: Option<String>,
    pub actors_disseminate_timeout: Option<String>,
    pub scheduler_host_address: Option<String>,
    pub sentry_request_jwt_audiences: Option<String>,
    pub disable_init_endpoints: Option<String>,
}

/// Delay/timeout/period/threshold of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTimings {
    pub delay: i32,
    pub timeout: i32,
    pub period: i32,
    pub threshold: i32,
}

/// Dapr's truthy strings (`dapr/kit` `IsTruthy`); anything else is false.
pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

/// True when the pod opted in with `dapr.io/enabled`.
pub fn dapr_enabled(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(ENABLED).is_some_and(|v| is_truthy(v))
}

const APP_PROTOCOLS: [&str; 5] = ["http", "https", "grpc", "grpcs", "h2c"];
const LOG_LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "fatal"];
const SECCOMP_TYPES: [&str; 3] = ["RuntimeDefault", "Unconfined", "Localhost"];

struct Reader<'a>(&'a BTreeMap<String, String>);

impl Reader<'_> {
    fn raw(&self, key: &'static str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn string(&self, key: &'static str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    /// A string that must not be blank when given.
    fn non_empty(&self, key: &'static str) -> Result<Option<String>, AnnotationError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => {
                Err(AnnotationError::new(key, v, "must not be empty"))
            }
            Some(v) => Ok(Some(v.trim().to_owned())),
        }
    }

    fn flag(&self, key: &'static str, default: bool) -> bool {
        self.raw(key).map_or(default, is_truthy)
    }

    fn int(&self, key: &'static str, min: i64, max: i64) -> Result<Option<i64>, AnnotationError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| AnnotationError::new(key, v, "not an integer"))?;
        if n < min || n > max {
            return Err(AnnotationError::new(
                key,
                v,
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(Some(n))
    }

    fn port(&self, key: &'static str, default: u16) -> Result<u16, AnnotationError> {
        Ok(self
            .int(key, 1, 65535)?
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default))
    }

    fn seconds(&self, key: &'static str, default: i32, min: i64) -> Result<i32, AnnotationError> {
        Ok(self
            .int(key, min, i64::from(i32::MAX))?
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(default))
    }

    fn quantity(&self, key: &'static str) -> Result<Option<String>, AnnotationError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if quantity::is_valid(v.trim()) => Ok(Some(v.trim().to_owned())),
            Some(v) => Err(AnnotationError::new(
                key,
                v,
                "not a Kubernetes resource quantity (e.g. 100m, 0.5, 256Mi, 1Gi)",
            )),
        }
    }

    fn one_of(
        &self,
        key: &'static str,
        allowed: &[&str],
        lowercase: bool,
    ) -> Result<Option<String>, AnnotationError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let t = v.trim();
        let check = if lowercase {
            t.to_ascii_lowercase()
        } else {
            t.to_owned()
        };
        if allowed.contains(&check.as_str()) {
            Ok(Some(t.to_owned()))
        } else {
            Err(AnnotationError::new(
                key,
                v,
                format!("must be one of {}", allowed.join(", ")),
            ))
        }
    }

    /// Placement and scheduler addresses: Dapr trims quotes and blanks, and an
    /// empty value is kept (it disables the feature in daprd).
    fn address(&self, key: &'static str) -> Option<String> {
        self.raw(key)
            .map(|v| v.trim().trim_matches(['"', '\'']).trim().to_owned())
    }
}

impl SidecarAnnotations {
    /// Reads and validates every supported annotation.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, AnnotationError> {
        let r = Reader(annotations);
        let app_id = match r.raw(APP_ID) {
            None => None,
            Some(v) => {
                validate_app_id(v).map_err(|reason| AnnotationError::new(APP_ID, v, reason))?;
                Some(v.to_owned())
            }
        };
        let app_port = match r.int(APP_PORT, 0, 65535)? {
            Some(0) | None => None,
            Some(p) => u16::try_from(p).ok(),
        };
        let mut volume_mounts = parse_volume_mounts(VOLUME_MOUNTS, r.raw(VOLUME_MOUNTS), true)?;
        volume_mounts.extend(parse_volume_mounts(
            VOLUME_MOUNTS_RW,
            r.raw(VOLUME_MOUNTS_RW),
            false,
        )?);
        let unix_domain_socket_path = match r.non_empty(UNIX_DOMAIN_SOCKET_PATH)? {
            Some(p) if !p.starts_with('/') => {
                return Err(AnnotationError::new(
                    UNIX_DOMAIN_SOCKET_PATH,
                    &p,
                    "must be an absolute path",
                ));
            }
            p => p,
        };
        let app_health_check_path = r
            .string(APP_HEALTH_CHECK_PATH)
            .unwrap_or_else(|| "/healthz".to_owned());
        if !app_health_check_path.starts_with('/') {
            return Err(AnnotationError::new(
                APP_HEALTH_CHECK_PATH,
                &app_health_check_path,
                "must start with /",
            ));
        }
        Ok(Self {
            enabled: r.flag(ENABLED, false),
            app_id,
            app_port,
            app_protocol: r
                .one_of(APP_PROTOCOL, &APP_PROTOCOLS, true)?
                .unwrap_or_else(|| "http".to_owned()),
            app_ssl: r.flag(APP_SSL, false),
            app_channel_address: r.non_empty(APP_CHANNEL_ADDRESS)?,
            app_max_concurrency: r.int(APP_MAX_CONCURRENCY, -1, i64::from(i32::MAX))?,
            config: r.non_empty(CONFIG)?,
            log_level: r
                .one_of(LOG_LEVEL, &LOG_LEVELS, true)?
                .unwrap_or_else(|| "info".to_owned()),
            log_as_json: r.flag(LOG_AS_JSON, false),
            enable_api_logging: r.raw(ENABLE_API_LOGGING).map(is_truthy),
            enable_profiling: r.flag(ENABLE_PROFILING, false),
            enable_metrics: r.flag(ENABLE_METRICS, true),
            metrics_port: r.port(METRICS_PORT, 9090)?,
            enable_debug: r.flag(ENABLE_DEBUG, false),
            debug_port: r.port(DEBUG_PORT, 40000)?,
            api_token_secret: r.non_empty(API_TOKEN_SECRET)?,
            app_token_secret: r.non_empty(APP_TOKEN_SECRET)?,
            env: parse_env(ENV, r.raw(ENV))?,
            env_from_secret: parse_env(ENV_FROM_SECRET, r.raw(ENV_FROM_SECRET))?,
            http_port: 3500,
            grpc_port: r.port(GRPC_PORT, 50001)?,
            internal_grpc_port: r.port(INTERNAL_GRPC_PORT, 50002)?,
            public_port: 3501,
            cpu_request: r.quantity(CPU_REQUEST)?,
            cpu_limit: r.quantity(CPU_LIMIT)?,
            memory_request: r.quantity(MEMORY_REQUEST)?,
            memory_limit: r.quantity(MEMORY_LIMIT)?,
            listen_addresses: r
                .non_empty(LISTEN_ADDRESSES)?
                .unwrap_or_else(|| "[::1],127.0.0.1".to_owned()),
            liveness: ProbeTimings {
                delay: r.seconds(LIVENESS_DELAY, 180, 0)?,
                timeout: r.seconds(LIVENESS_TIMEOUT, 3, 1)?,
                period: r.seconds(LIVENESS_PERIOD, 10, 1)?,
                threshold: r.seconds(LIVENESS_THRESHOLD, 5, 1)?,
            },
            readiness: ProbeTimings {
                delay: r.seconds(READINESS_DELAY, 1, 0)?,
                timeout: r.seconds(READINESS_TIMEOUT, 1, 1)?,
                period: r.seconds(READINESS_PERIOD, 1, 1)?,
                threshold: r.seconds(READINESS_THRESHOLD, 5, 1)?,
            },
            sidecar_image: r.non_empty(SIDECAR_IMAGE)?,
            seccomp_profile_type: r.one_of(SECCOMP_PROFILE_TYPE, &SECCOMP_TYPES, false)?,
            http_max_request_size: r.int(HTTP_MAX_REQUEST_SIZE, 1, i64::from(i32::MAX))?,
            max_body_size: r.quantity(MAX_BODY_SIZE)?,
            http_read_buffer_size: r.int(HTTP_READ_BUFFER_SIZE, 1, i64::from(i32::MAX))?,
            read_buffer_size: r.quantity(READ_BUFFER_SIZE)?,
            graceful_shutdown_seconds: r
                .int(GRACEFUL_SHUTDOWN_SECONDS, -1, i64::from(i32::MAX))?
                .unwrap_or(-1),
            block_shutdown_duration: r.non_empty(BLOCK_SHUTDOWN_DURATION)?,
            unix_domain_socket_path,
            volume_mounts,
            disable_builtin_k8s_secret_store: r.flag(DISABLE_BUILTIN_K8S_SECRET_STORE, false),
            enable_app_health_check: r.flag(ENABLE_APP_HEALTH_CHECK, false),
            app_health_check_path,
            app_health_probe_interval: r
                .int(APP_HEALTH_PROBE_INTERVAL, 1, i64::from(i32::MAX))?
                .unwrap_or(5),
            app_health_probe_timeout: r
                .int(APP_HEALTH_PROBE_TIMEOUT, 1, i64::from(i32::MAX))?
                .unwrap_or(500),
            app_health_threshold: r
                .int(APP_HEALTH_THRESHOLD, 1, i64::from(i32::MAX))?
                .unwrap_or(3),
            app_binding_options_timeout: r.non_empty(APP_BINDING_OPTIONS_TIMEOUT)?,
            placement_host_address: r.address(PLACEMENT_HOST_ADDRESS),
            actors_disseminate_timeout: r.non_empty(ACTORS_DISSEMINATE_TIMEOUT)?,
            scheduler_host_address: r.address(SCHEDULER_HOST_ADDRESS),
            sentry_request_jwt_audiences: r.non_empty(SENTRY_REQUEST_JWT_AUDIENCES)?,
            disable_init_endpoints: r.string(DISABLE_INIT_ENDPOINTS),
        })
    }

    /// The protocol given to app containers in `APP_PROTOCOL` (Dapr folds the
    /// deprecated `app-ssl` into it).
    pub fn effective_app_protocol(&self) -> String {
        let p = self.app_protocol.to_ascii_lowercase();
        match (p.as_str(), self.app_ssl) {
            ("http", true) => "https".to_owned(),
            ("grpc", true) => "grpcs".to_owned(),
            _ => p,
        }
    }
}

/// Dapr's Kubernetes app-id rule: `<app-id>-dapr` (the sidecar Service name)
/// must be a DNS-1123 label.
pub fn validate_app_id(app_id: &str) -> Result<(), String> {
    if app_id.is_empty() {
        return Err("the app id is empty".to_owned());
    }
    let service = format!("{app_id}-dapr");
    if service.len() > 63 {
        return Err(format!(
            "the sidecar service name '{service}' is longer than 63 characters"
        ));
    }
    let b = service.as_bytes();
    let ok_inner = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    let ok_ends = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok_inner && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "the sidecar service name '{service}' is not a lowercase RFC 1123 label (lower case alphanumerics and '-', starting and ending with an alphanumeric)"
        ))
    }
}

fn parse_volume_mounts(
    key: &'static str,
    raw: Option<&str>,
    read_only: bool,
) -> Result<Vec<VolumeMountSpec>, AnnotationError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        match parts.as_slice() {
            [volume, path] if !volume.is_empty() && path.starts_with('/') => {
                out.push(VolumeMountSpec {
                    volume: (*volume).to_owned(),
                    path: (*path).to_owned(),
                    read_only,
                });
            }
            _ => {
                return Err(AnnotationError::new(
                    key,
                    raw,
                    format!("entry '{entry}' is not <volume-name>:<absolute-mount-path>"),
                ));
            }
        }
    }
    Ok(out)
}

/// `K=V,K2=V2`, where a comma only separates entries when a `NAME=` follows
/// it (so values may contain commas), as Dapr splits them.
fn parse_env(key: &'static str, raw: Option<&str>) -> Result<Vec<EnvEntry>, AnnotationError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in split_env(raw) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((name, value)) = part.split_once('=') else {
            return Err(AnnotationError::new(
                key,
                raw,
                format!("entry '{part}' is not NAME=value"),
            ));
        };
        let name = name.trim();
        if !is_env_name(name) {
            return Err(AnnotationError::new(
                key,
                raw,
                format!("'{name}' is not a valid environment variable name"),
            ));
        }
        out.push(EnvEntry {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn split_env(raw: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in raw.match_indices(',') {
        let rest = raw[i + 1..].trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len > 0 && is_env_name(&rest[..name_len]) && rest[name_len..].starts_with('=') {
            parts.push(&raw[start..i]);
            start = i + 1;
        }
    }
    parts.push(&raw[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> AnnotationError {
        match SidecarAnnotations::parse(&ann(pairs)) {
            Err(e) => e,
            Ok(a) => panic!("expected an error for {pairs:?}, got {a:?}"),
        }
    }

    #[test]
    fn defaults_are_daprs() {
        let a = SidecarAnnotations::parse(&ann(&[(ENABLED, "true")])).unwrap();
        assert!(a.enabled);
        assert_eq!(a.app_protocol, "http");
        assert_eq!(a.log_level, "info");
        assert!(a.enable_metrics);
        assert_eq!(a.metrics_port, 9090);
        assert_eq!((a.grpc_port, a.internal_grpc_port), (50001, 50002));
        assert_eq!(a.listen_addresses, "[::1],127.0.0.1");
        assert_eq!(
            a.liveness,
            ProbeTimings {
                delay: 180,
                timeout: 3,
                period: 10,
                threshold: 5
            }
        );
        assert_eq!(
            a.readiness,
            ProbeTimings {
                delay: 1,
                timeout: 1,
                period: 1,
                threshold: 5
            }
        );
        assert_eq!(a.graceful_shutdown_seconds, -1);
        assert_eq!(a.app_health_check_path, "/healthz");
        assert_eq!(
            (
                a.app_health_probe_interval,
                a.app_health_probe_timeout,
                a.app_health_threshold
            ),
            (5, 500, 3)
        );
        assert_eq!(a.app_port, None);
        assert_eq!(a.enable_api_logging, None);
    }

    #[test]
    fn truthy_values() {
        for v in ["true", "TRUE", "1", "yes", "y", "on", "t"] {
            assert!(is_truthy(v), "{v}");
        }
        for v in ["false", "0", "no", "", "enabled"] {
            assert!(!is_truthy(v), "{v}");
        }
    }

    #[test]
    fn bad_values_name_the_annotation_and_value() {
        let e = err(&[(APP_PORT, "abc")]);
        assert_eq!(e.key, APP_PORT);
        assert_eq!(e.value, "abc");
        assert_eq!(
            e.to_string(),
            "invalid value 'abc' for annotation dapr.io/app-port: not an integer"
        );
        assert_eq!(err(&[(APP_PORT, "70000")]).key, APP_PORT);
        let e = err(&[(CPU_LIMIT, "lots")]);
        assert_eq!(e.key, CPU_LIMIT);
        assert!(e.to_string().contains("resource quantity"), "{e}");
        assert_eq!(err(&[(MEMORY_REQUEST, "1GB")]).key, MEMORY_REQUEST);
        assert_eq!(err(&[(APP_PROTOCOL, "tcp")]).key, APP_PROTOCOL);
        assert_eq!(err(&[(LOG_LEVEL, "loud")]).key, LOG_LEVEL);
        assert_eq!(err(&[(METRICS_PORT, "-1")]).key, METRICS_PORT);
        assert_eq!(err(&[(LIVENESS_THRESHOLD, "0")]).key, LIVENESS_THRESHOLD);
        assert_eq!(err(&[(READINESS_PERIOD, "x")]).key, READINESS_PERIOD);
        assert_eq!(
            err(&[(APP_MAX_CONCURRENCY, "1.5")]).key,
            APP_MAX_CONCURRENCY
        );
        assert_eq!(
            err(&[(GRACEFUL_SHUTDOWN_SECONDS, "-2")]).key,
            GRACEFUL_SHUTDOWN_SECONDS
        );
        assert_eq!(err(&[(APP_ID, "My_App")]).key, APP_ID);
        assert_eq!(err(&[(VOLUME_MOUNTS, "data")]).key, VOLUME_MOUNTS);
        assert_eq!(
            err(&[(VOLUME_MOUNTS_RW, "data:rel/path")]).key,
            VOLUME_MOUNTS_RW
        );
        assert_eq!(err(&[(ENV, "1BAD=x")]).key, ENV);
        assert_eq!(
            err(&[(UNIX_DOMAIN_SOCKET_PATH, "tmp")]).key,
            UNIX_DOMAIN_SOCKET_PATH
        );
        assert_eq!(
            err(&[(SECCOMP_PROFILE_TYPE, "runtimedefault")]).key,
            SECCOMP_PROFILE_TYPE
        );
        assert_eq!(err(&[(MAX_BODY_SIZE, "big")]).key, MAX_BODY_SIZE);
        assert_eq!(
            err(&[(HTTP_MAX_REQUEST_SIZE, "0")]).key,
            HTTP_MAX_REQUEST_SIZE
        );
        assert_eq!(err(&[(CONFIG, " ")]).key, CONFIG);
        assert_eq!(
            err(&[(APP_HEALTH_CHECK_PATH, "healthz")]).key,
            APP_HEALTH_CHECK_PATH
        );
    }

    #[test]
    fn app_id_rule() {
        assert!(validate_app_id("orders").is_ok());
        assert!(validate_app_id("a1-b2").is_ok());
        assert!(validate_app_id("").is_err());
        assert!(validate_app_id("Orders").is_err());
        assert!(validate_app_id("-x").is_err());
        assert!(validate_app_id(&"a".repeat(58)).is_ok());
        assert!(validate_app_id(&"a".repeat(59)).is_err());
    }

    #[test]
    fn env_split_keeps_commas_inside_values() {
        let a = SidecarAnnotations::parse(&ann(&[(ENV, "A=1,B=x,y, C_2=z=w")])).unwrap();
        let got: Vec<(&str, &str)> = a
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(got, vec![("A", "1"), ("B", "x,y"), ("C_2", "z=w")]);
    }

    #[test]
    fn volume_mounts_ro_and_rw() {
        let a = SidecarAnnotations::parse(&ann(&[
            (VOLUME_MOUNTS, "certs:/certs, cfg:/etc/cfg"),
            (VOLUME_MOUNTS_RW, "scratch:/tmp/scratch"),
        ]))
        .unwrap();
        assert_eq!(a.volume_mounts.len(), 3);
        assert!(a.volume_mounts[0].read_only && a.volume_mounts[1].read_only);
        assert!(!a.volume_mounts[2].read_only);
        assert_eq!(a.volume_mounts[1].path, "/etc/cfg");
    }

    #[test]
    fn addresses_are_trimmed_and_empty_kept() {
        let a = SidecarAnnotations::parse(&ann(&[
            (PLACEMENT_HOST_ADDRESS, " \"\" "),
            (SCHEDULER_HOST_ADDRESS, "'sched:50006'"),
        ]))
        .unwrap();
        assert_eq!(a.placement_host_address.as_deref(), Some(""));
        assert_eq!(a.scheduler_host_address.as_deref(), Some("sched:50006"));
    }

    #[test]
    fn app_protocol_with_app_ssl() {
        let a =
            SidecarAnnotations::parse(&ann(&[(APP_PROTOCOL, "GRPC"), (APP_SSL, "true")])).unwrap();
        assert_eq!(a.app_protocol, "GRPC");
        assert_eq!(a.effective_app_protocol(), "grpcs");
    }
}
