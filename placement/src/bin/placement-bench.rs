//! placement-bench: dissemination time and placement memory with N simulated
//! sidecars, all on 127.0.0.1.
//!
//! For each N (default 10, 100, 1000) it starts a fresh single-node
//! `dapr-placement` (the binary next to this one), then starts N placement
//! clients at once (each its own HTTP/2 connection, one actor type) and
//! measures, from the start of the burst, when every client holds the final
//! table (all N hosts, unlocked). It then measures one more host joining
//! (incremental round to N+1 sidecars) and one leaving, and reads the
//! placement process's RSS from /proc.
//!
//! Usage: placement-bench [--hosts 10,100,1000] [--light] [--placement PATH] [--timeout-secs 60]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use dapr_placement_core::{ClientOptions, Phase, PlacementClient, VirtualNodesCache};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    hosts: Vec<usize>,
    /// Diagnostic: only open this many idle HTTP/2 connections.
    idle_connections: Option<usize>,
    /// Also run with lightweight hosts that acknowledge without decoding
    /// the tables (isolates placement from the hosts' decode CPU).
    light: bool,
    placement: PathBuf,
    timeout: Duration,
}

fn parse_args() -> BenchResult<Args> {
    let mut hosts = vec![10, 100, 1000];
    let mut placement = std::env::current_exe()?.with_file_name("dapr-placement");
    let mut timeout = Duration::from_secs(60);
    let mut idle_connections = None;
    let mut light = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hosts" => {
                let v = it.next().ok_or("--hosts needs a value")?;
                hosts = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            "--light" => light = true,
            "--idle-connections" => {
                idle_connections = Some(
                    it.next()
                        .ok_or("--idle-connections needs a value")?
                        .parse()?,
                );
            }
            "--placement" => {
                placement = PathBuf::from(it.next().ok_or("--placement needs a value")?)
            }
            "--timeout-secs" => {
                timeout =
                    Duration::from_secs(it.next().ok_or("--timeout-secs needs a value")?.parse()?);
            }
            "-h" | "--help" => {
                println!(
                    "placement-bench [--hosts 10,100,1000] [--light] [--placement PATH] [--timeout-secs 60]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if hosts.iter().any(|n| *n == 0 || *n > 5000) {
        return Err("host counts must be within 1..=5000".into());
    }
    Ok(Args {
        hosts,
        idle_connections,
        light,
        placement,
        timeout,
    })
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Anonymous vs file-backed (the binary's own code pages) resident memory.
fn rss_split(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| -> f64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    format!(
        "RssAnon {:.1} MiB, RssFile {:.1} MiB",
        kib("RssAnon:") / 1024.0,
        kib("RssFile:") / 1024.0
    )
}

/// CPU time (user + system) of a process, in milliseconds (USER_HZ = 100).
fn cpu_ms(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// (elapsed, update phase) in ms of the last logged round with `hosts` hosts.
fn server_round(log: &std::path::Path, hosts: usize) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(log).ok()?;
    let needle = format!(" hosts={hosts} ");
    let line = s
        .lines()
        .rev()
        .find(|l| l.contains("tables disseminated") && l.contains(&needle))?;
    let field = |name: &str| -> Option<f64> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        line[start..].split_whitespace().next()?.parse().ok()
    };
    Some((field("elapsed_ms")?, field("update_ms")?))
}

fn fd_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

struct Placement {
    child: Child,
    grpc: u16,
    healthz: u16,
}

impl Placement {
    fn start(bin: &PathBuf, log: &std::path::Path) -> BenchResult<Self> {
        let (grpc, healthz, metrics, raft) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .args([
                "--id",
                "dapr-placement-0",
                "--initial-cluster",
                &format!("dapr-placement-0=127.0.0.1:{raft}"),
                "--port",
                &grpc.to_string(),
                "--listen-address",
                "127.0.0.1",
                "--healthz-port",
                &healthz.to_string(),
                "--healthz-listen-address",
                "127.0.0.1",
                "--metrics-port",
                &metrics.to_string(),
                "--metrics-listen-address",
                "127.0.0.1",
                "--log-level",
                "info",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Self {
            child,
            grpc,
            healthz,
        })
    }

    fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.healthz)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        // SIGTERM first (lets profilers wrapping the binary flush), then kill.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(addr: &str, i: usize, cache: &Arc<VirtualNodesCache>) -> BenchResult<PlacementClient> {
    let port = 20000 + i;
    let opts = ClientOptions::new(
        vec![addr.to_owned()],
        format!("127.0.0.1:{port}"),
        i64::try_from(port)?,
        format!("bench-app-{}", i % 50),
        "bench",
        vec!["BenchActor".to_owned()],
    );
    Ok(PlacementClient::start(opts, Some(cache.clone()))?)
}

/// Waits until every client is ready with `entries` entries; returns the
/// time each one got there, measured from `t0`.
async fn wait_all(
    clients: &[PlacementClient],
    entries: usize,
    t0: Instant,
    timeout: Duration,
) -> BenchResult<Vec<Duration>> {
    let mut tasks = Vec::with_capacity(clients.len());
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.wait_for(timeout, |s| {
                s.ready && s.phase == Phase::Unlocked && s.table_entries == entries
            })
            .await
            .map(|_| t0.elapsed())
            .map_err(|e| format!("{e}: {:?}", c.state()))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    out.sort();
    Ok(out)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    n: usize,
    burst_all: Duration,
    burst_p50: Duration,
    join_one: Duration,
    leave_one: Duration,
    rss_idle: u64,
    rss_after: u64,
    hwm: u64,
    rounds: usize,
    /// Server-side duration of the final burst round and of its update phase.
    server_round: (f64, f64),
    /// CPU used during the burst by placement and by the simulated hosts.
    placement_cpu_ms: u64,
    clients_cpu_ms: u64,
}

fn count_rounds(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("tables disseminated"))
                .count()
        })
        .unwrap_or(0)
}

async fn run_one(args: &Args, n: usize, dir: &std::path::Path) -> BenchResult<Row> {
    let log = dir.join(format!("placement-{n}.log"));
    let placement = Placement::start(&args.placement, &log)?;
    let pid = placement.child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !placement.healthy() {
        if Instant::now() > deadline {
            return Err("placement did not become healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = format!("127.0.0.1:{}", placement.grpc);
    // Wait for leadership with a probe client.
    let cache = Arc::new(VirtualNodesCache::new());
    let probe = PlacementClient::start(
        ClientOptions::new(
            vec![addr.clone()],
            "127.0.0.1:1",
            1,
            "probe",
            "probe",
            vec![],
        ),
        Some(cache.clone()),
    )?;
    probe.wait_ready(Duration::from_secs(20)).await?;
    probe.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_idle, _) = rss_kib(pid).ok_or("cannot read placement RSS")?;
    eprintln!("  n={n}: idle placement {}", rss_split(pid));

    // Burst of N joins.
    let cpu0 = (
        cpu_ms(pid).unwrap_or(0),
        cpu_ms(std::process::id()).unwrap_or(0),
    );
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(client(&addr, i, &cache)?);
    }
    let times = wait_all(&clients, n, t0, args.timeout).await?;
    let burst_all = times.last().copied().unwrap_or_default();
    let burst_p50 = pct(&times, 0.5);
    let placement_cpu_ms = cpu_ms(pid).unwrap_or(0).saturating_sub(cpu0.0);
    let clients_cpu_ms = cpu_ms(std::process::id())
        .unwrap_or(0)
        .saturating_sub(cpu0.1);
    // The server logs a round once every acknowledgement is in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rounds = count_rounds(&log);
    let server_round = server_round(&log, n).unwrap_or_default();

    // One more host joins: incremental round to N+1 sidecars.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t1 = Instant::now();
    clients.push(client(&addr, n, &cache)?);
    let join = wait_all(&clients, n + 1, t1, args.timeout).await?;
    let join_one = join.last().copied().unwrap_or_default();

    // And leaves again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t2 = Instant::now();
    if let Some(last) = clients.pop() {
        last.shutdown().await;
    }
    let leave = wait_all(&clients, n, t2, args.timeout).await?;
    let leave_one = leave.last().copied().unwrap_or_default();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss_after, hwm) = rss_kib(pid).ok_or("cannot read placement RSS")?;
    for c in &clients {
        c.shutdown().await;
    }
    drop(placement);
    Ok(Row {
        n,
        burst_all,
        burst_p50,
        join_one,
        leave_one,
        rss_idle,
        rss_after,
        hwm,
        rounds,
        server_round,
        placement_cpu_ms,
        clients_cpu_ms,
    })
}

/// Placement RSS with `n` idle HTTP/2 connections (no streams).
async fn idle_connections(args: &Args, n: usize) -> BenchResult<()> {
    let dir = std::env::temp_dir();
    let placement = Placement::start(&args.placement, &dir.join("placement-idle.log"))?;
    let pid = placement.child.id();
    while !placement.healthy() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, _) = rss_kib(pid).ok_or("rss")?;
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let ep = tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            placement.grpc
        ))?;
        channels.push(ep.connect().await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, _) = rss_kib(pid).ok_or("rss")?;
    println!(
        "{n} idle connections: placement RSS {before} KiB -> {after} KiB ({:.1} KiB per connection)",
        (after as f64 - before as f64) / n as f64
    );
    drop(channels);
    Ok(())
}

/// The head of a `PlacementOrder`: operation, version and the number of
/// (actor type, host) entries, read without building the tables.
#[derive(Debug, Default, Clone, PartialEq)]
struct OrderHead {
    operation: String,
    version: u64,
    entries: usize,
}

/// Counts `PlacementTables.entries[*].load_map` entries in encoded bytes.
#[allow(deprecated)]
fn count_entries(mut b: &[u8]) -> Result<usize, prost::DecodeError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    fn sub<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], prost::DecodeError> {
        let len =
            usize::try_from(decode_varint(b)?).map_err(|_| prost::DecodeError::new("length"))?;
        if len > b.len() {
            return Err(prost::DecodeError::new("truncated"));
        }
        let (head, tail) = b.split_at(len);
        *b = tail;
        Ok(head)
    }
    let mut n = 0;
    while !b.is_empty() {
        let (tag, wt) = decode_key(&mut b)?;
        if tag == 1 && wt == WireType::LengthDelimited {
            let mut entry = sub(&mut b)?;
            while !entry.is_empty() {
                let (etag, ewt) = decode_key(&mut entry)?;
                if etag == 2 && ewt == WireType::LengthDelimited {
                    let mut table = sub(&mut entry)?;
                    while !table.is_empty() {
                        let (ttag, twt) = decode_key(&mut table)?;
                        if ttag == 3 {
                            n += 1;
                        }
                        skip_field(twt, ttag, &mut table, DecodeContext::default())?;
                    }
                } else {
                    skip_field(ewt, etag, &mut entry, DecodeContext::default())?;
                }
            }
        } else {
            skip_field(wt, tag, &mut b, DecodeContext::default())?;
        }
    }
    Ok(n)
}

impl prost::Message for OrderHead {
    fn encode_raw(&self, _buf: &mut impl bytes::BufMut) {}

    #[allow(deprecated)]
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => {
                let len = usize::try_from(prost::encoding::decode_varint(buf)?)
                    .map_err(|_| prost::DecodeError::new("length"))?;
                if len > buf.remaining() {
                    return Err(prost::DecodeError::new("truncated"));
                }
                let bytes = buf.copy_to_bytes(len);
                self.entries = count_entries(&bytes)?;
                Ok(())
            }
            2 => prost::encoding::string::merge(wire_type, &mut self.operation, buf, ctx),
            3 => prost::encoding::uint64::merge(wire_type, &mut self.version, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A lightweight host: acknowledges every phase, reports when it holds an
/// unlocked table of `want` entries.
async fn light_host(
    addr: String,
    i: usize,
    want: usize,
    done: tokio::sync::mpsc::Sender<Duration>,
    connected: tokio::sync::mpsc::Sender<()>,
    mut go: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use dapr_placement_core::proto::{Host, HostOperation};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    // Connected: wait until every host is, then all join at once.
    connected.send(()).await?;
    let t0 = go.wait_for(Option::is_some).await?.ok_or("no start time")?;
    let port = 20000 + i;
    let me = Host {
        name: format!("127.0.0.1:{port}"),
        port: i64::try_from(port)?,
        entities: vec!["BenchActor".to_owned()],
        id: format!("bench-app-{}", i % 50),
        namespace: "bench".to_owned(),
        operation: HostOperation::Report as i32,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Host>(16);
    tx.send(me.clone()).await?;
    let path =
        http::uri::PathAndQuery::from_static("/dapr.proto.placement.v1.Placement/ReportDaprStatus");
    let codec = tonic_prost::ProstCodec::<Host, OrderHead>::default();
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            path,
            codec,
        )
        .await?
        .into_inner();
    let mut entries = 0;
    let mut reported = false;
    while let Some(order) = inbound.message().await? {
        let op = match order.operation.as_str() {
            "lock" => HostOperation::Lock,
            "update" => {
                entries = order.entries;
                HostOperation::Update
            }
            _ => HostOperation::Unlock,
        };
        let mut ack = me.clone();
        ack.operation = op as i32;
        ack.version = Some(order.version);
        tx.send(ack).await?;
        if op == HostOperation::Unlock && entries == want && !reported {
            reported = true;
            done.send(t0.elapsed()).await?;
        }
    }
    Ok(())
}

/// Result of a lightweight burst: (time to connect all, all have the final
/// table after their first report, server round (elapsed, update phase) ms,
/// RSS KiB, peak RSS KiB, placement CPU ms).
type LightRow = (Duration, Duration, (f64, f64), u64, u64, u64);

/// Burst of `n` lightweight hosts: until all hold the final table.
async fn run_light(args: &Args, n: usize, dir: &std::path::Path) -> BenchResult<LightRow> {
    let log = dir.join(format!("placement-light-{n}.log"));
    let placement = Placement::start(&args.placement, &log)?;
    let pid = placement.child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !placement.healthy() {
        if Instant::now() > deadline {
            return Err("placement did not become healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addr = format!("127.0.0.1:{}", placement.grpc);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(n);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(n);
    let (go_tx, go_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::with_capacity(n);
    let connecting = Instant::now();
    for i in 0..n {
        tasks.push(tokio::spawn(light_host(
            addr.clone(),
            i,
            n,
            done_tx.clone(),
            conn_tx.clone(),
            go_rx.clone(),
        )));
    }
    for _ in 0..n {
        match tokio::time::timeout(args.timeout, conn_rx.recv()).await {
            Ok(Some(())) => {}
            _ => return Err("light hosts did not all connect in time".into()),
        }
    }
    let connect_time = connecting.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = cpu_ms(pid).unwrap_or(0);
    go_tx.send_replace(Some(Instant::now()));
    let mut last = Duration::ZERO;
    for _ in 0..n {
        match tokio::time::timeout(args.timeout, done_rx.recv()).await {
            Ok(Some(t)) => last = last.max(t),
            _ => return Err("light hosts did not all get the final table in time".into()),
        }
    }
    let cpu = cpu_ms(pid).unwrap_or(0).saturating_sub(cpu0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let round = server_round(&log, n).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (rss, hwm) = rss_kib(pid).ok_or("cannot read placement RSS")?;
    eprintln!("  n={n} light: placement {}", rss_split(pid));
    for t in tasks {
        t.abort();
    }
    drop(placement);
    Ok((connect_time, last, round, rss, hwm, cpu))
}

async fn run(args: Args) -> BenchResult<()> {
    if let Some(n) = args.idle_connections {
        return idle_connections(&args, n).await;
    }
    if !args.placement.exists() {
        return Err(format!(
            "{} not found; build it first (cargo build --release -p dapr-placement)",
            args.placement.display()
        )
        .into());
    }
    let max = args.hosts.iter().copied().max().unwrap_or(0) as u64;
    if let Some(limit) = fd_limit()
        && limit < max * 2 + 200
    {
        eprintln!("warning: open-file limit {limit} is low for {max} hosts (raise ulimit -n)");
    }
    let dir = std::env::temp_dir().join(format!("placement-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("placement-bench: {}", args.placement.display());
    println!("logs: {}", dir.display());
    println!("load average (1 min) at start: {}", loadavg());
    let mut rows = Vec::new();
    for &n in &args.hosts {
        let row = run_one(&args, n, &dir).await?;
        println!(
            "  n={n}: burst {:.1} ms (p50 {:.1} ms), rounds {}, final round on the server {:.1} ms (update phase {:.1} ms), +1 join {:.1} ms, -1 leave {:.1} ms, rss {} KiB (peak {} KiB), burst CPU placement {} ms / hosts {} ms, load {}",
            ms(row.burst_all),
            ms(row.burst_p50),
            row.rounds,
            row.server_round.0,
            row.server_round.1,
            ms(row.join_one),
            ms(row.leave_one),
            row.rss_after,
            row.hwm,
            row.placement_cpu_ms,
            row.clients_cpu_ms,
            loadavg()
        );
        rows.push(row);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!();
    println!(
        "| hosts | burst: all hosts have final table | p50 host | rounds | final round (server) | +1 host join | -1 host leave | CPU placement / hosts | placement RSS idle | RSS after | peak RSS (VmHWM) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} ms | {:.0} ms | {} | {:.0} ms | {:.0} ms | {:.0} ms | {} / {} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            r.n,
            ms(r.burst_all),
            ms(r.burst_p50),
            r.rounds,
            r.server_round.0,
            ms(r.join_one),
            ms(r.leave_one),
            r.placement_cpu_ms,
            r.clients_cpu_ms,
            r.rss_idle as f64 / 1024.0,
            r.rss_after as f64 / 1024.0,
            r.hwm as f64 / 1024.0
        );
    }
    if args.light {
        println!();
        println!(
            "Lightweight hosts (acknowledge without decoding the tables; connections opened first, then all report at once):"
        );
        println!(
            "| hosts | connect all | join burst: all hosts have final table | final round (server) | update phase | placement CPU | RSS after | peak RSS |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &args.hosts {
            let (connect, all, round, rss, hwm, cpu) = run_light(&args, n, &dir).await?;
            println!(
                "| {n} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {cpu} ms | {:.1} MiB | {:.1} MiB |",
                ms(connect),
                ms(all),
                round.0,
                round.1,
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("placement-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("placement-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("placement-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
