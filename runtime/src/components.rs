//! The component registry: builds components from their definitions, resolves
//! `secretKeyRef`/`envRef` metadata, and swaps them live on hot reload.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use dapr_components::{
    ComponentMetadata,
    configuration::{self as configuration_components, ConfigurationStore},
    crypto::{self as crypto_components, CryptoProvider},
    duration::parse_go_duration,
    lock::{self as lock_components, LockStore},
    pubsub::{self as pubsub_components, PubSub},
    secretstores::{self, SecretStore},
    state::{self, StateStore},
};
use dapr_crds::Component;

use crate::resources::Sourced;

/// Default time a component gets to initialise (Dapr's default).
const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a state store prefixes keys (component metadata `keyPrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPrefix {
    AppId,
    Name,
    Namespace,
    None,
    Custom(String),
}

impl KeyPrefix {
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => KeyPrefix::AppId,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "appid" => KeyPrefix::AppId,
                "name" => KeyPrefix::Name,
                "namespace" => KeyPrefix::Namespace,
                "none" => KeyPrefix::None,
                _ => KeyPrefix::Custom(v.to_owned()),
            },
        }
    }
}

/// What the metadata API shows about a loaded component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    pub type_: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

#[derive(Clone)]
pub struct StateStoreEntry {
    pub store: Arc<dyn StateStore>,
    pub prefix: KeyPrefix,
    pub info: ComponentInfo,
    /// Transactional outbox settings (`outboxPublishPubsub`, ...).
    pub outbox: Option<Arc<crate::pubsub::outbox::OutboxConfig>>,
}

#[derive(Clone)]
struct SecretStoreEntry {
    store: Arc<dyn SecretStore>,
    info: ComponentInfo,
}

/// A loaded pub/sub component and this app's topic scopes in it.
#[derive(Clone)]
pub struct PubSubEntry {
    pub pubsub: Arc<dyn PubSub>,
    pub scopes: Arc<crate::pubsub::scopes::TopicScopes>,
    pub info: ComponentInfo,
}

type ConfigurationStoreEntry = (Arc<dyn ConfigurationStore>, ComponentInfo);
type CryptoProviderEntry = (Arc<dyn CryptoProvider>, ComponentInfo);
/// A lock store, its `keyPrefix` metadata and what the metadata API shows.
type LockStoreEntry = (Arc<dyn LockStore>, String, ComponentInfo);

/// Loaded components, readable from any request handler.
#[derive(Default)]
pub struct Registry {
    state: RwLock<HashMap<String, StateStoreEntry>>,
    secrets: RwLock<HashMap<String, SecretStoreEntry>>,
    middleware: RwLock<HashMap<String, ComponentInfo>>,
    pubsubs: RwLock<HashMap<String, PubSubEntry>>,
    /// Resiliency policies for pub/sub publishing and delivery.
    pubsub_resiliency: RwLock<Option<Arc<dapr_policy::resiliency::ResiliencyRegistry>>>,
    /// Definition each loaded component was built from, to detect changes.
    definitions: RwLock<HashMap<String, Component>>,
    /// The Configuration's `secrets.scopes`.
    secret_scopes: RwLock<Arc<crate::secrets::SecretScopes>>,
    configuration: RwLock<HashMap<String, ConfigurationStoreEntry>>,
    /// Lock stores with their `keyPrefix`.
    locks: RwLock<HashMap<String, LockStoreEntry>>,
    crypto: RwLock<HashMap<String, CryptoProviderEntry>>,
    /// Binding components (the sides their `direction` enables).
    bindings: RwLock<HashMap<String, crate::bindings::BindingEntry>>,
    /// Live configuration API subscriptions.
    pub configuration_subscriptions: crate::configuration::Subscriptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("component '{name}' ({type_}) in {file}: {reason}")]
    Init {
        file: PathBuf,
        name: String,
        type_: String,
        reason: String,
    },
}

impl Registry {
    pub fn state_store(&self, name: &str) -> Option<StateStoreEntry> {
        read(&self.state).get(name).cloned()
    }

    pub fn has_state_stores(&self) -> bool {
        !read(&self.state).is_empty()
    }

    pub fn secret_store(&self, name: &str) -> Option<Arc<dyn SecretStore>> {
        read(&self.secrets).get(name).map(|e| e.store.clone())
    }

    pub fn configuration_store(&self, name: &str) -> Option<Arc<dyn ConfigurationStore>> {
        read(&self.configuration).get(name).map(|e| e.0.clone())
    }

    pub fn has_configuration_stores(&self) -> bool {
        !read(&self.configuration).is_empty()
    }

    /// A lock store and its `keyPrefix` metadata.
    pub fn lock_store(&self, name: &str) -> Option<(Arc<dyn LockStore>, String)> {
        read(&self.locks)
            .get(name)
            .map(|e| (e.0.clone(), e.1.clone()))
    }

    pub fn has_lock_stores(&self) -> bool {
        !read(&self.locks).is_empty()
    }

    pub fn binding(&self, name: &str) -> Option<crate::bindings::BindingEntry> {
        read(&self.bindings).get(name).cloned()
    }

    pub fn bindings(&self) -> Vec<(String, crate::bindings::BindingEntry)> {
        read(&self.bindings)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The resiliency policy for binding `name` (none without a Resiliency
    /// resource).
    pub fn binding_policy(
        &self,
        name: &str,
        direction: dapr_policy::resiliency::Direction,
    ) -> dapr_policy::resiliency::Policy {
        match read(&self.pubsub_resiliency).as_ref() {
            Some(r) => r.policy_for_component_kind(
                name,
                dapr_policy::resiliency::ComponentKind::Binding,
                direction,
            ),
            None => dapr_policy::resiliency::Policy::none(name),
        }
    }

    pub fn crypto_provider(&self, name: &str) -> Option<Arc<dyn CryptoProvider>> {
        read(&self.crypto).get(name).map(|e| e.0.clone())
    }

    pub fn has_crypto_providers(&self) -> bool {
        !read(&self.crypto).is_empty()
    }

    pub fn has_secret_stores(&self) -> bool {
        !read(&self.secrets).is_empty()
    }

    pub fn secret_scopes(&self) -> Arc<crate::secrets::SecretScopes> {
        read(&self.secret_scopes).clone()
    }

    pub fn set_secret_scopes(&self, scopes: crate::secrets::SecretScopes) {
        *write(&self.secret_scopes) = Arc::new(scopes);
    }

    pub fn pubsub(&self, name: &str) -> Option<PubSubEntry> {
        read(&self.pubsubs).get(name).cloned()
    }

    pub fn has_pubsubs(&self) -> bool {
        !read(&self.pubsubs).is_empty()
    }

    pub fn set_pubsub_resiliency(&self, r: Arc<dapr_policy::resiliency::ResiliencyRegistry>) {
        *write(&self.pubsub_resiliency) = Some(r);
    }

    /// The resiliency policy for pub/sub component `name` (none without a
    /// Resiliency resource).
    pub fn pubsub_policy(
        &self,
        name: &str,
        direction: dapr_policy::resiliency::Direction,
    ) -> dapr_policy::resiliency::Policy {
        match read(&self.pubsub_resiliency).as_ref() {
            Some(r) => r.policy_for_component_kind(
                name,
                dapr_policy::resiliency::ComponentKind::Pubsub,
                direction,
            ),
            None => dapr_policy::resiliency::Policy::none(name),
        }
    }

    /// Every loaded component, sorted by name.
    pub fn infos(&self) -> Vec<ComponentInfo> {
        let mut out: Vec<ComponentInfo> = read(&self.state)
            .values()
            .map(|e| e.info.clone())
            .chain(read(&self.secrets).values().map(|e| e.info.clone()))
            .chain(read(&self.middleware).values().cloned())
            .chain(read(&self.pubsubs).values().map(|e| e.info.clone()))
            .chain(read(&self.configuration).values().map(|e| e.1.clone()))
            .chain(read(&self.locks).values().map(|e| e.2.clone()))
            .chain(read(&self.bindings).values().map(|e| e.info.clone()))
            .chain(read(&self.crypto).values().map(|e| e.1.clone()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn remove(&self, name: &str) {
        write(&self.state).remove(name);
        write(&self.secrets).remove(name);
        write(&self.middleware).remove(name);
        write(&self.pubsubs).remove(name);
        write(&self.configuration).remove(name);
        write(&self.locks).remove(name);
        write(&self.bindings).remove(name);
        write(&self.crypto).remove(name);
        write(&self.definitions).remove(name);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Writers only insert or remove whole entries, so a poisoned lock still
    // holds a consistent map.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Builds components for one sidecar.
pub struct ComponentLoader {
    pub app_id: String,
    pub namespace: String,
    pub registry: Arc<Registry>,
}

impl ComponentLoader {
    /// Loads components at startup: secret stores first (others may reference
    /// them), then the rest. A failure stops startup unless `ignoreErrors`.
    pub async fn load_all(&self, components: &[Sourced<Component>]) -> Result<(), ComponentError> {
        let mut seen = HashMap::new();
        let visible: Vec<&Sourced<Component>> = components
            .iter()
            .filter(|c| self.visible(&c.resource))
            .collect();
        for c in &visible {
            if let Some(prev) = seen.insert(c.resource.name().to_owned(), c.file.clone()) {
                return Err(self.init_error(
                    c,
                    format!(
                        "duplicate component name (also defined in {})",
                        prev.display()
                    ),
                ));
            }
        }
        let (secret_stores, others): (Vec<_>, Vec<_>) = visible
            .into_iter()
            .partition(|c| c.resource.spec.type_.starts_with("secretstores."));
        for c in secret_stores.into_iter().chain(others) {
            match self.init(c).await {
                Ok(()) => {}
                Err(e) if c.resource.spec.ignore_errors => {
                    tracing::warn!("ignoring failed component (ignoreErrors: true): {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies a new set of definitions (hot reload): changed and new
    /// components are built and swapped in, removed ones dropped. A component
    /// that fails to build keeps its previous version.
    pub async fn reconcile(&self, components: &[Sourced<Component>]) {
        let wanted: HashMap<&str, &Sourced<Component>> = components
            .iter()
            .filter(|c| self.visible(&c.resource))
            .map(|c| (c.resource.name(), c))
            .collect();
        let current: Vec<String> = read(&self.registry.definitions).keys().cloned().collect();
        for name in current {
            if !wanted.contains_key(name.as_str()) {
                tracing::info!(component = %name, "component removed");
                self.registry.remove(&name);
            }
        }
        let mut ordered: Vec<&&Sourced<Component>> = wanted.values().collect();
        ordered.sort_by_key(|c| !c.resource.spec.type_.starts_with("secretstores."));
        for c in ordered {
            let unchanged = read(&self.registry.definitions)
                .get(c.resource.name())
                .is_some_and(|d| d == &c.resource);
            if unchanged {
                continue;
            }
            match self.init(c).await {
                Ok(()) => tracing::info!(component = c.resource.name(), "component (re)loaded"),
                Err(e) => tracing::error!("hot reload kept the previous version: {e}"),
            }
        }
    }

    /// Applies one created or updated definition (operator update stream):
    /// the new instance is built, then swapped in; the previous one serves
    /// until then. `Ok(false)`: identical to what is loaded, nothing done.
    pub async fn apply(&self, c: &Sourced<Component>) -> Result<bool, ComponentError> {
        let unchanged = read(&self.registry.definitions)
            .get(c.resource.name())
            .is_some_and(|d| d == &c.resource);
        if unchanged {
            return Ok(false);
        }
        self.init(c).await.map(|()| true)
    }

    /// Drops a loaded component; false if none had that name.
    pub fn unload(&self, name: &str) -> bool {
        let loaded = read(&self.registry.definitions).contains_key(name);
        self.registry.remove(name);
        loaded
    }

    /// Names of the loaded components.
    pub fn loaded_names(&self) -> Vec<String> {
        read(&self.registry.definitions).keys().cloned().collect()
    }

    /// Whether this sidecar may load `c` (namespace and scopes).
    pub fn visible(&self, c: &Component) -> bool {
        let ns_ok = match (&c.metadata.namespace, self.namespace.as_str()) {
            (Some(ns), mine) if !ns.is_empty() && !mine.is_empty() => ns == mine,
            _ => true,
        };
        ns_ok && c.in_scope(&self.app_id)
    }

    fn init_error(&self, c: &Sourced<Component>, reason: String) -> ComponentError {
        ComponentError::Init {
            file: c.file.clone(),
            name: c.resource.name().to_owned(),
            type_: c.resource.spec.type_.clone(),
            reason,
        }
    }

    async fn init(&self, c: &Sourced<Component>) -> Result<(), ComponentError> {
        let res = self.init_component(c).await;
        let comp = &c.resource;
        dapr_observability::metrics::record_component_init(
            &comp.spec.type_,
            comp.name(),
            res.is_ok(),
        );
        res
    }

    async fn init_component(&self, c: &Sourced<Component>) -> Result<(), ComponentError> {
        let comp = &c.resource;
        let timeout = match comp.spec.init_timeout.as_deref() {
            Some(t) => {
                parse_go_duration(t).map_err(|e| self.init_error(c, format!("initTimeout: {e}")))?
            }
            None => DEFAULT_INIT_TIMEOUT,
        };
        let metadata = self
            .resolve_metadata(comp)
            .await
            .map_err(|reason| self.init_error(c, reason))?;
        let built = tokio::time::timeout(timeout, self.build(comp, &metadata))
            .await
            .map_err(|_| {
                self.init_error(c, format!("init timed out after {timeout:?} (initTimeout)"))
            })?;
        built.map_err(|reason| self.init_error(c, reason))?;
        write(&self.registry.definitions).insert(comp.name().to_owned(), comp.clone());
        tracing::info!(
            component = comp.name(),
            r#type = %comp.type_version(),
            "component loaded"
        );
        Ok(())
    }

    async fn build(&self, comp: &Component, metadata: &ComponentMetadata) -> Result<(), String> {
        let type_ = comp.spec.type_.as_str();
        let name = comp.name().to_owned();
        let mut info = ComponentInfo {
            name: name.clone(),
            type_: type_.to_owned(),
            version: comp.spec.version.clone(),
            capabilities: Vec::new(),
        };
        if type_.starts_with("state.") {
            let store = state::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            info.capabilities = store
                .features()
                .names()
                .into_iter()
                .map(String::from)
                .collect();
            if metadata.get_bool("actorStateStore").ok().flatten() == Some(true) {
                info.capabilities.push("ACTOR".to_owned());
            }
            let entry = StateStoreEntry {
                store: dapr_observability::components::metered_state(&name, store),
                prefix: KeyPrefix::parse(metadata.get("keyPrefix")),
                info,
                outbox: crate::pubsub::outbox::OutboxConfig::from_metadata(metadata).map(Arc::new),
            };
            write(&self.registry.secrets).remove(&name);
            write(&self.registry.state).insert(name, entry);
        } else if type_.starts_with("secretstores.") {
            let store = secretstores::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            write(&self.registry.state).remove(&name);
            let store = dapr_observability::components::metered_secrets(&name, store);
            write(&self.registry.secrets).insert(name, SecretStoreEntry { store, info });
        } else if type_.starts_with("pubsub.") {
            let pubsub = pubsub_components::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            info.capabilities = pubsub.features();
            let entry = PubSubEntry {
                pubsub,
                scopes: Arc::new(crate::pubsub::scopes::TopicScopes::from_metadata(
                    metadata,
                    &self.app_id,
                )),
                info,
            };
            write(&self.registry.pubsubs).insert(name, entry);
        } else if type_.starts_with("configuration.") {
            let store = configuration_components::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            let store = dapr_observability::components::metered_configuration(&name, store);
            write(&self.registry.configuration).insert(name, (store, info));
        } else if type_.starts_with("lock.") {
            let store = lock_components::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            let prefix = metadata.get("keyPrefix").unwrap_or_default().to_owned();
            write(&self.registry.locks).insert(name, (store, prefix, info));
        } else if type_.starts_with("crypto.") {
            let provider = crypto_components::create(type_, metadata)
                .await
                .map_err(|e| e.to_string())?;
            write(&self.registry.crypto).insert(name, (provider, info));
        } else if type_.starts_with("bindings.") {
            let entry = crate::bindings::build_entry(type_, metadata, info).await?;
            write(&self.registry.bindings).insert(name, entry);
        } else if type_.starts_with("middleware.http.") {
            // Built by the HTTP pipeline from the Configuration; listed here
            // so the metadata API shows it.
            write(&self.registry.middleware).insert(name, info);
        } else {
            return Err(format!(
                "unsupported component type '{type_}' (this build supports {}, {} and secretstores.local.file, secretstores.local.env)",
                state::SUPPORTED_TYPES.join(", "),
                pubsub_components::SUPPORTED_TYPES.join(", ")
            ));
        }
        Ok(())
    }

    /// Turns `spec.metadata` into plain strings: literals, `envRef`s, and
    /// `secretKeyRef`s read through `auth.secretStore`.
    async fn resolve_metadata(&self, comp: &Component) -> Result<ComponentMetadata, String> {
        let mut md = ComponentMetadata::new(comp.name(), &self.app_id);
        md.namespace = self.namespace.clone();
        for item in &comp.spec.metadata {
            let value = if let Some(secret_ref) = &item.secret_key_ref {
                let store_name = comp.auth.secret_store.as_str();
                if store_name.is_empty() {
                    return Err(format!(
                        "metadata '{}' uses secretKeyRef but auth.secretStore is not set",
                        item.name
                    ));
                }
                let store = self.registry.secret_store(store_name).ok_or_else(|| {
                    format!(
                        "metadata '{}' references secret store '{store_name}', which is not loaded",
                        item.name
                    )
                })?;
                let secret = store
                    .get(&secret_ref.name, &HashMap::new())
                    .await
                    .map_err(|e| format!("metadata '{}': {e}", item.name))?;
                let key = if secret_ref.key.is_empty() {
                    &secret_ref.name
                } else {
                    &secret_ref.key
                };
                secret.get(key).cloned().ok_or_else(|| {
                    format!(
                        "metadata '{}': secret '{}' has no key '{key}'",
                        item.name, secret_ref.name
                    )
                })?
            } else if let Some(var) = &item.env_ref {
                std::env::var(var).unwrap_or_default()
            } else {
                item.literal().unwrap_or_default()
            };
            md.insert(&item.name, value);
        }
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_values() {
        assert_eq!(KeyPrefix::parse(None), KeyPrefix::AppId);
        assert_eq!(KeyPrefix::parse(Some("NONE")), KeyPrefix::None);
        assert_eq!(KeyPrefix::parse(Some("name")), KeyPrefix::Name);
        assert_eq!(
            KeyPrefix::parse(Some("myprefix")),
            KeyPrefix::Custom("myprefix".into())
        );
    }
}
