//! `bench pubsub`: publish → deliver end to end, through two sidecars
//! (publisher → daprd A → broker → daprd B → subscriber app over HTTP) vs
//! the broker's own client directly (Redis Streams `XADD` +
//! `XREADGROUP`/`XACK`; NATS JetStream publish + a durable pull consumer),
//! in one run against the same servers.
//!
//! Per broker and path: messages/s at full speed (N messages published by
//! C workers, timed until the last one is delivered) and end-to-end latency
//! at a fixed rate (open loop, measured from each message's scheduled send
//! time), each for single and bulk publishing. Every message carries its
//! scheduled send time (ns since the run's base instant), so the receiving
//! side computes the latency itself.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinSet;

use crate::daprd::{Daprd, Launch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// Redis Streams (`pubsub.redis`).
    Redis,
    /// NATS JetStream (`pubsub.jetstream`).
    Jetstream,
}

#[derive(Debug, Clone, Args)]
pub struct PubsubArgs {
    /// The daprd binary to start (twice per broker).
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Redis address (loopback only).
    #[arg(long, default_value = "127.0.0.1:16379")]
    pub redis: String,
    /// NATS address with JetStream on (loopback only).
    #[arg(long, default_value = "127.0.0.1:14222")]
    pub nats: String,
    /// Brokers to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "redis,jetstream"
    )]
    pub brokers: Vec<BrokerKind>,
    /// Messages per full-speed phase.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Publishing workers of the full-speed phases.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Messages per second of the fixed-rate phases.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds each fixed-rate phase lasts.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Messages per bulk publish at full speed (at the fixed rate, batches
    /// of rate/100 go out every 10 ms).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
}

impl PubsubArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, addr) in [("--redis", &self.redis), ("--nats", &self.nats)] {
            let a: SocketAddr = addr
                .parse()
                .with_context(|| format!("{name} '{addr}' is not an ip:port address"))?;
            if !a.ip().is_loopback() {
                bail!("{name} must be a loopback address");
            }
        }
        if self.brokers.is_empty() {
            bail!("--brokers is empty");
        }
        if !(1..=10_000_000).contains(&self.messages) {
            bail!("--messages must be in [1, 10000000]");
        }
        if !(1..=1024).contains(&self.concurrency) {
            bail!("--concurrency must be in [1, 1024]");
        }
        if !(100..=100_000).contains(&self.rate) {
            bail!("--rate must be in [100, 100000] msg/s");
        }
        if !(self.duration > 0.0 && self.duration <= 600.0) {
            bail!("--duration must be in (0, 600] seconds");
        }
        if !(1..=1000).contains(&self.batch) {
            bail!("--batch must be in [1, 1000]");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the sink --

/// Where deliveries are counted, whoever receives them.
struct Sink {
    base: Instant,
    delivered: AtomicU64,
    /// ns since `base` of the latest delivery.
    last: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Sink {
    fn new(base: Instant) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            base,
            delivered: AtomicU64::new(0),
            last: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
        }))
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// One message arrived whose scheduled send time was `sent_ns`.
    fn record(&self, sent_ns: u64) {
        let now = self.now_ns();
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(now.saturating_sub(sent_ns).max(1));
        }
        self.last.fetch_max(now, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Release);
    }

    /// A message body `{"seq":n,"t":ns}` or a CloudEvent carrying it in `data`.
    fn record_json(&self, body: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let t = v["t"].as_u64().or_else(|| v["data"]["t"].as_u64());
            if let Some(t) = t {
                self.record(t);
            }
        }
    }

    fn reset(&self) {
        self.delivered.store(0, Ordering::Release);
        if let Ok(mut h) = self.latency.lock() {
            h.reset();
        }
    }

    /// Waits until `n` messages were delivered since the last reset.
    async fn wait_for(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.delivered.load(Ordering::Acquire) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} messages delivered within {timeout:?}",
                    self.delivered.load(Ordering::Acquire)
                );
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        Ok(())
    }
}

fn payload(seq: u64, t_ns: u64) -> Bytes {
    Bytes::from(format!(r#"{{"seq":{seq},"t":{t_ns}}}"#))
}

// ----------------------------------------------------------- publishers --

/// Cloned per call; one variant per run, so its size does not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Publisher {
    Redis {
        conn: ConnectionManager,
        topic: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        subject: String,
    },
    Daprd {
        client: Client<HttpConnector, Full<Bytes>>,
        single: http::Uri,
        bulk: http::Uri,
    },
}

impl Publisher {
    async fn single(&self, msg: Bytes) -> anyhow::Result<()> {
        match self {
            Publisher::Redis { conn, topic } => {
                let _: redis::Value = redis::cmd("XADD")
                    .arg(topic)
                    .arg("*")
                    .arg("data")
                    .arg(msg.as_ref())
                    .query_async(&mut conn.clone())
                    .await?;
            }
            Publisher::Nats { js, subject } => {
                js.publish(subject.clone(), msg).await?.await?;
            }
            Publisher::Daprd { client, single, .. } => {
                post(client, single.clone(), msg).await?;
            }
        }
        Ok(())
    }

    async fn bulk(&self, msgs: Vec<Bytes>) -> anyhow::Result<()> {
        match self {
            Publisher::Redis { conn, topic } => {
                let mut pipe = redis::pipe();
                for m in &msgs {
                    pipe.cmd("XADD")
                        .arg(topic)
                        .arg("*")
                        .arg("data")
                        .arg(m.as_ref());
                }
                let _: Vec<redis::Value> = pipe.query_async(&mut conn.clone()).await?;
            }
            Publisher::Nats { js, subject } => {
                let mut acks = Vec::with_capacity(msgs.len());
                for m in msgs {
                    acks.push(js.publish(subject.clone(), m).await?);
                }
                for a in acks {
                    a.await?;
                }
            }
            Publisher::Daprd { client, bulk, .. } => {
                let mut body = Vec::with_capacity(msgs.len() * 80);
                body.push(b'[');
                for (i, m) in msgs.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(format!(r#"{{"entryId":"{i}","event":"#).as_bytes());
                    body.extend_from_slice(m);
                    body.extend_from_slice(br#","contentType":"application/json"}"#);
                }
                body.push(b']');
                post(client, bulk.clone(), body.into()).await?;
            }
        }
        Ok(())
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    body: Bytes,
) -> anyhow::Result<()> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{uri}: {status} {}", String::from_utf8_lossy(&body));
    }
    // Bulk publish answers 204, or 500 with the failed entries.
    Ok(())
}

// ------------------------------------------------------------ consumers --

/// Reads the stream in a consumer group, records, and acks each batch.
async fn redis_consumer(
    client: redis::Client,
    topic: String,
    sink: Arc<Sink>,
) -> anyhow::Result<()> {
    let cfg = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = ConnectionManager::new_with_config(client, cfg).await?;
    let _: Result<redis::Value, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&topic)
        .arg("direct")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    loop {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("direct")
            .arg("direct")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&topic)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let Some(reply) = reply else { continue };
        let mut ack = redis::cmd("XACK");
        ack.arg(&topic).arg("direct");
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            if let Some(redis::Value::BulkString(b)) = entry.map.get("data") {
                sink.record_json(b);
            }
            ack.arg(entry.id);
        }
        let _: redis::Value = ack.query_async(&mut conn).await?;
    }
}

async fn nats_consumer(
    js: async_nats::jetstream::Context,
    stream: String,
    subject: String,
    sink: Arc<Sink>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull;
    let consumer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("direct".into()),
                filter_subject: subject,
                ..Default::default()
            },
            stream.as_str(),
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(100)
        .messages()
        .await?;
    let _ = ready.send(());
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        sink.record_json(&m.payload);
        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    bail!("the pull stream ended")
}

/// The subscriber app: `GET /dapr/subscribe` names the topic; every POST is
/// a delivery. Runs on a thread and runtime of its own, like a separate app.
fn start_app(topic: &str, sink: Arc<Sink>) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let subscribe = Bytes::from(format!(
        r#"[{{"pubsubname":"pubsub","topic":"{topic}","route":"/m"}}]"#
    ));
    std::thread::Builder::new()
        .name("subscriber-app".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("subscriber app: {e}"),
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return eprintln!("subscriber app: cannot listen");
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (sink, subscribe) = (sink.clone(), subscribe.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let (sink, subscribe) = (sink.clone(), subscribe.clone());
                            async move {
                                let get = req.method() == Method::GET;
                                let body = req.into_body().collect().await?.to_bytes();
                                let out = if get {
                                    subscribe
                                } else {
                                    sink.record_json(&body);
                                    Bytes::new()
                                };
                                Ok::<_, hyper::Error>(
                                    Response::builder()
                                        .status(StatusCode::OK)
                                        .header("content-type", "application/json")
                                        .body(Full::new(out))
                                        .unwrap_or_default(),
                                )
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(port)
}

// --------------------------------------------------------------- phases --

struct Measured {
    single_rate: f64,
    bulk_rate: f64,
    single_lat: Histogram<u64>,
    bulk_lat: Histogram<u64>,
    errors: u64,
}

async fn full_speed(
    p: &Publisher,
    sink: &Arc<Sink>,
    args: &PubsubArgs,
    bulk: bool,
    errors: &Arc<AtomicU64>,
) -> anyhow::Result<f64> {
    sink.reset();
    let n = args.messages as u64;
    let per_call = if bulk { args.batch as u64 } else { 1 };
    let calls = n.div_ceil(per_call);
    let next = Arc::new(AtomicU64::new(0));
    let start_ns = sink.now_ns();
    let mut set = JoinSet::new();
    for _ in 0..args.concurrency {
        let (p, next, sink, errors) = (p.clone(), next.clone(), sink.clone(), errors.clone());
        set.spawn(async move {
            loop {
                let call = next.fetch_add(1, Ordering::Relaxed);
                if call >= calls {
                    return;
                }
                let first = call * per_call;
                let last = (first + per_call).min(n);
                let t = sink.now_ns();
                let res = if bulk {
                    p.bulk((first..last).map(|s| payload(s, t)).collect()).await
                } else {
                    p.single(payload(first, t)).await
                };
                if let Err(e) = res
                    && errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("publish failed: {e:#}");
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let expected = n.saturating_sub(errors.load(Ordering::Relaxed) * per_call);
    sink.wait_for(expected, Duration::from_secs(120)).await?;
    let elapsed_ns = sink
        .last
        .load(Ordering::Relaxed)
        .saturating_sub(start_ns)
        .max(1);
    Ok(expected as f64 / (elapsed_ns as f64 / 1e9))
}

/// Open loop at `args.rate`: single messages every 1/rate s, or batches of
/// rate/100 every 10 ms; latency from each message's scheduled time.
async fn fixed_rate(
    p: &Publisher,
    sink: &Arc<Sink>,
    args: &PubsubArgs,
    bulk: bool,
    errors: &Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    sink.reset();
    let per_call: u64 = if bulk {
        u64::from(args.rate / 100).max(1)
    } else {
        1
    };
    let interval = Duration::from_secs_f64(per_call as f64 / f64::from(args.rate));
    let calls = (args.duration / interval.as_secs_f64()).ceil() as u64;
    let start = Instant::now();
    let start_ns = sink.now_ns();
    let mut set = JoinSet::new();
    for call in 0..calls {
        let due = start + interval * u32::try_from(call).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let t = start_ns
            + u64::try_from((interval * u32::try_from(call).unwrap_or(u32::MAX)).as_nanos())
                .unwrap_or(0);
        let (p, errors) = (p.clone(), errors.clone());
        set.spawn(async move {
            let first = call * per_call;
            let res = if bulk {
                p.bulk((first..first + per_call).map(|s| payload(s, t)).collect())
                    .await
            } else {
                p.single(payload(first, t)).await
            };
            if let Err(e) = res
                && errors.fetch_add(1, Ordering::Relaxed) == 0
            {
                eprintln!("publish failed: {e:#}");
            }
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let expected = (calls * per_call).saturating_sub(errors.load(Ordering::Relaxed) * per_call);
    sink.wait_for(expected, Duration::from_secs(60)).await?;
    let h = sink
        .latency
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(h)
}

async fn measure(p: &Publisher, sink: &Arc<Sink>, args: &PubsubArgs) -> anyhow::Result<Measured> {
    let errors = Arc::new(AtomicU64::new(0));
    // Warm-up: connections, consumer groups, JIT-free but cache-cold paths.
    let warm = PubsubArgs {
        messages: (args.messages / 10).max(100),
        ..args.clone()
    };
    full_speed(p, sink, &warm, false, &errors).await?;
    let single_rate = full_speed(p, sink, args, false, &errors).await?;
    let bulk_rate = full_speed(p, sink, args, true, &errors).await?;
    let single_lat = fixed_rate(p, sink, args, false, &errors).await?;
    let bulk_lat = fixed_rate(p, sink, args, true, &errors).await?;
    Ok(Measured {
        single_rate,
        bulk_rate,
        single_lat,
        bulk_lat,
        errors: errors.load(Ordering::Relaxed),
    })
}

// ------------------------------------------------------------ the run --

fn component(broker: BrokerKind, args: &PubsubArgs) -> String {
    let (type_, key, value) = match broker {
        BrokerKind::Redis => ("pubsub.redis", "redisHost", args.redis.clone()),
        BrokerKind::Jetstream => (
            "pubsub.jetstream",
            "natsURL",
            format!("nats://{}", args.nats),
        ),
    };
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: {type_}\n  version: v1\n  metadata:\n  - name: {key}\n    value: \"{value}\"\n"
    )
}

fn launch_daprd(
    bin: &Path,
    dir: &Path,
    app_id: &str,
    app_port: Option<u16>,
) -> anyhow::Result<Daprd> {
    let mut extra = vec!["--log-level".to_owned(), "warn".to_owned()];
    if let Some(p) = app_port {
        extra.extend(["--app-port".to_owned(), p.to_string()]);
    }
    let (mut d, t0) = Daprd::spawn(&Launch {
        bin,
        app_id,
        data_dir: &dir.join(format!("data-{app_id}")),
        resources_path: Some(&dir.join("resources")),
        log: &dir.join(format!("{app_id}.log")),
        extra_args: &extra,
    })?;
    d.wait_ready(t0, Duration::from_millis(5), Duration::from_secs(20))?;
    Ok(d)
}

/// A memory stream capturing `subject` (the operator's job in Dapr).
async fn nats_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subject: &str,
) -> anyhow::Result<()> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create stream {name}: {e}"))?;
    Ok(())
}

struct Row {
    broker: BrokerKind,
    path: &'static str,
    m: Measured,
}

async fn run_broker(
    broker: BrokerKind,
    args: &PubsubArgs,
    base: Instant,
) -> anyhow::Result<[Row; 2]> {
    let run_id = format!("{}-{}", std::process::id(), base.elapsed().as_micros());
    let direct_topic = format!("bench-direct-{run_id}");
    let sidecar_topic = format!("bench-daprd-{run_id}");

    // Direct client.
    let direct_sink = Sink::new(base)?;
    let (direct_pub, consumer) = match broker {
        BrokerKind::Redis => {
            let client = redis::Client::open(format!("redis://{}", args.redis))?;
            let conn = ConnectionManager::new(client.clone())
                .await
                .with_context(|| format!("cannot connect to Redis at {}", args.redis))?;
            let consumer = tokio::spawn(redis_consumer(
                client,
                direct_topic.clone(),
                direct_sink.clone(),
            ));
            (
                Publisher::Redis {
                    conn,
                    topic: direct_topic.clone(),
                },
                consumer,
            )
        }
        BrokerKind::Jetstream => {
            let client = async_nats::connect(args.nats.as_str())
                .await
                .with_context(|| format!("cannot connect to NATS at {}", args.nats))?;
            let js = async_nats::jetstream::new(client);
            let stream = format!("BENCH_DIRECT_{}", run_id.replace('-', "_"));
            nats_stream(&js, &stream, &direct_topic).await?;
            let (ready_tx, ready) = tokio::sync::oneshot::channel();
            let consumer = tokio::spawn(nats_consumer(
                js.clone(),
                stream,
                direct_topic.clone(),
                direct_sink.clone(),
                ready_tx,
            ));
            ready.await.context("the direct consumer did not start")?;
            (
                Publisher::Nats {
                    js,
                    subject: direct_topic.clone(),
                },
                consumer,
            )
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let direct = measure(&direct_pub, &direct_sink, args).await;
    consumer.abort();
    let direct = direct.context("direct client")?;

    // Through two sidecars.
    if broker == BrokerKind::Jetstream {
        let client = async_nats::connect(args.nats.as_str()).await?;
        let js = async_nats::jetstream::new(client);
        nats_stream(
            &js,
            &format!("BENCH_DAPRD_{}", run_id.replace('-', "_")),
            &sidecar_topic,
        )
        .await?;
    }
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("resources"))?;
    std::fs::write(
        dir.path().join("resources/pubsub.yaml"),
        component(broker, args),
    )?;
    let sidecar_sink = Sink::new(base)?;
    let app_port = start_app(&sidecar_topic, sidecar_sink.clone())?;
    let sub = launch_daprd(&args.daprd, dir.path(), "bench-sub", Some(app_port))?;
    let publ = launch_daprd(&args.daprd, dir.path(), "bench-pub", None)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let port = publ.http_port;
    let sidecar_pub = Publisher::Daprd {
        client,
        single: format!("http://127.0.0.1:{port}/v1.0/publish/pubsub/{sidecar_topic}").parse()?,
        bulk: format!("http://127.0.0.1:{port}/v1.0-alpha1/publish/bulk/pubsub/{sidecar_topic}")
            .parse()?,
    };
    // daprd B subscribes once the app answers; wait until a probe arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        sidecar_sink.reset();
        sidecar_pub
            .single(payload(0, sidecar_sink.now_ns()))
            .await?;
        if sidecar_sink
            .wait_for(1, Duration::from_millis(500))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "daprd B delivered nothing within 20 s; its log:\n{}",
                sub.log_tail()
            );
        }
    }
    let sidecars = measure(&sidecar_pub, &sidecar_sink, args).await;
    let _ = publ.stop();
    let _ = sub.stop();
    let sidecars = sidecars.context("through daprd")?;
    Ok([
        Row {
            broker,
            path: "direct client",
            m: direct,
        },
        Row {
            broker,
            path: "2 sidecars",
            m: sidecars,
        },
    ])
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub async fn run(args: PubsubArgs) -> anyhow::Result<()> {
    let base = Instant::now();
    let load_before = loadavg();
    let mut rows = Vec::new();
    for &b in &args.brokers {
        rows.extend(run_broker(b, &args, base).await?);
    }
    println!(
        "bench pubsub: full speed = {} messages by {} workers (bulk: {} per call); fixed rate = {}/s for {} s (bulk: {} per call every 10 ms); load average before {load_before}, after {}",
        args.messages,
        args.concurrency,
        args.batch,
        args.rate,
        args.duration,
        (args.rate / 100).max(1),
        loadavg()
    );
    println!(
        "{:<10} {:<14} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "broker",
        "path",
        "single/s",
        "bulk/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "bulk p50",
        "bulk p90",
        "bulk p99",
        "errors"
    );
    for r in &rows {
        println!(
            "{:<10} {:<14} {:>10.0} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6}",
            format!("{:?}", r.broker).to_lowercase(),
            r.path,
            r.m.single_rate,
            r.m.bulk_rate,
            ms(&r.m.single_lat, 0.5),
            ms(&r.m.single_lat, 0.9),
            ms(&r.m.single_lat, 0.99),
            ms(&r.m.bulk_lat, 0.5),
            ms(&r.m.bulk_lat, 0.9),
            ms(&r.m.bulk_lat, 0.99),
            r.m.errors
        );
    }
    println!(
        "ratios (2 sidecars vs direct): throughput single/bulk, p99 added single/bulk (targets: ≥ 80%, ≤ 0.5 ms)"
    );
    for pair in rows.chunks(2) {
        if let [d, s] = pair {
            println!(
                "{:<10} {:>6.1}% {:>6.1}%   +{:.3} ms  +{:.3} ms",
                format!("{:?}", d.broker).to_lowercase(),
                100.0 * s.m.single_rate / d.m.single_rate,
                100.0 * s.m.bulk_rate / d.m.bulk_rate,
                ms(&s.m.single_lat, 0.99) - ms(&d.m.single_lat, 0.99),
                ms(&s.m.bulk_lat, 0.99) - ms(&d.m.bulk_lat, 0.99),
            );
        }
    }
    Ok(())
}
