//! Which requesters get their pods injected: Dapr only patches pods created
//! by the built-in controllers, a few known operators, `system:masters`, and
//! the service accounts listed in `ALLOWED_SERVICE_ACCOUNTS`. Pods from other
//! users are admitted unchanged.

use thiserror::Error;

/// Dapr's built-in list (`namespace:service-account`).
pub const DEFAULT_ALLOWED: [&str; 10] = [
    "kube-system:replicaset-controller",
    "kube-system:replication-controller",
    "kube-system:deployment-controller",
    "kube-system:cronjob-controller",
    "kube-system:job-controller",
    "kube-system:statefulset-controller",
    "kube-system:daemon-set-controller",
    "openshift-operator-lifecycle-manager:olm-operator-serviceaccount",
    "tekton-pipelines:tekton-pipelines-controller",
    "mirrord:mirrord-operator",
];

const SYSTEM_GROUP: &str = "system:masters";
const SA_PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("invalid allowed service account '{0}': must be <namespace>:<name> (globs allowed)")]
    Shape(String),
    #[error("invalid allowed service account '{0}': unterminated '[' in glob")]
    Glob(String),
}

/// `namespace:name` glob patterns.
#[derive(Debug, Clone)]
pub struct Allowed {
    patterns: Vec<(String, String)>,
}

impl Allowed {
    /// Dapr's defaults plus `extra` entries (comma-separated lists are split
    /// by the caller); blank entries are skipped.
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for p in DEFAULT_ALLOWED.into_iter().chain(extra) {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (ns, name) = match p.split(':').collect::<Vec<_>>().as_slice() {
                [ns, name] if !(ns.trim().is_empty() && name.trim().is_empty()) => {
                    (ns.trim().to_owned(), name.trim().to_owned())
                }
                _ => return Err(PatternError::Shape(p.to_owned())),
            };
            if !glob_is_valid(&ns) || !glob_is_valid(&name) {
                return Err(PatternError::Glob(p.to_owned()));
            }
            patterns.push((ns, name));
        }
        Ok(Self { patterns })
    }

    /// Whether a request by `username` in `groups` may have its pod patched.
    pub fn permits(&self, username: &str, groups: &[String]) -> bool {
        if groups.iter().any(|g| g == SYSTEM_GROUP) {
            return true;
        }
        let Some(rest) = username.strip_prefix(SA_PREFIX) else {
            return false;
        };
        let mut parts = rest.split(':');
        let (Some(ns), Some(name)) = (parts.next(), parts.next()) else {
            return false;
        };
        self.patterns.iter().any(|(pn, pa)| {
            glob(pn.as_bytes(), ns.as_bytes()) && glob(pa.as_bytes(), name.as_bytes())
        })
    }
}

fn glob_is_valid(p: &str) -> bool {
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'[' => match class_end(b, i) {
                Some(end) => i = end + 1,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Index of the `]` closing the class opened at `start`.
fn class_end(p: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&b'^') {
        i += 1;
    }
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == b']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negate, class) = match class.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut hit = false;
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            if class[i] <= c && c <= class[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if class[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    hit != negate
}

/// Shell-style glob (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes) over a whole
/// string, as Go's `path.Match` does for names without `/`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| glob(rest, &s[k..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', _)) => match class_end(p, 0) {
            Some(end) => {
                !s.is_empty() && class_matches(&p[1..end], s[0]) && glob(&p[end + 1..], &s[1..])
            }
            None => false,
        },
        Some((b'\\', rest)) => match rest.split_first() {
            Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
            None => false,
        },
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> String {
        format!("system:serviceaccount:{ns}:{name}")
    }

    #[test]
    fn controllers_and_masters_are_allowed() {
        let a = Allowed::new([]).unwrap();
        assert!(a.permits(&sa("kube-system", "replicaset-controller"), &[]));
        assert!(a.permits(&sa("kube-system", "job-controller"), &[]));
        assert!(!a.permits(&sa("default", "default"), &[]));
        assert!(!a.permits("alice", &[]));
        assert!(a.permits("admin", &["system:masters".to_owned()]));
    }

    #[test]
    fn extra_entries_with_globs() {
        let a = Allowed::new(["ci:deployer", " tenant-*:builder-?", "ops:[ab]x"]).unwrap();
        assert!(a.permits(&sa("ci", "deployer"), &[]));
        assert!(a.permits(&sa("tenant-42", "builder-1"), &[]));
        assert!(!a.permits(&sa("tenant-42", "builder-12"), &[]));
        assert!(a.permits(&sa("ops", "bx"), &[]));
        assert!(!a.permits(&sa("ops", "cx"), &[]));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(matches!(
            Allowed::new(["nocolon"]),
            Err(PatternError::Shape(_))
        ));
        assert!(matches!(
            Allowed::new(["a:b:c"]),
            Err(PatternError::Shape(_))
        ));
        assert!(matches!(
            Allowed::new(["ns:[ab"]),
            Err(PatternError::Glob(_))
        ));
        assert!(Allowed::new(["", " "]).is_ok());
    }
}
