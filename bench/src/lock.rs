//! `bench lock`: acquire + release latency of a distributed lock, straight
//! to Redis (`SET key owner NX PX`, then the owner-checked Lua unlock that
//! `lock.redis` runs) vs through daprd's `lock.redis` over HTTP and gRPC, in
//! one run against the same Redis. Each worker acquires then releases its
//! own resource in a closed loop; latencies are per operation.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use dapr::dapr::proto::runtime::v1::{TryLockRequest, UnlockRequest, dapr_client::DaprClient};
use hdrhistogram::Histogram;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use redis::{Script, aio::ConnectionManager};

use crate::{
    LockArgs,
    daprd::{Daprd, Launch},
};

/// The script `lock.redis` unlocks with (dapr_components::lock::redis).
const UNLOCK: &str = r#"
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
if v == ARGV[1] then redis.call("DEL", KEYS[1]) return 1 end
return -1
"#;

#[derive(Default)]
struct Lat {
    acquire: Vec<Duration>,
    release: Vec<Duration>,
}

fn hist(samples: &[Duration]) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for s in samples {
        h.record(s.as_nanos().max(1) as u64)?;
    }
    Ok(h)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn direct(redis: &str, ops: usize) -> anyhow::Result<Lat> {
    let client = redis::Client::open(format!("redis://{redis}"))?;
    let mut c = ConnectionManager::new(client)
        .await
        .with_context(|| format!("cannot connect to Redis at {redis}"))?;
    let unlock = Script::new(UNLOCK);
    let mut lat = Lat::default();
    for i in 0..ops {
        let key = format!("lock||bench-lock-direct-{}", i % 100);
        let t = Instant::now();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg("owner")
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut c)
            .await?;
        lat.acquire.push(t.elapsed());
        if set.is_none() {
            bail!("direct: {key} was already held");
        }
        let t = Instant::now();
        let r: i64 = unlock.key(&key).arg("owner").invoke_async(&mut c).await?;
        lat.release.push(t.elapsed());
        if r != 1 {
            bail!("direct: unlock of {key} returned {r}");
        }
    }
    Ok(lat)
}

async fn via_http(port: u16, ops: usize) -> anyhow::Result<Lat> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |path: &'static str, body: String| {
        let client = client.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("http://127.0.0.1:{port}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let mut lat = Lat::default();
    for i in 0..ops {
        let res = format!("bench-lock-http-{}", i % 100);
        let t = Instant::now();
        let b = call(
            "/v1.0-alpha1/lock/lockstore",
            format!(r#"{{"resourceId":"{res}","lockOwner":"owner","expiryInSeconds":30}}"#),
        )
        .await?;
        lat.acquire.push(t.elapsed());
        if !String::from_utf8_lossy(&b).contains("true") {
            bail!("http: lock on {res} not acquired");
        }
        let t = Instant::now();
        let b = call(
            "/v1.0-alpha1/unlock/lockstore",
            format!(r#"{{"resourceId":"{res}","lockOwner":"owner"}}"#),
        )
        .await?;
        lat.release.push(t.elapsed());
        if !String::from_utf8_lossy(&b).contains("\"status\":0") {
            bail!("http: unlock of {res}: {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(lat)
}

async fn via_grpc(port: u16, ops: usize) -> anyhow::Result<Lat> {
    let mut c = DaprClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let mut lat = Lat::default();
    for i in 0..ops {
        let res = format!("bench-lock-grpc-{}", i % 100);
        let t = Instant::now();
        let ok = c
            .try_lock_alpha1(TryLockRequest {
                store_name: "lockstore".into(),
                resource_id: res.clone(),
                lock_owner: "owner".into(),
                expiry_in_seconds: 30,
            })
            .await?
            .into_inner()
            .success;
        lat.acquire.push(t.elapsed());
        if !ok {
            bail!("grpc: lock on {res} not acquired");
        }
        let t = Instant::now();
        let st = c
            .unlock_alpha1(UnlockRequest {
                store_name: "lockstore".into(),
                resource_id: res.clone(),
                lock_owner: "owner".into(),
            })
            .await?
            .into_inner()
            .status;
        lat.release.push(t.elapsed());
        if st != 0 {
            bail!("grpc: unlock of {res} returned status {st}");
        }
    }
    Ok(lat)
}

pub async fn run(args: LockArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let res = dir.path().join("resources");
    std::fs::create_dir_all(&res)?;
    std::fs::write(
        res.join("lock.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: lockstore\nspec:\n  type: lock.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: \"{}\"\n  - name: keyPrefix\n    value: none\n",
            args.redis
        ),
    )?;
    let log = dir.path().join("daprd.log");
    let data = dir.path().join("data");
    let (mut d, t0) = Daprd::spawn(&Launch {
        bin: Path::new(&args.daprd),
        app_id: "bench-lock",
        data_dir: &data,
        resources_path: Some(&res),
        log: &log,
        extra_args: &[],
    })?;
    d.wait_ready(t0, Duration::from_millis(5), Duration::from_secs(20))?;

    let warm = args.ops / 10 + 10;
    direct(&args.redis, warm).await?;
    via_http(d.http_port, warm).await?;
    via_grpc(d.grpc_port, warm).await?;
    let rows = [
        ("direct Redis", direct(&args.redis, args.ops).await?),
        ("daprd HTTP", via_http(d.http_port, args.ops).await?),
        ("daprd gRPC", via_grpc(d.grpc_port, args.ops).await?),
    ];
    d.stop()?;

    println!(
        "bench lock: {} sequential acquire+release pairs per target, lock.redis on {}",
        args.ops, args.redis
    );
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "target", "acq p50 µs", "acq p99 µs", "rel p50 µs", "rel p99 µs", "p50 ×", "p99 ×"
    );
    let base_a = hist(&rows[0].1.acquire)?;
    let base_r = hist(&rows[0].1.release)?;
    let base50 = us(&base_a, 0.5) + us(&base_r, 0.5);
    let base99 = us(&base_a, 0.99) + us(&base_r, 0.99);
    for (name, lat) in &rows {
        let a = hist(&lat.acquire)?;
        let r = hist(&lat.release)?;
        println!(
            "{:<14} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>9.2} {:>9.2}",
            name,
            us(&a, 0.5),
            us(&a, 0.99),
            us(&r, 0.5),
            us(&r, 0.99),
            (us(&a, 0.5) + us(&r, 0.5)) / base50,
            (us(&a, 0.99) + us(&r, 0.99)) / base99,
        );
    }
    println!("(× = (acquire + release) latency relative to direct Redis)");
    Ok(())
}
