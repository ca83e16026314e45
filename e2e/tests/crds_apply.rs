//! The generated `dapr.io` CRDs (crds/generated, the chart's copies) on a real
//! 1.20 apiserver: they are accepted as structural, `kubectl explain` shows
//! Dapr's fields, free-form values survive, unknown fields are pruned, and
//! what the apiserver stores parses with the same `dapr_crds` types daprd uses.

use std::time::Duration;

use dapr_e2e::{Cluster, E2eError, eventually, repo_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CRDS: [&str; 5] = [
    "components.dapr.io",
    "configurations.dapr.io",
    "httpendpoints.dapr.io",
    "resiliencies.dapr.io",
    "subscriptions.dapr.io",
];

/// Applies every generated CRD (idempotent: shared by all test binaries) and
/// waits until they are served.
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
        let text = std::fs::read_to_string(dir.join(f)).map_err(|source| E2eError::Spawn {
            program: format!("read {f}"),
            source,
        })?;
        all.push_str("---\n");
        all.push_str(&text);
    }
    cluster.apply(&all)?;
    let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
    let names: Vec<String> = CRDS.iter().map(|c| format!("crd/{c}")).collect();
    args.extend(names.iter().map(String::as_str));
    cluster.kubectl(&args)?;
    Ok(())
}

/// `kubectl apply` without kubectl's own schema check, so the apiserver's
/// validation and pruning are what is tested.
fn server_apply(ns: &dapr_e2e::TestNamespace, yaml: &str) -> Result<String, E2eError> {
    ns.kubectl_handle()
        .run_with_stdin(&["apply", "--validate=false", "-f", "-"], Some(yaml))
}

#[tokio::test]
async fn crds_are_accepted_and_explained() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    for crd in CRDS {
        let json = cluster.kubectl(&["get", "crd", crd, "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let conditions = v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // A non-structural schema shows up as a NonStructuralSchema condition.
        assert!(
            !conditions
                .iter()
                .any(|c| c["type"] == "NonStructuralSchema" && c["status"] == "True"),
            "{crd}: {conditions:?}"
        );
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True"),
            "{crd}: {conditions:?}"
        );
    }
    // The published OpenAPI (what `kubectl explain` reads) catches up within seconds.
    let explain = |args: &'static [&'static str], wants: &'static [&'static str]| {
        let cluster = &cluster;
        async move {
            eventually(
                &format!("kubectl explain {args:?}"),
                Duration::from_secs(60),
                Duration::from_millis(500),
                || async move {
                    let out = cluster.kubectl(args)?;
                    Ok::<_, E2eError>(wants.iter().all(|w| out.contains(w)).then_some(out))
                },
            )
            .await
        }
    };
    let out = explain(
        &["explain", "component.spec"],
        &["type", "version", "metadata", "ignoreErrors", "initTimeout"],
    )
    .await?;
    assert!(out.contains("dapr.io/v1alpha1"), "{out}");
    explain(
        &["explain", "component.spec.metadata"],
        &["secretKeyRef", "envRef", "value"],
    )
    .await?;
    explain(&["explain", "component"], &["auth", "scopes"]).await?;
    explain(
        &["explain", "httpendpoint.spec"],
        &["baseUrl", "headers", "clientTLS"],
    )
    .await?;
    explain(
        &["explain", "httpendpoint.spec.clientTLS"],
        &["rootCA", "certificate", "privateKey"],
    )
    .await?;
    explain(
        &["explain", "configuration.spec"],
        &[
            "accessControl",
            "tracing",
            "mtls",
            "features",
            "nameResolution",
            "httpPipeline",
        ],
    )
    .await?;
    explain(
        &["explain", "resiliency.spec.policies"],
        &["timeouts", "retries", "circuitBreakers"],
    )
    .await?;
    explain(
        &[
            "explain",
            "subscription.spec.routes",
            "--api-version=dapr.io/v2alpha1",
        ],
        &["rules", "default"],
    )
    .await?;
    explain(
        &[
            "explain",
            "subscription.spec",
            "--api-version=dapr.io/v1alpha1",
        ],
        &["route", "pubsubname", "deadLetterTopic"],
    )
    .await?;
    Ok(())
}

const RESOURCES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec:
  type: state.redis
  version: v1
  bogusField: pruned
  metadata:
  - name: redisHost
    value: redis:6379
  - name: nested
    value: {a: [1, 2], b: {c: true}}
  - name: number
    value: 5
  - name: redisPassword
    secretKeyRef: {name: redis, key: password}
auth: {secretStore: kubernetes}
scopes: [app1]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: orders-v1}
spec: {pubsubname: pubsub, topic: orders, route: /orders}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: orders-v2}
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    rules:
    - {match: 'event.type == "widget"', path: /widgets}
    default: /orders
  bulkSubscribe: {enabled: true, maxMessagesCount: 10}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {name: ext}
spec:
  baseUrl: https://api.example.test
  headers:
  - {name: Accept, value: application/json}
  - name: Authorization
    secretKeyRef: {name: ext, key: token}
  clientTLS:
    rootCA: {value: "-----BEGIN CERTIFICATE-----"}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: res}
spec:
  policies:
    timeouts: {general: 5s}
    retries:
      retryForever: {policy: constant, duration: 5s, maxRetries: -1}
    circuitBreakers:
      simpleCB: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures >= 5}
  targets:
    apps:
      app1: {timeout: general, retry: retryForever, circuitBreaker: simpleCB}
scopes: [app1]
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: appconfig}
spec:
  tracing: {samplingRate: "1", zipkin: {endpointAddress: "http://zipkin:9411/api/v2/spans"}}
  mtls: {enabled: true, workloadCertTTL: 24h, allowedClockSkew: 15m}
  features: [{name: HotReload, enabled: true}]
  nameResolution:
    component: kubernetes
    configuration: {anything: {goes: [1]}}
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: app1
      defaultAction: allow
      namespace: default
      operations: [{name: /op, httpVerb: [GET], action: deny}]
"#;

#[tokio::test]
async fn stored_resources_round_trip_and_parse_as_dapr_types() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("crds")?;
    // Client-side validation off: the apiserver itself must prune and accept.
    server_apply(&ns, RESOURCES)?;

    let get = |what: &str| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        Ok(serde_json::from_str(
            &ns.kubectl(&["get", what, "-o", "json"])?,
        )?)
    };

    let comp = get("component/statestore")?;
    assert!(
        comp["spec"].get("bogusField").is_none(),
        "unknown field kept: {comp}"
    );
    assert_eq!(
        comp["spec"]["metadata"][1]["value"],
        serde_json::json!({"a": [1, 2], "b": {"c": true}})
    );
    assert_eq!(comp["spec"]["metadata"][2]["value"], 5);
    assert_eq!(comp["auth"]["secretStore"], "kubernetes");
    assert_eq!(comp["scopes"][0], "app1");

    // v1alpha1 written, stored as v2alpha1: the route is kept and reads as the default route.
    let sub = get("subscriptions.v2alpha1.dapr.io/orders-v1")?;
    assert_eq!(sub["apiVersion"], "dapr.io/v2alpha1");
    let typed = dapr_crds::subscription_from_document(&sub)?;
    assert_eq!(typed.spec.routes.default, "/orders");
    let v2 =
        dapr_crds::subscription_from_document(&get("subscriptions.v2alpha1.dapr.io/orders-v2")?)?;
    assert_eq!(v2.spec.routes.rules[0].path, "/widgets");
    assert_eq!(v2.spec.bulk_subscribe.max_messages_count, 10);

    // What the apiserver stores is what daprd parses: the same types, from YAML.
    let mut yaml = String::new();
    for what in [
        "component/statestore",
        "httpendpoint/ext",
        "configuration/appconfig",
        "resiliency/res",
    ] {
        yaml.push_str("---\n");
        yaml.push_str(&ns.kubectl(&["get", what, "-o", "yaml"])?);
    }
    let docs = dapr_crds::parse_documents(&yaml)?;
    assert_eq!(docs.len(), 4, "{docs:?}");
    let dapr_crds::Resource::Component(c) = &docs[0] else {
        panic!("{:?}", docs[0])
    };
    assert_eq!(
        c.spec.metadata[3]
            .secret_key_ref
            .as_ref()
            .map(|r| r.key.as_str()),
        Some("password")
    );
    let dapr_crds::Resource::HttpEndpoint(e) = &docs[1] else {
        panic!("{:?}", docs[1])
    };
    assert_eq!(e.spec.base_url, "https://api.example.test");
    assert!(
        e.spec
            .client_tls
            .as_ref()
            .and_then(|t| t.root_ca.as_ref())
            .is_some()
    );
    let dapr_crds::Resource::Configuration(cfg) = &docs[2] else {
        panic!("{:?}", docs[2])
    };
    assert!(cfg.feature_enabled("HotReload"));
    assert_eq!(
        cfg.spec
            .access_control
            .as_ref()
            .map(|a| a.default_action.as_str()),
        Some("deny")
    );
    assert!(cfg.spec.extra.contains_key("mtls") && cfg.spec.extra.contains_key("tracing"));
    let res = dapr_crds::resiliencies(&docs);
    assert_eq!(res.len(), 1);
    let res = res.into_iter().next().unwrap()?;
    assert_eq!(
        res.spec.policies.retries["retryForever"].max_retries,
        Some(-1)
    );
    Ok(())
}

#[tokio::test]
async fn schema_violations_are_rejected_by_the_apiserver() -> TestResult {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    apply_crds(&cluster)?;
    let ns = cluster.namespace("crds-bad")?;
    for (what, bad) in [
        (
            "component without spec.type",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: no-type}\nspec: {version: v1}\n",
        ),
        (
            "metadata item without a name",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: no-item-name}\nspec: {type: state.redis, version: v1, metadata: [{value: 1}]}\n",
        ),
        (
            "httpendpoint without baseUrl",
            "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata: {name: no-base-url}\nspec: {headers: []}\n",
        ),
        (
            "scopes not a list",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: scalar-scopes}\nspec: {type: state.redis, version: v1}\nscopes: app1\n",
        ),
    ] {
        let err = server_apply(&ns, bad).expect_err(what).to_string();
        assert!(
            err.contains("Invalid value")
                || err.contains("Required value")
                || err.contains("invalid"),
            "{what}: {err}"
        );
    }
    Ok(())
}
