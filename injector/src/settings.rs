//! What the injector itself is configured with (Dapr's injector environment
//! variables), independent of any pod.

use k8s_openapi::api::core::v1::Toleration;

/// A control-plane service: `<name>.<namespace>.svc.<cluster-domain>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub name: String,
    pub port: u16,
}

impl ServiceRef {
    pub fn new(name: &str, port: u16) -> Self {
        Self {
            name: name.to_owned(),
            port,
        }
    }

    /// Parses Dapr's `<name>:<port>` (ACTORS_SERVICE_ADDRESS and friends).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, port) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not in the format <name>:<port>"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{s}' is not in the format <name>:<port>: bad port"))?;
        if name.is_empty() {
            return Err(format!("'{s}' is not in the format <name>:<port>"));
        }
        Ok(Self::new(name, port))
    }

    pub fn address(&self, namespace: &str, cluster_domain: &str) -> String {
        format!(
            "{}.{namespace}.svc.{cluster_domain}:{}",
            self.name, self.port
        )
    }
}

/// The actors service sidecars use (`ACTORS_SERVICE_NAME`/`_ADDRESS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorsService {
    /// Actors disabled cluster-wide (`ACTORS_ENABLED=false`).
    Disabled,
    /// Dapr's placement service, passed as `--placement-host-address`.
    Placement(ServiceRef),
    /// Another service, passed as `--actors-service <name>:<address>`.
    Other { name: String, service: ServiceRef },
}

/// Injector-wide settings applied to every injected sidecar.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SIDECAR_IMAGE`.
    pub sidecar_image: String,
    /// `SIDECAR_IMAGE_PULL_POLICY` (Always, IfNotPresent, Never).
    pub pull_policy: String,
    /// The control-plane namespace (`NAMESPACE`).
    pub namespace: String,
    /// `KUBE_CLUSTER_DOMAIN`.
    pub cluster_domain: String,
    /// `DAPR_CONTROL_PLANE_TRUST_DOMAIN`.
    pub control_plane_trust_domain: String,
    pub run_as_non_root: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub read_only_root_filesystem: bool,
    pub drop_all_capabilities: bool,
    /// Seccomp profile type when the pod has no `dapr.io/sidecar-seccomp-profile-type`.
    pub default_seccomp_profile: Option<String>,
    pub enable_k8s_downward_apis: bool,
    /// `IGNORE_ENTRYPOINT_TOLERATIONS`: pods with any of these get
    /// `command: [/daprd]` instead of `/daprd` as the first argument.
    pub ignore_entrypoint_tolerations: Vec<Toleration>,
    pub actors: ActorsService,
    /// `REMINDERS_SERVICE_NAME`/`_ADDRESS`, when not the built-in one.
    pub reminders: Option<(String, ServiceRef)>,
    /// `--scheduler-enabled`.
    pub scheduler_enabled: bool,
}

impl Settings {
    /// Settings with Dapr's defaults for the given image and namespace.
    pub fn new(sidecar_image: &str, namespace: &str) -> Self {
        Self {
            sidecar_image: sidecar_image.to_owned(),
            pull_policy: "Always".to_owned(),
            namespace: namespace.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            control_plane_trust_domain: "cluster.local".to_owned(),
            run_as_non_root: true,
            run_as_user: None,
            run_as_group: None,
            read_only_root_filesystem: true,
            drop_all_capabilities: true,
            default_seccomp_profile: Some("RuntimeDefault".to_owned()),
            enable_k8s_downward_apis: false,
            ignore_entrypoint_tolerations: Vec::new(),
            actors: ActorsService::Placement(ServiceRef::new("dapr-placement-server", 50005)),
            reminders: None,
            scheduler_enabled: true,
        }
    }

    /// `spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry`: the
    /// audience of the projected token daprd presents to Sentry.
    pub fn sentry_spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/dapr-sentry",
            self.control_plane_trust_domain, self.namespace
        )
    }

    pub fn service_address(&self, svc: &ServiceRef) -> String {
        svc.address(&self.namespace, &self.cluster_domain)
    }

    /// Dapr's mapping of `SIDECAR_IMAGE_PULL_POLICY`: unknown values mean IfNotPresent.
    pub fn pull_policy(&self) -> &'static str {
        match self.pull_policy.as_str() {
            "Always" => "Always",
            "Never" => "Never",
            _ => "IfNotPresent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_refs() {
        let s = ServiceRef::parse("dapr-scheduler-server:50006").unwrap();
        assert_eq!(
            s.address("dapr-system", "cluster.local"),
            "dapr-scheduler-server.dapr-system.svc.cluster.local:50006"
        );
        assert!(ServiceRef::parse("nope").is_err());
        assert!(ServiceRef::parse(":1").is_err());
        assert!(ServiceRef::parse("x:0").is_err());
        assert!(ServiceRef::parse("x:abc").is_err());
    }

    #[test]
    fn pull_policy_mapping() {
        let mut s = Settings::new("img", "ns");
        for (given, used) in [
            ("Always", "Always"),
            ("Never", "Never"),
            ("IfNotPresent", "IfNotPresent"),
            ("sometimes", "IfNotPresent"),
        ] {
            s.pull_policy = given.to_owned();
            assert_eq!(s.pull_policy(), used);
        }
    }
}
