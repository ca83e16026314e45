//! Service invocation: routes a call to the local app or, through name
//! resolution, to the target app's sidecar over the internal gRPC port.
//! Bodies stream end to end (`CallLocalStream`), never fully buffered.

pub mod body_limit;
pub mod external;
pub mod grpc_proxy;
mod inbound;
pub mod internal;
mod remote_body;
pub mod reset;
pub mod tls;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::body::Body;
use bytes::Bytes;
use dapr_components::nameresolution::{NameResolutionError, NameResolver};
use dapr_rs_proto::{
    common,
    generated::dapr::proto::internals::v1::{
        self as internals, service_invocation_client::ServiceInvocationClient,
    },
};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tonic::transport::Endpoint;

use dapr_policy::{
    acl::AccessControl,
    resiliency::{BuiltInPolicy, PolicyError, ResiliencyRegistry, RetryableError},
};
use http_body_util::BodyExt;

use crate::{
    appchannel::{AppChannel, AppChannelError, AppGrpcChannel, is_hop_by_hop},
    error::ApiError,
};

pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
pub const CALLER_NAMESPACE: &str = "dapr-caller-namespace";
pub const CALLEE_APP_ID: &str = "dapr-callee-app-id";

/// `app-id` or `app-id.namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub app_id: String,
    pub namespace: String,
}

impl Target {
    pub fn parse(s: &str, default_namespace: &str) -> Result<Self, ApiError> {
        let (app_id, namespace) = match s.rsplit_once('.') {
            Some((app, ns)) if !app.is_empty() && !ns.is_empty() => (app, ns),
            _ => (s, default_namespace),
        };
        if app_id.is_empty() {
            return Err(ApiError::InvokeNoAppId);
        }
        Ok(Self {
            app_id: app_id.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// One invocation as both APIs describe it.
pub struct InvokeRequest {
    pub method: String,
    pub verb: Method,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
}

pub struct Invoker {
    pub app_id: String,
    pub namespace: String,
    pub app: Option<AppChannel>,
    /// Access control enforced on calls arriving from other sidecars.
    pub acl: AccessControl,
    /// Trust domain of callers when identities are not verified by mTLS.
    pub default_trust_domain: String,
    /// Swapped whole when Resiliency files change (hot reload).
    resiliency: RwLock<Arc<ResiliencyRegistry>>,
    /// HTTPEndpoints (and URLs) invoked instead of Dapr apps.
    pub endpoints: external::Endpoints,
    resolver: Arc<dyn NameResolver>,
    clients: RwLock<HashMap<String, ServiceInvocationClient<AppGrpcChannel>>>,
    max_message_size: usize,
    /// With `--enable-mtls`: channels to other sidecars use mutual TLS and
    /// accept only the target's SPIFFE id.
    mtls: Option<Arc<crate::mtls::SidecarMtls>>,
}

impl Invoker {
    pub fn new(
        app_id: String,
        namespace: String,
        app: Option<AppChannel>,
        resolver: Arc<dyn NameResolver>,
        max_message_size: usize,
    ) -> Self {
        Self {
            app_id: app_id.clone(),
            namespace,
            app,
            acl: AccessControl::default(),
            default_trust_domain: "public".to_owned(),
            resiliency: RwLock::new(Arc::new(ResiliencyRegistry::empty(&app_id))),
            endpoints: external::Endpoints::default(),
            resolver,
            clients: RwLock::new(HashMap::new()),
            max_message_size,
            mtls: None,
        }
    }

    pub fn resolver(&self) -> &Arc<dyn NameResolver> {
        &self.resolver
    }

    /// Sidecar-to-sidecar calls over mTLS.
    pub fn with_mtls(mut self, mtls: Arc<crate::mtls::SidecarMtls>) -> Self {
        self.mtls = Some(mtls);
        self
    }

    pub fn with_policies(mut self, resiliency: ResiliencyRegistry, acl: AccessControl) -> Self {
        self.resiliency = RwLock::new(Arc::new(resiliency));
        self.acl = acl;
        self
    }

    /// Replaces the resiliency policies (hot reload); calls in flight keep
    /// the policies they started with.
    pub fn set_resiliency(&self, resiliency: ResiliencyRegistry) {
        *self.resiliency.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(resiliency);
    }

    /// Whether `app_id` is an HTTPEndpoint name or a URL rather than a Dapr app.
    pub fn is_external(&self, app_id: &str) -> bool {
        self.endpoints.is_external(app_id)
    }

    /// The target an API names: an HTTPEndpoint name or a URL is taken
    /// whole (URLs contain dots), anything else is `app-id[.namespace]`.
    /// Shared by the HTTP and gRPC invocation APIs.
    pub fn target(&self, app_id: &str) -> Result<Target, ApiError> {
        if self.is_external(app_id) {
            return Ok(Target {
                app_id: app_id.to_owned(),
                namespace: String::new(),
            });
        }
        Target::parse(app_id, &self.namespace)
    }

    /// Invokes `req.method` on `target` and returns the app's response,
    /// applying the target app's resiliency policy (or Dapr's built-in
    /// service retries, which retry only when the target can't be reached).
    pub async fn invoke(
        &self,
        target: &Target,
        req: InvokeRequest,
    ) -> Result<Response<Body>, ApiError> {
        let resiliency = self
            .resiliency
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let user_policy = resiliency.app_policy_defined(&target.app_id);
        let policy = if user_policy {
            resiliency
                .policy_for_endpoint(&target.app_id, &format!("{}:{}", target.app_id, req.method))
        } else {
            resiliency.builtin_policy(BuiltInPolicy::ServiceRetries)
        };
        if policy.is_noop() {
            return self.invoke_once(target, req).await;
        }
        // Retries replay the request, so a body of known size up to
        // --max-body-size is buffered; larger or chunked bodies stream once
        // (a failed attempt is then final).
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bounded = http_body::Body::size_hint(&req.body)
            .upper()
            .is_some_and(|n| n <= self.max_message_size as u64);
        let replayable = bounded || declared.is_some_and(|n| n <= self.max_message_size);
        let replay = if policy.has_retries() && replayable {
            let InvokeRequest {
                method,
                verb,
                query,
                headers,
                body,
            } = req;
            let bytes = body
                .collect()
                .await
                .map_err(|e| ApiError::BodyRead(e.to_string()))?
                .to_bytes();
            Replay::Buffered {
                method,
                verb,
                query,
                headers,
                bytes,
            }
        } else {
            Replay::Once(std::sync::Mutex::new(Some(req)))
        };
        let result = policy
            .execute(|_attempt| {
                let req = replay.next();
                async move {
                    let Some(req) = req else {
                        return Err(AttemptError::Api(ApiError::Internal(
                            "request already consumed".into(),
                        )));
                    };
                    match self.invoke_once(target, req).await {
                        // A 5xx from the app counts as a failure only for user policies.
                        Ok(resp) if user_policy && resp.status().is_server_error() => {
                            Err(AttemptError::Status(resp))
                        }
                        Ok(resp) => Ok(resp),
                        Err(e) if !user_policy && !e.is_unreachable() => {
                            Err(AttemptError::Permanent(e))
                        }
                        Err(e) => Err(AttemptError::Api(e)),
                    }
                }
            })
            .await;
        match result {
            Ok(resp) => Ok(resp),
            Err(PolicyError::Operation(AttemptError::Status(resp))) => Ok(resp),
            Err(PolicyError::Operation(AttemptError::Api(e) | AttemptError::Permanent(e))) => {
                Err(e)
            }
            Err(e) => Err(ApiError::DirectInvoke {
                app_id: target.app_id.clone(),
                reason: e.to_string(),
            }),
        }
    }

    async fn invoke_once(
        &self,
        target: &Target,
        req: InvokeRequest,
    ) -> Result<Response<Body>, ApiError> {
        if self.endpoints.is_external(&target.app_id) {
            // Checked again per attempt: hot reload may have removed it.
            if let Some(result) = self.endpoints.call(&target.app_id, req).await {
                return result;
            }
            return Err(ApiError::DirectInvoke {
                app_id: target.app_id.clone(),
                reason: "the HTTPEndpoint is no longer defined".into(),
            });
        }
        if target.app_id == self.app_id && target.namespace == self.namespace {
            let mut req = req;
            self.add_caller_headers(&mut req.headers);
            return self
                .call_local_app(req)
                .await
                .map_err(|e| ApiError::DirectInvoke {
                    app_id: target.app_id.clone(),
                    reason: e.to_string(),
                });
        }
        self.call_remote(target, req).await
    }

    fn add_caller_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.app_id) {
            headers.insert(CALLER_APP_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.namespace) {
            headers.insert(CALLER_NAMESPACE, v);
        }
    }

    /// Calls this sidecar's own app.
    pub async fn call_local_app(
        &self,
        req: InvokeRequest,
    ) -> Result<Response<Body>, AppChannelError> {
        let app = self.app.as_ref().ok_or(AppChannelError::NotConfigured)?;
        let method = req.method.trim_start_matches('/');
        let path = match &req.query {
            Some(q) if !q.is_empty() => format!("/{method}?{q}"),
            _ => format!("/{method}"),
        };
        app.call_http(req.verb, &path, &req.headers, req.body).await
    }

    /// A client for another sidecar's internal gRPC port in this namespace
    /// (actor calls reuse these channels, and their mTLS).
    pub fn internal_client(
        &self,
        address: &str,
        app_id: &str,
    ) -> Result<ServiceInvocationClient<AppGrpcChannel>, ApiError> {
        let target = Target {
            app_id: app_id.to_owned(),
            namespace: self.namespace.clone(),
        };
        self.client(address, &target)
    }

    fn client(
        &self,
        address: &str,
        target: &Target,
    ) -> Result<ServiceInvocationClient<AppGrpcChannel>, ApiError> {
        // Under mTLS a channel only accepts one identity, so key by it too.
        let key = match &self.mtls {
            Some(_) => format!("{address}|{}.{}", target.app_id, target.namespace),
            None => address.to_owned(),
        };
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let channel = match &self.mtls {
            Some(mtls) => mtls
                .channel_to(address, &target.app_id, &target.namespace)
                .map_err(|e| ApiError::Internal(format!("bad sidecar address {address}: {e}")))?,
            None => Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| ApiError::Internal(format!("bad sidecar address {address}: {e}")))?
                .tcp_nodelay(true)
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy(),
        };
        let client = ServiceInvocationClient::new(AppGrpcChannel::new(channel))
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size);
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, client.clone());
        Ok(client)
    }

    async fn call_remote(
        &self,
        target: &Target,
        req: InvokeRequest,
    ) -> Result<Response<Body>, ApiError> {
        let invoke_err = |reason: String| ApiError::DirectInvoke {
            app_id: target.app_id.clone(),
            reason,
        };
        let address = self
            .resolver
            .resolve(&target.app_id, &target.namespace)
            .await
            .map_err(|e| match e {
                NameResolutionError::NotFound(_) => {
                    invoke_err(format!("couldn't find service: {}", target.app_id))
                }
                other => invoke_err(other.to_string()),
            })?;
        let mut client = self.client(&address, target)?;
        let started = std::time::Instant::now();
        dapr_observability::metrics::invocation_sent(&target.app_id);

        let mut metadata = headers_to_metadata(&req.headers);
        let caller = [
            (CALLER_APP_ID, self.app_id.as_str()),
            (CALLER_NAMESPACE, self.namespace.as_str()),
            (CALLEE_APP_ID, target.app_id.as_str()),
        ];
        for (k, v) in caller {
            metadata.insert(
                k.to_owned(),
                internals::ListStringValue {
                    values: vec![v.to_owned()],
                },
            );
        }
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let first = internals::InternalInvokeRequestStream {
            request: Some(internals::InternalInvokeRequest {
                ver: internals::ApiVersion::V1 as i32,
                metadata,
                message: Some(common::InvokeRequest {
                    method: req.method.trim_start_matches('/').to_owned(),
                    data: None,
                    content_type,
                    http_extension: Some(common::HttpExtension {
                        verb: verb_to_proto(&req.verb) as i32,
                        querystring: req.query.clone().unwrap_or_default(),
                    }),
                }),
                actor: None,
            }),
            payload: None,
        };
        let mut outbound = tonic::Request::new(());
        dapr_observability::trace::inject_grpc(&req.headers, outbound.metadata_mut());
        let cancel = outbound.cancellation_handle();
        let chunks = body_chunks(req.body, cancel)
            .enumerate()
            .map(|(seq, data)| internals::InternalInvokeRequestStream {
                request: None,
                payload: Some(common::StreamPayload {
                    data: data.to_vec(),
                    seq: seq as u64,
                }),
            });
        let outbound = outbound.map(|()| futures::stream::once(async move { first }).chain(chunks));
        let mut inbound = client
            .call_local_stream(outbound)
            .await
            .map_err(|s| remote_error(&target.app_id, &s))?
            .into_inner();
        let head = inbound
            .message()
            .await
            .map_err(|s| remote_error(&target.app_id, &s))?
            .ok_or_else(|| {
                invoke_err("the target sidecar closed the stream without a response".into())
            })?;
        let response = head.response.ok_or_else(|| {
            invoke_err("the target sidecar's first message had no response".into())
        })?;
        let status = response.status.as_ref().map(|s| s.code).unwrap_or(200);
        dapr_observability::metrics::invocation_response_received(&target.app_id, status, started);
        let status = u16::try_from(status)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder().status(status);
        if let Some(h) = builder.headers_mut() {
            metadata_to_headers(&response.headers, h);
            if let Some(ct) = response
                .message
                .as_ref()
                .map(|m| m.content_type.as_str())
                .filter(|c| !c.is_empty())
                && !h.contains_key(http::header::CONTENT_TYPE)
                && let Ok(v) = HeaderValue::from_str(ct)
            {
                h.insert(http::header::CONTENT_TYPE, v);
            }
        }
        let body = remote_body::response_body(head.payload.map(|p| Bytes::from(p.data)), inbound);
        builder
            .body(body)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// Dapr's access-control metrics for one decision on an incoming call
/// (none without an `accessControl` policy, as in Dapr).
pub(crate) fn record_acl(
    acl: &AccessControl,
    caller: Option<&dapr_policy::acl::CallerIdentity>,
    decision: &dapr_policy::acl::Decision,
) {
    use dapr_observability::metrics::AclDecision as D;
    use dapr_policy::acl::ActionPolicy;
    if acl.is_allow_all() {
        return;
    }
    let kind = match (decision.allowed, decision.action_policy) {
        (true, ActionPolicy::App) => D::AppAllowed,
        (true, ActionPolicy::Global) => D::GlobalAllowed,
        (false, ActionPolicy::App) => D::AppBlocked,
        (false, ActionPolicy::Global) => D::GlobalBlocked,
    };
    let (app, td, ns) = caller
        .map(|c| {
            (
                c.app_id.as_str(),
                c.trust_domain.as_str(),
                c.namespace.as_str(),
            )
        })
        .unwrap_or_default();
    dapr_observability::metrics::acl_decision(kind, app, td, ns);
}

/// Largest payload of one stream message between sidecars.
const MAX_CHUNK: usize = 256 * 1024;

/// The data frames of a request body as a stream of bounded chunks. A read
/// error (the caller went away, --max-body-size exceeded) cancels the call
/// (RST_STREAM) and the stream never ends: ending it would half-close the
/// gRPC stream, and the target app would take a truncated body as complete.
fn body_chunks(
    body: Body,
    cancel: tonic::CancellationHandle,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let mut cancel = Some(cancel);
    try_body_chunks(body).flat_map(move |r| match r {
        Ok(b) => futures::stream::iter(Some(b)).left_stream(),
        Err(e) => {
            tracing::debug!("request body ended with an error, cancelling the call: {e}");
            if let Some(c) = cancel.take() {
                c.cancel();
            }
            futures::stream::pending().right_stream()
        }
    })
}

/// Like [`body_chunks`], but a read error is passed on (so a response cut
/// short by the app ends in an error, never as a shorter success).
pub fn try_body_chunks(
    body: Body,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static {
    body.into_data_stream().flat_map(|r| {
        let pieces: Vec<Result<Bytes, axum::Error>> = match r {
            Ok(b) => (0..b.len())
                .step_by(MAX_CHUNK)
                .map(|i| Ok(b.slice(i..(i + MAX_CHUNK).min(b.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    })
}

/// Maps a status from the target sidecar: ACL denials stay 403.
fn remote_error(app_id: &str, s: &tonic::Status) -> ApiError {
    match s.code() {
        tonic::Code::PermissionDenied => ApiError::InvokeForbidden {
            app_id: app_id.to_owned(),
            reason: s.message().to_owned(),
        },
        tonic::Code::Unavailable => ApiError::DirectInvokeUnreachable {
            app_id: app_id.to_owned(),
            reason: status_reason(s),
        },
        _ => ApiError::DirectInvoke {
            app_id: app_id.to_owned(),
            reason: status_reason(s),
        },
    }
}

/// A request that can be sent again (buffered) or only once (streaming).
enum Replay {
    Buffered {
        method: String,
        verb: Method,
        query: Option<String>,
        headers: HeaderMap,
        bytes: Bytes,
    },
    Once(std::sync::Mutex<Option<InvokeRequest>>),
}

impl Replay {
    fn next(&self) -> Option<InvokeRequest> {
        match self {
            Replay::Buffered {
                method,
                verb,
                query,
                headers,
                bytes,
            } => Some(InvokeRequest {
                method: method.clone(),
                verb: verb.clone(),
                query: query.clone(),
                headers: headers.clone(),
                body: Body::from(bytes.clone()),
            }),
            Replay::Once(req) => req.lock().unwrap_or_else(|e| e.into_inner()).take(),
        }
    }
}

/// The outcome of one attempt, as the resiliency policy sees it.
enum AttemptError {
    /// The app answered with a status the policy treats as a failure.
    Status(Response<Body>),
    Api(ApiError),
    /// Not retried (built-in retries only cover unreachable targets).
    Permanent(ApiError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Status(r) => write!(f, "the app answered HTTP {}", r.status().as_u16()),
            AttemptError::Api(e) | AttemptError::Permanent(e) => e.fmt(f),
        }
    }
}

impl RetryableError for AttemptError {
    fn http_status(&self) -> Option<u16> {
        match self {
            AttemptError::Status(r) => Some(r.status().as_u16()),
            _ => None,
        }
    }

    fn is_permanent(&self) -> bool {
        matches!(self, AttemptError::Permanent(_))
    }
}

fn status_reason(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable => format!("the target sidecar is unreachable: {}", s.message()),
        tonic::Code::DeadlineExceeded => "timed out".to_owned(),
        _ => s.message().to_owned(),
    }
}

pub fn verb_to_proto(m: &Method) -> common::http_extension::Verb {
    use common::http_extension::Verb;
    match *m {
        Method::GET => Verb::Get,
        Method::HEAD => Verb::Head,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::DELETE => Verb::Delete,
        Method::CONNECT => Verb::Connect,
        Method::OPTIONS => Verb::Options,
        Method::TRACE => Verb::Trace,
        Method::PATCH => Verb::Patch,
        _ => Verb::None,
    }
}

pub fn verb_from_proto(v: i32) -> Method {
    use common::http_extension::Verb;
    match Verb::try_from(v).unwrap_or(Verb::None) {
        Verb::Get => Method::GET,
        Verb::Head => Method::HEAD,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
        Verb::Connect => Method::CONNECT,
        Verb::Options => Method::OPTIONS,
        Verb::Trace => Method::TRACE,
        Verb::Patch => Method::PATCH,
        Verb::Post | Verb::None => Method::POST,
    }
}

pub fn headers_to_metadata(headers: &HeaderMap) -> HashMap<String, internals::ListStringValue> {
    let mut out: HashMap<String, internals::ListStringValue> = HashMap::new();
    for (name, value) in headers {
        if is_hop_by_hop(name) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.entry(name.as_str().to_owned())
                .or_default()
                .values
                .push(v.to_owned());
        }
    }
    out
}

pub fn metadata_to_headers(md: &HashMap<String, internals::ListStringValue>, out: &mut HeaderMap) {
    for (k, vs) in md {
        let Ok(name) = HeaderName::try_from(k.as_str()) else {
            continue;
        };
        if is_hop_by_hop(&name) {
            continue;
        }
        for v in &vs.values {
            if let Ok(v) = HeaderValue::from_str(v) {
                out.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("orders", "").unwrap(),
            Target {
                app_id: "orders".into(),
                namespace: String::new()
            }
        );
        assert_eq!(
            Target::parse("orders.prod", "dev").unwrap(),
            Target {
                app_id: "orders".into(),
                namespace: "prod".into()
            }
        );
        assert!(Target::parse("", "").is_err());
    }

    #[test]
    fn headers_round_trip_without_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("connection", HeaderValue::from_static("close"));
        let md = headers_to_metadata(&h);
        assert_eq!(md["x-a"].values, ["1", "2"]);
        assert!(!md.contains_key("connection"));
        let mut back = HeaderMap::new();
        metadata_to_headers(&md, &mut back);
        assert_eq!(back.get_all("x-a").iter().count(), 2);
    }
}
