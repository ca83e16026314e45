//! `middleware.http.routeralias`: rewrites request paths before routing.
//!
//! Metadata `routes` is a JSON or YAML map of path template → new path. As in
//! Dapr (gorilla/mux templates):
//! - a template matches the whole percent-decoded path; `{name}` matches one
//!   segment (`[^/]+`), `{name:regex}` matches the regex;
//! - on a match the path becomes the new path (taken literally) and the query
//!   string is kept as sent; when the template has variables they are added to
//!   the query (`?id=1`) and the query is re-encoded with keys sorted;
//! - the legacy form — every metadata item one route (`/from: /to`) — is used
//!   when there is more than one item or no `routes`.
//!
//! Dapr registers the routes in map order, so which of two overlapping
//! templates wins is unspecified there; here templates without variables are
//! tried first, then the rest in lexicographic order.

use std::collections::BTreeMap;

use axum::{
    extract::Request,
    http::{Uri, uri::PathAndQuery},
};
use regex::Regex;

pub(super) struct RouterAlias {
    routes: Vec<Route>,
}

struct Route {
    template: String,
    regex: Regex,
    vars: Vec<String>,
    /// The new path, percent-encoded.
    target: String,
}

impl RouterAlias {
    /// From the Component's metadata items (name, literal value).
    pub(super) fn from_metadata(items: &[(String, String)]) -> Result<Self, String> {
        let routes_value = items
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("routes"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let mut pairs: Vec<(String, String)> = Vec::new();
        if items.is_empty() {
            // No routes: every request passes unchanged.
        } else if items.len() > 1 || routes_value.is_empty() {
            tracing::warn!(
                "routeralias: listing routes as metadata items is deprecated; use the 'routes' item"
            );
            for (k, v) in items {
                if k.is_empty() || v.is_empty() {
                    return Err("invalid key/value pair in metadata: must not be empty".into());
                }
                if !k.starts_with('/') {
                    tracing::warn!("routeralias: ignoring '{k}': a path template starts with '/'");
                    continue;
                }
                pairs.push((k.clone(), v.clone()));
            }
        } else {
            let map: BTreeMap<String, String> = match serde_json::from_str(routes_value) {
                Ok(m) => m,
                Err(_) => serde_saphyr::from_str(routes_value).map_err(|e| {
                    format!("failed to decode 'routes' property as JSON or YAML: {e}")
                })?,
            };
            pairs.extend(map);
        }
        let mut routes = pairs
            .into_iter()
            .map(|(template, target)| Route::new(template, &target))
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by(|a, b| {
            (!a.vars.is_empty(), &a.template).cmp(&(!b.vars.is_empty(), &b.template))
        });
        Ok(Self { routes })
    }

    pub(super) fn apply(&self, req: &mut Request) {
        if self.routes.is_empty() {
            return;
        }
        let raw_path = req.uri().path();
        let decoded = percent_decode(raw_path);
        let path = decoded.as_deref().unwrap_or(raw_path);
        let Some((route, caps)) = self
            .routes
            .iter()
            .find_map(|r| r.regex.captures(path).map(|c| (r, c)))
        else {
            return;
        };
        let vars: Vec<(&str, &str)> = route
            .vars
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                caps.name(&format!("v{i}"))
                    .map(|m| (name.as_str(), m.as_str()))
            })
            .collect();
        let query = if vars.is_empty() {
            req.uri().query().map(str::to_owned)
        } else {
            Some(encode_query(req.uri().query(), &vars))
        };
        let pq = match &query {
            Some(q) => format!("{}?{q}", route.target),
            None => route.target.clone(),
        };
        let mut parts = req.uri().clone().into_parts();
        let rewritten = PathAndQuery::try_from(pq).ok().and_then(|pq| {
            parts.path_and_query = Some(pq);
            Uri::from_parts(parts).ok()
        });
        match rewritten {
            Some(uri) => {
                tracing::debug!(from = %route.template, to = %uri, "routeralias: rewrote request path");
                *req.uri_mut() = uri;
            }
            None => tracing::warn!(
                template = %route.template,
                "routeralias: the rewritten request URI is invalid; leaving the request unchanged"
            ),
        }
    }
}

impl Route {
    fn new(template: String, target: &str) -> Result<Self, String> {
        if !target.starts_with('/') {
            return Err(format!(
                "route '{template}': the new path '{target}' must start with '/'"
            ));
        }
        let (regex, vars) = compile_template(&template)?;
        Ok(Self {
            template,
            regex,
            vars,
            target: encode_path(target),
        })
    }
}

/// A gorilla/mux path template as an anchored regex with groups `v0`, `v1`…
fn compile_template(template: &str) -> Result<(Regex, Vec<String>), String> {
    let mut pattern = String::from("^");
    let mut vars = Vec::new();
    let mut literal_start = 0;
    let mut level = 0usize;
    let mut open = 0;
    for (i, c) in template.char_indices() {
        match c {
            '{' => {
                if level == 0 {
                    pattern.push_str(&regex::escape(&template[literal_start..i]));
                    open = i;
                }
                level += 1;
            }
            '}' => {
                level = level
                    .checked_sub(1)
                    .ok_or_else(|| format!("route '{template}': unbalanced braces"))?;
                if level == 0 {
                    let inner = &template[open + 1..i];
                    let (name, patt) = match inner.split_once(':') {
                        Some((n, p)) => (n, p),
                        None => (inner, "[^/]+"),
                    };
                    if name.is_empty() || patt.is_empty() {
                        return Err(format!(
                            "route '{template}': missing name or pattern in '{{{inner}}}'"
                        ));
                    }
                    pattern.push_str(&format!("(?P<v{}>{patt})", vars.len()));
                    vars.push(name.to_owned());
                    literal_start = i + 1;
                }
            }
            _ => {}
        }
    }
    if level != 0 {
        return Err(format!("route '{template}': unbalanced braces"));
    }
    pattern.push_str(&regex::escape(&template[literal_start..]));
    pattern.push('$');
    let regex = Regex::new(&pattern).map_err(|e| format!("route '{template}': {e}"))?;
    Ok((regex, vars))
}

/// The percent-decoded path, when it differs and is UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query with `vars` added, encoded as Go's `url.Values.Encode` does:
/// keys sorted, values in order, `QueryEscape`d.
fn encode_query(query: Option<&str>, vars: &[(&str, &str)]) -> String {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        values
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    for (k, v) in vars {
        values
            .entry((*k).to_owned())
            .or_default()
            .push((*v).to_owned());
    }
    let mut out = String::new();
    for (k, vs) in &values {
        for v in vs {
            if !out.is_empty() {
                out.push('&');
            }
            escape_into(&mut out, k, EscapeMode::Query);
            out.push('=');
            escape_into(&mut out, v, EscapeMode::Query);
        }
    }
    out
}

fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    escape_into(&mut out, path, EscapeMode::Path);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapeMode {
    Query,
    Path,
}

/// Go's `url.QueryEscape` (Query) and path escaping (Path).
fn escape_into(out: &mut String, s: &str, mode: EscapeMode) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (mode == EscapeMode::Path
                && matches!(
                    b,
                    b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'@'
                ));
        if keep {
            out.push(b as char);
        } else if b == b' ' && mode == EscapeMode::Query {
            out.push('+');
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(routes: &str) -> RouterAlias {
        RouterAlias::from_metadata(&[("routes".into(), routes.into())]).unwrap()
    }

    fn rewrite(ra: &RouterAlias, uri: &str) -> String {
        let mut req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        ra.apply(&mut req);
        req.uri().to_string()
    }

    const ROUTES_JSON: &str = r#"{
        "/v1.0/mall/activity/info": "/v1.0/invoke/srv.default/method/mall/activity/info",
        "/v1.0/hello/activity/{id}/info": "/v1.0/invoke/srv.default/method/hello/activity/info",
        "/v1.0/hello/activity/{id}/user": "/v1.0/invoke/srv.default/method/hello/activity/user"
    }"#;

    fn check(ra: &RouterAlias) {
        assert_eq!(
            rewrite(ra, "/v1.0/mall/activity/info?id=123"),
            "/v1.0/invoke/srv.default/method/mall/activity/info?id=123"
        );
        assert_eq!(
            rewrite(ra, "/v1.0/hello/activity/1/info"),
            "/v1.0/invoke/srv.default/method/hello/activity/info?id=1"
        );
        assert_eq!(
            rewrite(ra, "/v1.0/hello/activity/1/user?userid=123"),
            "/v1.0/invoke/srv.default/method/hello/activity/user?id=1&userid=123"
        );
        assert_eq!(
            rewrite(ra, "/v1.0/invoke/srv.default"),
            "/v1.0/invoke/srv.default"
        );
    }

    #[test]
    fn routes_as_json_yaml_and_legacy_items() {
        check(&alias(ROUTES_JSON));
        check(&alias(
            r#"
"/v1.0/mall/activity/info": "/v1.0/invoke/srv.default/method/mall/activity/info"
"/v1.0/hello/activity/{id}/info": "/v1.0/invoke/srv.default/method/hello/activity/info"
"/v1.0/hello/activity/{id}/user": "/v1.0/invoke/srv.default/method/hello/activity/user"
"#,
        ));
        let legacy: BTreeMap<String, String> = serde_json::from_str(ROUTES_JSON).unwrap();
        let items: Vec<(String, String)> = legacy.into_iter().collect();
        check(&RouterAlias::from_metadata(&items).unwrap());
    }

    #[test]
    fn query_kept_verbatim_without_variables() {
        let ra = alias(r#"{"/a": "/b"}"#);
        assert_eq!(rewrite(&ra, "/a?x=1&x=2&y=%20z+"), "/b?x=1&x=2&y=%20z+");
        assert_eq!(rewrite(&ra, "/a"), "/b");
        // Whole-path match only.
        assert_eq!(rewrite(&ra, "/a/"), "/a/");
        assert_eq!(rewrite(&ra, "/ab"), "/ab");
    }

    #[test]
    fn variables_are_decoded_and_requery_encoded() {
        let ra = alias(r#"{"/u/{name}/{n:[0-9]+}": "/v1.0/invoke/x/method/u"}"#);
        assert_eq!(
            rewrite(&ra, "/u/a%20b/42?z=1&a=%7E"),
            "/v1.0/invoke/x/method/u?a=~&n=42&name=a+b&z=1"
        );
        assert_eq!(rewrite(&ra, "/u/a/b"), "/u/a/b");
    }

    #[test]
    fn absolute_uris_keep_scheme_and_authority() {
        let ra = alias(r#"{"/a": "/b"}"#);
        assert_eq!(rewrite(&ra, "http://h:1/a?q=1"), "http://h:1/b?q=1");
    }

    #[test]
    fn bad_routes_are_rejected() {
        for bad in [
            r#"{"/a/{": "/b"}"#,
            r#"{"/a/{:x}": "/b"}"#,
            r#"{"/a/{x:(}": "/b"}"#,
            r#"{"/a": "b"}"#,
            "[not, a, map]",
        ] {
            assert!(
                RouterAlias::from_metadata(&[("routes".into(), bad.into())]).is_err(),
                "{bad}"
            );
        }
        assert!(
            RouterAlias::from_metadata(&[("/a".into(), "".into()), ("/b".into(), "/c".into())])
                .is_err()
        );
        assert!(RouterAlias::from_metadata(&[]).unwrap().routes.is_empty());
    }

    #[test]
    fn targets_are_percent_encoded() {
        let ra = alias(r#"{"/a": "/b c/ü"}"#);
        assert_eq!(rewrite(&ra, "/a"), "/b%20c/%C3%BC");
    }
}
