//! `bench invoke`: service invocation of a tiny echo app, direct (client ->
//! app) vs through two sidecars (client -> daprd A -> daprd B -> app), over
//! HTTP and gRPC, in one run.

use std::{
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::Path,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use dapr::dapr::proto::{
    common::v1::{InvokeRequest, InvokeResponse},
    runtime::v1::{
        BindingEventRequest, BindingEventResponse, JobEventRequest, JobEventResponse,
        ListInputBindingsResponse, ListTopicSubscriptionsResponse, TopicEventBulkRequest,
        TopicEventBulkResponse, TopicEventRequest, TopicEventResponse,
        app_callback_client::AppCallbackClient,
        app_callback_server::{AppCallback, AppCallbackServer},
    },
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::sync::oneshot;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint, server::TcpIncoming},
};

use crate::{
    InvokeArgs, Protocol,
    daprd::{Daprd, Launch, stop_daprd},
    load::{self, OpClient, PhaseResult},
    procfs,
    report::Shape,
};

const CALLER_ID: &str = "bench-caller";
const CALLEE_ID: &str = "bench-callee";
/// The --mtls pair.
const MTLS_CALLER_ID: &str = "bench-caller-mtls";
const MTLS_CALLEE_ID: &str = "bench-callee-mtls";
const METHOD: &str = "echo";

fn payload(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

// ---------------------------------------------------------------- echo apps --

/// An echo app on its own thread and tokio runtime (2 workers), so it does
/// not share the load generator's workers. Dropping it stops it.
struct EchoApp {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// HTTP: any request gets its body back with 200.
async fn http_echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// gRPC: `AppCallback/OnInvoke` returns the request's data.
struct GrpcEcho;

#[tonic::async_trait]
impl AppCallback for GrpcEcho {
    async fn on_invoke(
        &self,
        req: tonic::Request<InvokeRequest>,
    ) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
        let req = req.into_inner();
        Ok(tonic::Response::new(InvokeResponse {
            data: req.data,
            content_type: req.content_type,
        }))
    }
    async fn list_topic_subscriptions(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<ListTopicSubscriptionsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn on_topic_event(
        &self,
        _: tonic::Request<TopicEventRequest>,
    ) -> Result<tonic::Response<TopicEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo app"))
    }
    async fn list_input_bindings(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<ListInputBindingsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn on_binding_event(
        &self,
        _: tonic::Request<BindingEventRequest>,
    ) -> Result<tonic::Response<BindingEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo app"))
    }
    async fn on_bulk_topic_event(
        &self,
        _: tonic::Request<TopicEventBulkRequest>,
    ) -> Result<tonic::Response<TopicEventBulkResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo app"))
    }
    async fn on_job_event(
        &self,
        _: tonic::Request<JobEventRequest>,
    ) -> Result<tonic::Response<JobEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo app"))
    }
}

fn start_echo_app(protocol: Protocol) -> anyhow::Result<EchoApp> {
    let listener = StdTcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("cannot bind the echo app on 127.0.0.1")?;
    listener
        .set_nonblocking(true)
        .context("cannot make the echo app's listener non-blocking")?;
    let port = listener.local_addr()?.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("echo-app")
        .enable_all()
        .build()
        .context("cannot build the echo app's runtime")?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("echo-app-main".into())
        .spawn(move || {
            let served = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                match protocol {
                    Protocol::Http => serve_http(listener, stop_rx).await,
                    Protocol::Grpc => {
                        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                        tonic::transport::Server::builder()
                            .add_service(AppCallbackServer::new(GrpcEcho))
                            .serve_with_incoming_shutdown(incoming, async {
                                let _ = stop_rx.await;
                            })
                            .await?;
                        anyhow::Ok(())
                    }
                }
            });
            if let Err(e) = served {
                eprintln!("echo app failed: {e:#}");
            }
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .context("cannot start the echo app thread")?;
    Ok(EchoApp {
        port,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("echo app: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(http_echo))
                .await;
        });
    }
}

// ------------------------------------------------------------------ clients --

#[derive(Clone)]
enum Caller {
    Http(Arc<HttpCaller>),
    Grpc(Arc<GrpcCaller>),
}

struct HttpCaller {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    uri: Uri,
    payload: Bytes,
}

struct GrpcCaller {
    client: AppCallbackClient<Channel>,
    /// `dapr-app-id` metadata (sidecar target: daprd A proxies by it).
    app_id: Option<MetadataValue<Ascii>>,
    request: InvokeRequest,
    payload_len: usize,
}

impl Caller {
    fn http(port: u16, path: &str, payload: Bytes) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new()).build(connector);
        let uri = format!("http://127.0.0.1:{port}{path}")
            .parse()
            .context("building the invoke URI")?;
        Ok(Caller::Http(Arc::new(HttpCaller {
            client,
            uri,
            payload,
        })))
    }

    async fn grpc(port: u16, app_id: Option<&str>, payload: &Bytes) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .context("gRPC endpoint")?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port} over gRPC"))?;
        let mut request = InvokeRequest {
            method: METHOD.to_owned(),
            data: Some(Default::default()),
            content_type: "application/octet-stream".to_owned(),
            http_extension: None,
        };
        if let Some(d) = request.data.as_mut() {
            d.value = payload.to_vec();
        }
        let app_id = app_id
            .map(|id| id.parse::<MetadataValue<Ascii>>())
            .transpose()
            .context("dapr-app-id metadata")?;
        Ok(Caller::Grpc(Arc::new(GrpcCaller {
            client: AppCallbackClient::new(channel),
            app_id,
            request,
            payload_len: payload.len(),
        })))
    }

    async fn call(&self) -> anyhow::Result<()> {
        match self {
            Caller::Http(c) => {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(c.uri.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(c.payload.clone()))?;
                let resp = c.client.request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                if status != StatusCode::OK {
                    bail!(
                        "POST {}: {status} {}",
                        c.uri,
                        String::from_utf8_lossy(&body)
                    );
                }
                if body.len() != c.payload.len() {
                    bail!(
                        "POST {}: {} bytes back, expected {}",
                        c.uri,
                        body.len(),
                        c.payload.len()
                    );
                }
            }
            Caller::Grpc(c) => {
                let mut req = tonic::Request::new(c.request.clone());
                if let Some(id) = &c.app_id {
                    req.metadata_mut().insert("dapr-app-id", id.clone());
                }
                let resp = c.client.clone().on_invoke(req).await?.into_inner();
                let n = resp.data.map_or(0, |d| d.value.len());
                if n != c.payload_len {
                    bail!("OnInvoke: {n} bytes back, expected {}", c.payload_len);
                }
            }
        }
        Ok(())
    }
}

/// The load loops run "save then get"; an invocation is one call, so `save`
/// is the call and `get` does nothing. The `save` histogram is the one
/// reported (fixed: completion minus scheduled start; full: the call alone).
impl OpClient for Caller {
    async fn save(&self, _key: usize) -> anyhow::Result<()> {
        self.call().await
    }

    async fn get(&self, _key: usize) -> anyhow::Result<()> {
        Ok(())
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

/// Retries a call until it succeeds (the callee registers itself in name
/// resolution as it starts) or 30 s pass.
async fn wait_callable(caller: &Caller) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = match tokio::time::timeout(load::CALL_TIMEOUT, caller.call()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("the sidecar path did not work within 30 s: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------- phases --

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Sidecar,
    /// The same path with --enable-mtls between the sidecars.
    SidecarMtls,
    /// Two chained nginx reverse proxies (--reference-proxy).
    Nginx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Sidecar => "sidecar",
            Target::SidecarMtls => "mtls",
            Target::Nginx => "nginx",
        }
    }
}

// ------------------------------------------------------------------- sentry --

/// A dapr-sentry process for --mtls, with generated credentials in a temp
/// dir. Dropping it kills the process.
struct SentryProc {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for SentryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sentry(bin: &Path, dir: &Path) -> anyhow::Result<SentryProc> {
    if !bin.is_file() {
        bail!(
            "dapr-sentry binary {} not found; build it with `cargo build --release -p dapr-sentry` or pass --sentry",
            bin.display()
        );
    }
    let creds = dir.join("sentry-creds");
    std::fs::create_dir_all(&creds).context("cannot create the Sentry credentials dir")?;
    let ports = crate::daprd::free_ports(3)?;
    let log = std::fs::File::create(dir.join("sentry.log")).context("cannot create sentry.log")?;
    let child = std::process::Command::new(bin)
        .args([
            "--port",
            &ports[0].to_string(),
            "--listen-address",
            "127.0.0.1",
        ])
        .args(["--healthz-port", &ports[1].to_string()])
        .args(["--healthz-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &ports[2].to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .arg("--issuer-credentials")
        .arg(&creds)
        .env("NAMESPACE", "default")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let sentry = SentryProc {
        child,
        port: ports[0],
        ca: creds.join("ca.crt"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::daprd::probe(ports[1], "GET", "/healthz") != Some(200) {
        if Instant::now() >= deadline {
            bail!("dapr-sentry did not become healthy within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(sentry)
}

/// mCPU of a phase: CPU seconds / wall seconds x 1000.
#[derive(Default, Clone, Copy)]
struct Mcpu {
    bench: Option<f64>,
    daprd_a: Option<f64>,
    daprd_b: Option<f64>,
}

struct Row {
    protocol: Protocol,
    target: Target,
    shape: Shape,
    result: PhaseResult,
    mcpu: Mcpu,
}

struct ProtocolRun {
    protocol: Protocol,
    rss_max: [u64; 2],
    pids: [u32; 2],
    /// RSS maxima and pids of the --mtls pair.
    mtls: Option<([u64; 2], [u32; 2])>,
}

#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    bench: Option<Duration>,
    a: Option<Duration>,
    b: Option<Duration>,
}

fn cpu_mark(pids: [u32; 2]) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        bench: procfs::cpu_time(None),
        a: procfs::cpu_time(Some(pids[0])),
        b: procfs::cpu_time(Some(pids[1])),
    }
}

fn mcpu(before: &CpuMark, after: &CpuMark) -> Mcpu {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let m = |x: Option<Duration>, y: Option<Duration>| -> Option<f64> {
        let d = y?.checked_sub(x?)?;
        (wall > 0.0).then(|| d.as_secs_f64() / wall * 1000.0)
    };
    Mcpu {
        bench: m(before.bench, after.bench),
        daprd_a: m(before.a, after.a),
        daprd_b: m(before.b, after.b),
    }
}

async fn run_target(
    args: &InvokeArgs,
    protocol: Protocol,
    target: Target,
    caller: Caller,
    pids: [u32; 2],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.duration);
    if args.warmup > 0.0 {
        let warm = load::closed_loop(
            caller.clone(),
            args.concurrency,
            Duration::from_secs_f64(args.warmup),
            1,
        )
        .await?;
        if warm.rec.ops == 0 {
            bail!(
                "{} {}: every warm-up call failed: {}",
                protocol_name(protocol),
                target.name(),
                warm.rec.first_error.as_deref().unwrap_or("no calls ran")
            );
        }
    }
    let shapes = [Shape::Fixed(args.rate), Shape::Full(args.concurrency)];
    for shape in shapes {
        let before = cpu_mark(pids);
        let result = match shape {
            Shape::Fixed(rate) => load::open_loop(caller.clone(), rate, duration, 1).await?,
            Shape::Full(c) => load::closed_loop(caller.clone(), c, duration, 1).await?,
        };
        let after = cpu_mark(pids);
        eprintln!(
            "  {:<4} {:<7} {:<13} {:>9.1} req/s, {} errors",
            protocol_name(protocol),
            target.name(),
            shape.to_string(),
            result.throughput(),
            result.rec.errors
        );
        rows.push(Row {
            protocol,
            target,
            shape,
            result,
            mcpu: mcpu(&before, &after),
        });
    }
    Ok(())
}

async fn run_protocol(
    args: &InvokeArgs,
    protocol: Protocol,
    body: &Bytes,
    rows: &mut Vec<Row>,
    sentry: Option<&SentryProc>,
) -> anyhow::Result<ProtocolRun> {
    let app = start_echo_app(protocol)?;
    let tmp = tempfile::tempdir().context("cannot create a temp dir")?;
    let resources = tmp.path().join("resources");
    std::fs::create_dir_all(&resources).context("cannot create the resources dir")?;
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: bench\nspec:\n  \
             nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: {}\n",
            tmp.path().join("nr.db").display()
        ),
    )
    .context("cannot write the configuration file")?;
    // Observability under test: a Zipkin sink (an HTTP echo app) for spans.
    let span_sink = match args.tracing_sampling {
        Some(rate) => {
            let sink = start_echo_app(Protocol::Http)?;
            let block = format!(
                "  tracing:\n    samplingRate: \"{rate}\"\n    zipkin:\n      endpointAddress: http://127.0.0.1:{}/api/v2/spans\n",
                sink.port
            );
            std::fs::OpenOptions::new()
                .append(true)
                .open(&config)
                .and_then(|mut f| std::io::Write::write_all(&mut f, block.as_bytes()))
                .context("cannot write the tracing configuration")?;
            Some(sink)
        }
        None => None,
    };
    let cfg = config.display().to_string();
    let metrics_flag = format!("--enable-metrics={}", args.metrics);

    let mut callee_args = vec![
        "--config".to_owned(),
        cfg.clone(),
        "--app-port".to_owned(),
        app.port.to_string(),
        metrics_flag.clone(),
    ];
    if protocol == Protocol::Grpc {
        callee_args.extend(["--app-protocol".to_owned(), "grpc".to_owned()]);
    }
    let callee_data = tmp.path().join("callee-data");
    let callee_log = tmp.path().join("callee.log");
    let callee = start_daprd(&Launch {
        bin: &args.daprd,
        app_id: CALLEE_ID,
        data_dir: &callee_data,
        resources_path: Some(&resources),
        log: &callee_log,
        extra_args: &callee_args,
    })?;
    let caller_args = vec!["--config".to_owned(), cfg, metrics_flag];
    let caller_data = tmp.path().join("caller-data");
    let caller_log = tmp.path().join("caller.log");
    let caller = start_daprd(&Launch {
        bin: &args.daprd,
        app_id: CALLER_ID,
        data_dir: &caller_data,
        resources_path: Some(&resources),
        log: &caller_log,
        extra_args: &caller_args,
    })?;
    // The --mtls pair: same app, same flags, plus mTLS from Sentry.
    let mtls_pair = match sentry {
        Some(s) => {
            let mtls_flags = [
                "--enable-mtls".to_owned(),
                "--sentry-address".to_owned(),
                format!("127.0.0.1:{}", s.port),
                "--trust-anchors-file".to_owned(),
                s.ca.display().to_string(),
            ];
            let mut callee_m_args = callee_args.clone();
            callee_m_args.extend(mtls_flags.iter().cloned());
            let callee_m = start_daprd(&Launch {
                bin: &args.daprd,
                app_id: MTLS_CALLEE_ID,
                data_dir: &tmp.path().join("callee-mtls-data"),
                resources_path: Some(&resources),
                log: &tmp.path().join("callee-mtls.log"),
                extra_args: &callee_m_args,
            })?;
            let mut caller_m_args = caller_args.clone();
            caller_m_args.extend(mtls_flags.iter().cloned());
            let caller_m = start_daprd(&Launch {
                bin: &args.daprd,
                app_id: MTLS_CALLER_ID,
                data_dir: &tmp.path().join("caller-mtls-data"),
                resources_path: Some(&resources),
                log: &tmp.path().join("caller-mtls.log"),
                extra_args: &caller_m_args,
            })?;
            Some((caller_m, callee_m))
        }
        None => None,
    };
    let mtls_pids = mtls_pair.as_ref().map(|(a, b)| [a.pid(), b.pid()]);
    let pids = [caller.pid(), callee.pid()];
    eprintln!(
        "{}: echo app on 127.0.0.1:{}, daprd A ({CALLER_ID}, pid {}), daprd B ({CALLEE_ID}, pid {})",
        protocol_name(protocol),
        app.port,
        pids[0],
        pids[1]
    );
    if let Some(p) = mtls_pids {
        eprintln!(
            "{}: mTLS pair: daprd A ({MTLS_CALLER_ID}, pid {}), daprd B ({MTLS_CALLEE_ID}, pid {})",
            protocol_name(protocol),
            p[0],
            p[1]
        );
    }
    let mut sampled = pids.to_vec();
    sampled.extend(mtls_pids.iter().flatten());
    let (rss_stop, rss_task) = procfs::rss_sampler(sampled);

    let result = async {
        let (direct, sidecar) = match protocol {
            Protocol::Http => (
                Caller::http(app.port, &format!("/{METHOD}"), body.clone())?,
                Caller::http(
                    caller.http_port,
                    &format!("/v1.0/invoke/{CALLEE_ID}/method/{METHOD}"),
                    body.clone(),
                )?,
            ),
            Protocol::Grpc => (
                Caller::grpc(app.port, None, body).await?,
                Caller::grpc(caller.grpc_port, Some(CALLEE_ID), body).await?,
            ),
        };
        let mtls = match &mtls_pair {
            Some((a, _)) => Some(match protocol {
                Protocol::Http => Caller::http(
                    a.http_port,
                    &format!("/v1.0/invoke/{MTLS_CALLEE_ID}/method/{METHOD}"),
                    body.clone(),
                )?,
                Protocol::Grpc => Caller::grpc(a.grpc_port, Some(MTLS_CALLEE_ID), body).await?,
            }),
            None => None,
        };
        wait_callable(&direct).await?;
        wait_callable(&sidecar).await?;
        if let Some(m) = &mtls {
            wait_callable(m).await?;
        }
        run_target(args, protocol, Target::Direct, direct, pids, rows).await?;
        run_target(args, protocol, Target::Sidecar, sidecar, pids, rows).await?;
        if let (Some(m), Some(p)) = (mtls, mtls_pids) {
            run_target(args, protocol, Target::SidecarMtls, m, p, rows).await?;
        }
        // The reference: the same HTTP path through two nginx hops.
        if let (Protocol::Http, Some(bin)) = (protocol, &args.reference_proxy) {
            let pair = crate::reference_proxy::NginxPair::start(bin, app.port)?;
            let via = Caller::http(pair.port, &format!("/{METHOD}"), body.clone())?;
            wait_callable(&via).await?;
            run_target(args, protocol, Target::Nginx, via, pair.pids(), rows).await?;
        }
        anyhow::Ok(())
    }
    .await;

    let _ = rss_stop.send(());
    let rss = rss_task.await.unwrap_or_default();
    if result.is_err() {
        eprintln!("daprd A log (tail):\n{}", caller.log_tail());
        eprintln!("daprd B log (tail):\n{}", callee.log_tail());
        if let Some((a, b)) = &mtls_pair {
            eprintln!("mTLS daprd A log (tail):\n{}", a.log_tail());
            eprintln!("mTLS daprd B log (tail):\n{}", b.log_tail());
        }
    }
    stop_daprd(caller);
    stop_daprd(callee);
    if let Some((a, b)) = mtls_pair {
        stop_daprd(a);
        stop_daprd(b);
    }
    drop(app);
    drop(span_sink);
    result?;
    Ok(ProtocolRun {
        protocol,
        rss_max: [
            rss.first().copied().unwrap_or(0),
            rss.get(1).copied().unwrap_or(0),
        ],
        pids,
        mtls: mtls_pids.map(|p| {
            (
                [
                    rss.get(2).copied().unwrap_or(0),
                    rss.get(3).copied().unwrap_or(0),
                ],
                p,
            )
        }),
    })
}

pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    if !Path::new(&args.daprd).is_file() {
        bail!(
            "daprd binary {} not found; build it with `cargo build --release -p daprd` or pass --daprd",
            args.daprd.display()
        );
    }
    let body = payload(args.payload_size);
    let sentry_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let sentry = if args.mtls {
        Some(tokio::task::block_in_place(|| {
            start_sentry(&args.sentry, sentry_dir.path())
        })?)
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for &protocol in &args.protocols {
        runs.push(run_protocol(&args, protocol, &body, &mut rows, sentry.as_ref()).await?);
    }
    drop(sentry);
    print(&args, &rows, &runs);
    Ok(())
}

// ------------------------------------------------------------------- report --

use crate::report::{cell, delta, q};

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Grpc => "grpc",
    }
}

fn m(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"))
}

fn print(args: &InvokeArgs, rows: &[Row], runs: &[ProtocolRun]) {
    println!("== dapr-rs service invocation benchmark ==");
    println!(
        "{} B POST echoed back by an app on 127.0.0.1; {:.1} s per phase, {:.1} s warm-up per \
         target; daprd {}",
        args.payload_size,
        args.duration,
        args.warmup,
        args.daprd.display()
    );
    println!(
        "direct  = client -> app. sidecar = client -> daprd A ({CALLER_ID}, no app) -> daprd B \
         ({CALLEE_ID}, --app-port) -> app"
    );
    println!(
        "http: POST /{METHOD} vs POST /v1.0/invoke/{CALLEE_ID}/method/{METHOD} (hyper keep-alive \
         pool); grpc: AppCallback/OnInvoke, one HTTP/2 channel, sidecar = daprd A's gRPC port \
         with dapr-app-id: {CALLEE_ID} (proxied)"
    );
    println!(
        "fixed = open loop at {} req/s, latency from the scheduled send time; full = closed \
         loop, {} workers. latencies in ms",
        args.rate, args.concurrency
    );
    println!();
    println!(
        "{:<5} {:<8} {:<13} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "proto", "target", "shape", "req/s", "errors", "p50", "p90", "p99", "max"
    );
    println!("{}", "-".repeat(82));
    for r in rows {
        let h = &r.result.rec.save;
        println!(
            "{:<5} {:<8} {:<13} {:>9.1} {:>6} {:>8} {:>8} {:>8} {:>8}",
            protocol_name(r.protocol),
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

    println!();
    println!(
        "added latency (sidecar minus direct at the same percentile, ms) and throughput ratio"
    );
    println!(
        "{:<6} {:<13} {:>8} {:>8} {:>8}  {:>10}",
        "proto", "shape", "p50", "p90", "p99", "throughput"
    );
    println!("{}", "-".repeat(59));
    for s in rows.iter().filter(|r| r.target != Target::Direct) {
        let Some(d) = rows
            .iter()
            .find(|r| r.target == Target::Direct && r.protocol == s.protocol && r.shape == s.shape)
        else {
            continue;
        };
        let (sh, dh) = (&s.result.rec.save, &d.result.rec.save);
        let ratio = if d.result.throughput() > 0.0 {
            format!("{:.3}x", s.result.throughput() / d.result.throughput())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<6} {:<13} {:>8} {:>8} {:>8}  {:>10}",
            format!(
                "{}{}",
                protocol_name(s.protocol),
                match s.target {
                    Target::SidecarMtls => "+m",
                    Target::Nginx => "+ngx",
                    _ => "",
                }
            ),
            s.shape.to_string(),
            delta(q(sh, 0.5), q(dh, 0.5)),
            delta(q(sh, 0.9), q(dh, 0.9)),
            delta(q(sh, 0.99), q(dh, 0.99)),
            ratio
        );
    }
    println!(
        "(throughput = sidecar req/s / direct req/s in the same shape; +m = the mTLS pair; \
         +ngx = two chained nginx proxies instead of the sidecars)"
    );

    if rows.iter().any(|r| r.target == Target::SidecarMtls) {
        println!();
        println!("what mTLS adds (mtls pair minus plaintext pair at the same percentile, ms)");
        println!(
            "{:<5} {:<13} {:>8} {:>8} {:>8}  {:>10}",
            "proto", "shape", "p50", "p90", "p99", "throughput"
        );
        println!("{}", "-".repeat(58));
        for m in rows.iter().filter(|r| r.target == Target::SidecarMtls) {
            let Some(s) = rows.iter().find(|r| {
                r.target == Target::Sidecar && r.protocol == m.protocol && r.shape == m.shape
            }) else {
                continue;
            };
            let (mh, sh) = (&m.result.rec.save, &s.result.rec.save);
            let ratio = if s.result.throughput() > 0.0 {
                format!("{:.3}x", m.result.throughput() / s.result.throughput())
            } else {
                "-".to_owned()
            };
            println!(
                "{:<5} {:<13} {:>8} {:>8} {:>8}  {:>10}",
                protocol_name(m.protocol),
                m.shape.to_string(),
                delta(q(mh, 0.5), q(sh, 0.5)),
                delta(q(mh, 0.9), q(sh, 0.9)),
                delta(q(mh, 0.99), q(sh, 0.99)),
                ratio
            );
        }
    }

    println!();
    println!(
        "CPU (mCPU = CPU s / wall s x 1000, /proc/<pid>/stat over the phase, 10 ms ticks); \
         bench = load generator + echo app"
    );
    println!(
        "{:<5} {:<8} {:<13} {:>9} {:>9} {:>9}",
        "proto", "target", "shape", "daprd A", "daprd B", "bench"
    );
    println!("{}", "-".repeat(58));
    for r in rows {
        println!(
            "{:<5} {:<8} {:<13} {:>9} {:>9} {:>9}",
            protocol_name(r.protocol),
            r.target.name(),
            r.shape.to_string(),
            m(r.mcpu.daprd_a),
            m(r.mcpu.daprd_b),
            m(r.mcpu.bench),
        );
    }
    println!("(daprd A/B in direct rows: the sidecars sitting idle; in nginx rows: nginx A and B)");
    println!();
    for run in runs {
        println!(
            "{}: RSS max (VmRSS every 100 ms from ready to stop): daprd A {:.1} MiB, daprd B {:.1} MiB (pids {}, {})",
            protocol_name(run.protocol),
            procfs::mib(run.rss_max[0]),
            procfs::mib(run.rss_max[1]),
            run.pids[0],
            run.pids[1]
        );
        if let Some((rss, pids)) = run.mtls {
            println!(
                "{}: RSS max, mTLS pair: daprd A {:.1} MiB, daprd B {:.1} MiB (pids {}, {})",
                protocol_name(run.protocol),
                procfs::mib(rss[0]),
                procfs::mib(rss[1]),
                pids[0],
                pids[1]
            );
        }
    }
    println!(
        "Dapr 1.17 reference (published, other machine): +1.06 ms p50 / +2.90 ms p99 added, \
         202 mCPU and 51 MB per sidecar at 1000 req/s"
    );

    let errors: Vec<_> = rows
        .iter()
        .filter_map(|r| {
            r.result.rec.first_error.as_ref().map(|e| {
                format!(
                    "  {} {} {}: {} errors ({} unfinished), first: {e}",
                    protocol_name(r.protocol),
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
