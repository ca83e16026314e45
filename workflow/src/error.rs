//! What can go wrong with a workflow request. The runtime maps these once to
//! Dapr's error codes (`ERR_INSTANCE_ID_*`, `ERR_START_WORKFLOW`, ...).

use crate::store::StoreError;

/// Longest instance id Dapr accepts on create.
pub const MAX_INSTANCE_ID_LENGTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no instance ID was provided")]
    MissingInstanceId,
    #[error("workflow instance ID exceeds the max length of {MAX_INSTANCE_ID_LENGTH} characters")]
    InstanceIdTooLong,
    #[error(
        "workflow instance ID '{0}' is invalid: only alphanumeric, underscore and dash characters are allowed"
    )]
    InvalidInstanceId(String),
    #[error("workflow name is not configured")]
    MissingName,
    #[error("missing workflow event name")]
    MissingEventName,
    #[error("unable to find workflow with the provided instance ID: {0}")]
    NotFound(String),
    #[error("an active workflow with ID '{0}' already exists")]
    AlreadyExists(String),
    #[error(
        "workflow instance '{0}' is not in a terminal state (completed, failed or terminated), so it cannot be purged"
    )]
    NotTerminal(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// A history event named by a request is missing or cannot be used.
    #[error("{0}")]
    EventNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sidecar owning the instance failed the forwarded call.
    #[error("{0}")]
    Remote(String),
    /// The instance moved to another sidecar while the call was served.
    #[error("{0}")]
    Moved(String),
}

/// Checks an instance id as Dapr does: required; on create at most 64
/// characters of letters, digits, `-` and `_`.
pub fn validate_instance_id(id: &str, is_create: bool) -> Result<(), WorkflowError> {
    if id.is_empty() {
        return Err(WorkflowError::MissingInstanceId);
    }
    if is_create {
        if id.len() > MAX_INSTANCE_ID_LENGTH {
            return Err(WorkflowError::InstanceIdTooLong);
        }
        if !id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err(WorkflowError::InvalidInstanceId(id.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_follow_daprs_rules() {
        assert!(validate_instance_id("order-1_a", true).is_ok());
        assert!(validate_instance_id("ünïcode", true).is_ok());
        assert!(matches!(
            validate_instance_id("", false),
            Err(WorkflowError::MissingInstanceId)
        ));
        assert!(matches!(
            validate_instance_id(&"a".repeat(65), true),
            Err(WorkflowError::InstanceIdTooLong)
        ));
        assert!(validate_instance_id(&"a".repeat(64), true).is_ok());
        assert!(matches!(
            validate_instance_id("a b", true),
            Err(WorkflowError::InvalidInstanceId(_))
        ));
        // Existing ids are looked up as given.
        assert!(validate_instance_id("a b", false).is_ok());
    }
}
