//! Actor calls between sidecars: `ServiceInvocation/CallActor` on the
//! internal gRPC port, over the invoke module's channels (so mTLS applies).

use bytes::Bytes;
use dapr_rs_proto::{
    common,
    generated::dapr::proto::internals::v1::{self as internals},
};
use http::{HeaderMap, StatusCode};

use super::{ActorCall, ActorResponse, ActorRuntime, error::ActorError};
use crate::invoke::{
    CALLER_APP_ID, CALLER_NAMESPACE, Invoker, headers_to_metadata, metadata_to_headers,
    verb_from_proto, verb_to_proto,
};

/// The request `CallActor` carries.
pub fn to_internal(call: &ActorCall, caller: &Invoker) -> internals::InternalInvokeRequest {
    let mut metadata = headers_to_metadata(&call.headers);
    for (k, v) in [
        (CALLER_APP_ID, caller.app_id.as_str()),
        (CALLER_NAMESPACE, caller.namespace.as_str()),
    ] {
        metadata.insert(
            k.to_owned(),
            internals::ListStringValue {
                values: vec![v.to_owned()],
            },
        );
    }
    let content_type = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    internals::InternalInvokeRequest {
        ver: internals::ApiVersion::V1 as i32,
        metadata,
        message: Some(common::InvokeRequest {
            method: call.method.clone(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: call.data.to_vec(),
            }),
            content_type,
            http_extension: Some(common::HttpExtension {
                verb: verb_to_proto(&call.verb) as i32,
                querystring: call.query.clone().unwrap_or_default(),
            }),
        }),
        actor: Some(internals::Actor {
            actor_type: call.actor_type.clone(),
            actor_id: call.actor_id.clone(),
        }),
    }
}

/// Decodes a `CallActor` request.
pub fn from_internal(req: internals::InternalInvokeRequest) -> Result<ActorCall, ActorError> {
    let actor = req
        .actor
        .ok_or_else(|| ActorError::BadRequest("actor call without an actor".into()))?;
    let message = req
        .message
        .ok_or_else(|| ActorError::BadRequest("actor call without a message".into()))?;
    let mut headers = HeaderMap::new();
    metadata_to_headers(&req.metadata, &mut headers);
    if !message.content_type.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&message.content_type)
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    let (verb, query) = match message.http_extension {
        Some(ext) => (
            verb_from_proto(ext.verb),
            Some(ext.querystring).filter(|q| !q.is_empty()),
        ),
        None => (http::Method::PUT, None),
    };
    Ok(ActorCall {
        actor_type: actor.actor_type,
        actor_id: actor.actor_id,
        method: message.method,
        verb,
        query,
        headers,
        data: message
            .data
            .map(|a| Bytes::from(a.value))
            .unwrap_or_default(),
    })
}

/// The `CallActor` answer.
pub fn to_internal_response(resp: ActorResponse) -> internals::InternalInvokeResponse {
    let content_type = resp.content_type().unwrap_or_default().to_owned();
    internals::InternalInvokeResponse {
        status: Some(internals::Status {
            code: i32::from(resp.status.as_u16()),
            message: resp
                .status
                .canonical_reason()
                .unwrap_or_default()
                .to_owned(),
            details: Vec::new(),
        }),
        headers: headers_to_metadata(&resp.headers),
        trailers: Default::default(),
        message: Some(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: resp.data.to_vec(),
            }),
            content_type,
        }),
    }
}

/// Sends the call to the owning sidecar.
pub async fn call(
    invoker: &Invoker,
    address: &str,
    app_id: &str,
    call: ActorCall,
) -> Result<ActorResponse, ActorError> {
    let mut client = invoker
        .internal_client(address, app_id)
        .map_err(|e| ActorError::Invoke(e.to_string()))?;
    let req = to_internal(&call, invoker);
    let resp = client
        .call_actor(req)
        .await
        .map_err(|s| ActorError::from_status(&s))?
        .into_inner();
    let status = resp
        .status
        .as_ref()
        .and_then(|s| u16::try_from(s.code).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    metadata_to_headers(&resp.headers, &mut headers);
    let message = resp.message.unwrap_or_default();
    if !message.content_type.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&message.content_type)
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    Ok(ActorResponse {
        status,
        headers,
        data: message
            .data
            .map(|a| Bytes::from(a.value))
            .unwrap_or_default(),
    })
}

/// The internal server's `CallActor`.
pub async fn serve(
    rt: &ActorRuntime,
    req: internals::InternalInvokeRequest,
) -> Result<internals::InternalInvokeResponse, tonic::Status> {
    let call = from_internal(req)?;
    let resp = rt.call_hosted(call).await?;
    Ok(to_internal_response(resp))
}
