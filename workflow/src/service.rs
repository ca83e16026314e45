//! `TaskHubSidecarService`: the gRPC face of the engine that the workflow
//! SDKs (Python `dapr.ext.workflow`, JS, .NET, Java, Go, Rust) talk to on
//! the sidecar's gRPC port.

use std::time::SystemTime;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    engine::{Engine, PurgeFilter, RerunRequest, StartRequest},
    error::WorkflowError,
    proto::{
        ActivityResponse, CompleteTaskResponse, CreateInstanceRequest, CreateInstanceResponse,
        GetInstanceHistoryRequest, GetInstanceHistoryResponse, GetInstanceRequest,
        GetInstanceResponse, GetWorkItemsRequest, ListInstanceIDsRequest, ListInstanceIDsResponse,
        PurgeInstancesRequest, PurgeInstancesResponse, RaiseEventRequest, RaiseEventResponse,
        RerunWorkflowFromEventRequest, RerunWorkflowFromEventResponse, ResumeRequest,
        ResumeResponse, SuspendRequest, SuspendResponse, TerminateRequest, TerminateResponse,
        WorkItem, WorkflowResponse, purge_instances_request,
        task_hub_sidecar_service_server::{TaskHubSidecarService, TaskHubSidecarServiceServer},
    },
};

/// The service over one engine.
#[derive(Clone)]
pub struct TaskHubService {
    engine: Engine,
}

impl TaskHubService {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The tonic server for this service (unlimited message sizes: histories
    /// can be large, and Dapr does not cap them either).
    pub fn into_server(self) -> TaskHubSidecarServiceServer<Self> {
        TaskHubSidecarServiceServer::new(self)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

/// The gRPC status for an engine error, with Dapr's codes.
pub fn status_of(e: WorkflowError) -> Status {
    match e {
        WorkflowError::MissingInstanceId
        | WorkflowError::InstanceIdTooLong
        | WorkflowError::InvalidInstanceId(_)
        | WorkflowError::MissingName
        | WorkflowError::MissingEventName
        | WorkflowError::InvalidRequest(_) => Status::invalid_argument(e.to_string()),
        WorkflowError::NotFound(_) | WorkflowError::EventNotFound(_) => {
            Status::not_found(e.to_string())
        }
        WorkflowError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        WorkflowError::NotTerminal(_) => Status::failed_precondition(e.to_string()),
        WorkflowError::Store(_) | WorkflowError::Remote(_) => Status::internal(e.to_string()),
        WorkflowError::Moved(_) => Status::unavailable(e.to_string()),
    }
}

type WorkItemStream = tonic::codegen::BoxStream<WorkItem>;

impl TaskHubService {
    async fn instance_response(
        &self,
        id: &str,
        found: Option<crate::engine::InstanceStatus>,
        with_payloads: bool,
    ) -> Response<GetInstanceResponse> {
        let _ = id;
        Response::new(match found {
            Some(s) => GetInstanceResponse {
                exists: true,
                workflow_state: Some(s.to_proto(with_payloads)),
            },
            None => GetInstanceResponse {
                exists: false,
                workflow_state: None,
            },
        })
    }
}

#[tonic::async_trait]
impl TaskHubSidecarService for TaskHubService {
    async fn hello(&self, _req: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        req: Request<CreateInstanceRequest>,
    ) -> Result<Response<CreateInstanceResponse>, Status> {
        let r = req.into_inner();
        let scheduled_start = r
            .scheduled_start_timestamp
            .and_then(|t| SystemTime::try_from(t).ok());
        let id = self
            .engine
            .start(StartRequest {
                instance_id: r.instance_id,
                name: r.name,
                input: r.input,
                scheduled_start,
                tags: r.tags,
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(CreateInstanceResponse { instance_id: id }))
    }

    async fn get_instance(
        &self,
        req: Request<GetInstanceRequest>,
    ) -> Result<Response<GetInstanceResponse>, Status> {
        let r = req.into_inner();
        let found = self
            .engine
            .status(&r.instance_id)
            .await
            .map_err(status_of)?;
        Ok(self
            .instance_response(&r.instance_id, found, r.get_inputs_and_outputs)
            .await)
    }

    async fn wait_for_instance_start(
        &self,
        req: Request<GetInstanceRequest>,
    ) -> Result<Response<GetInstanceResponse>, Status> {
        let r = req.into_inner();
        let found = self
            .engine
            .wait_for_start(&r.instance_id)
            .await
            .map_err(status_of)?;
        Ok(self
            .instance_response(&r.instance_id, found, r.get_inputs_and_outputs)
            .await)
    }

    async fn wait_for_instance_completion(
        &self,
        req: Request<GetInstanceRequest>,
    ) -> Result<Response<GetInstanceResponse>, Status> {
        let r = req.into_inner();
        let found = self
            .engine
            .wait_for_completion(&r.instance_id)
            .await
            .map_err(status_of)?;
        Ok(self
            .instance_response(&r.instance_id, found, r.get_inputs_and_outputs)
            .await)
    }

    async fn raise_event(
        &self,
        req: Request<RaiseEventRequest>,
    ) -> Result<Response<RaiseEventResponse>, Status> {
        let r = req.into_inner();
        self.engine
            .raise_event(&r.instance_id, &r.name, r.input)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        req: Request<TerminateRequest>,
    ) -> Result<Response<TerminateResponse>, Status> {
        let r = req.into_inner();
        self.engine
            .terminate(&r.instance_id, r.output, r.recursive)
            .await
            .map_err(status_of)?;
        Ok(Response::new(TerminateResponse {}))
    }

    async fn suspend_instance(
        &self,
        req: Request<SuspendRequest>,
    ) -> Result<Response<SuspendResponse>, Status> {
        let r = req.into_inner();
        self.engine
            .suspend(&r.instance_id, r.reason)
            .await
            .map_err(status_of)?;
        Ok(Response::new(SuspendResponse {}))
    }

    async fn resume_instance(
        &self,
        req: Request<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        let r = req.into_inner();
        self.engine
            .resume(&r.instance_id, r.reason)
            .await
            .map_err(status_of)?;
        Ok(Response::new(ResumeResponse {}))
    }

    async fn purge_instances(
        &self,
        req: Request<PurgeInstancesRequest>,
    ) -> Result<Response<PurgeInstancesResponse>, Status> {
        let r = req.into_inner();
        let deleted = match r.request {
            Some(purge_instances_request::Request::InstanceId(id)) => self
                .engine
                .purge(&id, r.recursive, r.force.unwrap_or(false))
                .await
                .map_err(status_of)?,
            Some(purge_instances_request::Request::PurgeInstanceFilter(f)) => {
                let time = |t: Option<prost_types::Timestamp>| {
                    t.map(|t| {
                        SystemTime::try_from(t).map_err(|e| {
                            Status::invalid_argument(format!("invalid purge filter time: {e}"))
                        })
                    })
                    .transpose()
                };
                let filter = PurgeFilter {
                    created_from: time(f.created_time_from)?,
                    created_to: time(f.created_time_to)?,
                    statuses: f.runtime_status,
                };
                self.engine
                    .purge_matching(&filter, r.recursive)
                    .await
                    .map_err(status_of)?
            }
            None => return Err(status_of(WorkflowError::MissingInstanceId)),
        };
        Ok(Response::new(PurgeInstancesResponse {
            deleted_instance_count: i32::try_from(deleted).unwrap_or(i32::MAX),
            is_complete: Some(true),
        }))
    }

    async fn get_work_items(
        &self,
        _req: Request<GetWorkItemsRequest>,
    ) -> Result<Response<WorkItemStream>, Status> {
        let rx = self.engine.connect_worker();
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete_activity_task(
        &self,
        req: Request<ActivityResponse>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        self.engine.complete_activity(req.into_inner()).await?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_orchestrator_task(
        &self,
        req: Request<WorkflowResponse>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        self.engine.complete_turn(req.into_inner()).await?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_workflow_task(
        &self,
        req: Request<WorkflowResponse>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        self.engine.complete_turn(req.into_inner()).await?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn rerun_workflow_from_event(
        &self,
        req: Request<RerunWorkflowFromEventRequest>,
    ) -> Result<Response<RerunWorkflowFromEventResponse>, Status> {
        let r = req.into_inner();
        let new_instance_id = self
            .engine
            .rerun_from_event(RerunRequest {
                source_instance_id: r.source_instance_id,
                event_id: r.event_id,
                new_instance_id: r.new_instance_id,
                overwrite_input: r.overwrite_input,
                input: r.input,
                new_child_instance_id: r.new_child_workflow_instance_id,
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(RerunWorkflowFromEventResponse {
            new_instance_id,
        }))
    }

    async fn list_instance_i_ds(
        &self,
        req: Request<ListInstanceIDsRequest>,
    ) -> Result<Response<ListInstanceIDsResponse>, Status> {
        let r = req.into_inner();
        let (instance_ids, continuation_token) = self
            .engine
            .list_instance_ids(
                r.continuation_token.as_deref(),
                r.page_size.unwrap_or(0) as usize,
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(ListInstanceIDsResponse {
            instance_ids,
            continuation_token,
        }))
    }

    async fn get_instance_history(
        &self,
        req: Request<GetInstanceHistoryRequest>,
    ) -> Result<Response<GetInstanceHistoryResponse>, Status> {
        let r = req.into_inner();
        let events = self
            .engine
            .history(&r.instance_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(GetInstanceHistoryResponse { events }))
    }
}
