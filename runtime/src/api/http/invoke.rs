//! `/v1.0/invoke/{appId}/method/{method}` and the `dapr-app-id` header form.

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
};

use super::{AppState, PathParams};
use crate::{
    error::ApiError,
    invoke::{InvokeRequest, Target},
};

pub async fn invoke(
    State(sidecar): State<AppState>,
    PathParams((app_id, method)): PathParams<(String, String)>,
    req: Request,
) -> Response {
    forward(&sidecar, &app_id, method, req).await
}

/// Any path with a `dapr-app-id` header is an invocation of that path.
pub fn app_id_header(req: &Request) -> Option<String> {
    req.headers()
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

pub async fn forward(sidecar: &AppState, app_id: &str, method: String, req: Request) -> Response {
    // An HTTPEndpoint name or a URL is taken whole (URLs contain dots).
    let target = if sidecar.invoker.is_external(app_id) {
        Target {
            app_id: app_id.to_owned(),
            namespace: String::new(),
        }
    } else {
        match Target::parse(app_id, &sidecar.invoker.namespace) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.headers.remove("dapr-app-id");
    let invoke = InvokeRequest {
        method,
        verb: parts.method,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    match sidecar.invoker.invoke(&target, invoke).await {
        Ok(resp) => resp.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn no_app_id() -> Response {
    ApiError::InvokeNoAppId.into_response()
}
