//! Starting, probing and stopping a daprd process. Everything here is
//! blocking (std) so that startup can be timed with 1 ms polling, which a
//! tokio timer (1 ms wheel, rounded up) could not do.

use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

/// `n` distinct free TCP ports on 127.0.0.1 (all listeners are held until the
/// last is bound, so the ports differ; a race with other programs remains).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddr::from((LOOPBACK, 0))))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A running daprd. Dropping it kills the process.
pub struct Daprd {
    child: Option<Child>,
    pid: u32,
    pub http_port: u16,
    pub grpc_port: u16,
    log: PathBuf,
}

/// The arguments every daprd the benchmark starts gets: free ports, loopback only.
pub struct Launch<'a> {
    pub bin: &'a Path,
    pub app_id: &'a str,
    pub data_dir: &'a Path,
    pub resources_path: Option<&'a Path>,
    pub log: &'a Path,
    /// More daprd flags (e.g. `--config`, `--app-port`).
    pub extra_args: &'a [String],
}

impl Daprd {
    /// Spawns daprd. Returns it and the instant just before the spawn.
    pub fn spawn(launch: &Launch<'_>) -> anyhow::Result<(Self, Instant)> {
        if !launch.bin.is_file() {
            bail!(
                "daprd binary {} not found; build it with `cargo build --release -p daprd` or pass --daprd",
                launch.bin.display()
            );
        }
        let ports = free_ports(3)?;
        let (http_port, grpc_port, metrics_port) = (ports[0], ports[1], ports[2]);
        let mut args: Vec<OsString> = vec![
            "--app-id".into(),
            launch.app_id.into(),
            "--dapr-http-port".into(),
            http_port.to_string().into(),
            "--dapr-grpc-port".into(),
            grpc_port.to_string().into(),
            "--metrics-port".into(),
            metrics_port.to_string().into(),
            "--dapr-listen-addresses".into(),
            "127.0.0.1".into(),
            "--data-dir".into(),
            launch.data_dir.into(),
        ];
        if let Some(p) = launch.resources_path {
            args.push("--resources-path".into());
            args.push(p.into());
        }
        args.extend(launch.extra_args.iter().map(OsString::from));
        let log = File::create(launch.log)
            .with_context(|| format!("cannot create {}", launch.log.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot clone the log file handle")?;
        let mut cmd = Command::new(launch.bin);
        cmd.args(&args)
            .env_remove("DAPR_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let spawned_at = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", launch.bin.display()))?;
        let pid = child.id();
        Ok((
            Self {
                child: Some(child),
                pid,
                http_port,
                grpc_port,
                log: launch.log.to_owned(),
            },
            spawned_at,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Polls `GET /v1.0/healthz` every `every` until it answers 204; returns
    /// the time since `since`. Fails if daprd exits or `timeout` passes.
    pub fn wait_ready(
        &mut self,
        since: Instant,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = since + timeout;
        loop {
            if probe(self.http_port, "GET", "/v1.0/healthz") == Some(204) {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "daprd exited ({status}) before becoming ready; its log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "daprd not ready after {timeout:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(every);
        }
    }

    fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait().context("cannot poll daprd"),
            None => bail!("daprd already stopped"),
        }
    }

    /// Asks daprd to shut down (`POST /v1.0/shutdown`) and waits up to 10 s,
    /// then kills it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = probe(self.http_port, "POST", "/v1.0/shutdown");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        bail!("daprd did not stop within 10 s of /v1.0/shutdown; killed it")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of daprd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request on a fresh connection; the response status, or None
/// when nothing answers. Used for health polling and shutdown only.
pub fn probe(port: u16, method: &str, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((LOOPBACK, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // "HTTP/1.1 204" is 12 bytes.
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Stops a daprd from async code, warning instead of failing: a bench
/// that already has its figures should still print them.
pub fn stop_daprd(d: Daprd) {
    if let Err(e) = tokio::task::block_in_place(|| d.stop()) {
        eprintln!("warning: {e:#}");
    }
}
