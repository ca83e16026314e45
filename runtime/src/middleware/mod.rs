//! Dapr's HTTP middleware pipelines.
//!
//! A Configuration names `middleware.http.*` Components in
//! `spec.httpPipeline.handlers` (requests arriving at the Dapr HTTP API) and
//! `spec.appHttpPipeline.handlers` (requests daprd sends to the app). Each
//! handler is the Component of that name; its metadata configures it. Handlers
//! run in the order listed: the first sees the request first.
//!
//! Built here:
//! - `middleware.http.ratelimit`: token bucket per client IP
//!   and path, `429` when empty.
//! - `middleware.http.bearer`: `Authorization: Bearer <JWT>`
//!   checked against a JWKS, issuer and audience; `401` otherwise.
//! - `middleware.http.routeralias`: rewrites the request path
//!   before routing.
//!
//! How handlers are resolved follows daprd: a handler whose Component is not
//! loaded, or whose Component has another type or version, is skipped (with a
//! warning here). A handler of a type this build does not implement is an
//! error, as an unknown component type is in daprd; with `ignoreErrors: true`
//! on the Component the handler is skipped instead, as are its metadata errors.
//!
//! Selectors (`selector.fields[{field, value}]`): daprd parses them but never
//! evaluates them — every handler applies to every request. dapr-rs evaluates
//! them: `field` is an HTTP header name and `value` its exact value, and the
//! handler applies only when every field matches one value of that header. A
//! handler without a selector (or with no fields) applies to every request,
//! as in daprd.

mod bearer;
mod ratelimit;
mod routeralias;

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Router,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue},
    response::Response,
};
use dapr_components::ComponentMetadata;
use dapr_crds::{Component, ConfigurationSpec};

use self::{bearer::Bearer, ratelimit::RateLimit, routeralias::RouterAlias};

/// Component types implemented here.
pub const RATELIMIT: &str = "middleware.http.ratelimit";
pub const BEARER: &str = "middleware.http.bearer";
pub const ROUTERALIAS: &str = "middleware.http.routeralias";
const SUPPORTED: [&str; 3] = [BEARER, RATELIMIT, ROUTERALIAS];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiddlewareError {
    #[error(
        "{pipeline} handler '{handler}': middleware type '{type_}' is not supported by dapr-rs (supported: {})",
        SUPPORTED.map(|t| format!("{t}/v1")).join(", ")
    )]
    UnknownType {
        pipeline: &'static str,
        handler: String,
        type_: String,
    },
    #[error("{pipeline} handler {index}: {reason}")]
    InvalidHandler {
        pipeline: &'static str,
        index: usize,
        reason: String,
    },
    #[error("middleware component '{component}' ({type_}): {reason}")]
    Init {
        component: String,
        type_: String,
        reason: String,
    },
}

/// Which pipeline of the Configuration to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// `spec.httpPipeline`: wraps the Dapr HTTP API router.
    Http,
    /// `spec.appHttpPipeline`: wraps requests sent to the app.
    AppHttp,
}

impl PipelineKind {
    pub fn field(self) -> &'static str {
        match self {
            Self::Http => "httpPipeline",
            Self::AppHttp => "appHttpPipeline",
        }
    }
}

/// Builds the `kind` pipeline of a Configuration from the loaded Components.
///
/// Component metadata is read as literal strings ([`dapr_crds::MetadataItem::literal`]);
/// resolve `secretKeyRef`/`envRef` items into `value`s before calling this.
/// A pipeline whose bearer handler fetches its JWKS over HTTP loads it on
/// first use; call [`Pipeline::prefetch`] at startup to fail fast as daprd does.
pub fn build_pipeline<'a>(
    spec: &ConfigurationSpec,
    kind: PipelineKind,
    components: impl IntoIterator<Item = &'a Component>,
) -> Result<Pipeline, MiddlewareError> {
    let field = kind.field();
    let handlers = match kind {
        PipelineKind::Http => spec.http_pipeline.as_ref(),
        PipelineKind::AppHttp => spec.app_http_pipeline.as_ref(),
    }
    .map(|p| {
        p.handlers
            .iter()
            .map(|h| HandlerRef {
                name: h.name.clone(),
                type_: h.type_.clone(),
                version: h.version.clone(),
                selector: h
                    .selector
                    .as_ref()
                    .map(|s| {
                        s.fields
                            .iter()
                            .map(|f| (f.field.clone(), f.value.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    })
    .unwrap_or_default();
    build(field, &handlers, components)
}

/// A handler entry of a pipeline spec, detached from the CRD type.
#[derive(Debug, Clone, Default)]
struct HandlerRef {
    name: String,
    type_: String,
    version: String,
    selector: Vec<(String, String)>,
}

fn version_or_v1(v: &str) -> &str {
    if v.is_empty() { "v1" } else { v }
}

/// Splits `middleware.http.x/v1` style types into type and version.
fn split_type<'s>(type_: &'s str, version: &'s str) -> (&'s str, &'s str) {
    match type_.split_once('/') {
        Some((t, v)) if version.is_empty() => (t, v),
        _ => (type_, version_or_v1(version)),
    }
}

fn build<'a>(
    pipeline: &'static str,
    handlers: &[HandlerRef],
    components: impl IntoIterator<Item = &'a Component>,
) -> Result<Pipeline, MiddlewareError> {
    let components: HashMap<&str, &Component> =
        components.into_iter().map(|c| (c.name(), c)).collect();
    // One instance per Component, shared when a handler is listed twice (as
    // daprd shares one middleware instance).
    let mut built: HashMap<String, Arc<Middleware>> = HashMap::new();
    let mut out = Vec::with_capacity(handlers.len());
    for (index, h) in handlers.iter().enumerate() {
        if h.name.is_empty() {
            return Err(MiddlewareError::InvalidHandler {
                pipeline,
                index,
                reason: "missing 'name'".into(),
            });
        }
        if h.type_.is_empty() {
            return Err(MiddlewareError::InvalidHandler {
                pipeline,
                index,
                reason: format!("handler '{}' has no 'type'", h.name),
            });
        }
        let (type_, version) = split_type(&h.type_, &h.version);
        if !SUPPORTED.contains(&type_) || version != "v1" {
            let component_ignores = components
                .get(h.name.as_str())
                .is_some_and(|c| c.spec.ignore_errors);
            if component_ignores {
                tracing::warn!(
                    pipeline,
                    handler = %h.name,
                    "middleware type '{}' is not supported; skipping the handler (ignoreErrors)",
                    h.type_
                );
                continue;
            }
            return Err(MiddlewareError::UnknownType {
                pipeline,
                handler: h.name.clone(),
                type_: format!("{type_}/{version}"),
            });
        }
        let Some(component) = components.get(h.name.as_str()) else {
            tracing::warn!(
                pipeline,
                handler = %h.name,
                "no middleware component named '{}' is loaded; skipping the handler",
                h.name
            );
            continue;
        };
        let (ctype, cversion) = split_type(&component.spec.type_, &component.spec.version);
        if ctype != type_ || cversion != version {
            tracing::warn!(
                pipeline,
                handler = %h.name,
                "component '{}' is {ctype}/{cversion}, not {type_}/{version}; skipping the handler",
                h.name
            );
            continue;
        }
        let selector = match parse_selector(&h.selector) {
            Ok(s) => s,
            Err(reason) => {
                return Err(MiddlewareError::InvalidHandler {
                    pipeline,
                    index,
                    reason,
                });
            }
        };
        let middleware = match built.get(&h.name) {
            Some(m) => m.clone(),
            None => match Middleware::from_component(component, type_) {
                Ok(m) => {
                    let m = Arc::new(m);
                    built.insert(h.name.clone(), m.clone());
                    m
                }
                Err(e) if component.spec.ignore_errors => {
                    tracing::warn!(pipeline, handler = %h.name, "{e}; skipping the handler (ignoreErrors)");
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        tracing::info!(pipeline, handler = %h.name, "middleware {type_}/{version} added to the pipeline");
        out.push(Handler {
            name: h.name.clone(),
            selector,
            middleware,
        });
    }
    Ok(Pipeline {
        handlers: out.into(),
    })
}

fn parse_selector(fields: &[(String, String)]) -> Result<Vec<(HeaderName, String)>, String> {
    fields
        .iter()
        .map(|(field, value)| {
            HeaderName::try_from(field.as_str())
                .map(|name| (name, value.clone()))
                .map_err(|_| format!("selector field '{field}' is not a valid HTTP header name"))
        })
        .collect()
}

/// One middleware instance.
enum Middleware {
    RateLimit(RateLimit),
    Bearer(Bearer),
    RouterAlias(RouterAlias),
}

impl Middleware {
    fn from_component(component: &Component, type_: &str) -> Result<Self, MiddlewareError> {
        let init_err = |reason: String| MiddlewareError::Init {
            component: component.name().to_owned(),
            type_: type_.to_owned(),
            reason,
        };
        let mut md = ComponentMetadata::new(component.name(), "");
        for item in &component.spec.metadata {
            if let Some(v) = item.literal() {
                md.insert(&item.name, v);
            }
        }
        match type_ {
            RATELIMIT => RateLimit::from_metadata(&md)
                .map(Self::RateLimit)
                .map_err(init_err),
            BEARER => Bearer::from_metadata(&md)
                .map(Self::Bearer)
                .map_err(init_err),
            ROUTERALIAS => {
                let items: Vec<(String, String)> = component
                    .spec
                    .metadata
                    .iter()
                    .filter_map(|i| i.literal().map(|v| (i.name.clone(), v)))
                    .collect();
                RouterAlias::from_metadata(&items)
                    .map(Self::RouterAlias)
                    .map_err(init_err)
            }
            other => Err(init_err(format!("unsupported type '{other}'"))),
        }
    }

    /// Runs the middleware on a request: `None` to go on, `Some` to answer.
    /// Headers to add to whatever response the request ends with go in
    /// `response_headers`.
    async fn apply(&self, req: &mut Request, response_headers: &mut HeaderMap) -> Option<Response> {
        match self {
            Self::RateLimit(m) => m.apply(req, response_headers),
            Self::Bearer(m) => m.apply(req.headers()).await,
            Self::RouterAlias(m) => {
                m.apply(req);
                None
            }
        }
    }
}

struct Handler {
    name: String,
    selector: Vec<(HeaderName, String)>,
    middleware: Arc<Middleware>,
}

impl Handler {
    fn selected(&self, req: &Request) -> bool {
        self.selector.iter().all(|(name, value)| {
            req.headers()
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        })
    }
}

/// A built pipeline: cheap to clone, shared by every request.
#[derive(Clone, Default)]
pub struct Pipeline {
    handlers: Arc<[Handler]>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handler_names()).finish()
    }
}

impl Pipeline {
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Names of the handlers in the order they run.
    pub fn handler_names(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|h| h.name.as_str())
    }

    /// Loads what handlers fetch over the network (a bearer handler's JWKS or
    /// OpenID configuration), as daprd does when it initializes the
    /// component. Without this the first request loads it.
    pub async fn prefetch(&self) -> Result<(), MiddlewareError> {
        for h in self.handlers.iter() {
            if let Middleware::Bearer(b) = h.middleware.as_ref() {
                b.prefetch().await.map_err(|reason| MiddlewareError::Init {
                    component: h.name.clone(),
                    type_: BEARER.to_owned(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// Wraps a router so every request passes through the pipeline *before*
    /// routing (a routeralias rewrite picks the route). Without handlers the
    /// router is returned as is.
    pub fn layer(&self, router: Router) -> Router {
        if self.is_empty() {
            return router;
        }
        Router::new().fallback_service(PipelineService {
            pipeline: SharedPipeline::new(self.clone()),
            inner: router,
        })
    }

    /// Runs the pipeline on `req`, then `next` unless a handler answered.
    pub async fn run<F, Fut>(&self, mut req: Request, next: F) -> Response
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        let mut extra = HeaderMap::new();
        for h in self.handlers.iter() {
            if !h.selected(&req) {
                continue;
            }
            if let Some(resp) = h.middleware.apply(&mut req, &mut extra).await {
                return add_headers(resp, extra);
            }
        }
        add_headers(next(req).await, extra)
    }
}

/// Headers middleware set before the request went on; ones the response
/// already has win (they were set later).
fn add_headers(mut resp: Response, extra: HeaderMap) -> Response {
    if extra.is_empty() {
        return resp;
    }
    let headers = resp.headers_mut();
    let present: Vec<HeaderName> = extra
        .keys()
        .filter(|k| headers.contains_key(*k))
        .cloned()
        .collect();
    let mut last: Option<HeaderName> = None;
    for (name, value) in extra {
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = &last
            && !present.contains(n)
        {
            headers.append(n.clone(), value);
        }
    }
    resp
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

impl<S> tower::Layer<S> for Pipeline {
    type Service = PipelineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            pipeline: SharedPipeline::new(self.clone()),
            inner,
        }
    }
}

/// A pipeline that can be replaced while requests flow (hot reload of the
/// middleware Components it is built from). Requests in flight finish with
/// the pipeline they started with.
#[derive(Clone, Default)]
pub struct SharedPipeline(Arc<std::sync::RwLock<Pipeline>>);

impl std::fmt::Debug for SharedPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl SharedPipeline {
    pub fn new(pipeline: Pipeline) -> Self {
        Self(Arc::new(std::sync::RwLock::new(pipeline)))
    }

    /// The current pipeline (a cheap clone).
    pub fn get(&self) -> Pipeline {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, pipeline: Pipeline) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = pipeline;
    }

    /// Like [`Pipeline::layer`], reading the current pipeline per request.
    pub fn layer(&self, router: Router) -> Router {
        Router::new().fallback_service(PipelineService {
            pipeline: self.clone(),
            inner: router,
        })
    }
}

/// A service behind a pipeline (see [`Pipeline`] as a `tower::Layer`).
#[derive(Clone)]
pub struct PipelineService<S> {
    pipeline: SharedPipeline,
    inner: S,
}

impl<S> tower::Service<Request> for PipelineService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone is not ready; the ready one goes with this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let pipeline = self.pipeline.get();
        Box::pin(async move {
            let resp = pipeline
                .run(req, move |req| async move {
                    match inner.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                })
                .await;
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests;
