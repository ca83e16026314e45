//! Workflows in daprd: the `dapr-workflow` engine on the actor state store,
//! the management API (`/v1.0[-beta1]/workflows/dapr/...`, gRPC
//! `*WorkflowBeta1`) and its errors in Dapr's codes. The SDKs' own protocol
//! (`TaskHubSidecarService`) is served on the gRPC API port next to `Dapr`.

use std::sync::{Arc, OnceLock};

use dapr_workflow::{
    Engine, StartRequest, WorkflowError, WorkflowStore,
    cluster::{ActorKind, CallError, Cluster, Place},
    status_name,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tonic::Code;
use tracing::info;

use crate::{
    actors::{
        ActorCall, ActorError, ActorResponse, ActorRuntime, Owner, internal::InternalHandler,
    },
    components::Registry,
    error::MappedError,
};

/// The engine once the sidecar has started it (it needs the components).
#[derive(Clone, Default)]
pub struct WorkflowSlot(Arc<OnceLock<Engine>>);

impl WorkflowSlot {
    pub fn set(&self, engine: Engine) {
        let _ = self.0.set(engine);
    }

    pub fn get(&self) -> Result<&Engine, WorkflowApiError> {
        self.0.get().ok_or(WorkflowApiError::NoStateStore)
    }
}

/// Starts the engine on the state store marked `actorStateStore: "true"`
/// and resumes the instances a previous run left unfinished. `None` when
/// no such store is configured (workflow calls then fail as in Dapr).
///
/// `clustered`: placement is configured, so replicas of the app share the
/// instances; nothing is resumed until [`attach`] learns what this sidecar
/// owns.
pub async fn start(
    registry: &Registry,
    app_id: &str,
    namespace: &str,
    clustered: bool,
) -> anyhow::Result<Option<Engine>> {
    let Some(name) = registry
        .infos()
        .into_iter()
        .find(|c| c.type_.starts_with("state.") && c.capabilities.iter().any(|x| x == "ACTOR"))
        .map(|c| c.name)
    else {
        return Ok(None);
    };
    let Some(entry) = registry.state_store(&name) else {
        return Ok(None);
    };
    if !entry.store.features().transactional {
        anyhow::bail!(
            "the actor state store '{name}' does not support transactions, which workflows require"
        );
    }
    // Self-hosted sidecars have no namespace; Dapr scopes their actors to `default`.
    let namespace = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    let engine = Engine::new(
        WorkflowStore::new(entry.store.clone(), app_id, namespace),
        app_id,
    );
    if clustered {
        engine.expect_cluster();
    }
    let resumed = engine
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("resuming workflows from state store '{name}': {e}"))?;
    info!(store = %name, resumed, "workflow engine started");
    Ok(Some(engine))
}

/// Dapr's internal actor types for an app's workflows and activities.
pub fn actor_types(app_id: &str, namespace: &str) -> (String, String) {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    (
        format!("dapr.internal.{ns}.{app_id}.workflow"),
        format!("dapr.internal.{ns}.{app_id}.activity"),
    )
}

/// Joins the engine to the actor runtime: the internal workflow and
/// activity actors are served by the engine, registered with placement
/// while a worker is connected, and calls about instances owned by another
/// replica go to it over the internal gRPC API (`CallActor`, mTLS as any
/// actor call).
pub fn attach(engine: &Engine, rt: Arc<ActorRuntime>, app_id: &str, namespace: &str) {
    let (workflow_type, activity_type) = actor_types(app_id, namespace);
    rt.set_internal_handler(
        vec![workflow_type.clone(), activity_type.clone()],
        Arc::new(Handler {
            engine: engine.clone(),
            workflow_type: workflow_type.clone(),
            app_id: app_id.to_owned(),
        }),
    );
    engine.attach_cluster(Arc::new(ActorCluster {
        rt,
        workflow_type,
        activity_type,
    }));
}

/// Marks a reply as a failure; the body is then the encoded status.
const ERROR_HEADER: &str = "x-dapr-workflow-error";

struct ActorCluster {
    rt: Arc<ActorRuntime>,
    workflow_type: String,
    activity_type: String,
}

impl ActorCluster {
    fn actor_type(&self, kind: ActorKind) -> &str {
        match kind {
            ActorKind::Workflow => &self.workflow_type,
            ActorKind::Activity => &self.activity_type,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ActorCluster {
    fn place(&self, kind: ActorKind, id: &str) -> Place {
        match self.rt.owner(self.actor_type(kind), id) {
            Owner::Local => Place::Here,
            Owner::Remote { .. } => Place::Elsewhere,
            Owner::NotReady => Place::Unknown,
            Owner::NoHost => Place::Nobody,
        }
    }

    async fn call(
        &self,
        kind: ActorKind,
        id: &str,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let call = ActorCall {
            actor_type: self.actor_type(kind).to_owned(),
            actor_id: id.to_owned(),
            method: method.to_owned(),
            verb: Method::PUT,
            query: None,
            headers,
            data: body.into(),
        };
        match self.rt.call(call).await {
            Ok(resp) if resp.headers.contains_key(ERROR_HEADER) => Err(CallError::Status(
                dapr_workflow::cluster::status_from_bytes(&resp.data),
            )),
            Ok(resp) => Ok(resp.data.to_vec()),
            // Nobody hosts the type (no worker connected anywhere).
            Err(ActorError::NoAddress(_)) => Err(CallError::RunHere),
            Err(e) => Err(CallError::Status(e.to_status())),
        }
    }

    fn set_hosting(&self, hosting: bool) {
        self.rt.set_internal_hosting(hosting);
    }

    fn table_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rt.table_updates()
    }
}

/// Serves the internal actors placed on this sidecar.
struct Handler {
    engine: Engine,
    workflow_type: String,
    app_id: String,
}

#[async_trait::async_trait]
impl InternalHandler for Handler {
    async fn call(&self, call: ActorCall) -> Result<ActorResponse, ActorError> {
        // Only replicas of this app reach its workflows (calls from this
        // sidecar itself carry no caller).
        if let Some(caller) = call
            .headers
            .get(crate::invoke::CALLER_APP_ID)
            .and_then(|v| v.to_str().ok())
            && caller != self.app_id
        {
            return Err(ActorError::BadRequest(format!(
                "app '{caller}' may not call the workflow actors of '{}'",
                self.app_id
            )));
        }
        let kind = if call.actor_type == self.workflow_type {
            ActorKind::Workflow
        } else {
            ActorKind::Activity
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let data = match self.engine.serve(kind, &call.method, &call.data).await {
            Ok(body) => body,
            Err(status) => {
                headers.insert(ERROR_HEADER, HeaderValue::from_static("1"));
                dapr_workflow::cluster::status_to_bytes(&status)
            }
        };
        Ok(ActorResponse {
            status: StatusCode::OK,
            headers,
            data: data.into(),
        })
    }
}

/// The workflow component name every API path carries; Dapr has one, `dapr`.
pub const COMPONENT: &str = "dapr";

/// A management API failure, carrying the operation for Dapr's message.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowApiError {
    #[error(
        "the state store is not configured to use the actor runtime. Have you set the - name: actorStateStore value: \"true\" in your state store component file?"
    )]
    NoStateStore,
    #[error("workflow component '{0}' does not exist")]
    ComponentNotFound(String),
    #[error("no workflow component was provided")]
    ComponentMissing,
    #[error("{1}")]
    Engine(Operation, WorkflowError),
    #[error("unable to find workflow with the provided instance ID: {0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
}

/// Which management call failed (Dapr's error code depends on it).
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    Start,
    Get,
    Terminate,
    RaiseEvent,
    Pause,
    Resume,
    Purge,
}

impl From<WorkflowApiError> for MappedError {
    fn from(e: WorkflowApiError) -> Self {
        use WorkflowApiError::*;
        let (code, http, grpc) = match &e {
            NoStateStore => (
                "ERR_ACTOR_RUNTIME_NOT_FOUND",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            ComponentNotFound(_) => (
                "ERR_WORKFLOW_COMPONENT_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            ComponentMissing => (
                "ERR_WORKFLOW_COMPONENT_MISSING",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            NotFound(_) => (
                "ERR_INSTANCE_ID_NOT_FOUND",
                StatusCode::NOT_FOUND,
                Code::NotFound,
            ),
            BadRequest(_) => (
                "ERR_MALFORMED_REQUEST",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            Engine(op, err) => match err {
                WorkflowError::MissingInstanceId => (
                    "ERR_INSTANCE_ID_PROVIDED_MISSING",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                ),
                WorkflowError::InstanceIdTooLong => (
                    "ERR_INSTANCE_ID_TOO_LONG",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                ),
                WorkflowError::InvalidInstanceId(_) => (
                    "ERR_INSTANCE_ID_INVALID",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                ),
                WorkflowError::MissingName => (
                    "ERR_WORKFLOW_NAME_MISSING",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                ),
                WorkflowError::MissingEventName => (
                    "ERR_WORKFLOW_EVENT_NAME_MISSING",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                ),
                WorkflowError::NotFound(_) => (
                    "ERR_INSTANCE_ID_NOT_FOUND",
                    StatusCode::NOT_FOUND,
                    Code::NotFound,
                ),
                _ => {
                    let code = match op {
                        Operation::Start => "ERR_START_WORKFLOW",
                        Operation::Get => "ERR_GET_WORKFLOW",
                        Operation::Terminate => "ERR_TERMINATE_WORKFLOW",
                        Operation::RaiseEvent => "ERR_RAISE_EVENT_WORKFLOW",
                        Operation::Pause => "ERR_PAUSE_WORKFLOW",
                        Operation::Resume => "ERR_RESUME_WORKFLOW",
                        Operation::Purge => "ERR_PURGE_WORKFLOW",
                    };
                    (code, StatusCode::INTERNAL_SERVER_ERROR, Code::Internal)
                }
            },
        };
        let message = match &e {
            Engine(op, err) => match (op, err) {
                (
                    _,
                    WorkflowError::MissingInstanceId
                    | WorkflowError::InstanceIdTooLong
                    | WorkflowError::InvalidInstanceId(_)
                    | WorkflowError::MissingName
                    | WorkflowError::MissingEventName
                    | WorkflowError::NotFound(_),
                ) => err.to_string(),
                (Operation::Start, _) => format!("error starting workflow: {err}"),
                (Operation::Get, _) => format!("error while getting workflow info: {err}"),
                (Operation::Terminate, _) => format!("error terminating workflow: {err}"),
                (Operation::RaiseEvent, _) => format!("error raising event on workflow: {err}"),
                (Operation::Pause, _) => format!("error pausing workflow: {err}"),
                (Operation::Resume, _) => format!("error resuming workflow: {err}"),
                (Operation::Purge, _) => format!("error purging workflow: {err}"),
            },
            _ => e.to_string(),
        };
        MappedError::new(code, http, grpc, message)
    }
}

/// The workflow API shared by the HTTP and gRPC adapters.
pub struct WorkflowApi<'a> {
    engine: &'a Engine,
}

/// Dapr's `GetWorkflowResponse`, also the HTTP JSON body.
pub struct WorkflowInfo {
    pub instance_id: String,
    pub workflow_name: String,
    pub created_at: Option<prost_types::Timestamp>,
    pub last_updated_at: Option<prost_types::Timestamp>,
    pub runtime_status: &'static str,
    pub properties: std::collections::HashMap<String, String>,
}

impl<'a> WorkflowApi<'a> {
    /// Checks the component name and that workflows are available.
    pub fn new(slot: &'a WorkflowSlot, component: &str) -> Result<Self, WorkflowApiError> {
        if component.is_empty() {
            return Err(WorkflowApiError::ComponentMissing);
        }
        if component != COMPONENT {
            return Err(WorkflowApiError::ComponentNotFound(component.to_owned()));
        }
        Ok(Self {
            engine: slot.get()?,
        })
    }

    pub async fn start(
        &self,
        name: &str,
        instance_id: &str,
        input: Option<String>,
        start_time: Option<&str>,
    ) -> Result<String, WorkflowApiError> {
        let scheduled_start = match start_time {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(std::time::SystemTime::from)
                    .map_err(|_| {
                        WorkflowApiError::Engine(
                            Operation::Start,
                            WorkflowError::InvalidRequest(
                                "start times must be in RFC3339 format (e.g. \"2009-11-10T23:00:00Z\")"
                                    .into(),
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        self.engine
            .start(StartRequest {
                instance_id: instance_id.to_owned(),
                name: name.to_owned(),
                input,
                scheduled_start,
                tags: Default::default(),
            })
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::Start, e))
    }

    /// `None` when the instance does not exist.
    pub async fn get(&self, instance_id: &str) -> Result<Option<WorkflowInfo>, WorkflowApiError> {
        let Some(s) = self
            .engine
            .status(instance_id)
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::Get, e))?
        else {
            return Ok(None);
        };
        let mut properties = std::collections::HashMap::new();
        if let Some(c) = &s.custom_status {
            properties.insert("dapr.workflow.custom_status".to_owned(), c.clone());
        }
        if let Some(i) = &s.input {
            properties.insert("dapr.workflow.input".to_owned(), i.clone());
        }
        match &s.failure {
            None => {
                if let Some(o) = &s.output {
                    properties.insert("dapr.workflow.output".to_owned(), o.clone());
                }
            }
            Some(f) => {
                properties.insert(
                    "dapr.workflow.failure.error_type".to_owned(),
                    f.error_type.clone(),
                );
                properties.insert(
                    "dapr.workflow.failure.error_message".to_owned(),
                    f.error_message.clone(),
                );
                if let Some(t) = &f.stack_trace {
                    properties.insert("dapr.workflow.failure.stack_trace".to_owned(), t.clone());
                }
            }
        }
        Ok(Some(WorkflowInfo {
            instance_id: s.instance_id,
            workflow_name: s.name,
            created_at: s.created,
            last_updated_at: s.last_updated,
            runtime_status: status_name(s.status as i32),
            properties,
        }))
    }

    pub async fn terminate(&self, instance_id: &str) -> Result<(), WorkflowApiError> {
        // Dapr terminates children too.
        self.engine
            .terminate(instance_id, None, true)
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::Terminate, e))
    }

    pub async fn raise_event(
        &self,
        instance_id: &str,
        event: &str,
        data: Option<String>,
    ) -> Result<(), WorkflowApiError> {
        self.engine
            .raise_event(instance_id, event, data)
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::RaiseEvent, e))
    }

    pub async fn pause(&self, instance_id: &str) -> Result<(), WorkflowApiError> {
        self.engine
            .suspend(instance_id, None)
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::Pause, e))
    }

    pub async fn resume(&self, instance_id: &str) -> Result<(), WorkflowApiError> {
        self.engine
            .resume(instance_id, None)
            .await
            .map_err(|e| WorkflowApiError::Engine(Operation::Resume, e))
    }

    pub async fn purge(&self, instance_id: &str) -> Result<(), WorkflowApiError> {
        match self.engine.purge(instance_id, true, false).await {
            Ok(0) => Err(WorkflowApiError::NotFound(instance_id.to_owned())),
            Ok(_) => Ok(()),
            Err(e) => Err(WorkflowApiError::Engine(Operation::Purge, e)),
        }
    }
}
