//! gRPC workflow APIs: the `Dapr` service's `*WorkflowAlpha1/Beta1`
//! management methods, and the SDKs' `TaskHubSidecarService` on the same
//! port behind the same API-token check.

use dapr_rs_proto::runtime as pb;
use dapr_workflow::{Engine, TaskHubService};
use tonic::{Response, Status};

use crate::{
    error::MappedError,
    sidecar::Sidecar,
    workflow::{WorkflowApi, WorkflowApiError},
};

/// `TaskHubSidecarService` with the `dapr-api-token` check.
pub fn task_hub(
    engine: Engine,
    token: Option<String>,
) -> tonic::service::interceptor::InterceptedService<
    dapr_workflow::proto::task_hub_sidecar_service_server::TaskHubSidecarServiceServer<
        TaskHubService,
    >,
    impl tonic::service::Interceptor + Clone,
> {
    tonic::service::interceptor::InterceptedService::new(
        TaskHubService::new(engine).into_server(),
        move |req| super::check_token(token.as_deref(), req),
    )
}

fn status(e: WorkflowApiError) -> Status {
    MappedError::from(e).to_status()
}

fn text(bytes: Vec<u8>) -> Result<Option<String>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        status(WorkflowApiError::BadRequest(
            "the payload is not valid UTF-8".into(),
        ))
    })
}

pub async fn start(
    sidecar: &Sidecar,
    r: pb::StartWorkflowRequest,
) -> Result<Response<pb::StartWorkflowResponse>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    let input = text(r.input)?;
    let start_time = r
        .options
        .get("dapr.workflow.start_time")
        .map(String::as_str);
    let instance_id = api
        .start(&r.workflow_name, &r.instance_id, input, start_time)
        .await
        .map_err(status)?;
    Ok(Response::new(pb::StartWorkflowResponse { instance_id }))
}

pub async fn get(
    sidecar: &Sidecar,
    r: pb::GetWorkflowRequest,
) -> Result<Response<pb::GetWorkflowResponse>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    // As Dapr: a missing instance is an empty response, not an error.
    let res = match api.get(&r.instance_id).await.map_err(status)? {
        Some(info) => pb::GetWorkflowResponse {
            instance_id: info.instance_id,
            workflow_name: info.workflow_name,
            created_at: info.created_at,
            last_updated_at: info.last_updated_at,
            runtime_status: info.runtime_status.to_owned(),
            properties: info.properties,
        },
        None => pb::GetWorkflowResponse {
            instance_id: r.instance_id,
            ..Default::default()
        },
    };
    Ok(Response::new(res))
}

pub async fn terminate(
    sidecar: &Sidecar,
    r: pb::TerminateWorkflowRequest,
) -> Result<Response<()>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    api.terminate(&r.instance_id).await.map_err(status)?;
    Ok(Response::new(()))
}

pub async fn raise_event(
    sidecar: &Sidecar,
    r: pb::RaiseEventWorkflowRequest,
) -> Result<Response<()>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    let data = text(r.event_data)?;
    api.raise_event(&r.instance_id, &r.event_name, data)
        .await
        .map_err(status)?;
    Ok(Response::new(()))
}

pub async fn pause(sidecar: &Sidecar, r: pb::PauseWorkflowRequest) -> Result<Response<()>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    api.pause(&r.instance_id).await.map_err(status)?;
    Ok(Response::new(()))
}

pub async fn resume(
    sidecar: &Sidecar,
    r: pb::ResumeWorkflowRequest,
) -> Result<Response<()>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    api.resume(&r.instance_id).await.map_err(status)?;
    Ok(Response::new(()))
}

pub async fn purge(sidecar: &Sidecar, r: pb::PurgeWorkflowRequest) -> Result<Response<()>, Status> {
    let api = WorkflowApi::new(&sidecar.workflows, &r.workflow_component).map_err(status)?;
    api.purge(&r.instance_id).await.map_err(status)?;
    Ok(Response::new(()))
}
