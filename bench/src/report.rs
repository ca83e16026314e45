//! The printed tables.

use std::{fmt, net::SocketAddr, time::Duration};

use hdrhistogram::Histogram;

use crate::{
    StateArgs, StoreKind, TargetKind,
    load::PhaseResult,
    procfs::mib,
    state::{DIRECT_GET, DIRECT_PLAIN, DIRECT_SAVE},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Open loop at this many ops/s.
    Fixed(u32),
    /// Closed loop with this many workers.
    Full(usize),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Fixed(r) => write!(f, "fixed {r}/s"),
            Shape::Full(c) => write!(f, "full c={c}"),
        }
    }
}

/// CPU time per op in microseconds, per process.
pub struct CpuUse {
    pub client_us: Option<f64>,
    pub daprd_us: Option<f64>,
    pub redis_us: Option<f64>,
}

pub struct PhaseRow {
    pub target: TargetKind,
    pub shape: Shape,
    pub result: PhaseResult,
    pub cpu: CpuUse,
}

pub struct Startup {
    pub times: Vec<Duration>,
    /// VmRSS of the last run, 1 s after ready.
    pub idle_rss: Option<u64>,
}

pub struct MemoryReport {
    /// VmRSS 1 s after ready.
    pub idle_rss: Option<u64>,
    /// Max VmRSS sampled every 100 ms during the full-speed phases.
    pub load_rss_max: u64,
    /// VmHWM after the last phase.
    pub hwm: Option<u64>,
}

pub struct Report<'a> {
    pub args: &'a StateArgs,
    pub redis: SocketAddr,
    pub rows: Vec<PhaseRow>,
    pub startup: Option<Startup>,
    pub memory: Option<MemoryReport>,
    pub redis_cpu_visible: bool,
}

pub fn target_name(t: TargetKind) -> &'static str {
    match t {
        TargetKind::Direct => "direct",
        TargetKind::DirectPlain => "direct-plain",
        TargetKind::Http => "daprd-http",
        TargetKind::Grpc => "daprd-grpc",
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub(crate) fn q(h: &Histogram<u64>, quantile: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(quantile))
}

pub(crate) fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |ns| format!("{:.3}", ms(ns)))
}

pub(crate) fn delta(a: Option<u64>, base: Option<u64>) -> String {
    match (a, base) {
        (Some(a), Some(b)) => format!("{:+.3}", ms(a) - ms(b)),
        _ => "-".to_owned(),
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |b| format!("{:.1} MiB", mib(b)))
}

pub fn print(r: &Report<'_>) {
    let a = r.args;
    let store = match a.store {
        StoreKind::Redis => format!("state.redis -> {}", r.redis),
        StoreKind::InMemory => "state.in-memory (experiment: no store round trip)".to_owned(),
    };
    println!("== dapr-rs state benchmark ==");
    println!(
        "value {} B, {} keys, {:.1} s per phase, {:.1} s warm-up per target; daprd {} ({store})",
        a.value_size,
        a.keys,
        a.duration,
        a.warmup,
        a.daprd.display()
    );
    println!("direct: save = {DIRECT_SAVE}");
    println!("        get = {DIRECT_GET} (Redis {})", r.redis);
    if r.rows.iter().any(|x| x.target == TargetKind::DirectPlain) {
        println!("direct-plain: {DIRECT_PLAIN}");
    }
    println!(
        "op = save then get of the same key. fixed = open loop at {} ops/s, latency from the \
         scheduled send time (save and op include queueing); full = closed loop, {} workers.",
        a.rate, a.concurrency
    );
    println!(
        "daprd-http: hyper keep-alive pool (a connection per concurrent request); daprd-grpc: {} \
         HTTP/2 connection(s) shared by all requests. latencies in ms",
        a.grpc_connections
    );
    println!();
    println!(
        "{:<12} {:<12} {:>9} {:>6}  {:<4} {:>8} {:>8} {:>8} {:>8}",
        "target", "shape", "ops/s", "errors", "call", "p50", "p90", "p99", "max"
    );
    println!("{}", "-".repeat(84));
    for row in &r.rows {
        let rec = &row.result.rec;
        for (i, (name, h)) in [("save", &rec.save), ("get", &rec.get), ("op", &rec.op)]
            .into_iter()
            .enumerate()
        {
            let (t, s, tp, e) = if i == 0 {
                (
                    target_name(row.target).to_owned(),
                    row.shape.to_string(),
                    format!("{:.1}", row.result.throughput()),
                    rec.errors.to_string(),
                )
            } else {
                Default::default()
            };
            println!(
                "{t:<12} {s:<12} {tp:>9} {e:>6}  {name:<4} {:>8} {:>8} {:>8} {:>8}",
                cell(q(h, 0.5)),
                cell(q(h, 0.9)),
                cell(q(h, 0.99)),
                cell((!h.is_empty()).then(|| h.max())),
            );
        }
    }

    let base = |shape: Shape| {
        r.rows
            .iter()
            .find(|x| x.target == TargetKind::Direct && x.shape == shape)
    };
    let added: Vec<_> = r
        .rows
        .iter()
        .filter(|x| matches!(x.target, TargetKind::Http | TargetKind::Grpc))
        .filter_map(|x| base(x.shape).map(|b| (x, b)))
        .collect();
    if !added.is_empty() {
        println!();
        println!("added latency vs direct (ms; daprd minus direct at the same percentile)");
        println!(
            "{:<12} {:<12} {:>8} {:>8} {:>8}  {:>8} {:>8} {:>8}  {:>10}",
            "target",
            "shape",
            "p50 save",
            "p50 get",
            "p50 op",
            "p99 save",
            "p99 get",
            "p99 op",
            "throughput"
        );
        println!("{}", "-".repeat(93));
        for (x, b) in added {
            let (xr, br) = (&x.result.rec, &b.result.rec);
            let ratio = if b.result.throughput() > 0.0 {
                format!("{:.3}x", x.result.throughput() / b.result.throughput())
            } else {
                "-".to_owned()
            };
            println!(
                "{:<12} {:<12} {:>8} {:>8} {:>8}  {:>8} {:>8} {:>8}  {:>10}",
                target_name(x.target),
                x.shape.to_string(),
                delta(q(&xr.save, 0.5), q(&br.save, 0.5)),
                delta(q(&xr.get, 0.5), q(&br.get, 0.5)),
                delta(q(&xr.op, 0.5), q(&br.op, 0.5)),
                delta(q(&xr.save, 0.99), q(&br.save, 0.99)),
                delta(q(&xr.get, 0.99), q(&br.get, 0.99)),
                delta(q(&xr.op, 0.99), q(&br.op, 0.99)),
                ratio
            );
        }
        println!("(throughput = daprd ops/s / direct ops/s in the same shape)");
    }

    println!();
    println!(
        "CPU time per op (us; /proc/<pid>/stat deltas, 10 ms ticks){}",
        if r.redis_cpu_visible {
            ""
        } else {
            "; redis: its /proc entry is not visible"
        }
    );
    println!(
        "{:<12} {:<12} {:>8} {:>8} {:>8} {:>8}   {:>14}",
        "target", "shape", "client", "daprd", "redis", "total", "pacer lag p50/p99 ms"
    );
    println!("{}", "-".repeat(84));
    for row in &r.rows {
        let total = [row.cpu.client_us, row.cpu.daprd_us, row.cpu.redis_us]
            .into_iter()
            .flatten()
            .sum::<f64>();
        let lag = &row.result.rec.lag;
        let lag = if lag.is_empty() {
            "-".to_owned()
        } else {
            format!("{}/{}", cell(q(lag, 0.5)), cell(q(lag, 0.99)))
        };
        println!(
            "{:<12} {:<12} {:>8} {:>8} {:>8} {:>8.1}   {:>14}",
            target_name(row.target),
            row.shape.to_string(),
            us(row.cpu.client_us),
            us(row.cpu.daprd_us),
            us(row.cpu.redis_us),
            total,
            lag
        );
    }

    if let Some(s) = &r.startup {
        let mut t: Vec<f64> = s.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        t.sort_by(f64::total_cmp);
        if let (Some(min), Some(med)) = (t.first(), t.get(t.len() / 2)) {
            println!();
            println!(
                "daprd startup, embedded default (spawn -> GET /v1.0/healthz 204, polled every 1 ms, \
                 {} runs, fresh data dir each): median {med:.3} ms, min {min:.3} ms  [{}]",
                t.len(),
                t.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "daprd idle RSS, embedded default (1 s after ready): {}",
                opt_mib(s.idle_rss)
            );
        }
    }
    if let Some(m) = &r.memory {
        println!(
            "daprd RSS with the benchmark's statestore: idle (1 s after ready) {}; under load max {} \
             (VmRSS every 100 ms during full-speed phases); VmHWM at end {}",
            opt_mib(m.idle_rss),
            opt_mib((m.load_rss_max > 0).then_some(m.load_rss_max)),
            opt_mib(m.hwm)
        );
    }

    let errors: Vec<_> = r
        .rows
        .iter()
        .filter_map(|x| {
            x.result.rec.first_error.as_ref().map(|e| {
                format!(
                    "  {} {}: {} errors ({} unfinished), first: {e}",
                    target_name(x.target),
                    x.shape,
                    x.result.rec.errors,
                    x.result.unfinished
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        println!();
        println!("errors:");
        for e in errors {
            println!("{e}");
        }
    }
}
