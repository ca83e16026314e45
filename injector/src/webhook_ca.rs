//! Keeps `caBundle` of the injector's MutatingWebhookConfiguration equal to
//! the CA that signs the serving certificate, as Dapr's injector does for
//! `dapr-sidecar-injector`: at start, whenever the CA changes, and when
//! someone else resets it (checked every [`RECHECK`]).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use thiserror::Error;
use tokio::sync::watch;

use crate::server::Health;

const RECHECK: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum CaBundleError {
    #[error("reading MutatingWebhookConfiguration {name}: {source}")]
    Get { name: String, source: kube::Error },
    #[error("MutatingWebhookConfiguration {0} has no webhooks")]
    NoWebhooks(String),
    #[error("patching MutatingWebhookConfiguration {name}: {source}")]
    Patch { name: String, source: kube::Error },
}

/// Makes every webhook of `name` carry `ca_pem`; returns whether a patch was
/// needed.
pub async fn ensure(client: &Client, name: &str, ca_pem: &[u8]) -> Result<bool, CaBundleError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let cfg = api.get(name).await.map_err(|source| CaBundleError::Get {
        name: name.to_owned(),
        source,
    })?;
    let hooks = cfg.webhooks.unwrap_or_default();
    if hooks.is_empty() {
        return Err(CaBundleError::NoWebhooks(name.to_owned()));
    }
    let stale: Vec<usize> = hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem))
        .map(|(i, _)| i)
        .collect();
    if stale.is_empty() {
        return Ok(false);
    }
    let b64 = STANDARD.encode(ca_pem);
    // `add` sets the member whether or not it exists (`replace` would fail on
    // a configuration created without a caBundle).
    let ops: Vec<serde_json::Value> = stale
        .iter()
        .map(|i| {
            serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": b64})
        })
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|e| {
            CaBundleError::Patch {
                name: name.to_owned(),
                source: kube::Error::SerdeError(e),
            }
        })?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|source| CaBundleError::Patch {
            name: name.to_owned(),
            source,
        })?;
    Ok(true)
}

/// Runs forever: keeps the caBundle equal to the latest value of `ca`.
pub async fn keep_current(
    client: Client,
    name: String,
    mut ca: watch::Receiver<Arc<Vec<u8>>>,
    health: Arc<Health>,
) {
    loop {
        let pem = ca.borrow_and_update().clone();
        let wait = match ensure(&client, &name, &pem).await {
            Ok(patched) => {
                if patched {
                    tracing::info!(name, "webhook configuration caBundle updated");
                }
                health.ca_bundle_current.store(true, Ordering::Relaxed);
                RECHECK
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the webhook configuration caBundle; retrying");
                RETRY
            }
        };
        tokio::select! {
            changed = ca.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
    }
}
