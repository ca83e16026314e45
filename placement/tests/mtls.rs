//! `--tls-enabled`: dapr-placement gets its certificate from a real
//! `dapr-sentry` and requires client certificates from sidecars.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Node, NodePorts, free_port, http_get};
use dapr_placement_core::proto::{
    Host, HostOperation, placement_client::PlacementClient as GrpcClient,
};
use dapr_security::{
    SpiffeId, SvidStore, TrustAnchors,
    client::{SentryClient, SentryClientConfig},
    net::tls_channel,
    tls::{PeerAuthorizer, client_config},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Sentry {
    child: Child,
    port: u16,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sentry_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_dapr-placement")).with_file_name("dapr-sentry");
    assert!(p.exists(), "build it first: cargo build -p dapr-sentry");
    p
}

async fn start_sentry(creds: &Path, log: &Path) -> Sentry {
    let port = free_port();
    let healthz = free_port();
    let child = Command::new(sentry_bin())
        .args(["--port", &port.to_string(), "--listen-address", "127.0.0.1"])
        .args(["--healthz-port", &healthz.to_string()])
        .args(["--healthz-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--issuer-credentials", &creds.display().to_string()])
        .args(["--trust-domain", "localhost"])
        .env("NAMESPACE", "default")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn dapr-sentry");
    let s = Sentry { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(healthz, "/healthz").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "sentry not healthy:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

/// Opens a ReportDaprStatus stream over TLS and returns the first answer.
async fn report(
    addr: &str,
    anchors: Arc<TrustAnchors>,
    client_cert: Option<&Arc<SvidStore>>,
    expect: &str,
) -> Result<(), String> {
    let cfg = client_config(
        client_cert,
        anchors,
        PeerAuthorizer::exact(SpiffeId::parse(expect).unwrap()),
    )
    .unwrap();
    let channel = tls_channel(addr, Arc::new(cfg), Duration::from_secs(5)).unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(Host {
        name: "127.0.0.1:40001".into(),
        id: "myapp".into(),
        namespace: "default".into(),
        operation: HostOperation::Report as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = GrpcClient::new(channel)
        .report_dapr_status(ReceiverStream::new(rx))
        .await;
    drop(tx);
    r.map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_serves_mtls_with_a_sentry_certificate() {
    dapr_security::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let sentry = start_sentry(&creds, &dir.path().join("sentry.log")).await;
    let ca = creds.join("ca.crt");

    let ports = NodePorts::new("dapr-placement-0");
    let mut node = Node::start(
        &ports,
        std::slice::from_ref(&ports),
        &[
            "--tls-enabled".into(),
            "--sentry-address".into(),
            format!("127.0.0.1:{}", sentry.port),
            "--trust-anchors-file".into(),
            ca.display().to_string(),
        ],
        dir.path(),
    );
    let anchors = TrustAnchors::from_file(&ca).unwrap();
    // A sidecar's certificate, from the same Sentry.
    let sidecar = SentryClient::new(
        SentryClientConfig::new(
            format!("127.0.0.1:{}", sentry.port),
            SpiffeId::sentry("localhost", "default").unwrap(),
            "myapp",
            "default",
        ),
        anchors.clone(),
    )
    .unwrap();
    let store = SvidStore::new();
    store.set(sidecar.fetch_svid().await.unwrap());

    let placement_id = "spiffe://localhost/ns/default/dapr-placement";
    let addr = ports.grpc_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match report(&addr, anchors.clone(), Some(&store), placement_id).await {
            Ok(()) => break,
            Err(e) => {
                if Instant::now() > deadline {
                    node.print_log();
                    panic!("placement never served the sidecar: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Without a client certificate: refused.
    let err = report(&addr, anchors.clone(), None, placement_id)
        .await
        .expect_err("a client without a certificate must be refused");
    assert!(!err.is_empty());
    // Its certificate is the placement identity, nothing else.
    report(
        &addr,
        anchors,
        Some(&store),
        "spiffe://localhost/ns/default/dapr-operator",
    )
    .await
    .expect_err("placement's certificate is not the operator's");
    // Plaintext gRPC is not served.
    let plain = GrpcClient::connect(format!("http://{addr}")).await;
    if let Ok(mut c) = plain {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(Host::default()).await;
        assert!(
            c.report_dapr_status(ReceiverStream::new(rx)).await.is_err(),
            "plaintext accepted"
        );
    }
    node.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_fails_clearly_without_sentry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    // Any valid anchor: the failure must be about reaching Sentry.
    let key = rcgen_free_anchor();
    std::fs::write(&ca, key).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_dapr-placement"))
        .args(["--tls-enabled", "--sentry-address", &dead])
        .args(["--trust-anchors-file", &ca.display().to_string()])
        .args([
            "--port",
            &free_port().to_string(),
            "--listen-address",
            "127.0.0.1",
        ])
        .args(["--healthz-port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .args([
            "--initial-cluster",
            &format!("dapr-placement-0=127.0.0.1:{}", free_port()),
        ])
        .env("NAMESPACE", "default")
        .env("DAPR_RS_SENTRY_WAIT_SECONDS", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&dead), "{text}");
}

/// A self-signed CA certificate made by the CA core (no rcgen needed here).
fn rcgen_free_anchor() -> Vec<u8> {
    let creds = dapr_security::CaCredentials::generate_default("localhost", "default").unwrap();
    creds.trust_anchors_pem.clone()
}
