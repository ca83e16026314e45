//! dapr-operator against the real apiserver: the Operator gRPC API lists
//! resources with `secretKeyRef`s resolved from Secrets, streams live
//! changes, skips (and logs) what it cannot serve, and with mTLS scopes
//! every answer to the caller's SPIFFE namespace and app id.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use dapr_e2e::{Cluster, E2eError, TestNamespace, eventually, repo_root};
use dapr_operator::{Running, cli::Args};
use dapr_rs_proto::generated::dapr::proto::operator::v1::{
    self as pb, ResourceEventType, operator_client::OperatorClient,
};
use serde_json::Value;
use tonic::transport::Channel;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn apply_crds(cluster: &Cluster) -> Result<(), E2eError> {
    let dir = repo_root().join("crds/generated");
    let mut all = String::new();
    for f in [
        "components.yaml",
        "configuration.yaml",
        "httpendpoints.yaml",
        "resiliency.yaml",
        "subscription.yaml",
    ] {
        all.push_str("---\n");
        all.push_str(
            &std::fs::read_to_string(dir.join(f)).map_err(|source| E2eError::Spawn {
                program: format!("read {f}"),
                source,
            })?,
        );
    }
    cluster.apply(&all)?;
    cluster.kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/components.dapr.io",
        "crd/configurations.dapr.io",
        "crd/httpendpoints.dapr.io",
        "crd/resiliencies.dapr.io",
        "crd/subscriptions.dapr.io",
    ])?;
    Ok(())
}

/// Starts the operator in this process, watching only `ns`, on loopback ports.
async fn start_operator(
    cluster: &Cluster,
    ns: &str,
    extra: &[&str],
) -> Result<Running, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut argv = vec![
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
        "--watch-namespace",
        ns,
        "--namespace",
        ns,
        "--disable-service-reconciler",
    ];
    argv.extend_from_slice(extra);
    let running = dapr_operator::start(Args::from_argv(argv)?, cluster.client()).await?;
    let health = running.health.clone();
    eventually(
        "operator ready",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let health = health.clone();
            async move { Ok::<_, E2eError>(health.is_ready().then_some(())) }
        },
    )
    .await?;
    Ok(running)
}

async fn plain_client(
    running: &Running,
) -> Result<OperatorClient<Channel>, tonic::transport::Error> {
    OperatorClient::connect(format!("http://{}", running.grpc_addr)).await
}

fn names(payloads: &[Vec<u8>]) -> Vec<String> {
    let mut n: Vec<String> = payloads
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(p).map_or_else(
                |e| format!("<invalid json: {e}>"),
                |v| v["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    n.sort();
    n
}

fn find<'a>(payloads: &'a [Value], name: &str) -> &'a Value {
    payloads
        .iter()
        .find(|v| v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {payloads:?}"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The next component event within 20 s.
async fn next(
    stream: &mut tonic::Streaming<pb::ComponentUpdateEvent>,
) -> Result<(i32, Value), String> {
    match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
        Ok(Ok(Some(ev))) => {
            let v: Value = serde_json::from_slice(&ev.component).map_err(|e| e.to_string())?;
            Ok((ev.r#type, v))
        }
        other => Err(format!("no update event: {other:?}")),
    }
}

const COMPONENTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: redis}
stringData: {password: s3cret, redis: by-name}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: plain}
spec:
  type: state.in-memory
  version: v1
  metadata:
  - {name: greeting, value: hello}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: withsecret}
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisPassword
    secretKeyRef: {name: redis, key: password}
  - name: implicitKey
    secretKeyRef: {name: redis}
  - {name: redisHost, value: "redis:6379"}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: missingsecret}
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisPassword
    secretKeyRef: {name: later, key: password}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: othersstore}
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisPassword
    secretKeyRef: {name: not-ours, key: password}
auth: {secretStore: vault}
"#;

#[tokio::test]
async fn components_list_resolve_secrets_and_stream_changes() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("operator")?;
    ns.apply(COMPONENTS)?;
    let running = start_operator(&cluster, ns.name(), &["--disable-mtls"]).await?;
    let mut client = plain_client(&running).await?;
    let list = |client: &mut OperatorClient<Channel>| {
        let mut c = client.clone();
        let namespace = ns.name().to_owned();
        async move {
            c.list_components(pb::ListComponentsRequest { namespace })
                .await
                .map(|r| r.into_inner().components)
        }
    };

    // The component whose Secret is missing is skipped (and logged); the others are served.
    let listed = list(&mut client).await?;
    assert_eq!(names(&listed), ["othersstore", "plain", "withsecret"]);
    let parsed: Vec<Value> = listed
        .iter()
        .map(|p| serde_json::from_slice(p))
        .collect::<Result<_, _>>()?;
    let ws = find(&parsed, "withsecret");
    assert_eq!(ws["spec"]["metadata"][0]["value"], b64("s3cret"));
    assert_eq!(ws["spec"]["metadata"][0]["secretKeyRef"]["key"], "password");
    assert_eq!(
        ws["spec"]["metadata"][1]["value"],
        b64("by-name"),
        "empty key = Secret name"
    );
    assert_eq!(ws["spec"]["metadata"][2]["value"], "redis:6379");
    assert_eq!(ws["kind"], "Component");
    assert_eq!(ws["apiVersion"], "dapr.io/v1alpha1");
    assert_eq!(ws["metadata"]["namespace"], ns.name());
    assert!(ws["metadata"].get("managedFields").is_none());
    // Another secret store: left for daprd to resolve.
    assert!(
        find(&parsed, "othersstore")["spec"]["metadata"][0]
            .get("value")
            .is_none()
    );
    // Payloads are what daprd parses.
    for p in &listed {
        let c: dapr_crds::Component = serde_json::from_slice(p)?;
        assert!(!c.spec.type_.is_empty());
    }

    // A live stream sees kubectl changes.
    let mut stream = client
        .component_update(pb::ComponentUpdateRequest {
            namespace: ns.name().to_owned(),
        })
        .await?
        .into_inner();
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: plain}\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - {name: greeting, value: changed}\n",
    )?;
    let (ty, v) = next(&mut stream).await?;
    assert_eq!(ty, ResourceEventType::Updated as i32, "{v}");
    assert_eq!(v["metadata"]["name"], "plain");
    assert_eq!(v["spec"]["metadata"][0]["value"], "changed");

    // Creating the missing Secret does not touch the Component; the next list serves it.
    ns.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: later}\nstringData: {password: now-here}\n",
    )?;
    let listed = list(&mut client).await?;
    assert_eq!(
        names(&listed),
        ["missingsecret", "othersstore", "plain", "withsecret"]
    );

    // Created and deleted components arrive too, with secrets resolved.
    ns.apply(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: fresh}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisPassword\n    secretKeyRef: {name: later, key: password}\n",
    )?;
    let (ty, v) = next(&mut stream).await?;
    assert_eq!(
        (ty, v["metadata"]["name"].as_str()),
        (ResourceEventType::Created as i32, Some("fresh"))
    );
    assert_eq!(v["spec"]["metadata"][0]["value"], b64("now-here"));
    ns.kubectl(&["delete", "component", "plain"])?;
    let (ty, v) = next(&mut stream).await?;
    assert_eq!(
        (ty, v["metadata"]["name"].as_str()),
        (ResourceEventType::Deleted as i32, Some("plain"))
    );

    // Without mTLS the request must still name a namespace.
    let err = client
        .list_components(pb::ListComponentsRequest {
            namespace: String::new(),
        })
        .await
        .expect_err("empty namespace");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    drop(running);
    Ok(())
}

const OTHER_KINDS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: ext}
stringData: {token: Bearer abc, key: "-----BEGIN KEY-----"}
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: appconfig}
spec:
  features: [{name: HotReload, enabled: true}]
  tracing: {samplingRate: "1"}
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: v1sub}
spec: {pubsubname: pubsub, topic: orders, route: /orders}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: v2sub}
spec:
  pubsubname: pubsub
  topic: widgets
  routes: {rules: [{match: 'event.type == "w"', path: /w}], default: /d}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: res}
spec:
  policies: {timeouts: {general: 5s}}
  targets: {apps: {app1: {timeout: general}}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {name: ext}
spec:
  baseUrl: https://api.example.test
  headers:
  - name: Authorization
    secretKeyRef: {name: ext, key: token}
  clientTLS:
    privateKey:
      secretKeyRef: {name: ext, key: key}
"#;

#[tokio::test]
async fn configuration_subscriptions_resiliency_and_http_endpoints_are_served() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("operator-kinds")?;
    ns.apply(OTHER_KINDS)?;
    let running = start_operator(&cluster, ns.name(), &["--disable-mtls"]).await?;
    let mut c = plain_client(&running).await?;
    let namespace = ns.name().to_owned();

    let cfg = c
        .get_configuration(pb::GetConfigurationRequest {
            name: "appconfig".into(),
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();
    let cfg: dapr_crds::Configuration = serde_json::from_slice(&cfg.configuration)?;
    assert!(cfg.feature_enabled("HotReload"));
    let missing = c
        .get_configuration(pb::GetConfigurationRequest {
            name: "nope".into(),
            namespace: namespace.clone(),
        })
        .await
        .expect_err("missing configuration");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let subs = c
        .list_subscriptions_v2(pb::ListSubscriptionsRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .subscriptions;
    assert_eq!(names(&subs), ["v1sub", "v2sub"]);
    let subs: Vec<Value> = subs
        .iter()
        .map(|s| serde_json::from_slice(s))
        .collect::<Result<_, _>>()?;
    let v1 = find(&subs, "v1sub");
    assert_eq!(v1["apiVersion"], "dapr.io/v2alpha1");
    assert_eq!(v1["spec"]["routes"]["default"], "/orders");
    assert_eq!(
        find(&subs, "v2sub")["spec"]["routes"]["rules"][0]["path"],
        "/w"
    );
    // The deprecated v1 list answers in v1alpha1's shape.
    let legacy = c.list_subscriptions(()).await?.into_inner().subscriptions;
    let legacy: Vec<Value> = legacy
        .iter()
        .map(|s| serde_json::from_slice(s))
        .collect::<Result<_, _>>()?;
    assert_eq!(find(&legacy, "v2sub")["spec"]["route"], "/d");
    assert_eq!(find(&legacy, "v2sub")["apiVersion"], "dapr.io/v1alpha1");

    let res = c
        .list_resiliency(pb::ListResiliencyRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .resiliencies;
    assert_eq!(names(&res), ["res"]);
    let one = c
        .get_resiliency(pb::GetResiliencyRequest {
            name: "res".into(),
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();
    let r = dapr_crds::Resiliency::from_document(&serde_json::from_slice(&one.resiliency)?)?;
    assert_eq!(r.spec.policies.timeouts["general"], "5s");

    let eps = c
        .list_http_endpoints(pb::ListHttpEndpointsRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .http_endpoints;
    assert_eq!(names(&eps), ["ext"]);
    let ep: dapr_crds::HttpEndpoint = serde_json::from_slice(&eps[0])?;
    assert_eq!(ep.spec.headers[0].literal(), Some(b64("Bearer abc")));
    let key = ep
        .spec
        .client_tls
        .as_ref()
        .and_then(|t| t.private_key.as_ref())
        .and_then(|k| k.literal());
    assert_eq!(key, Some(b64("-----BEGIN KEY-----")));

    // Streams exist for every kind daprd hot-reloads.
    let mut sub_stream = c
        .subscription_update(pb::SubscriptionUpdateRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();
    let mut ep_stream = c
        .http_endpoint_update(pb::HttpEndpointUpdateRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();
    ns.kubectl(&["delete", "subscriptions.v2alpha1.dapr.io", "v1sub"])?;
    let ev = tokio::time::timeout(Duration::from_secs(20), sub_stream.message())
        .await??
        .ok_or("stream ended")?;
    assert_eq!(ev.r#type, ResourceEventType::Deleted as i32);
    ns.kubectl(&["label", "httpendpoint", "ext", "touched=yes"])?;
    let ev = tokio::time::timeout(Duration::from_secs(20), ep_stream.message())
        .await??
        .ok_or("stream ended")?;
    assert_eq!(ev.r#type, ResourceEventType::Updated as i32);
    let ep: dapr_crds::HttpEndpoint = serde_json::from_slice(&ev.http_endpoints)?;
    assert_eq!(ep.spec.headers[0].literal(), Some(b64("Bearer abc")));
    Ok(())
}

/// A throwaway CA: the operator's serving certificate and app certificates.
struct Pki {
    dir: std::path::PathBuf,
    ca: dapr_security::Ca,
    anchors: Arc<dapr_security::TrustAnchors>,
}

impl Pki {
    fn new(name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let creds = dapr_security::CaCredentials::generate_default("cluster.local", "dapr-system")?;
        let ca = dapr_security::Ca::load(&creds, dapr_security::SignPolicy::default())?;
        let dir = std::env::temp_dir().join(dapr_e2e::unique_name(name));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ca.crt"), &creds.trust_anchors_pem)?;
        let anchors = dapr_security::TrustAnchors::from_pem(&creds.trust_anchors_pem)?;
        Ok(Self { dir, ca, anchors })
    }

    /// Writes cert+key for `id` and returns their paths.
    fn issue_files(
        &self,
        id: &dapr_security::SpiffeId,
        file: &str,
    ) -> Result<(String, String), Box<dyn std::error::Error>> {
        let (cert, key) = self.ca.issue_with_new_key(id, &[])?;
        let c = self.dir.join(format!("{file}.crt"));
        let k = self.dir.join(format!("{file}.key"));
        std::fs::write(&c, &cert.chain_pem)?;
        std::fs::write(
            &k,
            dapr_security::pem::encode("PRIVATE KEY", key.secret_pkcs8_der()),
        )?;
        Ok((c.display().to_string(), k.display().to_string()))
    }

    /// An mTLS gRPC client presenting `id`.
    fn client(
        &self,
        id: &dapr_security::SpiffeId,
        addr: std::net::SocketAddr,
    ) -> Result<OperatorClient<Channel>, Box<dyn std::error::Error>> {
        let (cert, key) = self.ca.issue_with_new_key(id, &[])?;
        let store = dapr_security::SvidStore::new();
        store.set(dapr_security::Svid::new(cert.chain, key.into())?);
        let cfg = dapr_security::tls::client_config(
            Some(&store),
            self.anchors.clone(),
            dapr_security::tls::PeerAuthorizer::exact(dapr_security::SpiffeId::new(
                "cluster.local",
                "dapr-system",
                "dapr-operator",
            )?),
        )?;
        let channel = dapr_security::net::tls_channel(
            &addr.to_string(),
            Arc::new(cfg),
            Duration::from_secs(5),
        )?;
        Ok(OperatorClient::new(channel))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn mtls_scopes_answers_to_the_callers_namespace_and_app_id() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns: TestNamespace = cluster.namespace("operator-mtls")?;
    ns.apply(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: everyone}
spec: {type: state.in-memory, version: v1}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: onlya}
spec: {type: state.in-memory, version: v1}
scopes: [app-a]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: onlyb}
spec: {type: state.in-memory, version: v1}
scopes: [app-b]
"#,
    )?;
    let pki = Pki::new("operator-pki")?;
    let (cert, key) = pki.issue_files(
        &dapr_security::SpiffeId::new("cluster.local", "dapr-system", "dapr-operator")?,
        "operator",
    )?;
    let anchors = pki.dir.join("ca.crt").display().to_string();
    let running = start_operator(
        &cluster,
        ns.name(),
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--trust-anchors-file",
            &anchors,
        ],
    )
    .await?;
    let namespace = ns.name().to_owned();
    let app = |id: &str| dapr_security::SpiffeId::new("public", &namespace, id);

    let mut a = pki.client(&app("app-a")?, running.grpc_addr)?;
    let listed = a
        .list_components(pb::ListComponentsRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .components;
    assert_eq!(names(&listed), ["everyone", "onlya"]);
    let mut b = pki.client(&app("app-b")?, running.grpc_addr)?;
    let listed = b
        .list_components(pb::ListComponentsRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .components;
    assert_eq!(names(&listed), ["everyone", "onlyb"]);

    // Another namespace than the certificate's: refused, as Dapr does.
    let err = a
        .list_components(pb::ListComponentsRequest {
            namespace: "kube-system".into(),
        })
        .await
        .expect_err("foreign namespace");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("kube-system"), "{}", err.message());

    // Scope changes reach a stream as creations and deletions for that app.
    let mut stream = a
        .component_update(pb::ComponentUpdateRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner();
    ns.apply("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: onlyb}\nspec: {type: state.in-memory, version: v1}\nscopes: [app-b, app-a]\n")?;
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await??
        .ok_or("stream ended")?;
    let v: Value = serde_json::from_slice(&ev.component)?;
    assert_eq!(
        (ev.r#type, v["metadata"]["name"].as_str()),
        (ResourceEventType::Created as i32, Some("onlyb"))
    );
    ns.apply("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: onlya}\nspec: {type: state.in-memory, version: v1}\nscopes: [app-b]\n")?;
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await??
        .ok_or("stream ended")?;
    let v: Value = serde_json::from_slice(&ev.component)?;
    assert_eq!(
        (ev.r#type, v["metadata"]["name"].as_str()),
        (ResourceEventType::Deleted as i32, Some("onlya"))
    );

    // A client without a certificate from this CA cannot even connect.
    let mut plain = plain_client(&running).await?;
    assert!(
        plain
            .list_components(pb::ListComponentsRequest { namespace })
            .await
            .is_err()
    );
    Ok(())
}
