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
    // --max-body-size: a declared length over the limit is refused before
    // anything is sent. (Chunked bodies stream through unbounded: a stream
    // cut short mid-way could not be told apart from a complete one.)
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > sidecar.max_body_size
    {
        return body_too_large(&target.app_id, n, sidecar.max_body_size);
    }
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

/// 413 in Dapr's error shape, naming the target app and the limit.
fn body_too_large(app_id: &str, size: u64, limit: u64) -> Response {
    (
        http::StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({
            "errorCode": "ERR_DIRECT_INVOKE",
            "message": format!(
                "failed to invoke, id: {app_id}, err: request body of {size} bytes is larger than the limit of {limit} bytes (--max-body-size)"
            ),
        })),
    )
        .into_response()
}

pub async fn no_app_id() -> Response {
    ApiError::InvokeNoAppId.into_response()
}
