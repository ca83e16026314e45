//! Several sidecars of one app as one workflow host.
//!
//! As in Dapr, instances and activities are internal actors
//! (`dapr.internal.<ns>.<app>.workflow` / `.activity`) placed by the
//! placement service: the sidecar that owns an instance id per the hash ring
//! runs its turns and timers and is the only one writing its records; every
//! other sidecar forwards calls about it to the owner. Activities are placed
//! by their own actor id (`<instance>::<task>::<generation>`), so they run on
//! the workers of any replica; the owner waits for the result and records
//! it. The runtime provides the placement lookups and the sidecar-to-sidecar
//! calls through [`Cluster`]; this module is the engine's side: which calls
//! are forwarded, and how a forwarded call is served ([`Engine::serve`]).
//!
//! When placement moves instances (a replica joined, left or died) the
//! engine drops what it no longer owns and resumes what it gained from the
//! store ([`Engine::rebalance`]); the store's etags make a write by a
//! sidecar that has not noticed yet fail instead of overwriting the new
//! owner's.

use prost::Message;
use tonic::Status;

use crate::{
    engine::{Engine, InstanceStatus, RerunRequest, StartRequest},
    error::{WorkflowError, validate_instance_id},
    proto::{
        ActivityRequest, ActivityResponse, CreateInstanceRequest, CreateInstanceResponse,
        GetInstanceHistoryRequest, GetInstanceHistoryResponse, GetInstanceRequest,
        GetInstanceResponse, HistoryEvent, OrchestrationStatus, PurgeInstancesRequest,
        PurgeInstancesResponse, RaiseEventRequest, RerunWorkflowFromEventRequest,
        RerunWorkflowFromEventResponse, ResumeRequest, SuspendRequest, TerminateRequest,
        WorkflowState, purge_instances_request,
    },
    store::OutgoingMessage,
};

/// The two internal actor kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Workflow,
    Activity,
}

/// Where placement puts an actor right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Here,
    Elsewhere,
    /// Tables not ready or being changed.
    Unknown,
    /// No sidecar hosts the type (no worker connected anywhere).
    Nobody,
}

/// A forwarded call's failure.
#[derive(Debug)]
pub enum CallError {
    /// No sidecar hosts the type: serve it on this one.
    RunHere,
    Status(Status),
}

/// What the runtime provides: placement lookups and calls to the owner.
#[tonic::async_trait]
pub trait Cluster: Send + Sync + 'static {
    fn place(&self, kind: ActorKind, id: &str) -> Place;
    /// Runs `method` on the actor's owner (this sidecar included, through
    /// [`Engine::serve`]), waiting for tables that are being changed and
    /// following an owner that moves.
    async fn call(
        &self,
        kind: ActorKind,
        id: &str,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, CallError>;
    /// Registers the internal types with placement while a worker is
    /// connected to this sidecar, withdraws them when the last one leaves.
    fn set_hosting(&self, hosting: bool);
    /// Placement table versions, sent once a dissemination is complete.
    fn table_updates(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The activity actor id Dapr uses.
pub fn activity_actor_id(instance: &str, task_id: i32, generation: u32) -> String {
    format!("{instance}::{task_id}::{generation}")
}

// Method names of the internal calls.
const START: &str = "CreateWorkflowInstance";
const GET: &str = "GetWorkflowMetadata";
const WAIT_START: &str = "WaitForWorkflowStart";
const WAIT_DONE: &str = "WaitForWorkflowCompletion";
const RAISE: &str = "AddWorkflowEvent";
const TERMINATE: &str = "TerminateWorkflow";
const SUSPEND: &str = "SuspendWorkflow";
const RESUME: &str = "ResumeWorkflow";
const PURGE: &str = "PurgeWorkflowState";
const HISTORY: &str = "GetWorkflowHistory";
const RERUN: &str = "RerunWorkflow";
const DELIVER: &str = "DeliverMessage";
const ACTIVITY_RESULT: &str = "ActivityResult";
const EXECUTE: &str = "Execute";

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    M::decode(body).map_err(|e| Status::invalid_argument(format!("bad internal payload: {e}")))
}

/// Carries a workflow error across the hop and back unchanged.
fn to_status(e: WorkflowError) -> Status {
    let kind = match &e {
        WorkflowError::MissingInstanceId => "missing-id",
        WorkflowError::InstanceIdTooLong => "id-too-long",
        WorkflowError::InvalidInstanceId(_) => "invalid-id",
        WorkflowError::MissingName => "missing-name",
        WorkflowError::MissingEventName => "missing-event",
        WorkflowError::NotFound(_) => "not-found",
        WorkflowError::AlreadyExists(_) => "exists",
        WorkflowError::NotTerminal(_) => "not-terminal",
        WorkflowError::InvalidRequest(_) => "invalid",
        WorkflowError::EventNotFound(_) => "event-not-found",
        WorkflowError::Store(_) => "store",
        WorkflowError::Remote(_) => "remote",
        WorkflowError::Moved(_) => "moved",
    };
    let arg = match &e {
        WorkflowError::InvalidInstanceId(s)
        | WorkflowError::NotFound(s)
        | WorkflowError::AlreadyExists(s)
        | WorkflowError::NotTerminal(s)
        | WorkflowError::InvalidRequest(s)
        | WorkflowError::EventNotFound(s) => s.clone(),
        _ => String::new(),
    };
    let status = crate::service::status_of(e);
    with_detail(status, kind, arg)
}

fn with_detail(status: Status, kind: &str, arg: String) -> Status {
    let detail = ErrorDetail {
        kind: kind.to_owned(),
        arg,
    };
    Status::with_details(
        status.code(),
        status.message(),
        detail.encode_to_vec().into(),
    )
}

/// Which workflow error a status carries across the hop.
#[derive(Clone, PartialEq, Message)]
struct ErrorDetail {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    arg: String,
}

/// A status as the bytes the runtime carries between sidecars.
#[derive(Clone, PartialEq, Message)]
struct WireStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(bytes = "vec", tag = "3")]
    details: Vec<u8>,
}

/// Encodes a status for the hop between sidecars.
pub fn status_to_bytes(s: &Status) -> Vec<u8> {
    WireStatus {
        code: s.code() as i32,
        message: s.message().to_owned(),
        details: s.details().to_vec(),
    }
    .encode_to_vec()
}

/// Decodes [`status_to_bytes`].
pub fn status_from_bytes(b: &[u8]) -> Status {
    match WireStatus::decode(b) {
        Ok(w) => Status::with_details(tonic::Code::from(w.code), w.message, w.details.into()),
        Err(e) => Status::internal(format!("bad internal error payload: {e}")),
    }
}

/// The workflow error a forwarded call failed with (its status otherwise).
pub fn from_status(s: Status) -> WorkflowError {
    let detail = ErrorDetail::decode(s.details()).unwrap_or_default();
    let arg = detail.arg;
    match Some(detail.kind.as_str()).filter(|k| !k.is_empty()) {
        Some("missing-id") => WorkflowError::MissingInstanceId,
        Some("id-too-long") => WorkflowError::InstanceIdTooLong,
        Some("invalid-id") => WorkflowError::InvalidInstanceId(arg),
        Some("missing-name") => WorkflowError::MissingName,
        Some("missing-event") => WorkflowError::MissingEventName,
        Some("not-found") => WorkflowError::NotFound(arg),
        Some("exists") => WorkflowError::AlreadyExists(arg),
        Some("not-terminal") => WorkflowError::NotTerminal(arg),
        Some("invalid") => WorkflowError::InvalidRequest(arg),
        Some("event-not-found") => WorkflowError::EventNotFound(arg),
        Some("moved") => WorkflowError::Moved(s.message().to_owned()),
        _ => WorkflowError::Remote(s.message().to_owned()),
    }
}

fn state_to_status(s: WorkflowState) -> InstanceStatus {
    InstanceStatus {
        instance_id: s.instance_id,
        name: s.name,
        status: OrchestrationStatus::try_from(s.workflow_status)
            .unwrap_or(OrchestrationStatus::Running),
        created: s.created_timestamp,
        last_updated: s.last_updated_timestamp,
        completed: s.completed_timestamp,
        input: s.input,
        output: s.output,
        custom_status: s.custom_status,
        failure: s.failure_details,
        execution_id: s.execution_id.unwrap_or_default(),
        parent_instance_id: s.parent_instance_id,
        scheduled_start: s.scheduled_start_timestamp,
        tags: s.tags,
    }
}

fn found(r: GetInstanceResponse) -> Option<InstanceStatus> {
    r.workflow_state.filter(|_| r.exists).map(state_to_status)
}

fn instance_response(s: Option<InstanceStatus>) -> GetInstanceResponse {
    match s {
        Some(s) => GetInstanceResponse {
            exists: true,
            workflow_state: Some(s.to_proto(true)),
        },
        None => GetInstanceResponse::default(),
    }
}

impl Engine {
    /// The cluster to forward a call about `id` through, `None` to serve it
    /// here (no cluster, owned here, or owned by nobody).
    async fn route(&self, kind: ActorKind, id: &str) -> Option<std::sync::Arc<dyn Cluster>> {
        let cluster = self.cluster().await?;
        match cluster.place(kind, id) {
            Place::Here | Place::Nobody => None,
            Place::Elsewhere | Place::Unknown => Some(cluster),
        }
    }

    /// Forwards a call; `Ok(None)`: serve it here after all.
    async fn forward<R: Message + Default>(
        &self,
        cluster: &dyn Cluster,
        kind: ActorKind,
        id: &str,
        method: &str,
        req: &impl Message,
    ) -> Result<Option<R>, WorkflowError> {
        match cluster.call(kind, id, method, req.encode_to_vec()).await {
            Ok(body) => R::decode(&body[..])
                .map(Some)
                .map_err(|e| WorkflowError::Remote(format!("bad internal reply: {e}"))),
            Err(CallError::RunHere) => Ok(None),
            Err(CallError::Status(s)) => Err(from_status(s)),
        }
    }

    /// Starts a new instance on its owner.
    pub async fn start(&self, mut req: StartRequest) -> Result<String, WorkflowError> {
        if req.instance_id.is_empty() {
            req.instance_id = uuid::Uuid::new_v4().to_string();
        }
        validate_instance_id(&req.instance_id, true)?;
        if req.name.is_empty() {
            return Err(WorkflowError::MissingName);
        }
        if let Some(c) = self.route(ActorKind::Workflow, &req.instance_id).await {
            let msg = CreateInstanceRequest {
                instance_id: req.instance_id.clone(),
                name: req.name.clone(),
                input: req.input.clone(),
                scheduled_start_timestamp: req.scheduled_start.map(prost_types::Timestamp::from),
                tags: req.tags.clone(),
                ..Default::default()
            };
            let id = req.instance_id.clone();
            if let Some(r) = self
                .forward::<CreateInstanceResponse>(&*c, ActorKind::Workflow, &id, START, &msg)
                .await?
            {
                return Ok(r.instance_id);
            }
        }
        self.start_here(req).await
    }

    /// The instance's status, `None` when it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<InstanceStatus>, WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = get_request(id);
            if let Some(r) = self
                .forward::<GetInstanceResponse>(&*c, ActorKind::Workflow, id, GET, &msg)
                .await?
            {
                return Ok(found(r));
            }
        }
        self.status_here(id).await
    }

    /// Waits until the instance has started (or is missing).
    pub async fn wait_for_start(&self, id: &str) -> Result<Option<InstanceStatus>, WorkflowError> {
        self.wait(id, WAIT_START).await
    }

    /// Waits until the instance has finished (or is missing).
    pub async fn wait_for_completion(
        &self,
        id: &str,
    ) -> Result<Option<InstanceStatus>, WorkflowError> {
        self.wait(id, WAIT_DONE).await
    }

    async fn wait(&self, id: &str, method: &str) -> Result<Option<InstanceStatus>, WorkflowError> {
        validate_instance_id(id, false)?;
        loop {
            if let Some(c) = self.route(ActorKind::Workflow, id).await {
                let msg = get_request(id);
                match self
                    .forward::<GetInstanceResponse>(&*c, ActorKind::Workflow, id, method, &msg)
                    .await
                {
                    Ok(Some(r)) => return Ok(found(r)),
                    Ok(None) => {}
                    // The owner lost it while waiting: ask the new one.
                    Err(WorkflowError::Moved(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Served here until done, or until the instance moves away.
            match self.wait_here(id, method == WAIT_DONE, true).await? {
                Some(done) => return Ok(done),
                None => continue,
            }
        }
    }

    /// Appends an external event to the instance's inbox.
    pub async fn raise_event(
        &self,
        id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        if name.is_empty() {
            return Err(WorkflowError::MissingEventName);
        }
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = RaiseEventRequest {
                instance_id: id.to_owned(),
                name: name.to_owned(),
                input: input.clone(),
                ..Default::default()
            };
            if self
                .forward::<()>(&*c, ActorKind::Workflow, id, RAISE, &msg)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        self.raise_event_here(id, name, input).await
    }

    /// Terminates the instance (and, with `recursive`, its children).
    pub async fn terminate(
        &self,
        id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = TerminateRequest {
                instance_id: id.to_owned(),
                output: output.clone(),
                recursive,
                ..Default::default()
            };
            if self
                .forward::<()>(&*c, ActorKind::Workflow, id, TERMINATE, &msg)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        self.terminate_here(id, output, recursive).await
    }

    /// Suspends the instance: events keep arriving but the workflow does not
    /// act on them until it is resumed.
    pub async fn suspend(&self, id: &str, reason: Option<String>) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = SuspendRequest {
                instance_id: id.to_owned(),
                reason: reason.clone(),
                ..Default::default()
            };
            if self
                .forward::<()>(&*c, ActorKind::Workflow, id, SUSPEND, &msg)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        self.suspend_here(id, reason).await
    }

    pub async fn resume(&self, id: &str, reason: Option<String>) -> Result<(), WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = ResumeRequest {
                instance_id: id.to_owned(),
                reason: reason.clone(),
                ..Default::default()
            };
            if self
                .forward::<()>(&*c, ActorKind::Workflow, id, RESUME, &msg)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        self.resume_here(id, reason).await
    }

    /// Deletes a finished instance and everything stored for it; returns
    /// how many instances were deleted (children included with
    /// `recursive`).
    pub async fn purge(
        &self,
        id: &str,
        recursive: bool,
        force: bool,
    ) -> Result<u32, WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = PurgeInstancesRequest {
                request: Some(purge_instances_request::Request::InstanceId(id.to_owned())),
                recursive,
                force: Some(force),
                ..Default::default()
            };
            if let Some(r) = self
                .forward::<PurgeInstancesResponse>(&*c, ActorKind::Workflow, id, PURGE, &msg)
                .await?
            {
                return Ok(u32::try_from(r.deleted_instance_count).unwrap_or(0));
            }
        }
        self.purge_here(id, recursive, force).await
    }

    /// The committed history of an instance.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEvent>, WorkflowError> {
        validate_instance_id(id, false)?;
        if let Some(c) = self.route(ActorKind::Workflow, id).await {
            let msg = GetInstanceHistoryRequest {
                instance_id: id.to_owned(),
            };
            if let Some(r) = self
                .forward::<GetInstanceHistoryResponse>(&*c, ActorKind::Workflow, id, HISTORY, &msg)
                .await?
            {
                return Ok(r.events);
            }
        }
        self.history_here(id).await
    }

    /// Reruns a finished instance from one of its events, as a new instance
    /// created on the new id's owner.
    pub async fn rerun_from_event(&self, mut req: RerunRequest) -> Result<String, WorkflowError> {
        let id = req
            .new_instance_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        if validate_instance_id(&id, true).is_ok()
            && let Some(c) = self.route(ActorKind::Workflow, &id).await
        {
            let msg = RerunWorkflowFromEventRequest {
                source_instance_id: req.source_instance_id.clone(),
                event_id: req.event_id,
                new_instance_id: Some(id.clone()),
                overwrite_input: req.overwrite_input,
                input: req.input.clone(),
                new_child_workflow_instance_id: req.new_child_instance_id.clone(),
                ..Default::default()
            };
            if let Some(r) = self
                .forward::<RerunWorkflowFromEventResponse>(
                    &*c,
                    ActorKind::Workflow,
                    &id,
                    RERUN,
                    &msg,
                )
                .await?
            {
                return Ok(r.new_instance_id);
            }
        }
        self.rerun_here(req).await
    }

    /// Delivers a message to another instance, on its owner.
    pub(crate) async fn deliver(&self, msg: &OutgoingMessage) -> Result<(), WorkflowError> {
        if let Some(c) = self.route(ActorKind::Workflow, &msg.target).await
            && self
                .forward::<()>(&*c, ActorKind::Workflow, &msg.target, DELIVER, msg)
                .await?
                .is_some()
        {
            return Ok(());
        }
        self.deliver_here(msg).await
    }

    /// Records an activity result on the instance's owner.
    pub(crate) async fn record_activity_result(
        &self,
        res: ActivityResponse,
        generation: Option<u32>,
    ) -> Result<(), WorkflowError> {
        let id = res.instance_id.clone();
        if let Some(c) = self.route(ActorKind::Workflow, &id).await {
            let msg = ForwardedResult {
                response: Some(res.clone()),
                generation,
            };
            if self
                .forward::<()>(&*c, ActorKind::Workflow, &id, ACTIVITY_RESULT, &msg)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        self.record_activity_here(res, generation).await
    }

    /// Runs an activity on the sidecar placement assigns it to and returns
    /// its result; `None`: run it here.
    pub(crate) async fn run_activity_elsewhere(
        &self,
        request: &ActivityRequest,
        generation: u32,
    ) -> Option<Result<ActivityResponse, WorkflowError>> {
        let cluster = self.cluster().await?;
        let instance = request
            .workflow_instance
            .as_ref()
            .map(|w| w.instance_id.as_str())
            .unwrap_or_default();
        let actor = activity_actor_id(instance, request.task_id, generation);
        if cluster.place(ActorKind::Activity, &actor) != Place::Elsewhere {
            return None;
        }
        self.forward::<ActivityResponse>(&*cluster, ActorKind::Activity, &actor, EXECUTE, request)
            .await
            .transpose()
    }

    /// Serves a call another sidecar (or this one) routed here.
    pub async fn serve(
        &self,
        kind: ActorKind,
        method: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Status> {
        let e = to_status;
        Ok(match (kind, method) {
            (ActorKind::Activity, EXECUTE) => {
                let req: ActivityRequest = decode(body)?;
                self.execute_activity_here(req)
                    .await
                    .map_err(e)?
                    .encode_to_vec()
            }
            (ActorKind::Workflow, START) => {
                let r: CreateInstanceRequest = decode(body)?;
                let scheduled_start = r
                    .scheduled_start_timestamp
                    .and_then(|t| std::time::SystemTime::try_from(t).ok());
                let instance_id = self
                    .start_here(StartRequest {
                        instance_id: r.instance_id,
                        name: r.name,
                        input: r.input,
                        scheduled_start,
                        tags: r.tags,
                    })
                    .await
                    .map_err(e)?;
                CreateInstanceResponse { instance_id }.encode_to_vec()
            }
            (ActorKind::Workflow, GET) => {
                let r: GetInstanceRequest = decode(body)?;
                instance_response(self.status_here(&r.instance_id).await.map_err(e)?)
                    .encode_to_vec()
            }
            (ActorKind::Workflow, WAIT_START | WAIT_DONE) => {
                let r: GetInstanceRequest = decode(body)?;
                match self
                    .wait_here(&r.instance_id, method == WAIT_DONE, true)
                    .await
                    .map_err(e)?
                {
                    Some(s) => instance_response(s).encode_to_vec(),
                    // Moved away while waiting: the caller asks the new owner.
                    None => return Err(moved(&r.instance_id)),
                }
            }
            (ActorKind::Workflow, RAISE) => {
                let r: RaiseEventRequest = decode(body)?;
                self.raise_event_here(&r.instance_id, &r.name, r.input)
                    .await
                    .map_err(e)?;
                Vec::new()
            }
            (ActorKind::Workflow, TERMINATE) => {
                let r: TerminateRequest = decode(body)?;
                self.terminate_here(&r.instance_id, r.output, r.recursive)
                    .await
                    .map_err(e)?;
                Vec::new()
            }
            (ActorKind::Workflow, SUSPEND) => {
                let r: SuspendRequest = decode(body)?;
                self.suspend_here(&r.instance_id, r.reason)
                    .await
                    .map_err(e)?;
                Vec::new()
            }
            (ActorKind::Workflow, RESUME) => {
                let r: ResumeRequest = decode(body)?;
                self.resume_here(&r.instance_id, r.reason)
                    .await
                    .map_err(e)?;
                Vec::new()
            }
            (ActorKind::Workflow, PURGE) => {
                let r: PurgeInstancesRequest = decode(body)?;
                let Some(purge_instances_request::Request::InstanceId(id)) = r.request else {
                    return Err(e(WorkflowError::MissingInstanceId));
                };
                let n = self
                    .purge_here(&id, r.recursive, r.force.unwrap_or(false))
                    .await
                    .map_err(e)?;
                PurgeInstancesResponse {
                    deleted_instance_count: i32::try_from(n).unwrap_or(i32::MAX),
                    is_complete: Some(true),
                }
                .encode_to_vec()
            }
            (ActorKind::Workflow, HISTORY) => {
                let r: GetInstanceHistoryRequest = decode(body)?;
                GetInstanceHistoryResponse {
                    events: self.history_here(&r.instance_id).await.map_err(e)?,
                }
                .encode_to_vec()
            }
            (ActorKind::Workflow, RERUN) => {
                let r: RerunWorkflowFromEventRequest = decode(body)?;
                let new_instance_id = self
                    .rerun_here(RerunRequest {
                        source_instance_id: r.source_instance_id,
                        event_id: r.event_id,
                        new_instance_id: r.new_instance_id,
                        overwrite_input: r.overwrite_input,
                        input: r.input,
                        new_child_instance_id: r.new_child_workflow_instance_id,
                    })
                    .await
                    .map_err(e)?;
                RerunWorkflowFromEventResponse { new_instance_id }.encode_to_vec()
            }
            (ActorKind::Workflow, DELIVER) => {
                let msg: OutgoingMessage = decode(body)?;
                self.deliver_here(&msg).await.map_err(e)?;
                Vec::new()
            }
            (ActorKind::Workflow, ACTIVITY_RESULT) => {
                let r: ForwardedResult = decode(body)?;
                let Some(res) = r.response else {
                    return Err(Status::invalid_argument("activity result missing"));
                };
                self.record_activity_here(res, r.generation)
                    .await
                    .map_err(e)?;
                Vec::new()
            }
            _ => {
                return Err(Status::unimplemented(format!(
                    "unknown internal workflow method '{method}'"
                )));
            }
        })
    }
}

/// The status a sidecar answers when an instance it was serving moved.
fn moved(id: &str) -> Status {
    with_detail(
        Status::unavailable(format!("workflow instance '{id}' moved to another host")),
        "moved",
        id.to_owned(),
    )
}

fn get_request(id: &str) -> GetInstanceRequest {
    GetInstanceRequest {
        instance_id: id.to_owned(),
        get_inputs_and_outputs: true,
        ..Default::default()
    }
}

/// An activity result forwarded to the instance's owner.
#[derive(Clone, PartialEq, Message)]
struct ForwardedResult {
    #[prost(message, optional, tag = "1")]
    response: Option<ActivityResponse>,
    /// The execution the activity belonged to, when known.
    #[prost(uint32, optional, tag = "2")]
    generation: Option<u32>,
}
