//! Dapr's state query language (`v1.0-alpha1/state/{store}/query`), evaluated
//! over JSON values for stores that can enumerate their keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{StateError, StateItem};

/// A parsed query: `{"filter":..., "sort":[...], "page":{...}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Query {
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub sort: Vec<Sort>,
    #[serde(default)]
    pub page: Page,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum Filter {
    #[serde(rename = "EQ")]
    Eq(serde_json::Map<String, Value>),
    #[serde(rename = "NEQ")]
    Neq(serde_json::Map<String, Value>),
    #[serde(rename = "GT")]
    Gt(serde_json::Map<String, Value>),
    #[serde(rename = "GTE")]
    Gte(serde_json::Map<String, Value>),
    #[serde(rename = "LT")]
    Lt(serde_json::Map<String, Value>),
    #[serde(rename = "LTE")]
    Lte(serde_json::Map<String, Value>),
    #[serde(rename = "IN")]
    In(serde_json::Map<String, Value>),
    #[serde(rename = "AND")]
    And(Vec<Filter>),
    #[serde(rename = "OR")]
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Sort {
    pub key: String,
    #[serde(default)]
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Page {
    #[serde(default)]
    pub limit: usize,
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub key: String,
    pub item: StateItem,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResponse {
    pub results: Vec<QueryResult>,
    /// Token for the next page; `None` when this was the last one.
    pub token: Option<String>,
}

impl Query {
    /// Parses and checks a query document.
    pub fn parse(body: &[u8]) -> Result<Self, StateError> {
        let q: Query = serde_json::from_slice(body)
            .map_err(|e| StateError::InvalidRequest(format!("invalid query: {e}")))?;
        if let Some(f) = &q.filter {
            f.validate()?;
        }
        for s in &q.sort {
            match s.order.as_deref() {
                None | Some("ASC") | Some("DESC") => {}
                Some(o) => {
                    return Err(StateError::InvalidRequest(format!(
                        "invalid sort order '{o}': expected ASC or DESC"
                    )));
                }
            }
        }
        Ok(q)
    }

    /// Filters, sorts and pages `(key, item)` pairs whose values are JSON.
    /// Items whose value is not JSON never match a filter.
    pub fn run(
        &self,
        items: impl IntoIterator<Item = (String, StateItem)>,
    ) -> Result<QueryResponse, StateError> {
        let mut matched: Vec<(String, StateItem, Value)> = items
            .into_iter()
            .filter_map(|(k, item)| {
                let v: Value = serde_json::from_slice(&item.value).ok()?;
                match &self.filter {
                    Some(f) if !f.matches(&v) => None,
                    _ => Some((k, item, v)),
                }
            })
            .collect();
        matched.sort_by(|a, b| {
            for s in &self.sort {
                let ord = compare(lookup(&a.2, &s.key), lookup(&b.2, &s.key));
                let ord = if s.order.as_deref() == Some("DESC") {
                    ord.reverse()
                } else {
                    ord
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            a.0.cmp(&b.0)
        });
        let start = match &self.page.token {
            Some(t) if !t.is_empty() => t
                .parse::<usize>()
                .map_err(|_| StateError::InvalidRequest(format!("invalid page token '{t}'")))?,
            _ => 0,
        };
        let total = matched.len();
        let end = if self.page.limit == 0 {
            total
        } else {
            (start + self.page.limit).min(total)
        };
        let results = matched
            .into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .map(|(key, item, _)| QueryResult { key, item })
            .collect();
        let token = (self.page.limit > 0 && end < total).then(|| end.to_string());
        Ok(QueryResponse { results, token })
    }
}

impl Filter {
    fn validate(&self) -> Result<(), StateError> {
        match self {
            Filter::And(fs) | Filter::Or(fs) => {
                if fs.len() < 2 {
                    return Err(StateError::InvalidRequest(
                        "AND/OR filters need at least two operands".into(),
                    ));
                }
                fs.iter().try_for_each(Filter::validate)
            }
            Filter::In(m) => {
                one_field(m)?;
                if m.values().all(Value::is_array) {
                    Ok(())
                } else {
                    Err(StateError::InvalidRequest(
                        "IN filter needs an array of values".into(),
                    ))
                }
            }
            Filter::Eq(m)
            | Filter::Neq(m)
            | Filter::Gt(m)
            | Filter::Gte(m)
            | Filter::Lt(m)
            | Filter::Lte(m) => one_field(m),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        use std::cmp::Ordering::*;
        fn field<'a>(
            v: &'a Value,
            m: &'a serde_json::Map<String, Value>,
        ) -> Option<(Option<&'a Value>, &'a Value)> {
            m.iter().next().map(|(k, want)| (lookup(v, k), want))
        }
        let field = |m| field(v, m);
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(v)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(v)),
            Filter::Eq(m) => field(m).is_some_and(|(got, want)| got == Some(want)),
            Filter::Neq(m) => field(m).is_some_and(|(got, want)| got != Some(want)),
            Filter::In(m) => field(m).is_some_and(|(got, want)| {
                got.is_some_and(|g| want.as_array().is_some_and(|arr| arr.contains(g)))
            }),
            Filter::Gt(m) => field(m)
                .is_some_and(|(got, want)| got.is_some() && compare(got, Some(want)) == Greater),
            Filter::Gte(m) => field(m)
                .is_some_and(|(got, want)| got.is_some() && compare(got, Some(want)) != Less),
            Filter::Lt(m) => field(m)
                .is_some_and(|(got, want)| got.is_some() && compare(got, Some(want)) == Less),
            Filter::Lte(m) => field(m)
                .is_some_and(|(got, want)| got.is_some() && compare(got, Some(want)) != Greater),
        }
    }
}

fn one_field(m: &serde_json::Map<String, Value>) -> Result<(), StateError> {
    if m.len() == 1 {
        Ok(())
    } else {
        Err(StateError::InvalidRequest(
            "a comparison filter names exactly one field".into(),
        ))
    }
}

/// Looks up a dotted path (`person.org`) in a JSON value.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: &str) -> StateItem {
        StateItem {
            value: bytes::Bytes::from(v.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn filters_sorts_and_pages() {
        let data = vec![
            (
                "1".to_string(),
                item(r#"{"person":{"org":"Dev"},"state":"CA","n":3}"#),
            ),
            (
                "2".to_string(),
                item(r#"{"person":{"org":"Ops"},"state":"WA","n":1}"#),
            ),
            (
                "3".to_string(),
                item(r#"{"person":{"org":"Dev"},"state":"WA","n":2}"#),
            ),
            ("4".to_string(), item("not json")),
        ];
        let q = Query::parse(br#"{"filter":{"OR":[{"EQ":{"person.org":"Dev"}},{"IN":{"state":["WA"]}}]},"sort":[{"key":"n","order":"DESC"}],"page":{"limit":2}}"#).unwrap();
        let r = q.run(data.clone()).unwrap();
        assert_eq!(
            r.results.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["1", "3"]
        );
        assert_eq!(r.token.as_deref(), Some("2"));
        let q2 = Query {
            page: Page {
                limit: 2,
                token: r.token,
            },
            ..q
        };
        let r2 = q2.run(data).unwrap();
        assert_eq!(
            r2.results
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            ["2"]
        );
        assert_eq!(r2.token, None);
    }

    #[test]
    fn rejects_malformed_queries() {
        for bad in [
            &br#"{"filter":{"XOR":{}}}"#[..],
            br#"{"filter":{"AND":[{"EQ":{"a":1}}]}}"#,
            br#"{"filter":{"IN":{"a":1}}}"#,
            br#"{"sort":[{"key":"a","order":"UP"}]}"#,
            b"[1",
        ] {
            assert!(
                Query::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
