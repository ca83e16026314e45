//! Dapr's gRPC API: `dapr.proto.runtime.v1.Dapr` (tonic). Methods not built
//! yet fall through to the generated default, `Unimplemented`.

mod actors;
mod bindings;
mod configuration;
mod crypto;
mod invoke;
mod lock;
mod pubsub;
mod secrets;
mod state;
pub mod workflow;

use std::sync::Arc;

use dapr_rs_proto::{
    runtime as pb,
    server::dapr_server::{Dapr, DaprServer},
};
use tonic::{Request, Response, Status};

use crate::{actors::reminders::api as reminders, api::http::constant_time_eq, sidecar::Sidecar};

#[derive(Clone)]
pub struct DaprGrpc {
    sidecar: Arc<Sidecar>,
}

/// The gRPC service with the API-token check and message size limits.
pub fn service(
    sidecar: Arc<Sidecar>,
) -> tonic::service::interceptor::InterceptedService<
    DaprServer<DaprGrpc>,
    impl tonic::service::Interceptor + Clone,
> {
    let limit = usize::try_from(sidecar.max_body_size).unwrap_or(usize::MAX);
    let token = sidecar.api_token.clone();
    let server = DaprServer::new(DaprGrpc { sidecar })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    tonic::service::interceptor::InterceptedService::new(server, move |req: Request<()>| {
        check_token(token.as_deref(), req)
    })
}

/// Interceptor for the `dapr-api-token` metadata. Public so the other gRPC
/// services on the same port (proxying, workflows) share it.
pub fn check_token(expected: Option<&str>, req: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = expected else {
        return Ok(req);
    };
    match req.metadata().get("dapr-api-token") {
        Some(v) if constant_time_eq(v.as_bytes(), expected.as_bytes()) => Ok(req),
        Some(_) => Err(Status::unauthenticated(
            "authentication error: api token mismatch",
        )),
        None => Err(Status::unauthenticated(
            "authentication error: missing api token in request metadata",
        )),
    }
}

#[tonic::async_trait]
impl Dapr for DaprGrpc {
    async fn invoke_actor(
        &self,
        req: Request<pb::InvokeActorRequest>,
    ) -> Result<Response<pb::InvokeActorResponse>, Status> {
        actors::invoke_actor(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_actor_state(
        &self,
        req: Request<pb::GetActorStateRequest>,
    ) -> Result<Response<pb::GetActorStateResponse>, Status> {
        actors::get_actor_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn execute_actor_state_transaction(
        &self,
        req: Request<pb::ExecuteActorStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        actors::execute_actor_state_transaction(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    /// Deprecated by Dapr in favour of proxying, still used by older SDKs.
    async fn invoke_service(
        &self,
        req: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<dapr_rs_proto::common::InvokeResponse>, Status> {
        invoke::invoke_service(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        state::get_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_bulk_state(
        &self,
        req: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        state::get_bulk_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn save_state(&self, req: Request<pb::SaveStateRequest>) -> Result<Response<()>, Status> {
        state::save_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn query_state_alpha1(
        &self,
        req: Request<pb::QueryStateRequest>,
    ) -> Result<Response<pb::QueryStateResponse>, Status> {
        state::query_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_state(
        &self,
        req: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        state::delete_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_bulk_state(
        &self,
        req: Request<pb::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        state::delete_bulk_state(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn execute_state_transaction(
        &self,
        req: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        state::execute_state_transaction(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn publish_event(
        &self,
        req: Request<pb::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let md = req.metadata().clone();
        pubsub::publish_event(&self.sidecar, &md, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn bulk_publish_event_alpha1(
        &self,
        req: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        let md = req.metadata().clone();
        pubsub::bulk_publish_event(&self.sidecar, &md, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn bulk_publish_event(
        &self,
        req: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        let md = req.metadata().clone();
        pubsub::bulk_publish_event(&self.sidecar, &md, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subscribe_topic_events_alpha1(
        &self,
        req: Request<tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SubscribeTopicEventsResponseAlpha1>>, Status>
    {
        crate::pubsub::streaming::subscribe(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_secret(
        &self,
        req: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        secrets::get_secret(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_bulk_secret(
        &self,
        req: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        secrets::get_bulk_secret(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_configuration(
        &self,
        req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        configuration::get(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_configuration_alpha1(
        &self,
        req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        configuration::get(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subscribe_configuration(
        &self,
        req: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SubscribeConfigurationResponse>>, Status>
    {
        configuration::subscribe(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subscribe_configuration_alpha1(
        &self,
        req: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SubscribeConfigurationResponse>>, Status>
    {
        configuration::subscribe(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn unsubscribe_configuration(
        &self,
        req: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Ok(Response::new(configuration::unsubscribe(
            &self.sidecar,
            req.into_inner(),
        )))
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        req: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Ok(Response::new(configuration::unsubscribe(
            &self.sidecar,
            req.into_inner(),
        )))
    }

    async fn encrypt_alpha1(
        &self,
        req: Request<tonic::Streaming<pb::EncryptRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::EncryptResponse>>, Status> {
        crypto::encrypt(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn decrypt_alpha1(
        &self,
        req: Request<tonic::Streaming<pb::DecryptRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::DecryptResponse>>, Status> {
        crypto::decrypt(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_get_key_alpha1(
        &self,
        req: Request<pb::SubtleGetKeyRequest>,
    ) -> Result<Response<pb::SubtleGetKeyResponse>, Status> {
        crypto::get_key(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_encrypt_alpha1(
        &self,
        req: Request<pb::SubtleEncryptRequest>,
    ) -> Result<Response<pb::SubtleEncryptResponse>, Status> {
        crypto::encrypt_subtle(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_decrypt_alpha1(
        &self,
        req: Request<pb::SubtleDecryptRequest>,
    ) -> Result<Response<pb::SubtleDecryptResponse>, Status> {
        crypto::decrypt_subtle(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_wrap_key_alpha1(
        &self,
        req: Request<pb::SubtleWrapKeyRequest>,
    ) -> Result<Response<pb::SubtleWrapKeyResponse>, Status> {
        crypto::wrap_key(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_unwrap_key_alpha1(
        &self,
        req: Request<pb::SubtleUnwrapKeyRequest>,
    ) -> Result<Response<pb::SubtleUnwrapKeyResponse>, Status> {
        crypto::unwrap_key(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_sign_alpha1(
        &self,
        req: Request<pb::SubtleSignRequest>,
    ) -> Result<Response<pb::SubtleSignResponse>, Status> {
        crypto::sign(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn subtle_verify_alpha1(
        &self,
        req: Request<pb::SubtleVerifyRequest>,
    ) -> Result<Response<pb::SubtleVerifyResponse>, Status> {
        crypto::verify(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn register_actor_reminder(
        &self,
        req: Request<pb::RegisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        reminders::register_reminder(&self.sidecar, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn unregister_actor_reminder(
        &self,
        req: Request<pb::UnregisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        reminders::unregister_reminder(&self.sidecar, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn register_actor_timer(
        &self,
        req: Request<pb::RegisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        reminders::register_timer(&self.sidecar, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn unregister_actor_timer(
        &self,
        req: Request<pb::UnregisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        reminders::unregister_timer(&self.sidecar, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn get_actor_reminder(
        &self,
        req: Request<pb::GetActorReminderRequest>,
    ) -> Result<Response<pb::GetActorReminderResponse>, Status> {
        reminders::get_reminder(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_actor_reminders(
        &self,
        req: Request<pb::ListActorRemindersRequest>,
    ) -> Result<Response<pb::ListActorRemindersResponse>, Status> {
        reminders::list_reminders(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn unregister_actor_reminders_by_type(
        &self,
        req: Request<pb::UnregisterActorRemindersByTypeRequest>,
    ) -> Result<Response<pb::UnregisterActorRemindersByTypeResponse>, Status> {
        reminders::unregister_reminders_by_type(&self.sidecar, req.into_inner()).await?;
        Ok(Response::new(pb::UnregisterActorRemindersByTypeResponse {}))
    }

    async fn invoke_binding(
        &self,
        req: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        bindings::invoke_binding(&self.sidecar, req).await
    }

    async fn try_lock_alpha1(
        &self,
        req: Request<pb::TryLockRequest>,
    ) -> Result<Response<pb::TryLockResponse>, Status> {
        lock::try_lock(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn unlock_alpha1(
        &self,
        req: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        lock::unlock(&self.sidecar, req.into_inner())
            .await
            .map(Response::new)
    }

    #[allow(deprecated)] // active_actors_count: Dapr still fills the alias
    async fn get_metadata(
        &self,
        _req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let m = self.sidecar.metadata();
        let actors = self.sidecar.actors.metadata();
        Ok(Response::new(pb::GetMetadataResponse {
            id: m.id,
            runtime_version: m.runtime_version,
            enabled_features: m.enabled_features,
            registered_components: m
                .components
                .into_iter()
                .map(|c| pb::RegisteredComponents {
                    name: c.name,
                    r#type: c.type_,
                    version: c.version,
                    capabilities: c.capabilities,
                })
                .collect(),
            extended_metadata: m.extended.into_iter().collect(),
            app_connection_properties: Some(pb::AppConnectionProperties {
                port: m.app.port.map(i32::from).unwrap_or(0),
                protocol: m.app.protocol.to_owned(),
                channel_address: m.app.channel_address,
                max_concurrency: i32::try_from(m.app.max_concurrency.max(0)).unwrap_or(i32::MAX),
                health: m.app.health.map(|h| pb::AppConnectionHealthProperties {
                    health_check_path: h.path,
                    health_probe_interval: h.interval,
                    health_probe_timeout: h.timeout,
                    health_threshold: i32::try_from(h.threshold).unwrap_or(i32::MAX),
                }),
            }),
            active_actors_count: actor_counts(&actors),
            actor_runtime: Some(pb::ActorRuntime {
                runtime_status: actors.status_code(),
                active_actors: actor_counts(&actors),
                host_ready: actors.host_ready,
                placement: actors.placement.clone(),
            }),
            ..Default::default()
        }))
    }

    async fn set_metadata(
        &self,
        req: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.sidecar.set_extended(req.key, req.value);
        Ok(Response::new(()))
    }

    async fn start_workflow_alpha1(
        &self,
        req: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        workflow::start(&self.sidecar, req.into_inner()).await
    }

    async fn get_workflow_alpha1(
        &self,
        req: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        workflow::get(&self.sidecar, req.into_inner()).await
    }

    async fn terminate_workflow_alpha1(
        &self,
        req: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::terminate(&self.sidecar, req.into_inner()).await
    }

    async fn raise_event_workflow_alpha1(
        &self,
        req: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::raise_event(&self.sidecar, req.into_inner()).await
    }

    async fn pause_workflow_alpha1(
        &self,
        req: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::pause(&self.sidecar, req.into_inner()).await
    }

    async fn resume_workflow_alpha1(
        &self,
        req: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::resume(&self.sidecar, req.into_inner()).await
    }

    async fn purge_workflow_alpha1(
        &self,
        req: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::purge(&self.sidecar, req.into_inner()).await
    }

    async fn start_workflow_beta1(
        &self,
        req: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        workflow::start(&self.sidecar, req.into_inner()).await
    }

    async fn get_workflow_beta1(
        &self,
        req: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        workflow::get(&self.sidecar, req.into_inner()).await
    }

    async fn terminate_workflow_beta1(
        &self,
        req: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::terminate(&self.sidecar, req.into_inner()).await
    }

    async fn raise_event_workflow_beta1(
        &self,
        req: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::raise_event(&self.sidecar, req.into_inner()).await
    }

    async fn pause_workflow_beta1(
        &self,
        req: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::pause(&self.sidecar, req.into_inner()).await
    }

    async fn resume_workflow_beta1(
        &self,
        req: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::resume(&self.sidecar, req.into_inner()).await
    }

    async fn purge_workflow_beta1(
        &self,
        req: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        workflow::purge(&self.sidecar, req.into_inner()).await
    }

    async fn shutdown(&self, _req: Request<pb::ShutdownRequest>) -> Result<Response<()>, Status> {
        tracing::info!("shutdown requested through the gRPC API");
        self.sidecar.shutdown.cancel();
        Ok(Response::new(()))
    }
}

fn actor_counts(m: &crate::actors::RuntimeMetadata) -> Vec<pb::ActiveActorsCount> {
    m.active
        .iter()
        .map(|(t, n)| pb::ActiveActorsCount {
            r#type: t.clone(),
            count: i32::try_from(*n).unwrap_or(i32::MAX),
        })
        .collect()
}
