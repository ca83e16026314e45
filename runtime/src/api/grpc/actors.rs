//! gRPC actor API of the `Dapr` service: `InvokeActor`, `GetActorState`,
//! `ExecuteActorStateTransaction`. Reminder and timer methods belong to
//! `actors::reminders`.

use bytes::Bytes;
use dapr_rs_proto::runtime as pb;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tonic::Status;

use crate::{
    actors::{ActorCall, ActorError, ActorStateOp, validate_name},
    sidecar::Sidecar,
};

pub async fn invoke_actor(
    sidecar: &Sidecar,
    req: pb::InvokeActorRequest,
) -> Result<pb::InvokeActorResponse, Status> {
    validate_name("actorType", &req.actor_type)?;
    validate_name("actorId", &req.actor_id)?;
    if req.method.is_empty() {
        return Err(ActorError::BadRequest("invalid method: empty".into()).into());
    }
    let rt = sidecar.actors.get().await?;
    let mut headers = HeaderMap::new();
    for (k, v) in &req.metadata {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            headers.append(k, v);
        }
    }
    let resp = rt
        .call(ActorCall {
            actor_type: req.actor_type,
            actor_id: req.actor_id,
            method: req.method,
            verb: Method::PUT,
            query: None,
            headers,
            data: Bytes::from(req.data),
        })
        .await?;
    Ok(pb::InvokeActorResponse {
        data: resp.data.to_vec(),
    })
}

pub async fn get_actor_state(
    sidecar: &Sidecar,
    req: pb::GetActorStateRequest,
) -> Result<pb::GetActorStateResponse, Status> {
    let rt = sidecar.actors.get().await?;
    let store = rt.state_store()?;
    let v = store.get(&req.actor_type, &req.actor_id, &req.key).await?;
    Ok(match v {
        Some(v) => pb::GetActorStateResponse {
            data: v.data.to_vec(),
            metadata: v.metadata,
        },
        None => pb::GetActorStateResponse::default(),
    })
}

pub async fn execute_actor_state_transaction(
    sidecar: &Sidecar,
    req: pb::ExecuteActorStateTransactionRequest,
) -> Result<(), Status> {
    let ops = req
        .operations
        .into_iter()
        .map(|op| match op.operation_type.as_str() {
            "upsert" => Ok(ActorStateOp::Upsert {
                key: op.key,
                value: op.value.map(|a| Bytes::from(a.value)).unwrap_or_default(),
                etag: None,
                metadata: op.metadata,
            }),
            "delete" => Ok(ActorStateOp::Delete {
                key: op.key,
                etag: None,
            }),
            other => Err(ActorError::StateTransactionSave(format!(
                "operation type {other} not supported"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rt = sidecar.actors.get().await?;
    crate::actors::state::transact_active(&rt, &req.actor_type, &req.actor_id, ops).await?;
    Ok(())
}
