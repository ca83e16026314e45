//! The internal gRPC server (`--dapr-internal-grpc-port`): other sidecars
//! call `CallLocal`/`CallLocalStream` here to reach this sidecar's app.

use std::{pin::Pin, sync::Arc};

use axum::body::Body;
use bytes::Bytes;
use dapr_policy::acl::{CallerIdentity, normalize_method};
use dapr_rs_proto::{
    common,
    generated::dapr::proto::internals::v1::{
        self as internals,
        service_invocation_server::{ServiceInvocation, ServiceInvocationServer},
    },
};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use http_body_util::BodyExt;
use tonic::{Request, Response, Status, Streaming};

use crate::mtls::VerifiedCaller;

use super::{InvokeRequest, Invoker, headers_to_metadata, metadata_to_headers, verb_from_proto};

pub struct InternalServer {
    invoker: Arc<Invoker>,
    /// Serves `CallActor` (empty without placement).
    actors: crate::actors::ActorSlot,
}

/// The service as served: a caller's reset of its request stream reaches
/// the app as an aborted body (see reset.rs).
pub type Service = super::reset::ResetIsAbort<ServiceInvocationServer<InternalServer>>;

pub fn service(invoker: Arc<Invoker>, max_message_size: usize) -> Service {
    service_with_actors(
        invoker,
        max_message_size,
        crate::actors::ActorSlot::default(),
    )
}

/// The internal service, with actor calls served by `actors`.
pub fn service_with_actors(
    invoker: Arc<Invoker>,
    max_message_size: usize,
    actors: crate::actors::ActorSlot,
) -> Service {
    super::reset::ResetIsAbort(
        ServiceInvocationServer::new(InternalServer { invoker, actors })
            .max_decoding_message_size(max_message_size)
            .max_encoding_message_size(max_message_size),
    )
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<internals::InternalInvokeResponseStream, Status>> + Send>>;

impl InternalServer {
    /// Access control on the callee, against the caller's identity. Under
    /// mTLS the identity is the verified certificate's, and it replaces
    /// whatever caller metadata the request carried (the app sees it as
    /// `dapr-caller-app-id` / `dapr-caller-namespace`).
    fn authorize(
        &self,
        req: &mut internals::InternalInvokeRequest,
        verified: Option<&VerifiedCaller>,
    ) -> Result<(), Status> {
        if let Some(VerifiedCaller(id)) = verified {
            for (k, v) in [
                (super::CALLER_APP_ID, id.app_id()),
                (super::CALLER_NAMESPACE, id.namespace()),
            ] {
                req.metadata.insert(
                    k.to_owned(),
                    internals::ListStringValue {
                        values: vec![v.to_owned()],
                    },
                );
            }
        }
        let acl = &self.invoker.acl;
        let first = |k: &str| {
            req.metadata
                .get(k)
                .and_then(|v| v.values.first())
                .cloned()
                .unwrap_or_default()
        };
        let method = req
            .message
            .as_ref()
            .map(|m| m.method.as_str())
            .unwrap_or("");
        let operation =
            normalize_method(method).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let verb = req
            .message
            .as_ref()
            .and_then(|m| m.http_extension.as_ref())
            .map(|e| verb_from_proto(e.verb).to_string());
        let caller_id = first(super::CALLER_APP_ID);
        let decision = if let Some(VerifiedCaller(id)) = verified {
            let caller = CallerIdentity::new(id.app_id(), id.namespace(), id.trust_domain());
            let d = acl.check(&caller, &operation, verb.as_deref());
            super::record_acl(acl, Some(&caller), &d);
            d
        } else if caller_id.is_empty() {
            let d = acl.check_unauthenticated();
            super::record_acl(acl, None, &d);
            d
        } else {
            // Self-hosted sidecars without NAMESPACE are in "default", as in Dapr.
            let namespace = Some(first(super::CALLER_NAMESPACE))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned());
            let caller = CallerIdentity::new(
                caller_id,
                namespace,
                self.invoker.default_trust_domain.clone(),
            );
            let d = acl.check(&caller, &operation, verb.as_deref());
            super::record_acl(acl, Some(&caller), &d);
            d
        };
        if decision.allowed {
            Ok(())
        } else {
            tracing::info!(operation = %operation, reason = %decision.reason, "access control denied an invocation");
            Err(Status::permission_denied(format!(
                "access control policy has denied access to method {operation}"
            )))
        }
    }

    fn to_invoke_request(
        req: internals::InternalInvokeRequest,
        body: Body,
    ) -> Result<InvokeRequest, Status> {
        let message = req
            .message
            .ok_or_else(|| Status::invalid_argument("invoke request without a message"))?;
        let mut headers = HeaderMap::new();
        metadata_to_headers(&req.metadata, &mut headers);
        if !message.content_type.is_empty()
            && !headers.contains_key(http::header::CONTENT_TYPE)
            && let Ok(v) = http::HeaderValue::from_str(&message.content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
        let (verb, query) = match message.http_extension {
            Some(ext) => (
                verb_from_proto(ext.verb),
                Some(ext.querystring).filter(|q| !q.is_empty()),
            ),
            None => (http::Method::POST, None),
        };
        Ok(InvokeRequest {
            method: message.method,
            verb,
            query,
            headers,
            body,
        })
    }

    fn response_head(resp: &http::Response<Body>) -> internals::InternalInvokeResponse {
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        internals::InternalInvokeResponse {
            status: Some(internals::Status {
                code: i32::from(resp.status().as_u16()),
                message: resp
                    .status()
                    .canonical_reason()
                    .unwrap_or_default()
                    .to_owned(),
                details: Vec::new(),
            }),
            headers: headers_to_metadata(resp.headers()),
            trailers: Default::default(),
            message: Some(common::InvokeResponse {
                data: None,
                content_type,
            }),
        }
    }
}

fn app_error(e: crate::appchannel::AppChannelError) -> Status {
    match e {
        crate::appchannel::AppChannelError::InvalidRequest(m) => Status::invalid_argument(m),
        crate::appchannel::AppChannelError::NotConfigured
        | crate::appchannel::AppChannelError::Unhealthy => {
            Status::failed_precondition(e.to_string())
        }
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl ServiceInvocation for InternalServer {
    /// An actor call routed here by the sidecar that looked up its owner.
    async fn call_actor(
        &self,
        req: Request<internals::InternalInvokeRequest>,
    ) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let rt = self.actors.get().await?;
        crate::actors::remote::serve(&rt, req.into_inner())
            .await
            .map(Response::new)
    }

    /// Unary form, used by callers that buffer (and by Go sidecars for gRPC apps).
    async fn call_local(
        &self,
        req: Request<internals::InternalInvokeRequest>,
    ) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let verified = req.extensions().get::<VerifiedCaller>().cloned();
        let mut req = req.into_inner();
        self.authorize(&mut req, verified.as_ref())?;
        let data = req
            .message
            .as_ref()
            .and_then(|m| m.data.as_ref())
            .map(|a| Bytes::from(a.value.clone()))
            .unwrap_or_default();
        let invoke = Self::to_invoke_request(req, Body::from(data))?;
        let resp = self
            .invoker
            .call_local_app(invoke)
            .await
            .map_err(app_error)?;
        let mut head = Self::response_head(&resp);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Status::unavailable(format!("reading the app's response: {e}")))?
            .to_bytes();
        if let Some(m) = head.message.as_mut() {
            m.data = Some(prost_types::Any {
                type_url: String::new(),
                value: body.to_vec(),
            });
        }
        Ok(Response::new(head))
    }

    async fn call_local_stream(
        &self,
        req: Request<Streaming<internals::InternalInvokeRequestStream>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let verified = req.extensions().get::<VerifiedCaller>().cloned();
        // This sidecar's span (set by the observability layer) is the app's parent.
        let traceparent = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty invocation stream"))?;
        let mut head = first.request.ok_or_else(|| {
            Status::invalid_argument("the first stream message must carry the request")
        })?;
        self.authorize(&mut head, verified.as_ref())?;
        if let Some(tp) = traceparent {
            head.metadata.insert(
                "traceparent".to_owned(),
                internals::ListStringValue { values: vec![tp] },
            );
        }
        let caller = head
            .metadata
            .get(super::CALLER_APP_ID)
            .and_then(|v| v.values.first())
            .cloned()
            .unwrap_or_default();
        dapr_observability::metrics::invocation_received(&caller);
        // The request stream stays open until the response is sent (see inbound.rs).
        let (body, guard) =
            super::inbound::request_body(first.payload.map(|p| Bytes::from(p.data)), inbound);
        let invoke = Self::to_invoke_request(head, body)?;
        let resp = self
            .invoker
            .call_local_app(invoke)
            .await
            .map_err(app_error)?;
        dapr_observability::metrics::invocation_responded(
            &caller,
            i32::from(resp.status().as_u16()),
        );
        let head = Self::response_head(&resp);
        let first = internals::InternalInvokeResponseStream {
            response: Some(head),
            payload: None,
        };
        let chunks = super::try_body_chunks(resp.into_body())
            .enumerate()
            .map(|(seq, data)| {
                let data = data
                    .map_err(|e| Status::unavailable(format!("reading the app's response: {e}")))?;
                Ok(internals::InternalInvokeResponseStream {
                    response: None,
                    payload: Some(common::StreamPayload {
                        data: data.to_vec(),
                        seq: seq as u64,
                    }),
                })
            });
        let out = futures::stream::once(async move { Ok(first) })
            .chain(chunks)
            .map(move |m| {
                let _held_until_sent = &guard;
                m
            });
        Ok(Response::new(Box::pin(out)))
    }
}
