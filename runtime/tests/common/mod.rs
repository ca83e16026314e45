//! Test harness: starts the real `daprd` binary on free loopback ports and
//! talks to it over HTTP and gRPC.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

pub mod brokers;

pub const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

pub struct Daprd {
    pub child: Option<Child>,
    pub http_port: u16,
    pub grpc_port: u16,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

pub struct DaprdBuilder {
    args: Vec<String>,
    env: HashMap<String, String>,
    app_id: String,
    wait_ready: bool,
}

impl DaprdBuilder {
    pub fn new(app_id: &str) -> Self {
        Self {
            args: Vec::new(),
            env: HashMap::new(),
            app_id: app_id.to_owned(),
            wait_ready: true,
        }
    }

    pub fn resources(mut self, dir: &Path) -> Self {
        self.args.push("--resources-path".into());
        self.args.push(dir.display().to_string());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Starts daprd on free ports. A port picked free can be taken by
    /// another test before daprd binds it; such a start is retried.
    pub async fn start(self) -> Daprd {
        for attempt in 1..=5 {
            let mut d = self.spawn();
            if !self.wait_ready {
                return d;
            }
            match d.try_wait_ready().await {
                Ok(()) => return d,
                Err(logs) if attempt < 5 && logs.contains("cannot listen on") => continue,
                Err(logs) => panic!("daprd did not become ready:\n{logs}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    fn spawn(&self) -> Daprd {
        let http_port = free_port();
        let grpc_port = free_port();
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("daprd.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "--data-dir") {
            // Keep each sidecar's embedded data and name registry private to the test.
            args.push("--data-dir".into());
            args.push(logdir.path().join("data").display().to_string());
        }
        let child = Command::new(DAPRD)
            .args([
                "--app-id",
                &self.app_id,
                "--dapr-http-port",
                &http_port.to_string(),
                "--dapr-grpc-port",
                &grpc_port.to_string(),
                "--dapr-listen-addresses",
                "127.0.0.1",
                "--log-level",
                "debug",
            ])
            .args(&args)
            // Only what the test sets: never a token from the outer environment.
            .env_remove("DAPR_API_TOKEN")
            .env_remove("NAMESPACE")
            .envs(&self.env)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn daprd");
        Daprd {
            child: Some(child),
            http_port,
            grpc_port,
            log,
            _logdir: logdir,
        }
    }
}

impl Daprd {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&mut self) {
        if let Err(logs) = self.try_wait_ready().await {
            panic!("daprd did not become ready:\n{logs}");
        }
    }

    /// Waits for healthz; on an early exit or timeout returns the logs.
    pub async fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "daprd exited early with {status}:\n{}",
                    self.logs()
                ));
            }
            if let Ok(r) = request("GET", &self.url("/v1.0/healthz"), None, &[]).await
                && r.status == 204
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("daprd not ready after 20 s:\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_exit(&mut child, Duration::from_secs(15))
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        wait_exit(&mut child, timeout)
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daprd did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts Dapr's error shape and returns the error code.
    pub fn error_code(&self) -> String {
        let j = self.json();
        assert!(j["message"].is_string(), "no message in {j}");
        j["errorCode"]
            .as_str()
            .unwrap_or_else(|| panic!("no errorCode in {j}"))
            .to_owned()
    }
}

pub async fn request(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn http(method: &str, url: &str, body: &str) -> Reply {
    let body = if body.is_empty() {
        None
    } else {
        Some(body.as_bytes().to_vec())
    };
    request(method, url, body, &[]).await.expect("HTTP request")
}

/// Writes a resource file into `dir`.
pub fn write_resource(dir: &Path, file: &str, yaml: &str) {
    std::fs::write(dir.join(file), yaml).expect("write resource");
}

pub fn component_yaml(name: &str, type_: &str, metadata: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  version: v1\n  metadata:"
    );
    if metadata.is_empty() {
        out.push_str(" []\n");
    } else {
        out.push('\n');
    }
    for (k, v) in metadata {
        out.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    out
}

/// Redis address for tests (started by scripts/test-services.sh).
pub fn redis_addr() -> String {
    std::env::var("DAPR_RS_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:16379".into())
}
