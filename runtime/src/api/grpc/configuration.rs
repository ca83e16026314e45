//! gRPC `GetConfiguration`, `SubscribeConfiguration` (server stream) and
//! `UnsubscribeConfiguration` (+ Alpha1 names): wire conversion around
//! `crate::configuration`.

use std::collections::HashMap;

use dapr_components::configuration::Items;
use dapr_rs_proto::{common, runtime as pb};
use futures::StreamExt;
use tonic::{Status, codegen::BoxStream};

use crate::{configuration, error::MappedError, sidecar::Sidecar};

fn to_proto(items: Items) -> HashMap<String, common::ConfigurationItem> {
    items
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                common::ConfigurationItem {
                    value: i.value,
                    version: i.version,
                    metadata: i.metadata,
                },
            )
        })
        .collect()
}

pub async fn get(
    sidecar: &Sidecar,
    req: pb::GetConfigurationRequest,
) -> Result<pb::GetConfigurationResponse, Status> {
    let items = configuration::get(sidecar, &req.store_name, &req.keys, &req.metadata)
        .await
        .map_err(MappedError::from)?;
    Ok(pb::GetConfigurationResponse {
        items: to_proto(items),
    })
}

/// The first message carries only the subscription id (as Dapr sends it);
/// every later one the changed items.
pub async fn subscribe(
    sidecar: &Sidecar,
    req: pb::SubscribeConfigurationRequest,
) -> Result<BoxStream<pb::SubscribeConfigurationResponse>, Status> {
    let sub = configuration::subscribe(sidecar, &req.store_name, &req.keys, &req.metadata)
        .await
        .map_err(MappedError::from)?;
    let id = sub.id.clone();
    let first = pb::SubscribeConfigurationResponse {
        id: id.clone(),
        items: HashMap::new(),
    };
    let updates = futures::stream::unfold(sub.updates, |mut rx| async move {
        rx.recv().await.map(|items| (items, rx))
    });
    let rest = updates.map(move |items| {
        Ok(pb::SubscribeConfigurationResponse {
            id: id.clone(),
            items: to_proto(items),
        })
    });
    Ok(Box::pin(
        futures::stream::once(async move { Ok(first) }).chain(rest),
    ))
}

pub fn unsubscribe(
    sidecar: &Sidecar,
    req: pb::UnsubscribeConfigurationRequest,
) -> pb::UnsubscribeConfigurationResponse {
    match configuration::unsubscribe(sidecar, &req.id) {
        Ok(()) => pb::UnsubscribeConfigurationResponse {
            ok: true,
            message: String::new(),
        },
        Err(e) => pb::UnsubscribeConfigurationResponse {
            ok: false,
            message: e.to_string(),
        },
    }
}
