//! Actor errors with Dapr's codes and statuses (pkg/messages/predefined.go).

use http::StatusCode;
use tonic::Code;

use crate::error::MappedError;

/// Every way an actor API call can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActorError {
    /// daprd was started without `--placement-host-address`.
    #[error("placement service is not configured")]
    NoPlacement,
    /// The runtime is shutting down.
    #[error("actor runtime is closed")]
    Closed,
    /// No state store has `actorStateStore: "true"`.
    #[error(
        "the state store is not configured to use the actor runtime. Have you set the - name: actorStateStore value: \"true\" in your state store component file?"
    )]
    RuntimeNotFound,
    /// The sidecar has no app to deliver actor calls to.
    #[error("app channel is not initialized")]
    NoAppChannel,
    /// A state transaction for an actor not active on this host.
    #[error("actor instance is missing")]
    InstanceMissing,
    /// The call failed (the app's error, an unreachable host, a timeout).
    #[error("error invoke actor method: {0}")]
    Invoke(String),
    #[error("error getting actor state: {0}")]
    StateGet(String),
    #[error("error saving actor transaction state: {0}")]
    StateTransactionSave(String),
    /// A reentrant call chain deeper than `maxStackDepth`.
    #[error("maximum stack depth exceeded")]
    MaxStackDepth,
    /// No host serves the actor type (`<type>||<id>`).
    #[error("did not find address for actor '{0}'")]
    NoAddress(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("failed deserializing HTTP body: {0}")]
    Malformed(String),
    /// The owning host says the actor is not placed there (tables moving);
    /// callers look the owner up again.
    #[error("actor {0} is not hosted on this sidecar")]
    NotHostedHere(String),
}

impl ActorError {
    /// Dapr's `errorCode`.
    pub fn code(&self) -> &'static str {
        use ActorError::*;
        match self {
            NoPlacement => "ERR_ACTOR_NO_PLACEMENT",
            Closed => "ERR_ACTOR_RUNTIME_CLOSED",
            RuntimeNotFound => "ERR_ACTOR_RUNTIME_NOT_FOUND",
            NoAppChannel => "ERR_ACTOR_NO_APP_CHANNEL",
            InstanceMissing => "ERR_ACTOR_INSTANCE_MISSING",
            Invoke(_) => "ERR_ACTOR_INVOKE_METHOD",
            StateGet(_) => "ERR_ACTOR_STATE_GET",
            StateTransactionSave(_) => "ERR_ACTOR_STATE_TRANSACTION_SAVE",
            MaxStackDepth => "ERR_ACTOR_STACK_DEPTH",
            NoAddress(_) => "ERR_ACTOR_NO_ADDRESS",
            BadRequest(_) => "ERR_BAD_REQUEST",
            Malformed(_) => "ERR_MALFORMED_REQUEST",
            NotHostedHere(_) => "ERR_ACTOR_NOT_HOSTED",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        use ActorError::*;
        match self {
            NoPlacement | NoAppChannel | InstanceMissing | BadRequest(_) | Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            Closed => StatusCode::SERVICE_UNAVAILABLE,
            NoAddress(_) => StatusCode::NOT_FOUND,
            RuntimeNotFound
            | Invoke(_)
            | StateGet(_)
            | StateTransactionSave(_)
            | MaxStackDepth
            | NotHostedHere(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> Code {
        use ActorError::*;
        match self {
            NoPlacement | Closed | NoAppChannel => Code::Unavailable,
            RuntimeNotFound
            | InstanceMissing
            | Invoke(_)
            | StateGet(_)
            | StateTransactionSave(_) => Code::Internal,
            MaxStackDepth => Code::ResourceExhausted,
            NoAddress(_) | NotHostedHere(_) => Code::FailedPrecondition,
            BadRequest(_) | Malformed(_) => Code::InvalidArgument,
        }
    }

    /// The error in the shape both API adapters render.
    pub fn mapped(&self) -> MappedError {
        MappedError::new(
            self.code(),
            self.http_status(),
            self.grpc_code(),
            self.to_string(),
        )
    }

    /// The status sent back over the internal gRPC port (`CallActor`); the
    /// calling sidecar turns it back into the same error with
    /// [`ActorError::from_status`].
    pub fn to_status(&self) -> tonic::Status {
        self.mapped().to_status()
    }

    /// Rebuilds an error returned by another sidecar. Errors of Dapr's
    /// actor codes keep their code; anything else is an invocation failure.
    pub fn from_status(status: &tonic::Status) -> Self {
        use prost::Message;
        let reason = dapr_rs_proto::rpc::Status::decode(status.details())
            .ok()
            .and_then(|s| s.details.into_iter().next())
            .and_then(|any| dapr_rs_proto::error_details::ErrorInfo::decode(&any.value[..]).ok())
            .map(|info| info.reason)
            .unwrap_or_default();
        let msg = status.message();
        // Our own messages carry Dapr's prefix; strip it so it isn't doubled.
        let strip = |p: &str| msg.strip_prefix(p).unwrap_or(msg).to_owned();
        match reason.as_str() {
            "ERR_ACTOR_STACK_DEPTH" => ActorError::MaxStackDepth,
            "ERR_ACTOR_INSTANCE_MISSING" => ActorError::InstanceMissing,
            "ERR_ACTOR_NO_APP_CHANNEL" => ActorError::NoAppChannel,
            "ERR_ACTOR_RUNTIME_CLOSED" => ActorError::Closed,
            "ERR_ACTOR_NOT_HOSTED" => ActorError::NotHostedHere(
                strip("actor ")
                    .trim_end_matches(" is not hosted on this sidecar")
                    .to_owned(),
            ),
            "ERR_ACTOR_NO_ADDRESS" => ActorError::NoAddress(
                strip("did not find address for actor '")
                    .trim_end_matches('\'')
                    .to_owned(),
            ),
            "ERR_ACTOR_INVOKE_METHOD" => ActorError::Invoke(strip("error invoke actor method: ")),
            // No Dapr reason: the transport failed (host gone, connection
            // reset), not the owner's actor runtime.
            "" if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
            {
                ActorError::Invoke(format!("the actor's host is unreachable: {msg}"))
            }
            _ => ActorError::Invoke(msg.to_owned()),
        }
    }

    /// Failures a caller retries after looking the owner up again: the
    /// owner moved, or its host went away (placement drops it shortly).
    pub fn is_retriable_routing(&self) -> bool {
        match self {
            ActorError::NotHostedHere(_) => true,
            ActorError::Invoke(m) => m.starts_with("the actor's host is unreachable"),
            _ => false,
        }
    }
}

impl axum::response::IntoResponse for ActorError {
    fn into_response(self) -> axum::response::Response {
        self.mapped().into_response()
    }
}

impl From<ActorError> for tonic::Status {
    fn from(e: ActorError) -> Self {
        let mapped = e.mapped();
        dapr_observability::metrics::error_code(mapped.code);
        mapped.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_match_dapr() {
        let e = ActorError::NoPlacement;
        assert_eq!(e.code(), "ERR_ACTOR_NO_PLACEMENT");
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.grpc_code(), Code::Unavailable);
        assert_eq!(
            ActorError::MaxStackDepth.grpc_code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            ActorError::InstanceMissing.http_status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ActorError::NoAddress("T||1".into()).http_status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn survives_the_internal_hop() {
        for e in [
            ActorError::MaxStackDepth,
            ActorError::NotHostedHere("T||1".into()),
            ActorError::Invoke("error from actor service: (500) boom".into()),
            ActorError::NoAddress("T||1".into()),
        ] {
            let back = ActorError::from_status(&e.to_status());
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.code(), e.code());
        }
        let down = ActorError::from_status(&tonic::Status::unavailable("connection refused"));
        assert!(down.is_retriable_routing());
        let reset = ActorError::from_status(&tonic::Status::unknown("transport error"));
        assert!(reset.is_retriable_routing());
    }
}
