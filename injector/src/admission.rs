//! One AdmissionReview in, one out: decode, decide, patch or deny.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::{Engine, engine::general_purpose::STANDARD};
use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionReview},
};
use serde::Serialize;
use thiserror::Error;

use crate::{
    annotations, authz::Allowed, metrics::Metrics, mtls::MtlsLookup, patch, settings::Settings,
};

/// A body that is not an AdmissionReview: answered with HTTP 400.
#[derive(Debug, Error)]
pub enum BadReview {
    #[error("the request body is empty")]
    Empty,
    #[error("the request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Everything a review needs, shared by all connections.
pub struct Injector {
    pub settings: Settings,
    pub allowed: Allowed,
    /// PEM trust anchors handed to daprd (`DAPR_TRUST_ANCHORS`).
    pub trust_anchors: Arc<ArcSwap<String>>,
    pub mtls: MtlsLookup,
    pub metrics: Arc<Metrics>,
}

fn diag_app_id(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::APP_ID).cloned())
        .or_else(|| patch::derived_app_id(pod))
        .unwrap_or_default()
}

/// The parts of a request the decision uses.
struct Meta<'a> {
    kind: &'a str,
    namespace: Option<&'a str>,
    username: &'a str,
    groups: &'a [String],
}

impl<'a, T: kube::Resource> From<&'a AdmissionRequest<T>> for Meta<'a> {
    fn from(r: &'a AdmissionRequest<T>) -> Self {
        Self {
            kind: &r.kind.kind,
            namespace: r.namespace.as_deref(),
            username: r.user_info.username.as_deref().unwrap_or_default(),
            groups: r.user_info.groups.as_deref().unwrap_or_default(),
        }
    }
}

fn api_version<T: kube::Resource>(r: &AdmissionRequest<T>) -> &str {
    if r.types.api_version.is_empty() {
        "admission.k8s.io/v1"
    } else {
        &r.types.api_version
    }
}

impl Injector {
    /// Reviews a raw body; the bytes returned are the AdmissionReview answer.
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        self.metrics.request();
        if body.is_empty() {
            return Err(BadReview::Empty);
        }
        // Fast path, every real request: the object read straight into a Pod.
        if let Ok(review) = serde_json::from_slice::<AdmissionReview<Pod>>(body)
            && let Ok(req) = TryInto::<AdmissionRequest<Pod>>::try_into(review)
            && req.kind.kind == "Pod"
        {
            let decision = self.decide(Meta::from(&req), Ok(req.object.as_ref())).await;
            return Ok(serde_json::to_vec(&ReviewOut::new(
                &req.uid,
                api_version(&req),
                decision,
            )?)?);
        }
        // Anything else (other kinds, objects that are not valid Pods, bad
        // JSON): read generically for a precise answer or error.
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
        let req: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| BadReview::NoRequest)?;
        let pod = match (&req.object, req.kind.kind.as_str()) {
            (Some(obj), "Pod") => serde_json::to_value(obj)
                .and_then(serde_json::from_value::<Pod>)
                .map(Some)
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        };
        let decision = self
            .decide(
                Meta::from(&req),
                pod.as_ref().map(Option::as_ref).map_err(String::clone),
            )
            .await;
        Ok(serde_json::to_vec(&ReviewOut::new(
            &req.uid,
            api_version(&req),
            decision,
        )?)?)
    }

    async fn decide(&self, req: Meta<'_>, pod: Result<Option<&Pod>, String>) -> Decision {
        let allow = Decision::Allow;
        if req.kind != "Pod" {
            tracing::error!(kind = %req.kind, "invalid kind for review");
            return allow;
        }
        let pod = match pod {
            Ok(Some(p)) => p,
            Ok(None) => return allow,
            Err(e) => {
                return Decision::Deny(format!("could not parse the pod in the request: {e}"));
            }
        };
        let empty = Default::default();
        if !annotations::dapr_enabled(pod.metadata.annotations.as_ref().unwrap_or(&empty)) {
            return allow;
        }
        let app_id = diag_app_id(pod);
        let (user, groups) = (req.username, req.groups);
        if !self.allowed.permits(user, groups) {
            tracing::error!(
                user,
                app_id,
                "service account not on the list of allowed controller accounts; pod admitted without a sidecar"
            );
            self.metrics.failed(&app_id, "pod_patch");
            return allow;
        }
        let namespace = req.namespace.unwrap_or("default");
        let anchors = self.trust_anchors.load();
        let mtls_enabled = self.mtls.enabled().await;
        let request = patch::Request {
            namespace,
            trust_anchors: anchors.as_str(),
            mtls_enabled,
        };
        match patch::build(pod, &self.settings, &request) {
            Ok(None) => allow,
            Ok(Some(p)) => {
                tracing::info!(app_id, namespace, "sidecar injector succeeded injection");
                self.metrics.succeeded(&app_id);
                Decision::Patch(p)
            }
            Err(e) => {
                tracing::warn!(app_id, namespace, error = %e, "sidecar injection refused");
                self.metrics.failed(&app_id, "patch");
                Decision::Deny(e.to_string())
            }
        }
    }
}

/// What to answer.
enum Decision {
    Allow,
    Patch(Patch),
    Deny(String),
}

/// The answer, serialized here rather than with kube's `AdmissionResponse`
/// because that one writes `patch` as an array of numbers; the API (and
/// Dapr) send it base64-encoded, which is also 3-4x smaller.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
}

#[derive(Serialize)]
struct StatusOut {
    status: &'static str,
    message: String,
    reason: &'static str,
    code: u16,
}

impl<'a> ReviewOut<'a> {
    fn new(uid: &'a str, api_version: &'a str, d: Decision) -> Result<Self, serde_json::Error> {
        let mut response = ResponseOut {
            uid,
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
        };
        match d {
            Decision::Allow => {}
            Decision::Patch(p) => {
                response.patch = Some(STANDARD.encode(serde_json::to_vec(&p)?));
                response.patch_type = Some("JSONPatch");
            }
            Decision::Deny(message) => {
                response.allowed = false;
                response.status = Some(StatusOut {
                    status: "Failure",
                    message,
                    reason: "BadRequest",
                    code: 400,
                });
            }
        }
        Ok(Self {
            api_version,
            kind: "AdmissionReview",
            response,
        })
    }
}
