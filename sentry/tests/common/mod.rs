//! Helpers to run the `dapr-sentry` binary on 127.0.0.1 and talk to it.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_client::CaClient,
};
use dapr_security::{
    SpiffeId, TrustAnchors,
    client::{SentryClient, SentryClientConfig},
    net::tls_channel,
    tls::{PeerAuthorizer, client_config},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running Sentry process, killed on drop.
pub struct Sentry {
    child: Child,
    pub port: u16,
    pub healthz_port: u16,
    pub metrics_port: u16,
    pub creds_dir: PathBuf,
    pub log: PathBuf,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentry {
    /// Starts Sentry with credentials in `creds_dir` and extra flags; waits
    /// until `/healthz` answers 200.
    pub async fn start(creds_dir: &Path, extra: &[&str]) -> Sentry {
        // A port picked free can be taken by another test before Sentry binds
        // it; such a start is retried on fresh ports.
        for attempt in 1..=5 {
            match Self::try_start(creds_dir, extra).await {
                Ok(s) => return s,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("sentry did not become healthy; log:\n{log}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    async fn try_start(creds_dir: &Path, extra: &[&str]) -> Result<Sentry, String> {
        let port = free_port();
        let healthz_port = free_port();
        let metrics_port = free_port();
        let log = creds_dir
            .parent()
            .unwrap_or(creds_dir)
            .join(format!("sentry-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dapr-sentry"));
        cmd.args([
            "--port",
            &port.to_string(),
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            &healthz_port.to_string(),
            "--healthz-listen-address",
            "127.0.0.1",
            "--metrics-port",
            &metrics_port.to_string(),
            "--metrics-listen-address",
            "127.0.0.1",
            "--issuer-credentials",
            creds_dir.to_str().expect("utf-8 path"),
            "--credentials-poll-interval",
            "200ms",
            "--log-level",
            "debug",
        ])
        .args(extra)
        .env("NAMESPACE", "default")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
        let child = cmd.spawn().expect("spawn dapr-sentry");
        let s = Sentry {
            child,
            port,
            healthz_port,
            metrics_port,
            creds_dir: creds_dir.to_owned(),
            log,
        };
        let mut s = s;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = http_get(healthz_port, "/healthz").await
                && status.0 == 200
            {
                break;
            }
            let exited = s.child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                return Err(s.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(s)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn anchors(&self) -> Arc<TrustAnchors> {
        let pem = std::fs::read(self.creds_dir.join("ca.crt")).expect("ca.crt");
        TrustAnchors::from_pem(&pem).expect("anchors")
    }

    pub fn sentry_id() -> SpiffeId {
        SpiffeId::sentry("localhost", "default").expect("id")
    }

    /// A raw gRPC channel to Sentry (TLS, Sentry identity verified).
    pub fn channel(&self, anchors: Arc<TrustAnchors>) -> Channel {
        let cfg = client_config(None, anchors, PeerAuthorizer::exact(Self::sentry_id()))
            .expect("client config");
        tls_channel(&self.address(), Arc::new(cfg), Duration::from_secs(5)).expect("channel")
    }

    pub fn client(&self, anchors: Arc<TrustAnchors>, app: &str) -> SentryClient {
        SentryClient::new(
            SentryClientConfig::new(self.address(), Self::sentry_id(), app, "default"),
            anchors,
        )
        .expect("client")
    }
}

pub async fn sign(
    channel: &Channel,
    req: SignCertificateRequest,
) -> Result<SignCertificateResponse, tonic::Status> {
    CaClient::new(channel.clone())
        .sign_certificate(req)
        .await
        .map(|r| r.into_inner())
}

/// Minimal HTTP/1.0 GET on 127.0.0.1; returns (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

/// A PEM CSR for a fresh P-256 key (no subject, no SANs, as Go daprd sends).
pub fn p256_csr() -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (csr, key)
}

pub fn request(id: &str, ns: &str, csr: &[u8]) -> SignCertificateRequest {
    SignCertificateRequest {
        id: id.into(),
        namespace: ns.into(),
        certificate_signing_request: csr.to_vec(),
        ..Default::default()
    }
}
