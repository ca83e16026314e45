//! The reminder and timer APIs over HTTP and gRPC: request decoding, Dapr's
//! JSON/proto answers and Dapr's error codes.
//!
//! HTTP: `POST|PUT|GET|DELETE /v1.0/actors/{type}/{id}/reminders/{name}`,
//! `POST|PUT|DELETE /v1.0/actors/{type}/{id}/timers/{name}`. gRPC:
//! `RegisterActorTimer`, `UnregisterActorTimer`, `RegisterActorReminder`,
//! `UnregisterActorReminder`, `GetActorReminder`, `ListActorReminders`,
//! `UnregisterActorRemindersByType`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::SecondsFormat;
use dapr_rs_proto::runtime as pb;
use http::Method;
use serde::Deserialize;
use tonic::Code;

use super::{
    CreateRequest, Reminder, ReminderError, Reminders,
    model::{Kind, data_from_bytes},
};
use crate::{
    api::http::{AppState, Body, PathParams},
    error::MappedError,
};

/// Which API an error came from (it picks Dapr's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateReminder,
    GetReminder,
    DeleteReminder,
    ListReminders,
    CreateTimer,
    DeleteTimer,
}

/// Maps a reminder/timer failure to Dapr's code and statuses.
pub fn map_error(op: Op, e: ReminderError) -> MappedError {
    use ReminderError as E;
    let internal = |code: &'static str, prefix: &str, e: &dyn std::fmt::Display| {
        MappedError::new(
            code,
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            format!("{prefix}: {e}"),
        )
    };
    match e {
        E::NotHosted => MappedError::new(
            "ERR_ACTOR_REMINDER_NON_HOSTED",
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            e.to_string(),
        ),
        E::AlreadyExists(ref name) => MappedError::new(
            "ERR_ACTOR_REMINDER_ALREADY_EXISTS",
            StatusCode::CONFLICT,
            Code::AlreadyExists,
            format!("actor reminder already exists: {name}"),
        ),
        E::InvalidName(_) => MappedError::new(
            "ERR_BAD_REQUEST",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("invalid request: {e}"),
        ),
        E::NoHost | E::NoStateStore => MappedError::new(
            "ERR_ACTOR_RUNTIME_NOT_FOUND",
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            e.to_string(),
        ),
        other => match op {
            Op::CreateReminder => internal(
                "ERR_ACTOR_REMINDER_CREATE",
                "error creating actor reminder",
                &other,
            ),
            Op::GetReminder | Op::ListReminders => internal(
                "ERR_ACTOR_REMINDER_GET",
                "error getting actor reminder",
                &other,
            ),
            Op::DeleteReminder => internal(
                "ERR_ACTOR_REMINDER_DELETE",
                "error deleting actor reminder",
                &other,
            ),
            Op::CreateTimer => internal(
                "ERR_ACTOR_TIMER_CREATE",
                "error creating actor timer",
                &other,
            ),
            Op::DeleteTimer => internal(
                "ERR_ACTOR_TIMER_DELETE",
                "error deleting actor timer",
                &other,
            ),
        },
    }
}

fn malformed(e: impl std::fmt::Display) -> MappedError {
    MappedError::new(
        "ERR_MALFORMED_REQUEST",
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        format!("failed deserializing HTTP body: {e}"),
    )
}

fn not_found(name: &str) -> MappedError {
    MappedError::new(
        "ERR_ACTOR_REMINDER_NOT_FOUND",
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!("actor reminder not found: {name}"),
    )
}

/// The HTTP body of a reminder or timer registration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HttpBody {
    #[serde(default)]
    due_time: Option<String>,
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    callback: Option<String>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    overwrite: Option<bool>,
}

/// Decodes the HTTP registration body (Dapr: a JSON object; anything else is
/// `ERR_MALFORMED_REQUEST`).
pub fn decode_http_body(
    actor_type: &str,
    actor_id: &str,
    name: &str,
    body: &[u8],
) -> Result<CreateRequest, MappedError> {
    let b: HttpBody = serde_json::from_slice(body).map_err(malformed)?;
    Ok(CreateRequest {
        actor_type: actor_type.to_owned(),
        actor_id: actor_id.to_owned(),
        name: name.to_owned(),
        data: b.data.map(|d| Bytes::copy_from_slice(d.get().as_bytes())),
        due_time: b.due_time.unwrap_or_default(),
        period: b.period.unwrap_or_default(),
        ttl: b.ttl.unwrap_or_default(),
        callback: b.callback.unwrap_or_default(),
        overwrite: b.overwrite,
    })
}

/// `GET .../reminders/{name}`: `{actorID,actorType,data,dueTime,period,ttl}`.
pub fn reminder_json(r: &Reminder) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("actorID".into(), r.actor_id.clone().into());
    m.insert("actorType".into(), r.actor_type.clone().into());
    if let Some(d) = r
        .data
        .as_ref()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(d).ok())
    {
        m.insert("data".into(), d);
    }
    if !r.due_time.is_empty() {
        m.insert("dueTime".into(), r.due_time.clone().into());
    }
    if !r.period.value.is_empty() {
        m.insert("period".into(), r.period.value.clone().into());
    }
    if let Some(exp) = r.expiration_time {
        m.insert(
            "ttl".into(),
            exp.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
        );
    }
    serde_json::Value::Object(m)
}

async fn reminders_of(sidecar: &AppState) -> Result<Arc<Reminders>, MappedError> {
    let rt = sidecar.actors.get().await.map_err(|e| e.mapped())?;
    Ok(rt.reminders().clone())
}

fn empty() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// HTTP handler for `/v1.0/actors/{type}/{id}/reminders/{name}` (all verbs).
pub async fn http_reminder(
    State(sidecar): State<AppState>,
    method: Method,
    PathParams((actor_type, actor_id, name)): PathParams<(String, String, String)>,
    Body(body): Body,
) -> Response {
    let run = async {
        let rem = reminders_of(&sidecar).await?;
        match method {
            Method::POST | Method::PUT => {
                let req = decode_http_body(&actor_type, &actor_id, &name, &body)?;
                rem.create_reminder(req)
                    .await
                    .map_err(|e| map_error(Op::CreateReminder, e))?;
                Ok(empty())
            }
            Method::GET => {
                let r = rem
                    .get_reminder(&actor_type, &actor_id, &name)
                    .await
                    .map_err(|e| map_error(Op::GetReminder, e))?
                    .ok_or_else(|| not_found(&name))?;
                Ok(axum::Json(reminder_json(&r)).into_response())
            }
            Method::DELETE => {
                rem.delete_reminder(&actor_type, &actor_id, &name)
                    .await
                    .map_err(|e| map_error(Op::DeleteReminder, e))?;
                Ok(empty())
            }
            _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
        }
    };
    run.await.unwrap_or_else(|e: MappedError| e.into_response())
}

/// HTTP handler for `/v1.0/actors/{type}/{id}/timers/{name}` (all verbs).
pub async fn http_timer(
    State(sidecar): State<AppState>,
    method: Method,
    PathParams((actor_type, actor_id, name)): PathParams<(String, String, String)>,
    Body(body): Body,
) -> Response {
    let run = async {
        let rem = reminders_of(&sidecar).await?;
        match method {
            Method::POST | Method::PUT => {
                let req = decode_http_body(&actor_type, &actor_id, &name, &body)?;
                rem.create_timer(req)
                    .map_err(|e| map_error(Op::CreateTimer, e))?;
                Ok(empty())
            }
            Method::DELETE => {
                rem.delete_timer(&actor_type, &actor_id, &name);
                Ok(empty())
            }
            _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
        }
    };
    run.await.unwrap_or_else(|e: MappedError| e.into_response())
}

// ---- gRPC --------------------------------------------------------------------

pub async fn register_reminder(
    sidecar: &AppState,
    req: pb::RegisterActorReminderRequest,
) -> Result<(), tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    rem.create_reminder(CreateRequest {
        data: data_from_bytes(&req.data),
        actor_type: req.actor_type,
        actor_id: req.actor_id,
        name: req.name,
        due_time: req.due_time,
        period: req.period,
        ttl: req.ttl,
        callback: String::new(),
        // Dapr's `failure_policy` (field 9) belongs to its Scheduler-backed
        // reminders; here a failed tick is logged and the schedule goes on.
        overwrite: req.overwrite,
    })
    .await
    .map_err(|e| map_error(Op::CreateReminder, e).into())
}

pub async fn unregister_reminder(
    sidecar: &AppState,
    req: pb::UnregisterActorReminderRequest,
) -> Result<(), tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    rem.delete_reminder(&req.actor_type, &req.actor_id, &req.name)
        .await
        .map_err(|e| map_error(Op::DeleteReminder, e).into())
}

pub async fn register_timer(
    sidecar: &AppState,
    req: pb::RegisterActorTimerRequest,
) -> Result<(), tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    rem.create_timer(CreateRequest {
        data: data_from_bytes(&req.data),
        actor_type: req.actor_type,
        actor_id: req.actor_id,
        name: req.name,
        due_time: req.due_time,
        period: req.period,
        ttl: req.ttl,
        callback: req.callback,
        overwrite: None,
    })
    .map_err(|e| map_error(Op::CreateTimer, e).into())
}

pub async fn unregister_timer(
    sidecar: &AppState,
    req: pb::UnregisterActorTimerRequest,
) -> Result<(), tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    rem.delete_timer(&req.actor_type, &req.actor_id, &req.name);
    Ok(())
}

fn pb_reminder(r: &Reminder) -> pb::ActorReminder {
    pb::ActorReminder {
        actor_type: r.actor_type.clone(),
        actor_id: r.actor_id.clone(),
        due_time: (!r.due_time.is_empty()).then(|| r.due_time.clone()),
        period: (!r.period.value.is_empty()).then(|| r.period.value.clone()),
        // Dapr wraps the stored bytes in a google.protobuf.BytesValue.
        data: r.data.as_ref().map(|d| prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.BytesValue".to_owned(),
            value: prost::Message::encode_to_vec(&d.to_vec()),
        }),
        ttl: r
            .expiration_time
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

pub async fn get_reminder(
    sidecar: &AppState,
    req: pb::GetActorReminderRequest,
) -> Result<pb::GetActorReminderResponse, tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    let r = rem
        .get_reminder(&req.actor_type, &req.actor_id, &req.name)
        .await
        .map_err(|e| map_error(Op::GetReminder, e))?
        .ok_or_else(|| not_found(&req.name))?;
    let a = pb_reminder(&r);
    Ok(pb::GetActorReminderResponse {
        actor_type: a.actor_type,
        actor_id: a.actor_id,
        due_time: a.due_time,
        period: a.period,
        data: a.data,
        ttl: a.ttl,
    })
}

pub async fn list_reminders(
    sidecar: &AppState,
    req: pb::ListActorRemindersRequest,
) -> Result<pb::ListActorRemindersResponse, tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    let list = rem
        .list_reminders(&req.actor_type, req.actor_id.as_deref())
        .await
        .map_err(|e| map_error(Op::ListReminders, e))?;
    Ok(pb::ListActorRemindersResponse {
        reminders: list
            .iter()
            .map(|r| pb::NamedActorReminder {
                name: r.name.clone(),
                reminder: Some(pb_reminder(r)),
            })
            .collect(),
    })
}

pub async fn unregister_reminders_by_type(
    sidecar: &AppState,
    req: pb::UnregisterActorRemindersByTypeRequest,
) -> Result<(), tonic::Status> {
    let rem = reminders_of(sidecar).await?;
    rem.delete_reminders_by_type(&req.actor_type, req.actor_id.as_deref())
        .await
        .map_err(|e| map_error(Op::DeleteReminder, e).into())
}

/// The reminder kinds as the HTTP paths name them.
pub fn kind_from_path(segment: &str) -> Option<Kind> {
    match segment {
        "reminders" => Some(Kind::Reminder),
        "timers" => Some(Kind::Timer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_body_and_errors() {
        let r = decode_http_body(
            "T",
            "a",
            "n",
            br#"{"dueTime":"1s","period":"R2/PT1S","data":{"k":[1]}}"#,
        )
        .unwrap();
        assert_eq!(r.due_time, "1s");
        assert_eq!(r.data.as_deref(), Some(&br#"{"k":[1]}"#[..]));
        let e = decode_http_body("T", "a", "n", b"").unwrap_err();
        assert_eq!(e.code, "ERR_MALFORMED_REQUEST");
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
        let e = decode_http_body("T", "a", "n", br#"{"dueTime":5}"#).unwrap_err();
        assert_eq!(e.code, "ERR_MALFORMED_REQUEST");
        let invalid = r.clone().build(Kind::Reminder, chrono::Utc::now());
        assert!(invalid.is_ok());
        let mut bad = r;
        bad.period = "R0/PT1S".into();
        let err = bad.build(Kind::Reminder, chrono::Utc::now()).unwrap_err();
        let m = map_error(Op::CreateReminder, ReminderError::Invalid(err));
        assert_eq!(m.code, "ERR_ACTOR_REMINDER_CREATE");
        assert_eq!(
            m.message,
            "error creating actor reminder: invalid reminder period: has zero repetitions"
        );
        let m = map_error(Op::CreateTimer, ReminderError::NotActivated("T||a".into()));
        assert_eq!(m.code, "ERR_ACTOR_TIMER_CREATE");
        let m = map_error(
            Op::CreateReminder,
            ReminderError::AlreadyExists("r1".into()),
        );
        assert_eq!(
            (m.code, m.http, m.grpc, m.message.as_str()),
            (
                "ERR_ACTOR_REMINDER_ALREADY_EXISTS",
                StatusCode::CONFLICT,
                Code::AlreadyExists,
                "actor reminder already exists: r1"
            )
        );
        let m = map_error(Op::GetReminder, ReminderError::NotHosted);
        assert_eq!(
            (m.code, m.http),
            ("ERR_ACTOR_REMINDER_NON_HOSTED", StatusCode::FORBIDDEN)
        );
    }
}
