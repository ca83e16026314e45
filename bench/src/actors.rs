//! `bench actors`: actor method calls and reminders through daprd, against
//! the actor host app called directly in the same run.
//!
//! A real single-node `dapr-placement`, an actor host app (HTTP/1.1, inside
//! the bench on its own runtime), daprd A hosting the app's actor type, and
//! daprd C with no app (it hosts nothing, so every call through it goes to
//! the owner A over the internal gRPC hop). Targets:
//!
//! - direct: `PUT /actors/<type>/<id>/method/echo` on the app;
//! - http / grpc: `/v1.0/actors/<type>/<id>/method/echo` / `InvokeActor` on
//!   daprd A, the owner (client -> owner sidecar -> app);
//! - http-remote / grpc-remote: the same on daprd C (client -> caller
//!   sidecar -> owner sidecar -> app).
//!
//! Then reminders: `--reminders` reminders with period `--reminder-period`
//! registered on A, fires counted at the app over `--reminder-secs`, against
//! the app's own ceiling for the same callback (the bench PUTting it at full
//! speed over HTTP/1.1 keep-alive, as daprd does).

use std::{
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use dapr::dapr::proto::runtime::v1::{InvokeActorRequest, dapr_client::DaprClient};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::{
    daprd::{Daprd, Launch, free_ports, probe, stop_daprd},
    load::{self, OpClient, PhaseResult},
    procfs,
    report::{Shape, cell, delta, q},
};

const ACTOR_TYPE: &str = "BenchActor";
const METHOD: &str = "echo";
const HOST_ID: &str = "bench-actors";
const CALLER_ID: &str = "bench-actor-caller";

/// Dapr 1.17's published figures (other machine), for orientation.
const DAPR_P99_MS: f64 = 6.89;
const DAPR_REMINDERS_PER_S: f64 = 15_500.0;
/// Issue #6's targets.
const TARGET_P99_MS: f64 = 1.0;
const TARGET_REMINDERS_PER_S: f64 = 50_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActorTarget {
    /// The app's actor method called directly.
    Direct,
    /// HTTP API of the owner's sidecar.
    Http,
    /// gRPC `InvokeActor` on the owner's sidecar.
    Grpc,
    /// HTTP API of a sidecar that is not the owner.
    HttpRemote,
    /// gRPC `InvokeActor` on a sidecar that is not the owner.
    GrpcRemote,
}

impl ActorTarget {
    fn name(self) -> &'static str {
        match self {
            ActorTarget::Direct => "direct",
            ActorTarget::Http => "http",
            ActorTarget::Grpc => "grpc",
            ActorTarget::HttpRemote => "http-remote",
            ActorTarget::GrpcRemote => "grpc-remote",
        }
    }
}

/// Where daprd A keeps reminders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReminderStore {
    /// `state.sqlite` in the run's temp dir.
    Sqlite,
    /// `state.in-memory`.
    InMemory,
}

#[derive(Debug, Clone, Args)]
pub struct ActorsArgs {
    /// The daprd binary to start (twice).
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// The dapr-placement binary to start.
    #[arg(long, default_value = "target/release/dapr-placement")]
    pub placement: PathBuf,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Workers of the full-speed phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Calls per second of the fixed-rate phase.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Seconds of warm-up per target (full speed, discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Distinct actor ids the calls cycle through.
    #[arg(long, default_value_t = 1000)]
    pub actors: usize,
    /// Request body of a method call (echoed back).
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Call targets, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,http,grpc,http-remote,grpc-remote"
    )]
    pub targets: Vec<ActorTarget>,
    /// Reminders registered for the reminder phase (0 skips it); 5000 at
    /// 100 ms asks for the 50 000 fires/s target.
    #[arg(long, default_value_t = 5000)]
    pub reminders: usize,
    /// Period of each reminder (Go duration).
    #[arg(long, default_value = "100ms")]
    pub reminder_period: String,
    /// Seconds over which fires are counted.
    #[arg(long, default_value_t = 5.0)]
    pub reminder_secs: f64,
    /// The actor state store holding the reminders.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub reminder_store: ReminderStore,
    /// `remindersStoragePartitions` in the app's actor configuration.
    #[arg(long, default_value_t = 64)]
    pub partitions: u32,
}

impl ActorsArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        if !(self.warmup >= 0.0 && self.warmup <= 60.0) {
            bail!("--warmup must be in [0, 60] seconds");
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            bail!("--concurrency must be in [1, 4096]");
        }
        if self.rate == 0 || self.rate > 1_000_000 {
            bail!("--rate must be in [1, 1000000] calls/s");
        }
        if self.actors == 0 || self.actors > 1_000_000 {
            bail!("--actors must be in [1, 1000000]");
        }
        if self.payload_size > 1 << 20 {
            bail!("--payload-size must be at most 1048576 bytes");
        }
        if self.reminders > 200_000 {
            bail!("--reminders must be at most 200000");
        }
        if !(self.reminder_secs > 0.0 && self.reminder_secs <= 600.0) {
            bail!("--reminder-secs must be in (0, 600]");
        }
        if self.partitions > 4096 {
            bail!("--partitions must be at most 4096");
        }
        if self.targets.is_empty() && self.reminders == 0 {
            bail!("nothing to run: --targets is empty and --reminders is 0");
        }
        if self.reminder_period.is_empty()
            || !self
                .reminder_period
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            bail!("--reminder-period must be a Go duration such as 100ms");
        }
        Ok(())
    }
}

// ------------------------------------------------------------ the actor app --

/// The actor host app on its own thread and 2-worker runtime, so it does not
/// share the load generator's workers. Dropping it stops it.
struct ActorApp {
    port: u16,
    /// Reminder and timer callbacks received.
    fired: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ActorApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct AppState {
    config: Bytes,
    fired: Arc<AtomicU64>,
}

fn respond(status: StatusCode, body: Bytes, json: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if json {
            "application/json"
        } else {
            "application/octet-stream"
        }),
    );
    resp
}

/// The Dapr actor app protocol, as the SDKs serve it: `GET /dapr/config`,
/// `PUT /actors/<type>/<id>/method/<m>` (echo), `.../method/remind/<name>`
/// and `.../method/timer/<name>` (counted), `DELETE /actors/<type>/<id>`.
async fn app_handle(
    state: AppState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path();
    if parts.method == Method::GET && path == "/dapr/config" {
        return Ok(respond(StatusCode::OK, state.config.clone(), true));
    }
    if parts.method == Method::GET && path == "/healthz" {
        return Ok(respond(StatusCode::OK, Bytes::new(), false));
    }
    let Some(rest) = path.strip_prefix("/actors/") else {
        return Ok(respond(StatusCode::NOT_FOUND, Bytes::new(), false));
    };
    let mut seg = rest.splitn(4, '/');
    let (ty, _id, kind, method) = (seg.next(), seg.next(), seg.next(), seg.next());
    if ty != Some(ACTOR_TYPE) {
        return Ok(respond(StatusCode::NOT_FOUND, Bytes::new(), false));
    }
    match (parts.method, kind, method) {
        (Method::DELETE, None, None) => Ok(respond(StatusCode::OK, Bytes::new(), false)),
        (Method::PUT, Some("method"), Some(m))
            if m.starts_with("remind/") || m.starts_with("timer/") =>
        {
            state.fired.fetch_add(1, Ordering::Relaxed);
            Ok(respond(StatusCode::OK, Bytes::new(), false))
        }
        (Method::PUT, Some("method"), Some(_)) => Ok(respond(StatusCode::OK, body, false)),
        _ => Ok(respond(StatusCode::NOT_FOUND, Bytes::new(), false)),
    }
}

fn start_app(partitions: u32) -> anyhow::Result<ActorApp> {
    let listener = StdTcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("cannot bind the actor app on 127.0.0.1")?;
    listener
        .set_nonblocking(true)
        .context("cannot make the actor app's listener non-blocking")?;
    let port = listener.local_addr()?.port();
    let fired = Arc::new(AtomicU64::new(0));
    let state = AppState {
        config: Bytes::from(format!(
            r#"{{"entities":["{ACTOR_TYPE}"],"actorIdleTimeout":"1h","remindersStoragePartitions":{partitions}}}"#
        )),
        fired: fired.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("actor-app")
        .enable_all()
        .build()
        .context("cannot build the actor app's runtime")?;
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("actor-app-main".into())
        .spawn(move || {
            let served = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stop_rx => return anyhow::Ok(()),
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(e) => {
                                eprintln!("actor app: accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| app_handle(state.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            if let Err(e) = served {
                eprintln!("actor app failed: {e:#}");
            }
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .context("cannot start the actor app thread")?;
    Ok(ActorApp {
        port,
        fired,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

// ---------------------------------------------------------------- placement --

/// A single-node dapr-placement. Dropping it kills the process.
struct PlacementProc {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for PlacementProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_placement(bin: &Path, dir: &Path) -> anyhow::Result<PlacementProc> {
    if !bin.is_file() {
        bail!(
            "dapr-placement binary {} not found; build it with `cargo build --release -p dapr-placement` or pass --placement",
            bin.display()
        );
    }
    let ports = free_ports(4)?;
    let log = dir.join("placement.log");
    let file = std::fs::File::create(&log).context("cannot create placement.log")?;
    let child = Command::new(bin)
        .args(["--id", "p0", "--initial-cluster"])
        .arg(format!("p0=127.0.0.1:{}", ports[1]))
        .args([
            "--port",
            &ports[0].to_string(),
            "--listen-address",
            "127.0.0.1",
        ])
        .args(["--healthz-port", &ports[2].to_string()])
        .args(["--healthz-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &ports[3].to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let p = PlacementProc {
        child,
        port: ports[0],
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(ports[2], "GET", "/healthz") != Some(200) {
        if Instant::now() >= deadline {
            bail!(
                "dapr-placement did not become healthy within 30 s: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(p)
}

// ------------------------------------------------------------------ clients --

#[derive(Clone)]
enum Caller {
    Http(Arc<HttpCaller>),
    Grpc(Arc<GrpcCaller>),
}

struct HttpCaller {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    /// One URI per actor id (built ahead so the loop does no formatting).
    uris: Vec<Uri>,
    payload: Bytes,
    /// Bytes expected back (the echo), or None for any body.
    expect: Option<usize>,
}

struct GrpcCaller {
    client: DaprClient<Channel>,
    requests: Vec<InvokeActorRequest>,
    payload_len: usize,
}

fn actor_id(key: usize) -> String {
    format!("a{key}")
}

fn http_client() -> HyperClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

impl Caller {
    /// `path(id)` for every actor id, on 127.0.0.1:port.
    fn http(
        port: u16,
        actors: usize,
        path: impl Fn(&str) -> String,
        payload: Bytes,
        expect: Option<usize>,
    ) -> anyhow::Result<Self> {
        let uris = (0..actors)
            .map(|k| {
                format!("http://127.0.0.1:{port}{}", path(&actor_id(k)))
                    .parse::<Uri>()
                    .context("building an actor URI")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Caller::Http(Arc::new(HttpCaller {
            client: http_client(),
            uris,
            payload,
            expect,
        })))
    }

    async fn grpc(port: u16, actors: usize, payload: &Bytes) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .context("gRPC endpoint")?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port} over gRPC"))?;
        let requests = (0..actors)
            .map(|k| InvokeActorRequest {
                actor_type: ACTOR_TYPE.to_owned(),
                actor_id: actor_id(k),
                method: METHOD.to_owned(),
                data: payload.to_vec(),
                metadata: Default::default(),
            })
            .collect();
        Ok(Caller::Grpc(Arc::new(GrpcCaller {
            client: DaprClient::new(channel),
            requests,
            payload_len: payload.len(),
        })))
    }

    async fn call(&self, key: usize) -> anyhow::Result<()> {
        match self {
            Caller::Http(c) => {
                let uri = c
                    .uris
                    .get(key % c.uris.len().max(1))
                    .context("no actor URI")?
                    .clone();
                let req = Request::builder()
                    .method(Method::PUT)
                    .uri(uri)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(c.payload.clone()))?;
                let resp = c.client.request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                if status != StatusCode::OK {
                    bail!("PUT: {status} {}", String::from_utf8_lossy(&body));
                }
                if let Some(n) = c.expect
                    && body.len() != n
                {
                    bail!("PUT: {} bytes back, expected {n}", body.len());
                }
            }
            Caller::Grpc(c) => {
                let req = c
                    .requests
                    .get(key % c.requests.len().max(1))
                    .context("no actor request")?
                    .clone();
                let resp = c.client.clone().invoke_actor(req).await?.into_inner();
                if resp.data.len() != c.payload_len {
                    bail!(
                        "InvokeActor: {} bytes back, expected {}",
                        resp.data.len(),
                        c.payload_len
                    );
                }
            }
        }
        Ok(())
    }
}

/// The load loops run "save then get"; an actor call is one call, so `save`
/// is the call (its histogram is the one reported) and `get` does nothing.
impl OpClient for Caller {
    async fn save(&self, key: usize) -> anyhow::Result<()> {
        self.call(key).await
    }

    async fn get(&self, _key: usize) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Retries a call until it succeeds (the hosts register with placement and
/// get tables as they start) or 60 s pass.
async fn wait_callable(caller: &Caller, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let err = match tokio::time::timeout(load::CALL_TIMEOUT, caller.call(0)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("{what}: no successful actor call within 60 s: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// -------------------------------------------------------------------- daprd --

fn start_daprd(launch: &Launch<'_>) -> anyhow::Result<Daprd> {
    tokio::task::block_in_place(|| {
        let (mut d, spawned_at) = Daprd::spawn(launch)?;
        d.wait_ready(
            spawned_at,
            Duration::from_millis(10),
            Duration::from_secs(30),
        )?;
        Ok(d)
    })
}

// ------------------------------------------------------------------ phases --

/// CPU of the processes of a run: daprd A (owner), daprd C (caller),
/// placement, and this process (load generator + app).
#[derive(Clone, Copy)]
struct Pids {
    owner: u32,
    caller: u32,
    placement: u32,
}

#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    cpu: [Option<Duration>; 4],
}

fn cpu_mark(p: Pids) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        cpu: [
            procfs::cpu_time(Some(p.owner)),
            procfs::cpu_time(Some(p.caller)),
            procfs::cpu_time(Some(p.placement)),
            procfs::cpu_time(None),
        ],
    }
}

/// mCPU per process over the interval (CPU s / wall s x 1000), and the CPU
/// seconds themselves.
fn mcpu(before: &CpuMark, after: &CpuMark) -> [Option<(f64, f64)>; 4] {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let mut out = [None; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (|| {
            let d = after.cpu[i]?.checked_sub(before.cpu[i]?)?.as_secs_f64();
            (wall > 0.0).then(|| (d / wall * 1000.0, d))
        })();
    }
    out
}

struct Row {
    target: ActorTarget,
    shape: Shape,
    result: PhaseResult,
    /// (mCPU, CPU s) of owner, caller, placement, bench.
    cpu: [Option<(f64, f64)>; 4],
    /// daprd A's VmRSS at the end of the phase.
    owner_rss: Option<u64>,
}

async fn run_target(
    args: &ActorsArgs,
    target: ActorTarget,
    caller: Caller,
    pids: Pids,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.duration);
    if args.warmup > 0.0 {
        let warm = load::closed_loop(
            caller.clone(),
            args.concurrency,
            Duration::from_secs_f64(args.warmup),
            args.actors,
        )
        .await?;
        if warm.rec.ops == 0 {
            bail!(
                "{}: every warm-up call failed: {}",
                target.name(),
                warm.rec.first_error.as_deref().unwrap_or("no calls ran")
            );
        }
    }
    for shape in [Shape::Fixed(args.rate), Shape::Full(args.concurrency)] {
        let before = cpu_mark(pids);
        let result = match shape {
            Shape::Fixed(rate) => {
                load::open_loop(caller.clone(), rate, duration, args.actors).await?
            }
            Shape::Full(c) => load::closed_loop(caller.clone(), c, duration, args.actors).await?,
        };
        let after = cpu_mark(pids);
        eprintln!(
            "  {:<12} {:<13} {:>9.1} calls/s, {} errors",
            target.name(),
            shape.to_string(),
            result.throughput(),
            result.rec.errors
        );
        rows.push(Row {
            target,
            shape,
            result,
            cpu: mcpu(&before, &after),
            owner_rss: procfs::memory(pids.owner).map(|m| m.rss),
        });
    }
    Ok(())
}

struct ReminderResult {
    registered: usize,
    register_secs: f64,
    fires_per_s: f64,
    /// daprd A CPU per fire, microseconds.
    owner_us_per_fire: Option<f64>,
    owner_mcpu: Option<f64>,
    /// The app's ceiling for the same callback, called directly.
    direct_per_s: f64,
    direct_errors: u64,
    direct_first_error: Option<String>,
}

/// Registers `n` reminders on the owner (64 at a time, each retried until
/// 204), waits for them to run, counts fires at the app.
async fn run_reminders(
    args: &ActorsArgs,
    app: &ActorApp,
    owner: &Daprd,
    pids: Pids,
) -> anyhow::Result<ReminderResult> {
    let secs = Duration::from_secs_f64(args.reminder_secs);
    // The app's ceiling: the remind callback PUT by the bench as daprd
    // sends it (HTTP/1.1 keep-alive, the same JSON body).
    let body = Bytes::from(format!(
        r#"{{"dueTime":"0s","period":"{}"}}"#,
        args.reminder_period
    ));
    let direct = Caller::http(
        app.port,
        args.reminders.max(1),
        |id| format!("/actors/{ACTOR_TYPE}/{id}/method/remind/r"),
        body,
        None,
    )?;
    let d = load::closed_loop(direct, args.concurrency, secs, args.reminders.max(1)).await?;

    let client = http_client();
    let register = |i: usize| {
        let client = client.clone();
        let uri = format!(
            "http://127.0.0.1:{}/v1.0/actors/{ACTOR_TYPE}/r{i}/reminders/r",
            owner.http_port
        );
        let body = Bytes::from(format!(
            r#"{{"dueTime":"0s","period":"{}"}}"#,
            args.reminder_period
        ));
        async move {
            let mut last = String::new();
            for _ in 0..200 {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(&uri)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))?;
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.into_body().collect().await?.to_bytes();
                        if status == StatusCode::NO_CONTENT || status == StatusCode::OK {
                            return anyhow::Ok(());
                        }
                        last = format!("{status} {}", String::from_utf8_lossy(&text));
                    }
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bail!("could not register reminder at {uri}: {last}")
        }
    };
    let started = Instant::now();
    let mut next = 0;
    while next < args.reminders {
        let batch: Vec<_> = (next..(next + 64).min(args.reminders))
            .map(register)
            .collect();
        next += batch.len();
        for r in futures::future::join_all(batch).await {
            r?;
        }
    }
    let register_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  reminders registered in {register_secs:.1} s; daprd A RSS {:.1} MiB",
        procfs::memory(owner.pid()).map_or(0.0, |m| procfs::mib(m.rss))
    );
    // Let every reminder start and settle on its period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (f0, before) = (app.fired.load(Ordering::Relaxed), cpu_mark(pids));
    tokio::time::sleep(secs).await;
    let (f1, after) = (app.fired.load(Ordering::Relaxed), cpu_mark(pids));
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let fires = f1.saturating_sub(f0);
    if fires == 0 {
        bail!(
            "no reminder fired in {:.1} s; daprd A log:\n{}",
            wall,
            owner.log_tail()
        );
    }
    let cpu = mcpu(&before, &after);
    Ok(ReminderResult {
        registered: args.reminders,
        register_secs,
        fires_per_s: fires as f64 / wall,
        owner_us_per_fire: cpu[0].map(|(_, s)| s * 1e6 / fires as f64),
        owner_mcpu: cpu[0].map(|(m, _)| m),
        direct_per_s: d.throughput(),
        direct_errors: d.rec.errors,
        direct_first_error: d.rec.first_error,
    })
}

pub async fn run(args: ActorsArgs) -> anyhow::Result<()> {
    if !args.daprd.is_file() {
        bail!(
            "daprd binary {} not found; build it with `cargo build --release -p daprd` or pass --daprd",
            args.daprd.display()
        );
    }
    let tmp = tempfile::tempdir().context("cannot create a temp dir")?;
    let placement = tokio::task::block_in_place(|| start_placement(&args.placement, tmp.path()))?;
    let app = start_app(args.partitions)?;

    // daprd A's actor state store (reminders); daprd C gets none.
    let owner_res = tmp.path().join("owner-resources");
    let caller_res = tmp.path().join("caller-resources");
    std::fs::create_dir_all(&owner_res).context("cannot create the resources dir")?;
    std::fs::create_dir_all(&caller_res).context("cannot create the resources dir")?;
    let store = match args.reminder_store {
        ReminderStore::Sqlite => format!(
            "    type: state.sqlite\n    version: v1\n    metadata:\n      - name: connectionString\n        value: \"{}\"\n      - name: actorStateStore\n        value: \"true\"\n",
            tmp.path().join("actors.db").display()
        ),
        ReminderStore::InMemory => "    type: state.in-memory\n    version: v1\n    metadata:\n      - name: actorStateStore\n        value: \"true\"\n".to_owned(),
    };
    std::fs::write(
        owner_res.join("actorstore.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: actorstore\nspec:\n{store}"
        ),
    )
    .context("cannot write the actor state store component")?;

    let placement_addr = format!("127.0.0.1:{}", placement.port);
    let ports = free_ports(2)?;
    let owner_args = vec![
        "--app-port".to_owned(),
        app.port.to_string(),
        "--placement-host-address".to_owned(),
        placement_addr.clone(),
        "--dapr-internal-grpc-port".to_owned(),
        ports[0].to_string(),
        "--log-level".to_owned(),
        "warn".to_owned(),
    ];
    let owner = start_daprd(&Launch {
        bin: &args.daprd,
        app_id: HOST_ID,
        data_dir: &tmp.path().join("owner-data"),
        resources_path: Some(&owner_res),
        log: &tmp.path().join("owner.log"),
        extra_args: &owner_args,
    })?;
    let caller_args = vec![
        "--placement-host-address".to_owned(),
        placement_addr,
        "--dapr-internal-grpc-port".to_owned(),
        ports[1].to_string(),
        "--log-level".to_owned(),
        "warn".to_owned(),
    ];
    let caller = start_daprd(&Launch {
        bin: &args.daprd,
        app_id: CALLER_ID,
        data_dir: &tmp.path().join("caller-data"),
        resources_path: Some(&caller_res),
        log: &tmp.path().join("caller.log"),
        extra_args: &caller_args,
    })?;
    let pids = Pids {
        owner: owner.pid(),
        caller: caller.pid(),
        placement: placement.child.id(),
    };
    eprintln!(
        "actor app on 127.0.0.1:{}, placement pid {}, daprd A ({HOST_ID}, owner, pid {}), daprd C ({CALLER_ID}, no app, pid {})",
        app.port, pids.placement, pids.owner, pids.caller
    );
    let (rss_stop, rss_task) = procfs::rss_sampler(vec![pids.owner, pids.caller, pids.placement]);
    let payload = Bytes::from(
        (0..args.payload_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );

    let mut rows = Vec::new();
    let result = async {
        let sidecar_path = |id: &str| format!("/v1.0/actors/{ACTOR_TYPE}/{id}/method/{METHOD}");
        for &target in &args.targets {
            let n = args.actors;
            let c = match target {
                ActorTarget::Direct => Caller::http(
                    app.port,
                    n,
                    |id| format!("/actors/{ACTOR_TYPE}/{id}/method/{METHOD}"),
                    payload.clone(),
                    Some(payload.len()),
                )?,
                ActorTarget::Http => Caller::http(
                    owner.http_port,
                    n,
                    sidecar_path,
                    payload.clone(),
                    Some(payload.len()),
                )?,
                ActorTarget::HttpRemote => Caller::http(
                    caller.http_port,
                    n,
                    sidecar_path,
                    payload.clone(),
                    Some(payload.len()),
                )?,
                ActorTarget::Grpc => Caller::grpc(owner.grpc_port, n, &payload).await?,
                ActorTarget::GrpcRemote => Caller::grpc(caller.grpc_port, n, &payload).await?,
            };
            wait_callable(&c, target.name()).await?;
            run_target(&args, target, c, pids, &mut rows).await?;
        }
        let reminders = if args.reminders > 0 {
            eprintln!(
                "  reminders: registering {} (period {})",
                args.reminders, args.reminder_period
            );
            Some(run_reminders(&args, &app, &owner, pids).await?)
        } else {
            None
        };
        anyhow::Ok(reminders)
    }
    .await;
    let _ = rss_stop.send(());
    let rss = rss_task.await.unwrap_or_default();
    if result.is_err() {
        eprintln!("daprd A log (tail):\n{}", owner.log_tail());
        eprintln!("daprd C log (tail):\n{}", caller.log_tail());
    }
    stop_daprd(caller);
    stop_daprd(owner);
    drop(placement);
    drop(app);
    let reminders = result?;
    print(&args, &rows, reminders.as_ref(), &rss);
    Ok(())
}

// ------------------------------------------------------------------- report --

fn m(v: Option<(f64, f64)>) -> String {
    v.map_or_else(|| "-".to_owned(), |(x, _)| format!("{x:.0}"))
}

fn print(args: &ActorsArgs, rows: &[Row], rem: Option<&ReminderResult>, rss: &[u64]) {
    println!("== dapr-rs actor benchmark ==");
    println!(
        "actor type {ACTOR_TYPE}, method {METHOD} (the app echoes a {} B body), {} actor ids; \
         {:.1} s per phase, {:.1} s warm-up per target; daprd {}",
        args.payload_size,
        args.actors,
        args.duration,
        args.warmup,
        args.daprd.display()
    );
    println!(
        "direct = PUT /actors/{ACTOR_TYPE}/<id>/method/{METHOD} on the app; http/grpc = \
         /v1.0/actors/.../method/{METHOD} / InvokeActor on daprd A (the owner); *-remote = the \
         same on daprd C (no app, not the owner: C -> internal gRPC -> A -> app)"
    );
    println!(
        "fixed = open loop at {} calls/s, latency from the scheduled send time; full = closed \
         loop, {} workers. latencies in ms. load average at the end: {}",
        args.rate,
        args.concurrency,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "{:<12} {:<13} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "target", "shape", "calls/s", "errors", "p50", "p90", "p99", "max"
    );
    println!("{}", "-".repeat(80));
    for r in rows {
        let h = &r.result.rec.save;
        println!(
            "{:<12} {:<13} {:>9.1} {:>6} {:>8} {:>8} {:>8} {:>8}",
            r.target.name(),
            r.shape.to_string(),
            r.result.throughput(),
            r.result.rec.errors,
            cell(q(h, 0.5)),
            cell(q(h, 0.9)),
            cell(q(h, 0.99)),
            cell((!h.is_empty()).then(|| h.max())),
        );
    }

    let direct = |shape: Shape| {
        rows.iter()
            .find(|r| r.target == ActorTarget::Direct && r.shape == shape)
    };
    if rows.iter().any(|r| r.target != ActorTarget::Direct)
        && rows.iter().any(|r| r.target == ActorTarget::Direct)
    {
        println!();
        println!(
            "added latency (target minus direct at the same percentile, ms) and throughput ratio"
        );
        println!(
            "{:<12} {:<13} {:>8} {:>8} {:>8}  {:>10}",
            "target", "shape", "p50", "p90", "p99", "throughput"
        );
        println!("{}", "-".repeat(65));
        for s in rows.iter().filter(|r| r.target != ActorTarget::Direct) {
            let Some(d) = direct(s.shape) else { continue };
            let (sh, dh) = (&s.result.rec.save, &d.result.rec.save);
            let ratio = if d.result.throughput() > 0.0 {
                format!("{:.3}x", s.result.throughput() / d.result.throughput())
            } else {
                "-".to_owned()
            };
            println!(
                "{:<12} {:<13} {:>8} {:>8} {:>8}  {:>10}",
                s.target.name(),
                s.shape.to_string(),
                delta(q(sh, 0.5), q(dh, 0.5)),
                delta(q(sh, 0.9), q(dh, 0.9)),
                delta(q(sh, 0.99), q(dh, 0.99)),
                ratio
            );
        }
        println!("(throughput = target calls/s / direct calls/s in the same shape)");
    }

    println!();
    println!(
        "CPU (mCPU = CPU s / wall s x 1000 over the phase, /proc/<pid>/stat, 10 ms ticks); \
         bench = load generator + actor app"
    );
    println!(
        "{:<12} {:<13} {:>9} {:>9} {:>9} {:>9}  {:>12}",
        "target", "shape", "daprd A", "daprd C", "placement", "bench", "A RSS after"
    );
    println!("{}", "-".repeat(80));
    for r in rows {
        println!(
            "{:<12} {:<13} {:>9} {:>9} {:>9} {:>9}  {:>12}",
            r.target.name(),
            r.shape.to_string(),
            m(r.cpu[0]),
            m(r.cpu[1]),
            m(r.cpu[2]),
            m(r.cpu[3]),
            r.owner_rss
                .map_or_else(|| "-".to_owned(), |b| format!("{:.1} MiB", procfs::mib(b))),
        );
    }
    println!(
        "RSS max (VmRSS every 100 ms from ready to stop): daprd A {:.1} MiB, daprd C {:.1} MiB, placement {:.1} MiB",
        procfs::mib(rss.first().copied().unwrap_or(0)),
        procfs::mib(rss.get(1).copied().unwrap_or(0)),
        procfs::mib(rss.get(2).copied().unwrap_or(0)),
    );

    if let Some(r) = rem {
        let demand = period_secs(&args.reminder_period).map(|p| r.registered as f64 / p);
        println!();
        println!(
            "reminders: {} on daprd A, period {}, {} store, {} partitions (registered in {:.1} s{})",
            r.registered,
            args.reminder_period,
            match args.reminder_store {
                ReminderStore::Sqlite => "state.sqlite",
                ReminderStore::InMemory => "state.in-memory",
            },
            args.partitions,
            r.register_secs,
            demand.map_or_else(String::new, |d| format!("; demand {d:.0} fires/s"))
        );
        println!(
            "  fired {:.0}/s over {:.1} s; daprd A {} mCPU, {} us CPU per fire",
            r.fires_per_s,
            args.reminder_secs,
            r.owner_mcpu
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}")),
            r.owner_us_per_fire
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
        );
        println!(
            "  direct: the app's remind callback PUT by the bench at full speed ({} workers): {:.0}/s ({} errors) -> daprd reaches {:.3}x of it",
            args.concurrency,
            r.direct_per_s,
            r.direct_errors,
            if r.direct_per_s > 0.0 {
                r.fires_per_s / r.direct_per_s
            } else {
                0.0
            }
        );
        if demand.is_some_and(|d| r.fires_per_s >= 0.95 * d) {
            println!(
                "  (demand-bound: every reminder fired on time; raise --reminders to find the limit)"
            );
        }
        if let Some(e) = &r.direct_first_error {
            println!("  direct reminder callback first error: {e}");
        }
    }

    println!();
    for r in rows
        .iter()
        .filter(|r| r.target != ActorTarget::Direct && matches!(r.shape, Shape::Fixed(_)))
    {
        if let Some(p99) = q(&r.result.rec.save, 0.99) {
            let p99 = p99 as f64 / 1e6;
            println!(
                "target p99 <= {TARGET_P99_MS} ms at {}/s: {} {p99:.3} ms {}",
                args.rate,
                r.target.name(),
                if p99 <= TARGET_P99_MS {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    if let Some(r) = rem {
        println!(
            "target >= {TARGET_REMINDERS_PER_S:.0} reminders/s: {:.0}/s {}",
            r.fires_per_s,
            if r.fires_per_s >= TARGET_REMINDERS_PER_S {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!(
        "Dapr 1.17 reference (published, other machine): actor call p99 {DAPR_P99_MS} ms at 500 \
         calls/s, {DAPR_REMINDERS_PER_S:.0} reminders/s"
    );

    let errors: Vec<_> = rows
        .iter()
        .filter_map(|r| {
            r.result.rec.first_error.as_ref().map(|e| {
                format!(
                    "  {} {}: {} errors ({} unfinished), first: {e}",
                    r.target.name(),
                    r.shape,
                    r.result.rec.errors,
                    r.result.unfinished
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        println!();
        println!("errors:");
        for e in errors {
            println!("{e}");
        }
    }
}

/// Seconds of a simple Go duration (`100ms`, `1s`, `2m`); None otherwise.
fn period_secs(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    (n > 0.0).then_some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::period_secs;

    #[test]
    fn period_parses_simple_go_durations() {
        assert_eq!(period_secs("100ms"), Some(0.1));
        assert_eq!(period_secs("2s"), Some(2.0));
        assert_eq!(period_secs("1m"), Some(60.0));
        assert_eq!(period_secs("1h2m"), None);
        assert_eq!(period_secs("ms"), None);
    }
}
