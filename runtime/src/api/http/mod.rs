//! Dapr's HTTP API (axum).

mod actors;
mod bindings;
mod configuration;
mod crypto;
mod invoke;
mod lock;
mod pubsub;
mod secrets;
mod state;
mod system;
mod workflow;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post, put},
};

use crate::{error::ApiError, middleware::SharedPipeline, sidecar::Sidecar};

pub type AppState = Arc<Sidecar>;

/// The full API router (port 3500), without middleware.
pub fn router(sidecar: Arc<Sidecar>) -> Router {
    router_with_pipeline(sidecar, &SharedPipeline::default())
}

/// The API router with the Configuration's `httpPipeline`: the API token is
/// checked first, then the pipeline runs (it may rewrite the path), then
/// routing — Dapr's order. The pipeline is read per request, so hot reload
/// can replace it.
pub fn router_with_pipeline(sidecar: Arc<Sidecar>, pipeline: &SharedPipeline) -> Router {
    let token_state = sidecar.clone();
    let routes = routes(sidecar);
    Router::new()
        .fallback_service(pipeline.layer(routes))
        .layer(middleware::from_fn_with_state(
            token_state,
            require_api_token,
        ))
}

fn routes(sidecar: Arc<Sidecar>) -> Router {
    let limit = usize::try_from(sidecar.max_body_size).unwrap_or(usize::MAX);
    Router::new()
        .merge(system_routes())
        .route("/v1.0/shutdown", post(system::shutdown))
        .route("/v1.0/state/{store}", post(state::save).put(state::save))
        .route(
            "/v1.0/state/{store}/bulk",
            post(state::bulk_get).put(state::bulk_get),
        )
        .route(
            "/v1.0/state/{store}/transaction",
            post(state::transaction).put(state::transaction),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(state::get).delete(state::delete),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(state::query).put(state::query),
        )
        .route(
            "/v1.0/invoke/{app_id}/method/{*method}",
            any(invoke::invoke),
        )
        .route("/v1.0/invoke/{app_id}/method/", any(invoke::no_app_id))
        .route("/v1.0/configuration/{store}", get(configuration::get))
        .route(
            "/v1.0-alpha1/configuration/{store}",
            get(configuration::get),
        )
        .route(
            "/v1.0/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route("/v1.0-alpha1/crypto/{name}/encrypt", put(crypto::encrypt))
        .route("/v1.0-alpha1/crypto/{name}/decrypt", put(crypto::decrypt))
        .route(
            "/v1.0/actors/{actor_type}/{actor_id}/method/{*method}",
            any(actors::invoke),
        )
        .route(
            "/v1.0/actors/{actor_type}/{actor_id}/state",
            post(actors::transaction).put(actors::transaction),
        )
        .route(
            "/v1.0/actors/{actor_type}/{actor_id}/state/{key}",
            get(actors::get_state),
        )
        .route(
            "/v1.0/bindings/{name}",
            post(bindings::invoke).put(bindings::invoke),
        )
        .route("/v1.0-alpha1/lock/{store}", post(lock::try_lock))
        .route("/v1.0-alpha1/unlock/{store}", post(lock::unlock))
        .route("/v1.0/secrets/{store}/bulk", get(secrets::bulk))
        .route("/v1.0/secrets/{store}/{name}", get(secrets::get))
        .route("/v1.0/publish/{pubsub}/{*topic}", post(pubsub::publish))
        .route("/v1.0/publish/{pubsub}", post(pubsub::publish_no_topic))
        .route("/v1.0/publish/{pubsub}/", post(pubsub::publish_no_topic))
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/actors/{actor_type}/{actor_id}/reminders/{name}",
            any(crate::actors::reminders::api::http_reminder),
        )
        .route(
            "/v1.0/actors/{actor_type}/{actor_id}/timers/{name}",
            any(crate::actors::reminders::api::http_timer),
        )
        .merge(workflow::routes())
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(sidecar)
}

/// The public port (`--dapr-public-port`): healthz and metadata only, no token.
pub fn public_router(sidecar: Arc<Sidecar>) -> Router {
    Router::new().merge(system_routes()).with_state(sidecar)
}

fn system_routes() -> Router<AppState> {
    Router::new()
        .route("/v1.0/healthz", get(system::healthz))
        .route("/v1.0/healthz/outbound", get(system::healthz_outbound))
        .route("/v1.0/metadata", get(system::get_metadata))
        .route("/v1.0/metadata/{key}", put(system::put_metadata))
}

/// With `DAPR_API_TOKEN` set, every route but the health checks needs the
/// `dapr-api-token` header. The header is removed before the request goes on,
/// so it can never be forwarded to an app.
async fn require_api_token(
    State(sidecar): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &sidecar.api_token {
        let path = req.uri().path().trim_end_matches('/');
        let exempt = req.method() == http::Method::GET
            && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound");
        if !exempt {
            let given = req.headers().get("dapr-api-token").map(|v| v.as_bytes());
            if !given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
                return (StatusCode::UNAUTHORIZED, "invalid api token").into_response();
            }
        }
        req.headers_mut().remove("dapr-api-token");
    }
    next.run(req).await
}

/// Compares secrets without leaking the matching prefix length through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Unmatched paths: with a `dapr-app-id` header they are invocations of the
/// path on that app (as in Dapr); known API prefixes of building blocks not
/// built yet answer 501; anything else is not a Dapr route.
async fn fallback(State(sidecar): State<AppState>, req: Request) -> Response {
    if let Some(app_id) = invoke::app_id_header(&req) {
        let method = req.uri().path().trim_start_matches('/').to_owned();
        return invoke::forward(&sidecar, &app_id, method, req).await;
    }
    let path = req.uri().path();
    let api = ["/v1.0/", "/v1.0-alpha1/", "/v1.0-alpha2/", "/v1.0-beta1/"]
        .iter()
        .any(|p| path.starts_with(p));
    if api {
        ApiError::Unimplemented(format!("the API {path}")).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "errorCode": "ERR_NOT_FOUND",
                "message": format!("no Dapr API at {path}"),
            })),
        )
            .into_response()
    }
}

/// The request body, with size and read errors in Dapr's error shape.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge {
                    limit: state.max_body_size,
                })
            }
            Err(rejection) => Err(ApiError::BodyRead(rejection.body_text())),
        }
    }
}

/// Path parameters, with malformed ones (e.g. invalid UTF-8 after percent
/// decoding) answered in Dapr's error shape.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e| ApiError::MalformedRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// `metadata.<key>=value` query parameters.
pub fn query_metadata(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata.")
                .map(|k| (k.to_owned(), v.into_owned()))
        })
        .collect()
}

/// The value of one plain query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
