//! gRPC `TryLockAlpha1` and `UnlockAlpha1` around `crate::lock`.

use dapr_rs_proto::runtime as pb;
use tonic::Status;

use crate::{error::MappedError, lock, sidecar::Sidecar};

pub async fn try_lock(
    sidecar: &Sidecar,
    req: pb::TryLockRequest,
) -> Result<pb::TryLockResponse, Status> {
    let success = lock::try_lock(
        sidecar,
        &req.store_name,
        &req.resource_id,
        &req.lock_owner,
        req.expiry_in_seconds,
    )
    .await
    .map_err(MappedError::from)?;
    Ok(pb::TryLockResponse { success })
}

pub async fn unlock(
    sidecar: &Sidecar,
    req: pb::UnlockRequest,
) -> Result<pb::UnlockResponse, Status> {
    let status = lock::unlock(sidecar, &req.store_name, &req.resource_id, &req.lock_owner)
        .await
        .map_err(MappedError::from)?;
    Ok(pb::UnlockResponse {
        status: status as i32,
    })
}
