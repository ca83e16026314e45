//! Workflows with the official Python SDK (`dapr.ext.workflow`) against the
//! real daprd: the feature tests in e2e/python/test_workflow.py, and a
//! daprd SIGKILL in the middle of a running workflow.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[tokio::test]
async fn python_sdk_workflows_on_the_embedded_default() {
    let data = tempfile::tempdir().unwrap();
    let d = DaprdBuilder::new("wf-python")
        .arg("--data-dir")
        .arg(data.path().to_string_lossy().to_string())
        .start()
        .await;
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .arg(format!("{ROOT}/e2e/python/test_workflow.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" passed"),
        "pytest failed ({}):\n{text}\n--- daprd log ---\n{}",
        out.status,
        d.logs()
    );
    println!("{text}");
}

/// daprd on fixed ports (a restarted sidecar must come back where the
/// worker reconnects) with a given data dir.
fn spawn_daprd(http: u16, grpc: u16, data: &Path, log: &Path) -> Child {
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(DAPRD)
        .args([
            "--app-id",
            "wf-crash",
            "--dapr-listen-addresses",
            "127.0.0.1",
        ])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--data-dir", &data.to_string_lossy()])
        .args(["--log-level", "debug"])
        .env_remove("DAPR_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdout(Stdio::null())
        .stderr(logfile)
        .spawn()
        .expect("spawn daprd")
}

async fn wait_healthy(http: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let r = request(
            "GET",
            &format!("http://127.0.0.1:{http}/v1.0/healthz"),
            None,
            &[],
        )
        .await;
        if r.is_ok_and(|r| r.status == 204) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daprd did not become healthy on port {http}");
}

fn step_lines(log: &Path, instance: &str) -> Vec<(u32, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            (parts.next()? == instance).then_some(())?;
            let n = parts.next()?.parse().ok()?;
            Some((n, parts.next()?.to_owned()))
        })
        .collect()
}

async fn wait_for_line(log: &Path, what: &str, daprd_log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l == what)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "'{what}' never appeared in the step log:\n{}\n--- daprd ---\n{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            std::fs::read_to_string(daprd_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_workflow_survives_a_daprd_sigkill_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let daprd_log = dir.path().join("daprd.log");
    let step_log = dir.path().join("steps.log");
    let (http, grpc) = (free_port(), free_port());
    let mut daprd = KillOnDrop(spawn_daprd(http, grpc, &data, &daprd_log));
    wait_healthy(http).await;
    let _worker = KillOnDrop(
        Command::new("python3")
            .args(["-W", "ignore"])
            .arg(format!("{ROOT}/e2e/python/workflow_crash_worker.py"))
            .env("DAPR_GRPC_PORT", grpc.to_string())
            .env("DAPR_HTTP_PORT", http.to_string())
            .env("STEP_LOG", &step_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    wait_for_line(&step_log, "worker ready", &daprd_log).await;

    let instance = format!("crash-{}", uuid::Uuid::new_v4().simple());
    let r = http_call(
        "POST",
        http,
        &format!("/v1.0/workflows/dapr/crashy/start?instanceID={instance}"),
        "1",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());

    // Step 3 starting means step 2's result was persisted (the engine only
    // dispatches the next activity after committing the turn that saw it).
    wait_for_line(&step_log, &format!("{instance} 3 start"), &daprd_log).await;
    daprd.0.kill().unwrap();
    daprd.0.wait().unwrap();
    daprd = KillOnDrop(spawn_daprd(http, grpc, &data, &daprd_log));
    wait_healthy(http).await;

    // The worker reconnects by itself; the workflow finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let r = http_call("GET", http, &format!("/v1.0/workflows/dapr/{instance}"), "").await;
        let j = r.json();
        if j["runtimeStatus"] == "COMPLETED" {
            break j;
        }
        assert!(
            Instant::now() < deadline && j["runtimeStatus"] != "FAILED",
            "workflow did not complete: {j}\n--- steps ---\n{}\n--- daprd ---\n{}",
            std::fs::read_to_string(&step_log).unwrap_or_default(),
            std::fs::read_to_string(&daprd_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // acc = acc * 2 + n for n = 1..=6, from 1.
    let expected = (1..=6).fold(1i64, |acc, n| acc * 2 + n);
    assert_eq!(
        body["properties"]["dapr.workflow.output"],
        expected.to_string()
    );

    let lines = step_lines(&step_log, &instance);
    for n in 1..=6u32 {
        let starts = lines
            .iter()
            .filter(|(s, what)| *s == n && what == "start")
            .count();
        if n == 3 {
            // In flight at the kill: its result may not have been recorded,
            // so it may run again, but at most once more.
            assert!(
                (1..=2).contains(&starts),
                "step 3 ran {starts} times: {lines:?}"
            );
        } else {
            // Recorded before the kill (1, 2) or run after it (4-6): once.
            assert_eq!(starts, 1, "step {n} ran {starts} times: {lines:?}");
        }
    }
    drop(daprd);
}

async fn http_call(method: &str, port: u16, path: &str, body: &str) -> Reply {
    common::http(method, &format!("http://127.0.0.1:{port}{path}"), body).await
}

/// A Durable Task worker for the purge test: every workflow completes on
/// its first turn, failed when its input is `"fail"`, and a workflow named
/// `forever` never finishes.
async fn finishing_worker(
    mut client: dapr_workflow::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient<
        tonic::transport::Channel,
    >,
) {
    use dapr_workflow::proto::{
        CompleteWorkflowAction, GetWorkItemsRequest, OrchestrationStatus, WorkflowAction,
        WorkflowResponse, history_event::EventType, work_item, workflow_action,
    };
    let Ok(stream) = client.get_work_items(GetWorkItemsRequest::default()).await else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(item)) = stream.message().await {
        let Some(work_item::Request::WorkflowRequest(req)) = item.request else {
            continue;
        };
        let started =
            req.past_events
                .iter()
                .chain(&req.new_events)
                .find_map(|e| match &e.event_type {
                    Some(EventType::ExecutionStarted(s)) => Some(s.clone()),
                    _ => None,
                });
        let Some(started) = started else { continue };
        let actions = if started.name == "forever" {
            Vec::new()
        } else {
            let failed = started.input.as_deref() == Some("\"fail\"");
            vec![WorkflowAction {
                id: 0,
                workflow_action_type: Some(workflow_action::WorkflowActionType::CompleteWorkflow(
                    CompleteWorkflowAction {
                        workflow_status: if failed {
                            OrchestrationStatus::Failed as i32
                        } else {
                            OrchestrationStatus::Completed as i32
                        },
                        result: Some("\"done\"".into()),
                        ..Default::default()
                    },
                )),
                router: None,
            }]
        };
        let _ = client
            .complete_workflow_task(WorkflowResponse {
                instance_id: req.instance_id,
                actions,
                completion_token: item.completion_token,
                ..Default::default()
            })
            .await;
    }
}

#[tokio::test]
async fn purge_instances_by_filter_over_the_task_hub_api() {
    use dapr_workflow::proto::{
        CreateInstanceRequest, GetInstanceRequest, OrchestrationStatus, PurgeInstanceFilter,
        PurgeInstancesRequest, purge_instances_request,
        task_hub_sidecar_service_client::TaskHubSidecarServiceClient,
    };
    let d = DaprdBuilder::new("wf-purge").start().await;
    let mut client = TaskHubSidecarServiceClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    tokio::spawn(finishing_worker(client.clone()));
    let run = |id: &'static str, name: &'static str, input: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .start_instance(CreateInstanceRequest {
                    instance_id: id.into(),
                    name: name.into(),
                    input: Some(input.into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if name != "forever" {
                let done = client
                    .wait_for_instance_completion(GetInstanceRequest {
                        instance_id: id.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(done.exists, "{id}");
            }
        }
    };
    run("old-ok", "wf", "1").await;
    run("old-failed", "wf", "\"fail\"").await;
    run("running", "forever", "1").await;
    let cut = prost_types::Timestamp::from(std::time::SystemTime::now());
    run("new-ok", "wf", "1").await;
    run("new-failed", "wf", "\"fail\"").await;

    let purge = |filter: PurgeInstanceFilter| {
        let mut client = client.clone();
        async move {
            client
                .purge_instances(PurgeInstancesRequest {
                    request: Some(purge_instances_request::Request::PurgeInstanceFilter(
                        filter,
                    )),
                    recursive: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .deleted_instance_count
        }
    };
    let exists = |id: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .get_instance(GetInstanceRequest {
                    instance_id: id.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .exists
        }
    };
    // Failed ones created before the cut: only old-failed.
    let n = purge(PurgeInstanceFilter {
        created_time_to: Some(cut),
        runtime_status: vec![OrchestrationStatus::Failed as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(n, 1);
    assert!(!exists("old-failed").await);
    assert!(exists("old-ok").await && exists("new-failed").await);
    // Anything finished from the cut on.
    let n = purge(PurgeInstanceFilter {
        created_time_from: Some(cut),
        ..Default::default()
    })
    .await;
    assert_eq!(n, 2);
    assert!(!exists("new-ok").await && !exists("new-failed").await);
    // No bounds: what is left that finished; the running one stays.
    assert_eq!(purge(PurgeInstanceFilter::default()).await, 1);
    assert!(!exists("old-ok").await);
    assert!(exists("running").await);
    let page = client
        .list_instance_i_ds(dapr_workflow::proto::ListInstanceIDsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.instance_ids, vec!["running".to_owned()]);
}
