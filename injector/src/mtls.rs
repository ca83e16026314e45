//! Whether injected sidecars get `--enable-mtls`: Dapr reads
//! `spec.mtls.enabled` of the `daprsystem` Configuration in the control-plane
//! namespace, defaulting to true when it is missing or unreadable.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

/// Name of the control-plane Configuration.
pub const SYSTEM_CONFIG: &str = "daprsystem";
/// How long a looked-up value is reused (admission must stay fast).
const CACHE_FOR: Duration = Duration::from_secs(10);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

pub enum MtlsLookup {
    /// No cluster access: always this value.
    Fixed(bool),
    Kube(Box<KubeLookup>),
}

pub struct KubeLookup {
    api: Api<DynamicObject>,
    cache: Mutex<Option<(Instant, bool)>>,
}

impl MtlsLookup {
    pub fn kube(client: Client, namespace: &str) -> Self {
        let gvk = GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "configurations");
        Self::Kube(Box::new(KubeLookup {
            api: Api::namespaced_with(client, namespace, &ar),
            cache: Mutex::new(None),
        }))
    }

    pub async fn enabled(&self) -> bool {
        match self {
            Self::Fixed(v) => *v,
            Self::Kube(k) => {
                let (api, cache) = (&k.api, &k.cache);
                if let Ok(c) = cache.lock()
                    && let Some((at, v)) = *c
                    && at.elapsed() < CACHE_FOR
                {
                    return v;
                }
                let v = match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(SYSTEM_CONFIG)).await
                {
                    Ok(Ok(Some(cfg))) => cfg
                        .data
                        .pointer("/spec/mtls/enabled")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(true),
                    Ok(Ok(None)) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the daprsystem Configuration; mTLS stays enabled");
                        true
                    }
                    Err(_) => {
                        tracing::warn!(
                            "reading the daprsystem Configuration timed out; mTLS stays enabled"
                        );
                        true
                    }
                };
                if let Ok(mut c) = cache.lock() {
                    *c = Some((Instant::now(), v));
                }
                v
            }
        }
    }
}
