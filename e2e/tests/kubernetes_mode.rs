//! `daprd --mode kubernetes` against the real `dapr-operator` binary and the
//! real apiserver (tier 1): resources load from the operator, `kubectl
//! apply`/`delete` of a Component takes effect live, an operator restart
//! loses no update, and broken components are reported by name.
//!
//! Both binaries run on the host on loopback; build them first:
//! `cargo build -p daprd -p dapr-operator`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use dapr_e2e::{Cluster, E2eError, eventually, profile_dir, repo_root};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams};

mod chart_support;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const APP_ID: &str = "k8sapp";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed (by its own pid) when dropped; its stderr goes to
/// a file so tests can read what it logged.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(bin: &str, args: &[String], envs: &[(&str, &str)], log: PathBuf) -> Self {
        let path = profile_dir().join(bin);
        assert!(
            path.exists(),
            "{} is missing: run `cargo build -p daprd -p dapr-operator` first",
            path.display()
        );
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(&path);
        // Some binaries log to stdout, others to stderr: keep both.
        let out = file.try_clone().expect("log file");
        cmd.args(args)
            .env_remove("DAPR_RS_LOG")
            .stdout(out)
            .stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn");
        Self { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request to loopback: (status, body).
async fn http(method: &str, port: u16, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {text}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A loopback HTTP server answering every request with `body`.
async fn answer_with(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

fn http_endpoint(name: &str, port: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata: {{name: {name}}}\nspec:\n  baseUrl: http://127.0.0.1:{port}\n"
    )
}

fn component(name: &str, type_: &str, metadata: &str, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: {type_}\n  version: v1\n  metadata: [{metadata}]\n{extra}"
    )
}

fn apply_crds(cluster: &Cluster) -> Result<(), E2eError> {
    // Tests of this file run in parallel: two concurrent first creations of
    // one CRD race (AlreadyExists).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo_root().join("crds/generated");
    for f in [
        "components",
        "configuration",
        "resiliency",
        "subscription",
        "httpendpoints",
    ] {
        let yaml = std::fs::read_to_string(dir.join(format!("{f}.yaml"))).map_err(|e| {
            E2eError::Output {
                what: format!("{f}.yaml"),
                message: e.to_string(),
            }
        })?;
        cluster.apply(&yaml)?;
    }
    // The new kinds must be served before the operator starts watching.
    for crd in [
        "components",
        "configurations",
        "resiliencies",
        "subscriptions",
        "httpendpoints",
    ] {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{crd}.dapr.io"),
        ])?;
    }
    Ok(())
}

fn start_operator(cluster: &Cluster, ns: &str, port: u16, dir: &Path, n: u32) -> (Proc, u16) {
    let healthz = free_port();
    let args: Vec<String> = [
        "--kubeconfig",
        &cluster.kubeconfig().to_string_lossy(),
        "--port",
        &port.to_string(),
        "--listen-address",
        "127.0.0.1",
        "--healthz-port",
        &healthz.to_string(),
        "--healthz-listen-address",
        "127.0.0.1",
        "--enable-metrics=false",
        "--disable-mtls",
        "--disable-leader-election",
        "--disable-service-reconciler",
        "--watch-namespace",
        ns,
        "--namespace",
        ns,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Proc::spawn(
        "dapr-operator",
        &args,
        &[],
        dir.join(format!("operator-{n}.log")),
    );
    (p, healthz)
}

async fn wait_http(
    what: &str,
    port: u16,
    path: &str,
    ok: u16,
    proc_: &Proc,
) -> Result<(), E2eError> {
    eventually(
        what,
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            Ok::<_, String>(match http("GET", port, path, "").await {
                Ok((s, _)) if s == ok => Some(()),
                _ => None,
            })
        },
    )
    .await
    .map_err(|e| E2eError::Output {
        what: what.to_owned(),
        message: format!("{e}\n--- logs ---\n{}", proc_.logs()),
    })
}

/// The `type` of component `name` in daprd's metadata, if loaded.
async fn component_type(port: u16, name: &str) -> Result<Option<String>, String> {
    let (status, body) = http("GET", port, "/v1.0/metadata", "").await?;
    if status != 200 {
        return Err(format!("metadata: {status} {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .and_then(|c| c["type"].as_str().map(str::to_owned)))
}

async fn wait_type(
    port: u16,
    name: &str,
    want: Option<&str>,
    daprd: &Proc,
) -> Result<(), E2eError> {
    eventually(
        &format!("component {name} type {want:?}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let got = component_type(port, name).await?;
            Ok::<_, String>((got.as_deref() == want).then_some(()))
        },
    )
    .await
    .map_err(|e| E2eError::Output {
        what: name.to_owned(),
        message: format!("{e}\n--- daprd ---\n{}", daprd.logs()),
    })
}

async fn save_get(port: u16, store: &str, key: &str, value: &str) -> Result<String, String> {
    let body = format!(r#"[{{"key":"{key}","value":"{value}"}}]"#);
    let (s, b) = http("POST", port, &format!("/v1.0/state/{store}"), &body).await?;
    if s != 204 {
        return Err(format!("save: {s} {b}"));
    }
    let (s, b) = http("GET", port, &format!("/v1.0/state/{store}/{key}"), "").await?;
    if s != 200 {
        return Err(format!("get: {s} {b}"));
    }
    Ok(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daprd_loads_from_the_operator_and_applies_changes_live() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("k8smode")?;
    let dir = tempfile_dir("k8smode");
    let sqlite = dir.join("state.db");

    ns.apply(&component("statestore", "state.in-memory", "", ""))?;
    // Another app's component, and one this build cannot create.
    ns.apply(&component(
        "private",
        "state.in-memory",
        "",
        "scopes: [other-app]\n",
    ))?;
    ns.apply(
        &component("broken", "state.nope", "", "")
            .replace("version: v1", "version: v1\n  ignoreErrors: true"),
    )?;
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: appconfig}\nspec:\n  features: [{name: HotReload, enabled: true}]\n",
    )?;

    let op_port = free_port();
    let (mut operator, op_healthz) = start_operator(&cluster, ns.name(), op_port, &dir, 1);
    wait_http("operator ready", op_healthz, "/healthz", 200, &operator).await?;

    let http_port = free_port();
    let daprd_args: Vec<String> = [
        "--mode",
        "kubernetes",
        "--app-id",
        APP_ID,
        "--control-plane-address",
        &format!("127.0.0.1:{op_port}"),
        "--config",
        "appconfig",
        "--dapr-http-port",
        &http_port.to_string(),
        "--dapr-grpc-port",
        &free_port().to_string(),
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--dapr-internal-grpc-listen-address",
        "127.0.0.1",
        "--metrics-port",
        &free_port().to_string(),
        "--data-dir",
        &dir.join("data").to_string_lossy(),
        "--log-as-json",
        // No service-account credentials on the host: the built-in store is
        // tested by `builtin_kubernetes_secret_store_*`.
        "--disable-builtin-k8s-secret-store",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daprd = Proc::spawn(
        "daprd",
        &daprd_args,
        &[("NAMESPACE", ns.name())],
        dir.join("daprd.log"),
    );
    let started = std::time::Instant::now();
    wait_http("daprd healthz", http_port, "/v1.0/healthz", 204, &daprd).await?;
    println!("daprd ready after {:?}", started.elapsed());

    // Loaded from the operator; scopes and broken components handled.
    assert_eq!(
        save_get(http_port, "statestore", "k", "v1").await?,
        "\"v1\""
    );
    assert_eq!(
        component_type(http_port, "statestore").await?.as_deref(),
        Some("state.in-memory")
    );
    assert_eq!(component_type(http_port, "private").await?, None);
    assert_eq!(component_type(http_port, "broken").await?, None);
    assert_eq!(component_type(http_port, "kubernetes").await?, None);
    let (s, b) = http("GET", http_port, "/v1.0/state/private/k", "").await?;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("ERR_STATE_STORE_NOT_FOUND"), "{b}");
    let logs = daprd.logs();
    assert!(
        logs.contains("broken") && logs.contains("state.nope"),
        "daprd should name the broken component and its type:\n{logs}"
    );

    // kubectl apply of a changed Component: another store type, live.
    let t = std::time::Instant::now();
    ns.apply(&component(
        "statestore",
        "state.sqlite",
        &format!(
            "{{name: connectionString, value: \"{}\"}}, {{name: keyPrefix, value: none}}",
            sqlite.display()
        ),
        "",
    ))?;
    wait_type(http_port, "statestore", Some("state.sqlite"), &daprd).await?;
    println!("Component change applied after {:?}", t.elapsed());
    assert_eq!(
        save_get(http_port, "statestore", "k2", "v2").await?,
        "\"v2\""
    );
    assert!(
        sqlite.exists(),
        "the sqlite store wrote {}",
        sqlite.display()
    );
    // The in-memory instance was replaced: its data is gone with it.
    let (s, b) = http("GET", http_port, "/v1.0/state/statestore/k", "").await?;
    assert_eq!(s, 204, "{b}");

    // Scoping the component away removes it; scoping it back restores it.
    ns.apply(&component(
        "private",
        "state.in-memory",
        "",
        &format!("scopes: [other-app, {APP_ID}]\n"),
    ))?;
    wait_type(http_port, "private", Some("state.in-memory"), &daprd).await?;

    // HTTPEndpoints: created and changed live, reached through invocation.
    let t = std::time::Instant::now();
    let (ext_a, ext_b) = (answer_with("from-a").await, answer_with("from-b").await);
    ns.apply(&http_endpoint("ext", ext_a))?;
    for (port, want) in [(ext_a, "from-a"), (ext_b, "from-b")] {
        ns.apply(&http_endpoint("ext", port))?;
        eventually(
            &format!("invoke ext -> {want}"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let (s, b) = http("GET", http_port, "/v1.0/invoke/ext/method/hello", "").await?;
                Ok::<_, String>((s == 200 && b == want).then_some(()))
            },
        )
        .await?;
    }
    ns.kubectl(&["delete", "httpendpoint", "ext"])?;
    eventually(
        "ext removed",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let logs = daprd.logs();
            let last = logs
                .lines()
                .rfind(|l| l.contains("HTTPEndpoints updated from the operator"))
                .unwrap_or_default();
            Ok::<_, String>(last.contains("\"endpoints\":\"[]\"").then_some(()))
        },
    )
    .await?;

    println!(
        "HTTPEndpoint create/change/delete applied in {:?}",
        t.elapsed()
    );

    // kubectl delete: the store is gone.
    ns.kubectl(&["delete", "component", "statestore"])?;
    eventually(
        "statestore deleted",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let (s, b) = http("GET", http_port, "/v1.0/state/statestore/k2", "").await?;
            Ok::<_, String>((s == 400 && b.contains("ERR_STATE_STORE_NOT_FOUND")).then_some(()))
        },
    )
    .await?;

    // Operator restart: a change made while it is down still arrives.
    operator.stop();
    ns.apply(&component("later", "state.in-memory", "", ""))?;
    ns.kubectl(&["delete", "component", "private"])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (operator2, op_healthz) = start_operator(&cluster, ns.name(), op_port, &dir, 2);
    wait_http(
        "operator ready again",
        op_healthz,
        "/healthz",
        200,
        &operator2,
    )
    .await?;
    let t = std::time::Instant::now();
    wait_type(http_port, "later", Some("state.in-memory"), &daprd).await?;
    wait_type(http_port, "private", None, &daprd).await?;
    println!("caught up after the operator restart in {:?}", t.elapsed());
    assert_eq!(save_get(http_port, "later", "k", "v3").await?, "\"v3\"");
    // ... and the reopened stream carries later changes.
    ns.apply(&component(
        "later",
        "state.sqlite",
        &format!(
            "{{name: connectionString, value: \"{}\"}}",
            dir.join("later.db").display()
        ),
        "",
    ))?;
    wait_type(http_port, "later", Some("state.sqlite"), &daprd).await?;
    assert!(
        daprd.logs().contains("reconnected to the operator"),
        "{}",
        daprd.logs()
    );

    // A failing component without ignoreErrors: daprd exits, as Dapr does,
    // naming the component and the cause.
    ns.apply(&component("fatal", "state.nope", "", ""))?;
    let exited = eventually(
        "daprd exits",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let st = daprd.child.try_wait();
            async move { st.map_err(|e| e.to_string()) }
        },
    )
    .await;
    let logs = daprd.logs();
    assert!(exited.is_ok(), "daprd kept running:\n{logs}");
    assert!(
        logs.contains("component 'fatal' (state.nope)") && logs.contains("daprd will exit"),
        "{logs}"
    );
    daprd.stop();
    drop(operator2);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn unreachable_operator_fails_start_naming_the_address() -> TestResult {
    let dir = tempfile_dir("k8sdown");
    let port = free_port();
    let args: Vec<String> = [
        "--mode",
        "kubernetes",
        "--app-id",
        APP_ID,
        "--control-plane-address",
        &format!("127.0.0.1:{port}"),
        "--dapr-http-port",
        &free_port().to_string(),
        "--dapr-grpc-port",
        &free_port().to_string(),
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--data-dir",
        &dir.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daprd = Proc::spawn(
        "daprd",
        &args,
        &[
            ("NAMESPACE", "default"),
            ("DAPR_RS_OPERATOR_WAIT_SECONDS", "2"),
        ],
        dir.join("daprd.log"),
    );
    let t = std::time::Instant::now();
    let status = eventually(
        "daprd exits",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let st = daprd.child.try_wait();
            async move { st.map_err(|e| e.to_string()) }
        },
    )
    .await?;
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let logs = daprd.logs();
    assert!(
        logs.contains(&format!("127.0.0.1:{port}")) && logs.contains("unreachable"),
        "{logs}"
    );
    daprd.stop();
    Ok(())
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(dapr_e2e::unique_name(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A kubeconfig for the `default` service account of `ns` (a TokenRequest
/// token), so daprd on the host has exactly a pod's credentials.
async fn service_account_kubeconfig(
    cluster: &Cluster,
    ns: &str,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let sas: Api<ServiceAccount> = Api::namespaced(cluster.client(), ns);
    // The controller-manager creates `default` shortly after the namespace.
    eventually(
        "default service account",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { Ok::<_, kube::Error>(sas.get_opt("default").await?.map(|_| ())) },
    )
    .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let minted: TokenRequest = sas
        .create_subresource("token", "default", &PostParams::default(), &request)
        .await?;
    let token = minted.status.ok_or("TokenRequest without status")?.token;
    let admin = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
    let c = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or("admin kubeconfig without a cluster")?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": c.server,
            "certificate-authority-data": c.certificate_authority_data,
        }}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa", "namespace": ns}}],
        "current-context": "sa",
    });
    std::fs::write(path, serde_json::to_vec(&kubeconfig)?)?;
    Ok(())
}

fn daprd_k8s_args(op_port: u16, http_port: u16, dir: &Path) -> Vec<String> {
    [
        "--mode",
        "kubernetes",
        "--app-id",
        APP_ID,
        "--control-plane-address",
        &format!("127.0.0.1:{op_port}"),
        "--dapr-http-port",
        &http_port.to_string(),
        "--dapr-grpc-port",
        &free_port().to_string(),
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--dapr-internal-grpc-listen-address",
        "127.0.0.1",
        "--metrics-port",
        &free_port().to_string(),
        "--data-dir",
        &dir.join("data").to_string_lossy(),
        "--log-as-json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The built-in `kubernetes` secret store reads the pod namespace's Secrets
/// with the `default` service account and the chart's least-privilege Role
/// (`get` only), honours `metadata.namespace`, and survives the re-list
/// after an operator restart (it is daprd's own, not the operator's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_kubernetes_secret_store_reads_namespace_secrets() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("k8ssecrets")?;
    let other = cluster.namespace("k8ssecrets-other")?;
    let dir = tempfile_dir("k8ssecrets");

    // The chart's Role and RoleBinding, rendered for this namespace.
    let rbac = chart_support::run_helm(&[
        "template",
        "dapr",
        &repo_root().join("charts/dapr").to_string_lossy(),
        "--show-only",
        "templates/rbac_secret_reader.yaml",
        "--set",
        &format!("dapr_rbac.secretReader.namespace={}", ns.name()),
    ])?;
    ns.apply(&rbac)?;
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=user=admin",
        "--from-literal=password=s3cr3t",
    ])?;
    other.kubectl(&[
        "create",
        "secret",
        "generic",
        "elsewhere",
        "--from-literal=k=v-other",
    ])?;
    let kubeconfig = dir.join("sa.kubeconfig");
    service_account_kubeconfig(&cluster, ns.name(), &kubeconfig).await?;

    let op_port = free_port();
    let (operator, op_healthz) = start_operator(&cluster, ns.name(), op_port, &dir, 1);
    wait_http("operator ready", op_healthz, "/healthz", 200, &operator).await?;
    let http_port = free_port();
    let kubeconfig_s = kubeconfig.to_string_lossy().into_owned();
    let daprd = Proc::spawn(
        "daprd",
        &daprd_k8s_args(op_port, http_port, &dir),
        &[("NAMESPACE", ns.name()), ("KUBECONFIG", &kubeconfig_s)],
        dir.join("daprd.log"),
    );
    wait_http("daprd healthz", http_port, "/v1.0/healthz", 204, &daprd).await?;
    assert_eq!(
        component_type(http_port, "kubernetes").await?.as_deref(),
        Some("secretstores.kubernetes")
    );

    // GetSecret: the Secret's data map, decoded.
    let (s, b) = http("GET", http_port, "/v1.0/secrets/kubernetes/db", "").await?;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b)?;
    assert_eq!(
        v,
        serde_json::json!({"user": "admin", "password": "s3cr3t"})
    );
    // A missing Secret: Dapr's ERR_SECRET_GET.
    let (s, b) = http("GET", http_port, "/v1.0/secrets/kubernetes/nope", "").await?;
    assert_eq!(s, 500, "{b}");
    assert!(b.contains("ERR_SECRET_GET"), "{b}");
    // Least privilege: the Role grants `get`, not `list`, so bulk is refused
    // by the API server (as with Dapr's chart), and so is another namespace.
    let (s, b) = http("GET", http_port, "/v1.0/secrets/kubernetes/bulk", "").await?;
    assert_eq!(s, 500, "{b}");
    assert!(
        b.contains("ERR_SECRET_GET") && b.contains("forbidden"),
        "{b}"
    );
    let other_path = format!(
        "/v1.0/secrets/kubernetes/elsewhere?metadata.namespace={}",
        other.name()
    );
    let (s, b) = http("GET", http_port, &other_path, "").await?;
    assert_eq!(s, 500, "{b}");
    assert!(b.contains("forbidden"), "{b}");
    let logs = daprd.logs();
    assert!(
        !logs.contains("s3cr3t"),
        "a secret value reached the log:\n{logs}"
    );

    // Granted list here and get there: bulk returns every Secret, and the
    // namespace override reads the other namespace.
    ns.kubectl(&[
        "create",
        "role",
        "secret-lister",
        "--verb=list",
        "--resource=secrets",
    ])?;
    ns.kubectl(&[
        "create",
        "rolebinding",
        "secret-lister",
        "--role=secret-lister",
        &format!("--serviceaccount={}:default", ns.name()),
    ])?;
    other.kubectl(&[
        "create",
        "role",
        "reader",
        "--verb=get",
        "--resource=secrets",
    ])?;
    other.kubectl(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        &format!("--serviceaccount={}:default", ns.name()),
    ])?;
    let bulk: Value = eventually(
        "bulk allowed",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let (s, b) = http("GET", http_port, "/v1.0/secrets/kubernetes/bulk", "").await?;
            Ok::<_, Box<dyn std::error::Error>>(if s == 200 {
                Some(serde_json::from_str(&b)?)
            } else {
                None
            })
        },
    )
    .await?;
    assert_eq!(
        bulk["db"],
        serde_json::json!({"user": "admin", "password": "s3cr3t"})
    );
    assert!(bulk.get("elsewhere").is_none(), "{bulk}");
    let (s, b) = http("GET", http_port, &other_path, "").await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b)?,
        serde_json::json!({"k": "v-other"})
    );

    // An operator restart makes daprd re-list Components: the built-in
    // store is not among them and must stay.
    drop(operator);
    let (operator2, op_healthz) = start_operator(&cluster, ns.name(), op_port, &dir, 2);
    wait_http(
        "operator restarted",
        op_healthz,
        "/healthz",
        200,
        &operator2,
    )
    .await?;
    ns.apply(&component("statestore", "state.in-memory", "", ""))?;
    wait_type(http_port, "statestore", Some("state.in-memory"), &daprd).await?;
    eventually(
        "daprd re-listed after the restart",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            Ok::<_, String>(
                daprd
                    .logs()
                    .contains("reconnected to the operator")
                    .then_some(()),
            )
        },
    )
    .await?;
    assert_eq!(
        component_type(http_port, "kubernetes").await?.as_deref(),
        Some("secretstores.kubernetes")
    );
    let (s, b) = http("GET", http_port, "/v1.0/secrets/kubernetes/db", "").await?;
    assert_eq!(s, 200, "{b}");
    drop(daprd);
    drop(operator2);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What the in-test app saw: deliveries by route, and calls of `/fail`.
#[derive(Default)]
struct AppLog {
    deliveries: std::sync::Mutex<Vec<(String, Value)>>,
    fails: std::sync::atomic::AtomicU32,
}

impl AppLog {
    fn delivered(&self, route: &str, marker: &str) -> bool {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(r, ev)| r == route && ev["data"]["marker"] == marker)
    }

    fn count(&self, route: &str) -> usize {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(r, _)| r == route)
            .count()
    }
}

/// An app on loopback: no programmatic subscriptions, every `POST /<route>`
/// recorded (a CloudEvent), `GET /fail` always 503.
async fn subscriber_app() -> (u16, std::sync::Arc<AppLog>) {
    use axum::{
        Router,
        extract::{Path as AxPath, State},
        http::StatusCode,
        routing::{get, post},
    };
    let log = std::sync::Arc::new(AppLog::default());
    let app = Router::new()
        .route(
            "/dapr/subscribe",
            get(|| async { axum::Json(Value::Array(Vec::new())) }),
        )
        .route(
            "/fail",
            get(|State(l): State<std::sync::Arc<AppLog>>| async move {
                l.fails.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            }),
        )
        .route(
            "/{route}",
            post(
                |State(l): State<std::sync::Arc<AppLog>>,
                 AxPath(route): AxPath<String>,
                 body: String| async move {
                    let ev: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    l.deliveries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((route, ev));
                    StatusCode::OK
                },
            ),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, log)
}

fn subscription(name: &str, topic: &str, route: &str) -> String {
    format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: {name}}}\nspec:\n  pubsubname: pubsub\n  topic: {topic}\n  routes: {{default: /{route}}}\n"
    )
}

/// Publishes `marker` to `topic` until the app has it at `route`.
async fn publish_until(
    port: u16,
    topic: &str,
    marker: &str,
    route: &str,
    app: &AppLog,
    daprd: &Proc,
) -> Result<(), E2eError> {
    eventually(
        &format!("{topic}/{marker} delivered to /{route}"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            if app.delivered(route, marker) {
                return Ok(Some(()));
            }
            let body = format!(r#"{{"marker":"{marker}"}}"#);
            let (s, b) = http(
                "POST",
                port,
                &format!("/v1.0/publish/pubsub/{topic}"),
                &body,
            )
            .await?;
            if s != 204 {
                return Err(format!("publish: {s} {b}"));
            }
            Ok::<_, String>(None)
        },
    )
    .await
    .map_err(|e| E2eError::Output {
        what: marker.to_owned(),
        message: format!("{e}\n--- daprd ---\n{}", daprd.logs()),
    })
}

/// How many in-place restarts daprd has begun.
fn restarts(daprd: &Proc) -> usize {
    daprd.logs().matches("re-executing daprd").count()
}

/// Waits for in-place restart number `n` and for daprd to answer again.
async fn wait_restart(n: usize, port: u16, daprd: &Proc) -> Result<(), E2eError> {
    eventually(
        &format!("in-place restart {n}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok::<_, String>((restarts(daprd) >= n).then_some(())) },
    )
    .await
    .map_err(|e| E2eError::Output {
        what: "restart".into(),
        message: format!("{e}\n--- daprd ---\n{}", daprd.logs()),
    })?;
    wait_http(
        "daprd back after the restart",
        port,
        "/v1.0/healthz",
        204,
        daprd,
    )
    .await
}

/// Subscriptions change in place (no restart); Resiliency and the
/// Configuration named by `--config` restart daprd in place (same pid, the
/// new settings in force), as Dapr's hot reloader does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_live_configuration_and_resiliency_restart_in_place() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("k8sreload")?;
    let dir = tempfile_dir("k8sreload");
    ns.apply(&component("pubsub", "pubsub.in-memory", "", ""))?;
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: appconfig}\nspec:\n  features: [{name: HotReload, enabled: true}]\n",
    )?;
    // Another Configuration: changing it must not restart this sidecar.
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: other}\nspec: {}\n",
    )?;
    ns.apply(&subscription("orders", "orders", "a"))?;

    let op_port = free_port();
    let (operator, op_healthz) = start_operator(&cluster, ns.name(), op_port, &dir, 1);
    wait_http("operator ready", op_healthz, "/healthz", 200, &operator).await?;
    let (app_port, app) = subscriber_app().await;
    let http_port = free_port();
    let mut args = daprd_k8s_args(op_port, http_port, &dir);
    args.extend(
        [
            "--config",
            "appconfig",
            "--app-port",
            &app_port.to_string(),
            "--disable-builtin-k8s-secret-store",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut daprd = Proc::spawn(
        "daprd",
        &args,
        &[("NAMESPACE", ns.name())],
        dir.join("daprd.log"),
    );
    let pid = daprd.child.id();
    wait_http("daprd healthz", http_port, "/v1.0/healthz", 204, &daprd).await?;
    publish_until(http_port, "orders", "m1", "a", &app, &daprd).await?;

    // Subscription changed: the new route applies, no restart.
    let t = std::time::Instant::now();
    ns.apply(&subscription("orders", "orders", "b"))?;
    publish_until(http_port, "orders", "m2", "b", &app, &daprd).await?;
    println!("Subscription change applied after {:?}", t.elapsed());
    // A new Subscription subscribes its topic.
    ns.apply(&subscription("audit", "audit", "audit"))?;
    publish_until(http_port, "audit", "m3", "audit", &app, &daprd).await?;
    // Deleted: its topic is no longer delivered (audit still is).
    ns.kubectl(&["delete", "subscription", "orders"])?;
    eventually(
        "orders unsubscribed",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let logs = daprd.logs();
            Ok::<_, String>(
                logs.lines()
                    .any(|l| {
                        l.contains("unsubscribed")
                            && l.contains("orders")
                            && l.contains("\"topic\":\"orders\"")
                    })
                    .then_some(()),
            )
        },
    )
    .await?;
    let before = app.count("b");
    let (s, b) = http(
        "POST",
        http_port,
        "/v1.0/publish/pubsub/orders",
        r#"{"marker":"m4"}"#,
    )
    .await?;
    assert_eq!(s, 204, "{b}");
    publish_until(http_port, "audit", "m5", "audit", &app, &daprd).await?;
    assert_eq!(
        app.count("b"),
        before,
        "a deleted Subscription still delivered"
    );
    assert_eq!(restarts(&daprd), 0, "{}", daprd.logs());

    // Another Configuration changed: nothing to do for this sidecar.
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: other}\nspec:\n  features: [{name: Unrelated, enabled: true}]\n",
    )?;

    // Resiliency: no user policy → one attempt; created → restart → retries.
    let fails = || app.fails.load(std::sync::atomic::Ordering::SeqCst);
    let (s, _) = http(
        "GET",
        http_port,
        &format!("/v1.0/invoke/{APP_ID}/method/fail"),
        "",
    )
    .await?;
    assert_eq!((s, fails()), (503, 1));
    let t = std::time::Instant::now();
    ns.apply(&format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {{name: retries}}\nspec:\n  policies:\n    retries:\n      twice: {{policy: constant, duration: 10ms, maxRetries: 2}}\n  targets:\n    apps:\n      {APP_ID}: {{retry: twice}}\n"
    ))?;
    wait_restart(1, http_port, &daprd).await?;
    println!(
        "Resiliency change: daprd restarted in place and ready after {:?}",
        t.elapsed()
    );
    assert_eq!(daprd.child.id(), pid);
    assert!(daprd.child.try_wait()?.is_none(), "daprd exited");
    let before = fails();
    let (s, _) = http(
        "GET",
        http_port,
        &format!("/v1.0/invoke/{APP_ID}/method/fail"),
        "",
    )
    .await?;
    assert_eq!((s, fails() - before), (503, 3), "1 call + 2 retries");
    // Subscriptions were taken again from the operator by the new instance.
    publish_until(http_port, "audit", "m6", "audit", &app, &daprd).await?;
    assert_eq!(
        restarts(&daprd),
        1,
        "the unrelated Configuration restarted daprd"
    );

    // The sidecar's Configuration changed: restart, the new feature listed.
    let t = std::time::Instant::now();
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: appconfig}\nspec:\n  features: [{name: HotReload, enabled: true}, {name: Reloaded, enabled: true}]\n",
    )?;
    wait_restart(2, http_port, &daprd).await?;
    println!(
        "Configuration change: daprd restarted in place and ready after {:?}",
        t.elapsed()
    );
    let (s, b) = http("GET", http_port, "/v1.0/metadata", "").await?;
    assert_eq!(s, 200, "{b}");
    let features: Value = serde_json::from_str(&b)?;
    assert!(
        features["enabledFeatures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "Reloaded")),
        "{b}"
    );
    assert_eq!(daprd.child.id(), pid);
    let logs = daprd.logs();
    assert!(
        logs.contains("Configuration appconfig changed")
            && logs.contains("Resiliency retries changed"),
        "{logs}"
    );
    daprd.stop();
    drop(operator);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
