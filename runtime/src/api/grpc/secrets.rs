//! gRPC `GetSecret` and `GetBulkSecret`: wire conversion around
//! `crate::secrets`.

use dapr_rs_proto::runtime as pb;
use tonic::Status;

use crate::{error::MappedError, secrets, sidecar::Sidecar};

pub async fn get_secret(
    sidecar: &Sidecar,
    req: pb::GetSecretRequest,
) -> Result<pb::GetSecretResponse, Status> {
    let data = secrets::get_secret(sidecar, &req.store_name, &req.key, &req.metadata)
        .await
        .map_err(MappedError::from)?;
    Ok(pb::GetSecretResponse { data })
}

pub async fn get_bulk_secret(
    sidecar: &Sidecar,
    req: pb::GetBulkSecretRequest,
) -> Result<pb::GetBulkSecretResponse, Status> {
    let all = secrets::get_bulk_secret(sidecar, &req.store_name, &req.metadata)
        .await
        .map_err(MappedError::from)?;
    Ok(pb::GetBulkSecretResponse {
        data: all
            .into_iter()
            .map(|(name, secrets)| (name, pb::SecretResponse { secrets }))
            .collect(),
    })
}
