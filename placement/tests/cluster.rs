//! dapr-placement as real processes on 127.0.0.1: 1- and 3-node clusters,
//! simulated hosts (the dapr-placement-core client), protocol-level streams,
//! leader failover and a persistent log across a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dapr_placement_core::{
    Ring, RingHost,
    proto::{Host, HostOperation},
};

const T: Duration = Duration::from_secs(20);

fn report(name: &str, ns: &str, types: &[&str], op: HostOperation) -> Host {
    Host {
        name: name.into(),
        port: 1,
        id: format!("app-{name}"),
        namespace: ns.into(),
        entities: types.iter().map(|t| t.to_string()).collect(),
        operation: op as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_hosts_join_and_leave() -> TestResult {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_healthy(T).await?;
    cluster.wait_leader(T).await?;
    let addrs = cluster.addresses();

    let h1 = host(&addrs, 1, "ns1", &["Cat"]);
    let h2 = host(&addrs, 2, "ns1", &["Cat", "Dog"]);
    let h3 = host(&addrs, 3, "ns1", &["Dog"]);
    let caller = host(&addrs, 4, "ns1", &[]);
    let other_ns = host(&addrs, 5, "ns2", &["Cat"]);
    // Cat: h1, h2; Dog: h2, h3.
    wait_tables(&[&h1, &h2, &h3, &caller], 4, T).await?;
    wait_tables(&[&other_ns], 1, T).await?;

    // Every sidecar routes every actor the same way, and as the ring says.
    let cats = Ring::from_hosts(
        [1u16, 2].map(|n| {
            RingHost::new(
                format!("127.0.0.1:{}", 40000 + n),
                format!("app-{n}"),
                i64::from(40000 + n),
            )
        }),
        100,
    );
    for i in 0..200 {
        let id = format!("cat-{i}");
        let want = cats.get(&id).cloned();
        for c in [&h1, &h2, &h3, &caller] {
            assert_eq!(c.lookup("Cat", &id), want, "lookup Cat/{id}");
        }
        assert_eq!(
            other_ns.lookup("Cat", &id).map(|h| h.name),
            Some("127.0.0.1:40005".into())
        );
    }
    assert!(caller.lookup("Bird", "x").is_none());

    // Metadata endpoint.
    let state = cluster.nodes[0].state().ok_or("no /placement/state")?;
    let hosts = state["hostList"].as_array().ok_or("hostList")?;
    assert_eq!(hosts.len(), 4, "{state}");
    let h2_info = hosts
        .iter()
        .find(|h| h["name"] == "127.0.0.1:40002")
        .ok_or("h2 missing")?;
    assert_eq!(h2_info["appId"], "app-2");
    assert_eq!(h2_info["namespace"], "ns1");
    assert_eq!(h2_info["actorTypes"], serde_json::json!(["Cat", "Dog"]));
    assert!(h2_info["updatedAt"].as_i64().unwrap_or(0) > 0);
    let version_before = state["tableVersion"].as_u64().ok_or("tableVersion")?;
    let metrics = cluster.nodes[0].metrics().ok_or("no metrics")?;
    assert!(
        metrics.contains("dapr_placement_runtimes_total{host_namespace=\"ns1\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dapr_placement_leader_status 1"),
        "{metrics}"
    );

    // A host leaves: the others get tables without it.
    h1.shutdown().await;
    wait_tables(&[&h2, &h3, &caller], 3, T).await?;
    for i in 0..50 {
        assert_eq!(
            caller.lookup("Cat", &format!("cat-{i}")).map(|h| h.name),
            Some("127.0.0.1:40002".into())
        );
    }
    // A host changes its actor types.
    h3.set_entities(vec!["Dog".into(), "Bird".into()]);
    wait_tables(&[&h2, &h3, &caller], 4, T).await?;
    assert_eq!(
        caller.lookup("Bird", "b").map(|h| h.name),
        Some("127.0.0.1:40003".into())
    );
    let state = cluster.nodes[0].state().ok_or("no /placement/state")?;
    assert!(state["tableVersion"].as_u64().unwrap_or(0) > version_before);
    assert_eq!(state["hostList"].as_array().map(Vec::len), Some(3));
    for c in [&h2, &h3, &caller, &other_ns] {
        c.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_phases_acks_and_legacy_sidecars() -> TestResult {
    let cluster = Cluster::start(1, &["--disseminate-timeout".into(), "2s".into()]);
    cluster.wait_healthy(T).await?;
    cluster.wait_leader(T).await?;
    let addr = cluster.addresses()[0].clone();

    // A 1.17-style sidecar: lock, then update only after its lock ack, then
    // unlock only after its update ack; all with the same version.
    let me = report("10.0.0.1:5000", "p", &["A"], HostOperation::Report);
    let mut s = RawStream::open(&addr, me.clone()).await?;
    let lock = s.next(T).await?;
    assert_eq!(lock.operation, "lock");
    assert!(lock.tables.is_none());
    assert!(lock.version > 0);
    assert!(
        s.next(Duration::from_millis(500)).await.is_err(),
        "update must wait for the lock ack"
    );
    s.ack(&me, HostOperation::Lock, lock.version).await?;
    let update = s.next(T).await?;
    assert_eq!(update.operation, "update");
    assert_eq!(update.version, lock.version);
    let tables = update.tables.clone().ok_or("update without tables")?;
    assert_eq!(tables.replication_factor, 100);
    #[allow(deprecated)]
    {
        assert_eq!(tables.version, lock.version.to_string());
        assert!(tables.entries["A"].hosts.is_empty() && tables.entries["A"].sorted_set.is_empty());
    }
    let entry = &tables.entries["A"].load_map["10.0.0.1:5000"];
    assert_eq!(
        (entry.name.as_str(), entry.id.as_str(), entry.port),
        ("10.0.0.1:5000", "app-10.0.0.1:5000", 1)
    );
    s.ack(&me, HostOperation::Update, update.version).await?;
    let unlock = s.next(T).await?;
    assert_eq!(
        (unlock.operation.as_str(), unlock.version),
        ("unlock", lock.version)
    );
    s.ack(&me, HostOperation::Unlock, unlock.version).await?;

    // A Dapr <= 1.16 sidecar (no operation field) never acks and still gets
    // the whole round; the 1.17 one must ack it.
    let old = report("10.0.0.2:5000", "p", &["A"], HostOperation::Unknown);
    let mut legacy = RawStream::open(&addr, old.clone()).await?;
    // Old sidecars heartbeat every second (and are dropped when they stop).
    let (legacy_tx, beat) = (legacy.tx.clone(), old.clone());
    let heartbeat = tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if legacy_tx.send(beat.clone()).await.is_err() {
                break;
            }
        }
    });
    let (legacy_round, acked_round) =
        tokio::join!(legacy.next_round(None, T), s.next_round(Some(&me), T));
    let [l, u, un] = legacy_round?;
    assert_eq!(
        (
            l.operation.as_str(),
            u.operation.as_str(),
            un.operation.as_str()
        ),
        ("lock", "update", "unlock")
    );
    assert_eq!(entries(&u), 2);
    let [_, u2, _] = acked_round?;
    assert_eq!(entries(&u2), 2);
    assert_eq!(u2.version, u.version);

    // A sidecar that stops acknowledging is disconnected after
    // --disseminate-timeout and dropped from the tables.
    let mute = report("10.0.0.3:5000", "p", &["A"], HostOperation::Report);
    let mut silent = RawStream::open(&addr, mute).await?;
    let started = Instant::now();
    let first = silent.next(T).await?;
    assert_eq!(first.operation, "lock");
    // The others see a round with three hosts only after the mute one is
    // gone: the next complete round they get has two entries again.
    let [lk, _, _] = s.next_round(Some(&me), T).await?;
    assert!(lk.version > u2.version);
    let err = silent
        .next(T)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("dissemination timeout"), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "kicked after {waited:?}"
    );
    let mut final_entries = 0;
    for _ in 0..5 {
        let [_, u, _] = s.next_round(Some(&me), T).await?;
        final_entries = entries(&u);
        if final_entries == 2 {
            break;
        }
    }
    assert_eq!(final_entries, 2);
    heartbeat.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_heartbeating_host_is_dropped() -> TestResult {
    let cluster = Cluster::start(1, &["--heartbeat-timeout".into(), "1500ms".into()]);
    cluster.wait_healthy(T).await?;
    cluster.wait_leader(T).await?;
    let addrs = cluster.addresses();
    let watcher = host(&addrs, 1, "hb", &["A"]);
    wait_tables(&[&watcher], 1, T).await?;

    // Reports twice (a heartbeater), acks the rounds, then goes quiet.
    let me = report("10.9.0.1:5000", "hb", &["A"], HostOperation::Report);
    let mut s = RawStream::open(&addrs[0], me.clone()).await?;
    s.tx.send(me.clone()).await?;
    let [_, u, _] = s.next_round(Some(&me), T).await?;
    assert_eq!(entries(&u), 2);
    wait_tables(&[&watcher], 2, T).await?;
    let quiet = Instant::now();
    let err = s
        .next(T)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("heartbeat"), "{err}");
    wait_tables(&[&watcher], 1, T).await?;
    println!("silent host dropped after {:?}", quiet.elapsed());
    watcher.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_followers_refuse_and_leader_failover() -> TestResult {
    let mut cluster = Cluster::start(3, &["--faulty-host-detect-duration".into(), "3s".into()]);
    cluster.wait_healthy(T).await?;
    let leader = cluster.wait_leader(T).await?;
    println!("initial leader: {}", cluster.nodes[leader].ports.id);
    for (i, n) in cluster.nodes.iter().enumerate() {
        if i != leader {
            match probe(&n.ports.grpc_addr()).await {
                Probe::NotLeader(msg) => assert!(msg.contains("is not a leader"), "{msg}"),
                other => panic!("follower {} answered {other:?}", n.ports.id),
            }
        }
    }

    let addrs = cluster.addresses();
    let hosts: Vec<_> = (1..=3).map(|n| host(&addrs, n, "ha", &["Ha"])).collect();
    let refs: Vec<_> = hosts.iter().collect();
    wait_tables(&refs, 3, T).await?;
    let owner_before = hosts[0].lookup("Ha", "actor-42");
    // The membership is replicated: every node reports it.
    let deadline = Instant::now() + T;
    for n in &cluster.nodes {
        loop {
            let count = n
                .state()
                .and_then(|s| s["hostList"].as_array().map(Vec::len));
            if count == Some(3) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} state: {:?}", n.ports.id, n.state()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Kill the leader.
    let killed_at = Instant::now();
    cluster.nodes[leader].kill();
    for h in &hosts {
        h.wait_for(T, |s| !s.ready || s.sessions >= 2).await?;
    }
    for h in &hosts {
        h.wait_for(T, |s| s.ready && s.sessions >= 2 && s.table_entries == 3)
            .await
            .map_err(|e| format!("{e}; {:?}", h.state()))?;
    }
    let gap = killed_at.elapsed();
    let new_leader = cluster.wait_leader(T).await?;
    assert_ne!(new_leader, leader);
    println!(
        "leader {} killed; new leader {}; all hosts had tables again after {:?}",
        cluster.nodes[leader].ports.id, cluster.nodes[new_leader].ports.id, gap
    );
    assert_eq!(hosts[1].lookup("Ha", "actor-42"), owner_before);

    // The new leader disseminates changes: a fourth host joins, one leaves.
    let h4 = host(&addrs, 4, "ha", &["Ha"]);
    let all: Vec<_> = hosts.iter().chain(std::iter::once(&h4)).collect();
    wait_tables(&all, 4, T).await?;
    hosts[0].shutdown().await;
    wait_tables(&all[1..], 3, T).await?;
    for h in all {
        h.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_log_survives_restart() -> TestResult {
    let logdir = tempfile::tempdir()?;
    let path = logdir.path().join("raft-log");
    let mut cluster = Cluster::start(
        1,
        &[
            "--raft-logstore-path".into(),
            path.display().to_string(),
            "--faulty-host-detect-duration".into(),
            "2s".into(),
        ],
    );
    cluster.wait_healthy(T).await?;
    cluster.wait_leader(T).await?;
    let addrs = cluster.addresses();
    let h1 = host(&addrs, 1, "persist", &["P"]);
    let h2 = host(&addrs, 2, "persist", &["P", "Q"]);
    wait_tables(&[&h1, &h2], 3, T).await?;
    let before = cluster.nodes[0].state().ok_or("state")?;
    let version_before = before["tableVersion"].as_u64().ok_or("tableVersion")?;
    assert_eq!(before["hostList"].as_array().map(Vec::len), Some(2));

    // Crash the node while the hosts are connected, stop the hosts, restart.
    cluster.nodes[0].kill();
    h1.shutdown().await;
    h2.shutdown().await;
    assert!(path.join("raft.redb").exists());
    cluster.nodes[0].restart();
    cluster.wait_healthy(T).await?;
    // The membership comes back from the log, before anyone reconnects.
    let deadline = Instant::now() + T;
    let after = loop {
        if let Some(s) = cluster.nodes[0].state()
            && s["hostList"].as_array().map(Vec::len) == Some(2)
        {
            break s;
        }
        if Instant::now() > deadline {
            return Err(format!("state after restart: {:?}", cluster.nodes[0].state()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after["tableVersion"].as_u64(), Some(version_before));
    assert_eq!(after["hostList"], before["hostList"]);
    println!("restored {} hosts at table version {version_before}", 2);

    // Nobody reconnects: after the grace period they are removed, and the
    // version moves on.
    let deadline = Instant::now() + T;
    loop {
        let s = cluster.nodes[0].state().ok_or("state")?;
        if s["hostList"].as_array().map(Vec::len) == Some(0) {
            assert!(s["tableVersion"].as_u64().unwrap_or(0) > version_before);
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("hosts not removed: {s}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without --raft-logstore-path a restart starts empty.
    let mut mem = Cluster::start(1, &[]);
    mem.wait_healthy(T).await?;
    mem.wait_leader(T).await?;
    let h = host(&mem.addresses(), 7, "persist", &["P"]);
    wait_tables(&[&h], 1, T).await?;
    h.shutdown().await;
    mem.nodes[0].kill();
    mem.nodes[0].restart();
    mem.wait_healthy(T).await?;
    let s = loop {
        if let Some(s) = mem.nodes[0].state() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s["tableVersion"].as_u64(), Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_from_snapshot() -> TestResult {
    // Snapshot every 3 entries and keep no log behind it, so a follower that
    // lost its (in-memory) log can only catch up by installing a snapshot.
    let mut cluster = Cluster::start(3, &["--raft-snapshot-threshold".into(), "3".into()]);
    cluster.wait_healthy(T).await?;
    let leader = cluster.wait_leader(T).await?;
    let follower = (leader + 1) % 3;
    cluster.nodes[follower].kill();

    let addrs = cluster.addresses();
    let mut hosts = Vec::new();
    for n in 0..8u16 {
        let h = host(&addrs, 100 + n, "snap", &["S"]);
        let refs: Vec<_> = hosts.iter().chain(std::iter::once(&h)).collect();
        wait_tables(&refs, usize::from(n) + 1, T).await?;
        hosts.push(h);
    }
    for h in hosts.drain(..4) {
        h.shutdown().await;
    }
    let refs: Vec<_> = hosts.iter().collect();
    wait_tables(&refs, 4, T).await?;
    let want = cluster.nodes[leader].state().ok_or("leader state")?;
    assert_eq!(want["hostList"].as_array().map(Vec::len), Some(4));

    cluster.nodes[follower].restart();
    let deadline = Instant::now() + T;
    loop {
        if let Some(got) = cluster.nodes[follower].state()
            && got["hostList"] == want["hostList"]
            && got["tableVersion"] == want["tableVersion"]
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "follower state {:?}, leader state {want}",
                cluster.nodes[follower].state()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&cluster.nodes[follower].log)?;
    assert!(
        log.contains("installing raft snapshot"),
        "the follower did not install a snapshot"
    );
    for h in hosts {
        h.shutdown().await;
    }
    Ok(())
}
