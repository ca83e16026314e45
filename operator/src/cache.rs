//! An in-memory copy of one `dapr.io` kind, fed by a kube-runtime watcher,
//! with a broadcast of every change for the sidecars' update streams.
//!
//! The watcher re-lists after any watch failure (apiserver restart, expired
//! resource version); the re-list is diffed against the cache so objects
//! deleted while disconnected are reported as deletions.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    core::DynamicObject,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::kinds::KindSpec;

/// How many changes a slow update stream may fall behind before it is closed
/// (the sidecar then reconnects and lists again).
const EVENT_BUFFER: usize = 1024;

/// Objects per list page: small pages keep the transient memory of a
/// (re-)list low; the cost is a few more round trips at start.
const LIST_PAGE_SIZE: u32 = 100;

/// One cached object, ready to serve.
#[derive(Debug)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The object as served (before secret resolution), as compact JSON:
    /// a fraction of the memory of a `serde_json::Value` tree, and sent
    /// as-is when nothing needs resolving.
    pub json: Box<[u8]>,
    /// Whether the object holds a `secretKeyRef` anywhere.
    pub has_secret_refs: bool,
}

impl Entry {
    pub fn new(json: Value) -> Self {
        let s = |p: &str| {
            json.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let scopes = json
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        Self {
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
            scopes,
            has_secret_refs: has_secret_refs(&json),
            json: bytes.into_boxed_slice(),
        }
    }

    /// The object as a JSON tree.
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// Whether `app_id` may see this object (no scopes = everyone).
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

fn has_secret_refs(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("secretKeyRef") || m.values().any(has_secret_refs),
        Value::Array(a) => a.iter().any(has_secret_refs),
        _ => false,
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// A change with the object before and after, so scope changes can be
/// turned into creations and deletions per app.
#[derive(Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub old: Option<Arc<Entry>>,
    pub new: Option<Arc<Entry>>,
}

type Key = (String, String);

/// The cache of one kind.
pub struct Cache {
    pub spec: &'static KindSpec,
    entries: RwLock<BTreeMap<Key, Arc<Entry>>>,
    events: broadcast::Sender<Arc<Change>>,
    synced: watch::Sender<bool>,
}

impl Cache {
    pub fn new(spec: &'static KindSpec) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (synced, _) = watch::channel(false);
        Arc::new(Self {
            spec,
            entries: RwLock::new(BTreeMap::new()),
            events,
            synced,
        })
    }

    /// Objects of `namespace`, in name order.
    pub fn list(&self, namespace: &str) -> Vec<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Every object, in namespace and name order.
    pub fn list_all(&self) -> Vec<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.values().cloned().collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }

    /// Whether the first full list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Watches the kind (in `namespace`, or everywhere when empty) forever.
    pub async fn run(self: Arc<Self>, client: Client, namespace: String) {
        let ar = self.spec.api_resource();
        let api: Api<DynamicObject> = if namespace.is_empty() {
            Api::all_with(client, &ar)
        } else {
            Api::namespaced_with(client, &namespace, &ar)
        };
        let mut stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE_SIZE))
            .default_backoff()
            .boxed();
        let mut relist: Option<HashSet<Key>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(key_of(&obj));
                    }
                    self.apply(&obj);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = relist.take() {
                        self.retain(&seen);
                    }
                    self.synced.send_replace(true);
                }
                Ok(watcher::Event::Apply(obj)) => self.apply(&obj),
                Ok(watcher::Event::Delete(obj)) => self.remove(&key_of(&obj)),
                Err(e) => {
                    tracing::warn!(kind = self.spec.kind, error = %e, "watch failed; retrying");
                }
            }
        }
    }

    /// Adds or replaces an object; one that cannot be served is logged and
    /// treated as absent.
    pub fn apply(&self, obj: &DynamicObject) {
        let key = key_of(obj);
        match self.spec.prepare(obj) {
            Ok(json) => self.upsert(key, Entry::new(json)),
            Err(reason) => {
                tracing::warn!(
                    kind = self.spec.kind,
                    namespace = %key.0,
                    name = %key.1,
                    %reason,
                    "not serving invalid resource"
                );
                self.remove(&key);
            }
        }
    }

    fn upsert(&self, key: Key, entry: Entry) {
        let new = Arc::new(entry);
        let old = {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if entries.get(&key).is_some_and(|old| old.json == new.json) {
                // A re-list delivers unchanged objects again: not a change.
                return;
            }
            entries.insert(key, new.clone())
        };
        let kind = if old.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        };
        self.publish(Change {
            kind,
            old,
            new: Some(new),
        });
    }

    fn remove(&self, key: &Key) {
        let old = self
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(old) = old {
            self.publish(Change {
                kind: ChangeKind::Deleted,
                old: Some(old),
                new: None,
            });
        }
    }

    fn retain(&self, seen: &HashSet<Key>) {
        let gone: Vec<Key> = {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            entries
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect()
        };
        for key in gone {
            self.remove(&key);
        }
    }

    fn publish(&self, change: Change) {
        // No receivers is fine: nobody is streaming this kind right now.
        let _ = self.events.send(Arc::new(change));
    }
}

fn key_of(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::COMPONENT;
    use serde_json::json;

    fn comp(ns: &str, name: &str, value: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "state.in-memory", "version": "v1",
                     "metadata": [{"name": "k", "value": value}]}
        }))
        .unwrap()
    }

    #[test]
    fn lists_per_namespace_and_reports_changes() {
        let cache = Cache::new(&COMPONENT);
        let mut rx = cache.subscribe();
        cache.apply(&comp("a", "x", "1"));
        cache.apply(&comp("b", "y", "1"));
        cache.apply(&comp("a", "z", "1"));
        let names: Vec<_> = cache.list("a").iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["x", "z"]);
        assert_eq!(cache.list("b").len(), 1);
        assert!(cache.list("c").is_empty());
        // unchanged re-apply: no event
        cache.apply(&comp("a", "x", "1"));
        cache.apply(&comp("a", "x", "2"));
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        use ChangeKind::*;
        assert_eq!(kinds, [Created, Created, Created, Updated]);
    }

    #[test]
    fn entries_know_their_scopes_and_secret_refs() {
        let e = Entry::new(
            json!({"metadata": {"namespace": "a", "name": "x"}, "scopes": ["app"],
            "spec": {"metadata": [{"name": "p", "secretKeyRef": {"name": "s", "key": "k"}}]}}),
        );
        assert!(e.has_secret_refs && e.in_scope("app") && !e.in_scope("other"));
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("a", "x"));
        assert_eq!(e.value().unwrap()["spec"]["metadata"][0]["name"], "p");
        let plain = Entry::new(
            json!({"metadata": {"name": "y"}, "spec": {"metadata": [{"name": "p", "value": "v"}]}}),
        );
        assert!(!plain.has_secret_refs && plain.in_scope("anyone"));
    }

    #[test]
    fn relist_removes_objects_deleted_while_disconnected() {
        let cache = Cache::new(&COMPONENT);
        cache.apply(&comp("a", "x", "1"));
        cache.apply(&comp("a", "y", "1"));
        let mut rx = cache.subscribe();
        let seen: HashSet<Key> = [("a".to_owned(), "x".to_owned())].into();
        cache.retain(&seen);
        let c = rx.try_recv().unwrap();
        assert_eq!(c.kind, ChangeKind::Deleted);
        assert_eq!(c.old.as_ref().unwrap().name, "y");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn invalid_object_is_dropped_and_others_kept() {
        let cache = Cache::new(&COMPONENT);
        cache.apply(&comp("a", "good", "1"));
        cache.apply(&comp("a", "bad", "1"));
        let mut rx = cache.subscribe();
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "bad", "namespace": "a"},
            "spec": {"version": "v1"}
        }))
        .unwrap();
        cache.apply(&bad);
        assert_eq!(rx.try_recv().unwrap().kind, ChangeKind::Deleted);
        let names: Vec<_> = cache.list("a").iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["good"]);
    }
}
