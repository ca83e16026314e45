//! Service-invocation access control (`Configuration.spec.accessControl`).
//!
//! The callee's daprd decides, from the caller's SPIFFE identity (app id,
//! namespace, trust domain), whether an invoked operation is allowed:
//!
//! 1. find the policy for the caller's app id and namespace, and require its
//!    trust domain to match; without one, the global `defaultAction` applies;
//! 2. the policy's `defaultAction` (when set) replaces the global one;
//! 3. if an operation rule matches the path (see [`trie`] for the pattern
//!    rules), gRPC calls take its `action`, HTTP calls the action of the
//!    verb (or of `*`) if listed, else the default from steps 1-2.
//!
//! HTTP paths match case-insensitively, gRPC method names exactly.
//!
//! Paths are matched as given (plus a leading `/`): normalise them first
//! with [`normalize_method`], as daprd does at its invocation entry points.

mod trie;

use std::collections::HashMap;
use std::fmt;

use dapr_crds::AccessControlSpec;

use trie::OperationTrie;

/// The trust domain when `accessControl.trustDomain` is not set.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// HTTP verbs accepted in `operations[].httpVerb` (besides `*`).
pub const HTTP_VERBS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// `allow` or `deny`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("allow") {
            Some(Action::Allow)
        } else if s.eq_ignore_ascii_case("deny") {
            Some(Action::Deny)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `accessControl` section that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid accessControl: {field}: {reason}")]
pub struct AclError {
    /// Path of the offending field, e.g. `policies[1].operations[0].action`.
    pub field: String,
    pub reason: String,
}

/// A method name rejected by [`normalize_method`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid method '{method}': {reason}")]
pub struct InvalidMethod {
    pub method: String,
    pub reason: String,
}

/// Who is calling, from the caller's SPIFFE id
/// `spiffe://<trust_domain>/ns/<namespace>/<app_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity {
    pub app_id: String,
    pub namespace: String,
    pub trust_domain: String,
}

impl CallerIdentity {
    pub fn new(
        app_id: impl Into<String>,
        namespace: impl Into<String>,
        trust_domain: impl Into<String>,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            namespace: namespace.into(),
            trust_domain: trust_domain.into(),
        }
    }

    /// Parses `spiffe://<trust domain>/ns/<namespace>/<app id>`.
    pub fn from_spiffe_id(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_word, ns, app) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ns_word != "ns" || [td, ns, app].iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(Self::new(app, ns, td))
    }

    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

/// Which default decided, for Dapr's ACL metrics (`app` or `global`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionPolicy {
    /// The caller had no usable policy, or its policy sets no default.
    Global,
    /// The caller's policy sets a `defaultAction`.
    App,
}

impl ActionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionPolicy::Global => "global",
            ActionPolicy::App => "app",
        }
    }
}

/// The outcome of [`AccessControl::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub action_policy: ActionPolicy,
    /// Which rule decided, for logs.
    pub reason: String,
}

#[derive(Debug)]
struct OperationRule {
    pattern: String,
    /// Upper-case verb (or `*`) to action.
    verbs: HashMap<String, Action>,
    action: Action,
}

#[derive(Debug)]
struct AppPolicy {
    default_action: Option<Action>,
    trust_domain: String,
    rules: Vec<OperationRule>,
    /// Patterns as written, for gRPC.
    exact: OperationTrie,
    /// Lower-cased patterns, for HTTP.
    lowercase: OperationTrie,
}

/// A validated `accessControl` section.
#[derive(Debug)]
pub struct AccessControl {
    default_action: Action,
    trust_domain: String,
    /// By app id, then namespace.
    policies: HashMap<String, HashMap<String, AppPolicy>>,
}

impl Default for AccessControl {
    /// What daprd applies without an `accessControl` section: allow everything.
    fn default() -> Self {
        Self {
            default_action: Action::Allow,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            policies: HashMap::new(),
        }
    }
}

impl AccessControl {
    /// `None` (no section in the Configuration) allows everything.
    pub fn from_configuration(spec: Option<&AccessControlSpec>) -> Result<Self, AclError> {
        spec.map_or_else(|| Ok(Self::default()), Self::from_spec)
    }

    /// Validates and indexes `spec`. Actions must be `allow` or `deny`; each
    /// policy needs an `appId`, `namespace` and `trustDomain`; each operation
    /// a `name`, an `action` and known HTTP verbs.
    pub fn from_spec(spec: &AccessControlSpec) -> Result<Self, AclError> {
        let err = |field: String, reason: String| AclError { field, reason };
        let action =
            |field: String, value: &str, required: bool| -> Result<Option<Action>, AclError> {
                if value.is_empty() && !required {
                    return Ok(None);
                }
                Action::parse(value)
                    .map(Some)
                    .ok_or_else(|| err(field, format!("must be 'allow' or 'deny', got '{value}'")))
            };

        let default_action = action("defaultAction".to_owned(), &spec.default_action, false)?
            .unwrap_or(Action::Allow);
        let trust_domain = if spec.trust_domain.is_empty() {
            DEFAULT_TRUST_DOMAIN.to_owned()
        } else {
            spec.trust_domain.clone()
        };

        let mut policies = HashMap::new();
        for (i, p) in spec.policies.iter().enumerate() {
            let field = |name: &str| format!("policies[{i}].{name}");
            for (name, value) in [
                ("appId", &p.app_id),
                ("namespace", &p.namespace),
                ("trustDomain", &p.trust_domain),
            ] {
                if value.is_empty() {
                    return Err(err(field(name), "must be set".to_owned()));
                }
            }
            let policy_default = action(field("defaultAction"), &p.default_action, false)?;

            let mut app = AppPolicy {
                default_action: policy_default,
                trust_domain: p.trust_domain.clone(),
                rules: Vec::new(),
                exact: OperationTrie::default(),
                lowercase: OperationTrie::default(),
            };
            for (j, op) in p.operations.iter().enumerate() {
                let field = |name: &str| format!("policies[{i}].operations[{j}].{name}");
                if op.name.is_empty() {
                    return Err(err(field("name"), "must be set".to_owned()));
                }
                let op_action = action(field("action"), &op.action, true)?.unwrap_or(Action::Deny);
                let mut verbs = HashMap::new();
                for (k, verb) in op.http_verb.iter().enumerate() {
                    let upper = verb.trim().to_ascii_uppercase();
                    if upper != "*" && !HTTP_VERBS.contains(&upper.as_str()) {
                        return Err(err(
                            format!("policies[{i}].operations[{j}].httpVerb[{k}]"),
                            format!("unknown HTTP verb '{verb}'"),
                        ));
                    }
                    verbs.insert(upper, op_action);
                }
                let pattern = with_leading_slash(&op.name);
                let index = app.rules.len();
                app.exact.insert(&pattern, index);
                app.lowercase.insert(&pattern.to_lowercase(), index);
                app.rules.push(OperationRule {
                    pattern,
                    verbs,
                    action: op_action,
                });
            }
            let by_namespace: &mut HashMap<String, AppPolicy> =
                policies.entry(p.app_id.clone()).or_default();
            if by_namespace.insert(p.namespace.clone(), app).is_some() {
                tracing::warn!(
                    app_id = %p.app_id,
                    namespace = %p.namespace,
                    "duplicate access control policy; the later one is used"
                );
            }
        }
        Ok(Self {
            default_action,
            trust_domain,
            policies,
        })
    }

    /// The global default action.
    /// No `accessControl` section, or one that allows everything with no
    /// policies: Dapr then records no access-control metrics.
    pub fn is_allow_all(&self) -> bool {
        self.policies.is_empty() && self.default_action == Action::Allow
    }

    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// This app's trust domain (`public` unless configured).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Decides whether `caller` may invoke `operation`. Pass the HTTP verb for
    /// HTTP calls (path matched case-insensitively) and `None` for gRPC.
    pub fn check(
        &self,
        caller: &CallerIdentity,
        operation: &str,
        http_verb: Option<&str>,
    ) -> Decision {
        let global = |reason: String| Decision {
            allowed: self.default_action == Action::Allow,
            action_policy: ActionPolicy::Global,
            reason: format!("{reason}; global default action {}", self.default_action),
        };
        let Some(policy) = self
            .policies
            .get(&caller.app_id)
            .and_then(|by_namespace| by_namespace.get(&caller.namespace))
        else {
            return global(format!(
                "no policy for app '{}' in namespace '{}'",
                caller.app_id, caller.namespace
            ));
        };
        if policy.trust_domain != caller.trust_domain {
            return global(format!(
                "policy for app '{}' requires trust domain '{}', caller has '{}'",
                caller.app_id, policy.trust_domain, caller.trust_domain
            ));
        }

        let (mut action, action_policy, mut reason) = match policy.default_action {
            Some(a) => (a, ActionPolicy::App, format!("app default action {a}")),
            None => (
                self.default_action,
                ActionPolicy::Global,
                format!("global default action {}", self.default_action),
            ),
        };

        let path = with_leading_slash(operation);
        let rule = match http_verb {
            Some(_) => policy.lowercase.search(&path.to_lowercase()),
            None => policy.exact.search(&path),
        }
        .and_then(|i| policy.rules.get(i));

        match (rule, http_verb) {
            (None, _) => reason = format!("no operation rule matches; {reason}"),
            (Some(rule), None) => {
                action = rule.action;
                reason = format!("operation rule '{}': {action}", rule.pattern);
            }
            (Some(rule), Some(verb)) => {
                let verb = verb.trim().to_ascii_uppercase();
                if let Some(a) = rule.verbs.get(&verb) {
                    action = *a;
                    reason = format!("operation rule '{}' for {verb}: {action}", rule.pattern);
                } else if let Some(a) = rule.verbs.get("*") {
                    action = *a;
                    reason = format!("operation rule '{}' for any verb: {action}", rule.pattern);
                } else {
                    reason = format!(
                        "operation rule '{}' does not list {verb}; {reason}",
                        rule.pattern
                    );
                }
            }
        }
        Decision {
            allowed: action == Action::Allow,
            action_policy,
            reason,
        }
    }

    /// The decision for a caller without a verifiable identity (no mTLS):
    /// the global default action.
    pub fn check_unauthenticated(&self) -> Decision {
        Decision {
            allowed: self.default_action == Action::Allow,
            action_policy: ActionPolicy::Global,
            reason: format!(
                "caller identity unknown; global default action {}",
                self.default_action
            ),
        }
    }
}

/// Dapr's error text for a denied call. `http_verb` is `None` for gRPC.
pub fn denial_message(
    caller: Option<&CallerIdentity>,
    operation: &str,
    http_verb: Option<&str>,
) -> String {
    format!(
        "access control policy has denied access to id: {} operation: {operation} verb: {}",
        caller.map(CallerIdentity::spiffe_id).unwrap_or_default(),
        http_verb.map_or_else(|| "NONE".to_owned(), str::to_ascii_uppercase)
    )
}

fn with_leading_slash(s: &str) -> String {
    if s.starts_with('/') {
        s.to_owned()
    } else {
        format!("/{s}")
    }
}

/// Cleans an invoked method name before it is matched: rejects `#`, `?`,
/// NUL and control characters, and resolves `.`, `..` and repeated slashes
/// so that `admin/../public` cannot dodge a rule. Percent-decode HTTP paths
/// first. A leading `/` is kept; a result of `.` becomes empty.
pub fn normalize_method(method: &str) -> Result<String, InvalidMethod> {
    let invalid = |reason: String| InvalidMethod {
        method: method.to_owned(),
        reason,
    };
    if let Some(c) = method.chars().find(|c| matches!(c, '#' | '?' | '\0')) {
        return Err(invalid(format!("forbidden character {c:?}")));
    }
    if let Some(pos) = method.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(invalid(format!("control character at position {pos}")));
    }
    let rooted = method.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for segment in method.split('/') {
        match segment {
            "" | "." => {}
            // Going up from the start of the path stays at the start.
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    Ok(if rooted { format!("/{joined}") } else { joined })
}

#[cfg(test)]
mod tests;
