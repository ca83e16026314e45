//! gRPC `InvokeService`: a buffered invocation through the same invoker the
//! HTTP API uses (Dapr apps, HTTPEndpoints and URLs alike).

use axum::body::Body;
use dapr_rs_proto::{common, runtime as pb};
use http::HeaderMap;
use http_body_util::BodyExt;
use tonic::Status;

use crate::{
    error::ApiError,
    invoke::{InvokeRequest, verb_from_proto},
    sidecar::Sidecar,
};

pub async fn invoke_service(
    sidecar: &Sidecar,
    req: pb::InvokeServiceRequest,
) -> Result<common::InvokeResponse, Status> {
    let message = req
        .message
        .ok_or_else(|| ApiError::BadRequest("InvokeServiceRequest has no message".into()))?;
    // HTTPEndpoint names and URLs resolve exactly as in the HTTP API.
    let target = sidecar.invoker.target(&req.id)?;
    let mut headers = HeaderMap::new();
    if !message.content_type.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&message.content_type)
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    let (verb, query) = match &message.http_extension {
        Some(ext) => (
            verb_from_proto(ext.verb),
            Some(ext.querystring.clone()).filter(|q| !q.is_empty()),
        ),
        None => (http::Method::POST, None),
    };
    let data = message.data.map(|a| a.value).unwrap_or_default();
    let resp = sidecar
        .invoker
        .invoke(
            &target,
            InvokeRequest {
                method: message.method,
                verb,
                query,
                headers,
                body: Body::from(data),
            },
        )
        .await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Status::unavailable(format!("reading the app's response: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(Status::new(
            http_to_grpc(status),
            format!(
                "app returned HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    Ok(common::InvokeResponse {
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
        content_type,
    })
}

fn http_to_grpc(status: http::StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}
