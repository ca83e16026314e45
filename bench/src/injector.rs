//! `bench injector`: admission latency of the `dapr-injector` webhook over
//! TLS on loopback, at a fixed rate and at full speed, against a baseline
//! TLS server that answers the same AdmissionReview with a canned "allowed"
//! (same rustls + hyper stack, no admission logic), plus the injector's CPU
//! per review and memory.

use std::{
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::{self as client_http1, SendRequest},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::sync::oneshot;
use tokio_rustls::{TlsAcceptor, TlsConnector, rustls};

use crate::{
    InjectorArgs,
    load::{self, OpClient, PhaseResult},
    procfs,
    report::{Shape, cell, delta, q},
};

/// The p99 the injector is held to at the fixed rate.
const TARGET_P99: Duration = Duration::from_millis(2);

// ------------------------------------------------------------------- PKI --

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().context("leaf key")?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .context("leaf params")?
        .signed_by(&key, &issuer)
        .context("leaf certificate")?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_tls(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("CA PEM")?).context("adding the CA")?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

// -------------------------------------------------------------- baseline --

/// A TLS server on its own thread and runtime (2 workers, like the echo apps
/// of `bench invoke`) answering every POST with a fixed AdmissionReview.
struct Baseline {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const CANNED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true}}"#;

async fn canned(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    // Read the whole review, as a webhook must.
    let _ = req.into_body().collect().await?;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CANNED.as_bytes())))
        .unwrap_or_default())
}

fn start_baseline(p: &Pki) -> anyhow::Result<Baseline> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(p.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("leaf PEM")?;
    let key = PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).context("key PEM")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("baseline TLS config")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let std_listener = StdTcpListener::bind("127.0.0.1:0").context("binding the baseline")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("baseline runtime")?;
    let thread = std::thread::Builder::new()
        .name("baseline".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let _ = tcp.set_nodelay(true);
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(tls), service_fn(canned))
                                        .await;
                                }
                            });
                        }
                    }
                }
            });
        })
        .context("baseline thread")?;
    Ok(Baseline {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

// -------------------------------------------------------------- injector --

struct InjectorProc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for InjectorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn healthz_ok(port: u16) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let Ok((mut send, conn)) = client_http1::handshake(TokioIo::new(tcp)).await else {
        return false;
    };
    tokio::spawn(conn);
    let Ok(req) = Request::get("/healthz")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
    else {
        return false;
    };
    matches!(send.send_request(req).await, Ok(r) if r.status() == StatusCode::OK)
}

async fn start_injector(binary: &Path, dir: &Path, p: &Pki) -> anyhow::Result<InjectorProc> {
    let (cert, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
    std::fs::write(&cert, &p.cert_pem)?;
    std::fs::write(&key, &p.key_pem)?;
    std::fs::write(&ca, &p.ca_pem)?;
    let (port, healthz, metrics) = (free_port()?, free_port()?, free_port()?);
    let child = Command::new(binary)
        .env_clear()
        .env("SIDECAR_IMAGE", "dapr-rs/daprd:bench")
        .env("NAMESPACE", "dapr-system")
        .env("KUBE_CLUSTER_DOMAIN", "cluster.local")
        .args([
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={port}"),
            "--healthz-listen-address=127.0.0.1".to_owned(),
            format!("--healthz-port={healthz}"),
            "--metrics-listen-address=127.0.0.1".to_owned(),
            format!("--metrics-port={metrics}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-key-file={}", key.display()),
            format!("--trust-anchors-file={}", ca.display()),
            "--log-level=warn".to_owned(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut proc = InjectorProc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthz_ok(healthz).await {
        if let Some(status) = proc.child.try_wait()? {
            bail!("dapr-injector exited during startup: {status}");
        }
        if Instant::now() > deadline {
            bail!("dapr-injector not healthy after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(proc)
}

// ---------------------------------------------------------------- client --

/// A realistic review: a Deployment's pod with a handful of Dapr
/// annotations, sent by the replicaset controller (so it is injected).
fn review_body() -> Bytes {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "orders-7c9d8f6b5-",
            "namespace": "shop",
            "labels": {"app": "orders", "pod-template-hash": "7c9d8f6b5"},
            "annotations": {
                "dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080",
                "dapr.io/config": "appconfig", "dapr.io/log-level": "info",
                "dapr.io/sidecar-cpu-limit": "300m", "dapr.io/sidecar-memory-limit": "256Mi",
                "dapr.io/enable-app-health-check": "true"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7c9d8f6b5", "uid": "8f1c", "controller": true}]
        },
        "spec": {
            "containers": [{
                "name": "orders", "image": "registry.example/orders:1.4.2",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_FORMAT", "value": "json"}],
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "serviceAccountName": "default",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        }
    });
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7b1e3c52-8d7f-4a57-9a44-0c1f0c8f1c11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                          "uid": "3c0e", "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    });
    Bytes::from(serde_json::to_vec(&review).unwrap_or_default())
}

/// HTTP/1.1 keep-alive connections over TLS, reused through a free list.
#[derive(Clone)]
struct Webhook {
    addr: SocketAddr,
    tls: TlsConnector,
    body: Bytes,
    /// Text every good answer contains.
    expect: &'static str,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

impl Webhook {
    fn new(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        body: Bytes,
        expect: &'static str,
    ) -> Self {
        Self {
            addr,
            tls: TlsConnector::from(cfg),
            body,
            expect,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, s: SendRequest<Full<Bytes>>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(s);
        }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1")?;
        let tls = self.tls.connect(name, tcp).await?;
        let (send, conn) = client_http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn review(&self) -> anyhow::Result<()> {
        let mut send = match self.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        send.ready().await?;
        let req = Request::post("/mutate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        self.give_back(send);
        if status != StatusCode::OK {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        if !body
            .windows(self.expect.len())
            .any(|w| w == self.expect.as_bytes())
        {
            bail!("unexpected answer: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

impl OpClient for Webhook {
    // One op = one review; `get` is empty so the op latency is the review's.
    async fn save(&self, _key: usize) -> anyhow::Result<()> {
        self.review().await
    }
    async fn get(&self, _key: usize) -> anyhow::Result<()> {
        Ok(())
    }
}

// ------------------------------------------------------------------- run --

struct Row {
    target: &'static str,
    shape: Shape,
    result: PhaseResult,
    /// Injector CPU per review, microseconds.
    cpu_us: Option<f64>,
}

fn cpu_per_op(pid: Option<u32>, before: Option<Duration>, ops: u64) -> Option<f64> {
    let after = procfs::cpu_time(pid)?;
    let spent = after.checked_sub(before?)?;
    (ops > 0).then(|| spent.as_secs_f64() * 1e6 / ops as f64)
}

async fn phases(
    target: &'static str,
    client: Webhook,
    pid: Option<u32>,
    args: &InjectorArgs,
    rows: &mut Vec<Row>,
    peak_rss: &Mutex<u64>,
) -> anyhow::Result<()> {
    let dur = Duration::from_secs_f64(args.duration);
    if args.warmup > 0.0 {
        load::closed_loop(
            client.clone(),
            args.concurrency,
            Duration::from_secs_f64(args.warmup),
            1,
        )
        .await?;
    }
    let before = procfs::cpu_time(pid);
    let fixed = load::open_loop(client.clone(), args.rate, dur, 1).await?;
    rows.push(Row {
        target,
        shape: Shape::Fixed(args.rate),
        cpu_us: pid.and_then(|_| cpu_per_op(pid, before, fixed.rec.ops)),
        result: fixed,
    });
    // Sample the injector's RSS during the full-speed phase.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = pid.map(|pid| {
        let on = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = procfs::memory(pid) {
                    max = max.max(m.rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    });
    let before = procfs::cpu_time(pid);
    let full = load::closed_loop(client, args.concurrency, dur, 1).await?;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = sampler
        && let Ok(max) = t.join()
        && let Ok(mut p) = peak_rss.lock()
    {
        *p = (*p).max(max);
    }
    rows.push(Row {
        target,
        shape: Shape::Full(args.concurrency),
        cpu_us: pid.and_then(|_| cpu_per_op(pid, before, full.rec.ops)),
        result: full,
    });
    Ok(())
}

pub async fn run(args: InjectorArgs) -> anyhow::Result<()> {
    if !args.injector.is_file() {
        bail!(
            "dapr-injector binary {} not found; build it with `cargo build --release -p dapr-injector` or pass --injector",
            args.injector.display()
        );
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    let p = pki()?;
    let tls = client_tls(&p.ca_pem)?;
    let body = review_body();

    let baseline = start_baseline(&p)?;
    let inj = start_injector(&args.injector, dir.path(), &p).await?;
    let pid = inj.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procfs::memory(pid);

    let mut rows = Vec::new();
    let peak = Mutex::new(0);
    let base_client = Webhook::new(baseline.addr, tls.clone(), body.clone(), "\"allowed\":true");
    phases("baseline", base_client, None, &args, &mut rows, &peak).await?;
    let inj_client = Webhook::new(inj.addr, tls, body.clone(), "\"patchType\":\"JSONPatch\"");
    phases("injector", inj_client, Some(pid), &args, &mut rows, &peak).await?;
    let hwm = procfs::memory(pid).map(|m| m.hwm);
    drop(inj);
    drop(baseline);

    print(
        &args,
        body.len(),
        &rows,
        idle.map(|m| m.rss),
        *peak.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        hwm,
    );
    Ok(())
}

fn print(
    args: &InjectorArgs,
    body_len: usize,
    rows: &[Row],
    idle_rss: Option<u64>,
    load_rss: u64,
    hwm: Option<u64>,
) {
    println!("== dapr-rs sidecar injector benchmark ==");
    println!(
        "POST /mutate over TLS 1.3 on 127.0.0.1 (HTTP/1.1 keep-alive), a {body_len} B AdmissionReview of \
         an annotated Deployment pod from the replicaset controller; {:.1} s per phase, {:.1} s warm-up",
        args.duration, args.warmup
    );
    println!(
        "baseline = same TLS + HTTP stack answering a canned \"allowed\" (no decoding, no patch); \
         injector = {}",
        args.injector.display()
    );
    println!(
        "fixed = open loop at {} req/s, latency from the scheduled send; full = closed loop, {} \
         workers. latencies in ms",
        args.rate, args.concurrency
    );
    println!();
    println!(
        "{:<9} {:<12} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "target", "shape", "req/s", "errors", "p50", "p90", "p99", "p99.9", "max", "cpu us/op"
    );
    println!("{}", "-".repeat(92));
    for r in rows {
        let h = &r.result.rec.op;
        println!(
            "{:<9} {:<12} {:>9.1} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            r.target,
            r.shape.to_string(),
            r.result.throughput(),
            r.result.rec.errors,
            cell(q(h, 0.5)),
            cell(q(h, 0.9)),
            cell(q(h, 0.99)),
            cell(q(h, 0.999)),
            cell((!h.is_empty()).then(|| h.max())),
            r.cpu_us
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
        );
        if let Some(e) = &r.result.rec.first_error {
            println!("          first error: {e}");
        }
    }
    println!();
    println!("injector - baseline (ms)       p50      p99   throughput ratio");
    for shape in [Shape::Fixed(args.rate), Shape::Full(args.concurrency)] {
        let find = |t: &str| rows.iter().find(|r| r.target == t && r.shape == shape);
        if let (Some(b), Some(i)) = (find("baseline"), find("injector")) {
            let (bh, ih) = (&b.result.rec.op, &i.result.rec.op);
            let ratio = if b.result.throughput() > 0.0 {
                format!("{:.2}x", i.result.throughput() / b.result.throughput())
            } else {
                "-".to_owned()
            };
            println!(
                "  {:<26} {:>8} {:>8}   {ratio}",
                shape.to_string(),
                delta(q(ih, 0.5), q(bh, 0.5)),
                delta(q(ih, 0.99), q(bh, 0.99)),
            );
        }
    }
    println!();
    let mib = |v: Option<u64>| {
        v.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{:.1} MiB", procfs::mib(b)),
        )
    };
    println!(
        "injector RSS: idle {}, max under full load {}, peak (VmHWM) {}",
        mib(idle_rss),
        mib(Some(load_rss).filter(|v| *v > 0)),
        mib(hwm)
    );
    if let Some(r) = rows
        .iter()
        .find(|r| r.target == "injector" && r.shape == Shape::Fixed(args.rate))
    {
        let p99 = q(&r.result.rec.op, 0.99);
        let ok =
            p99.is_some_and(|ns| ns <= TARGET_P99.as_nanos() as u64) && r.result.rec.errors == 0;
        println!(
            "target: p99 <= {} ms at {} req/s: {} (p99 {} ms, {} errors)",
            TARGET_P99.as_millis(),
            args.rate,
            if ok { "MET" } else { "NOT MET" },
            cell(p99),
            r.result.rec.errors
        );
    }
}
