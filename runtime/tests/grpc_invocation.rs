//! gRPC apps: invocation through `AppCallback/OnInvoke` (`--app-protocol
//! grpc`) and transparent proxying of any gRPC service by `dapr-app-id`.

mod common;

use common::*;
use dapr::dapr::proto::{common::v1 as common_pb, runtime::v1 as pb};
use dapr_rs_proto::generated::dapr::proto::placement::v1::{
    self as placement,
    placement_client::PlacementClient,
    placement_server::{Placement, PlacementServer},
};
use dapr_rs_proto::server::app_callback_server::{AppCallback, AppCallbackServer};
use tonic::{Request, Response, Status};

struct EchoApp;

#[tonic::async_trait]
impl AppCallback for EchoApp {
    async fn on_invoke(
        &self,
        req: Request<common_pb::InvokeRequest>,
    ) -> Result<Response<common_pb::InvokeResponse>, Status> {
        let caller = req
            .metadata()
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let custom = req
            .metadata()
            .get("x-custom")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let req = req.into_inner();
        if req.method == "missing" {
            return Err(Status::not_found("no such thing"));
        }
        let data = req.data.map(|d| d.value).unwrap_or_default();
        let reply = format!(
            "method={} data={} caller={} custom={} query={}",
            req.method,
            String::from_utf8_lossy(&data),
            caller,
            custom,
            req.http_extension
                .map(|e| e.querystring)
                .unwrap_or_default()
        );
        Ok(Response::new(common_pb::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: reply.into_bytes(),
            }),
            content_type: "text/plain".into(),
        }))
    }
}

/// A streaming gRPC service daprd does not serve itself (so calls to it
/// are proxied): each `Host` is answered at once with an order
/// "echo <name> from <caller>"; a host named "burst" gets three orders.
struct StreamEcho;

#[tonic::async_trait]
impl Placement for StreamEcho {
    async fn report_dapr_status(
        &self,
        req: Request<tonic::Streaming<placement::Host>>,
    ) -> Result<
        Response<
            std::pin::Pin<
                Box<dyn futures::Stream<Item = Result<placement::PlacementOrder, Status>> + Send>,
            >,
        >,
        Status,
    > {
        let caller = req
            .metadata()
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(host)) = inbound.message().await {
                let ops: Vec<String> = if host.name == "burst" {
                    (0..3).map(|i| format!("burst {i}")).collect()
                } else {
                    vec![format!("echo {} from {caller}", host.name)]
                };
                for operation in ops {
                    let order = placement::PlacementOrder {
                        operation,
                        ..Default::default()
                    };
                    if tx.send(Ok(order)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn setup() -> (Daprd, Daprd, tempfile::TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(EchoApp))
            .add_service(PlacementServer::new(StreamEcho))
            .serve_with_incoming(incoming)
            .await;
    });
    let shared = tempfile::tempdir().unwrap();
    let config = shared.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: {}\n",
            shared.path().join("nr.db").display()
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let callee = DaprdBuilder::new("grpc-callee")
        .arg("--config")
        .arg(&cfg)
        .arg("--app-port")
        .arg(app_port.to_string())
        .arg("--app-protocol")
        .arg("grpc")
        .start()
        .await;
    let caller = DaprdBuilder::new("grpc-caller")
        .arg("--config")
        .arg(&cfg)
        .start()
        .await;
    (caller, callee, shared)
}

#[tokio::test]
async fn http_invocation_of_a_grpc_app_uses_on_invoke() {
    let (caller, _callee, _dir) = setup().await;
    let r = request(
        "POST",
        &caller.url("/v1.0/invoke/grpc-callee/method/hello?x=1"),
        Some(b"payload".to_vec()),
        &[("x-custom", "yes")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "method=hello data=payload caller=grpc-caller custom=yes query=x=1"
    );
    // A gRPC error from the app maps to the matching HTTP status.
    let r = http(
        "POST",
        &caller.url("/v1.0/invoke/grpc-callee/method/missing"),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn any_grpc_service_is_proxied_by_dapr_app_id() {
    let (caller, _callee, _dir) = setup().await;
    let mut client = pb::app_callback_client::AppCallbackClient::connect(caller.grpc_endpoint())
        .await
        .unwrap();
    let mut req = Request::new(common_pb::InvokeRequest {
        method: "proxied".into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: b"through the proxy".to_vec(),
        }),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-app-id", "grpc-callee".parse().unwrap());
    req.metadata_mut()
        .insert("x-custom", "kept".parse().unwrap());
    let resp = client.on_invoke(req).await.unwrap().into_inner();
    assert_eq!(
        String::from_utf8_lossy(&resp.data.unwrap().value),
        "method=proxied data=through the proxy caller=grpc-caller custom=kept query="
    );

    // Status codes travel back unchanged.
    let mut req = Request::new(common_pb::InvokeRequest {
        method: "missing".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-app-id", "grpc-callee".parse().unwrap());
    let err = client.on_invoke(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no such thing");

    // Without dapr-app-id an unknown service is Unimplemented.
    let err = client
        .on_invoke(Request::new(common_pb::InvokeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // Dapr's own API keeps working on the same port.
    let mut dapr = pb::dapr_client::DaprClient::connect(caller.grpc_endpoint())
        .await
        .unwrap();
    let md = dapr
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.id, "grpc-caller");
}

/// The next reply, which must come within 5 s while the call is open.
async fn next(replies: &mut tonic::Streaming<placement::PlacementOrder>) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(5), replies.message())
        .await
        .expect("reply within 5 s while the call is open")
        .unwrap()
        .map(|o| o.operation)
}

/// Bidirectional streaming through two sidecars by `dapr-app-id`: every
/// message is answered while the call is open (nothing is buffered until the
/// client finishes), a server-side burst arrives whole, and the stream ends
/// cleanly when the client closes its side.
#[tokio::test]
async fn bidirectional_streams_are_proxied_message_by_message() {
    let (caller, _callee, _dir) = setup().await;
    let mut client = PlacementClient::connect(caller.grpc_endpoint())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<placement::Host>(4);
    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("dapr-app-id", "grpc-callee".parse().unwrap());
    let send = |name: &str| {
        let tx = tx.clone();
        let host = placement::Host {
            name: name.to_owned(),
            ..Default::default()
        };
        async move { tx.send(host).await.unwrap() }
    };
    send("h0").await;
    let mut replies = client.report_dapr_status(req).await.unwrap().into_inner();
    assert_eq!(
        next(&mut replies).await.as_deref(),
        Some("echo h0 from grpc-caller")
    );
    for i in 1..5 {
        send(&format!("h{i}")).await;
        assert_eq!(
            next(&mut replies).await,
            Some(format!("echo h{i} from grpc-caller"))
        );
    }
    send("burst").await;
    for i in 0..3 {
        assert_eq!(next(&mut replies).await, Some(format!("burst {i}")));
    }
    drop(tx);
    assert_eq!(next(&mut replies).await, None);
}
