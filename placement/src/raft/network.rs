//! Raft RPCs between placement nodes: JSON over HTTP/1.1 on the Raft port.
//!
//! `POST /raft/append`, `/raft/vote`, `/raft/snapshot` carry openraft's
//! request types and answer `Result<response, RaftError>` as JSON.

use std::time::Duration;

use axum::{Json, Router, extract::State, routing::post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use openraft::{
    RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{NodeId, PeerNode, Raft, TypeConfig};

/// Failures of one Raft RPC on the wire.
#[derive(Debug, thiserror::Error)]
enum WireError {
    #[error("connect/send: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("read body: {0}")]
    Body(#[from] hyper::Error),
    #[error("codec: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Creates a client per peer; all share one HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Network {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(500)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Self { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerClient {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// RPC client to one peer.
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, WireError> {
        let body = serde_json::to_vec(req)?;
        let request = http::Request::post(format!("http://{}{path}", self.addr))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let fut = async {
            let resp = self.client.request(request).await?;
            if !resp.status().is_success() {
                return Err(WireError::Status(resp.status()));
            }
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&bytes)?)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(WireError::Timeout(timeout)))
    }

    fn map_err<E: std::error::Error>(&self, e: WireError) -> RPCError<NodeId, PeerNode, E> {
        match e {
            WireError::Send(_) => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let r: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = self
            .call("/raft/append", &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.map_err(e))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let r: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            self.call("/raft/snapshot", &rpc, option.hard_ttl())
                .await
                .map_err(|e| self.map_err(e))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let r: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self
            .call("/raft/vote", &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.map_err(e))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// The Raft RPC server routes.
pub fn router(raft: Raft) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .with_state(raft)
}

async fn append(
    State(raft): State<Raft>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.append_entries(req).await)
}

async fn vote(
    State(raft): State<Raft>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.vote(req).await)
}

async fn snapshot(
    State(raft): State<Raft>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(raft.install_snapshot(req).await)
}
