//! `/v1.0[-alpha1|-beta1]/workflows/{component}/...`: start, get, terminate,
//! raiseEvent, pause, resume, purge. Successful writes answer 202 as Dapr.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, Body, PathParams};
use crate::{
    error::MappedError,
    workflow::{WorkflowApi, WorkflowApiError, WorkflowInfo},
};

/// Every workflow route, under each API version Dapr serves them on.
pub fn routes() -> Router<AppState> {
    use axum::routing::{get as get_route, post};
    let mut router = Router::new();
    for v in ["v1.0", "v1.0-beta1", "v1.0-alpha1"] {
        let base = format!("/{v}/workflows/{{component}}/{{instance}}");
        router = router
            .route(&format!("{base}/start"), post(start))
            .route(&base, get_route(get))
            .route(&format!("{base}/terminate"), post(terminate))
            .route(&format!("{base}/raiseEvent/{{event}}"), post(raise_event))
            .route(&format!("{base}/pause"), post(pause))
            .route(&format!("{base}/resume"), post(resume))
            .route(&format!("{base}/purge"), post(purge));
    }
    router
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A body as the workflow input/event payload: empty means none.
fn payload(body: &[u8]) -> Result<Option<String>, WorkflowApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    String::from_utf8(body.to_vec())
        .map(Some)
        .map_err(|_| WorkflowApiError::BadRequest("the request body is not valid UTF-8".into()))
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

fn fail(e: WorkflowApiError) -> Response {
    MappedError::from(e).into_response()
}

fn rfc3339(ts: Option<prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn info_json(info: WorkflowInfo) -> serde_json::Value {
    json!({
        "instanceID": info.instance_id,
        "workflowName": info.workflow_name,
        "createdAt": rfc3339(info.created_at),
        "lastUpdatedAt": rfc3339(info.last_updated_at),
        "runtimeStatus": info.runtime_status,
        "properties": info.properties,
    })
}

pub async fn start(
    State(sidecar): State<AppState>,
    PathParams((component, name)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> Response {
    let run = async {
        let api = WorkflowApi::new(&sidecar.workflows, &component)?;
        let input = payload(&body)?;
        let id = query_param(query.as_deref(), "instanceID").unwrap_or_default();
        let start_time = query_param(query.as_deref(), "dapr.workflow.start_time");
        api.start(&name, &id, input, start_time.as_deref()).await
    };
    match run.await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "instanceID": id }))).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn get(
    State(sidecar): State<AppState>,
    PathParams((component, id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        let api = WorkflowApi::new(&sidecar.workflows, &component)?;
        api.get(&id)
            .await?
            .ok_or_else(|| WorkflowApiError::NotFound(id.clone()))
    };
    match run.await {
        Ok(info) => Json(info_json(info)).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn terminate(
    State(sidecar): State<AppState>,
    PathParams((component, id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        WorkflowApi::new(&sidecar.workflows, &component)?
            .terminate(&id)
            .await
    };
    run.await.map_or_else(fail, |()| accepted())
}

pub async fn raise_event(
    State(sidecar): State<AppState>,
    PathParams((component, id, event)): PathParams<(String, String, String)>,
    Body(body): Body,
) -> Response {
    let run = async {
        let api = WorkflowApi::new(&sidecar.workflows, &component)?;
        api.raise_event(&id, &event, payload(&body)?).await
    };
    run.await.map_or_else(fail, |()| accepted())
}

pub async fn pause(
    State(sidecar): State<AppState>,
    PathParams((component, id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        WorkflowApi::new(&sidecar.workflows, &component)?
            .pause(&id)
            .await
    };
    run.await.map_or_else(fail, |()| accepted())
}

pub async fn resume(
    State(sidecar): State<AppState>,
    PathParams((component, id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        WorkflowApi::new(&sidecar.workflows, &component)?
            .resume(&id)
            .await
    };
    run.await.map_or_else(fail, |()| accepted())
}

pub async fn purge(
    State(sidecar): State<AppState>,
    PathParams((component, id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        WorkflowApi::new(&sidecar.workflows, &component)?
            .purge(&id)
            .await
    };
    run.await.map_or_else(fail, |()| accepted())
}
