//! The engine over an in-memory store, driven as a worker would drive it.

use std::sync::Arc;

use dapr_components::state::memory::InMemoryStore;

use super::*;
use crate::proto::{CompleteWorkflowAction, ScheduleTaskAction, WorkflowAction};

fn engine() -> Engine {
    let store = WorkflowStore::new(Arc::new(InMemoryStore::new()), "app", "ns");
    Engine::new(store, "app")
}

async fn next(rx: &mut mpsc::Receiver<Result<WorkItem, Status>>) -> (String, work_item::Request) {
    let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a work item within 5s")
        .expect("worker channel open")
        .expect("work item");
    (item.completion_token, item.request.expect("request"))
}

fn action(kind: workflow_action::WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id: 0,
        workflow_action_type: Some(kind),
        router: None,
    }
}

fn cached(engine: &Engine) -> usize {
    lock(&engine.inner.slots).len()
}

#[tokio::test]
async fn a_finished_instance_leaves_the_cache_and_is_read_back_from_the_store() {
    let engine = engine();
    engine.recover().await.unwrap();
    let mut rx = engine.connect_worker();
    let id = engine
        .start(StartRequest {
            instance_id: "one".into(),
            name: "wf".into(),
            input: Some("1".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let (token, work) = next(&mut rx).await;
    assert!(matches!(work, work_item::Request::WorkflowRequest(_)));
    // Running instances stay cached.
    assert_eq!(cached(&engine), 1);
    engine
        .complete_turn(WorkflowResponse {
            instance_id: id.clone(),
            completion_token: token,
            actions: vec![action(workflow_action::WorkflowActionType::ScheduleTask(
                ScheduleTaskAction {
                    name: "step".into(),
                    input: Some("1".into()),
                    ..Default::default()
                },
            ))],
            ..Default::default()
        })
        .await
        .unwrap();
    let (token, work) = next(&mut rx).await;
    let work_item::Request::ActivityRequest(activity) = work else {
        panic!("expected an activity, got {work:?}");
    };
    engine
        .complete_activity(ActivityResponse {
            instance_id: id.clone(),
            task_id: activity.task_id,
            result: Some("2".into()),
            completion_token: token,
            ..Default::default()
        })
        .await
        .unwrap();
    let (token, work) = next(&mut rx).await;
    let work_item::Request::WorkflowRequest(turn) = work else {
        panic!("expected a turn, got {work:?}");
    };
    assert!(turn.new_events.iter().any(|e| matches!(
        &e.event_type,
        Some(EventType::TaskCompleted(c)) if c.result.as_deref() == Some("2")
    )));
    engine
        .complete_turn(WorkflowResponse {
            instance_id: id.clone(),
            completion_token: token,
            actions: vec![action(
                workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
                    workflow_status: OrchestrationStatus::Completed as i32,
                    result: Some("2".into()),
                    ..Default::default()
                }),
            )],
            ..Default::default()
        })
        .await
        .unwrap();

    assert_eq!(cached(&engine), 0, "a finished instance stays cached");
    let status = engine.status(&id).await.unwrap().expect("still stored");
    assert_eq!(status.status, OrchestrationStatus::Completed);
    assert_eq!(status.output.as_deref(), Some("2"));
    assert_eq!(cached(&engine), 0);
    // Started, scheduled, completed: two turns' worth of history.
    let history = engine.history(&id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e.event_type, Some(EventType::ExecutionCompleted(_))))
    );
    assert!(
        history
            .iter()
            .any(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_))))
    );
    // The id is known without a cache entry: it cannot be started twice
    // while running, but a finished one can be replaced.
    assert_eq!(engine.inner.store.is_listed(&id), Some(true));
    engine
        .start(StartRequest {
            instance_id: id.clone(),
            name: "wf".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        engine
            .start(StartRequest {
                instance_id: id.clone(),
                name: "wf".into(),
                ..Default::default()
            })
            .await,
        Err(WorkflowError::AlreadyExists(_))
    ));
}
