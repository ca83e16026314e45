//! The few `/proc` readings the benchmark reports: resident memory and CPU time.

use std::time::Duration;

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, 100 per second on
/// every architecture Linux exposes to user space.
const USER_HZ: u64 = 100;

/// Memory of a process from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss: u64,
    /// Peak resident set size so far.
    pub hwm: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// User + system CPU time of a whole process (all threads), or of this
/// process with `pid` = None.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fixed
    // fields start after its last ')'. There, index 0 is field 3 (state), so
    // utime (field 14) is index 11 and stime (field 15) index 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Samples the VmRSS of each pid every 100 ms until stopped; returns the maxima.
pub fn rss_sampler(
    pids: Vec<u32>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<u64>>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut max = vec![0u64; pids.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tick.tick() => {
                    for (m, pid) in max.iter_mut().zip(&pids) {
                        if let Some(mem) = memory(*pid) {
                            *m = (*m).max(mem.rss);
                        }
                    }
                }
            }
        }
        max
    });
    (tx, task)
}
