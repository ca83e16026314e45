//! gRPC state methods: wire conversion only; the logic is in `crate::state`.

use dapr_components::state::{Concurrency, Consistency};
use dapr_rs_proto::{common, runtime as pb};
use tonic::Status;

use crate::{
    error::ApiError,
    sidecar::Sidecar,
    state::{DeleteItem, SaveItem, TxOperation, WriteOptions},
};

fn consistency(v: i32) -> Consistency {
    match common::state_options::StateConsistency::try_from(v) {
        Ok(common::state_options::StateConsistency::ConsistencyStrong) => Consistency::Strong,
        _ => Consistency::Eventual,
    }
}

fn options(o: Option<common::StateOptions>) -> WriteOptions {
    let o = o.unwrap_or_default();
    WriteOptions {
        concurrency: match common::state_options::StateConcurrency::try_from(o.concurrency) {
            Ok(common::state_options::StateConcurrency::ConcurrencyFirstWrite) => {
                Concurrency::FirstWrite
            }
            _ => Concurrency::LastWrite,
        },
        consistency: consistency(o.consistency),
    }
}

fn save_item(s: common::StateItem) -> SaveItem {
    SaveItem {
        key: s.key,
        value: s.value.into(),
        etag: s.etag.map(|e| e.value),
        options: options(s.options),
        content_type: s.metadata.get("contentType").cloned(),
        metadata: s.metadata,
    }
}

pub async fn get_state(
    sidecar: &Sidecar,
    req: pb::GetStateRequest,
) -> Result<pb::GetStateResponse, Status> {
    let item = sidecar
        .state
        .get(
            &req.store_name,
            &req.key,
            consistency(req.consistency),
            req.metadata,
        )
        .await?;
    Ok(item
        .map(|i| pb::GetStateResponse {
            data: i.value.to_vec(),
            etag: i.etag.unwrap_or_default(),
            metadata: i.metadata,
        })
        .unwrap_or_default())
}

pub async fn get_bulk_state(
    sidecar: &Sidecar,
    req: pb::GetBulkStateRequest,
) -> Result<pb::GetBulkStateResponse, Status> {
    let parallelism = usize::try_from(req.parallelism.max(0)).unwrap_or(0);
    let items = sidecar
        .state
        .bulk_get(&req.store_name, &req.keys, parallelism, req.metadata)
        .await?;
    Ok(pb::GetBulkStateResponse {
        items: items
            .into_iter()
            .map(|i| match i.result {
                Ok(Some(item)) => pb::BulkStateItem {
                    key: i.key,
                    data: item.value.to_vec(),
                    etag: item.etag.unwrap_or_default(),
                    metadata: item.metadata,
                    ..Default::default()
                },
                Ok(None) => pb::BulkStateItem {
                    key: i.key,
                    ..Default::default()
                },
                Err(e) => pb::BulkStateItem {
                    key: i.key,
                    error: e.to_string(),
                    ..Default::default()
                },
            })
            .collect(),
    })
}

pub async fn save_state(sidecar: &Sidecar, req: pb::SaveStateRequest) -> Result<(), Status> {
    let items = req.states.into_iter().map(save_item).collect();
    sidecar.state.save(&req.store_name, items).await?;
    Ok(())
}

pub async fn delete_state(sidecar: &Sidecar, req: pb::DeleteStateRequest) -> Result<(), Status> {
    sidecar
        .state
        .delete(
            &req.store_name,
            &req.key,
            req.etag.map(|e| e.value),
            options(req.options),
            req.metadata,
        )
        .await?;
    Ok(())
}

pub async fn delete_bulk_state(
    sidecar: &Sidecar,
    req: pb::DeleteBulkStateRequest,
) -> Result<(), Status> {
    let items = req
        .states
        .into_iter()
        .map(|s| DeleteItem {
            options: options(s.options),
            etag: s.etag.map(|e| e.value),
            key: s.key,
            metadata: s.metadata,
        })
        .collect();
    sidecar.state.bulk_delete(&req.store_name, items).await?;
    Ok(())
}

pub async fn execute_state_transaction(
    sidecar: &Sidecar,
    req: pb::ExecuteStateTransactionRequest,
) -> Result<(), Status> {
    let ops = req
        .operations
        .into_iter()
        .map(|op| {
            let item = op.request.ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "transaction operation '{}' has no request",
                    op.operation_type
                ))
            })?;
            match op.operation_type.as_str() {
                "upsert" => Ok(TxOperation::Upsert(save_item(item))),
                "delete" => Ok(TxOperation::Delete(DeleteItem {
                    key: item.key,
                    etag: item.etag.map(|e| e.value),
                    options: options(item.options),
                    metadata: item.metadata,
                })),
                other => Err(ApiError::UnsupportedStateOperation(other.to_owned())),
            }
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    sidecar
        .state
        .transact(&req.store_name, ops, req.metadata)
        .await?;
    Ok(())
}

pub async fn query_state(
    sidecar: &Sidecar,
    req: pb::QueryStateRequest,
) -> Result<pb::QueryStateResponse, Status> {
    let (items, token) = sidecar
        .state
        .query(&req.store_name, req.query.as_bytes())
        .await?;
    Ok(pb::QueryStateResponse {
        results: items
            .into_iter()
            .map(|i| pb::QueryStateItem {
                key: i.key,
                data: i.item.value.to_vec(),
                etag: i.item.etag.unwrap_or_default(),
                error: String::new(),
            })
            .collect(),
        token: token.unwrap_or_default(),
        metadata: Default::default(),
    })
}
