//! `bench invoke --reference-proxy <nginx>`: two chained nginx reverse
//! proxies (client -> nginx A -> nginx B -> app) measured like the sidecar
//! pair, so the cost of two proxy hops on this machine with a mature C proxy
//! sits next to daprd's figures in the same run.
//!
//! Each nginx runs as a single process (`master_process off`, one worker),
//! so its pid is the process doing the work, with keep-alive upstream
//! connections and no access log: the cheapest sensible HTTP/1.1 relay.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The two nginx processes; dropping the pair kills them.
pub struct NginxPair {
    a: Child,
    b: Child,
    /// Where the client sends requests (nginx A).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NginxPair {
    /// Starts nginx B (forwarding to the app) and nginx A (forwarding to B).
    pub fn start(bin: &Path, app_port: u16) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "nginx binary {} not found; install Debian's nginx-light (or nginx) or pass another path",
                bin.display()
            );
        }
        let dir = tempfile::tempdir().context("cannot create a temp dir for nginx")?;
        let ports = crate::daprd::free_ports(2)?;
        let (port_a, port_b) = (ports[0], ports[1]);
        let b = spawn(bin, dir.path(), "b", port_b, app_port)?;
        let a = match spawn(bin, dir.path(), "a", port_a, port_b) {
            Ok(a) => a,
            Err(e) => {
                kill(b);
                return Err(e);
            }
        };
        let pair = NginxPair {
            a,
            b,
            port: port_a,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [port_b, port_a] {
            while crate::daprd::probe(port, "GET", "/").is_none() {
                if Instant::now() >= deadline {
                    bail!("nginx did not listen on 127.0.0.1:{port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(pair)
    }

    /// The pids whose CPU is attributed to the pair: [A, B].
    pub fn pids(&self) -> [u32; 2] {
        [self.a.id(), self.b.id()]
    }
}

impl Drop for NginxPair {
    fn drop(&mut self) {
        for c in [&mut self.a, &mut self.b] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn spawn(bin: &Path, dir: &Path, name: &str, listen: u16, upstream: u16) -> anyhow::Result<Child> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs"))
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    let conf = prefix.join("nginx.conf");
    // Temp paths inside the prefix: nginx must not need root or /var/lib.
    let body = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
         error_log {p}/logs/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           client_body_buffer_size 64k;\n  proxy_buffering off;\n  proxy_request_buffering off;\n\
           upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://up;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        p = prefix.display()
    );
    std::fs::write(&conf, body).with_context(|| format!("cannot write {}", conf.display()))?;
    Command::new(bin)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}
