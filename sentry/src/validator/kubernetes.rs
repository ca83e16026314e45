//! The `kubernetes` validator.
//!
//! 1. A TokenReview of the request's token with the audiences Sentry's SPIFFE
//!    id and the legacy `dapr.io/sentry`; the token must be authenticated and
//!    its user must be `system:serviceaccount:<namespace>:<name>`.
//! 2. The pod named in the token's `kubernetes.io.pod.name` claim (the token
//!    is trusted at this point) is fetched from the service account's
//!    namespace; it must be the pod the token is bound to (same UID, since
//!    the API server may answer a review from its cache after the pod was
//!    deleted and re-created under the same name). The requested namespace
//!    must equal the service account's, the pod must run as that service
//!    account, and the requested id must be the pod's expected id:
//!    `dapr-<service>` for pods annotated `dapr.io/control-plane: <service>`
//!    (only in the control-plane namespace), else the `dapr.io/app-id`
//!    annotation, else the pod name.
//!    Control-plane ids are never granted to other pods.
//! 3. Trust domain: the control-plane trust domain for control-plane pods;
//!    otherwise `spec.accessControl.trustDomain` of the Configuration named
//!    by the pod's `dapr.io/config` annotation, defaulting to `public`.
//!
//! The decisions are plain functions over plain structs so they can be
//! tested without an API server.

use std::collections::BTreeMap;

use base64::Engine as _;
use dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest;
use dapr_security::{DEFAULT_APP_TRUST_DOMAIN, LEGACY_SENTRY_AUDIENCE, SpiffeId, spiffe};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};

use super::{Identity, ValidationError};

/// Annotation holding the app id of a Dapr-enabled pod.
pub const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
/// Annotation naming the Configuration of a Dapr-enabled pod.
pub const ANNOTATION_CONFIG: &str = "dapr.io/config";
/// Annotation marking a control-plane pod; the value is the service name.
pub const ANNOTATION_CONTROL_PLANE: &str = "dapr.io/control-plane";
/// `extra` key of a TokenReview user naming the pod a token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Control-plane service names allowed in `dapr.io/control-plane`.
pub const CONTROL_PLANE_SERVICES: [&str; 5] =
    ["operator", "placement", "injector", "sentry", "scheduler"];

/// A service account a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// What the TokenReview said, reduced to the fields used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewFacts {
    pub authenticated: bool,
    pub error: Option<String>,
    pub username: Option<String>,
    /// `extra["authentication.kubernetes.io/pod-name"]`, when present.
    pub bound_pod_names: Vec<String>,
}

impl From<&TokenReviewStatus> for ReviewFacts {
    fn from(s: &TokenReviewStatus) -> Self {
        let user = s.user.as_ref();
        Self {
            authenticated: s.authenticated.unwrap_or(false),
            error: s.error.clone().filter(|e| !e.is_empty()),
            username: user.and_then(|u| u.username.clone()),
            bound_pod_names: user
                .and_then(|u| u.extra.as_ref())
                .and_then(|e| e.get(EXTRA_POD_NAME).cloned())
                .unwrap_or_default(),
        }
    }
}

/// The parts of a pod the decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    /// `spec.serviceAccountName` (empty means `default`).
    pub service_account: String,
    pub annotations: BTreeMap<String, String>,
}

impl From<&Pod> for PodFacts {
    fn from(p: &Pod) -> Self {
        Self {
            name: p.metadata.name.clone().unwrap_or_default(),
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            service_account: p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            annotations: p.metadata.annotations.clone().unwrap_or_default(),
        }
    }
}

/// The identity a pod is entitled to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub app_id: String,
    pub control_plane: bool,
}

fn denied(m: impl Into<String>) -> ValidationError {
    ValidationError::PermissionDenied(m.into())
}

fn unauthenticated(m: impl Into<String>) -> ValidationError {
    ValidationError::Unauthenticated(m.into())
}

/// Step 1: the TokenReview outcome must be an authenticated service account.
pub fn service_account_from_review(
    review: &ReviewFacts,
) -> Result<ServiceAccount, ValidationError> {
    if let Some(e) = &review.error {
        // The API server's message describes the token, not its content.
        return Err(unauthenticated(format!(
            "invalid token: {}",
            e.chars().take(200).collect::<String>()
        )));
    }
    if !review.authenticated {
        return Err(unauthenticated("authentication failed"));
    }
    let username = review.username.as_deref().unwrap_or_default();
    parse_service_account_username(username).ok_or_else(|| {
        unauthenticated("provided token is not a properly structured service account token")
    })
}

/// `system:serviceaccount:<ns>:<name>` → the service account.
pub fn parse_service_account_username(username: &str) -> Option<ServiceAccount> {
    let mut parts = username.split(':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("system"), Some("serviceaccount"), Some(ns), Some(name), None)
            if !ns.is_empty() && !name.is_empty() =>
        {
            Some(ServiceAccount {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => None,
    }
}

/// The `kubernetes.io.pod` claim of an (already reviewed) token.
fn pod_claim(token: &str) -> Result<Option<serde_json::Value>, ValidationError> {
    let Some(payload) = token.split('.').nth(1) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| unauthenticated("failed to parse Kubernetes token"))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| unauthenticated("failed to parse Kubernetes token"))?;
    Ok(claims
        .get("kubernetes.io")
        .and_then(|k| k.get("pod"))
        .cloned())
}

/// The pod name from the (already reviewed) token's `kubernetes.io` claim.
/// When the review reported a bound pod name, both must agree.
pub fn pod_name_from_token(token: &str, review: &ReviewFacts) -> Result<String, ValidationError> {
    let missing = || denied("kubernetes.io/pod/name claim is missing from Kubernetes token");
    let name = pod_claim(token)?
        .as_ref()
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(missing)?
        .to_owned();
    if !review.bound_pod_names.is_empty() && !review.bound_pod_names.contains(&name) {
        return Err(denied("token pod claim does not match the token review"));
    }
    Ok(name)
}

/// The bound pod's UID from the token's `kubernetes.io` claim, if any.
pub fn pod_uid_from_token(token: &str) -> Result<Option<String>, ValidationError> {
    Ok(pod_claim(token)?
        .as_ref()
        .and_then(|p| p.get("uid"))
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty())
        .map(str::to_owned))
}

/// The pod fetched by name must be the pod the token was bound to: the API
/// server caches successful TokenReviews (10 s), so a token of a deleted pod
/// can still pass review while a new pod of the same name exists.
pub fn check_pod_uid(
    token_uid: Option<&str>,
    pod_uid: Option<&str>,
) -> Result<(), ValidationError> {
    match token_uid {
        Some(uid) if pod_uid != Some(uid) => Err(denied(
            "the token was issued for a previous pod of that name",
        )),
        _ => Ok(()),
    }
}

/// Step 2: the id a pod may request.
pub fn expected_identity(
    pod: &PodFacts,
    control_plane_namespace: &str,
) -> Result<PodIdentity, ValidationError> {
    let app_id = pod.annotations.get(ANNOTATION_APP_ID);
    if let Some(service) = pod.annotations.get(ANNOTATION_CONTROL_PLANE) {
        if pod.namespace != control_plane_namespace {
            return Err(denied(format!(
                "control plane service in namespace '{}' is not allowed",
                pod.namespace
            )));
        }
        if !CONTROL_PLANE_SERVICES.contains(&service.as_str()) {
            return Err(denied(format!(
                "unknown control plane service '{}'",
                pod.name
            )));
        }
        if app_id.is_some() {
            return Err(denied(format!(
                "control plane service '{}' cannot have annotation '{ANNOTATION_APP_ID}'",
                pod.name
            )));
        }
        return Ok(PodIdentity {
            app_id: format!("dapr-{service}"),
            control_plane: true,
        });
    }
    Ok(PodIdentity {
        app_id: app_id.cloned().unwrap_or_else(|| pod.name.clone()),
        control_plane: false,
    })
}

/// Step 2 in full: namespace, service account and id checks.
pub fn authorize_pod(
    req_id: &str,
    req_namespace: &str,
    sa: &ServiceAccount,
    pod: &PodFacts,
    control_plane_namespace: &str,
) -> Result<PodIdentity, ValidationError> {
    if sa.namespace != req_namespace {
        return Err(denied(format!(
            "namespace mismatch; received namespace: {req_namespace}"
        )));
    }
    if pod.namespace != sa.namespace {
        return Err(denied("pod namespace does not match the token"));
    }
    let pod_sa = if pod.service_account.is_empty() {
        "default"
    } else {
        pod.service_account.as_str()
    };
    if pod_sa != sa.name {
        return Err(denied("pod service account mismatch"));
    }
    let expected = expected_identity(pod, control_plane_namespace)?;
    if expected.app_id != req_id {
        return Err(denied(format!(
            "app-id mismatch. expected: {}, received: {req_id}",
            expected.app_id
        )));
    }
    if !expected.control_plane && spiffe::is_control_plane_id(req_id) {
        return Err(denied(
            "control-plane identities are only issued to control-plane pods",
        ));
    }
    Ok(expected)
}

/// Step 3: trust domain of an app, from its Configuration's
/// `spec.accessControl.trustDomain`.
pub fn trust_domain_from_config_spec(
    spec: Option<&serde_json::Value>,
) -> Result<String, ValidationError> {
    let td = spec
        .and_then(|s| s.get("accessControl"))
        .and_then(|a| a.get("trustDomain"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty());
    match td {
        None => Ok(DEFAULT_APP_TRUST_DOMAIN.to_owned()),
        Some(td) => {
            spiffe::validate_trust_domain(td)
                .map_err(|e| denied(format!("failed to parse trust domain {td:?}: {e}")))?;
            Ok(td.to_owned())
        }
    }
}

/// Talks to the API server.
pub struct KubernetesValidator {
    client: Client,
    audiences: Vec<String>,
    control_plane_namespace: String,
    control_plane_trust_domain: String,
}

impl KubernetesValidator {
    pub fn new(client: Client, sentry_id: &SpiffeId) -> Self {
        Self {
            client,
            audiences: vec![sentry_id.to_string(), LEGACY_SENTRY_AUDIENCE.to_owned()],
            control_plane_namespace: sentry_id.namespace().to_owned(),
            control_plane_trust_domain: sentry_id.trust_domain().to_owned(),
        }
    }

    pub async fn validate(
        &self,
        req: &SignCertificateRequest,
    ) -> Result<Identity, ValidationError> {
        if req.token.is_empty() {
            return Err(unauthenticated("the request does not contain a token"));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(req.token.clone()),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "TokenReview failed");
                ValidationError::Unavailable("token review failed".into())
            })?;
        let facts = reviewed
            .status
            .as_ref()
            .map(ReviewFacts::from)
            .unwrap_or_default();
        let sa = service_account_from_review(&facts)?;
        let pod_name = pod_name_from_token(&req.token, &facts)?;
        if sa.namespace != req.namespace {
            return Err(denied(format!(
                "namespace mismatch; received namespace: {}",
                req.namespace
            )));
        }
        let pod = match Api::<Pod>::namespaced(self.client.clone(), &sa.namespace)
            .get_opt(&pod_name)
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => return Err(denied("failed to get pod of identity")),
            Err(e) => {
                tracing::error!(namespace = %sa.namespace, pod = %pod_name, error = %e, "failed to get pod for requested identity");
                return Err(ValidationError::Unavailable(
                    "failed to get pod of identity".into(),
                ));
            }
        };
        check_pod_uid(
            pod_uid_from_token(&req.token)?.as_deref(),
            pod.metadata.uid.as_deref(),
        )?;
        let facts = PodFacts::from(&pod);
        let identity = authorize_pod(
            &req.id,
            &req.namespace,
            &sa,
            &facts,
            &self.control_plane_namespace,
        )?;
        if identity.control_plane {
            return Ok(Identity {
                trust_domain: self.control_plane_trust_domain.clone(),
            });
        }
        let Some(config_name) = facts.annotations.get(ANNOTATION_CONFIG) else {
            return Ok(Identity {
                trust_domain: DEFAULT_APP_TRUST_DOMAIN.to_owned(),
            });
        };
        let gvk = GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "configurations");
        let cfg = Api::<DynamicObject>::namespaced_with(self.client.clone(), &req.namespace, &ar)
            .get(config_name)
            .await
            .map_err(|e| {
                tracing::error!(configuration = %config_name, error = %e, "failed to get configuration");
                ValidationError::Unavailable("failed to get configuration".into())
            })?;
        Ok(Identity {
            trust_domain: trust_domain_from_config_spec(cfg.data.get("spec"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn pod(name: &str, ns: &str, sa: &str, ann: &[(&str, &str)]) -> PodFacts {
        PodFacts {
            name: name.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn token_with(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!(
            "{}.{}.c2ln",
            enc(&serde_json::json!({"alg": "RS256"})),
            enc(&claims)
        )
    }

    #[test]
    fn review_outcomes() {
        let ok = ReviewFacts {
            authenticated: true,
            username: Some("system:serviceaccount:default:app-sa".into()),
            ..Default::default()
        };
        assert_eq!(
            service_account_from_review(&ok).unwrap(),
            sa("default", "app-sa")
        );
        let not_auth = ReviewFacts {
            authenticated: false,
            ..ok.clone()
        };
        assert!(matches!(
            service_account_from_review(&not_auth),
            Err(ValidationError::Unauthenticated(_))
        ));
        let errored = ReviewFacts {
            error: Some("token expired".into()),
            ..ok.clone()
        };
        assert!(matches!(
            service_account_from_review(&errored),
            Err(ValidationError::Unauthenticated(m)) if m.contains("token expired")
        ));
        for user in [
            "system:node:worker-1",
            "alice",
            "system:serviceaccount:default",
            "system:serviceaccount:default:sa:extra",
            "system:serviceaccount::sa",
            "system:serviceaccounts:default:sa",
        ] {
            let r = ReviewFacts {
                username: Some(user.into()),
                ..ok.clone()
            };
            assert!(service_account_from_review(&r).is_err(), "{user}");
        }
    }

    #[test]
    fn pod_claim() {
        let review = ReviewFacts::default();
        let t = token_with(serde_json::json!({"kubernetes.io": {"pod": {"name": "app-7d9"}}}));
        assert_eq!(pod_name_from_token(&t, &review).unwrap(), "app-7d9");
        let t_missing = token_with(serde_json::json!({"kubernetes.io": {"namespace": "x"}}));
        assert!(pod_name_from_token(&t_missing, &review).is_err());
        assert!(pod_name_from_token("garbage", &review).is_err());
        assert!(pod_name_from_token("a.!!!.c", &review).is_err());
        let bound = ReviewFacts {
            bound_pod_names: vec!["other".into()],
            ..Default::default()
        };
        assert!(pod_name_from_token(&t, &bound).is_err());
        let bound_ok = ReviewFacts {
            bound_pod_names: vec!["app-7d9".into()],
            ..Default::default()
        };
        assert_eq!(pod_name_from_token(&t, &bound_ok).unwrap(), "app-7d9");
    }

    #[test]
    fn pod_uid_claim() {
        let t =
            token_with(serde_json::json!({"kubernetes.io": {"pod": {"name": "p", "uid": "u-1"}}}));
        let uid = pod_uid_from_token(&t).unwrap();
        assert_eq!(uid.as_deref(), Some("u-1"));
        check_pod_uid(uid.as_deref(), Some("u-1")).unwrap();
        // A re-created pod of the same name, or one without a UID.
        assert!(matches!(
            check_pod_uid(uid.as_deref(), Some("u-2")),
            Err(ValidationError::PermissionDenied(_))
        ));
        assert!(check_pod_uid(uid.as_deref(), None).is_err());
        // Tokens without a UID claim are judged by the other checks.
        let t = token_with(serde_json::json!({"kubernetes.io": {"pod": {"name": "p"}}}));
        assert_eq!(pod_uid_from_token(&t).unwrap(), None);
        check_pod_uid(None, Some("u-2")).unwrap();
    }

    #[test]
    fn app_pods() {
        let cp = "dapr-system";
        let p = pod(
            "orders-abc",
            "default",
            "orders",
            &[(ANNOTATION_APP_ID, "orders")],
        );
        let id = authorize_pod("orders", "default", &sa("default", "orders"), &p, cp).unwrap();
        assert_eq!(
            id,
            PodIdentity {
                app_id: "orders".into(),
                control_plane: false
            }
        );
        // Wrong app id, namespace or service account.
        assert!(authorize_pod("payments", "default", &sa("default", "orders"), &p, cp).is_err());
        assert!(authorize_pod("orders", "prod", &sa("default", "orders"), &p, cp).is_err());
        assert!(authorize_pod("orders", "default", &sa("default", "other"), &p, cp).is_err());
        // Without the annotation, the pod name is the id.
        let p = pod("worker-1", "default", "", &[]);
        authorize_pod("worker-1", "default", &sa("default", "default"), &p, cp).unwrap();
        assert!(authorize_pod("worker", "default", &sa("default", "default"), &p, cp).is_err());
    }

    #[test]
    fn control_plane_pods() {
        let cp = "dapr-system";
        let p = pod(
            "dapr-placement-server-0",
            cp,
            "dapr-placement",
            &[(ANNOTATION_CONTROL_PLANE, "placement")],
        );
        let id = authorize_pod("dapr-placement", cp, &sa(cp, "dapr-placement"), &p, cp).unwrap();
        assert!(id.control_plane);
        // The control-plane annotation outside the control-plane namespace.
        let p_elsewhere = pod(
            "dapr-placement-server-0",
            "default",
            "sa",
            &[(ANNOTATION_CONTROL_PLANE, "placement")],
        );
        assert!(
            authorize_pod(
                "dapr-placement",
                "default",
                &sa("default", "sa"),
                &p_elsewhere,
                cp
            )
            .is_err()
        );
        // Unknown service, or a control-plane pod also claiming an app id.
        let p_unknown = pod("x", cp, "sa", &[(ANNOTATION_CONTROL_PLANE, "dashboard")]);
        assert!(authorize_pod("dapr-dashboard", cp, &sa(cp, "sa"), &p_unknown, cp).is_err());
        let p_both = pod(
            "x",
            cp,
            "sa",
            &[
                (ANNOTATION_CONTROL_PLANE, "sentry"),
                (ANNOTATION_APP_ID, "x"),
            ],
        );
        assert!(authorize_pod("dapr-sentry", cp, &sa(cp, "sa"), &p_both, cp).is_err());
        // A plain pod named or annotated like a control-plane service.
        let impostor = pod("dapr-sentry", cp, "sa", &[]);
        assert!(authorize_pod("dapr-sentry", cp, &sa(cp, "sa"), &impostor, cp).is_err());
        let impostor = pod(
            "x",
            "default",
            "sa",
            &[(ANNOTATION_APP_ID, "dapr-operator")],
        );
        assert!(
            authorize_pod(
                "dapr-operator",
                "default",
                &sa("default", "sa"),
                &impostor,
                cp
            )
            .is_err()
        );
    }

    #[test]
    fn config_trust_domain() {
        assert_eq!(trust_domain_from_config_spec(None).unwrap(), "public");
        let spec = serde_json::json!({"accessControl": {"trustDomain": "example.org"}});
        assert_eq!(
            trust_domain_from_config_spec(Some(&spec)).unwrap(),
            "example.org"
        );
        let spec = serde_json::json!({"accessControl": {"defaultAction": "deny"}});
        assert_eq!(
            trust_domain_from_config_spec(Some(&spec)).unwrap(),
            "public"
        );
        let bad = serde_json::json!({"accessControl": {"trustDomain": "Not Valid"}});
        assert!(trust_domain_from_config_spec(Some(&bad)).is_err());
    }
}
