//! `bench workflow`: workflows completed per second through daprd's
//! workflow engine, each a chain of three activities, with 1, 10 and 100
//! concurrent starters; start-to-completion latency percentiles and the
//! sidecar's memory.
//!
//! The worker is a minimal Durable Task worker written here against the
//! same gRPC protocol the SDKs use (no replay framework: the chain's next
//! step follows from counting completed activities), so the figures are
//! the sidecar's engine and its SQLite store, not an SDK's interpreter.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use dapr_workflow::proto::{
    ActivityResponse, CompleteWorkflowAction, CreateInstanceRequest, GetInstanceRequest,
    GetWorkItemsRequest, OrchestrationStatus, ScheduleTaskAction, WorkflowAction, WorkflowRequest,
    WorkflowResponse, history_event::EventType,
    task_hub_sidecar_service_client::TaskHubSidecarServiceClient, work_item, workflow_action,
};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::{
    daprd::{Daprd, Launch},
    procfs,
};

#[derive(Debug, Clone, Args)]
pub struct WorkflowArgs {
    /// The daprd binary to start.
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Workflows completed per concurrency level.
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Concurrent starters, one measured phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub concurrency: Vec<usize>,
}

const ACTIVITIES: usize = 3;

type Client = TaskHubSidecarServiceClient<Channel>;

/// Answers one orchestrator turn of the three-step chain.
fn decide(req: &WorkflowRequest) -> Vec<WorkflowAction> {
    let events = req.past_events.iter().chain(req.new_events.iter());
    let (mut scheduled, mut done, mut last) = (0usize, 0usize, String::from("0"));
    for e in events {
        match &e.event_type {
            Some(EventType::TaskScheduled(_)) => scheduled += 1,
            Some(EventType::TaskCompleted(c)) => {
                done += 1;
                last = c.result.clone().unwrap_or_default();
            }
            Some(EventType::ExecutionStarted(s)) if done == 0 => {
                last = s.input.clone().unwrap_or_else(|| "0".into());
            }
            _ => {}
        }
    }
    if done < scheduled {
        return Vec::new();
    }
    let id = i32::try_from(done + 1).unwrap_or(i32::MAX);
    let kind = if done < ACTIVITIES {
        workflow_action::WorkflowActionType::ScheduleTask(ScheduleTaskAction {
            name: "step".into(),
            input: Some(last),
            ..Default::default()
        })
    } else {
        workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some(last),
            ..Default::default()
        })
    };
    vec![WorkflowAction {
        id,
        workflow_action_type: Some(kind),
        router: None,
    }]
}

/// Runs the worker until the stream ends.
async fn worker(client: Client) -> anyhow::Result<()> {
    let mut stream = client
        .clone()
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .context("GetWorkItems")?
        .into_inner();
    while let Some(item) = stream.message().await.context("work item stream")? {
        let mut client = client.clone();
        let token = item.completion_token;
        match item.request {
            Some(work_item::Request::WorkflowRequest(req)) => {
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
            Some(work_item::Request::ActivityRequest(req)) => {
                let n: i64 = req.input.as_deref().unwrap_or("0").parse().unwrap_or(0);
                let instance_id = req
                    .workflow_instance
                    .map(|w| w.instance_id)
                    .unwrap_or_default();
                tokio::spawn(async move {
                    let _ = client
                        .complete_activity_task(ActivityResponse {
                            instance_id,
                            task_id: req.task_id,
                            result: Some((n + 1).to_string()),
                            completion_token: token,
                            ..Default::default()
                        })
                        .await;
                });
            }
            _ => {}
        }
    }
    Ok(())
}

struct Phase {
    concurrency: usize,
    completed: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
    rss_mib: f64,
    /// daprd's CPU time (user + system) over the phase.
    daprd_cpu: Option<Duration>,
}

async fn phase(
    client: &Client,
    concurrency: usize,
    total: usize,
    pid: u32,
    run: &str,
) -> anyhow::Result<Phase> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = procfs::cpu_time(Some(pid));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let next = next.clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(hist);
                }
                let t0 = Instant::now();
                let id = client
                    .start_instance(CreateInstanceRequest {
                        instance_id: format!("b{run}-{concurrency}-{i}"),
                        name: "chain3".into(),
                        input: Some("0".into()),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .instance_id;
                let done = client
                    .wait_for_instance_completion(GetInstanceRequest {
                        instance_id: id.clone(),
                        get_inputs_and_outputs: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let state = done.workflow_state.context("instance vanished")?;
                if state.workflow_status != OrchestrationStatus::Completed as i32
                    || state.output.as_deref() != Some("3")
                {
                    bail!("workflow {id} ended as {state:?}");
                }
                hist.record(t0.elapsed().as_micros() as u64)?;
            }
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = started.elapsed();
    let daprd_cpu = procfs::cpu_time(Some(pid))
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let rss_mib = procfs::memory(pid).map_or(0.0, |m| procfs::mib(m.rss));
    Ok(Phase {
        concurrency,
        completed: total,
        elapsed,
        latency,
        rss_mib,
        daprd_cpu,
    })
}

/// The 1-minute load average: the machine may be shared, and these figures
/// depend on it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

pub async fn run(args: WorkflowArgs) -> anyhow::Result<()> {
    if args.workflows == 0 || args.concurrency.iter().any(|&c| c == 0 || c > 10_000) {
        bail!("--workflows must be > 0 and each --concurrency in [1, 10000]");
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("daprd.log");
    let data = dir.path().join("data");
    let (mut daprd, since) = Daprd::spawn(&Launch {
        bin: &args.daprd,
        app_id: "bench-workflow",
        data_dir: &data,
        resources_path: None,
        log: &log,
        extra_args: &["--log-level".to_owned(), "warn".to_owned()],
    })?;
    daprd.wait_ready(since, Duration::from_millis(5), Duration::from_secs(20))?;
    let pid = daprd.pid();
    let idle = procfs::memory(pid).map_or(0.0, |m| procfs::mib(m.rss));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", daprd.grpc_port))?
        .connect()
        .await
        .context("connecting to daprd's gRPC port")?;
    let client = TaskHubSidecarServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let worker_task = tokio::spawn(worker(client.clone()));
    let run_id = format!("{}", std::process::id());

    // Warm-up: the SQLite file, connection pools and the worker stream.
    phase(&client, 4, 50, pid, &format!("{run_id}w")).await?;

    println!(
        "bench workflow: 3-activity chains through daprd ({}), embedded SQLite state store",
        args.daprd.display()
    );
    println!(
        "daprd idle RSS {idle:.1} MiB; load average {}",
        load_average()
    );
    println!(
        "| starters | workflows | workflows/s | p50 start→done | p90 | p99 | daprd CPU per workflow | daprd RSS after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &c in &args.concurrency {
        let p = phase(&client, c, args.workflows, pid, &run_id).await?;
        let rate = p.completed as f64 / p.elapsed.as_secs_f64();
        let ms = |q: f64| p.latency.value_at_quantile(q) as f64 / 1000.0;
        let cpu = p.daprd_cpu.map_or_else(
            || "?".to_owned(),
            |c| format!("{:.2} ms", c.as_secs_f64() * 1000.0 / p.completed as f64),
        );
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {cpu} | {:.1} MiB |",
            p.concurrency,
            p.completed,
            rate,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            p.rss_mib
        );
    }
    println!(
        "(Dapr 1.17 publishes ~98 workflows/s with 110 parallel starters; target here ≥ 1000/s; load average now {})",
        load_average()
    );
    worker_task.abort();
    daprd.stop()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dapr_workflow::proto::{
        ExecutionStartedEvent, HistoryEvent, TaskCompletedEvent, TaskScheduledEvent,
    };

    fn ev(t: EventType) -> HistoryEvent {
        HistoryEvent {
            event_type: Some(t),
            ..Default::default()
        }
    }

    #[test]
    fn the_chain_schedules_three_steps_then_completes_with_the_last_result() {
        let mut req = WorkflowRequest {
            new_events: vec![ev(EventType::ExecutionStarted(ExecutionStartedEvent {
                input: Some("0".into()),
                ..Default::default()
            }))],
            ..Default::default()
        };
        for step in 1..=3 {
            let actions = decide(&req);
            assert_eq!(actions.len(), 1);
            assert!(matches!(
                actions[0].workflow_action_type,
                Some(workflow_action::WorkflowActionType::ScheduleTask(_))
            ));
            req.past_events
                .push(ev(EventType::TaskScheduled(TaskScheduledEvent::default())));
            // Waiting for the result: nothing to do.
            assert!(decide(&req).is_empty());
            req.past_events
                .push(ev(EventType::TaskCompleted(TaskCompletedEvent {
                    result: Some(step.to_string()),
                    ..Default::default()
                })));
        }
        match &decide(&req)[0].workflow_action_type {
            Some(workflow_action::WorkflowActionType::CompleteWorkflow(c)) => {
                assert_eq!(c.result.as_deref(), Some("3"));
            }
            other => panic!("expected completion, got {other:?}"),
        }
    }
}
