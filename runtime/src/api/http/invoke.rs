//! `/v1.0/invoke/{appId}/method/{method}` and the `dapr-app-id` header form.

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
};

use super::{AppState, PathParams};
use crate::{
    error::ApiError,
    invoke::{InvokeRequest, body_limit},
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
    let target = match sidecar.invoker.target(app_id) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let (mut parts, body) = req.into_parts();
    parts.headers.remove("dapr-app-id");
    // --max-body-size: a declared length over the limit is refused before
    // anything is sent; a body of unknown length is counted as it streams
    // and, past the limit, aborts the call upstream (see body_limit.rs).
    let limit = sidecar.max_body_size;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, exceeded) = match declared {
        Some(n) if n > limit => {
            return body_too_large(
                &target.app_id,
                &format!(
                    "request body of {n} bytes is larger than the limit of {limit} bytes (--max-body-size)"
                ),
            );
        }
        // hyper holds a declared length to exactly that many bytes.
        Some(_) => (body, None),
        None => {
            let (body, exceeded) = body_limit::limit(body, limit);
            (body, Some(exceeded))
        }
    };
    let invoke = InvokeRequest {
        method,
        verb: parts.method,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let result = sidecar.invoker.invoke(&target, invoke).await;
    // Over the limit before the response started: whatever the upstream
    // made of its aborted request, the caller is told why.
    if exceeded.is_some_and(|e| e.get()) {
        let reason = body_limit::BodyTooLarge { limit }.to_string();
        return body_too_large(&target.app_id, &reason);
    }
    match result {
        Ok(resp) => resp.into_response(),
        Err(e) => e.into_response(),
    }
}

/// 413 in Dapr's error shape, naming the target app and the limit.
fn body_too_large(app_id: &str, reason: &str) -> Response {
    (
        http::StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({
            "errorCode": "ERR_DIRECT_INVOKE",
            "message": format!("failed to invoke, id: {app_id}, err: {reason}"),
        })),
    )
        .into_response()
}

pub async fn no_app_id() -> Response {
    ApiError::InvokeNoAppId.into_response()
}
