//! The Configuration's `httpPipeline` in front of the real daprd API.

mod common;

use common::*;

#[tokio::test]
async fn ratelimit_and_routeralias_apply_to_the_api() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "state.yaml",
        &component_yaml("statestore", "state.in-memory", &[]),
    );
    write_resource(
        dir.path(),
        "mw.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: alias\nspec:\n  type: middleware.http.routeralias\n  version: v1\n  metadata:\n  - name: routes\n    value: '{\"/order/latest\": \"/v1.0/state/statestore/42\"}'\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: limit\nspec:\n  type: middleware.http.ratelimit\n  version: v1\n  metadata:\n  - name: maxRequestsPerSecond\n    value: 5\n",
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: pipeline\nspec:\n  httpPipeline:\n    handlers:\n    - name: alias\n      type: middleware.http.routeralias\n    - name: limit\n      type: middleware.http.ratelimit\n",
    )
    .unwrap();
    let res = tempfile::tempdir().unwrap();
    for f in ["state.yaml", "mw.yaml"] {
        std::fs::copy(dir.path().join(f), res.path().join(f)).unwrap();
    }
    let d = DaprdBuilder::new("mw")
        .resources(res.path())
        .arg("--config")
        .arg(config.display().to_string())
        .start()
        .await;
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"42","value":"answer"}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    // The alias rewrites the path before routing.
    let r = http("GET", &d.url("/order/latest"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "\"answer\"");
    // The limiter answers 429 once the per-second budget is spent.
    let mut limited = 0;
    for _ in 0..20 {
        if http("GET", &d.url("/v1.0/metadata"), "").await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "no request was rate limited");
    let m = http("GET", &d.url("/v1.0/metadata"), "").await;
    if m.status == 200 {
        let names: Vec<String> = m.json()["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.contains(&"limit".to_owned()), "{names:?}");
    }
}

/// HotReload: changing a middleware Component rebuilds the pipeline of the
/// running sidecar.
#[tokio::test]
async fn pipeline_is_rebuilt_when_its_components_change() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    write_resource(
        &res,
        "state.yaml",
        &component_yaml("statestore", "state.in-memory", &[]),
    );
    let alias = |target: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: alias\nspec:\n  type: middleware.http.routeralias\n  version: v1\n  metadata:\n  - name: routes\n    value: '{{\"/latest\": \"/v1.0/state/statestore/{target}\"}}'\n"
        )
    };
    write_resource(&res, "mw.yaml", &alias("a"));
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n  httpPipeline:\n    handlers:\n    - name: alias\n      type: middleware.http.routeralias\n",
    )
    .unwrap();
    let d = DaprdBuilder::new("mwreload")
        .resources(&res)
        .arg("--config")
        .arg(config.display().to_string())
        .start()
        .await;
    let r = http(
        "POST",
        &d.url("/v1.0/state/statestore"),
        r#"[{"key":"a","value":"first"},{"key":"b","value":"second"}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(http("GET", &d.url("/latest"), "").await.text(), "\"first\"");

    write_resource(&res, "mw.yaml", &alias("b"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = http("GET", &d.url("/latest"), "").await.text();
        if body == "\"second\"" {
            break;
        }
        assert_eq!(body, "\"first\"");
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline not rebuilt:\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
