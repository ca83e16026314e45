//! Load shapes: a fixed rate (open loop) and full speed (closed loop), both
//! duration-bounded, recording each call's latency in HDR histograms.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::{
    sync::{Semaphore, TryAcquireError, oneshot},
    task::JoinSet,
};

/// A single call slower than this counts as an error (keeps every loop bounded).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most ops in flight at once in the open loop; when reached, the pacer
/// waits, and the wait counts in latency since that is measured from the
/// scheduled time.
const MAX_IN_FLIGHT: usize = 4096;
/// Histogram range: 1 ns .. 60 s, 3 significant digits.
const HIST_MAX_NS: u64 = 60_000_000_000;

/// One save + one get of a key, as each target does it.
pub trait OpClient: Clone + Send + Sync + 'static {
    fn save(&self, key: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn get(&self, key: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Latency histograms in nanoseconds.
#[derive(Clone)]
pub struct Recorder {
    pub save: Histogram<u64>,
    pub get: Histogram<u64>,
    pub op: Histogram<u64>,
    /// Open loop only: how late each op started against its schedule (pacer
    /// wake-up + task spawn); a floor under every open-loop latency.
    pub lag: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).context("cannot create a histogram")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            save: histogram()?,
            get: histogram()?,
            op: histogram()?,
            lag: histogram()?,
            ops: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn add(&mut self, other: &Recorder) -> anyhow::Result<()> {
        self.save.add(&other.save).context("merging histograms")?;
        self.get.add(&other.get).context("merging histograms")?;
        self.op.add(&other.op).context("merging histograms")?;
        self.lag.add(&other.lag).context("merging histograms")?;
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        Ok(())
    }
}

/// What one phase measured.
pub struct PhaseResult {
    pub rec: Recorder,
    /// From the first (scheduled) start to the last completion.
    pub elapsed: Duration,
    /// Open loop: ops still running when the drain wait ended.
    pub unfinished: u64,
}

impl PhaseResult {
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rec.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// How one op went.
enum Outcome {
    Done {
        save: Duration,
        get: Duration,
        op: Duration,
    },
    Failed(String),
}

impl Recorder {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done { save, get, op } => {
                self.save.saturating_record(nanos(save));
                self.get.saturating_record(nanos(get));
                self.op.saturating_record(nanos(op));
                self.ops += 1;
            }
            Outcome::Failed(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }
}

/// One op: save, then get of the same key. `t0` is when the op counts as
/// started: the scheduled time (open loop) or the actual start (closed loop).
/// Save latency = save done - t0; get latency = get done - save done; op =
/// get done - t0.
async fn one_op<C: OpClient>(client: &C, key: usize, t0: Instant) -> Outcome {
    match tokio::time::timeout(CALL_TIMEOUT, client.save(key)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::Failed(format!("save: {e:#}")),
        Err(_) => return Outcome::Failed("save: timed out".into()),
    }
    let t1 = Instant::now();
    match tokio::time::timeout(CALL_TIMEOUT, client.get(key)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::Failed(format!("get: {e:#}")),
        Err(_) => return Outcome::Failed("get: timed out".into()),
    }
    let t2 = Instant::now();
    Outcome::Done {
        save: t1 - t0,
        get: t2 - t1,
        op: t2 - t0,
    }
}

/// Full speed: `workers` tasks each run ops back to back until `duration` ends.
pub async fn closed_loop<C: OpClient>(
    client: C,
    workers: usize,
    duration: Duration,
    keys: usize,
) -> anyhow::Result<PhaseResult> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for w in 0..workers {
        let client = client.clone();
        set.spawn(async move {
            let mut rec = Recorder::new()?;
            let mut key = w % keys;
            while Instant::now() < deadline {
                rec.record(one_op(&client, key, Instant::now()).await);
                key = (key + workers) % keys;
            }
            anyhow::Ok(rec)
        });
    }
    let mut total = Recorder::new()?;
    while let Some(joined) = set.join_next().await {
        total.add(&joined.context("a load worker panicked")??)?;
    }
    Ok(PhaseResult {
        rec: total,
        elapsed: start.elapsed(),
        unfinished: 0,
    })
}

/// Makes this thread's sleeps precise: Linux lets a sleep overrun by the
/// thread's timer slack, 50 us by default; 1 us here.
fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes
    // the calling thread's timer slack; failure leaves the default.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

/// Sleeps until `t`: the OS sleep for all but the last 20 us (with the timer
/// slack tightened it wakes within a few us), then yields in a loop.
fn sleep_until(t: Instant) {
    const SPIN: Duration = Duration::from_micros(20);
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::thread::yield_now();
        }
    }
}

fn lock(rec: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    rec.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fixed rate: a pacer thread starts op i at `start + i / rate` (its own
/// task, however many are still running), for `duration`. Latency counts from
/// the scheduled time, so queueing anywhere (client, daprd, Redis) shows up.
pub async fn open_loop<C: OpClient>(
    client: C,
    rate: u32,
    duration: Duration,
    keys: usize,
) -> anyhow::Result<PhaseResult> {
    let rec = Arc::new(Mutex::new(Recorder::new()?));
    let sem = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(5);
    let (done_tx, done_rx) = oneshot::channel::<u64>();
    let pacer_rec = rec.clone();
    let pacer_sem = sem.clone();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            tighten_timer_slack();
            let give_up = start + duration + 2 * CALL_TIMEOUT;
            let mut sent: u64 = 0;
            loop {
                let offset_ns = u128::from(sent) * 1_000_000_000 / u128::from(rate);
                let offset = Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX));
                if offset >= duration {
                    break;
                }
                let scheduled = start + offset;
                sleep_until(scheduled);
                let permit = loop {
                    match pacer_sem.clone().try_acquire_owned() {
                        Ok(p) => break Some(p),
                        Err(TryAcquireError::NoPermits) if Instant::now() < give_up => {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        Err(_) => break None,
                    }
                };
                let Some(permit) = permit else { break };
                let client = client.clone();
                let rec = pacer_rec.clone();
                let key = usize::try_from(sent).unwrap_or(0) % keys;
                handle.spawn(async move {
                    let lag = Instant::now().saturating_duration_since(scheduled);
                    let outcome = one_op(&client, key, scheduled).await;
                    let mut rec = lock(&rec);
                    rec.lag.saturating_record(nanos(lag));
                    rec.record(outcome);
                    drop(rec);
                    drop(permit);
                });
                sent += 1;
            }
            let _ = done_tx.send(sent);
        })
        .context("cannot start the pacer thread")?;
    let sent = done_rx.await.context("the pacer thread failed")?;
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(2 * CALL_TIMEOUT + Duration::from_secs(1), async {
        sem.acquire_many(all).await.map(drop)
    })
    .await;
    let elapsed = start.elapsed();
    let unfinished = match drained {
        Ok(Ok(())) => 0,
        _ => (MAX_IN_FLIGHT - sem.available_permits()) as u64,
    };
    let mut total = std::mem::replace(&mut *lock(&rec), Recorder::new()?);
    if sent == 0 {
        bail!("the pacer sent nothing");
    }
    total.errors += unfinished;
    Ok(PhaseResult {
        rec: total,
        elapsed,
        unfinished,
    })
}
