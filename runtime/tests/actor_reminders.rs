//! Actor timers and reminders through a real daprd and a real dapr-placement,
//! with a small actor app in this process: on-time firing, repetitions, ttl,
//! the cancel header, Dapr's GET shape and error codes, timers stopping with
//! their actor, and a reminder surviving a SIGKILL of daprd (state in SQLite).

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path as AxPath, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::IntoResponse,
    routing::{any, get},
};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use common::*;

#[derive(Debug, Clone)]
struct Event {
    at: DateTime<Utc>,
    /// `remind/<name>`, `timer/<name>`, or `deactivate`.
    what: String,
    actor: String,
    body: String,
}

#[derive(Clone, Default)]
struct App {
    events: Arc<Mutex<Vec<Event>>>,
}

impl App {
    fn times(&self, what: &str) -> Vec<DateTime<Utc>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.what == what)
            .map(|e| e.at)
            .collect()
    }

    fn count(&self, what: &str) -> usize {
        self.times(what).len()
    }

    fn find(&self, what: &str) -> Option<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.what == what)
            .cloned()
    }
}

const CONFIG: &str = r#"{"entities":["Remind"],"actorIdleTimeout":"1s","actorScanInterval":"200ms","drainOngoingCallTimeout":"1s"}"#;

async fn method(
    State(app): State<App>,
    AxPath((_t, id, rest)): AxPath<(String, String, String)>,
    body: String,
) -> impl IntoResponse {
    app.events.lock().unwrap().push(Event {
        at: Utc::now(),
        what: rest.clone(),
        actor: id,
        body,
    });
    let mut h = HeaderMap::new();
    if rest.starts_with("remind/cancel") {
        h.insert("X-DaprReminderCancel", HeaderValue::from_static("true"));
    }
    (StatusCode::OK, h, "")
}

async fn deactivate(
    State(app): State<App>,
    AxPath((_t, id)): AxPath<(String, String)>,
) -> StatusCode {
    app.events.lock().unwrap().push(Event {
        at: Utc::now(),
        what: "deactivate".into(),
        actor: id,
        body: String::new(),
    });
    StatusCode::OK
}

async fn start_app() -> (App, u16) {
    let app = App::default();
    let router = Router::new()
        .route(
            "/dapr/config",
            get(|| async { ([("content-type", "application/json")], CONFIG) }),
        )
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/actors/{t}/{id}/method/{*rest}", any(method))
        .route("/actors/{t}/{id}", any(deactivate))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, port)
}

/// dapr-placement, a sibling binary of the workspace (`cargo build` puts it
/// next to daprd).
struct Placement {
    child: Child,
    port: u16,
}

impl Drop for Placement {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn placement_bin() -> PathBuf {
    Path::new(DAPRD).with_file_name("dapr-placement")
}

async fn start_placement(dir: &Path) -> Placement {
    let bin = placement_bin();
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p dapr-placement`",
        bin.display()
    );
    let port = free_port();
    let raft = free_port();
    let health = free_port();
    let log = std::fs::File::create(dir.join("placement.log")).unwrap();
    let child = Command::new(bin)
        .args([
            "--id",
            "p0",
            "--initial-cluster",
            &format!("p0=127.0.0.1:{raft}"),
            "--port",
            &port.to_string(),
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            &health.to_string(),
            "--healthz-listen-address",
            "127.0.0.1",
            "--metrics-port",
            &free_port().to_string(),
            "--metrics-listen-address",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn dapr-placement");
    let p = Placement { child, port };
    let ok = poll(Duration::from_secs(15), || async move {
        request(
            "GET",
            &format!("http://127.0.0.1:{health}/healthz"),
            None,
            &[],
        )
        .await
        .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(ok, "placement did not become healthy");
    p
}

async fn poll<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start_daprd(res: &Path, app_port: u16, placement: u16) -> Daprd {
    DaprdBuilder::new("reminders-app")
        .resources(res)
        .arg("--app-port")
        .arg(app_port.to_string())
        .arg("--placement-host-address")
        .arg(format!("127.0.0.1:{placement}"))
        .arg("--dapr-internal-grpc-port")
        .arg(free_port().to_string())
        .start()
        .await
}

fn url(d: &Daprd, actor: &str, kind: &str, name: &str) -> String {
    d.url(&format!("/v1.0/actors/Remind/{actor}/{kind}/{name}"))
}

/// Registers, retrying while the actor runtime is still coming up.
async fn register_when_ready(d: &Daprd, actor: &str, name: &str, body: &str) {
    let u = url(d, actor, "reminders", name);
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = http("POST", &u, body).await;
        if r.status == 204 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "registering {name}: {} {}\n{}",
            r.status,
            r.text(),
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(u: &str, body: &str) -> Reply {
    http("POST", u, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_and_timers_through_daprd() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    let db = dir.path().join("actors.db");
    write_resource(
        &res,
        "state.yaml",
        &component_yaml(
            "actorstore",
            "state.sqlite",
            &[
                ("connectionString", &db.display().to_string()),
                ("actorStateStore", "true"),
            ],
        ),
    );
    let placement = start_placement(dir.path()).await;
    let (app, app_port) = start_app().await;
    let mut d = start_daprd(&res, app_port, placement.port).await;

    // ---- on time, repetitions stop it, then it is gone -------------------
    // An absolute dueTime on a whole second makes every tick's time exact.
    let t0 = (Utc::now() + TimeDelta::milliseconds(1500)).trunc_subsecs(0);
    register_when_ready(
        &d,
        "a1",
        "ontime",
        &format!(
            r#"{{"dueTime":"{}","period":"R3/PT1S","data":{{"n":1}}}}"#,
            t0.to_rfc3339()
        ),
    )
    .await;
    // ttl and cancel run alongside.
    assert_eq!(
        post(
            &url(&d, "a2", "reminders", "ttl"),
            r#"{"dueTime":"0s","period":"100ms","ttl":"450ms"}"#
        )
        .await
        .status,
        204
    );
    assert_eq!(
        post(
            &url(&d, "a3", "reminders", "cancelme"),
            r#"{"dueTime":"0s","period":"100ms"}"#
        )
        .await
        .status,
        204
    );

    // ---- GET shape, errors ---------------------------------------------------
    assert_eq!(
        post(
            &url(&d, "a4", "reminders", "info"),
            r#"{"dueTime":"1h","period":"R3/PT1H","ttl":"3h","data":{"a":[1,2]}}"#
        )
        .await
        .status,
        204
    );
    let got = http("GET", &url(&d, "a4", "reminders", "info"), "").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["actorID"], "a4");
    assert_eq!(j["actorType"], "Remind");
    assert_eq!(j["dueTime"], "1h");
    assert_eq!(j["period"], "R3/PT1H");
    assert_eq!(j["data"], serde_json::json!({"a": [1, 2]}));
    let ttl = DateTime::parse_from_rfc3339(j["ttl"].as_str().unwrap()).unwrap();
    let expect = Utc::now() + TimeDelta::hours(4);
    assert!(
        (ttl.with_timezone(&Utc) - expect).num_seconds().abs() < 30,
        "ttl {ttl}"
    );

    let missing = http("GET", &url(&d, "a4", "reminders", "nope"), "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "ERR_ACTOR_REMINDER_NOT_FOUND");
    let bad = post(
        &url(&d, "a4", "reminders", "bad"),
        r#"{"period":"R0/PT1S"}"#,
    )
    .await;
    assert_eq!(bad.status, 500);
    assert_eq!(bad.error_code(), "ERR_ACTOR_REMINDER_CREATE");
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("zero repetitions")
    );
    let bad = post(&url(&d, "a4", "reminders", "bad"), r#"{"dueTime":"soon"}"#).await;
    assert_eq!(bad.error_code(), "ERR_ACTOR_REMINDER_CREATE");
    let bad = post(
        &url(&d, "a4", "reminders", "bad"),
        r#"{"dueTime":"1s","ttl":"2000-01-01T00:00:00Z"}"#,
    )
    .await;
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("has already expired")
    );
    let bad = post(&url(&d, "a4", "reminders", "bad"), "{not json").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let bad = post(&url(&d, "a4", "reminders", "bad"), r#"{"dueTime":5}"#).await;
    assert_eq!(bad.error_code(), "ERR_MALFORMED_REQUEST");
    let bad = post(&url(&d, "a4", "reminders", "a%2Fb"), "{}").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "ERR_BAD_REQUEST")
    );
    let bad = post(&d.url("/v1.0/actors/Other/x/reminders/r"), "{}").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (403, "ERR_ACTOR_REMINDER_NON_HOSTED")
    );
    let bad = post(&url(&d, "never", "timers", "t"), r#"{"period":"1s"}"#).await;
    assert_eq!(bad.status, 500);
    assert_eq!(bad.error_code(), "ERR_ACTOR_TIMER_CREATE");
    assert!(bad.text().contains("actor not activated"), "{}", bad.text());
    assert_eq!(
        http("DELETE", &url(&d, "a4", "reminders", "nope"), "")
            .await
            .status,
        204
    );
    assert_eq!(
        http("DELETE", &url(&d, "a4", "reminders", "info"), "")
            .await
            .status,
        204
    );
    assert_eq!(
        http("GET", &url(&d, "a4", "reminders", "info"), "")
            .await
            .status,
        404
    );

    // ---- the on-time reminder: three ticks at t0 + k s (±100 ms) -------------
    assert!(
        poll(Duration::from_secs(6), || async {
            app.count("remind/ontime") >= 3
        })
        .await,
        "ontime fired {} times\n{}",
        app.count("remind/ontime"),
        d.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks = app.times("remind/ontime");
    assert_eq!(ticks.len(), 3, "R3 fires exactly three times");
    for (k, t) in ticks.iter().enumerate() {
        let want = t0 + TimeDelta::seconds(k as i64);
        let off = (*t - want).num_milliseconds();
        assert!(off.abs() <= 100, "tick {k} off by {off} ms");
    }
    let body: serde_json::Value =
        serde_json::from_str(&app.find("remind/ontime").unwrap().body).unwrap();
    assert_eq!(body["data"], serde_json::json!({"n": 1}));
    assert_eq!(body["period"], "R3/PT1S");
    assert_eq!(
        http("GET", &url(&d, "a1", "reminders", "ontime"), "")
            .await
            .status,
        404,
        "a finished reminder is deleted"
    );
    // ttl 450 ms at 100 ms: about five ticks, then nothing.
    let n = app.count("remind/ttl");
    assert!((3..=6).contains(&n), "ttl reminder fired {n} times");
    assert_eq!(app.count("remind/cancelme"), 1, "cancel header stops it");
    assert_eq!(
        http("GET", &url(&d, "a3", "reminders", "cancelme"), "")
            .await
            .status,
        404
    );

    // ---- timers: fire, DELETE stops, deactivation stops ------------------------
    let call = post(&d.url("/v1.0/actors/Remind/t1/method/hello"), "{}").await;
    assert_eq!(call.status, 200, "{}", call.text());
    assert_eq!(
        post(
            &url(&d, "t1", "timers", "fast"),
            r#"{"dueTime":"0s","period":"100ms","callback":"cb","data":"x"}"#
        )
        .await
        .status,
        204
    );
    assert!(
        poll(Duration::from_secs(2), || async {
            app.count("timer/fast") >= 3
        })
        .await
    );
    let tb: serde_json::Value =
        serde_json::from_str(&app.find("timer/fast").unwrap().body).unwrap();
    assert_eq!(
        (tb["callback"].as_str(), tb["data"].as_str()),
        (Some("cb"), Some("x"))
    );
    assert_eq!(
        http("DELETE", &url(&d, "t1", "timers", "fast"), "")
            .await
            .status,
        204
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let n = app.count("timer/fast");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("timer/fast"), n, "deleted timer stopped");

    // A slow timer outlives the actor's 1 s idle timeout: after the
    // deactivation it never fires again.
    let call = post(&d.url("/v1.0/actors/Remind/t2/method/hello"), "{}").await;
    assert_eq!(call.status, 200);
    assert_eq!(
        post(
            &url(&d, "t2", "timers", "slow"),
            r#"{"dueTime":"0s","period":"2500ms"}"#
        )
        .await
        .status,
        204
    );
    let deactivated = poll(Duration::from_secs(5), || async {
        app.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.what == "deactivate" && e.actor == "t2")
    })
    .await;
    assert!(deactivated, "t2 was not deactivated\n{}", d.logs());
    let n = app.count("timer/slow");
    tokio::time::sleep(Duration::from_millis(2800)).await;
    assert_eq!(app.count("timer/slow"), n, "timer stopped with its actor");

    // ---- a reminder survives SIGKILL + restart ---------------------------------
    register_when_ready(&d, "s1", "survive", r#"{"dueTime":"0s","period":"500ms"}"#).await;
    assert!(
        poll(Duration::from_secs(3), || async {
            app.count("remind/survive") >= 2
        })
        .await
    );
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Utc::now();
    let d2 = start_daprd(&res, app_port, placement.port).await;
    let resumed = poll(Duration::from_secs(20), || async {
        app.times("remind/survive").iter().any(|t| *t > killed_at)
    })
    .await;
    assert!(
        resumed,
        "reminder did not fire after the restart\n{}",
        d2.logs()
    );
    assert_eq!(
        http("GET", &url(&d2, "s1", "reminders", "survive"), "")
            .await
            .status,
        200
    );
    assert_eq!(
        http("DELETE", &url(&d2, "s1", "reminders", "survive"), "")
            .await
            .status,
        204
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = app.count("remind/survive");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.count("remind/survive"), n, "deleted reminder stopped");
}

/// Calls `hello` on `actor` through `d` and says which of the two apps
/// served it (0 or 1), if any.
async fn served_by(d: &Daprd, apps: [&App; 2], actor: &str) -> Option<usize> {
    let tag = format!("hello-{}", Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let r = post(
        &d.url(&format!("/v1.0/actors/Remind/{actor}/method/{tag}")),
        "{}",
    )
    .await;
    if r.status != 200 {
        return None;
    }
    apps.iter().position(|a| a.count(&tag) > 0)
}

/// Ticks of `what` for `actor` recorded by `app` after `since`.
fn ticks_of(app: &App, what: &str, actor: &str, since: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    app.events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.what == what && e.actor == actor && e.at > since)
        .map(|e| e.at)
        .collect()
}

/// No two ticks of a 500 ms reminder closer than 300 ms (a duplicate fire).
fn assert_no_duplicates(ticks: &mut [DateTime<Utc>], what: &str) {
    ticks.sort();
    for w in ticks.windows(2) {
        let gap = (w[1] - w[0]).num_milliseconds();
        assert!(gap >= 300, "{what}: ticks {gap} ms apart (duplicate fire)");
    }
}

/// Two daprd (one app id, one shared SQLite store) and one placement: a
/// reminder created or deleted through the sidecar that does not own the
/// actor fires on the owner only, on time; `overwrite: false` is refused with
/// Dapr's 409; after the owner dies the survivor fires it, and after a new
/// host joins it still fires exactly once per tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_follow_the_owner_across_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    let db = dir.path().join("actors.db");
    write_resource(
        &res,
        "state.yaml",
        &component_yaml(
            "actorstore",
            "state.sqlite",
            &[
                ("connectionString", &db.display().to_string()),
                ("actorStateStore", "true"),
            ],
        ),
    );
    let placement = start_placement(dir.path()).await;
    let (app_a, port_a) = start_app().await;
    let (app_b, port_b) = start_app().await;
    let da = start_daprd(&res, port_a, placement.port).await;
    let mut db_ = start_daprd(&res, port_b, placement.port).await;
    let apps = [&app_a, &app_b];

    // An actor owned by B, found by calling through A.
    let end = tokio::time::Instant::now() + Duration::from_secs(40);
    let actor = 'find: loop {
        for i in 0..20 {
            let id = format!("x{i}");
            if served_by(&da, apps, &id).await == Some(1) {
                break 'find id;
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no actor placed on host B\n{}\n{}",
            da.logs(),
            db_.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // ---- created through A (not the owner): fires on B only, on time -------
    let t0 = (Utc::now() + TimeDelta::milliseconds(1500)).trunc_subsecs(0);
    let r = post(
        &url(&da, &actor, "reminders", "moving"),
        &format!(r#"{{"dueTime":"{}","period":"500ms"}}"#, t0.to_rfc3339()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let before = t0 - TimeDelta::seconds(10);
    assert!(
        poll(Duration::from_secs(6), || async {
            ticks_of(&app_b, "remind/moving", &actor, before).len() >= 4
        })
        .await,
        "owner B got {} ticks\n{}\n{}",
        ticks_of(&app_b, "remind/moving", &actor, before).len(),
        da.logs(),
        db_.logs()
    );
    assert!(
        ticks_of(&app_a, "remind/moving", &actor, before).is_empty(),
        "the non-owner's app got the reminder"
    );
    let ticks = ticks_of(&app_b, "remind/moving", &actor, before);
    for (k, t) in ticks.iter().take(4).enumerate() {
        let want = t0 + TimeDelta::milliseconds(500 * k as i64);
        let off = (*t - want).num_milliseconds();
        assert!(off.abs() <= 100, "tick {k} off by {off} ms");
    }

    // ---- overwrite: false on an existing reminder: Dapr's 409 ----------------
    let r = post(
        &url(&da, &actor, "reminders", "moving"),
        r#"{"dueTime":"1h","overwrite":false}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "ERR_ACTOR_REMINDER_ALREADY_EXISTS")
    );
    assert_eq!(r.json()["message"], "actor reminder already exists: moving");
    let got = http("GET", &url(&db_, &actor, "reminders", "moving"), "").await;
    assert_eq!(
        got.json()["period"],
        "500ms",
        "the refused write changed nothing"
    );

    // ---- deleted through A: the owner stops firing it ------------------------
    let r = post(
        &url(&da, &actor, "reminders", "doomed"),
        r#"{"dueTime":"0s","period":"200ms"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(
        poll(Duration::from_secs(3), || async {
            app_b.count("remind/doomed") >= 2
        })
        .await
    );
    assert_eq!(
        http("DELETE", &url(&da, &actor, "reminders", "doomed"), "")
            .await
            .status,
        204
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = app_b.count("remind/doomed");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app_b.count("remind/doomed"),
        n,
        "deleted via A, still fires on B"
    );
    assert_eq!(app_a.count("remind/doomed"), 0);

    // ---- the owner dies: the survivor fires it ---------------------------------
    let mut child = db_.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Utc::now();
    assert!(
        poll(Duration::from_secs(20), || async {
            ticks_of(&app_a, "remind/moving", &actor, killed).len() >= 3
        })
        .await,
        "survivor A never fired the reminder\n{}",
        da.logs()
    );
    let moved_after = ticks_of(&app_a, "remind/moving", &actor, killed)[0] - killed;
    println!(
        "owner SIGKILL: reminder fired on the survivor after {} ms",
        moved_after.num_milliseconds()
    );
    let mut on_a = ticks_of(&app_a, "remind/moving", &actor, killed);
    assert_no_duplicates(&mut on_a, "after the owner died");

    // ---- a host joins: still one fire per tick, on whichever host owns it ----
    let (app_c, port_c) = start_app().await;
    let dc = start_daprd(&res, port_c, placement.port).await;
    let apps_ac = [&app_a, &app_c];
    assert!(
        poll(Duration::from_secs(40), || async {
            let mut seen = [false; 2];
            for i in 0..20 {
                if let Some(h) = served_by(&dc, apps_ac, &format!("probe{i}")).await {
                    seen[h] = true;
                }
            }
            seen == [true, true]
        })
        .await,
        "the new host never got actors\n{}",
        dc.logs()
    );
    // Let both tables settle, then watch three seconds.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let from = Utc::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut all: Vec<_> = ticks_of(&app_a, "remind/moving", &actor, from);
    all.extend(ticks_of(&app_c, "remind/moving", &actor, from));
    assert!(
        (5..=7).contains(&all.len()),
        "{} ticks in 3 s at 500 ms after the join",
        all.len()
    );
    assert_no_duplicates(&mut all, "after the join");
    assert_eq!(
        http("DELETE", &url(&dc, &actor, "reminders", "moving"), "")
            .await
            .status,
        204
    );
}

/// Reminder fires per second from one daprd to its app: `N` reminders of a
/// `period` (N / period demanded), counted by a minimal app. Not a
/// pass/fail test; run with
/// `cargo test --release -p daprd --test actor_reminders -- --ignored --nocapture measure`
/// (release: the app runs in this process; `DAPRD_BIN` picks another daprd;
/// `BENCH_REMINDERS` (5000), `BENCH_PERIOD` (100ms), `BENCH_SECS` (5),
/// `BENCH_STORE` `sqlite` | `memory`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_reminder_throughput() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let n: usize = env("BENCH_REMINDERS", "5000").parse().unwrap();
    let period = env("BENCH_PERIOD", "100ms");
    let secs: u64 = env("BENCH_SECS", "5").parse().unwrap();
    let bin = env("DAPRD_BIN", DAPRD);
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    let db = dir.path().join("actors.db");
    let store = if env("BENCH_STORE", "sqlite") == "memory" {
        component_yaml(
            "actorstore",
            "state.in-memory",
            &[("actorStateStore", "true")],
        )
    } else {
        component_yaml(
            "actorstore",
            "state.sqlite",
            &[
                ("connectionString", &db.display().to_string()),
                ("actorStateStore", "true"),
            ],
        )
    };
    write_resource(&res, "state.yaml", &store);
    let placement = start_placement(dir.path()).await;

    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let router = Router::new()
        .route(
            "/dapr/config",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"entities":["Bench"],"remindersStoragePartitions":64,"actorIdleTimeout":"1h"}"#,
                )
            }),
        )
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route(
            "/actors/{t}/{id}/method/{*rest}",
            any(move || {
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (http_port, grpc_port) = (free_port(), free_port());
    let mut child = Command::new(&bin)
        .args([
            "--app-id",
            "bench-reminders",
            "--app-port",
            &app_port.to_string(),
        ])
        .args(["--dapr-http-port", &http_port.to_string()])
        .args(["--dapr-grpc-port", &grpc_port.to_string()])
        .args(["--dapr-internal-grpc-port", &free_port().to_string()])
        .args([
            "--placement-host-address",
            &format!("127.0.0.1:{}", placement.port),
        ])
        .args([
            "--dapr-listen-addresses",
            "127.0.0.1",
            "--log-level",
            "warn",
        ])
        .args(["--resources-path", &res.display().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let base = format!("http://127.0.0.1:{http_port}");
    let ready = format!("{base}/v1.0/healthz");
    assert!(
        poll(Duration::from_secs(20), || async {
            request("GET", &ready, None, &[])
                .await
                .is_ok_and(|r| r.status == 204)
        })
        .await,
        "daprd did not start"
    );
    let created = std::time::Instant::now();
    // Created far enough ahead that they start together, aligned.
    let register = |i: usize| {
        let u = format!("{base}/v1.0/actors/Bench/b{i}/reminders/r");
        let body = format!(r#"{{"dueTime":"0s","period":"{period}"}}"#);
        async move {
            for _ in 0..400 {
                if http("POST", &u, &body).await.status == 204 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("could not register {u}");
        }
    };
    register(0).await;
    let mut next = 1;
    while next < n {
        let batch: Vec<_> = (next..(next + 64).min(n)).map(register).collect();
        next += batch.len();
        futures::future::join_all(batch).await;
    }
    println!(
        "registered {n} reminders (period {period}) in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("").to_owned();
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    let (c0, f0, t0) = (
        cpu(pid),
        fired.load(Ordering::Relaxed),
        std::time::Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, f1, el) = (cpu(pid), fired.load(Ordering::Relaxed), t0.elapsed());
    let rate = (f1 - f0) as f64 / el.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "reminders fired: {rate:.0}/s over {:.1} s; daprd CPU {:.0}% of one core; load average {}",
        el.as_secs_f64(),
        (c1 - c0) / el.as_secs_f64() * 100.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = child.kill();
    let _ = child.wait();
}
