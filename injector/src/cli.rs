//! Command line and environment: Dapr's injector flags, plus its environment
//! variables (each also accepted as a flag of the same meaning).

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use thiserror::Error;

use crate::{
    annotations::is_truthy,
    authz::{Allowed, PatternError},
    settings::{ActorsService, ServiceRef, Settings},
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Allowed(#[from] PatternError),
}

fn bool_arg(s: &str) -> Result<bool, String> {
    Ok(is_truthy(s))
}

/// Mutating admission webhook that adds the `daprd` container to annotated pods.
#[derive(Parser, Debug, Clone)]
#[command(name = "dapr-injector", version, about)]
pub struct Args {
    /// Port of the TLS webhook (`POST /mutate`).
    #[arg(long, default_value_t = 4000)]
    pub port: u16,
    /// Listen address of the webhook ("" = all interfaces).
    #[arg(long, default_value = "")]
    pub listen_address: String,
    /// Port of the healthz endpoint (`GET /healthz`).
    #[arg(long, default_value_t = 8080)]
    pub healthz_port: u16,
    #[arg(long, default_value = "")]
    pub healthz_listen_address: String,
    /// Serve Prometheus metrics.
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = bool_arg)]
    pub enable_metrics: bool,
    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    #[arg(long, default_value = "")]
    pub metrics_listen_address: String,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON.
    #[arg(long)]
    pub log_as_json: bool,
    /// Kubeconfig to use; without it, the in-cluster configuration when
    /// running in a pod, else `$KUBECONFIG`, else no cluster access.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Inject `--scheduler-host-address` pointing at Dapr's scheduler.
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = bool_arg)]
    pub scheduler_enabled: bool,

    /// Serving certificate (PEM chain). With --tls-key-file, the certificate
    /// comes from these files (reloaded on change) instead of Sentry.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// With file certificates: the CA to publish in the webhook
    /// configuration's caBundle (omit to leave caBundle alone).
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// How often certificate and trust-anchor files are checked for changes.
    #[arg(long, default_value_t = 5)]
    pub cert_reload_seconds: u64,
    /// MutatingWebhookConfiguration whose caBundle the injector keeps current.
    #[arg(
        long,
        env = "WEBHOOK_CONFIG_NAME",
        default_value = "dapr-sidecar-injector"
    )]
    pub webhook_config_name: String,

    // --- Dapr's injector environment ---
    /// daprd image injected into pods (required).
    #[arg(long, env = "SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    #[arg(long, env = "SIDECAR_IMAGE_PULL_POLICY", default_value = "Always")]
    pub sidecar_image_pull_policy: String,
    /// Control-plane namespace (required).
    #[arg(long, env = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Cluster domain; detected from /etc/resolv.conf when empty.
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN", default_value = "")]
    pub kube_cluster_domain: String,
    /// Extra `namespace:serviceaccount` globs allowed to get pods injected.
    #[arg(long, env = "ALLOWED_SERVICE_ACCOUNTS", default_value = "")]
    pub allowed_service_accounts: String,
    /// Deprecated alias of ALLOWED_SERVICE_ACCOUNTS (prefix globs).
    #[arg(
        long,
        env = "ALLOWED_SERVICE_ACCOUNTS_PREFIX_NAMES",
        default_value = ""
    )]
    pub allowed_service_accounts_prefix_names: String,
    /// JSON list of tolerations; pods with one of them get daprd as `command`.
    #[arg(long, env = "IGNORE_ENTRYPOINT_TOLERATIONS", default_value = "")]
    pub ignore_entrypoint_tolerations: String,
    #[arg(long, env = "ACTORS_ENABLED", default_value = "")]
    pub actors_enabled: String,
    #[arg(long, env = "ACTORS_SERVICE_NAME", default_value = "")]
    pub actors_service_name: String,
    #[arg(long, env = "ACTORS_SERVICE_ADDRESS", default_value = "")]
    pub actors_service_address: String,
    #[arg(long, env = "REMINDERS_SERVICE_NAME", default_value = "")]
    pub reminders_service_name: String,
    #[arg(long, env = "REMINDERS_SERVICE_ADDRESS", default_value = "")]
    pub reminders_service_address: String,
    #[arg(long, env = "SIDECAR_RUN_AS_NON_ROOT", default_value = "")]
    pub sidecar_run_as_non_root: String,
    #[arg(long, env = "SIDECAR_RUN_AS_USER", default_value = "")]
    pub sidecar_run_as_user: String,
    #[arg(long, env = "SIDECAR_RUN_AS_GROUP", default_value = "")]
    pub sidecar_run_as_group: String,
    #[arg(long, env = "SIDECAR_READ_ONLY_ROOT_FILESYSTEM", default_value = "")]
    pub sidecar_read_only_root_filesystem: String,
    /// Drop ALL capabilities (default true here; Dapr's default is false).
    #[arg(long, env = "SIDECAR_DROP_ALL_CAPABILITIES", default_value = "")]
    pub sidecar_drop_all_capabilities: String,
    /// Seccomp profile when the pod does not choose one ("" = none).
    #[arg(
        long,
        env = "SIDECAR_SECCOMP_PROFILE_TYPE",
        default_value = "RuntimeDefault"
    )]
    pub sidecar_seccomp_profile_type: String,
    #[arg(long, env = "ENABLE_K8S_DOWNWARD_APIS", default_value = "")]
    pub enable_k8s_downward_apis: String,
    /// Trust anchors given to sidecars (and, with Sentry, the caBundle).
    #[arg(
        long,
        env = "DAPR_TRUST_ANCHORS_FILE",
        default_value = dapr_security::CONTROL_PLANE_TRUST_ANCHORS_PATH
    )]
    pub trust_anchors_file: PathBuf,
    #[arg(
        long,
        env = "DAPR_CONTROL_PLANE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub control_plane_trust_domain: String,
    /// Sentry for the injector's own certificate (default
    /// dapr-sentry.<namespace>.svc.<cluster-domain>:443).
    #[arg(long, env = "DAPR_SENTRY_ADDRESS")]
    pub sentry_address: Option<String>,
}

fn truthy_default_true(v: &str) -> bool {
    v.trim().is_empty() || is_truthy(v)
}

fn opt_int(name: &str, v: &str) -> Result<Option<i64>, ConfigError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    v.trim()
        .parse()
        .map(Some)
        .map_err(|_| ConfigError::Invalid(format!("{name} '{v}' is not an integer")))
}

/// The cluster domain from resolv.conf's `search <ns>.svc.<domain>`.
pub fn cluster_domain_from_resolv(resolv: &str) -> Option<String> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(str::split_whitespace)
        .find_map(|d| d.split_once(".svc.").map(|(_, dom)| dom.to_owned()))
        .filter(|d| !d.is_empty())
}

impl Args {
    pub fn cert_reload_interval(&self) -> Duration {
        Duration::from_secs(self.cert_reload_seconds.max(1))
    }

    pub fn namespace(&self) -> Result<String, ConfigError> {
        self.namespace
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid("NAMESPACE (or --namespace) is required".to_owned())
            })
    }

    pub fn cluster_domain(&self) -> String {
        if !self.kube_cluster_domain.trim().is_empty() {
            return self.kube_cluster_domain.trim().to_owned();
        }
        std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|r| cluster_domain_from_resolv(&r))
            .unwrap_or_else(|| "cluster.local".to_owned())
    }

    pub fn allowed(&self) -> Result<Allowed, ConfigError> {
        Ok(Allowed::new(
            self.allowed_service_accounts
                .split(',')
                .chain(self.allowed_service_accounts_prefix_names.split(',')),
        )?)
    }

    /// The settings every injected sidecar is built from.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let image = self
            .sidecar_image
            .clone()
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid("SIDECAR_IMAGE (or --sidecar-image) is required".to_owned())
            })?;
        let mut s = Settings::new(&image, &self.namespace()?);
        s.pull_policy = self.sidecar_image_pull_policy.clone();
        s.cluster_domain = self.cluster_domain();
        s.control_plane_trust_domain = self.control_plane_trust_domain.clone();
        s.run_as_non_root = truthy_default_true(&self.sidecar_run_as_non_root);
        s.run_as_user = opt_int("SIDECAR_RUN_AS_USER", &self.sidecar_run_as_user)?;
        s.run_as_group = opt_int("SIDECAR_RUN_AS_GROUP", &self.sidecar_run_as_group)?;
        s.read_only_root_filesystem = truthy_default_true(&self.sidecar_read_only_root_filesystem);
        s.drop_all_capabilities = truthy_default_true(&self.sidecar_drop_all_capabilities);
        s.default_seccomp_profile =
            Some(self.sidecar_seccomp_profile_type.trim().to_owned()).filter(|p| !p.is_empty());
        s.enable_k8s_downward_apis = is_truthy(&self.enable_k8s_downward_apis);
        s.scheduler_enabled = self.scheduler_enabled;
        if !self.ignore_entrypoint_tolerations.trim().is_empty() {
            // Dapr logs and ignores a bad list; so do we.
            match serde_json::from_str(&self.ignore_entrypoint_tolerations) {
                Ok(t) => s.ignore_entrypoint_tolerations = t,
                Err(e) => {
                    tracing::warn!(error = %e, "IGNORE_ENTRYPOINT_TOLERATIONS is not a JSON list of tolerations; ignored");
                }
            }
        }
        s.actors = if !truthy_default_true(&self.actors_enabled) {
            ActorsService::Disabled
        } else if self.actors_service_name.trim().is_empty() {
            ActorsService::Placement(ServiceRef::new("dapr-placement-server", 50005))
        } else {
            let svc = ServiceRef::parse(&self.actors_service_address).map_err(|e| {
                ConfigError::Invalid(format!("invalid ACTORS_SERVICE_ADDRESS: {e}"))
            })?;
            if self.actors_service_name == "placement" {
                ActorsService::Placement(svc)
            } else {
                ActorsService::Other {
                    name: self.actors_service_name.clone(),
                    service: svc,
                }
            }
        };
        let rem = self.reminders_service_name.trim();
        if !rem.is_empty() && rem != "default" {
            let svc = ServiceRef::parse(&self.reminders_service_address).map_err(|e| {
                ConfigError::Invalid(format!("invalid REMINDERS_SERVICE_ADDRESS: {e}"))
            })?;
            s.reminders = Some((rem.to_owned(), svc));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut v = vec!["dapr-injector"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn daprs_flag_forms() {
        let a = parse(&[
            "--enable-metrics=false",
            "--scheduler-enabled",
            "--log-as-json",
        ]);
        assert!(!a.enable_metrics);
        assert!(a.scheduler_enabled);
        assert!(a.log_as_json);
        assert_eq!((a.port, a.healthz_port, a.metrics_port), (4000, 8080, 9090));
    }

    #[test]
    fn settings_from_flags() {
        let a = parse(&[
            "--sidecar-image=ghcr.io/x/daprd:1",
            "--namespace=dapr-system",
            "--kube-cluster-domain=example.org",
            "--actors-enabled=false",
            "--sidecar-run-as-user=1000",
            "--sidecar-drop-all-capabilities=false",
            "--reminders-service-name=sched",
            "--reminders-service-address=dapr-scheduler:50006",
        ]);
        let s = a.settings().unwrap();
        assert_eq!(s.cluster_domain, "example.org");
        assert_eq!(s.actors, ActorsService::Disabled);
        assert_eq!(s.run_as_user, Some(1000));
        assert!(!s.drop_all_capabilities);
        assert!(s.run_as_non_root && s.read_only_root_filesystem);
        assert_eq!(s.reminders.as_ref().map(|r| r.0.as_str()), Some("sched"));
        assert!(
            parse(&["--namespace=x"])
                .settings()
                .unwrap_err()
                .to_string()
                .contains("SIDECAR_IMAGE")
        );
        assert!(
            parse(&[
                "--sidecar-image=i",
                "--namespace=x",
                "--sidecar-run-as-user=root"
            ])
            .settings()
            .is_err()
        );
    }

    #[test]
    fn resolv_conf_domain() {
        let r = "nameserver 10.96.0.10\nsearch default.svc.corp.local svc.corp.local corp.local\n";
        assert_eq!(cluster_domain_from_resolv(r).as_deref(), Some("corp.local"));
        assert_eq!(cluster_domain_from_resolv("nameserver 1.1.1.1\n"), None);
    }
}
