//! The bindings building block in the sidecar: loaded binding components
//! (with the sides their `direction` metadata enables), output binding calls
//! under resiliency, and input binding delivery to the app ([`input`]).

pub mod delivery;
pub mod input;

use std::collections::HashMap;

use dapr_components::{
    ComponentMetadata,
    bindings::{
        self as components, Binding, BindingError, Direction, InvokeRequest, InvokeResponse,
    },
};
use dapr_policy::resiliency::{PolicyError, RetryableError};
use http::StatusCode;
use tonic::Code;

use crate::{
    components::{ComponentInfo, Registry},
    error::MappedError,
};

/// Dapr's error code for every failed output binding call.
pub const ERR_INVOKE_OUTPUT_BINDING: &str = "ERR_INVOKE_OUTPUT_BINDING";

/// A loaded binding component.
#[derive(Clone)]
pub struct BindingEntry {
    /// Only the sides `direction` allows.
    pub binding: Binding,
    /// Where input events go: the `route` metadata, else the name.
    pub route: String,
    pub direction: Direction,
    pub info: ComponentInfo,
}

/// Builds a binding component and drops the sides `direction` excludes.
pub async fn build_entry(
    type_: &str,
    metadata: &ComponentMetadata,
    info: ComponentInfo,
) -> Result<BindingEntry, String> {
    let mut binding = dapr_observability::components::metered_binding(
        &metadata.name,
        components::create(type_, metadata)
            .await
            .map_err(|e| e.to_string())?,
    );
    let direction = Direction::from_metadata(metadata);
    if !direction.input {
        binding.input = None;
    }
    if !direction.output {
        binding.output = None;
    }
    if binding.input.is_none() && binding.output.is_none() {
        tracing::warn!(
            component = %metadata.name,
            direction = metadata.get("direction").unwrap_or_default(),
            "binding {type_} has no side enabled by its direction metadata; it does nothing"
        );
    }
    let route = metadata
        .get("route")
        .map(|r| r.trim().trim_start_matches('/').to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| metadata.name.clone());
    Ok(BindingEntry {
        binding,
        route,
        direction,
        info,
    })
}

/// A failed output binding call: Dapr's message, plus the response metadata
/// some components return even on failure (HTTP shows them as headers).
#[derive(Debug)]
pub struct InvokeFailure {
    pub message: String,
    pub metadata: HashMap<String, String>,
}

impl From<InvokeFailure> for MappedError {
    fn from(f: InvokeFailure) -> Self {
        MappedError::new(
            ERR_INVOKE_OUTPUT_BINDING,
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            f.message,
        )
    }
}

/// An output binding error as the resiliency policy sees it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Attempt(BindingError);

impl RetryableError for Attempt {
    fn is_permanent(&self) -> bool {
        // A malformed request fails the same way every time.
        matches!(
            self.0,
            BindingError::InvalidRequest(_) | BindingError::Metadata(_) | BindingError::Closed
        )
    }
}

/// Calls output binding `name` as Dapr's `SendToOutputBinding` does:
/// operation required, binding and operation checked, then the component
/// under the binding's outbound resiliency policy.
pub async fn invoke_output(
    registry: &Registry,
    name: &str,
    req: InvokeRequest,
) -> Result<InvokeResponse, InvokeFailure> {
    let fail = |reason: String| InvokeFailure {
        message: format!("error invoking output binding {name}: {reason}"),
        metadata: HashMap::new(),
    };
    if req.operation.is_empty() {
        return Err(fail("operation field is missing from request".to_owned()));
    }
    let Some(output) = registry.binding(name).and_then(|e| e.binding.output) else {
        return Err(fail(format!("couldn't find output binding {name}")));
    };
    let ops = output.operations();
    if !ops.iter().any(|o| o == &req.operation) {
        return Err(fail(format!(
            "binding {name} does not support operation {}. supported operations:{}",
            req.operation,
            ops.join(" ")
        )));
    }
    let policy = registry.binding_policy(name, dapr_policy::resiliency::Direction::Outbound);
    let result = policy
        .execute(|_| {
            let output = output.clone();
            let req = req.clone();
            async move { output.invoke(req).await.map_err(Attempt) }
        })
        .await;
    match result {
        Ok(resp) => Ok(resp),
        Err(PolicyError::Operation(Attempt(BindingError::WithResponse { message, response }))) => {
            Err(InvokeFailure {
                metadata: response.metadata,
                ..fail(message)
            })
        }
        Err(PolicyError::Operation(Attempt(e))) => Err(fail(e.to_string())),
        Err(e) => Err(fail(e.to_string())),
    }
}
