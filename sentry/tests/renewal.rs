//! The workload client renews its certificate at half its lifetime.

mod common;

use std::time::{Duration, Instant};

use dapr_security::SvidStore;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_renews_at_half_lifetime() {
    dapr_security::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 4s\n    allowedClockSkew: 0s\n",
    )
    .unwrap();
    let sentry = common::Sentry::start(
        &dir.path().join("creds"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let client = Arc::new(sentry.client(sentry.anchors(), "renewer"));
    let store = SvidStore::new();
    let mut changes = store.subscribe();
    let started = Instant::now();
    let task = client.clone().start(store.clone(), 3).await.unwrap();
    let first = store.current().unwrap();
    assert_eq!(
        first
            .not_after()
            .duration_since(first.not_before())
            .unwrap(),
        Duration::from_secs(4)
    );
    changes.borrow_and_update();

    // Two renewals, each about 2 s (half of 4 s) after the previous one.
    let mut serials = vec![first.chain()[0].clone()];
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("no renewal")
            .unwrap();
        let svid = store.current().unwrap();
        serials.push(svid.chain()[0].clone());
    }
    let elapsed = started.elapsed();
    task.abort();
    assert!(serials[0] != serials[1] && serials[1] != serials[2]);
    // Whole-second certificate times make this 3-6 s for two renewals.
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_secs(7),
        "{elapsed:?}"
    );
}
