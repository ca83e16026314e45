//! `routes.rules`: CEL `match` expressions over the CloudEvent (`event.type`,
//! `event.data.x`, ...) choosing the app path; the first rule that matches
//! wins, a rule without `match` (the default route) always matches.

use std::{collections::HashMap, sync::Arc};

use cel::{
    Context, Env, Program,
    objects::{Key, Value},
};
use serde_json::{Map, Value as Json};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("invalid routing rule match '{expression}': {reason}")]
    Compile { expression: String, reason: String },
    #[error("evaluating routing rule match '{expression}': {reason}")]
    Eval { expression: String, reason: String },
}

struct Compiled {
    env: Arc<Env>,
    program: Program,
}

#[derive(Clone)]
pub struct Rule {
    expression: String,
    compiled: Option<Arc<Compiled>>,
    pub path: String,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("match", &self.expression)
            .field("path", &self.path)
            .finish()
    }
}

impl Rule {
    /// A rule; an empty `match` always matches.
    pub fn new(expression: &str, path: &str) -> Result<Self, RouteError> {
        let expression = expression.trim();
        let compiled = if expression.is_empty() {
            None
        } else {
            let env = Arc::new(Env::stdlib());
            let program = env.compile(expression).map_err(|e| RouteError::Compile {
                expression: expression.to_owned(),
                reason: e.to_string().replace('\n', "; "),
            })?;
            Some(Arc::new(Compiled { env, program }))
        };
        Ok(Self {
            expression: expression.to_owned(),
            compiled,
            path: path.to_owned(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    fn matches(&self, event: &Value) -> Result<bool, RouteError> {
        let Some(c) = &self.compiled else {
            return Ok(true);
        };
        let err = |reason: String| RouteError::Eval {
            expression: self.expression.clone(),
            reason,
        };
        let mut ctx = Context::with_env(Arc::clone(&c.env));
        ctx.add_variable_from_value("event", event.clone());
        match c.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(err(format!(
                "must evaluate to a boolean, got {:?}",
                other.type_of()
            ))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// The path of the first matching rule; `None` when nothing matches (the
/// event is dropped, as in Dapr).
pub fn find_route(rules: &[Rule], event: &Map<String, Json>) -> Result<Option<String>, RouteError> {
    if rules.iter().all(|r| r.compiled.is_none()) {
        return Ok(rules.first().map(|r| r.path.clone()));
    }
    let value = json_object_to_cel(event);
    for rule in rules {
        if rule.matches(&value)? {
            return Ok(Some(rule.path.clone()));
        }
    }
    Ok(None)
}

/// JSON to CEL. Integers become `int` (not `uint`) so `event.data.qty > 3`
/// compares like-typed values, as in Dapr's CEL environment.
fn json_to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(m) => json_object_to_cel(m),
    }
}

fn json_object_to_cel(m: &Map<String, Json>) -> Value {
    let map: HashMap<Key, Value> = m
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
        .collect();
    Value::Map(cel::objects::Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Map<String, Json> {
        serde_json::json!({"type": "order.created", "data": {"qty": 5, "kind": "book"}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn first_match_wins_and_default_catches_the_rest() {
        let rules = vec![
            Rule::new(r#"event.type == "order.deleted""#, "/deleted").unwrap(),
            Rule::new(
                r#"event.data.kind == "book" && event.data.qty > 3"#,
                "/big-books",
            )
            .unwrap(),
            Rule::new("", "/default").unwrap(),
        ];
        assert_eq!(
            find_route(&rules, &event()).unwrap().as_deref(),
            Some("/big-books")
        );
        let mut e = event();
        e.insert("type".into(), "other".into());
        e.insert("data".into(), serde_json::json!({"kind": "pen", "qty": 1}));
        assert_eq!(find_route(&rules, &e).unwrap().as_deref(), Some("/default"));
    }

    #[test]
    fn no_match_without_default_and_bad_rules() {
        let rules = vec![Rule::new(r#"event.type == "x""#, "/x").unwrap()];
        assert_eq!(find_route(&rules, &event()).unwrap(), None);
        assert!(Rule::new("event.type ==", "/x").is_err());
        let not_bool = vec![Rule::new("event.type", "/x").unwrap()];
        assert!(find_route(&not_bool, &event()).is_err());
    }
}
