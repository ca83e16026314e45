//! The distributed lock API against real daprd processes: `lock.redis` on the
//! test Redis (contention across two sidecars, expiry, unlock statuses) and
//! `lock.in-memory`, over HTTP, gRPC and the Python SDK.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use dapr_rs_proto::runtime as pb;

async fn start(app_id: &str, type_: &str) -> (Daprd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let md: Vec<(&str, String)> = if type_ == "lock.redis" {
        vec![("redisHost", redis_addr()), ("keyPrefix", "none".into())]
    } else {
        vec![]
    };
    let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_resource(
        dir.path(),
        "lock.yaml",
        &component_yaml("lockstore", type_, &md),
    );
    let d = DaprdBuilder::new(app_id)
        .resources(dir.path())
        .start()
        .await;
    (d, dir)
}

async fn lock(d: &Daprd, resource: &str, owner: &str, expiry: i64) -> Reply {
    http(
        "POST",
        &d.url("/v1.0-alpha1/lock/lockstore"),
        &serde_json::json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry})
            .to_string(),
    )
    .await
}

async fn unlock(d: &Daprd, resource: &str, owner: &str) -> i64 {
    let r = http(
        "POST",
        &d.url("/v1.0-alpha1/unlock/lockstore"),
        &serde_json::json!({"resourceId": resource, "lockOwner": owner}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"].as_i64().unwrap()
}

async fn statuses_and_expiry(d: &Daprd) {
    let res = format!("res-{}", uuid::Uuid::new_v4().simple());
    let r = lock(d, &res, "alice", 1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"success": true}));
    assert_eq!(lock(d, &res, "bob", 10).await.json()["success"], false);
    assert_eq!(unlock(d, &res, "bob").await, 2, "LOCK_BELONGS_TO_OTHERS");
    // The lock expires after 1 s; then bob can take it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(lock(d, &res, "bob", 10).await.json()["success"], true);
    assert_eq!(unlock(d, &res, "alice").await, 2);
    assert_eq!(unlock(d, &res, "bob").await, 0, "SUCCESS");
    assert_eq!(unlock(d, &res, "bob").await, 1, "LOCK_DOES_NOT_EXIST");

    // Validation and lookup errors.
    let r = lock(d, "", "a", 10).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = lock(d, &res, "", 10).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = lock(d, &res, "a", 0).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = http(
        "POST",
        &d.url("/v1.0-alpha1/lock/nope"),
        r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":5}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_LOCK_STORE_NOT_FOUND")
    );
    let r = http("POST", &d.url("/v1.0-alpha1/lock/lockstore"), "{not json").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn redis_statuses_and_expiry() {
    let (d, _dir) = start("lock-redis", "lock.redis").await;
    statuses_and_expiry(&d).await;
}

#[tokio::test]
async fn in_memory_statuses_and_expiry() {
    let (d, _dir) = start("lock-mem", "lock.in-memory").await;
    statuses_and_expiry(&d).await;
}

/// 40 owners race for one resource through two sidecars sharing Redis:
/// exactly one wins.
#[tokio::test]
async fn redis_contention_across_two_sidecars_one_winner() {
    let (a, _da) = start("lock-a", "lock.redis").await;
    let (b, _db) = start("lock-b", "lock.redis").await;
    let res = format!("contended-{}", uuid::Uuid::new_v4().simple());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            a.url("/v1.0-alpha1/lock/lockstore")
        } else {
            b.url("/v1.0-alpha1/lock/lockstore")
        };
        let body = serde_json::json!({"resourceId": res, "lockOwner": format!("owner-{i}"), "expiryInSeconds": 30}).to_string();
        tasks.push(tokio::spawn(
            async move { (i, http("POST", &url, &body).await) },
        ));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        if r.json()["success"] == true {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let w = winners[0];
    // Only the winner can release it, from either sidecar.
    let other = if w % 2 == 0 { &b } else { &a };
    assert_eq!(
        unlock(other, &res, &format!("owner-{}", (w + 1) % 40)).await,
        2
    );
    assert_eq!(unlock(other, &res, &format!("owner-{w}")).await, 0);
}

#[tokio::test]
async fn grpc_try_lock_and_unlock() {
    let (d, _dir) = start("lock-grpc", "lock.in-memory").await;
    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let req = |owner: &str| pb::TryLockRequest {
        store_name: "lockstore".into(),
        resource_id: "g".into(),
        lock_owner: owner.into(),
        expiry_in_seconds: 10,
    };
    assert!(
        c.try_lock_alpha1(req("x"))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    assert!(
        !c.try_lock_alpha1(req("y"))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    let un = |owner: &str| pb::UnlockRequest {
        store_name: "lockstore".into(),
        resource_id: "g".into(),
        lock_owner: owner.into(),
    };
    assert_eq!(
        c.unlock_alpha1(un("y")).await.unwrap().into_inner().status,
        2
    );
    assert_eq!(
        c.unlock_alpha1(un("x")).await.unwrap().into_inner().status,
        0
    );
    assert_eq!(
        c.unlock_alpha1(un("x")).await.unwrap().into_inner().status,
        1
    );
    let e = c
        .try_lock_alpha1(pb::TryLockRequest {
            store_name: "nope".into(),
            ..req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn python_sdk_try_lock_context_manager() {
    let (d, _dir) = start("lock-py", "lock.redis").await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/e2e/python/test_lock.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("LOCK_STORE", "lockstore")
        .output()
        .expect("python3 -m pytest");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" passed"),
        "pytest failed:\n{text}\n--- daprd log ---\n{}",
        d.logs()
    );
}
