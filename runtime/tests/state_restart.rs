//! The state conformance suite's "daprd restart in the middle" case, run
//! against the real `daprd` binary for every state store: a stream of
//! transactions is running when daprd is killed with SIGKILL; after a restart
//! on the same component, every acknowledged transaction is intact and no
//! transaction is half-applied. `state.in-memory` lives in the sidecar's
//! memory, so (as in Dapr) a restart starts it empty: that is asserted.
//!
//! The relational and Redis stores are the servers started by
//! scripts/test-services.sh (`DAPR_RS_TEST_POSTGRES`, `DAPR_RS_TEST_MYSQL`,
//! `DAPR_RS_TEST_REDIS_ADDR` override them, as in the component suite).

mod common;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// Concurrent writers, each with its own key space and strictly sequential
/// transactions.
const WORKERS: u64 = 3;
/// Acknowledged transactions every worker must have before the kill.
const MIN_ACKED: u64 = 25;

#[derive(Clone, Copy, Debug)]
enum Store {
    InMemory,
    Sqlite,
    Redis,
    Postgres,
    Mysql,
}

impl Store {
    /// The component YAML; `dir` outlives both daprd runs (SQLite's file).
    fn component(self, dir: &Path) -> String {
        match self {
            Store::InMemory => component_yaml("statestore", "state.in-memory", &[]),
            Store::Sqlite => {
                let db = dir.join("state.db").display().to_string();
                component_yaml("statestore", "state.sqlite", &[("connectionString", &db)])
            }
            Store::Redis => {
                component_yaml("statestore", "state.redis", &[("redisHost", &redis_addr())])
            }
            Store::Postgres => {
                let conn = std::env::var("DAPR_RS_TEST_POSTGRES").unwrap_or_else(|_| {
                    "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test".into()
                });
                component_yaml(
                    "statestore",
                    "state.postgresql",
                    &[("connectionString", &conn)],
                )
            }
            Store::Mysql => {
                let dsn = std::env::var("DAPR_RS_TEST_MYSQL")
                    .unwrap_or_else(|_| "root@tcp(127.0.0.1:13306)/dapr_test".into());
                component_yaml(
                    "statestore",
                    "state.mysql",
                    &[("connectionString", &dsn), ("schemaName", "dapr_test")],
                )
            }
        }
    }

    /// Whether the data outlives the sidecar process.
    fn durable(self) -> bool {
        !matches!(self, Store::InMemory)
    }
}

fn key(w: u64, name: &str) -> String {
    format!("w{w}-{name}")
}

/// Transaction `i` of worker `w`: writes `a<i>` and `b<i>`, moves `last` to
/// `i` and deletes `a<i-1>`. After any prefix of the stream, `last = L` implies
/// exactly: `b1..=bL` present, `aL` the only `a`, nothing above `L`.
fn transaction(w: u64, i: u64) -> String {
    let mut ops = vec![
        json!({"operation":"upsert","request":{"key":key(w, &format!("a{i}")),"value":i}}),
        json!({"operation":"upsert","request":{"key":key(w, &format!("b{i}")),"value":{"i":i,"w":w}}}),
        json!({"operation":"upsert","request":{"key":key(w, "last"),"value":i}}),
    ];
    if i > 1 {
        ops.push(json!({"operation":"delete","request":{"key":key(w, &format!("a{}", i - 1))}}));
    }
    json!({ "operations": ops }).to_string()
}

/// What a worker got through before the kill.
#[derive(Debug)]
struct Progress {
    /// Highest transaction answered 204.
    acked: u64,
    /// Highest transaction sent (may or may not have been applied).
    sent: u64,
    /// How the stream ended.
    cut: String,
}

/// Sends transactions 1, 2, ... until one fails. A failure before the kill
/// is an error; after it, the end of the stream.
async fn worker(
    url: String,
    w: u64,
    killed: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Result<Progress, String> {
    let mut p = Progress {
        acked: 0,
        sent: 0,
        cut: String::new(),
    };
    loop {
        let i = p.sent + 1;
        p.sent = i;
        let r = request("POST", &url, Some(transaction(w, i).into_bytes()), &[]).await;
        match r {
            Ok(r) if r.status == 204 => {
                p.acked = i;
                acked.store(i, Ordering::SeqCst);
            }
            r if killed.load(Ordering::SeqCst) => {
                p.cut = match r {
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => e,
                };
                return Ok(p);
            }
            Ok(r) => return Err(format!("worker {w} txn {i}: {} {}", r.status, r.text())),
            Err(e) => return Err(format!("worker {w} txn {i}: {e}")),
        }
    }
}

/// Bulk-gets `keys`; `None` for a key the store does not have.
async fn bulk_get(d: &Daprd, keys: &[String]) -> Vec<(String, Option<Value>)> {
    let body = json!({ "keys": keys, "parallelism": 16 }).to_string();
    let r = http("POST", &d.url("/v1.0/state/statestore/bulk"), &body).await;
    assert_eq!(r.status, 200, "bulk get: {}", r.text());
    let items = r.json();
    let items = items.as_array().expect("bulk get answers an array");
    assert_eq!(items.len(), keys.len());
    items
        .iter()
        .map(|it| {
            assert!(it.get("error").is_none(), "bulk get item error: {it}");
            let k = it["key"].as_str().expect("key").to_owned();
            (k, it.get("data").cloned())
        })
        .collect()
}

/// Every key a worker may have written, up to transaction `sent`.
fn all_keys(w: u64, sent: u64) -> Vec<String> {
    let mut keys = vec![key(w, "last")];
    for i in 1..=sent {
        keys.push(key(w, &format!("a{i}")));
        keys.push(key(w, &format!("b{i}")));
    }
    keys
}

/// Asserts that worker `w`'s data is exactly the result of transactions
/// `1..=L` for one `L` with `acked <= L <= sent`; returns `L`.
async fn assert_whole_prefix(d: &Daprd, w: u64, p: &Progress) -> u64 {
    let got = bulk_get(d, &all_keys(w, p.sent)).await;
    let last = got[0].1.as_ref().and_then(Value::as_u64);
    let Some(l) = last else {
        panic!(
            "worker {w}: `last` lost after restart ({p:?}): {:?}",
            got[0]
        );
    };
    assert!(
        p.acked <= l && l <= p.sent,
        "worker {w}: last = {l}, outside acknowledged..sent {p:?}"
    );
    for (k, v) in &got[1..] {
        // Keys are `w<w>-a<i>` / `w<w>-b<i>`.
        let tail = &k[k.find('-').expect("dash") + 1..];
        let (kind, i) = tail.split_at(1);
        let i: u64 = i.parse().expect("index");
        let expected = match kind {
            "a" if i == l => Some(json!(i)),
            "b" if i <= l => Some(json!({"i": i, "w": w})),
            _ => None,
        };
        assert_eq!(
            v, &expected,
            "worker {w}: key {k} after restart with last = {l} ({p:?}): a half-applied or lost transaction"
        );
    }
    l
}

/// One test body for every store: stream, SIGKILL mid-stream, restart,
/// verify.
async fn restart_mid_transactions(store: Store) {
    let res = tempfile::tempdir().unwrap();
    write_resource(res.path(), "statestore.yaml", &store.component(res.path()));
    // A fresh app id: the default key prefix keeps this run's keys apart from
    // earlier runs against the same servers.
    let app = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let mut d = DaprdBuilder::new(&app).resources(res.path()).start().await;
    let url = d.url("/v1.0/state/statestore/transaction");

    let killed = Arc::new(AtomicBool::new(false));
    let acked: Vec<_> = (0..WORKERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let a = acked[w as usize].clone();
            tokio::spawn(worker(url.clone(), w, killed.clone(), a))
        })
        .collect();

    // Let every worker get MIN_ACKED through, then kill while the stream is
    // still running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.iter().any(|a| a.load(Ordering::SeqCst) < MIN_ACKED) {
        assert!(
            Instant::now() < deadline,
            "not every worker got {MIN_ACKED} transactions acknowledged in 60 s:\n{}",
            d.logs()
        );
        if workers.iter().any(|h| h.is_finished()) {
            break; // a failed transaction: its error is reported below
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The data is there before the kill (so an empty store afterwards means
    // the restart lost it, not that it was never written).
    let seen = http(
        "GET",
        &d.url(&format!("/v1.0/state/statestore/{}", key(0, "b1"))),
        "",
    )
    .await;
    assert_eq!(seen.status, 200, "before the kill: {}", seen.text());

    killed.store(true, Ordering::SeqCst);
    let mut child = d.child.take().expect("daprd running");
    child.kill().expect("SIGKILL daprd"); // std's kill() is SIGKILL on Unix
    let status = child.wait().expect("wait for daprd");
    assert!(!status.success(), "daprd was killed, not exited: {status}");

    let mut progress = Vec::new();
    for (w, h) in workers.into_iter().enumerate() {
        let p = h
            .await
            .expect("worker task")
            .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
        assert!(p.acked >= MIN_ACKED, "worker {w}: {p:?}");
        // The stream was running: the request after the last ack was sent
        // and cut off by the kill.
        assert_eq!(p.sent, p.acked + 1, "worker {w}: {p:?}");
        progress.push(p);
    }
    // Mid-workload: at least one transaction had been sent and was cut off
    // by the kill (the others may have been between two requests, failing
    // to connect).
    println!("{store:?}: streams at the kill: {progress:?}");
    assert!(
        progress.iter().any(|p| !p.cut.contains("(Connect)")),
        "no transaction was in flight at the kill: {progress:?}"
    );

    let d2 = DaprdBuilder::new(&app).resources(res.path()).start().await;
    for (w, p) in progress.iter().enumerate() {
        let w = w as u64;
        if store.durable() {
            let l = assert_whole_prefix(&d2, w, p).await;
            println!("{store:?} worker {w}: acked {}, applied {l}", p.acked);
        } else {
            // Dapr's in-memory store: nothing survives the sidecar.
            let got = bulk_get(&d2, &all_keys(w, p.sent)).await;
            let kept: Vec<_> = got.iter().filter(|(_, v)| v.is_some()).collect();
            assert!(
                kept.is_empty(),
                "in-memory kept data across a restart: {kept:?}"
            );
        }
    }

    // The restarted sidecar keeps serving transactions on the same keys.
    let next = progress[0].sent + 1;
    let r = http(
        "POST",
        &d2.url("/v1.0/state/statestore/transaction"),
        &transaction(0, next),
    )
    .await;
    assert_eq!(r.status, 204, "after restart: {}", r.text());
    let r = http(
        "GET",
        &d2.url(&format!("/v1.0/state/statestore/{}", key(0, "last"))),
        "",
    )
    .await;
    assert_eq!(r.json(), json!(next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_is_empty_after_restart_mid_transactions() {
    restart_mid_transactions(Store::InMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_restart_mid_transactions() {
    restart_mid_transactions(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_survives_restart_mid_transactions() {
    restart_mid_transactions(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_restart_mid_transactions() {
    restart_mid_transactions(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_survives_restart_mid_transactions() {
    restart_mid_transactions(Store::Mysql).await;
}
