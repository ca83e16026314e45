//! The Service reconciler: a headless `<app-id>-dapr` Service for every
//! Deployment and StatefulSet whose pod template is annotated
//! `dapr.io/enabled: "true"`, owned by the workload so the garbage collector
//! removes it with the workload; removed when the annotation goes away.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};

/// Field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "dapr-operator";

pub const ANNOTATION_ENABLED: &str = "dapr.io/enabled";
pub const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
pub const ANNOTATION_ENABLE_METRICS: &str = "dapr.io/enable-metrics";
pub const ANNOTATION_METRICS_PORT: &str = "dapr.io/metrics-port";
pub const ANNOTATION_GRPC_PORT: &str = "dapr.io/grpc-port";
pub const ANNOTATION_INTERNAL_GRPC_PORT: &str = "dapr.io/internal-grpc-port";
pub const ANNOTATION_SIDECAR_SVC_ANNOTATIONS: &str = "dapr.io/sidecar-svc-annotations";

const SIDECAR_HTTP_PORT: i32 = 3500;
const DEFAULT_GRPC_PORT: i32 = 50001;
const DEFAULT_INTERNAL_GRPC_PORT: i32 = 50002;
const DEFAULT_METRICS_PORT: i32 = 9090;

/// What the reconciler needs from a Deployment or StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub deleting: bool,
    pub template_annotations: BTreeMap<String, String>,
    pub match_labels: BTreeMap<String, String>,
}

/// Common access to the two workload kinds.
pub trait AsWorkload:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
{
    fn workload(&self) -> Workload;
}

fn base<K: Resource<DynamicType = ()>>(
    obj: &K,
    annotations: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> Workload {
    let meta = obj.meta();
    Workload {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        template_annotations: annotations.cloned().unwrap_or_default(),
        match_labels: labels.cloned().unwrap_or_default(),
    }
}

impl AsWorkload for Deployment {
    fn workload(&self) -> Workload {
        let spec = self.spec.as_ref();
        base(
            self,
            spec.and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref()),
            spec.and_then(|s| s.selector.match_labels.as_ref()),
        )
    }
}

impl AsWorkload for StatefulSet {
    fn workload(&self) -> Workload {
        let spec = self.spec.as_ref();
        base(
            self,
            spec.and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref()),
            spec.and_then(|s| s.selector.match_labels.as_ref()),
        )
    }
}

/// Dapr's truthy strings: y, yes, true, t, on, 1 (any case).
pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

impl Workload {
    pub fn dapr_enabled(&self) -> bool {
        self.template_annotations
            .get(ANNOTATION_ENABLED)
            .is_some_and(|v| is_truthy(v))
    }

    /// `dapr.io/app-id`, defaulting to the workload's name.
    pub fn app_id(&self) -> &str {
        match self.template_annotations.get(ANNOTATION_APP_ID) {
            Some(id) if !id.is_empty() => id,
            _ => &self.name,
        }
    }

    fn port(&self, annotation: &str, default: i32) -> i32 {
        self.template_annotations
            .get(annotation)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }
}

/// `<app-id>-dapr`.
pub fn service_name(app_id: &str) -> String {
    format!("{app_id}-dapr")
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("invalid app id {app_id:?} for {kind} {namespace}/{name}: {reason}")]
    InvalidAppId {
        app_id: String,
        kind: String,
        namespace: String,
        name: String,
        reason: &'static str,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// A Service name must be a DNS-1035 label: 1-63 of `[a-z0-9-]`, starting
/// with a letter and ending with a letter or digit.
fn check_service_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 63 {
        return Err("`<app-id>-dapr` is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lower-case letters, digits and '-' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a lower-case letter");
    }
    Ok(())
}

/// The Service Dapr's operator creates for `w`.
pub fn desired_service(w: &Workload) -> Result<Service, ReconcileError> {
    let app_id = w.app_id().to_owned();
    let name = service_name(&app_id);
    check_service_name(&name).map_err(|reason| ReconcileError::InvalidAppId {
        app_id: app_id.clone(),
        kind: w.kind.clone(),
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        reason,
    })?;
    let metrics_port = w.port(ANNOTATION_METRICS_PORT, DEFAULT_METRICS_PORT);
    let grpc_port = w.port(ANNOTATION_GRPC_PORT, DEFAULT_GRPC_PORT);
    let internal_port = w.port(ANNOTATION_INTERNAL_GRPC_PORT, DEFAULT_INTERNAL_GRPC_PORT);
    let metrics_enabled = w
        .template_annotations
        .get(ANNOTATION_ENABLE_METRICS)
        .is_none_or(|v| v.is_empty() || is_truthy(v));

    let mut annotations = BTreeMap::from([(ANNOTATION_APP_ID.to_owned(), app_id.clone())]);
    if metrics_enabled {
        annotations.insert("prometheus.io/probe".into(), "true".into());
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), metrics_port.to_string());
        annotations.insert("prometheus.io/path".into(), "/".into());
    }
    // `k1=v1,k2=v2`; operator-managed keys win.
    if let Some(extra) = w
        .template_annotations
        .get(ANNOTATION_SIDECAR_SVC_ANNOTATIONS)
    {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                let k = k.trim();
                if !k.is_empty() && !annotations.contains_key(k) {
                    annotations.insert(k.to_owned(), v.trim().to_owned());
                }
            }
        }
    }
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(w.namespace.clone()),
            labels: Some(BTreeMap::from([(ANNOTATION_ENABLED.into(), "true".into())])),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: w.api_version.clone(),
                kind: w.kind.clone(),
                name: w.name.clone(),
                uid: w.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(w.match_labels.clone()),
            cluster_ip: Some("None".into()),
            ports: Some(vec![
                port("dapr-http", 80, SIDECAR_HTTP_PORT),
                port("dapr-grpc", grpc_port, grpc_port),
                port("dapr-internal", internal_port, internal_port),
                port("dapr-metrics", metrics_port, metrics_port),
            ]),
            ..Default::default()
        }),
        status: None,
    })
}

fn owned_by(svc: &Service, uid: &str) -> bool {
    svc.owner_references().iter().any(|o| o.uid == uid)
}

/// Brings the workload's `<app-id>-dapr` Service to the desired state.
pub async fn reconcile_workload(w: &Workload, client: &Client) -> Result<(), ReconcileError> {
    let services: Api<Service> = Api::namespaced(client.clone(), &w.namespace);
    let desired = if w.dapr_enabled() && !w.deleting {
        Some(desired_service(w)?)
    } else {
        None
    };
    let desired_name = desired.as_ref().and_then(|s| s.metadata.name.clone());
    // Services this workload owns but should not (annotation removed, app id changed).
    let owned = services
        .list(&ListParams::default().labels(&format!("{ANNOTATION_ENABLED}=true")))
        .await?;
    for svc in owned.items.iter().filter(|s| owned_by(s, &w.uid)) {
        let name = svc.name_any();
        if Some(&name) != desired_name.as_ref() {
            tracing::info!(namespace = %w.namespace, service = %name, workload = %w.name, "deleting dapr service");
            match services.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let (Some(svc), Some(name)) = (desired, desired_name) {
        services
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&svc),
            )
            .await?;
        tracing::debug!(namespace = %w.namespace, service = %name, "dapr service applied");
    }
    Ok(())
}

struct Ctx {
    client: Client,
}

async fn reconcile<K: AsWorkload>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let w = obj.workload();
    match reconcile_workload(&w, &ctx.client).await {
        Ok(()) => Ok(Action::await_change()),
        Err(e @ ReconcileError::InvalidAppId { .. }) => {
            // Not retriable until the workload changes.
            tracing::error!(error = %e, "cannot create dapr service");
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

fn error_policy<K>(_: Arc<K>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "reconciling dapr service failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn controller<K>(client: &Client, namespace: &str) -> Controller<K>
where
    K: AsWorkload + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (workloads, services): (Api<K>, Api<Service>) = if namespace.is_empty() {
        (Api::all(client.clone()), Api::all(client.clone()))
    } else {
        (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client.clone(), namespace),
        )
    };
    Controller::new(workloads, watcher::Config::default()).owns(
        services,
        watcher::Config::default().labels(&format!("{ANNOTATION_ENABLED}=true")),
    )
}

/// Runs the reconciler for Deployments and StatefulSets until dropped.
pub async fn run(client: Client, namespace: String) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let deployments = controller::<Deployment>(&client, &namespace)
        .run(reconcile::<Deployment>, error_policy, ctx.clone())
        .for_each(|_| async {});
    let statefulsets = controller::<StatefulSet>(&client, &namespace)
        .run(reconcile::<StatefulSet>, error_policy, ctx)
        .for_each(|_| async {});
    tracing::info!("service reconciler started");
    futures::join!(deployments, statefulsets);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(annotations: &[(&str, &str)]) -> Workload {
        Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: "ns".into(),
            uid: "uid-1".into(),
            deleting: false,
            template_annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_labels: BTreeMap::from([("app".into(), "web".into())]),
        }
    }

    #[test]
    fn enabled_follows_daprs_truthy_strings() {
        for v in ["true", "True", "1", "yes", "on", "t", "y"] {
            assert!(workload(&[(ANNOTATION_ENABLED, v)]).dapr_enabled(), "{v}");
        }
        for v in ["false", "0", "", "no", "enabled"] {
            assert!(!workload(&[(ANNOTATION_ENABLED, v)]).dapr_enabled(), "{v}");
        }
        assert!(!workload(&[]).dapr_enabled());
    }

    #[test]
    fn desired_service_matches_daprs() {
        let svc = desired_service(&workload(&[(ANNOTATION_ENABLED, "true")])).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("web-dapr"));
        let ann = svc.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann["dapr.io/app-id"], "web");
        assert_eq!(ann["prometheus.io/port"], "9090");
        assert_eq!(
            svc.metadata.labels.as_ref().unwrap()["dapr.io/enabled"],
            "true"
        );
        let owner = &svc.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "uid-1", Some(true))
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()["app"], "web");
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("dapr-http".into(), 80, IntOrString::Int(3500)),
                ("dapr-grpc".into(), 50001, IntOrString::Int(50001)),
                ("dapr-internal".into(), 50002, IntOrString::Int(50002)),
                ("dapr-metrics".into(), 9090, IntOrString::Int(9090)),
            ]
        );
    }

    #[test]
    fn annotations_override_app_id_ports_and_metrics() {
        let w = workload(&[
            (ANNOTATION_ENABLED, "true"),
            (ANNOTATION_APP_ID, "orders"),
            (ANNOTATION_METRICS_PORT, "9999"),
            (ANNOTATION_GRPC_PORT, "6000"),
            (ANNOTATION_ENABLE_METRICS, "false"),
            (
                ANNOTATION_SIDECAR_SVC_ANNOTATIONS,
                "a=1, dapr.io/app-id=evil ,b = 2",
            ),
        ]);
        let svc = desired_service(&w).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("orders-dapr"));
        let ann = svc.metadata.annotations.unwrap();
        assert!(!ann.contains_key("prometheus.io/port"));
        assert_eq!((ann["a"].as_str(), ann["b"].as_str()), ("1", "2"));
        assert_eq!(ann["dapr.io/app-id"], "orders");
        let ports = svc.spec.unwrap().ports.unwrap();
        assert_eq!((ports[1].port, ports[3].port), (6000, 9999));
    }

    #[test]
    fn invalid_app_id_is_an_error_naming_the_workload() {
        let w = workload(&[(ANNOTATION_ENABLED, "true"), (ANNOTATION_APP_ID, "Bad_Id")]);
        let err = desired_service(&w).unwrap_err().to_string();
        assert!(err.contains("Bad_Id") && err.contains("ns/web"), "{err}");
    }
}
