//! Operation-pattern lookup with Dapr's matching rules.
//!
//! Patterns and operations are `/`-separated paths. Per segment a pattern may
//! be literal, `*` (one whole segment), `**` (the rest of the path, any
//! depth) or contain `*` as a glob (`get*`, `*.json`). Lookup walks the path
//! from the root, at each step taking the first child (in insertion order)
//! that matches, without backtracking, and stops at the first node that has
//! a rule:
//!
//! - a rule on a literal or glob segment also covers every deeper path
//!   (`/invoke` matches `/invoke/x/y`);
//! - a rule on `*` covers exactly one final segment, and also the path that
//!   ends right before it (`/op/*` matches `/op` and `/op/x`, not `/op/x/y`);
//! - a non-final `*` never matches (`/a/*/b` doesn't match `/a/x/b`);
//! - `**` matches any remainder, including nothing more.

#[derive(Debug, Default)]
struct Node {
    segment: String,
    rule: Option<usize>,
    children: Vec<Node>,
}

#[derive(Debug, Default)]
pub(crate) struct OperationTrie {
    root: Node,
}

impl OperationTrie {
    /// Adds `pattern` (starting with `/`) for rule `rule`. The first rule
    /// added for a pattern wins.
    pub(crate) fn insert(&mut self, pattern: &str, rule: usize) {
        let segments: Vec<&str> = pattern.split('/').skip(1).collect();
        let mut node = &mut self.root;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let pos = match node.children.iter().position(|c| c.segment == *segment) {
                Some(pos) => pos,
                None => {
                    node.children.push(Node {
                        segment: (*segment).to_owned(),
                        rule: None,
                        children: Vec::new(),
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[pos];
            if last && node.rule.is_none() {
                node.rule = Some(rule);
            }
        }
    }

    /// The rule matching `operation` (starting with `/`), if any.
    pub(crate) fn search(&self, operation: &str) -> Option<usize> {
        let segments: Vec<&str> = operation.split('/').skip(1).collect();
        let mut node = &self.root;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            node = child_matching(node, segment, last)?;
            if let Some(rule) = node.rule {
                if !last && node.segment == "*" {
                    continue;
                }
                return Some(rule);
            }
            if last {
                return child_matching(node, "*", true).and_then(|n| n.rule);
            }
        }
        None
    }
}

fn child_matching<'a>(node: &'a Node, segment: &str, last: bool) -> Option<&'a Node> {
    for child in &node.children {
        if child.segment == segment {
            return Some(child);
        }
        match child.segment.as_str() {
            "*" if last => return Some(child),
            "*" => continue,
            "**" => return Some(child),
            pattern if glob_match(segment.as_bytes(), pattern.as_bytes()) => return Some(child),
            _ => {}
        }
    }
    None
}

/// `*` in `pattern` matches any run of bytes, including none.
fn glob_match(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    // Position after the last `*` seen, and the text position it resumes from.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p + 1, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(patterns: &[&str]) -> OperationTrie {
        let mut t = OperationTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(p, i);
        }
        t
    }

    #[test]
    fn glob_segments() {
        assert!(glob_match(b"ABC", b"A*"));
        assert!(glob_match(b"ABC.a", b"A*"));
        assert!(glob_match(b"ABC", b"*C"));
        assert!(glob_match(b"ABC.a", b"*a"));
        assert!(glob_match(b"abcd", b"a*d"));
        assert!(glob_match(b"ABC.a", b"AB*.a"));
        assert!(glob_match(b"", b"*"));
        assert!(glob_match(b"aXbXc", b"a*b*c"));
        assert!(!glob_match(b"abc", b"a*d"));
        assert!(!glob_match(b"abc", b"ab"));
        assert!(!glob_match(b"ab", b"abc"));
    }

    #[test]
    fn exact_and_prefix_matching() {
        let t = trie(&["/op1", "/op2/a"]);
        assert_eq!(t.search("/op1"), Some(0));
        assert_eq!(
            t.search("/op1/deeper/still"),
            Some(0),
            "rules cover deeper paths"
        );
        assert_eq!(t.search("/op2/a"), Some(1));
        assert_eq!(t.search("/op2"), None);
        assert_eq!(t.search("/op2/b"), None);
        assert_eq!(t.search("/op3"), None);
        assert_eq!(t.search("/"), None);
    }

    #[test]
    fn single_segment_wildcard() {
        let t = trie(&["/op3/a/*"]);
        assert_eq!(t.search("/op3/a/b"), Some(0));
        assert_eq!(
            t.search("/op3/a"),
            Some(0),
            "trailing * also matches nothing"
        );
        assert_eq!(t.search("/op3/a/b/c"), None, "* is one segment only");
        assert_eq!(t.search("/op3/b/b"), None);
    }

    #[test]
    fn non_final_single_wildcard_never_matches() {
        let t = trie(&["/a/*/c"]);
        assert_eq!(t.search("/a/b/c"), None);
    }

    #[test]
    fn multi_segment_wildcard() {
        let t = trie(&["/op7/c/**"]);
        assert_eq!(t.search("/op7/c/d"), Some(0));
        assert_eq!(t.search("/op7/c/d/e/f"), Some(0));
        assert_eq!(t.search("/op7/d/e"), None);
    }

    #[test]
    fn dapr_mixed_patterns() {
        let t = trie(&[
            "/op6",
            "/op7/a/b/*",
            "/op7/a/b/c/f",
            "/op7/a/b*",
            "/op7/c/**",
        ]);
        assert_eq!(t.search("/op7/a/b/c"), Some(1));
        assert_eq!(t.search("/op7/a/b/c/d"), None);
        assert_eq!(t.search("/op7/a/b/c/f"), Some(2));
        assert_eq!(t.search("/op7/a/bc"), Some(3));
        assert_eq!(t.search("/op7/c/d/e"), Some(4));
        assert_eq!(t.search("/op6"), Some(0));
    }

    #[test]
    fn first_definition_wins_and_insertion_order_decides() {
        let t = trie(&["/a", "/a"]);
        assert_eq!(t.search("/a"), Some(0));
        // A glob child added first shadows a later literal sibling.
        let t = trie(&["/x*", "/xyz/deep"]);
        assert_eq!(t.search("/xyz/deep"), Some(0));
        let t = trie(&["/xyz/deep", "/x*"]);
        assert_eq!(t.search("/xyz/deep"), Some(0));
        assert_eq!(t.search("/xa"), Some(1));
    }
}
