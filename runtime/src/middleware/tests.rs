//! Pipelines end to end: YAML resources in, an axum router behind the
//! pipeline, requests through `tower::ServiceExt::oneshot`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::StatusCode,
    response::Response,
    routing::{any, get},
};
use dapr_crds::{Component, Configuration, Resource};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tower::ServiceExt;

use super::{bearer::tests as jwt, *};

/// Parses a Configuration and Components from multi-document YAML.
fn resources(yaml: &str) -> (ConfigurationSpec, Vec<Component>) {
    let mut spec = ConfigurationSpec::default();
    let mut components = Vec::new();
    for r in dapr_crds::parse_documents(yaml).unwrap() {
        match r {
            Resource::Configuration(c) => spec = c.spec,
            Resource::Component(c) => components.push(*c),
            Resource::HttpEndpoint(_) | Resource::Other { .. } => {}
        }
    }
    (spec, components)
}

fn pipeline(yaml: &str) -> Result<Pipeline, MiddlewareError> {
    let (spec, components) = resources(yaml);
    build_pipeline(&spec, PipelineKind::Http, &components)
}

/// Answers every request with its method and URI.
fn echo_router() -> Router {
    Router::new()
        .route(
            "/v1.0/invoke/{app}/method/{*method}",
            any(|req: Request| async move { format!("invoke {}", req.uri()) }),
        )
        .route("/v1.0/healthz", get(|| async { "healthy" }))
        .fallback(|req: Request| async move {
            (StatusCode::NOT_FOUND, format!("fallback {}", req.uri()))
        })
}

fn request(uri: &str) -> axum::http::request::Builder {
    Request::builder().uri(uri)
}

async fn send(
    router: &Router,
    req: axum::http::request::Builder,
) -> (StatusCode, Response, String) {
    let mut req = req.body(Body::empty()).unwrap();
    if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000))));
    }
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        status,
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header<'r>(resp: &'r Response, name: &str) -> &'r str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

const CONFIG_HEADER: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: cfg\nspec:\n  httpPipeline:\n    handlers:\n";

fn ratelimit_yaml(name: &str, rps: &str) -> String {
    format!(
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: middleware.http.ratelimit\n  version: v1\n  metadata:\n  - name: maxRequestsPerSecond\n    value: {rps}\n"
    )
}

fn routeralias_yaml(name: &str, routes: &str) -> String {
    format!(
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: middleware.http.routeralias\n  version: v1\n  metadata:\n  - name: routes\n    value: '{routes}'\n"
    )
}

fn bearer_yaml(name: &str, jwks_url: &str) -> String {
    let c = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "middleware.http.bearer",
            "version": "v1",
            "metadata": [
                {"name": "issuer", "value": jwt::ISSUER},
                {"name": "audience", "value": jwt::AUDIENCE},
                {"name": "jwksURL", "value": jwks_url},
            ],
        },
    });
    // JSON is YAML.
    format!("---\n{c}\n")
}

fn handler(name: &str, type_: &str) -> String {
    format!("    - name: {name}\n      type: {type_}\n")
}

#[tokio::test]
async fn ratelimit_lets_n_per_second_through_then_429s() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("limit", RATELIMIT),
        ratelimit_yaml("limit", "3")
    );
    let router = pipeline(&yaml).unwrap().layer(echo_router());
    for i in 0..3 {
        let (status, resp, _) = send(&router, request("/v1.0/healthz")).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(header(&resp, "x-rate-limit-limit"), "3.00");
        assert_eq!(header(&resp, "ratelimit-limit"), "3");
        assert_eq!(header(&resp, "ratelimit-remaining"), (2 - i).to_string());
        assert_eq!(
            header(&resp, "x-rate-limit-request-remote-addr"),
            "127.0.0.1:50000"
        );
    }
    let (status, resp, body) = send(&router, request("/v1.0/healthz")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body, "You have reached maximum request limit.");
    assert_eq!(header(&resp, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&resp, "ratelimit-remaining"), "0");
    assert_eq!(header(&resp, "x-rate-limit-duration"), "1");

    // Buckets are per client IP and path.
    let (status, ..) = send(&router, request("/v1.0/invoke/a/method/x")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp, _) = send(
        &router,
        request("/v1.0/healthz").header("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&resp, "x-rate-limit-request-forwarded-for"),
        "198.51.100.1, 203.0.113.9"
    );
    let mut other = request("/v1.0/healthz").body(Body::empty()).unwrap();
    other
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 1))));
    assert_eq!(
        router.clone().oneshot(other).await.unwrap().status(),
        StatusCode::OK
    );

    // A second later the bucket has refilled.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, ..) = send(&router, request("/v1.0/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Served as daprd serves its API: the peer address reaches the limiter
/// through `into_make_service_with_connect_info`.
#[tokio::test]
async fn ratelimit_sees_the_peer_address_over_tcp() {
    use axum::serve::ListenerExt;
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("limit", RATELIMIT),
        ratelimit_yaml("limit", "1")
    );
    let router = pipeline(&yaml).unwrap().layer(echo_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let uri: axum::http::Uri = format!("http://{addr}/v1.0/healthz").parse().unwrap();
    let first = client.get(uri.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let remote = first
        .headers()
        .get("x-rate-limit-request-remote-addr")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    assert_eq!(
        client.get(uri).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn one_component_listed_twice_shares_its_bucket() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}{}",
        handler("limit", RATELIMIT),
        handler("limit", RATELIMIT),
        ratelimit_yaml("limit", "4")
    );
    let p = pipeline(&yaml).unwrap();
    assert_eq!(p.handler_names().collect::<Vec<_>>(), ["limit", "limit"]);
    let router = p.layer(echo_router());
    // Each request takes two tokens.
    for _ in 0..2 {
        assert_eq!(send(&router, request("/x")).await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        send(&router, request("/x")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn bearer_checks(router: &Router, keys: &jwt::Keys) {
    let ok = jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &jwt::claims());
    let auth = |t: &str| request("/v1.0/healthz").header("authorization", format!("Bearer {t}"));
    let (status, _, body) = send(router, auth(&ok)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "healthy"));
    let rs = jwt::token(Algorithm::RS256, Some("rsa-1"), &keys.rsa, &jwt::claims());
    assert_eq!(send(router, auth(&rs)).await.0, StatusCode::OK);

    let (status, resp, body) = send(router, request("/v1.0/healthz")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "missing header");
    assert_eq!(body, "Unauthorized");
    assert_eq!(header(&resp, "content-type"), "text/plain; charset=utf-8");

    let mut expired = jwt::claims();
    expired["exp"] = json!(jwt::now() - 3600);
    let mut wrong_aud = jwt::claims();
    wrong_aud["aud"] = json!("other-app");
    let mut wrong_iss = jwt::claims();
    wrong_iss["iss"] = json!("https://other.example");
    for (what, tok) in [
        (
            "expired",
            jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &expired),
        ),
        (
            "wrong audience",
            jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &wrong_aud),
        ),
        (
            "wrong issuer",
            jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &wrong_iss),
        ),
        (
            "bad signature",
            jwt::token(
                Algorithm::ES256,
                Some("ec-1"),
                &keys.other_ec,
                &jwt::claims(),
            ),
        ),
        ("garbage", "abcdefghijklmnop".to_owned()),
    ] {
        assert_eq!(
            send(router, auth(&tok)).await.0,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    let basic = request("/v1.0/healthz").header("authorization", format!("Basic {ok}"));
    assert_eq!(send(router, basic).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bearer_with_inline_jwks() {
    let keys = jwt::keys();
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("auth", BEARER),
        bearer_yaml("auth", &keys.jwks)
    );
    let p = pipeline(&yaml).unwrap();
    p.prefetch().await.unwrap();
    bearer_checks(&p.layer(echo_router()), &keys).await;
}

#[tokio::test]
async fn bearer_with_jwks_file() {
    let keys = jwt::keys();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, &keys.jwks).unwrap();
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("auth", BEARER),
        bearer_yaml("auth", &format!("file://{}", path.display()))
    );
    bearer_checks(&pipeline(&yaml).unwrap().layer(echo_router()), &keys).await;
}

/// Serves the JWKS (and an OpenID configuration) on loopback, counting hits.
async fn jwks_server(jwks: String, status: StatusCode) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let oidc = json!({"issuer": base, "jwks_uri": format!("{base}/keys")}).to_string();
    let app = Router::new()
        .route(
            "/keys",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { (status, [("cache-control", "max-age=60")], jwks) }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { oidc }),
        )
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::temporary("/keys") }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, hits)
}

#[tokio::test]
async fn bearer_fetches_and_caches_http_jwks() {
    let keys = jwt::keys();
    let (base, hits) = jwks_server(keys.jwks.clone(), StatusCode::OK).await;
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("auth", BEARER),
        bearer_yaml("auth", &format!("{base}/moved"))
    );
    let p = pipeline(&yaml).unwrap();
    // Loaded lazily by the first request, then cached.
    let router = p.layer(echo_router());
    bearer_checks(&router, &keys).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    p.prefetch().await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bearer_discovers_jwks_from_the_issuer() {
    let keys = jwt::keys();
    let (base, hits) = jwks_server(keys.jwks.clone(), StatusCode::OK).await;
    let c = json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "auth"},
        "spec": {"type": "middleware.http.bearer", "metadata": [
            {"name": "issuerURL", "value": base},
            {"name": "clientID", "value": jwt::AUDIENCE},
        ]},
    });
    let yaml = format!("{CONFIG_HEADER}{}---\n{c}\n", handler("auth", BEARER));
    let p = pipeline(&yaml).unwrap();
    p.prefetch().await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let mut claims = jwt::claims();
    claims["iss"] = json!(base);
    let tok = jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &claims);
    let router = p.layer(echo_router());
    let req = request("/v1.0/healthz").header("authorization", format!("Bearer {tok}"));
    assert_eq!(send(&router, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bearer_jwks_unavailable_is_an_init_error_or_500() {
    let (base, _) = jwks_server("{}".into(), StatusCode::NOT_FOUND).await;
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("auth", BEARER),
        bearer_yaml("auth", &format!("{base}/keys"))
    );
    let p = pipeline(&yaml).unwrap();
    let err = p.prefetch().await.unwrap_err();
    assert!(
        matches!(&err, MiddlewareError::Init { component, .. } if component == "auth"),
        "{err}"
    );
    assert!(err.to_string().contains("404"), "{err}");
    let keys = jwt::keys();
    let tok = jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &jwt::claims());
    let req = request("/v1.0/healthz").header("authorization", format!("Bearer {tok}"));
    let (status, _, body) = send(&p.layer(echo_router()), req).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "Internal Server Error");
}

#[tokio::test]
async fn routeralias_rewrites_before_routing_and_keeps_the_query() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("alias", ROUTERALIAS),
        routeralias_yaml(
            "alias",
            r#"{"/hello": "/v1.0/invoke/app/method/hi", "/users/{id}": "/v1.0/invoke/users/method/get"}"#
        )
    );
    let router = pipeline(&yaml).unwrap().layer(echo_router());
    let (status, _, body) = send(&router, request("/hello?a=1&b=x%20y")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "invoke /v1.0/invoke/app/method/hi?a=1&b=x%20y");
    let (_, _, body) = send(&router, request("/users/42?z=9")).await;
    assert_eq!(body, "invoke /v1.0/invoke/users/method/get?id=42&z=9");
    let (status, _, body) = send(&router, request("/other?q=1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "fallback /other?q=1");
}

#[tokio::test]
async fn handlers_run_in_order() {
    let components = format!(
        "{}{}",
        routeralias_yaml("a-to-b", r#"{"/a": "/b"}"#),
        routeralias_yaml("b-to-c", r#"{"/b": "/c"}"#)
    );
    let ab = format!(
        "{CONFIG_HEADER}{}{}{components}",
        handler("a-to-b", ROUTERALIAS),
        handler("b-to-c", ROUTERALIAS)
    );
    let ba = format!(
        "{CONFIG_HEADER}{}{}{components}",
        handler("b-to-c", ROUTERALIAS),
        handler("a-to-b", ROUTERALIAS)
    );
    let (_, _, body) = send(&pipeline(&ab).unwrap().layer(echo_router()), request("/a")).await;
    assert_eq!(body, "fallback /c");
    let (_, _, body) = send(&pipeline(&ba).unwrap().layer(echo_router()), request("/a")).await;
    assert_eq!(body, "fallback /b");
}

#[tokio::test]
async fn ratelimit_before_bearer_counts_rejected_requests() {
    let keys = jwt::keys();
    let components = format!(
        "{}{}",
        ratelimit_yaml("limit", "1"),
        bearer_yaml("auth", &keys.jwks)
    );
    let limit_first = format!(
        "{CONFIG_HEADER}{}{}{components}",
        handler("limit", RATELIMIT),
        handler("auth", BEARER)
    );
    let auth_first = format!(
        "{CONFIG_HEADER}{}{}{components}",
        handler("auth", BEARER),
        handler("limit", RATELIMIT)
    );
    let tok = jwt::token(Algorithm::ES256, Some("ec-1"), &keys.ec, &jwt::claims());
    let good = || request("/v1.0/healthz").header("authorization", format!("Bearer {tok}"));

    let router = pipeline(&limit_first).unwrap().layer(echo_router());
    let (status, resp, _) = send(&router, request("/v1.0/healthz")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Headers of handlers that ran before the rejection stay on it.
    assert_eq!(header(&resp, "ratelimit-limit"), "1");
    assert_eq!(send(&router, good()).await.0, StatusCode::TOO_MANY_REQUESTS);

    let router = pipeline(&auth_first).unwrap().layer(echo_router());
    let (status, resp, _) = send(&router, request("/v1.0/healthz")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&resp, "ratelimit-limit"), "");
    assert_eq!(send(&router, good()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn selectors_match_request_headers() {
    let yaml = format!(
        "{CONFIG_HEADER}    - name: limit\n      type: {RATELIMIT}\n      selector:\n        fields:\n        - field: x-tenant\n          value: free\n{}",
        ratelimit_yaml("limit", "1")
    );
    let router = pipeline(&yaml).unwrap().layer(echo_router());
    for _ in 0..3 {
        assert_eq!(
            send(&router, request("/v1.0/healthz")).await.0,
            StatusCode::OK
        );
    }
    let free = || request("/v1.0/healthz").header("x-tenant", "free");
    assert_eq!(send(&router, free()).await.0, StatusCode::OK);
    assert_eq!(send(&router, free()).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn unknown_types_are_errors_naming_handler_and_type() {
    let yaml = format!(
        "{CONFIG_HEADER}{}---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: upper\nspec:\n  type: middleware.http.uppercase\n  version: v1\n",
        handler("upper", "middleware.http.uppercase")
    );
    let err = pipeline(&yaml).unwrap_err();
    assert_eq!(
        err,
        MiddlewareError::UnknownType {
            pipeline: "httpPipeline",
            handler: "upper".into(),
            type_: "middleware.http.uppercase/v1".into(),
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("'upper'") && msg.contains("middleware.http.uppercase"),
        "{msg}"
    );

    // Unknown version of a known type, and no component at all.
    let v2 = format!("{CONFIG_HEADER}    - name: x\n      type: {RATELIMIT}\n      version: v2\n");
    assert!(matches!(
        pipeline(&v2),
        Err(MiddlewareError::UnknownType { .. })
    ));
    // ignoreErrors on the component skips it instead.
    let ignored = format!(
        "{CONFIG_HEADER}{}---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: upper\nspec:\n  type: middleware.http.uppercase\n  version: v1\n  ignoreErrors: true\n",
        handler("upper", "middleware.http.uppercase")
    );
    assert!(pipeline(&ignored).unwrap().is_empty());
}

#[test]
fn missing_or_mismatched_components_are_skipped() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}{}{}",
        handler("nowhere", RATELIMIT),
        handler("limit", BEARER),
        handler("limit", RATELIMIT),
        ratelimit_yaml("limit", "5")
    );
    let p = pipeline(&yaml).unwrap();
    assert_eq!(p.handler_names().collect::<Vec<_>>(), ["limit"]);
}

#[test]
fn bad_metadata_is_an_init_error_unless_ignored() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("limit", RATELIMIT),
        ratelimit_yaml("limit", "'0'")
    );
    let err = pipeline(&yaml).unwrap_err();
    assert!(
        matches!(&err, MiddlewareError::Init { component, type_, .. }
            if component == "limit" && type_ == RATELIMIT),
        "{err}"
    );
    let ignored = yaml.replace("  version: v1\n", "  version: v1\n  ignoreErrors: true\n");
    assert!(pipeline(&ignored).unwrap().is_empty());

    let bad_selector = format!(
        "{CONFIG_HEADER}    - name: limit\n      type: {RATELIMIT}\n      selector:\n        fields:\n        - field: 'bad header'\n          value: x\n{}",
        ratelimit_yaml("limit", "1")
    );
    assert!(matches!(
        pipeline(&bad_selector),
        Err(MiddlewareError::InvalidHandler { .. })
    ));
}

#[test]
fn configuration_fields_parse_and_round_trip() {
    let yaml = format!(
        "{CONFIG_HEADER}    - name: limit\n      type: {RATELIMIT}\n      selector:\n        fields:\n        - field: x-a\n          value: b\n  appHttpPipeline:\n    handlers:\n    - name: alias\n      type: {ROUTERALIAS}\n"
    );
    let (spec, _) = resources(&yaml);
    let http = spec.http_pipeline.as_ref().unwrap();
    assert_eq!(http.handlers[0].name, "limit");
    assert_eq!(http.handlers[0].type_, RATELIMIT);
    let sel = http.handlers[0].selector.as_ref().unwrap();
    assert_eq!(
        (sel.fields[0].field.as_str(), sel.fields[0].value.as_str()),
        ("x-a", "b")
    );
    assert_eq!(
        spec.app_http_pipeline.as_ref().unwrap().handlers[0].name,
        "alias"
    );
    assert!(!spec.extra.contains_key("httpPipeline"));
    let back = serde_json::to_value(&spec).unwrap();
    assert_eq!(back["httpPipeline"]["handlers"][0]["type"], RATELIMIT);
    let again: Configuration = serde_json::from_value(json!({"spec": back})).unwrap();
    assert_eq!(again.spec, spec);
    // No pipeline configured: an empty pipeline returns the router unchanged.
    let empty = build_pipeline(&ConfigurationSpec::default(), PipelineKind::Http, &[]).unwrap();
    assert!(empty.is_empty());
    // The app pipeline is built from its own field.
    let (spec, components) = resources(&format!(
        "{yaml}{}",
        routeralias_yaml("alias", r#"{"/a": "/b"}"#)
    ));
    let app = build_pipeline(&spec, PipelineKind::AppHttp, &components).unwrap();
    assert_eq!(app.handler_names().collect::<Vec<_>>(), ["alias"]);
}

#[tokio::test]
async fn pipeline_is_a_tower_layer() {
    let yaml = format!(
        "{CONFIG_HEADER}{}{}",
        handler("alias", ROUTERALIAS),
        routeralias_yaml("alias", r#"{"/a": "/b"}"#)
    );
    let p = pipeline(&yaml).unwrap();
    let svc = tower::Layer::layer(
        &p,
        tower::service_fn(|req: Request| async move {
            Ok::<_, std::convert::Infallible>(Response::new(Body::from(req.uri().to_string())))
        }),
    );
    let resp = svc
        .oneshot(request("/a?x=1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/b?x=1");
}
