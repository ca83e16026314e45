//! The `path` label of HTTP metrics, as Dapr derives it.
//!
//! - `increasedCardinality: true` (Dapr's default, "legacy"): the URL path
//!   with the variable parts Dapr knows about removed (state keys, secret
//!   names, actor ids, workflow instance ids).
//! - `increasedCardinality: false`: no path at all (`path=""`), except the
//!   static app-facing paths and `pathMatching` patterns.
//! - `pathMatching`: patterns like `/v1.0/invoke/{app}/method/orders/{id}`;
//!   a path that matches one is labelled with the pattern.

use std::borrow::Cow;

const STATIC_PATHS: &[&str] = &[
    "/dapr/config",
    "/dapr/metrics",
    "/dapr/subscribe",
    "/healthz",
];

#[derive(Debug, Clone)]
pub struct PathLabeler {
    legacy: bool,
    patterns: Vec<Vec<String>>,
    raw_patterns: Vec<String>,
}

impl PathLabeler {
    pub fn new(legacy: bool, patterns: &[String]) -> Self {
        Self {
            legacy,
            patterns: patterns
                .iter()
                .map(|p| segments(&normalize(p)).map(str::to_owned).collect())
                .collect(),
            raw_patterns: patterns.iter().map(|p| normalize(p).into_owned()).collect(),
        }
    }

    pub fn legacy(&self) -> bool {
        self.legacy
    }

    pub fn label<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if STATIC_PATHS.contains(&path) {
            return Cow::Borrowed(path);
        }
        let normalized = normalize(path);
        if let Some(p) = self.matching(&normalized) {
            return Cow::Owned(p.to_owned());
        }
        if !self.legacy {
            return Cow::Borrowed("");
        }
        match legacy_label(&normalized) {
            Some(l) => Cow::Owned(l),
            None => normalized,
        }
    }

    fn matching(&self, path: &str) -> Option<&str> {
        let segs: Vec<&str> = segments(path).collect();
        self.patterns
            .iter()
            .position(|pat| {
                pat.len() == segs.len()
                    && pat
                        .iter()
                        .zip(&segs)
                        .all(|(p, s)| (p.starts_with('{') && p.ends_with('}')) || p == s)
            })
            .map(|i| self.raw_patterns[i].as_str())
    }
}

fn segments(p: &str) -> impl Iterator<Item = &str> {
    p.trim_start_matches('/').split('/')
}

fn normalize(p: &str) -> Cow<'_, str> {
    if p.starts_with('/') && !p.contains("//") {
        return Cow::Borrowed(p);
    }
    let mut s = p.to_owned();
    while s.contains("//") {
        s = s.replace("//", "/");
    }
    if !s.starts_with('/') {
        s.insert(0, '/');
    }
    Cow::Owned(s)
}

/// Dapr's low-cardinality rewrite of API paths; `None` keeps the path.
fn legacy_label(path: &str) -> Option<String> {
    let p: Vec<&str> = path[1..].splitn(6, '/').collect();
    if p.len() < 3 {
        return None;
    }
    if p[0] == "actors" {
        let mut p = p;
        p[2] = "{id}";
        return Some(p.join("/"));
    }
    match p[1] {
        "state" | "secrets" => Some(format!("/{}", p[..3].join("/"))),
        "actors" if p.len() >= 5 => {
            let mut p = p;
            p[3] = "{id}";
            Some(format!("/{}", p[..5].join("/")))
        }
        "workflows" if p.len() >= 4 => {
            let mut p = p;
            if p.len() == 4 {
                p[3] = "{instanceId}";
                return Some(format!("/{}", p.join("/")));
            }
            if p.len() == 5 && p[4].starts_with("start") {
                return Some(format!("/{}/start", p[..4].join("/")));
            }
            p[3] = "{instanceId}";
            if p.len() == 6 && p[4] == "raiseEvent" && !p[5].is_empty() {
                p[5] = "{eventName}";
                return Some(format!("/{}", p.join("/")));
            }
            Some(format!("/{}", p[..5].join("/")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_labels_drop_keys_and_ids() {
        let l = PathLabeler::new(true, &[]);
        assert_eq!(
            l.label("/v1.0/state/statestore/order-1"),
            "/v1.0/state/statestore"
        );
        assert_eq!(l.label("/v1.0/secrets/vault/db"), "/v1.0/secrets/vault");
        assert_eq!(
            l.label("/v1.0/actors/Cart/42/method/add"),
            "/v1.0/actors/Cart/{id}/method"
        );
        assert_eq!(
            l.label("/v1.0/invoke/app/method/orders"),
            "/v1.0/invoke/app/method/orders"
        );
        assert_eq!(l.label("//v1.0//healthz"), "/v1.0/healthz");
        assert_eq!(
            l.label("/v1.0-beta1/workflows/dapr/wf1/start"),
            "/v1.0-beta1/workflows/dapr/wf1/start"
        );
        assert_eq!(
            l.label("/v1.0-beta1/workflows/dapr/abc/raiseEvent/ev"),
            "/v1.0-beta1/workflows/dapr/{instanceId}/raiseEvent/{eventName}"
        );
    }

    #[test]
    fn low_cardinality_and_path_matching() {
        let l = PathLabeler::new(false, &["/v1.0/invoke/{app}/method/orders/{id}".into()]);
        assert_eq!(l.label("/v1.0/state/statestore/k"), "");
        assert_eq!(l.label("/dapr/subscribe"), "/dapr/subscribe");
        assert_eq!(
            l.label("/v1.0/invoke/shop/method/orders/7"),
            "/v1.0/invoke/{app}/method/orders/{id}"
        );
        assert_eq!(l.label("/v1.0/invoke/shop/method/orders"), "");
    }
}
