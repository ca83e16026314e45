//! Property test of HTTP request decoding: whatever arrives, the router
//! answers (never panics) and every error uses Dapr's JSON shape.

use std::{path::PathBuf, sync::Arc};

use axum::body::Body;
use clap::Parser;
use dapr_components::{ComponentMetadata, nameresolution::sqlite::SqliteResolver};
use daprd::{
    components::{ComponentLoader, Registry},
    invoke::Invoker,
    options::Options,
    resources::Sourced,
    sidecar::Sidecar,
};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

fn sidecar(rt: &tokio::runtime::Runtime) -> Arc<Sidecar> {
    let opts = Options::parse_from(["daprd", "--app-id", "props", "--max-body-size", "64Ki"]);
    let dir = tempfile::tempdir().unwrap();
    let md = ComponentMetadata::new("nr", "props").with(
        "connectionString",
        dir.path().join("nr.db").to_string_lossy(),
    );
    let resolver = Arc::new(SqliteResolver::open(&md).unwrap());
    // The resolver keeps its file open; the directory may go.
    drop(dir);
    let invoker = Arc::new(Invoker::new(
        "props".into(),
        String::new(),
        None,
        resolver,
        1 << 20,
    ));
    let sidecar = Sidecar::new(
        &opts,
        Arc::new(Registry::default()),
        invoker,
        None,
        Vec::new(),
    );
    let loader = ComponentLoader {
        app_id: "props".into(),
        namespace: String::new(),
        registry: sidecar.registry.clone(),
    };
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata: []\n";
    let comp = match dapr_crds::parse_documents(yaml).unwrap().remove(0) {
        dapr_crds::Resource::Component(c) => *c,
        other => panic!("{other:?}"),
    };
    rt.block_on(loader.load_all(&[Sourced {
        file: PathBuf::from("mem.yaml"),
        resource: comp,
    }]))
    .unwrap();
    sidecar.set_ready();
    sidecar
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::hash_map("(key|value|etag|metadata|options|keys|operations|operation|request|concurrency|ttlInSeconds|[a-z|]{0,6})", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
        Just(b"[{\"key\":\"k\",\"value\":1}]".to_vec()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let seg = "([a-z]{1,5}|statestore|bulk|transaction|%FF|%00|\\|\\||[^/?#]{0,6})";
    (0usize..7, seg, seg).prop_map(|(i, a, b)| match i {
        0 => format!("/v1.0/state/{a}"),
        1 => format!("/v1.0/state/{a}/{b}"),
        2 => "/v1.0/state/statestore/bulk".to_owned(),
        3 => "/v1.0/state/statestore/transaction".to_owned(),
        4 => "/v1.0-alpha1/state/statestore/query".to_owned(),
        5 => format!("/v1.0/state/statestore/{b}?metadata.ttlInSeconds={a}&consistency={a}"),
        _ => format!("/v1.0/metadata/{a}"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_well_formed_answer(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        path in path(),
        body in body(),
    ) {
        thread_local! {
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            static SIDECAR: std::cell::OnceCell<Arc<Sidecar>> = const { std::cell::OnceCell::new() };
        }
        let Ok(req) = http::Request::builder().method(method).uri(&path).body(Body::from(body.clone())) else {
            // Not a valid URI: hyper would refuse it before the router.
            return Ok(());
        };
        let (status, bytes) = RT.with(|rt| {
            let sc = SIDECAR.with(|s| s.get_or_init(|| sidecar(rt)).clone());
            rt.block_on(async {
                let resp = daprd::api::http::router(sc).oneshot(req).await.unwrap();
                let status = resp.status();
                (status, resp.into_body().collect().await.unwrap().to_bytes())
            })
        });
        prop_assert!(status.as_u16() != 500 || !bytes.is_empty());
        if status.is_client_error() && status.as_u16() != 405 || status.is_server_error() {
            let j: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("{method} {path} -> {status}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes))))?;
            prop_assert!(j["errorCode"].as_str().is_some_and(|c| c.starts_with("ERR_")), "{} {} -> {}: {}", method, path, status, j);
            prop_assert!(j["message"].is_string());
        }
    }
}
