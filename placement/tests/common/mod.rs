//! Test harness: dapr-placement processes on 127.0.0.1 and simulated hosts.
#![allow(dead_code)]

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use dapr_placement_core::{
    ClientOptions, PlacementClient,
    proto::{Host, HostOperation, PlacementOrder, placement_client::PlacementClient as GrpcClient},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A port free right now, never handed out twice by this process.
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if let Ok(mut u) = used.lock()
            && u.insert(port)
        {
            return port;
        }
    }
    panic!("no free port found");
}

/// Minimal HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status: u16 = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Ports of one placement node.
#[derive(Debug, Clone)]
pub struct NodePorts {
    pub id: String,
    pub grpc: u16,
    pub raft: u16,
    pub healthz: u16,
    pub metrics: u16,
}

impl NodePorts {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            grpc: free_port(),
            raft: free_port(),
            healthz: free_port(),
            metrics: free_port(),
        }
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }
}

/// A running dapr-placement process.
pub struct Node {
    pub ports: NodePorts,
    pub child: Option<Child>,
    pub log: PathBuf,
    args: Vec<String>,
}

impl Node {
    /// Starts node `ports` of cluster `all` with extra flags.
    pub fn start(ports: &NodePorts, all: &[NodePorts], extra: &[String], log_dir: &Path) -> Self {
        let cluster = all
            .iter()
            .map(|p| format!("{}=127.0.0.1:{}", p.id, p.raft))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<String> = vec![
            "--id".into(),
            ports.id.clone(),
            "--initial-cluster".into(),
            cluster,
            "--port".into(),
            ports.grpc.to_string(),
            "--listen-address".into(),
            "127.0.0.1".into(),
            "--healthz-port".into(),
            ports.healthz.to_string(),
            "--healthz-listen-address".into(),
            "127.0.0.1".into(),
            "--metrics-port".into(),
            ports.metrics.to_string(),
            "--metrics-listen-address".into(),
            "127.0.0.1".into(),
            "--metadata-enabled".into(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.extend(extra.iter().cloned());
        let log = log_dir.join(format!("{}.log", ports.id));
        let mut node = Self {
            ports: ports.clone(),
            child: None,
            log,
            args,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = file.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dapr-placement"))
            .args(&self.args)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn dapr-placement");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts with the same flags (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn healthy(&self) -> bool {
        matches!(http_get(self.ports.healthz, "/healthz"), Some((200, _)))
    }

    /// `/placement/state` as JSON.
    pub fn state(&self) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.ports.healthz, "/placement/state")?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub fn metrics(&self) -> Option<String> {
        http_get(self.ports.metrics, "/metrics").map(|(_, b)| b)
    }

    pub fn print_log(&self) {
        if let Ok(s) = std::fs::read_to_string(&self.log) {
            let tail: Vec<&str> = s.lines().rev().take(60).collect();
            eprintln!("---- {} (last lines) ----", self.ports.id);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        self.kill();
    }
}

/// A cluster of `n` nodes (ids dapr-placement-0..n-1).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<NodePorts> = (0..n)
            .map(|i| NodePorts::new(&format!("dapr-placement-{i}")))
            .collect();
        let nodes = ports
            .iter()
            .map(|p| Node::start(p, &ports, extra, dir.path()))
            .collect();
        Self { nodes, dir }
    }

    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.ports.grpc_addr()).collect()
    }

    pub async fn wait_healthy(&self, timeout: Duration) -> TestResult {
        let deadline = Instant::now() + timeout;
        for n in &self.nodes {
            while !n.healthy() {
                if Instant::now() > deadline {
                    return Err(format!("{} not healthy", n.ports.id).into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Index of the node that accepts streams (probing each running node).
    pub async fn wait_leader(
        &self,
        timeout: Duration,
    ) -> Result<usize, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.is_running() && matches!(probe(&n.ports.grpc_addr()).await, Probe::Leader) {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                return Err("no leader elected".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Leader,
    NotLeader(String),
    Error(String),
}

/// Opens a ReportDaprStatus stream as a host without actors.
pub async fn probe(addr: &str) -> Probe {
    let Ok(mut c) = GrpcClient::connect(format!("http://{addr}")).await else {
        return Probe::Error("connect".into());
    };
    let (tx, rx) = mpsc::channel(4);
    let _ = tx
        .send(Host {
            name: "probe:0".into(),
            id: "probe".into(),
            namespace: "probe-ns".into(),
            operation: HostOperation::Report as i32,
            ..Default::default()
        })
        .await;
    let res = c.report_dapr_status(ReceiverStream::new(rx)).await;
    drop(tx);
    match res {
        Ok(_) => Probe::Leader,
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            Probe::NotLeader(s.message().to_owned())
        }
        Err(s) => Probe::Error(s.to_string()),
    }
}

/// A simulated daprd: a placement client with a fake internal address.
pub fn host(addresses: &[String], n: u16, namespace: &str, types: &[&str]) -> PlacementClient {
    let port = 40000 + n;
    let opts = ClientOptions::new(
        addresses.to_vec(),
        format!("127.0.0.1:{port}"),
        i64::from(port),
        format!("app-{n}"),
        namespace,
        types.iter().map(|t| t.to_string()).collect(),
    );
    PlacementClient::start(opts, None).expect("valid client options")
}

/// Waits until every client is ready with exactly `entries` table entries.
pub async fn wait_tables(
    clients: &[&PlacementClient],
    entries: usize,
    timeout: Duration,
) -> TestResult {
    for c in clients {
        c.wait_for(timeout, |s| {
            s.ready && s.phase == dapr_placement_core::Phase::Unlocked && s.table_entries == entries
        })
        .await
        .map_err(|e| format!("{e}; state {:?}", c.state()))?;
    }
    Ok(())
}

/// A raw stream for protocol-level tests.
pub struct RawStream {
    pub tx: mpsc::Sender<Host>,
    pub rx: tonic::Streaming<PlacementOrder>,
}

impl RawStream {
    pub async fn open(addr: &str, first: Host) -> Result<Self, Box<dyn std::error::Error>> {
        let mut c = GrpcClient::connect(format!("http://{addr}")).await?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await?;
        let rx = c
            .report_dapr_status(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    /// Next order within `timeout`.
    pub async fn next(
        &mut self,
        timeout: Duration,
    ) -> Result<PlacementOrder, Box<dyn std::error::Error>> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => Err("no order within timeout".into()),
            Ok(Err(s)) => Err(format!("stream error: {s}").into()),
            Ok(Ok(None)) => Err("stream closed".into()),
            Ok(Ok(Some(o))) => Ok(o),
        }
    }

    /// Next order whose tables (on update) contain `entries` entries: skips
    /// earlier rounds. Returns the lock/update/unlock triple of that round.
    pub async fn next_round(
        &mut self,
        ack: Option<&Host>,
        timeout: Duration,
    ) -> Result<[PlacementOrder; 3], Box<dyn std::error::Error>> {
        let lock = self.next(timeout).await?;
        if let Some(a) = ack {
            self.ack(a, HostOperation::Lock, lock.version).await?;
        }
        let update = self.next(timeout).await?;
        if let Some(a) = ack {
            self.ack(a, HostOperation::Update, update.version).await?;
        }
        let unlock = self.next(timeout).await?;
        if let Some(a) = ack {
            self.ack(a, HostOperation::Unlock, unlock.version).await?;
        }
        Ok([lock, update, unlock])
    }

    pub async fn ack(&self, base: &Host, op: HostOperation, version: u64) -> TestResult {
        let mut h = base.clone();
        h.operation = op as i32;
        h.version = Some(version);
        self.tx.send(h).await?;
        Ok(())
    }
}

/// Number of (type, host) entries in an order's tables.
pub fn entries(order: &PlacementOrder) -> usize {
    order
        .tables
        .as_ref()
        .map_or(0, |t| t.entries.values().map(|e| e.load_map.len()).sum())
}
