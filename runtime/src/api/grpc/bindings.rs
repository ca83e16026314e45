//! gRPC `InvokeBinding` around `crate::bindings`: response metadata in the
//! message and as `metadata.<key>` response headers (also on failure), as
//! Dapr does.

use std::collections::HashMap;

use bytes::Bytes;
use dapr_components::bindings::InvokeRequest;
use dapr_rs_proto::runtime as pb;
use tonic::{
    Request, Response, Status,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
};

use crate::{bindings, error::MappedError, sidecar::Sidecar};

/// Request headers a binding sees as metadata are not for the component.
const RESERVED: &[&str] = &[
    "dapr-api-token",
    "content-type",
    "user-agent",
    "te",
    "grpc-accept-encoding",
    "grpc-timeout",
];

pub async fn invoke_binding(
    sidecar: &Sidecar,
    req: Request<pb::InvokeBindingRequest>,
) -> Result<Response<pb::InvokeBindingResponse>, Status> {
    let (headers, _, in_) = req.into_parts();
    let mut metadata = in_.metadata;
    // Dapr passes the call's gRPC metadata on to the component without
    // overwriting what the request set.
    for kv in headers.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            let key = k.as_str();
            if RESERVED.contains(&key) || key.starts_with(':') {
                continue;
            }
            if let Ok(v) = v.to_str() {
                metadata
                    .entry(key.to_owned())
                    .or_insert_with(|| v.to_owned());
            }
        }
    }
    let call = InvokeRequest {
        operation: in_.operation,
        data: Bytes::from(in_.data),
        metadata,
    };
    match bindings::invoke_output(&sidecar.registry, &in_.name, call).await {
        Ok(resp) => {
            let mut out = Response::new(pb::InvokeBindingResponse {
                data: resp.data.to_vec(),
                metadata: resp.metadata.clone(),
            });
            add_headers(out.metadata_mut(), &resp.metadata);
            Ok(out)
        }
        Err(failure) => {
            let md = failure.metadata.clone();
            let mut status = MappedError::from(failure).to_status();
            add_headers(status.metadata_mut(), &md);
            Err(status)
        }
    }
}

fn add_headers(out: &mut MetadataMap, md: &HashMap<String, String>) {
    for (k, v) in md {
        let key = format!("metadata.{}", k.to_ascii_lowercase());
        if let (Ok(k), Ok(v)) = (
            key.parse::<AsciiMetadataKey>(),
            v.parse::<AsciiMetadataValue>(),
        ) {
            out.append(k, v);
        }
    }
}
