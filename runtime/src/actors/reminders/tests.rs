//! The scheduler against a real in-memory state store and a recording host
//! (the daprd-level tests are in `runtime/tests/actor_reminders.rs`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dapr_components::state::{StateStore, memory::InMemoryStore};
use tokio_util::sync::CancellationToken;

use super::*;

struct FakeHost {
    store: Arc<dyn StateStore>,
    local: Mutex<bool>,
    active: Mutex<HashSet<String>>,
    fired: Mutex<Vec<(String, DateTime<Utc>)>>,
    cancel: Mutex<HashSet<String>>,
}

impl FakeHost {
    fn new(store: Arc<dyn StateStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            local: Mutex::new(true),
            active: Mutex::new(HashSet::new()),
            fired: Mutex::new(Vec::new()),
            cancel: Mutex::new(HashSet::new()),
        })
    }

    fn fired(&self, name: &str) -> Vec<DateTime<Utc>> {
        self.fired
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }
}

#[async_trait]
impl ReminderHost for FakeHost {
    fn hosted_types(&self) -> Vec<String> {
        vec!["T".into()]
    }
    fn is_hosted(&self, t: &str) -> bool {
        t == "T"
    }
    fn reminder_partitions(&self, _: &str) -> u32 {
        0
    }
    fn owner(&self, _: &str, _: &str) -> Owner {
        if *self.local.lock().unwrap() {
            Owner::Local
        } else {
            Owner::Remote
        }
    }
    fn is_active(&self, t: &str, id: &str) -> bool {
        self.active.lock().unwrap().contains(&format!("{t}||{id}"))
    }
    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        Some(self.store.clone())
    }
    async fn deliver(&self, cb: Callback) -> Result<Delivery, DeliverError> {
        self.fired
            .lock()
            .unwrap()
            .push((cb.name.clone(), Utc::now()));
        if self.cancel.lock().unwrap().contains(&cb.name) {
            return Ok(Delivery::Cancel);
        }
        Ok(Delivery::Done)
    }
}

fn start(host: &Arc<FakeHost>) -> (Arc<Reminders>, CancellationToken) {
    let stop = CancellationToken::new();
    let r = Reminders::new(
        Options {
            track_flush_interval: Duration::from_millis(20),
            ..Default::default()
        },
        stop.clone(),
    );
    let weak: Weak<dyn ReminderHost> = Arc::downgrade(host) as Weak<dyn ReminderHost>;
    r.start(weak);
    (r, stop)
}

fn req(name: &str, due: &str, period: &str, ttl: &str) -> CreateRequest {
    CreateRequest {
        actor_type: "T".into(),
        actor_id: "a".into(),
        name: name.into(),
        due_time: due.into(),
        period: period.into(),
        ttl: ttl.into(),
        ..Default::default()
    }
}

async fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn repetitions_fire_on_time_then_the_reminder_is_deleted() {
    let host = FakeHost::new(Arc::new(InMemoryStore::new()));
    let (r, _stop) = start(&host);
    let t0 = Utc::now();
    // Repetitions need an ISO 8601 period (Dapr: `R3/100ms` is refused).
    r.create_reminder(req("rep", "200ms", "R3/PT1S", ""))
        .await
        .unwrap();
    assert!(wait_until(|| host.fired("rep").len() == 3, Duration::from_secs(4)).await);
    let fired = host.fired("rep");
    for (i, t) in fired.iter().enumerate() {
        let expected = t0 + chrono::TimeDelta::milliseconds(200 + 1000 * i as i64);
        let off = (*t - expected).num_milliseconds();
        assert!((-5..100).contains(&off), "tick {i} off by {off} ms");
    }
    assert!(
        wait_until(|| r.scheduled() == 0, Duration::from_secs(1)).await,
        "completed reminder unscheduled"
    );
    // …and deleted from the store.
    assert!(r.get_reminder("T", "a", "rep").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(host.fired("rep").len(), 3);
}

#[tokio::test]
async fn ttl_and_cancel_stop_reminders() {
    let host = FakeHost::new(Arc::new(InMemoryStore::new()));
    let (r, _stop) = start(&host);
    host.cancel.lock().unwrap().insert("cancelme".into());
    r.create_reminder(req("ttl", "0s", "50ms", "180ms"))
        .await
        .unwrap();
    r.create_reminder(req("cancelme", "0s", "50ms", ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = host.fired("ttl").len();
    assert!(
        (3..=4).contains(&n),
        "ttl 180ms at 50ms period fired {n} times"
    );
    assert_eq!(host.fired("cancelme").len(), 1);
    assert!(
        r.get_reminder("T", "a", "cancelme")
            .await
            .unwrap()
            .is_none()
    );
    assert!(r.get_reminder("T", "a", "ttl").await.unwrap().is_none());
}

#[tokio::test]
async fn reminders_resume_from_the_store_after_a_restart() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let host = FakeHost::new(store.clone());
    let (r, stop) = start(&host);
    r.create_reminder(req("keep", "0s", "R3/PT1S", ""))
        .await
        .unwrap();
    assert!(wait_until(|| !host.fired("keep").is_empty(), Duration::from_secs(2)).await);
    // Let the track writer persist the first tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = host.fired("keep").len();
    // A new sidecar on the same store: evaluation picks the reminder up with
    // its progress, so the total stays at three.
    let host2 = FakeHost::new(store);
    let (r2, _stop2) = start(&host2);
    r2.evaluate().await.unwrap();
    assert!(
        wait_until(
            || before + host2.fired("keep").len() >= 3,
            Duration::from_secs(3)
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = before + host2.fired("keep").len();
    assert_eq!(total, 3, "fired {total} times in all");
}

#[tokio::test]
async fn remote_owner_stops_local_firing_and_timers_need_activation() {
    let host = FakeHost::new(Arc::new(InMemoryStore::new()));
    let (r, _stop) = start(&host);
    r.create_reminder(req("moving", "0s", "50ms", ""))
        .await
        .unwrap();
    assert!(wait_until(|| !host.fired("moving").is_empty(), Duration::from_secs(1)).await);
    *host.local.lock().unwrap() = false;
    r.evaluate().await.unwrap();
    let n = host.fired("moving").len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(host.fired("moving").len() <= n + 1);

    let err = r.create_timer(req("tm", "0s", "50ms", "")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "can't create timer for actor T||a: actor not activated"
    );
    host.active.lock().unwrap().insert("T||a".into());
    r.create_timer(req("tm", "0s", "50ms", "")).unwrap();
    assert!(wait_until(|| host.fired("tm").len() >= 2, Duration::from_secs(1)).await);
    // Deactivated: the timer is dropped at its next tick at the latest.
    host.active.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let n = host.fired("tm").len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.fired("tm").len(), n);
    assert!(matches!(
        r.create_reminder(req("bad/name", "", "", "")).await,
        Err(ReminderError::InvalidName(_))
    ));
    assert!(matches!(
        r.create_reminder(CreateRequest {
            actor_type: "Other".into(),
            ..req("x", "", "", "")
        })
        .await,
        Err(ReminderError::NotHosted)
    ));
}
