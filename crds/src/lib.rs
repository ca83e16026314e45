//! `dapr.io` resource types.
//!
//! One definition serves two readers: daprd parses these from YAML files in
//! self-hosted mode, and the operator serves them from the Kubernetes API.

mod component;
mod configuration;
pub mod crd;
mod httpendpoint;
mod meta;
mod resiliency;
mod resource;
pub mod subscription;

pub use component::{Component, ComponentAuth, ComponentSpec, MetadataItem, SecretKeyRef};
pub use configuration::{
    AccessControlSpec, ApiAccessRule, ApiSpec, AppOperationSpec, AppPolicySpec, Configuration,
    ConfigurationSpec, FeatureSpec, HandlerSpec, HttpPipelineSpec, NameResolutionSpec,
    SelectorField, SelectorSpec,
};
pub use httpendpoint::{
    ClientTls, HTTP_ENDPOINT_KIND, HttpEndpoint, HttpEndpointSpec, TlsDocument,
};
pub use meta::ObjectMeta;
pub use resiliency::{
    ActorTargetPolicies, AppTargetPolicies, CircuitBreakerPolicySpec, ComponentTargetPolicies,
    PolicyNames, RESILIENCY_KIND, Resiliency, ResiliencyParseError, ResiliencyPolicies,
    ResiliencySpec, ResiliencyTargets, RetryMatchingSpec, RetryPolicySpec, resiliencies,
};
pub use resource::{ParseError, Resource, parse_documents};
pub use subscription::{
    SUBSCRIPTION_KIND, subscription_from_document, v1alpha1 as subscription_v1alpha1,
    v2alpha1 as subscription_v2alpha1,
};

/// The API group of every dapr resource.
pub const GROUP: &str = "dapr.io";
