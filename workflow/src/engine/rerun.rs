//! `RerunWorkflowFromEvent`: a new instance that starts from a copy of a
//! finished instance's history, cut at one of its scheduling events
//! (activity, timer or child workflow), which is carried out again, with
//! everything that was still outstanding at that point.

use std::collections::BTreeMap;

use super::{Engine, event, is_terminal, now_ts};
use crate::{
    error::{WorkflowError, validate_instance_id},
    proto::{
        ExecutionStartedEvent, HistoryEvent, OrchestrationStatus, ParentInstanceInfo,
        RerunParentInstanceInfo, TimerFiredEvent, WorkflowInstance, history_event::EventType,
    },
    store::{Batch, ChildStart, InboxEntry, IndexChange, InstanceRecord, OutgoingMessage},
};

/// What to rerun, as `RerunWorkflowFromEventRequest` carries it.
#[derive(Debug, Clone, Default)]
pub struct RerunRequest {
    pub source_instance_id: String,
    pub event_id: u32,
    /// `None`: a random UUID.
    pub new_instance_id: Option<String>,
    /// Replace the rerun event's input with `input` (which may be none).
    pub overwrite_input: bool,
    pub input: Option<String>,
    /// Only for a child workflow event: the rerun child's id.
    pub new_child_instance_id: Option<String>,
}

/// The new instance's history and the events it resumes with.
struct Forked {
    history: Vec<HistoryEvent>,
    /// Scheduling events carried out again (moved to history as well).
    rerun: Vec<HistoryEvent>,
}

/// Cuts `old` at `target` as Dapr does: completed activities and child
/// workflows before it are kept with their results; the ones still open
/// there, timers not yet fired and the target itself are done again.
fn fork(
    old: &[HistoryEvent],
    req: &RerunRequest,
    source: &str,
    new_id: &str,
) -> Result<Forked, WorkflowError> {
    let target = i32::try_from(req.event_id).map_err(|_| {
        WorkflowError::EventNotFound(format!(
            "does not have history event with ID '{}'",
            req.event_id
        ))
    })?;
    let mut history = Vec::new();
    let mut open: BTreeMap<i32, HistoryEvent> = BTreeMap::new();
    let mut found = None;
    for e in old {
        if e.event_id == target {
            found = Some(e.clone());
            break;
        }
        match &e.event_type {
            Some(
                EventType::TaskScheduled(_)
                | EventType::TimerCreated(_)
                | EventType::ChildWorkflowInstanceCreated(_),
            ) => {
                open.insert(e.event_id, e.clone());
            }
            Some(EventType::TaskCompleted(c)) => {
                close(&mut open, &mut history, c.task_scheduled_id, e)
            }
            Some(EventType::TaskFailed(f)) => {
                close(&mut open, &mut history, f.task_scheduled_id, e)
            }
            Some(EventType::TimerFired(f)) => close(&mut open, &mut history, f.timer_id, e),
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                close(&mut open, &mut history, c.task_scheduled_id, e)
            }
            Some(EventType::ChildWorkflowInstanceFailed(f)) => {
                close(&mut open, &mut history, f.task_scheduled_id, e)
            }
            _ => history.push(e.clone()),
        }
    }
    let Some(mut found) = found else {
        return Err(WorkflowError::EventNotFound(format!(
            "does not have history event with ID '{target}'"
        )));
    };
    let rerun_parent = Some(RerunParentInstanceInfo {
        instance_id: source.to_owned(),
    });
    match &mut found.event_type {
        Some(EventType::TaskScheduled(t)) => {
            if req.new_child_instance_id.is_some() {
                return Err(WorkflowError::InvalidRequest(format!(
                    "cannot set new child workflow instance ID on activity event '{target}'"
                )));
            }
            if req.overwrite_input {
                t.input = req.input.clone();
            }
            t.rerun_parent_instance_info = rerun_parent;
        }
        Some(EventType::TimerCreated(t)) => {
            if req.overwrite_input {
                return Err(WorkflowError::InvalidRequest(format!(
                    "cannot write input to timer event '{target}'"
                )));
            }
            if req.new_child_instance_id.is_some() {
                return Err(WorkflowError::InvalidRequest(format!(
                    "cannot set new child workflow instance ID on timer event '{target}'"
                )));
            }
            t.rerun_parent_instance_info = rerun_parent;
        }
        Some(EventType::ChildWorkflowInstanceCreated(c)) => {
            c.instance_id = match &req.new_child_instance_id {
                Some(child) => {
                    validate_instance_id(child, true)?;
                    child.clone()
                }
                None => format!("{new_id}:{target:04x}"),
            };
            if req.overwrite_input {
                c.input = req.input.clone();
            }
            c.rerun_parent_instance_info = rerun_parent;
        }
        Some(EventType::DetachedWorkflowInstanceCreated(_)) => {
            return Err(WorkflowError::InvalidRequest(format!(
                "event '{target}' is a detached workflow spawn and cannot be rerun: detached spawns are fire-and-forget and have no replayable continuation in the caller"
            )));
        }
        _ => {
            return Err(WorkflowError::EventNotFound(format!(
                "target event '{}' with ID '{target}' is not an event that can be rerun",
                kind_name(&found)
            )));
        }
    }
    let mut rerun: Vec<HistoryEvent> = open.into_values().collect();
    for e in &mut rerun {
        if let Some(EventType::ChildWorkflowInstanceCreated(c)) = &mut e.event_type {
            c.instance_id = format!("{new_id}:{:04x}", e.event_id);
        }
    }
    rerun.push(found);
    Ok(Forked { history, rerun })
}

/// Results close the scheduling event they answer; both are kept.
fn close(
    open: &mut BTreeMap<i32, HistoryEvent>,
    history: &mut Vec<HistoryEvent>,
    scheduled: i32,
    result: &HistoryEvent,
) {
    if let Some(s) = open.remove(&scheduled) {
        history.push(s);
    }
    history.push(result.clone());
}

fn kind_name(e: &HistoryEvent) -> &'static str {
    match &e.event_type {
        Some(EventType::ExecutionStarted(_)) => "ExecutionStarted",
        Some(EventType::ExecutionCompleted(_)) => "ExecutionCompleted",
        Some(EventType::EventSent(_)) => "EventSent",
        Some(EventType::EventRaised(_)) => "EventRaised",
        Some(EventType::WorkflowStarted(_)) => "WorkflowStarted",
        Some(_) => "event",
        None => "empty event",
    }
}

impl Engine {
    /// Starts a new instance from `req.source_instance_id`'s history cut at
    /// `req.event_id`; returns the new instance's id. The source is left
    /// as it is.
    pub(crate) async fn rerun_here(&self, req: RerunRequest) -> Result<String, WorkflowError> {
        let source = req.source_instance_id.clone();
        if source.is_empty() {
            return Err(WorkflowError::InvalidRequest(
                "rerun workflow source instance ID is required".into(),
            ));
        }
        let new_id = req
            .new_instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if new_id == source {
            return Err(WorkflowError::InvalidRequest(
                "rerun workflow instance ID must be different from the original instance ID".into(),
            ));
        }
        validate_instance_id(&new_id, true)?;
        let (old, old_history) = {
            let slot = self.slot(&source);
            let mut st = slot.state.lock().await;
            self.ensure_loaded(&mut st, &source).await?;
            let Some(record) = st.record.clone() else {
                return Err(WorkflowError::NotFound(source));
            };
            (record, st.history.clone())
        };
        if !is_terminal(old.status) {
            return Err(WorkflowError::InvalidRequest(format!(
                "'{source}' is not in a terminal state"
            )));
        }
        if old.parent.is_some() {
            return Err(WorkflowError::InvalidRequest(format!(
                "'{source}': cannot rerun from child-workflows"
            )));
        }
        let Forked { mut history, rerun } = fork(&old_history, &req, &source, &new_id)?;

        let execution_id = uuid::Uuid::new_v4().simple().to_string();
        let instance = WorkflowInstance {
            instance_id: new_id.clone(),
            execution_id: Some(execution_id.clone()),
        };
        for e in &mut history {
            if let Some(EventType::ExecutionStarted(s)) = &mut e.event_type {
                s.workflow_instance = Some(instance.clone());
            }
        }
        let now = now_ts();
        let mut record = InstanceRecord {
            name: old.name.clone(),
            status: OrchestrationStatus::Running as i32,
            created: Some(now),
            last_updated: Some(now),
            input: old.input.clone(),
            execution_id,
            tags: old.tags.clone(),
            ..Default::default()
        };
        for mut e in rerun {
            e.timestamp = Some(now);
            match &e.event_type {
                Some(EventType::TimerCreated(t)) => record.inbox.push(InboxEntry {
                    event: Some(event(
                        -1,
                        EventType::TimerFired(TimerFiredEvent {
                            fire_at: t.fire_at,
                            timer_id: e.event_id,
                        }),
                    )),
                    dedup: String::new(),
                }),
                Some(EventType::ChildWorkflowInstanceCreated(c)) => {
                    let started = ExecutionStartedEvent {
                        name: c.name.clone(),
                        version: c.version.clone(),
                        input: c.input.clone(),
                        workflow_instance: Some(WorkflowInstance {
                            instance_id: c.instance_id.clone(),
                            execution_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                        }),
                        parent_instance: Some(ParentInstanceInfo {
                            task_scheduled_id: e.event_id,
                            name: Some(record.name.clone()),
                            workflow_instance: Some(instance.clone()),
                            app_id: Some(self.inner.app_id.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    record.outbox.push(OutgoingMessage {
                        target: c.instance_id.clone(),
                        dedup: format!("{new_id}/0/child/{}", e.event_id),
                        event: Some(self.started_event(started)),
                        create: Some(ChildStart {
                            name: c.name.clone(),
                            input: c.input.clone(),
                        }),
                    });
                    record.children.push(c.instance_id.clone());
                }
                _ => {}
            }
            history.push(e);
        }

        let slot = self.slot(&new_id);
        let mut st = slot.state.lock().await;
        self.ensure_record(&mut st, &new_id).await?;
        if st.record.is_some() {
            return Err(WorkflowError::AlreadyExists(new_id));
        }
        let mut batch = Batch::default();
        record.history_chunks = 1;
        self.inner.store.put_chunk(&mut batch, &new_id, 1, &history);
        self.inner.store.put_record(&mut batch, &new_id, &record);
        batch.index(&new_id, IndexChange::Active);
        self.took(&new_id);
        self.write(&mut st, &new_id, batch).await?;
        st.record = Some(record);
        st.history = history;
        st.history_loaded = true;
        st.turn = None;
        drop(st);
        drop(slot);
        // Dispatches the open activities, queues the turn that sees the
        // fired timers and starts the children, as after a restart.
        self.resume_instance(&new_id).await?;
        Ok(new_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        ChildWorkflowInstanceCreatedEvent, ExecutionCompletedEvent, TaskCompletedEvent,
        TaskScheduledEvent, TimerCreatedEvent,
    };

    fn ev(id: i32, t: EventType) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            event_type: Some(t),
            ..Default::default()
        }
    }

    fn scheduled(id: i32, input: &str) -> HistoryEvent {
        ev(
            id,
            EventType::TaskScheduled(TaskScheduledEvent {
                name: "step".into(),
                input: Some(input.into()),
                ..Default::default()
            }),
        )
    }

    fn completed(of: i32) -> HistoryEvent {
        ev(
            -1,
            EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: of,
                result: Some(format!("r{of}")),
                ..Default::default()
            }),
        )
    }

    fn history() -> Vec<HistoryEvent> {
        vec![
            ev(
                -1,
                EventType::ExecutionStarted(ExecutionStartedEvent::default()),
            ),
            scheduled(0, "a"),
            ev(1, EventType::TimerCreated(TimerCreatedEvent::default())),
            completed(0),
            scheduled(2, "b"),
            completed(2),
            ev(
                3,
                EventType::ChildWorkflowInstanceCreated(ChildWorkflowInstanceCreatedEvent {
                    name: "child".into(),
                    ..Default::default()
                }),
            ),
            ev(
                -1,
                EventType::ExecutionCompleted(ExecutionCompletedEvent::default()),
            ),
        ]
    }

    fn req(event_id: u32) -> RerunRequest {
        RerunRequest {
            source_instance_id: "src".into(),
            event_id,
            ..Default::default()
        }
    }

    #[test]
    fn an_activity_rerun_keeps_earlier_results_and_reopens_what_was_open() {
        let mut r = req(2);
        r.overwrite_input = true;
        r.input = Some("\"new\"".into());
        let f = fork(&history(), &r, "src", "dst").unwrap();
        // Started, activity 0 with its result; the open timer (1) and the
        // target (2, with the new input) are done again; nothing after it.
        let ids: Vec<i32> = f.history.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, vec![-1, 0, -1]);
        let rerun: Vec<i32> = f.rerun.iter().map(|e| e.event_id).collect();
        assert_eq!(rerun, vec![1, 2]);
        match &f.rerun[1].event_type {
            Some(EventType::TaskScheduled(t)) => {
                assert_eq!(t.input.as_deref(), Some("\"new\""));
                assert_eq!(
                    t.rerun_parent_instance_info
                        .as_ref()
                        .map(|p| p.instance_id.as_str()),
                    Some("src")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_child_rerun_gets_a_new_child_id() {
        let f = fork(&history(), &req(3), "src", "dst").unwrap();
        match &f.rerun.last().unwrap().event_type {
            Some(EventType::ChildWorkflowInstanceCreated(c)) => {
                assert_eq!(c.instance_id, "dst:0003");
            }
            other => panic!("{other:?}"),
        }
        let mut r = req(3);
        r.new_child_instance_id = Some("kid".into());
        let f = fork(&history(), &r, "src", "dst").unwrap();
        match &f.rerun.last().unwrap().event_type {
            Some(EventType::ChildWorkflowInstanceCreated(c)) => assert_eq!(c.instance_id, "kid"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_targets_are_refused_as_dapr_refuses_them() {
        assert!(matches!(
            fork(&history(), &req(99), "src", "dst"),
            Err(WorkflowError::EventNotFound(_))
        ));
        let mut r = req(1);
        r.overwrite_input = true;
        assert!(matches!(
            fork(&history(), &r, "src", "dst"),
            Err(WorkflowError::InvalidRequest(m)) if m.contains("timer")
        ));
        let mut r = req(0);
        r.new_child_instance_id = Some("kid".into());
        assert!(matches!(
            fork(&history(), &r, "src", "dst"),
            Err(WorkflowError::InvalidRequest(_))
        ));
    }
}
