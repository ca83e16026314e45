//! The JSON patch that injects daprd into a pod, in Dapr's operation order.

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, Pod, PodSpec, ProjectedVolumeSource, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::{
    annotations::{self, AnnotationError, SidecarAnnotations},
    settings::Settings,
    sidecar::{self, PodContext},
};

/// Why a Dapr-enabled pod cannot be injected; the message is what the
/// admission response (and so `kubectl`) shows.
#[derive(Debug, Error)]
pub enum PatchError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(
        "cannot determine the Dapr app id: the pod has no name and no dapr.io/app-id annotation"
    )]
    NoAppId,
    #[error("invalid Dapr app id '{app_id}' (derived from the pod; set dapr.io/app-id): {reason}")]
    DerivedAppId { app_id: String, reason: String },
    #[error(
        "annotation {key} mounts volume '{volume}', which the pod does not define in spec.volumes"
    )]
    UnknownVolume { key: &'static str, volume: String },
    #[error("serializing the patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Per-request inputs besides the pod.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub trust_anchors: &'a str,
    pub mtls_enabled: bool,
}

/// True when the pod already has a `daprd` container (injected before, or
/// written by hand): it is left alone.
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.name == sidecar::CONTAINER_NAME)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == sidecar::CONTAINER_NAME)
    })
}

/// The app id when `dapr.io/app-id` is absent: the pod's name; for pods a
/// controller creates (no name yet at admission), the owner's name, with a
/// ReplicaSet's `-<pod-template-hash>` removed so a Deployment's pods get the
/// Deployment's name; else the `generateName` prefix.
pub fn derived_app_id(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    if let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .or_else(|| meta.owner_references.iter().flatten().next());
    if let Some(o) = owner {
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if o.kind == "ReplicaSet"
            && let Some(h) = hash
            && let Some(base) = o.name.strip_suffix(&format!("-{h}"))
            && !base.is_empty()
        {
            return Some(base.to_owned());
        }
        return Some(o.name.clone());
    }
    meta.generate_name
        .as_deref()
        .map(|g| g.trim_end_matches('-'))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

fn op<T: Serialize>(path: &str, value: &T) -> Result<PatchOperation, PatchError> {
    Ok(PatchOperation::Add(AddOperation {
        path: PointerBuf::parse(path).unwrap_or_default(),
        value: serde_json::to_value(value)?,
    }))
}

/// Escapes a JSON-pointer token (`/` and `~`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn token_volume(settings: &Settings) -> Volume {
    Volume {
        name: sidecar::TOKEN_VOLUME_NAME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(settings.sentry_spiffe_id()),
                    expiration_seconds: Some(7200),
                    path: "token".to_owned(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

fn uds_volume() -> Volume {
    Volume {
        name: sidecar::UDS_VOLUME_NAME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: None,
        }),
        ..Default::default()
    }
}

/// The patch for a pod, or `None` when nothing is to be done (Dapr not
/// enabled, or daprd already present).
pub fn build(
    pod: &Pod,
    settings: &Settings,
    req: &Request<'_>,
) -> Result<Option<Patch>, PatchError> {
    let empty = Default::default();
    let ann = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if !annotations::dapr_enabled(ann) || has_sidecar(pod) {
        return Ok(None);
    }
    let a = SidecarAnnotations::parse(ann)?;
    let app_id = match &a.app_id {
        Some(id) => id.clone(),
        None => {
            let id = derived_app_id(pod).ok_or(PatchError::NoAppId)?;
            annotations::validate_app_id(&id).map_err(|reason| PatchError::DerivedAppId {
                app_id: id.clone(),
                reason,
            })?;
            id
        }
    };
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let pod_volumes = spec.volumes.as_deref().unwrap_or_default();

    let mut daprd_mounts = Vec::new();
    for m in &a.volume_mounts {
        if !pod_volumes.iter().any(|v| v.name == m.volume) {
            return Err(PatchError::UnknownVolume {
                key: if m.read_only {
                    annotations::VOLUME_MOUNTS
                } else {
                    annotations::VOLUME_MOUNTS_RW
                },
                volume: m.volume.clone(),
            });
        }
        daprd_mounts.push(VolumeMount {
            name: m.volume.clone(),
            mount_path: m.path.clone(),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }
    let mut new_volumes = Vec::new();
    let mut app_mount = None;
    if let Some(path) = &a.unix_domain_socket_path {
        new_volumes.push(uds_volume());
        daprd_mounts.push(VolumeMount {
            name: sidecar::UDS_VOLUME_NAME.to_owned(),
            mount_path: sidecar::UDS_DAPRD_PATH.to_owned(),
            ..Default::default()
        });
        app_mount = Some(VolumeMount {
            name: sidecar::UDS_VOLUME_NAME.to_owned(),
            mount_path: path.clone(),
            ..Default::default()
        });
    }
    new_volumes.push(token_volume(settings));
    daprd_mounts.push(VolumeMount {
        name: sidecar::TOKEN_VOLUME_NAME.to_owned(),
        mount_path: sidecar::TOKEN_MOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..Default::default()
    });

    let ctx = PodContext {
        pod,
        app_id: &app_id,
        namespace: req.namespace,
        trust_anchors: req.trust_anchors,
        mtls_enabled: req.mtls_enabled,
    };
    let container = sidecar::container(&a, settings, &ctx, daprd_mounts);

    let mut ops = Vec::new();
    if spec.containers.is_empty() {
        ops.push(op("/spec/containers", &Vec::<Value>::new())?);
    }
    if pod.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
        ops.push(op("/metadata/labels", &serde_json::Map::new())?);
    }
    if pod_volumes.is_empty() {
        ops.push(op("/spec/volumes", &new_volumes)?);
    } else {
        for v in new_volumes
            .iter()
            .filter(|v| !pod_volumes.iter().any(|p| p.name == v.name))
        {
            ops.push(op("/spec/volumes/-", v)?);
        }
    }
    ops.push(op("/spec/containers/-", &container)?);
    ops.push(op(
        &format!("/metadata/labels/{}", escape("dapr.io/sidecar-injected")),
        &"true",
    )?);
    ops.push(op(
        &format!("/metadata/labels/{}", escape("dapr.io/app-id")),
        &app_id,
    )?);
    ops.push(op(
        &format!("/metadata/labels/{}", escape("dapr.io/metrics-enabled")),
        &a.enable_metrics.to_string(),
    )?);

    // App containers learn the sidecar's ports (and protocol); variables the
    // app already defines are kept.
    let mut app_env = vec![
        ("DAPR_HTTP_PORT", a.http_port.to_string()),
        ("DAPR_GRPC_PORT", a.grpc_port.to_string()),
    ];
    let protocol = a.effective_app_protocol();
    if !protocol.is_empty() {
        app_env.push(("APP_PROTOCOL", protocol));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let existing = c.env.as_deref().unwrap_or_default();
        let add: Vec<_> = app_env
            .iter()
            .filter(|(n, _)| !existing.iter().any(|e| e.name == *n))
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect();
        if existing.is_empty() {
            if !add.is_empty() {
                ops.push(op(&format!("/spec/containers/{i}/env"), &add)?);
            }
        } else {
            for e in &add {
                ops.push(op(&format!("/spec/containers/{i}/env/-"), e)?);
            }
        }
    }
    if let Some(m) = &app_mount {
        for (i, c) in spec.containers.iter().enumerate() {
            let existing = c.volume_mounts.as_deref().unwrap_or_default();
            if existing.is_empty() {
                ops.push(op(
                    &format!("/spec/containers/{i}/volumeMounts"),
                    &vec![m.clone()],
                )?);
            } else if !existing
                .iter()
                .any(|e| e.mount_path == m.mount_path || e.name == m.name)
            {
                ops.push(op(&format!("/spec/containers/{i}/volumeMounts/-"), m)?);
            }
        }
    }
    Ok(Some(Patch(ops)))
}
