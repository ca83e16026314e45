//! Test helpers shared by the injector's process-level tests (and included by
//! e2e/tests/injector_webhook.rs): a throwaway PKI, the `dapr-injector`
//! binary as a child process, and a TLS HTTP/1.1 client.

#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

/// A CA and a serving certificate for 127.0.0.1 / localhost, written as PEM files.
pub struct Pki {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// DER of the leaf, to recognise it on the wire.
    pub leaf_der: Vec<u8>,
}

pub fn write_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "dapr-sidecar-injector");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let pki = Pki {
        ca_pem: ca_cert.pem(),
        ca_path: dir.join(format!("{name}-ca.crt")),
        cert_path: dir.join(format!("{name}-tls.crt")),
        key_path: dir.join(format!("{name}-tls.key")),
        leaf_der: leaf.der().to_vec(),
    };
    std::fs::write(&pki.ca_path, &pki.ca_pem).expect("write CA");
    std::fs::write(&pki.cert_path, leaf.pem()).expect("write cert");
    std::fs::write(&pki.key_path, leaf_key.serialize_pem()).expect("write key");
    pki
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The binary, killed on drop.
pub struct InjectorProcess {
    pub child: Child,
    pub port: u16,
    pub healthz_port: u16,
    pub metrics_port: u16,
}

impl Drop for InjectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl InjectorProcess {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts `binary` on loopback with file certificates from `pki`;
    /// `extra` adds flags, `env` adds variables (the environment is otherwise
    /// cleared so no kubeconfig leaks in).
    pub fn start(binary: &Path, pki: &Pki, extra: &[String], env: &[(&str, String)]) -> Self {
        Self::start_on(binary, pki, free_port(), extra, env)
    }

    /// Like [`InjectorProcess::start`] with the webhook on `port`.
    pub fn start_on(
        binary: &Path,
        pki: &Pki,
        port: u16,
        extra: &[String],
        env: &[(&str, String)],
    ) -> Self {
        let (healthz_port, metrics_port) = (free_port(), free_port());
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SIDECAR_IMAGE", "dapr-rs/daprd:dev")
            .env("NAMESPACE", "dapr-system")
            .env("KUBE_CLUSTER_DOMAIN", "cluster.local")
            .args([
                "--listen-address=127.0.0.1".to_owned(),
                format!("--port={port}"),
                "--healthz-listen-address=127.0.0.1".to_owned(),
                format!("--healthz-port={healthz_port}"),
                "--metrics-listen-address=127.0.0.1".to_owned(),
                format!("--metrics-port={metrics_port}"),
                format!("--tls-cert-file={}", pki.cert_path.display()),
                format!("--tls-key-file={}", pki.key_path.display()),
                format!("--trust-anchors-file={}", pki.ca_path.display()),
                "--cert-reload-seconds=1".to_owned(),
                "--log-level=info".to_owned(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start dapr-injector");
        Self {
            child,
            port,
            healthz_port,
            metrics_port,
        }
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dapr-injector exited early: {status}");
            }
            if let Ok((200, _)) = plain_get(self.healthz_port, "/healthz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dapr-injector not healthy in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A plain HTTP GET on loopback: (status, body).
pub async fn plain_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS connection; returns the stream and the leaf certificate it presented.
pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    ),
    String,
> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((tls, leaf))
}

/// POSTs `body` over TLS on a new connection: (status, body).
pub async fn tls_post(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let (tls, _) = tls_connect(addr, cfg).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}
