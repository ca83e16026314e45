//! Which changes an update stream forwards to one sidecar, following Dapr:
//! only the caller's namespace; an object whose scopes stop including the app
//! is sent as deleted, one that starts including it as created.

use std::sync::Arc;

use dapr_rs_proto::generated::dapr::proto::operator::v1::ResourceEventType;

use crate::cache::{Change, ChangeKind, Entry};

/// The event to send for `change` to app `app_id` (None: no scope
/// filtering) in `namespace`, if any.
pub fn event_for(
    change: &Change,
    namespace: &str,
    app_id: Option<&str>,
) -> Option<(Arc<Entry>, ResourceEventType)> {
    let in_ns = |e: &Option<Arc<Entry>>| e.as_ref().is_some_and(|e| e.namespace == namespace);
    if !in_ns(&change.old) && !in_ns(&change.new) {
        return None;
    }
    let sees = |e: &Option<Arc<Entry>>| {
        e.as_ref()
            .is_some_and(|e| app_id.is_none_or(|id| e.in_scope(id)))
    };
    let (saw, sees_now) = (sees(&change.old), sees(&change.new));
    match (change.kind, saw, sees_now) {
        (ChangeKind::Deleted, true, _) => Some((change.old.clone()?, ResourceEventType::Deleted)),
        (ChangeKind::Deleted, false, _) => None,
        (_, false, false) => None,
        (_, true, false) => Some((change.old.clone()?, ResourceEventType::Deleted)),
        (_, false, true) => Some((change.new.clone()?, ResourceEventType::Created)),
        (ChangeKind::Created, true, true) => {
            Some((change.new.clone()?, ResourceEventType::Created))
        }
        (_, true, true) => Some((change.new.clone()?, ResourceEventType::Updated)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(ns: &str, scopes: &[&str]) -> Option<Arc<Entry>> {
        Some(Arc::new(Entry::new(
            json!({"metadata": {"namespace": ns, "name": "c"}, "scopes": scopes}),
        )))
    }

    fn change(kind: ChangeKind, old: Option<Arc<Entry>>, new: Option<Arc<Entry>>) -> Change {
        Change { kind, old, new }
    }

    use ChangeKind::*;
    use ResourceEventType as T;

    #[test]
    fn other_namespaces_are_invisible() {
        let c = change(Created, None, entry("b", &[]));
        assert!(event_for(&c, "a", Some("app")).is_none());
        assert_eq!(event_for(&c, "b", Some("app")).unwrap().1, T::Created);
    }

    #[test]
    fn scope_changes_become_creations_and_deletions() {
        let added = change(Updated, entry("a", &["other"]), entry("a", &["app"]));
        assert_eq!(event_for(&added, "a", Some("app")).unwrap().1, T::Created);
        let removed = change(Updated, entry("a", &["app"]), entry("a", &["other"]));
        assert_eq!(event_for(&removed, "a", Some("app")).unwrap().1, T::Deleted);
        let never = change(Updated, entry("a", &["x"]), entry("a", &["y"]));
        assert!(event_for(&never, "a", Some("app")).is_none());
        let both = change(Updated, entry("a", &[]), entry("a", &["app"]));
        assert_eq!(event_for(&both, "a", Some("app")).unwrap().1, T::Updated);
    }

    #[test]
    fn deletions_only_for_apps_that_saw_the_object() {
        let d = change(Deleted, entry("a", &["app"]), None);
        assert_eq!(event_for(&d, "a", Some("app")).unwrap().1, T::Deleted);
        assert!(event_for(&d, "a", Some("other")).is_none());
        // Without an identity every object is visible.
        assert_eq!(event_for(&d, "a", None).unwrap().1, T::Deleted);
    }
}
