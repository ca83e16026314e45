//! Invocation of non-Dapr services: `HTTPEndpoint` resources (baseUrl,
//! headers with secretKeyRef, client TLS with a private root CA and a client
//! certificate), a full URL as the app id, resiliency by endpoint name and
//! hot reload — against real HTTP and HTTPS servers on 127.0.0.1.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::any,
};
use common::*;
use http_body_util::BodyExt;

/// Echoes method, path, query, headers and body as JSON; `/flaky` fails
/// with 503 until it has been called three times; `x-client-cert` says
/// whether the TLS client presented a certificate.
fn echo_router(calls: Arc<AtomicUsize>) -> Router {
    async fn echo(client_cert: Option<Extension<bool>>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
            .collect();
        axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "clientCert": client_cert.map(|Extension(c)| c),
        }))
        .into_response()
    }
    Router::new()
        .route(
            "/flaky",
            any(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response()
                    } else {
                        "recovered".into_response()
                    }
                }
            }),
        )
        .fallback(echo)
}

async fn start_http(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test root");
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client.test".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// An HTTPS server that accepts (but does not require) client certificates
/// signed by the CA, and tells the handler whether one was presented.
async fn start_https(pki: &Pki, router: Router) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .allow_unauthenticated()
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let has_cert = tls.get_ref().1.peer_certificates().is_some();
                let svc = hyper_util::service::TowerToHyperService::new(
                    router.layer(Extension(has_cert)),
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

fn endpoint_yaml(name: &str, base_url: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: {name}\nspec:\n  baseUrl: {base_url}\n{extra_spec}"
    )
}

fn indent(pem: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    pem.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

#[tokio::test]
async fn http_endpoint_by_name_with_headers_from_secrets_and_by_url() {
    let addr = start_http(echo_router(Arc::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(&secrets, r#"{"apikey": "s3cr3t"}"#).unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    write_resource(
        &res,
        "secrets.yaml",
        &component_yaml(
            "localsecrets",
            "secretstores.local.file",
            &[("secretsFile", &secrets.to_string_lossy())],
        ),
    );
    write_resource(
        &res,
        "ext.yaml",
        &format!(
            "{}auth:\n  secretStore: localsecrets\n",
            endpoint_yaml(
                "ext",
                &format!("http://{addr}/api"),
                "  headers:\n  - name: x-static\n    value: v1\n  - name: x-api-key\n    secretKeyRef:\n      name: apikey\n      key: apikey\n",
            )
        ),
    );
    let d = DaprdBuilder::new("caller").resources(&res).start().await;

    let r = request(
        "PUT",
        &d.url("/v1.0/invoke/ext/method/orders/1?expand=all"),
        Some(b"payload".to_vec()),
        &[("x-caller", "yes"), ("content-type", "text/plain")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["path"], "/api/orders/1");
    assert_eq!(j["query"], "expand=all");
    assert_eq!(j["body"], "payload");
    assert_eq!(j["headers"]["x-static"], "v1");
    assert_eq!(j["headers"]["x-api-key"], "s3cr3t");
    assert_eq!(j["headers"]["x-caller"], "yes");
    assert_eq!(j["headers"]["content-type"], "text/plain");
    assert_eq!(j["headers"]["host"], addr.to_string());

    // The dapr-app-id header form reaches the endpoint too.
    let r = request("GET", &d.url("/hello"), None, &[("dapr-app-id", "ext")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/api/hello");

    // A URL-encoded URL as the app id: no HTTPEndpoint needed.
    let encoded = format!("http%3A%2F%2F{}%3A{}", addr.ip(), addr.port());
    let r = http(
        "POST",
        &d.url(&format!("/v1.0/invoke/{encoded}/method/direct/call")),
        "x",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/direct/call");
    assert!(r.json()["headers"].get("x-static").is_none());

    // An unreachable URL: Dapr's error, naming the target and the cause.
    let dead = free_port();
    let r = http(
        "GET",
        &d.url(&format!(
            "/v1.0/invoke/http%3A%2F%2F127.0.0.1%3A{dead}/method/x"
        )),
        "",
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(&format!("127.0.0.1:{dead}")), "{msg}");
}

#[tokio::test]
async fn https_endpoint_with_private_root_ca_and_client_certificate() {
    let pki = pki();
    let addr = start_https(&pki, echo_router(Arc::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        serde_json::json!({"tls-crt": pki.client_cert, "tls-key": pki.client_key}).to_string(),
    )
    .unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    write_resource(
        &res,
        "secrets.yaml",
        &component_yaml(
            "localsecrets",
            "secretstores.local.file",
            &[("secretsFile", &secrets.to_string_lossy())],
        ),
    );
    let base = format!("https://127.0.0.1:{}", addr.port());
    write_resource(
        &res,
        "mtls.yaml",
        &format!(
            "{}auth:\n  secretStore: localsecrets\n",
            endpoint_yaml(
                "securemtls",
                &base,
                &format!(
                    "  clientTLS:\n    rootCA:\n      value: |\n{}    certificate:\n      secretKeyRef:\n        name: tls-crt\n        key: tls-crt\n    privateKey:\n      secretKeyRef:\n        name: tls-key\n        key: tls-key\n",
                    indent(&pki.ca_pem, 8)
                ),
            )
        ),
    );
    write_resource(
        &res,
        "tls.yaml",
        &endpoint_yaml(
            "secure",
            &base,
            &format!(
                "  clientTLS:\n    rootCA:\n      value: |\n{}",
                indent(&pki.ca_pem, 8)
            ),
        ),
    );
    // Same server, system roots only: its certificate must be refused.
    write_resource(
        &res,
        "untrusted.yaml",
        &endpoint_yaml("untrusted", &base, ""),
    );
    let d = DaprdBuilder::new("caller").resources(&res).start().await;

    let r = http("GET", &d.url("/v1.0/invoke/securemtls/method/who"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/who");
    assert_eq!(r.json()["clientCert"], true);

    let r = http("GET", &d.url("/v1.0/invoke/secure/method/who"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["clientCert"], false);

    let r = http("GET", &d.url("/v1.0/invoke/untrusted/method/who"), "").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("untrusted") && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
}

#[tokio::test]
async fn invalid_http_endpoint_stops_daprd_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "bad.yaml",
        &endpoint_yaml(
            "broken",
            "https://127.0.0.1:1",
            "  clientTLS:\n    rootCA:\n      value: not a certificate\n",
        ),
    );
    let mut d = DaprdBuilder::new("caller")
        .resources(dir.path())
        .no_wait()
        .start()
        .await;
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let logs = d.logs();
    assert!(
        logs.contains("broken") && logs.contains("rootCA") && logs.contains("bad.yaml"),
        "{logs}"
    );
}

#[tokio::test]
async fn resiliency_applies_to_endpoints_and_hot_reload_picks_them_up() {
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = start_http(echo_router(calls.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n",
    )
    .unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir(&res).unwrap();
    write_resource(
        &res,
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      three:\n        policy: constant\n        duration: 10ms\n        maxRetries: 3\n  targets:\n    apps:\n      ext:\n        retry: three\n",
    );
    let d = DaprdBuilder::new("caller")
        .resources(&res)
        .arg("--config")
        .arg(config.display().to_string())
        .start()
        .await;

    // Not defined yet: resolved as a Dapr app, which does not exist.
    let r = http("GET", &d.url("/v1.0/invoke/ext/method/flaky"), "").await;
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");

    // Added while daprd runs.
    write_resource(
        &res,
        "ext.yaml",
        &endpoint_yaml("ext", &format!("http://{addr}"), ""),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = http("GET", &d.url("/v1.0/invoke/ext/method/hello"), "").await;
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 200, "endpoint not picked up: {}", r.text());

    // The endpoint's retry policy (targets.apps.ext) absorbs two 503s.
    let r = http("GET", &d.url("/v1.0/invoke/ext/method/flaky"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "recovered");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Removed again: no longer an endpoint.
    std::fs::remove_file(res.join("ext.yaml")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http("GET", &d.url("/v1.0/invoke/ext/method/hello"), "").await;
        if r.status != 200 {
            assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "endpoint not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// gRPC `InvokeService` with an HTTPEndpoint's name (dots included, as
/// Kubernetes names allow) or a URL as the id.
async fn grpc_invoke(
    d: &Daprd,
    id: &str,
    method: &str,
    query: &str,
) -> Result<serde_json::Value, tonic::Status> {
    use dapr::dapr::proto::{common::v1 as common, runtime::v1 as pb};
    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    let resp = c
        .invoke_service(pb::InvokeServiceRequest {
            id: id.into(),
            message: Some(common::InvokeRequest {
                method: method.into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"from grpc".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Put as i32,
                    querystring: query.into(),
                }),
            }),
        })
        .await?
        .into_inner();
    assert_eq!(resp.content_type, "application/json");
    Ok(serde_json::from_slice(&resp.data.unwrap().value).unwrap())
}

#[tokio::test]
async fn grpc_invoke_service_reaches_http_endpoints_and_urls() {
    let addr = start_http(echo_router(Arc::default())).await;
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "ext.yaml",
        &endpoint_yaml(
            "billing.api",
            &format!("http://{addr}/api"),
            "  headers:\n  - name: x-static\n    value: v1\n",
        ),
    );
    let d = DaprdBuilder::new("caller")
        .resources(dir.path())
        .start()
        .await;

    // By HTTPEndpoint name: its baseUrl and headers, the call's verb, query and body.
    let j = grpc_invoke(&d, "billing.api", "orders/1", "expand=all")
        .await
        .unwrap();
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["path"], "/api/orders/1");
    assert_eq!(j["query"], "expand=all");
    assert_eq!(j["body"], "from grpc");
    assert_eq!(j["headers"]["x-static"], "v1");
    assert_eq!(j["headers"]["content-type"], "text/plain");

    // By URL: straight to it, without the endpoint's headers.
    let j = grpc_invoke(&d, &format!("http://{addr}"), "direct/call", "")
        .await
        .unwrap();
    assert_eq!(j["path"], "/direct/call");
    assert_eq!(j["body"], "from grpc");
    assert!(j["headers"].get("x-static").is_none());

    // An unreachable URL: an error naming it, not a name-resolution failure.
    let dead = free_port();
    let err = grpc_invoke(&d, &format!("http://127.0.0.1:{dead}"), "x", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&format!("127.0.0.1:{dead}")),
        "{}",
        err.message()
    );
}
