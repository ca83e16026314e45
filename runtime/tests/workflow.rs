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
