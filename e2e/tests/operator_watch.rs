//! The operator's watches survive losing the apiserver: every connection to
//! it goes through a TCP proxy on loopback that the test cuts and restores
//! (the shared apiserver itself is never restarted). Changes made while the
//! operator was cut off reach its list and its sidecars' update streams.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use dapr_e2e::{Cluster, E2eError, eventually, repo_root};
use dapr_operator::cli::Args;
use dapr_rs_proto::generated::dapr::proto::operator::v1::{
    self as pb, ResourceEventType, operator_client::OperatorClient,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A loopback TCP proxy to `upstream` that can be cut (listener closed and
/// every connection dropped) and restored on the same port.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(true);
        let p = Self {
            addr,
            upstream,
            up: Arc::new(tx),
        };
        p.serve(listener);
        Ok(p)
    }

    fn serve(&self, listener: TcpListener) {
        let up = self.up.clone();
        let upstream = self.upstream;
        tokio::spawn(async move {
            let mut alive = up.subscribe();
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = alive.wait_for(|a| !*a) => return, // drops the listener
                };
                let Ok((mut client, _)) = conn else { continue };
                let mut alive = up.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = alive.wait_for(|a| !*a) => {}
                    }
                });
            }
        });
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    async fn restore(&self) -> std::io::Result<()> {
        self.up.send_replace(true);
        // Same port, so the client's URL stays valid.
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

fn apply_crds(cluster: &Cluster) -> Result<(), E2eError> {
    let text = std::fs::read_to_string(repo_root().join("crds/generated/components.yaml"))
        .map_err(|source| E2eError::Spawn {
            program: "read components.yaml".into(),
            source,
        })?;
    cluster.apply(&text)?;
    cluster.kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/components.dapr.io",
    ])?;
    Ok(())
}

fn component(name: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec: {{type: state.in-memory, version: v1}}\n"
    )
}

#[tokio::test]
async fn watches_resume_after_losing_the_apiserver() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    apply_crds(&cluster)?;
    let ns = cluster.namespace("operator-watch")?;
    ns.apply(&format!("{}---\n{}", component("a"), component("b")))?;

    // A client whose every connection goes through the proxy.
    let path = cluster.kubeconfig().display().to_string();
    let kc = kube::config::Kubeconfig::read_from(&path)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let upstream: SocketAddr = format!(
        "{}:{}",
        config.cluster_url.host().ok_or("no host")?,
        config.cluster_url.port_u16().unwrap_or(443)
    )
    .parse()?;
    let proxy = Proxy::start(upstream).await?;
    config.cluster_url = format!("https://{}", proxy.addr).parse()?;
    let client = kube::Client::try_from(config)?;

    let args = Args::from_argv([
        "dapr-operator",
        "--port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-port",
        "0",
        "--healthz-listen-address",
        "127.0.0.1",
        "--enable-metrics=false",
        "--disable-mtls",
        "--disable-service-reconciler",
        "--watch-namespace",
        ns.name(),
        "--namespace",
        ns.name(),
    ])?;
    let running = dapr_operator::start(args, client).await?;
    let health = running.health.clone();
    eventually(
        "operator ready",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let h = health.clone();
            async move { Ok::<_, E2eError>(h.is_ready().then_some(())) }
        },
    )
    .await?;
    let mut api = OperatorClient::connect(format!("http://{}", running.grpc_addr)).await?;
    let namespace = ns.name().to_owned();
    let listed = |mut api: OperatorClient<tonic::transport::Channel>, namespace: String| async move {
        let r = api
            .list_components(pb::ListComponentsRequest { namespace })
            .await?;
        let names: BTreeSet<String> = r
            .into_inner()
            .components
            .iter()
            .filter_map(|c| serde_json::from_slice::<serde_json::Value>(c).ok())
            .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        Ok::<_, tonic::Status>(names)
    };
    assert_eq!(
        listed(api.clone(), namespace.clone()).await?,
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    let mut stream = api
        .component_update(pb::ComponentUpdateRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();

    // Cut the operator off, change things behind its back, reconnect.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ns.kubectl(&["delete", "component", "b"])?;
    ns.apply(&component("c"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        listed(api.clone(), namespace.clone()).await?.contains("b"),
        "the cut-off operator cannot have seen the deletion yet"
    );
    proxy.restore().await?;

    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await??
            .ok_or("stream ended")?;
        let v: serde_json::Value = serde_json::from_slice(&ev.component)?;
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ty = ResourceEventType::try_from(ev.r#type)?;
        seen.insert((name, ty.as_str_name().to_owned()));
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            ("b".to_owned(), "DELETED".to_owned()),
            ("c".to_owned(), "CREATED".to_owned())
        ])
    );
    assert_eq!(
        listed(api.clone(), namespace.clone()).await?,
        BTreeSet::from(["a".to_owned(), "c".to_owned()])
    );

    // And it keeps watching afterwards.
    ns.apply(&component("d"))?;
    let ev = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await??
        .ok_or("stream ended")?;
    assert_eq!(ev.r#type, ResourceEventType::Created as i32);
    let _ = api;
    Ok(())
}
