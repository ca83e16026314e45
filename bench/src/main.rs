//! `bench`: dapr-rs benchmarks. Every benchmark runs a direct baseline (the
//! backing service spoken to without daprd) in the same run as daprd, so the
//! numbers it prints are the sidecar's cost on this machine, not absolute
//! figures from elsewhere.
//!
//! `bench state`: state save + get, direct to Redis vs daprd's HTTP and gRPC
//! APIs, at a fixed rate (open loop) and at full speed (closed loop), plus
//! daprd's startup time and memory.
//!
//! `bench invoke`: service invocation of an echo app, direct vs through two
//! sidecars (caller daprd -> callee daprd -> app), over HTTP and gRPC.
//!
//! `bench actors`: actor method calls through daprd (owner and non-owner
//! sidecar) vs the actor app directly, and reminders fired per second.

mod actors;
mod crypto;
mod daprd;
mod injector;
mod invoke;
mod k8s;
mod load;
mod lock;
mod procfs;
mod pubsub;
mod reference_proxy;
mod report;
mod state;
mod workflow;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "dapr-rs benchmarks, each against a direct baseline in the same run"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// State save + get: direct Redis vs daprd HTTP vs daprd gRPC.
    State(StateArgs),
    /// Service invocation: echo app direct vs through two daprd sidecars.
    Invoke(InvokeArgs),
    /// Sidecar injector: admission latency over TLS vs a canned TLS webhook.
    Injector(InjectorArgs),
    /// Kubernetes: admission latency, operator RSS with 1000 Components,
    /// helm install → Ready, Deployment → sidecar Ready (test cluster).
    K8s(k8s::K8sArgs),
    /// Envelope encryption throughput through daprd vs the raw cipher.
    Crypto(CryptoArgs),
    /// Lock acquire/release latency through daprd vs direct Redis.
    Lock(LockArgs),
    /// Workflows/s (3-activity chains) through daprd's workflow engine.
    Workflow(workflow::WorkflowArgs),
    /// Publish → deliver through two daprd sidecars vs the broker's client.
    Pubsub(pubsub::PubsubArgs),
    /// Actor calls (owner and non-owner sidecar) vs the app; reminders/s.
    Actors(actors::ActorsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CryptoArgs {
    /// The daprd binary to start.
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Plaintext size per measured encryption, in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: usize,
    /// Measured runs per path (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// The daprd binary to start.
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Redis address (loopback only).
    #[arg(long, default_value = "127.0.0.1:16379")]
    pub redis: String,
    /// Acquire + release pairs per target.
    #[arg(long, default_value_t = 5000)]
    pub ops: usize,
}

#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// The dapr-injector binary to start.
    #[arg(long, default_value = "target/release/dapr-injector")]
    pub injector: PathBuf,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Workers of the full-speed (closed-loop) phase.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Reviews per second of the fixed-rate (open-loop) phase.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds of warm-up per target before its first measured phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

impl InjectorArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        if !(self.warmup >= 0.0 && self.warmup <= 60.0) {
            bail!("--warmup must be in [0, 60] seconds");
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            bail!("--concurrency must be in [1, 1024]");
        }
        if self.rate == 0 || self.rate > 100_000 {
            bail!("--rate must be in [1, 100000] req/s");
        }
        Ok(())
    }
}

/// Invocation protocol of `bench invoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// HTTP/1.1: `/v1.0/invoke/<app>/method/echo` through the sidecars.
    Http,
    /// gRPC `AppCallback/OnInvoke`, proxied by daprd A on `dapr-app-id`.
    Grpc,
}

#[derive(Debug, Clone, Args)]
pub struct InvokeArgs {
    /// The daprd binary to start (twice).
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Workers of the full-speed (closed-loop) phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Requests per second of the fixed-rate (open-loop) phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of warm-up per target before its first measured phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Request (and echoed response) body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_size: usize,
    /// Protocols to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,grpc")]
    pub protocols: Vec<Protocol>,
    /// Also run a second sidecar pair with --enable-mtls (certificates from
    /// a dapr-sentry started for the run) and report what mTLS adds.
    #[arg(long)]
    pub mtls: bool,
    /// The dapr-sentry binary for --mtls.
    #[arg(long, default_value = "target/release/dapr-sentry")]
    pub sentry: PathBuf,
    /// Prometheus metrics in both sidecars (daprd's default: on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// Trace with this Configuration `samplingRate`, exporting Zipkin spans
    /// to a local sink (off when absent).
    #[arg(long)]
    pub tracing_sampling: Option<f64>,
    /// Also run the HTTP phases through two chained nginx reverse proxies
    /// (this nginx binary, e.g. /usr/sbin/nginx): what two proxy hops cost
    /// on this machine with a mature C proxy, as a reference for the sidecars.
    #[arg(long)]
    pub reference_proxy: Option<PathBuf>,
}

impl InvokeArgs {
    fn validate(&self) -> anyhow::Result<()> {
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
            bail!("--rate must be in [1, 1000000] req/s");
        }
        if self.payload_size > 4 << 20 {
            bail!("--payload-size must be at most 4194304 bytes");
        }
        if self.protocols.is_empty() {
            bail!("--protocols is empty");
        }
        Ok(())
    }
}

/// Which state store daprd's `statestore` component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// `state.redis` pointing at --redis (the comparison the benchmark is for).
    Redis,
    /// `state.in-memory`: daprd's own cost with no store round trip (an
    /// experiment; the direct baseline still talks to Redis).
    InMemory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// Straight to Redis with the `redis` crate, sending what daprd's
    /// `state.redis` sends (its Lua scripts).
    Direct,
    /// Straight to Redis with plain HSET / HGETALL (an experiment: what the
    /// store's scripts cost inside Redis).
    DirectPlain,
    /// daprd's HTTP API.
    Http,
    /// daprd's gRPC API.
    Grpc,
}

#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The daprd binary to start.
    #[arg(long, default_value = "target/release/daprd")]
    pub daprd: PathBuf,
    /// Redis address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:16379")]
    pub redis: String,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Workers of the full-speed (closed-loop) phase.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Ops per second of the fixed-rate (open-loop) phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of warm-up per target before its first measured phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Size of the stored value in bytes (a JSON string, quotes included).
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys the ops cycle through.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// daprd's state store.
    #[arg(long, value_enum, default_value = "redis")]
    pub store: StoreKind,
    /// Targets to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,http,grpc"
    )]
    pub targets: Vec<TargetKind>,
    /// HTTP/2 connections of the gRPC target (an app normally shares one).
    #[arg(long, default_value_t = 1)]
    pub grpc_connections: usize,
    /// Repetitions of the startup measurement (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub startup_runs: usize,
}

impl StateArgs {
    fn validate(&self) -> anyhow::Result<SocketAddr> {
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        if !(self.warmup >= 0.0 && self.warmup <= 60.0) {
            bail!("--warmup must be in [0, 60] seconds");
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            bail!("--concurrency must be in [1, 4096]");
        }
        if self.grpc_connections == 0 || self.grpc_connections > 1024 {
            bail!("--grpc-connections must be in [1, 1024]");
        }
        if self.rate == 0 || self.rate > 1_000_000 {
            bail!("--rate must be in [1, 1000000] ops/s");
        }
        if self.value_size < 2 || self.value_size > 1 << 20 {
            bail!("--value-size must be in [2, 1048576] bytes");
        }
        if self.keys == 0 || self.keys > 1_000_000 {
            bail!("--keys must be in [1, 1000000]");
        }
        if self.targets.is_empty() {
            bail!("--targets is empty");
        }
        let addr: SocketAddr = self
            .redis
            .parse()
            .with_context(|| format!("--redis '{}' is not an ip:port address", self.redis))?;
        if !addr.ip().is_loopback() {
            bail!("--redis must be a loopback address (the benchmark only talks to 127.0.0.1)");
        }
        Ok(addr)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    match cli.cmd {
        Cmd::State(args) => {
            let redis = args.validate()?;
            rt.block_on(state::run(args, redis))
        }
        Cmd::Crypto(args) => {
            if args.size_mib == 0 || args.size_mib > 4096 || args.runs == 0 || args.runs > 100 {
                bail!("--size-mib must be in [1, 4096] and --runs in [1, 100]");
            }
            rt.block_on(crypto::run(args))
        }
        Cmd::Lock(args) => {
            let addr: SocketAddr = args
                .redis
                .parse()
                .with_context(|| format!("--redis '{}' is not an ip:port address", args.redis))?;
            if !addr.ip().is_loopback() || args.ops == 0 || args.ops > 10_000_000 {
                bail!("--redis must be a loopback address and --ops in [1, 10000000]");
            }
            rt.block_on(lock::run(args))
        }
        Cmd::Invoke(args) => {
            args.validate()?;
            rt.block_on(invoke::run(args))
        }
        Cmd::Injector(args) => {
            args.validate()?;
            rt.block_on(injector::run(args))
        }
        Cmd::K8s(args) => rt.block_on(k8s::run(args)),
        Cmd::Workflow(args) => rt.block_on(workflow::run(args)),
        Cmd::Pubsub(args) => {
            args.validate()?;
            rt.block_on(pubsub::run(args))
        }
        Cmd::Actors(args) => {
            args.validate()?;
            rt.block_on(actors::run(args))
        }
    }
}
