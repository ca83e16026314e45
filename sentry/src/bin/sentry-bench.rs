//! Sentry benchmark.
//!
//! 1. In-process signing: `Ca::sign` alone, and CSR validation + signing,
//!    on 1 and on N threads.
//! 2. gRPC flood: starts the `dapr-sentry` binary next to this one on
//!    127.0.0.1 with fresh credentials, then sends pre-built CSRs from
//!    `--clients` concurrent callers over `--connections` TLS connections for
//!    `--seconds`, sampling Sentry's VmRSS/VmHWM from /proc.
//!
//! The callers run on the same machine as Sentry, so flood numbers are a
//! lower bound for Sentry alone.
//!
//! `cargo run --release -p dapr-sentry --bin sentry-bench -- --seconds 10`

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, ca_client::CaClient,
};
use dapr_security::{
    Ca, CaCredentials, SignPolicy, SpiffeId, TrustAnchors,
    csr::parse_csr_pem,
    net::tls_channel,
    tls::{PeerAuthorizer, client_config},
};

#[derive(Parser, Debug)]
#[command(
    name = "sentry-bench",
    about = "Signatures per second and RSS of dapr-sentry"
)]
struct Args {
    /// Concurrent callers in the gRPC flood.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// TLS connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Length of the gRPC flood.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Length of each in-process measurement.
    #[arg(long, default_value_t = 3)]
    inproc_seconds: u64,
    /// Threads for the parallel in-process measurement.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Path of the dapr-sentry binary (default: next to this one).
    #[arg(long)]
    sentry_bin: Option<PathBuf>,
    /// Skip the gRPC flood.
    #[arg(long)]
    inproc_only: bool,
}

fn csr_pool(n: usize) -> anyhow::Result<Vec<(String, rcgen::KeyPair)>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            let pem = params.serialize_request(&key)?.pem()?;
            Ok((pem, key))
        })
        .collect()
}

/// Runs `f` on `threads` threads for `secs`; returns operations per second.
fn rate(threads: usize, secs: u64, f: impl Fn(usize) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, count, f) = (&stop, &count, &f);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    f(i);
                    i += threads;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn in_process(args: &Args, pool: &[(String, rcgen::KeyPair)]) -> anyhow::Result<()> {
    let creds = CaCredentials::generate_default("localhost", "default")?;
    let ca = Ca::load(&creds, SignPolicy::default())?;
    let id = SpiffeId::new("public", "default", "bench")?;
    let n = pool.len();
    let sign_only = |threads| {
        rate(threads, args.inproc_seconds, |i| {
            let _ = ca.sign(&pool[i % n].1, &id, &[]);
        })
    };
    let full = |threads| {
        rate(threads, args.inproc_seconds, |i| {
            if let Ok(csr) = parse_csr_pem(pool[i % n].0.as_bytes()) {
                let _ = ca.sign(csr.public_key(), &id, &[]);
            }
        })
    };
    println!(
        "in-process Ca::sign, 1 thread:                    {:>8.0} signatures/s",
        sign_only(1)
    );
    println!(
        "in-process Ca::sign, {} threads:                   {:>8.0} signatures/s",
        args.threads,
        sign_only(args.threads)
    );
    println!(
        "in-process CSR check + sign, 1 thread:            {:>8.0} signatures/s",
        full(1)
    );
    println!(
        "in-process CSR check + sign, {} threads:           {:>8.0} signatures/s",
        args.threads,
        full(args.threads)
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn flood(args: &Args, pool: Arc<Vec<(String, rcgen::KeyPair)>>) -> anyhow::Result<()> {
    let bin = match &args.sentry_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("dapr-sentry"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found; build it first (cargo build --release -p dapr-sentry)",
            bin.display()
        );
    }
    let dir = tempfile_dir()?;
    let port = free_port()?;
    let healthz = free_port()?;
    let child = Child(
        Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--listen-address",
                "127.0.0.1",
                "--healthz-port",
                &healthz.to_string(),
                "--healthz-listen-address",
                "127.0.0.1",
                "--enable-metrics=false",
                "--issuer-credentials",
                &dir.join("creds").to_string_lossy(),
                "--log-level",
                "warn",
            ])
            .env("NAMESPACE", "default")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let pid = child.0.id();
    let ca_path = dir.join("creds/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ca_path.is_file()
        || tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    {
        if Instant::now() > deadline {
            bail!("dapr-sentry did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let anchors = TrustAnchors::from_file(&ca_path)?;
    let tls = Arc::new(client_config(
        None,
        anchors,
        PeerAuthorizer::exact(SpiffeId::sentry("localhost", "default")?),
    )?);
    let channels = (0..args.connections.max(1))
        .map(|_| {
            tls_channel(
                &format!("127.0.0.1:{port}"),
                tls.clone(),
                Duration::from_secs(5),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Warm up every connection (TLS handshakes are not what is measured).
    for ch in &channels {
        let req = SignCertificateRequest {
            id: "warmup".into(),
            namespace: "default".into(),
            certificate_signing_request: pool[0].0.clone().into_bytes(),
            ..Default::default()
        };
        CaClient::new(ch.clone()).sign_certificate(req).await?;
    }
    let idle = rss_kib(pid);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.clients.max(1) {
        let (ok, failed, stop, pool) = (ok.clone(), failed.clone(), stop.clone(), pool.clone());
        let mut client = CaClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let req = SignCertificateRequest {
                    id: format!("app-{}", c % 100),
                    namespace: "default".into(),
                    certificate_signing_request: pool[i % pool.len()].0.clone().into_bytes(),
                    ..Default::default()
                };
                i += 7;
                match client.sign_certificate(req).await {
                    Ok(r) if !r.get_ref().workload_certificate.is_empty() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    let mut max_rss = 0u64;
    let mut hwm = 0u64;
    while start.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((rss, h)) = rss_kib(pid) {
            max_rss = max_rss.max(rss);
            hwm = hwm.max(h);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "gRPC flood: {} callers over {} TLS connections, {:.1} s",
        args.clients, args.connections, elapsed
    );
    println!(
        "gRPC flood signatures/s:                          {:>8.0}",
        ok as f64 / elapsed
    );
    println!("gRPC flood requests ok / failed:                  {ok} / {failed}");
    if let Some((rss, _)) = idle {
        println!(
            "Sentry VmRSS idle (after warm-up):                {:>8.1} MiB",
            rss as f64 / 1024.0
        );
    }
    println!(
        "Sentry VmRSS max during flood:                    {:>8.1} MiB",
        max_rss as f64 / 1024.0
    );
    println!(
        "Sentry VmHWM (peak RSS):                          {:>8.1} MiB",
        hwm as f64 / 1024.0
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sentry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let pool = Arc::new(csr_pool(256)?);
    println!(
        "cores: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    in_process(&args, &pool)?;
    if !args.inproc_only {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(flood(&args, pool))?;
    }
    Ok(())
}
