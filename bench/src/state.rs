//! `bench state`: save + get of a ~100-byte value, direct to Redis vs through
//! daprd's HTTP and gRPC APIs, in one run.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use dapr::dapr::proto::{
    common::v1::StateItem,
    runtime::v1::{GetStateRequest, SaveStateRequest, dapr_client::DaprClient},
};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use redis::{
    Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::{
    StateArgs, StoreKind, TargetKind,
    daprd::{Daprd, Launch},
    load::{self, OpClient, PhaseResult},
    procfs,
    report::{self, CpuUse, MemoryReport, PhaseRow, Report, Shape, Startup},
};

/// daprd's app id; with the default `appid` key prefix daprd stores key K as
/// `bench||K`, and the direct target writes the same Redis keys.
const APP_ID: &str = "bench";
const STORE: &str = "statestore";
const KEY_PREFIX: &str = "dapr-bench-";

/// What the direct target sends for a save: daprd's `state.redis` for a
/// last-write save without etag or TTL (see `dapr_components::state::redis`).
pub const DIRECT_SAVE: &str = "EVALSHA <store op script> 1 <key> s \"\" 0 <value> 0 \
     (TYPE, HGET version, TYPE, HSET data, HINCRBY version, PERSIST)";
/// What the direct target sends for a get: the store's get script.
pub const DIRECT_GET: &str = "EVALSHA <store get script> 1 <key> (TYPE, HMGET data version, PTTL)";
/// The plain-commands variant (`--targets direct-plain`).
pub const DIRECT_PLAIN: &str = "save = HSET <key> data <value> version 1; get = HGETALL <key>";

/// The ~100-byte value: a JSON string, quotes included, so the HTTP API
/// stores exactly these bytes (it keeps the JSON text) as gRPC and direct do.
fn value(size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size);
    v.push(b'"');
    v.extend((0..size - 2).map(|i| b'a' + (i % 26) as u8));
    v.push(b'"');
    Bytes::from(v)
}

// ------------------------------------------------------------------ targets --

struct DirectScripts {
    op: Script,
    get: Script,
}

#[derive(Clone)]
struct Direct {
    conn: ConnectionManager,
    keys: Arc<Vec<String>>,
    value: Bytes,
    scripts: Arc<DirectScripts>,
    /// Plain HSET / HGETALL instead of the store's scripts.
    plain: bool,
}

impl Direct {
    fn new(conn: ConnectionManager, keys: Arc<Vec<String>>, value: Bytes, plain: bool) -> Self {
        Self {
            conn,
            keys,
            value,
            scripts: Arc::new(DirectScripts {
                op: Script::new(&format!(
                    "{}{}",
                    dapr_components::state::redis::LUA_HELPERS,
                    dapr_components::state::redis::OP_SCRIPT_BODY
                )),
                get: Script::new(dapr_components::state::redis::GET_SCRIPT),
            }),
            plain,
        }
    }

    async fn save(&self, key: usize) -> anyhow::Result<()> {
        let key = self.keys.get(key).context("key index out of range")?;
        let mut conn = self.conn.clone();
        if self.plain {
            redis::cmd("HSET")
                .arg(key)
                .arg("data")
                .arg(&self.value[..])
                .arg("version")
                .arg(1)
                .exec_async(&mut conn)
                .await?;
            return Ok(());
        }
        // As the store's run_op for a set: kind, etag, first-write, data, ttl ms.
        let version: i64 = self
            .scripts
            .op
            .key(key)
            .arg("s")
            .arg("")
            .arg("0")
            .arg(&self.value[..])
            .arg("0")
            .invoke_async(&mut conn)
            .await?;
        if version < 0 {
            bail!("save script: etag check failed");
        }
        Ok(())
    }

    async fn get(&self, key: usize) -> anyhow::Result<()> {
        let key = self.keys.get(key).context("key index out of range")?;
        let mut conn = self.conn.clone();
        let data = if self.plain {
            let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await?;
            fields
                .into_iter()
                .find(|(f, _)| f == "data")
                .map(|(_, v)| v)
        } else {
            let reply: Value = self.scripts.get.key(key).invoke_async(&mut conn).await?;
            match reply {
                Value::Array(parts) => match parts.into_iter().next() {
                    Some(Value::BulkString(b)) => Some(b),
                    _ => None,
                },
                _ => None,
            }
        };
        let data = data.context("get: no data for the key")?;
        if data.len() != self.value.len() {
            bail!(
                "get: data is {} bytes, expected {}",
                data.len(),
                self.value.len()
            );
        }
        Ok(())
    }
}

type HttpBody = Full<Bytes>;

#[derive(Clone)]
struct HttpTarget {
    client: HyperClient<HttpConnector, HttpBody>,
    save_uri: Uri,
    save_bodies: Arc<Vec<Bytes>>,
    get_uris: Arc<Vec<Uri>>,
    value_len: usize,
}

impl HttpTarget {
    fn new(port: u16, keys: usize, value: &Bytes) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new()).build(connector);
        let base = format!("http://127.0.0.1:{port}/v1.0/state/{STORE}");
        let value_text = std::str::from_utf8(value).context("value is not UTF-8")?;
        let save_bodies = (0..keys)
            .map(|i| {
                Bytes::from(format!(
                    r#"[{{"key":"{KEY_PREFIX}{i}","value":{value_text}}}]"#
                ))
            })
            .collect();
        let get_uris = (0..keys)
            .map(|i| format!("{base}/{KEY_PREFIX}{i}").parse::<Uri>())
            .collect::<Result<Vec<_>, _>>()
            .context("building GET URIs")?;
        Ok(Self {
            client,
            save_uri: base.parse().context("building the save URI")?,
            save_bodies: Arc::new(save_bodies),
            get_uris: Arc::new(get_uris),
            value_len: value.len(),
        })
    }

    async fn call(
        &self,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder().method(method).uri(uri);
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let resp = self.client.request(req.body(Full::new(body))?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn save(&self, key: usize) -> anyhow::Result<()> {
        let body = self
            .save_bodies
            .get(key)
            .context("key index out of range")?;
        let (status, resp) = self
            .call(Method::POST, self.save_uri.clone(), body.clone())
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!("POST state: {status} {}", String::from_utf8_lossy(&resp));
        }
        Ok(())
    }

    async fn get(&self, key: usize) -> anyhow::Result<()> {
        let uri = self.get_uris.get(key).context("key index out of range")?;
        let (status, resp) = self.call(Method::GET, uri.clone(), Bytes::new()).await?;
        if status != StatusCode::OK {
            bail!("GET state: {status} {}", String::from_utf8_lossy(&resp));
        }
        if resp.len() != self.value_len {
            bail!(
                "GET state: {} bytes, expected {}",
                resp.len(),
                self.value_len
            );
        }
        Ok(())
    }
}

#[derive(Clone)]
struct GrpcTarget {
    /// One client per HTTP/2 connection; key i uses client i % len.
    clients: Arc<Vec<DaprClient<Channel>>>,
    keys: Arc<Vec<String>>,
    value: Bytes,
}

impl GrpcTarget {
    async fn connect(
        port: u16,
        connections: usize,
        keys: usize,
        value: Bytes,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .context("gRPC endpoint")?
                .tcp_nodelay(true)
                .connect()
                .await
                .context("cannot connect to daprd's gRPC port")?;
            clients.push(DaprClient::new(channel));
        }
        Ok(Self {
            clients: Arc::new(clients),
            keys: Arc::new((0..keys).map(|i| format!("{KEY_PREFIX}{i}")).collect()),
            value,
        })
    }

    fn client(&self, key: usize) -> anyhow::Result<DaprClient<Channel>> {
        let n = self.clients.len().max(1);
        self.clients.get(key % n).cloned().context("no gRPC client")
    }

    async fn save(&self, key_index: usize) -> anyhow::Result<()> {
        let key = self.keys.get(key_index).context("key index out of range")?;
        let req = SaveStateRequest {
            store_name: STORE.to_owned(),
            states: vec![StateItem {
                key: key.clone(),
                value: self.value.to_vec(),
                ..Default::default()
            }],
        };
        self.client(key_index)?.save_state(req).await?;
        Ok(())
    }

    async fn get(&self, key_index: usize) -> anyhow::Result<()> {
        let key = self.keys.get(key_index).context("key index out of range")?;
        let req = GetStateRequest {
            store_name: STORE.to_owned(),
            key: key.clone(),
            ..Default::default()
        };
        let resp = self.client(key_index)?.get_state(req).await?.into_inner();
        if resp.data.len() != self.value.len() {
            bail!(
                "GetState: {} bytes, expected {}",
                resp.data.len(),
                self.value.len()
            );
        }
        Ok(())
    }
}

/// Cloned for every op, so each target sits behind one `Arc`.
#[derive(Clone)]
enum Target {
    Direct(Arc<Direct>),
    Http(Arc<HttpTarget>),
    Grpc(Arc<GrpcTarget>),
}

impl OpClient for Target {
    async fn save(&self, key: usize) -> anyhow::Result<()> {
        match self {
            Target::Direct(t) => t.save(key).await,
            Target::Http(t) => t.save(key).await,
            Target::Grpc(t) => t.save(key).await,
        }
    }

    async fn get(&self, key: usize) -> anyhow::Result<()> {
        match self {
            Target::Direct(t) => t.get(key).await,
            Target::Http(t) => t.get(key).await,
            Target::Grpc(t) => t.get(key).await,
        }
    }
}

// -------------------------------------------------------------------- redis --

/// Connects as daprd's `state.redis` does: a ConnectionManager (one
/// multiplexed connection) with the store's default timeouts and retries.
async fn redis_connect(addr: SocketAddr) -> anyhow::Result<ConnectionManager> {
    let hint = format!(
        "nothing answers at {addr}: start the test services with scripts/test-services.sh \
         (or, for development, `redis-server --port {port} --bind 127.0.0.1 --save \"\" --daemonize yes`)",
        port = addr.port()
    );
    let client = redis::Client::open(format!("redis://{addr}/")).context("redis URL")?;
    let cfg = ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client, cfg),
    )
    .await
    .map_err(|_| anyhow!("{hint}"))?
    .with_context(|| hint.clone())?;
    let pong: String = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("PING").query_async(&mut conn),
    )
    .await
    .map_err(|_| anyhow!("{hint}"))?
    .with_context(|| hint.clone())?;
    if pong != "PONG" {
        bail!("{addr} answered PING with '{pong}'; is it Redis?");
    }
    Ok(conn)
}

/// Redis's pid, when it runs where this process can read its /proc entry.
async fn redis_pid(conn: &mut ConnectionManager) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .ok()?;
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    procfs::cpu_time(Some(pid)).map(|_| pid)
}

async fn cleanup(conn: &mut ConnectionManager, keys: &[String]) -> anyhow::Result<()> {
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).exec_async(conn).await?;
    }
    Ok(())
}

// -------------------------------------------------------------------- daprd --

fn component_yaml(store: StoreKind, redis: SocketAddr) -> String {
    match store {
        StoreKind::Redis => format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {STORE}\nspec:\n  \
             type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: \"{redis}\"\n"
        ),
        StoreKind::InMemory => format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {STORE}\nspec:\n  \
             type: state.in-memory\n  version: v1\n  metadata: []\n"
        ),
    }
}

/// Starts daprd and waits for healthz, off the async workers.
fn start_daprd(launch: &Launch<'_>, poll: Duration) -> anyhow::Result<(Daprd, Duration)> {
    tokio::task::block_in_place(|| {
        let (mut d, spawned_at) = Daprd::spawn(launch)?;
        let ready = d.wait_ready(spawned_at, poll, Duration::from_secs(30))?;
        Ok((d, ready))
    })
}

fn stop_daprd(d: Daprd) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| d.stop())
}

/// Startup with the embedded default (no resources path, SQLite store in a
/// fresh data dir), `runs` times.
async fn measure_startup(bin: &Path, runs: usize) -> anyhow::Result<Startup> {
    let mut times = Vec::with_capacity(runs);
    let mut idle_rss = None;
    for run in 0..runs {
        let tmp = tempfile::tempdir().context("cannot create a temp dir")?;
        let data = tmp.path().join("data");
        let log = tmp.path().join("daprd.log");
        let launch = Launch {
            bin,
            app_id: "benchready",
            data_dir: &data,
            resources_path: None,
            log: &log,
            extra_args: &[],
        };
        let (d, ready) = start_daprd(&launch, Duration::from_millis(1))?;
        times.push(ready);
        if run + 1 == runs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            idle_rss = procfs::memory(d.pid()).map(|m| m.rss);
        }
        stop_daprd(d)?;
    }
    Ok(Startup { times, idle_rss })
}

// -------------------------------------------------------------------- phases --

#[derive(Clone, Copy)]
struct Pids {
    daprd: Option<u32>,
    redis: Option<u32>,
}

struct CpuMark {
    client: Option<Duration>,
    daprd: Option<Duration>,
    redis: Option<Duration>,
}

fn cpu_mark(p: Pids) -> CpuMark {
    CpuMark {
        client: procfs::cpu_time(None),
        daprd: p.daprd.and_then(|pid| procfs::cpu_time(Some(pid))),
        redis: p.redis.and_then(|pid| procfs::cpu_time(Some(pid))),
    }
}

fn cpu_use(a: &CpuMark, b: &CpuMark, ops: u64) -> CpuUse {
    let per_op = |x: Option<Duration>, y: Option<Duration>| -> Option<f64> {
        let d = y?.checked_sub(x?)?;
        (ops > 0).then(|| d.as_secs_f64() * 1e6 / ops as f64)
    };
    CpuUse {
        client_us: per_op(a.client, b.client),
        daprd_us: per_op(a.daprd, b.daprd),
        redis_us: per_op(a.redis, b.redis),
    }
}

/// Samples daprd's VmRSS every 100 ms until stopped; returns the maximum.
fn rss_sampler(pid: u32) -> (oneshot::Sender<()>, tokio::task::JoinHandle<u64>) {
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut max = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tick.tick() => {
                    if let Some(m) = procfs::memory(pid) {
                        max = max.max(m.rss);
                    }
                }
            }
        }
        max
    });
    (tx, task)
}

struct Phases<'a> {
    args: &'a StateArgs,
    duration: Duration,
    rows: Vec<PhaseRow>,
    load_rss_max: u64,
}

impl Phases<'_> {
    async fn run_target(
        &mut self,
        kind: TargetKind,
        target: Target,
        pids: Pids,
    ) -> anyhow::Result<()> {
        let args = self.args;
        if args.warmup > 0.0 {
            let warm = load::closed_loop(
                target.clone(),
                args.concurrency,
                Duration::from_secs_f64(args.warmup),
                args.keys,
            )
            .await?;
            if warm.rec.ops == 0 {
                bail!(
                    "{}: every warm-up op failed: {}",
                    report::target_name(kind),
                    warm.rec.first_error.as_deref().unwrap_or("no ops ran")
                );
            }
        }

        let before = cpu_mark(pids);
        let fixed = load::open_loop(target.clone(), args.rate, self.duration, args.keys).await?;
        let cpu = cpu_use(&before, &cpu_mark(pids), fixed.rec.ops);
        self.push(kind, Shape::Fixed(args.rate), fixed, cpu);

        let sampler = pids.daprd.map(rss_sampler);
        let before = cpu_mark(pids);
        let full = load::closed_loop(target, args.concurrency, self.duration, args.keys).await?;
        let cpu = cpu_use(&before, &cpu_mark(pids), full.rec.ops);
        if let Some((stop, task)) = sampler {
            let _ = stop.send(());
            self.load_rss_max = self.load_rss_max.max(task.await.unwrap_or(0));
        }
        self.push(kind, Shape::Full(args.concurrency), full, cpu);
        Ok(())
    }

    fn push(&mut self, target: TargetKind, shape: Shape, result: PhaseResult, cpu: CpuUse) {
        eprintln!(
            "  {:<11} {:<14} {:>9.1} ops/s, {} errors",
            report::target_name(target),
            shape.to_string(),
            result.throughput(),
            result.rec.errors
        );
        self.rows.push(PhaseRow {
            target,
            shape,
            result,
            cpu,
        });
    }
}

pub async fn run(args: StateArgs, redis_addr: SocketAddr) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.duration);
    let mut redis_conn = redis_connect(redis_addr).await?;
    let redis_pid = redis_pid(&mut redis_conn).await;
    let value = value(args.value_size);
    let direct_keys: Arc<Vec<String>> = Arc::new(
        (0..args.keys)
            .map(|i| format!("{APP_ID}||{KEY_PREFIX}{i}"))
            .collect(),
    );
    let wants_daprd = args
        .targets
        .iter()
        .any(|t| matches!(t, TargetKind::Http | TargetKind::Grpc));

    let startup = if args.startup_runs > 0 {
        eprintln!(
            "measuring daprd startup (embedded default) x{}",
            args.startup_runs
        );
        Some(measure_startup(&args.daprd, args.startup_runs).await?)
    } else {
        None
    };

    let tmp = tempfile::tempdir().context("cannot create a temp dir")?;
    let daprd = if wants_daprd {
        let resources = tmp.path().join("resources");
        std::fs::create_dir_all(&resources).context("cannot create the resources dir")?;
        std::fs::write(
            resources.join("statestore.yaml"),
            component_yaml(args.store, redis_addr),
        )
        .context("cannot write the component file")?;
        let data = tmp.path().join("data");
        let log = tmp.path().join("daprd.log");
        let launch = Launch {
            bin: &args.daprd,
            app_id: APP_ID,
            data_dir: &data,
            resources_path: Some(&resources),
            log: &log,
            extra_args: &[],
        };
        let (d, ready) = start_daprd(&launch, Duration::from_millis(1))?;
        eprintln!(
            "daprd (pid {}, {:?} store) ready in {:.1} ms",
            d.pid(),
            args.store,
            ready.as_secs_f64() * 1e3
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = procfs::memory(d.pid()).map(|m| m.rss);
        Some((d, idle))
    } else {
        None
    };
    let daprd_pid = daprd.as_ref().map(|(d, _)| d.pid());

    let mut phases = Phases {
        args: &args,
        duration,
        rows: Vec::new(),
        load_rss_max: 0,
    };
    let result = async {
        for kind in args.targets.clone() {
            eprintln!("running {}", report::target_name(kind));
            let (target, pids) = match (kind, &daprd) {
                (TargetKind::Direct | TargetKind::DirectPlain, _) => (
                    Target::Direct(Arc::new(Direct::new(
                        redis_conn.clone(),
                        direct_keys.clone(),
                        value.clone(),
                        kind == TargetKind::DirectPlain,
                    ))),
                    Pids {
                        daprd: None,
                        redis: redis_pid,
                    },
                ),
                (TargetKind::Http, Some((d, _))) => (
                    Target::Http(Arc::new(HttpTarget::new(d.http_port, args.keys, &value)?)),
                    Pids {
                        daprd: daprd_pid,
                        redis: redis_pid,
                    },
                ),
                (TargetKind::Grpc, Some((d, _))) => (
                    Target::Grpc(Arc::new(
                        GrpcTarget::connect(
                            d.grpc_port,
                            args.grpc_connections,
                            args.keys,
                            value.clone(),
                        )
                        .await?,
                    )),
                    Pids {
                        daprd: daprd_pid,
                        redis: redis_pid,
                    },
                ),
                (_, None) => bail!("daprd is not running"),
            };
            phases.run_target(kind, target, pids).await?;
        }
        anyhow::Ok(())
    }
    .await;

    let memory = match daprd {
        Some((d, idle_rss)) => {
            let hwm = procfs::memory(d.pid()).map(|m| m.hwm);
            let log = d.log_tail();
            if let Err(e) = stop_daprd(d) {
                eprintln!("warning: {e:#}");
            }
            if result.is_err() {
                eprintln!("daprd log (tail):\n{log}");
            }
            Some(MemoryReport {
                idle_rss,
                load_rss_max: phases.load_rss_max,
                hwm,
            })
        }
        None => None,
    };
    if let Err(e) = cleanup(&mut redis_conn, &direct_keys).await {
        eprintln!("warning: cannot delete the benchmark keys: {e:#}");
    }
    result?;

    report::print(&Report {
        args: &args,
        redis: redis_addr,
        rows: phases.rows,
        startup,
        memory,
        redis_cpu_visible: redis_pid.is_some(),
    });
    Ok(())
}
