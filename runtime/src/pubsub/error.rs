//! Pub/sub API errors with Dapr's codes, HTTP statuses, gRPC codes and
//! `ErrorInfo` reasons (pkg/api/errors/pubsub.go in Dapr).

use http::StatusCode;
use prost::Message;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum PubSubApiError {
    #[error("pubsub {0} is not configured")]
    NotConfigured(String),
    #[error("pubsub name is empty")]
    NameEmpty,
    #[error("pubsub {0} is not found")]
    NotFound(String),
    #[error("topic is empty in pubsub {0}")]
    TopicEmpty(String),
    #[error("topic {topic} is not allowed for app id {app_id}")]
    Forbidden {
        pubsub: String,
        topic: String,
        app_id: String,
    },
    #[error("failed deserializing metadata. Error: {reason}")]
    Metadata { pubsub: String, reason: String },
    #[error("cannot create cloudevent")]
    CloudEventCreation { pubsub: String, reason: String },
    #[error(
        "error when marshalling cloud event envelope for topic {topic} pubsub {pubsub}: {reason}"
    )]
    MarshalEnvelope {
        pubsub: String,
        topic: String,
        reason: String,
    },
    #[error("error marshaling events to bytes for topic {topic} pubsub {pubsub}. error: {reason}")]
    MarshalEvents {
        pubsub: String,
        topic: String,
        reason: String,
    },
    #[error("error when unmarshaling the request for topic {topic} pubsub {pubsub}: {reason}")]
    UnmarshalEvents {
        pubsub: String,
        topic: String,
        reason: String,
    },
    #[error("error when publishing to topic {topic} in pubsub {pubsub}: {reason}")]
    Publish {
        pubsub: String,
        topic: String,
        reason: String,
    },
}

impl PubSubApiError {
    pub fn error_code(&self) -> &'static str {
        use PubSubApiError::*;
        match self {
            NotConfigured(_) => "ERR_PUBSUB_NOT_CONFIGURED",
            NameEmpty => "ERR_PUBSUB_EMPTY",
            NotFound(_) => "ERR_PUBSUB_NOT_FOUND",
            TopicEmpty(_) => "ERR_TOPIC_NAME_EMPTY",
            Forbidden { .. } => "ERR_PUBSUB_FORBIDDEN",
            Metadata { .. } => "ERR_PUBSUB_REQUEST_METADATA",
            CloudEventCreation { .. } => "ERR_PUBSUB_CLOUD_EVENTS_SER",
            MarshalEnvelope { .. } | MarshalEvents { .. } | UnmarshalEvents { .. } => {
                "ERR_PUBSUB_EVENTS_SER"
            }
            Publish { .. } => "ERR_PUBSUB_PUBLISH_MESSAGE",
        }
    }

    pub fn reason(&self) -> &'static str {
        use PubSubApiError::*;
        match self {
            NotConfigured(_) => "DAPR_PUBSUB_NOT_CONFIGURED",
            NameEmpty => "DAPR_PUBSUB_NAME_EMPTY",
            NotFound(_) => "DAPR_PUBSUB_NOT_FOUND",
            TopicEmpty(_) => "DAPR_PUBSUB_TOPIC_NAME_EMPTY",
            Forbidden { .. } => "DAPR_PUBSUB_FORBIDDEN",
            Metadata { .. } => "DAPR_PUBSUB_METADATA_DESERIALIZATION",
            CloudEventCreation { .. } => "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
            MarshalEnvelope { .. } => "DAPR_PUBSUB_MARSHAL_ENVELOPE",
            MarshalEvents { .. } => "DAPR_PUBSUB_MARSHAL_EVENTS",
            UnmarshalEvents { .. } => "DAPR_PUBSUB_UNMARSHAL_EVENTS",
            Publish { .. } => "DAPR_PUBSUB_PUBLISH_MESSAGE",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        use PubSubApiError::*;
        match self {
            NotConfigured(_) | Metadata { .. } => StatusCode::BAD_REQUEST,
            NameEmpty | NotFound(_) | TopicEmpty(_) => StatusCode::NOT_FOUND,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            MarshalEnvelope { .. } | MarshalEvents { .. } | UnmarshalEvents { .. } => {
                StatusCode::BAD_REQUEST
            }
            CloudEventCreation { .. } | Publish { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> Code {
        use PubSubApiError::*;
        match self {
            NotConfigured(_) => Code::FailedPrecondition,
            Forbidden { .. } => Code::PermissionDenied,
            Publish { .. } => Code::Internal,
            _ => Code::InvalidArgument,
        }
    }

    fn info_metadata(&self) -> Vec<(String, String)> {
        use PubSubApiError::*;
        match self {
            Forbidden { topic, .. } => vec![("topic".into(), topic.clone())],
            Publish { topic, reason, .. }
            | MarshalEnvelope { topic, reason, .. }
            | MarshalEvents { topic, reason, .. }
            | UnmarshalEvents { topic, reason, .. } => vec![
                ("topic".into(), topic.clone()),
                ("error".into(), reason.clone()),
            ],
            CloudEventCreation { reason, .. } | Metadata { reason, .. } => {
                vec![("error".into(), reason.clone())]
            }
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let metadata: serde_json::Map<String, serde_json::Value> = self
            .info_metadata()
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::json!({
            "errorCode": self.error_code(),
            "message": self.to_string(),
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason(),
                "domain": "dapr.io",
                "metadata": metadata,
            }],
        })
    }

    pub fn to_status(&self) -> tonic::Status {
        use dapr_rs_proto::{error_details::ErrorInfo, rpc};
        let info = ErrorInfo {
            reason: self.reason().to_owned(),
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

impl axum::response::IntoResponse for PubSubApiError {
    fn into_response(self) -> axum::response::Response {
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

impl From<PubSubApiError> for tonic::Status {
    fn from(e: PubSubApiError) -> Self {
        dapr_observability::metrics::error_code(e.error_code());
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_dapr() {
        let e = PubSubApiError::NotFound("p".into());
        assert_eq!(e.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(e.grpc_code(), Code::InvalidArgument);
        assert_eq!(e.to_json()["errorCode"], "ERR_PUBSUB_NOT_FOUND");
        assert_eq!(e.to_string(), "pubsub p is not found");
        let f = PubSubApiError::Forbidden {
            pubsub: "p".into(),
            topic: "t".into(),
            app_id: "a".into(),
        };
        assert_eq!(f.http_status(), StatusCode::FORBIDDEN);
        assert_eq!(f.to_json()["details"][0]["reason"], "DAPR_PUBSUB_FORBIDDEN");
        assert_eq!(
            PubSubApiError::TopicEmpty("p".into()).error_code(),
            "ERR_TOPIC_NAME_EMPTY"
        );
    }
}
