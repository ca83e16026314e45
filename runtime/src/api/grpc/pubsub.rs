//! gRPC `PublishEvent` and `BulkPublishEvent[Alpha1]`: wire conversion only;
//! the logic is in `crate::pubsub`.

use dapr_rs_proto::runtime as pb;
use tonic::{Status, metadata::MetadataMap};

use crate::{
    pubsub::{self, BulkEntry, PublishInput},
    sidecar::Sidecar,
};

fn meta(md: &MetadataMap, key: &str) -> String {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub async fn publish_event(
    sidecar: &Sidecar,
    md: &MetadataMap,
    req: pb::PublishEventRequest,
) -> Result<(), Status> {
    pubsub::publish(
        sidecar,
        PublishInput {
            pubsub: req.pubsub_name,
            topic: req.topic,
            data: req.data.into(),
            content_type: req.data_content_type,
            metadata: req.metadata,
            trace_parent: meta(md, "traceparent"),
            trace_state: meta(md, "tracestate"),
        },
    )
    .await
    .map_err(Into::into)
}

pub async fn bulk_publish_event(
    sidecar: &Sidecar,
    md: &MetadataMap,
    req: pb::BulkPublishRequest,
) -> Result<pb::BulkPublishResponse, Status> {
    let entries = req
        .entries
        .into_iter()
        .map(|e| BulkEntry {
            entry_id: e.entry_id,
            data: e.event.into(),
            content_type: e.content_type,
            metadata: e.metadata,
        })
        .collect();
    let failed = pubsub::bulk_publish(
        sidecar,
        &req.pubsub_name,
        &req.topic,
        req.metadata,
        entries,
        &meta(md, "traceparent"),
        &meta(md, "tracestate"),
    )
    .await?;
    Ok(pb::BulkPublishResponse {
        failed_entries: failed
            .into_iter()
            .map(|f| pb::BulkPublishResponseFailedEntry {
                entry_id: f.entry_id,
                error: f.error,
            })
            .collect(),
    })
}
