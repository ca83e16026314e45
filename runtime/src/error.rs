//! The one place where failures become Dapr error codes, HTTP statuses and
//! gRPC statuses, so the two APIs can never disagree.

use dapr_components::state::StateError;
use http::StatusCode;
use prost::Message;
use tonic::Code;

/// Every error an API call can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("state store is not configured")]
    StateStoresNotConfigured,
    #[error("state store {0} is not found")]
    StateStoreNotFound(String),
    #[error("input key/keyPrefix '{0}' can't contain '||'")]
    IllegalStateKey(String),
    #[error("state key must not be empty")]
    EmptyStateKey,
    #[error("failed getting state with key {key} from state store {store}: {source}")]
    StateGet {
        store: String,
        key: String,
        source: StateError,
    },
    #[error("failed saving state in state store {store}: {source}")]
    StateSave { store: String, source: StateError },
    #[error("failed deleting state with key {key} from state store {store}: {source}")]
    StateDelete {
        store: String,
        key: String,
        source: StateError,
    },
    #[error("failed getting state from state store {store}: {source}")]
    StateBulkGet { store: String, source: StateError },
    #[error("state store {0} doesn't support transactions")]
    StateNotTransactional(String),
    #[error("the transaction has {count} operations; state store {store} accepts at most {max}")]
    TooManyTransactionOps {
        store: String,
        count: usize,
        max: usize,
    },
    #[error("failed executing transaction in state store {store}: {source}")]
    StateTransaction { store: String, source: StateError },
    #[error("operation type {0} not supported")]
    UnsupportedStateOperation(String),
    #[error("state store {0} doesn't support querying")]
    StateQueryNotSupported(String),
    #[error("failed query in state store {store}: {source}")]
    StateQuery { store: String, source: StateError },
    /// Phase 1 of the transactional outbox failed (Dapr's `PubSubOutbox`).
    #[error("error while publishing outbox message: {reason}")]
    PubSubOutbox { app_id: String, reason: String },
    #[error("failed getting app id either from the URL path or the header dapr-app-id")]
    InvokeNoAppId,
    #[error("failed to invoke, id: {app_id}, err: {reason}")]
    DirectInvoke { app_id: String, reason: String },
    #[error("failed to invoke, id: {app_id}, err: {reason}")]
    DirectInvokeUnreachable { app_id: String, reason: String },
    #[error("failed to invoke, id: {app_id}, err: access denied: {reason}")]
    InvokeForbidden { app_id: String, reason: String },
    #[error("failed deserializing HTTP body: {0}")]
    MalformedRequest(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("failed to read request body: {0}")]
    BodyRead(String),
    #[error("request body is larger than the limit of {limit} bytes (--max-body-size)")]
    BodyTooLarge { limit: u64 },
    #[error("dapr is not ready")]
    HealthNotReady,
    #[error("dapr outbound is not ready")]
    OutboundHealthNotReady,
    #[error("dapr app-id does not match")]
    HealthAppIdMismatch,
    #[error("{0} is not implemented in this build of dapr-rs")]
    Unimplemented(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Dapr's `errorCode`.
    pub fn error_code(&self) -> &'static str {
        use ApiError::*;
        match self {
            StateStoresNotConfigured => "ERR_STATE_STORES_NOT_CONFIGURED",
            StateStoreNotFound(_) => "ERR_STATE_STORE_NOT_FOUND",
            IllegalStateKey(_) | EmptyStateKey => "ERR_MALFORMED_REQUEST",
            StateGet { .. } => "ERR_STATE_GET",
            StateSave { .. } => "ERR_STATE_SAVE",
            StateDelete { .. } => "ERR_STATE_DELETE",
            StateBulkGet { .. } => "ERR_STATE_BULK_GET",
            StateNotTransactional(_) | StateQueryNotSupported(_) => "ERR_STATE_STORE_NOT_SUPPORTED",
            TooManyTransactionOps { .. } => "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS",
            StateTransaction { .. } => "ERR_STATE_TRANSACTION",
            UnsupportedStateOperation(_) => "ERR_NOT_SUPPORTED_STATE_OPERATION",
            StateQuery { .. } => "ERR_STATE_QUERY",
            PubSubOutbox { .. } => "ERR_PUBLISH_OUTBOX",
            InvokeNoAppId
            | DirectInvoke { .. }
            | DirectInvokeUnreachable { .. }
            | InvokeForbidden { .. } => "ERR_DIRECT_INVOKE",
            MalformedRequest(_) => "ERR_MALFORMED_REQUEST",
            BadRequest(_) => "ERR_BAD_REQUEST",
            BodyRead(_) | BodyTooLarge { .. } => "ERR_BODY_READ",
            HealthNotReady => "ERR_HEALTH_NOT_READY",
            OutboundHealthNotReady => "ERR_OUTBOUND_HEALTH_NOT_READY",
            HealthAppIdMismatch => "ERR_HEALTH_APPID_NOT_MATCH",
            Unimplemented(_) => "ERR_API_UNIMPLEMENTED",
            Internal(_) => "ERR_INTERNAL",
        }
    }

    /// Reason of the `google.rpc.ErrorInfo` detail, for Dapr's rich errors.
    pub fn reason(&self) -> Option<&'static str> {
        use ApiError::*;
        Some(match self {
            StateStoresNotConfigured => "DAPR_STATE_NOT_CONFIGURED",
            StateStoreNotFound(_) => "DAPR_STATE_NOT_FOUND",
            IllegalStateKey(_) => "DAPR_STATE_ILLEGAL_KEY",
            StateNotTransactional(_) => "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            StateQueryNotSupported(_) => "DAPR_STATE_QUERYING_NOT_SUPPORTED",
            StateQuery { .. } => "DAPR_STATE_QUERY_FAILED",
            TooManyTransactionOps { .. } => "DAPR_STATE_TOO_MANY_TRANSACTIONS",
            PubSubOutbox { .. } => "DAPR_PUBSUB_OUTBOX",
            _ => return None,
        })
    }

    pub fn http_status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            StateStoreNotFound(_)
            | IllegalStateKey(_)
            | EmptyStateKey
            | TooManyTransactionOps { .. }
            | UnsupportedStateOperation(_)
            | MalformedRequest(_)
            | BadRequest(_)
            | BodyRead(_) => StatusCode::BAD_REQUEST,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeNoAppId => StatusCode::NOT_FOUND,
            InvokeForbidden { .. } => StatusCode::FORBIDDEN,
            DirectInvoke { .. } | DirectInvokeUnreachable { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            StateGet { source, .. }
            | StateSave { source, .. }
            | StateDelete { source, .. }
            | StateBulkGet { source, .. } => match source {
                StateError::EtagMismatch => StatusCode::CONFLICT,
                StateError::EtagInvalid(_) | StateError::InvalidRequest(_) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            StateStoresNotConfigured
            | StateNotTransactional(_)
            | StateTransaction { .. }
            | StateQueryNotSupported(_)
            | StateQuery { .. }
            | PubSubOutbox { .. }
            | HealthNotReady
            | OutboundHealthNotReady
            | HealthAppIdMismatch
            | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> Code {
        use ApiError::*;
        match self {
            StateStoreNotFound(_)
            | IllegalStateKey(_)
            | EmptyStateKey
            | TooManyTransactionOps { .. }
            | UnsupportedStateOperation(_)
            | MalformedRequest(_)
            | BadRequest(_)
            | BodyRead(_) => Code::InvalidArgument,
            BodyTooLarge { .. } => Code::ResourceExhausted,
            InvokeNoAppId => Code::InvalidArgument,
            InvokeForbidden { .. } => Code::PermissionDenied,
            DirectInvokeUnreachable { .. } => Code::Unavailable,
            DirectInvoke { .. } => Code::Internal,
            StateGet { source, .. }
            | StateSave { source, .. }
            | StateDelete { source, .. }
            | StateBulkGet { source, .. }
            | StateTransaction { source, .. } => match source {
                StateError::EtagMismatch => Code::Aborted,
                StateError::EtagInvalid(_) | StateError::InvalidRequest(_) => Code::InvalidArgument,
                _ => Code::Internal,
            },
            StateNotTransactional(_) | StateQueryNotSupported(_) => Code::Unimplemented,
            Unimplemented(_) => Code::Unimplemented,
            StateStoresNotConfigured => Code::FailedPrecondition,
            HealthNotReady | OutboundHealthNotReady | HealthAppIdMismatch => Code::Unavailable,
            StateQuery { .. } | PubSubOutbox { .. } | Internal(_) => Code::Internal,
        }
    }

    /// Extra `ErrorInfo` metadata (resource names), as Dapr's rich errors carry.
    fn info_metadata(&self) -> Vec<(String, String)> {
        use ApiError::*;
        match self {
            StateStoreNotFound(s) | StateNotTransactional(s) | StateQueryNotSupported(s) => {
                vec![("storeName".into(), s.clone())]
            }
            PubSubOutbox { app_id, reason } => vec![
                ("appID".into(), app_id.clone()),
                ("error".into(), reason.clone()),
            ],
            _ => Vec::new(),
        }
    }

    /// The HTTP JSON body: `{"errorCode":..,"message":..[,"details":[..]]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "errorCode": self.error_code(),
            "message": self.to_string(),
        });
        if let Some(reason) = self.reason() {
            let metadata: serde_json::Map<String, serde_json::Value> = self
                .info_metadata()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            body["details"] = serde_json::json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "dapr.io",
                "metadata": metadata,
            }]);
        }
        body
    }

    /// A gRPC status carrying a `google.rpc.ErrorInfo` detail.
    pub fn to_status(&self) -> tonic::Status {
        use dapr_rs_proto::{error_details::ErrorInfo, rpc};
        let info = ErrorInfo {
            reason: self.reason().unwrap_or(self.error_code()).to_owned(),
            domain: "dapr.io".to_owned(),
            metadata: self.info_metadata().into_iter().collect(),
        };
        let code = self.grpc_code();
        let message = self.to_string();
        let status = rpc::Status {
            code: code as i32,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, message, status.encode_to_vec().into())
    }
}

impl ApiError {
    /// The target could not be reached at all (what built-in retries cover).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::DirectInvokeUnreachable { .. })
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        // Every error response passes here (or the gRPC `From` below) once.
        dapr_observability::metrics::error_code(self.error_code());
        let status = self.http_status();
        if status.is_server_error() {
            tracing::warn!(code = self.error_code(), "{self}");
        } else {
            tracing::debug!(code = self.error_code(), "{self}");
        }
        (status, axum::Json(self.to_json())).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        dapr_observability::metrics::error_code(e.error_code());
        e.to_status()
    }
}

/// An error of a building block whose module already chose Dapr's code and
/// statuses (secrets, configuration, lock): rendered like [`ApiError`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MappedError {
    pub code: &'static str,
    pub http: StatusCode,
    pub grpc: Code,
    pub message: String,
}

impl MappedError {
    pub fn new(code: &'static str, http: StatusCode, grpc: Code, message: String) -> Self {
        Self {
            code,
            http,
            grpc,
            message,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "errorCode": self.code, "message": self.message })
    }

    pub fn to_status(&self) -> tonic::Status {
        use dapr_rs_proto::{error_details::ErrorInfo, rpc};
        let info = ErrorInfo {
            reason: self.code.to_owned(),
            domain: "dapr.io".to_owned(),
            metadata: Default::default(),
        };
        let status = rpc::Status {
            code: self.grpc as i32,
            message: self.message.clone(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(
            self.grpc,
            self.message.clone(),
            status.encode_to_vec().into(),
        )
    }
}

impl axum::response::IntoResponse for MappedError {
    fn into_response(self) -> axum::response::Response {
        dapr_observability::metrics::error_code(self.code);
        if self.http.is_server_error() {
            tracing::warn!(code = self.code, "{}", self.message);
        } else {
            tracing::debug!(code = self.code, "{}", self.message);
        }
        (self.http, axum::Json(self.to_json())).into_response()
    }
}

impl From<MappedError> for tonic::Status {
    fn from(e: MappedError) -> Self {
        dapr_observability::metrics::error_code(e.code);
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_errors_map_to_dapr_codes() {
        let e = ApiError::StateStoreNotFound("nope".into());
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        let j = e.to_json();
        assert_eq!(j["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
        assert_eq!(j["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
        let conflict = ApiError::StateSave {
            store: "s".into(),
            source: StateError::EtagMismatch,
        };
        assert_eq!(conflict.http_status(), StatusCode::CONFLICT);
        assert_eq!(conflict.grpc_code(), Code::Aborted);
        let invalid = ApiError::StateDelete {
            store: "s".into(),
            key: "k".into(),
            source: StateError::EtagInvalid("x".into()),
        };
        assert_eq!(invalid.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::Unimplemented("x".into()).http_status(),
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn grpc_status_carries_error_info() {
        let st = ApiError::StateStoreNotFound("nope".into()).to_status();
        assert_eq!(st.code(), Code::InvalidArgument);
        let decoded = dapr_rs_proto::rpc::Status::decode(st.details()).unwrap();
        let info =
            dapr_rs_proto::error_details::ErrorInfo::decode(&decoded.details[0].value[..]).unwrap();
        assert_eq!(info.reason, "DAPR_STATE_NOT_FOUND");
        assert_eq!(info.metadata["storeName"], "nope");
    }
}
