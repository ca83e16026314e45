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

// ---------- several replicas of one app ----------

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use dapr_workflow::proto::{
    ActivityResponse, CompleteWorkflowAction, CreateInstanceRequest, GetInstanceRequest,
    GetWorkItemsRequest, OrchestrationStatus, ScheduleTaskAction, WorkflowAction, WorkflowResponse,
    history_event::EventType, task_hub_sidecar_service_client::TaskHubSidecarServiceClient,
    work_item, workflow_action,
};

/// One `dapr-placement` node on loopback.
struct Placement {
    child: Child,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Placement {
    async fn start() -> Self {
        // DAPR_RS_PLACEMENT_BIN: another build of dapr-placement to use.
        let bin = std::env::var_os("DAPR_RS_PLACEMENT_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(DAPRD).with_file_name("dapr-placement"));
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-q", "-p", "dapr-placement"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "building dapr-placement failed");
        }
        let dir = tempfile::tempdir().unwrap();
        let (grpc, raft, healthz, metrics) = (free_port(), free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("placement.log")).unwrap();
        let child = Command::new(bin)
            .args([
                "--id",
                "p0",
                "--initial-cluster",
                &format!("p0=127.0.0.1:{raft}"),
            ])
            .args(["--port", &grpc.to_string(), "--listen-address", "127.0.0.1"])
            .args(["--healthz-port", &healthz.to_string()])
            .args(["--healthz-listen-address", "127.0.0.1"])
            .args(["--metrics-port", &metrics.to_string()])
            .args(["--metrics-listen-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dapr-placement");
        // Leader once the metrics say so.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("http://127.0.0.1:{metrics}/metrics");
            if let Ok(r) = request("GET", &url, None, &[]).await
                && r.text()
                    .lines()
                    .any(|l| l.trim() == "dapr_placement_leader_status 1")
            {
                break;
            }
            assert!(Instant::now() < deadline, "placement never became leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            grpc,
            _dir: dir,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres_actor_store(dir: &Path) {
    let conn = std::env::var("DAPR_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test".into());
    write_resource(
        dir,
        "actorstore.yaml",
        &component_yaml(
            "actorstore",
            "state.postgresql",
            &[("connectionString", &conn), ("actorStateStore", "true")],
        ),
    );
}

/// What the test workers did, in order.
#[derive(Debug, Clone)]
struct Done {
    worker: &'static str,
    instance: String,
    /// `None` for a workflow turn, the task id for an activity.
    task: Option<i32>,
    /// Set when an activity finished (its result was sent).
    finished: bool,
}

type Journal = Arc<Mutex<Vec<Done>>>;

type Client = TaskHubSidecarServiceClient<tonic::transport::Channel>;

/// The test's Durable Task worker. Workflows (input: a number n):
/// `noop` completes at once; `fan` runs activities 0..n in parallel and
/// completes with their results; `chain` runs them one after the other;
/// `waiter` completes with the input of its `go` event. The `work` activity
/// sleeps `delay` and answers `"<worker>:<input>"`.
async fn test_worker(name: &'static str, mut client: Client, journal: Journal, delay: Duration) {
    let Ok(stream) = client.get_work_items(GetWorkItemsRequest::default()).await else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(item)) = stream.message().await {
        let mut client = client.clone();
        let journal = journal.clone();
        let token = item.completion_token;
        match item.request {
            Some(work_item::Request::ActivityRequest(a)) => {
                let instance = a
                    .workflow_instance
                    .as_ref()
                    .map(|w| w.instance_id.clone())
                    .unwrap_or_default();
                journal.lock().unwrap().push(Done {
                    worker: name,
                    instance: instance.clone(),
                    task: Some(a.task_id),
                    finished: false,
                });
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let input = a.input.unwrap_or_default();
                    let sent = client
                        .complete_activity_task(ActivityResponse {
                            instance_id: instance.clone(),
                            task_id: a.task_id,
                            result: Some(format!("\"{name}:{input}\"")),
                            completion_token: token,
                            ..Default::default()
                        })
                        .await;
                    if sent.is_ok() {
                        journal.lock().unwrap().push(Done {
                            worker: name,
                            instance,
                            task: Some(a.task_id),
                            finished: true,
                        });
                    }
                });
            }
            Some(work_item::Request::WorkflowRequest(req)) => {
                journal.lock().unwrap().push(Done {
                    worker: name,
                    instance: req.instance_id.clone(),
                    task: None,
                    finished: false,
                });
                let actions = decide(&req);
                tokio::spawn(async move {
                    let _ = client
                        .complete_workflow_task(WorkflowResponse {
                            instance_id: req.instance_id,
                            actions,
                            completion_token: token,
                            ..Default::default()
                        })
                        .await;
                });
            }
            _ => {}
        }
    }
}

fn complete(result: String) -> WorkflowAction {
    WorkflowAction {
        id: 1000,
        workflow_action_type: Some(workflow_action::WorkflowActionType::CompleteWorkflow(
            CompleteWorkflowAction {
                workflow_status: OrchestrationStatus::Completed as i32,
                result: Some(result),
                ..Default::default()
            },
        )),
        router: None,
    }
}

fn schedule(task: i32) -> WorkflowAction {
    WorkflowAction {
        id: task,
        workflow_action_type: Some(workflow_action::WorkflowActionType::ScheduleTask(
            ScheduleTaskAction {
                name: "work".into(),
                input: Some(task.to_string()),
                ..Default::default()
            },
        )),
        router: None,
    }
}

/// The next actions of the test workflows, from their history.
fn decide(req: &dapr_workflow::proto::WorkflowRequest) -> Vec<WorkflowAction> {
    let events: Vec<_> = req.past_events.iter().chain(&req.new_events).collect();
    let mut name = String::new();
    let mut n = 0;
    let mut scheduled = HashSet::new();
    let mut results = BTreeMap::new();
    let mut go = None;
    for e in &events {
        match &e.event_type {
            Some(EventType::ExecutionStarted(s)) => {
                name = s.name.clone();
                n = s.input.as_deref().and_then(|i| i.parse().ok()).unwrap_or(0);
            }
            Some(EventType::TaskScheduled(_)) => {
                scheduled.insert(e.event_id);
            }
            Some(EventType::TaskCompleted(c)) => {
                results.insert(c.task_scheduled_id, c.result.clone().unwrap_or_default());
            }
            Some(EventType::EventRaised(r)) if r.name == "go" => go = r.input.clone(),
            _ => {}
        }
    }
    let all = || {
        format!(
            "[{}]",
            results.values().cloned().collect::<Vec<_>>().join(",")
        )
    };
    match name.as_str() {
        "noop" => vec![complete("\"ok\"".into())],
        "fan" if scheduled.is_empty() => (0..n).map(schedule).collect(),
        "fan" | "chain" if results.len() == n as usize => vec![complete(all())],
        "chain" => {
            let next = results.len() as i32;
            if scheduled.contains(&next) {
                Vec::new()
            } else {
                vec![schedule(next)]
            }
        }
        "waiter" => go.map(complete).into_iter().collect(),
        _ => Vec::new(),
    }
}

struct Replica {
    daprd: Daprd,
    client: Client,
    name: &'static str,
}

async fn start_replica(
    app_id: &str,
    name: &'static str,
    placement: &Placement,
    resources: &Path,
    journal: &Journal,
    delay: Duration,
) -> Replica {
    let daprd = DaprdBuilder::new(app_id)
        .resources(resources)
        .arg("--placement-host-address")
        .arg(placement.address())
        .start()
        .await;
    let client = TaskHubSidecarServiceClient::connect(daprd.grpc_endpoint())
        .await
        .unwrap();
    tokio::spawn(test_worker(name, client.clone(), journal.clone(), delay));
    Replica {
        daprd,
        client,
        name,
    }
}

/// Which worker ran the instance's turns (its owner's).
fn turn_workers(journal: &Journal, instance: &str) -> HashSet<&'static str> {
    journal
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.instance == instance && d.task.is_none())
        .map(|d| d.worker)
        .collect()
}

/// Starts `noop` workflows through `via` until both replicas have run
/// turns: placement has put both in its tables.
async fn wait_both_own(via: &Replica, journal: &Journal, a: &Replica, b: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut client = via.client.clone();
    let mut seen = HashSet::new();
    let mut i = 0;
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "both replicas never owned workflows ({seen:?})\n--- A ---\n{}\n--- B ---\n{}",
            a.daprd.logs(),
            b.daprd.logs()
        );
        i += 1;
        let id = format!("warm-{i}");
        let started = client
            .start_instance(CreateInstanceRequest {
                instance_id: id.clone(),
                name: "noop".into(),
                ..Default::default()
            })
            .await;
        if started.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let _ = client
            .wait_for_instance_completion(GetInstanceRequest {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await;
        seen.extend(turn_workers(journal, &id));
    }
}

async fn wait_completed(
    client: &mut Client,
    id: &str,
    logs: &[&Daprd],
) -> dapr_workflow::proto::WorkflowState {
    let logs = || {
        logs.iter()
            .map(|d| format!("--- daprd ---\n{}", d.logs()))
            .collect::<String>()
    };
    let r = tokio::time::timeout(
        Duration::from_secs(90),
        client.wait_for_instance_completion(GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} did not complete in time\n{}", logs()))
    .unwrap_or_else(|e| panic!("waiting for {id}: {e}\n{}", logs()))
    .into_inner();
    assert!(r.exists, "{id} is missing");
    r.workflow_state.unwrap()
}

async fn status_via(d: &Daprd, id: &str) -> serde_json::Value {
    http("GET", &d.url(&format!("/v1.0/workflows/dapr/{id}")), "")
        .await
        .json()
}

/// Two daprd of one app on a shared PostgreSQL actor store and a real
/// placement: instances started through either run on their owner,
/// activities are spread over both replicas' workers and each result is
/// recorded once, and every management call works through the non-owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_spread_over_two_replicas() {
    let placement = Placement::start().await;
    let res = tempfile::tempdir().unwrap();
    postgres_actor_store(res.path());
    let app_id = format!("wf-replicas-{}", uuid::Uuid::new_v4().simple());
    let journal: Journal = Arc::default();
    let delay = Duration::from_millis(20);
    let a = start_replica(&app_id, "A", &placement, res.path(), &journal, delay).await;
    let b = start_replica(&app_id, "B", &placement, res.path(), &journal, delay).await;
    wait_both_own(&a, &journal, &a, &b).await;

    // Fan-out workflows, started alternately through A and B, each awaited
    // through the other sidecar.
    let ids: Vec<String> = (0..10).map(|i| format!("fan-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        via.client
            .clone()
            .start_instance(CreateInstanceRequest {
                instance_id: id.clone(),
                name: "fan".into(),
                input: Some("4".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let other = if i % 2 == 0 { &b } else { &a };
        let state = wait_completed(&mut other.client.clone(), id, &[&a.daprd, &b.daprd]).await;
        assert_eq!(
            state.workflow_status,
            OrchestrationStatus::Completed as i32,
            "{id}: {state:?}"
        );
        let out: Vec<String> = serde_json::from_str(state.output.as_deref().unwrap()).unwrap();
        assert_eq!(out.len(), 4, "{id}: {out:?}");
        for (t, r) in out.iter().enumerate() {
            assert!(
                r == &format!("A:{t}") || r == &format!("B:{t}"),
                "{id} task {t}: {r}"
            );
        }
        // Status through both sidecars agrees.
        for d in [&a.daprd, &b.daprd] {
            let j = status_via(d, id).await;
            assert_eq!(j["runtimeStatus"], "COMPLETED", "{id}: {j}");
            assert_eq!(
                j["properties"]["dapr.workflow.output"],
                state.output.clone().unwrap()
            );
        }
        // One owner ran every turn.
        assert_eq!(turn_workers(&journal, id).len(), 1, "{id}");
    }
    {
        let j = journal.lock().unwrap();
        let mut runs: HashMap<(String, i32), usize> = HashMap::new();
        let mut workers = HashSet::new();
        for d in j.iter().filter(|d| ids.contains(&d.instance)) {
            if let (Some(t), false) = (d.task, d.finished) {
                *runs.entry((d.instance.clone(), t)).or_default() += 1;
                workers.insert(d.worker);
            }
        }
        assert_eq!(runs.len(), 40, "{runs:?}");
        assert!(
            runs.values().all(|n| *n == 1),
            "an activity ran twice: {runs:?}"
        );
        assert_eq!(workers.len(), 2, "activities ran only on {workers:?}");
    }

    // Management through the non-owner: suspend, resume, raise, status, purge.
    for i in 0..4 {
        let id = format!("waiter-{i}");
        a.client
            .clone()
            .start_instance(CreateInstanceRequest {
                instance_id: id.clone(),
                name: "waiter".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let owner = loop {
            let w = turn_workers(&journal, &id);
            if let Some(w) = w.into_iter().next() {
                break w;
            }
            assert!(Instant::now() < deadline, "{id} never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (owner, other) = if owner == a.name { (&a, &b) } else { (&b, &a) };
        let path = |op: &str| other.daprd.url(&format!("/v1.0/workflows/dapr/{id}/{op}"));
        let r = http("POST", &path("pause"), "").await;
        assert_eq!(r.status, 202, "{}", r.text());
        for d in [&owner.daprd, &other.daprd] {
            assert_eq!(status_via(d, &id).await["runtimeStatus"], "SUSPENDED");
        }
        let r = http("POST", &path("resume"), "").await;
        assert_eq!(r.status, 202, "{}", r.text());
        let r = http("POST", &path("raiseEvent/go"), &format!("\"v{i}\"")).await;
        assert_eq!(r.status, 202, "{}", r.text());
        let state = wait_completed(&mut other.client.clone(), &id, &[&a.daprd, &b.daprd]).await;
        assert_eq!(state.output.as_deref(), Some(format!("\"v{i}\"").as_str()));
        assert_eq!(
            status_via(&owner.daprd, &id).await["properties"]["dapr.workflow.output"],
            format!("\"v{i}\"")
        );
        let r = http("POST", &path("purge"), "").await;
        assert_eq!(r.status, 202, "{}", r.text());
        for d in [&owner.daprd, &other.daprd] {
            let r = http("GET", &d.url(&format!("/v1.0/workflows/dapr/{id}")), "").await;
            assert_eq!(r.status, 404, "{id} after purge: {}", r.text());
        }
    }
    // Errors keep Dapr's codes across the hop.
    let r = http(
        "POST",
        &a.daprd.url("/v1.0/workflows/dapr/nope-123/raiseEvent/go"),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_INSTANCE_ID_NOT_FOUND");
    drop(placement);
}

/// SIGKILL of one replica while its workflows are running: after placement
/// drops it, the other replica takes its instances over from the store and
/// finishes them; no activity whose result was recorded runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_workflows_finish_on_the_other() {
    let placement = Placement::start().await;
    let res = tempfile::tempdir().unwrap();
    postgres_actor_store(res.path());
    let app_id = format!("wf-takeover-{}", uuid::Uuid::new_v4().simple());
    let journal: Journal = Arc::default();
    let delay = Duration::from_millis(400);
    let a = start_replica(&app_id, "A", &placement, res.path(), &journal, delay).await;
    let mut b = start_replica(&app_id, "B", &placement, res.path(), &journal, delay).await;
    wait_both_own(&a, &journal, &a, &b).await;

    let ids: Vec<String> = (0..12).map(|i| format!("chain-{i}")).collect();
    for id in &ids {
        a.client
            .clone()
            .start_instance(CreateInstanceRequest {
                instance_id: id.clone(),
                name: "chain".into(),
                input: Some("5".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Kill B once every instance has a recorded activity (task 1 started).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started: HashSet<String> = journal
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.task == Some(1) && !d.finished)
            .map(|d| d.instance.clone())
            .collect();
        if ids.iter().all(|i| started.contains(i)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chains did not progress: {started:?}\n--- A ---\n{}\n--- B ---\n{}",
            a.daprd.logs(),
            b.daprd.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owned_by_b: Vec<String> = ids
        .iter()
        .filter(|id| turn_workers(&journal, id).contains("B"))
        .cloned()
        .collect();
    assert!(!owned_by_b.is_empty(), "B owned none of the chains");
    let child = b.daprd.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // What had started before the kill, per instance.
    let before: Vec<Done> = journal.lock().unwrap().clone();

    let mut client = a.client.clone();
    for id in &ids {
        let state = wait_completed(&mut client, id, &[&a.daprd]).await;
        assert_eq!(
            state.workflow_status,
            OrchestrationStatus::Completed as i32,
            "{id}: {state:?}\n--- A ---\n{}",
            a.daprd.logs()
        );
        let out: Vec<String> = serde_json::from_str(state.output.as_deref().unwrap()).unwrap();
        assert_eq!(out.len(), 5, "{id}: {out:?}");
        for (t, r) in out.iter().enumerate() {
            assert!(r.ends_with(&format!(":{t}")), "{id} task {t}: {r}");
        }
    }
    let j = journal.lock().unwrap();
    for id in &ids {
        // A chain's task k+1 starts only once k's result is recorded, so
        // every task below the highest one started before the kill was
        // recorded and must not run again; the ones in flight may, once.
        let highest = before
            .iter()
            .filter(|d| &d.instance == id && !d.finished)
            .filter_map(|d| d.task)
            .max()
            .unwrap_or(0);
        for t in 0..5 {
            let runs = j
                .iter()
                .filter(|d| &d.instance == id && d.task == Some(t) && !d.finished)
                .count();
            if t < highest {
                assert_eq!(
                    runs, 1,
                    "{id} task {t} (recorded before the kill) ran {runs} times"
                );
            } else {
                assert!((1..=2).contains(&runs), "{id} task {t} ran {runs} times");
            }
        }
        // After the kill only A runs its turns.
        let later_turns: HashSet<&str> = j[before.len()..]
            .iter()
            .filter(|d| &d.instance == id && d.task.is_none())
            .map(|d| d.worker)
            .collect();
        assert!(
            later_turns.iter().all(|w| *w == "A"),
            "{id}: {later_turns:?}"
        );
    }
    println!(
        "B owned {} of {} chains at the kill; all finished on A",
        owned_by_b.len(),
        ids.len()
    );
    drop(placement);
}

/// The Python SDK's `WorkflowRuntime` as the worker of two replicas: fan-out
/// workflows started through either sidecar run their activities on both
/// workers, status and external events work through both sidecars.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_workers_on_two_replicas() {
    let placement = Placement::start().await;
    let res = tempfile::tempdir().unwrap();
    postgres_actor_store(res.path());
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let app_id = format!("wf-py-replicas-{}", uuid::Uuid::new_v4().simple());
    let mut sidecars = Vec::new();
    let mut workers = Vec::new();
    for name in ["A", "B"] {
        let d = DaprdBuilder::new(&app_id)
            .resources(res.path())
            .arg("--placement-host-address")
            .arg(placement.address())
            .start()
            .await;
        workers.push(KillOnDrop(
            Command::new("python3")
                .args(["-W", "ignore"])
                .arg(format!("{ROOT}/e2e/python/workflow_replica_worker.py"))
                .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
                .env("DAPR_HTTP_PORT", d.http_port.to_string())
                .env("STEP_LOG", &steps)
                .env("WORKER", name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3"),
        ));
        sidecars.push(d);
    }
    let logs = || {
        format!(
            "--- steps ---\n{}\n--- A ---\n{}\n--- B ---\n{}",
            std::fs::read_to_string(&steps).unwrap_or_default(),
            sidecars[0].logs(),
            sidecars[1].logs()
        )
    };
    for name in ["A", "B"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&steps)
            .unwrap_or_default()
            .lines()
            .any(|l| l == format!("worker ready {name}"))
        {
            assert!(
                Instant::now() < deadline,
                "worker {name} never started\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let status = |d: &Daprd, id: String| {
        let url = d.url(&format!("/v1.0/workflows/dapr/{id}"));
        async move { http("GET", &url, "").await.json() }
    };
    let (sidecars_ref, status_ref, logs_ref) = (&sidecars, &status, &logs);
    let finished = |id: String| async move {
        let (sidecars, status, logs) = (sidecars_ref, status_ref, logs_ref);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = status(&sidecars[1], id.clone()).await;
            if j["runtimeStatus"] == "COMPLETED" {
                return j;
            }
            assert!(
                Instant::now() < deadline && j["runtimeStatus"] != "FAILED",
                "{id}: {j}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Fan-outs started through A and B in turn, until both workers ran
    // activities (placement has both replicas in its tables by then).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    loop {
        round += 1;
        let ids: Vec<String> = (0..4).map(|i| format!("fan-{round}-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let d = &sidecars[i % 2];
            let r = http(
                "POST",
                &d.url(&format!("/v1.0/workflows/dapr/fan/start?instanceID={id}")),
                "6",
            )
            .await;
            assert_eq!(r.status, 202, "{}\n{}", r.text(), logs());
        }
        for id in &ids {
            let j = finished(id.clone()).await;
            let out: Vec<String> =
                serde_json::from_str(j["properties"]["dapr.workflow.output"].as_str().unwrap())
                    .unwrap();
            assert_eq!(out.len(), 6, "{id}: {out:?}");
            assert!(out.iter().all(|w| w == "A" || w == "B"), "{out:?}");
            assert_eq!(
                status(&sidecars[0], id.clone()).await["runtimeStatus"],
                "COMPLETED"
            );
        }
        let ran: HashSet<String> = std::fs::read_to_string(&steps)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("fan-"))
            .filter_map(|l| l.split(' ').nth(2).map(str::to_owned))
            .collect();
        if ran.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "activities only ever ran on {ran:?}\n{}",
            logs()
        );
    }
    // External events and status through both sidecars.
    for i in 0..4 {
        let id = format!("waiter-{i}");
        let (start, other) = (&sidecars[i % 2], &sidecars[(i + 1) % 2]);
        let r = http(
            "POST",
            &start.url(&format!(
                "/v1.0/workflows/dapr/waiter/start?instanceID={id}"
            )),
            "",
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let r = http(
            "POST",
            &other.url(&format!("/v1.0/workflows/dapr/{id}/raiseEvent/go")),
            &format!("\"v{i}\""),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let j = finished(id.clone()).await;
        assert_eq!(j["properties"]["dapr.workflow.output"], format!("\"v{i}\""));
    }
    drop(workers);
    drop(placement);
}
