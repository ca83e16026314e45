//! A minimal HTTP/1 client (hyper) for calling the sidecar and for in-pod probes.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid request to {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("request to {url} failed: {source}")]
    Send {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the response of {url}: {source}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no answer from {url} within {ms} ms")]
    Timeout { url: String, ms: u128 },
}

pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// One request; `timeout` covers connect, headers and body.
pub async fn request(
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Bytes,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        builder = builder.header(hyper::header::CONTENT_TYPE, ct);
    }
    let req = builder
        .body(Full::new(body))
        .map_err(|source| ClientError::Request {
            url: url.to_string(),
            source,
        })?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|source| ClientError::Send {
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Body {
                url: url.to_string(),
                source,
            })?
            .to_bytes();
        Ok(Response {
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ClientError::Timeout {
            url: url.to_string(),
            ms: timeout.as_millis(),
        })?
}

/// `e2e-app get URL [TIMEOUT_MS]`.
pub async fn get_command(url: &str, timeout: Duration) -> ExitCode {
    match request(Method::GET, url, None, Bytes::new(), timeout).await {
        Ok(resp) => {
            println!("{}", String::from_utf8_lossy(&resp.body));
            if resp.status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("e2e-app: {url} answered {}", resp.status);
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("e2e-app: {e}");
            ExitCode::from(2)
        }
    }
}

/// `e2e-app resolve NAME`: the system resolver (the pod's resolv.conf), port ignored.
pub async fn resolve_command(name: &str) -> ExitCode {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                eprintln!("e2e-app: {name} has no addresses");
                return ExitCode::from(2);
            }
            for ip in ips {
                println!("{ip}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("e2e-app: resolving {name}: {e}");
            ExitCode::from(2)
        }
    }
}
