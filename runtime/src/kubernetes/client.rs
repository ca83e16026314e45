//! The sidecar's client of `dapr.proto.operator.v1.Operator`: one lazily
//! connecting channel (mTLS that accepts only the operator's SPIFFE id, or
//! plaintext when mTLS is off), bounded retries on unary calls, and typed
//! parsing of the JSON resources the operator sends.

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use dapr_crds::{Component, Configuration, HttpEndpoint};
use dapr_rs_proto::generated::dapr::proto::operator::v1::{self as pb, operator_client};
use dapr_security::{SpiffeId, identity::Identity};
use serde::de::DeserializeOwned;
use tonic::{Code, Status, transport::Channel};

use crate::resources::{Resources, Sourced};

/// Time one unary call may take before it is retried (Dapr's
/// `operatorCallTimeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The operator's workload name in its SPIFFE id.
pub const OPERATOR_SERVICE: &str = "dapr-operator";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("kubernetes mode requires --control-plane-address (the dapr-operator's host:port)")]
    NoAddress,
    #[error("invalid operator address '{address}': {reason}")]
    Address { address: String, reason: String },
    #[error(
        "operator at {address} unreachable: {call} failed after {attempts} attempts over {waited:?}: {cause}"
    )]
    Unreachable {
        address: String,
        call: &'static str,
        attempts: u32,
        waited: Duration,
        cause: String,
    },
    #[error("operator at {address}: {call} failed: {cause}")]
    Call {
        address: String,
        call: &'static str,
        cause: String,
    },
    #[error("configuration {name} not found in namespace {namespace} (operator at {address})")]
    ConfigurationNotFound {
        address: String,
        name: String,
        namespace: String,
    },
    #[error("operator at {address} sent an invalid {kind}: {reason}")]
    Payload {
        address: String,
        kind: &'static str,
        reason: String,
    },
}

/// A connection to the operator for one sidecar's namespace.
#[derive(Clone)]
pub struct OperatorClient {
    address: String,
    namespace: String,
    client: operator_client::OperatorClient<Channel>,
    /// How long unary calls keep retrying an unreachable operator.
    wait: Duration,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl OperatorClient {
    /// A client of the operator at `address` (`host:port`). With `mtls` the
    /// connection presents the sidecar's SVID and accepts only
    /// `spiffe://<control-plane-td>/ns/<control-plane-ns>/dapr-operator`.
    /// Nothing is sent until the first call.
    pub fn new(
        address: &str,
        namespace: &str,
        mtls: Option<(&Identity, &str, &str)>,
        wait: Duration,
    ) -> Result<Self, OperatorError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(OperatorError::NoAddress);
        }
        let bad = |reason: String| OperatorError::Address {
            address: address.to_owned(),
            reason,
        };
        let channel = match mtls {
            Some((identity, cp_trust_domain, cp_namespace)) => {
                let expected = SpiffeId::new(cp_trust_domain, cp_namespace, OPERATOR_SERVICE)
                    .map_err(|e| bad(format!("operator SPIFFE id: {e}")))?;
                identity
                    .channel(address, expected)
                    .map_err(|e| bad(e.to_string()))?
            }
            None => {
                let uri = if address.contains("://") {
                    address.to_owned()
                } else {
                    format!("http://{address}")
                };
                tonic::transport::Endpoint::from_shared(uri)
                    .map_err(|e| bad(e.to_string()))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy()
            }
        };
        Ok(Self {
            address: address.to_owned(),
            namespace: namespace.to_owned(),
            client: operator_client::OperatorClient::new(channel),
            wait,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The raw gRPC client, for the update streams.
    pub(crate) fn grpc(&self) -> operator_client::OperatorClient<Channel> {
        self.client.clone()
    }

    /// Runs one unary call, retrying while the operator is unreachable (or
    /// overloaded) until `wait` has passed. Other statuses fail at once.
    async fn call<T, F, Fut>(&self, call: &'static str, mut f: F) -> Result<T, OperatorError>
    where
        F: FnMut(operator_client::OperatorClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut delay = FIRST_DELAY;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let cause = match tokio::time::timeout(CALL_TIMEOUT, f(self.client.clone())).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) if !retryable(&status) => {
                    return Err(OperatorError::Call {
                        address: self.address.clone(),
                        call,
                        cause: describe(&status),
                    });
                }
                Ok(Err(status)) => describe(&status),
                Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
            };
            let waited = started.elapsed();
            if waited + delay > self.wait {
                return Err(OperatorError::Unreachable {
                    address: self.address.clone(),
                    call,
                    attempts,
                    waited,
                    cause,
                });
            }
            tracing::debug!(operator = %self.address, call, attempt = attempts, %cause, "operator not reachable yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// `GetConfiguration(name)` in this sidecar's namespace.
    pub async fn get_configuration(&self, name: &str) -> Result<Configuration, OperatorError> {
        let ns = self.namespace.clone();
        let req = |name: &str| pb::GetConfigurationRequest {
            name: name.to_owned(),
            namespace: ns.clone(),
        };
        let not_found = || OperatorError::ConfigurationNotFound {
            address: self.address.clone(),
            name: name.to_owned(),
            namespace: self.namespace.clone(),
        };
        let resp = self
            .call("GetConfiguration", |mut c| {
                let r = req(name);
                async move { c.get_configuration(r).await }
            })
            .await;
        let resp = match resp {
            Err(OperatorError::Call { cause, .. }) if cause.starts_with("NotFound") => {
                return Err(not_found());
            }
            other => other?,
        };
        if resp.configuration.is_empty() {
            return Err(not_found());
        }
        self.parse("Configuration", &resp.configuration)
    }

    /// `ListComponents`: every component of the namespace the operator lets
    /// this sidecar see (scopes are applied again by the component loader).
    pub async fn list_components(&self) -> Result<Vec<Sourced<Component>>, OperatorError> {
        let namespace = self.namespace.clone();
        let resp = self
            .call("ListComponents", |mut c| {
                let r = pb::ListComponentsRequest {
                    namespace: namespace.clone(),
                };
                async move { c.list_components(r).await }
            })
            .await?;
        resp.components.iter().map(|b| self.component(b)).collect()
    }

    /// Parses one component payload (list or update event).
    pub fn component(&self, bytes: &[u8]) -> Result<Sourced<Component>, OperatorError> {
        let resource: Component = self.parse("Component", bytes)?;
        Ok(Sourced {
            file: self.origin(),
            resource,
        })
    }

    /// Parses one HTTPEndpoint payload (list or update event).
    pub fn http_endpoint(&self, bytes: &[u8]) -> Result<Sourced<HttpEndpoint>, OperatorError> {
        let resource: HttpEndpoint = self.parse("HTTPEndpoint", bytes)?;
        Ok(Sourced {
            file: self.origin(),
            resource,
        })
    }

    /// `ListHTTPEndpoints`.
    pub async fn list_http_endpoints(&self) -> Result<Vec<Sourced<HttpEndpoint>>, OperatorError> {
        let namespace = self.namespace.clone();
        let resp = self
            .call("ListHTTPEndpoints", |mut c| {
                let r = pb::ListHttpEndpointsRequest {
                    namespace: namespace.clone(),
                };
                async move { c.list_http_endpoints(r).await }
            })
            .await?;
        resp.http_endpoints
            .iter()
            .map(|b| self.http_endpoint(b))
            .collect()
    }

    /// `ListResiliency`, each checked with the shared Resiliency type and
    /// kept as a document for the policy registry.
    pub async fn list_resiliency(
        &self,
    ) -> Result<Vec<Sourced<(String, serde_json::Value)>>, OperatorError> {
        let namespace = self.namespace.clone();
        let resp = self
            .call("ListResiliency", |mut c| {
                let r = pb::ListResiliencyRequest {
                    namespace: namespace.clone(),
                };
                async move { c.list_resiliency(r).await }
            })
            .await?;
        resp.resiliencies
            .iter()
            .map(|b| self.resiliency(b))
            .collect()
    }

    /// Parses one Resiliency payload (list or update event), checked with
    /// the shared type and kept as a document for the policy registry.
    pub fn resiliency(
        &self,
        bytes: &[u8],
    ) -> Result<Sourced<(String, serde_json::Value)>, OperatorError> {
        let doc: serde_json::Value = self.parse("Resiliency", bytes)?;
        dapr_crds::Resiliency::from_document(&doc)
            .map_err(|e| self.invalid("Resiliency", e.to_string()))?;
        Ok(self.other(dapr_crds::RESILIENCY_KIND, doc))
    }

    /// `ListSubscriptionsV2`, each checked with the shared Subscription
    /// types and kept as a document for the pub/sub block.
    pub async fn list_subscriptions(
        &self,
    ) -> Result<Vec<Sourced<(String, serde_json::Value)>>, OperatorError> {
        let namespace = self.namespace.clone();
        let resp = self
            .call("ListSubscriptionsV2", |mut c| {
                let r = pb::ListSubscriptionsRequest {
                    namespace: namespace.clone(),
                };
                async move { c.list_subscriptions_v2(r).await }
            })
            .await?;
        resp.subscriptions
            .iter()
            .map(|b| self.subscription(b))
            .collect()
    }

    /// Parses one Subscription payload (list or update event), checked with
    /// the shared types and kept as a document for the pub/sub block.
    pub fn subscription(
        &self,
        bytes: &[u8],
    ) -> Result<Sourced<(String, serde_json::Value)>, OperatorError> {
        let doc: serde_json::Value = self.parse("Subscription", bytes)?;
        dapr_crds::subscription_from_document(&doc)
            .map_err(|e| self.invalid("Subscription", e.to_string()))?;
        Ok(self.other(dapr_crds::SUBSCRIPTION_KIND, doc))
    }

    /// Parses one Configuration payload (update event).
    pub fn configuration(&self, bytes: &[u8]) -> Result<Configuration, OperatorError> {
        self.parse("Configuration", bytes)
    }

    /// Everything daprd reads besides the Configuration, as the same
    /// [`Resources`] model the resources paths produce.
    pub async fn load_resources(&self) -> Result<Resources, OperatorError> {
        let components = self.list_components().await?;
        let mut others = self.list_resiliency().await?;
        others.extend(self.list_subscriptions().await?);
        let http_endpoints = self.list_http_endpoints().await?;
        Ok(Resources {
            components,
            configurations: Vec::new(),
            http_endpoints,
            others,
        })
    }

    /// What error messages name as a resource's origin.
    fn origin(&self) -> PathBuf {
        PathBuf::from(format!(
            "operator {} (namespace {})",
            self.address, self.namespace
        ))
    }

    fn other(&self, kind: &str, doc: serde_json::Value) -> Sourced<(String, serde_json::Value)> {
        Sourced {
            file: self.origin(),
            resource: (kind.to_owned(), doc),
        }
    }

    fn invalid(&self, kind: &'static str, reason: String) -> OperatorError {
        OperatorError::Payload {
            address: self.address.clone(),
            kind,
            reason,
        }
    }

    fn parse<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        bytes: &[u8],
    ) -> Result<T, OperatorError> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(kind, e.to_string()))
    }
}

/// Statuses worth retrying: the operator is down, restarting or busy.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Unknown
    )
}

/// `Code: message: cause chain`, so transport errors say what failed.
pub(crate) fn describe(status: &Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
