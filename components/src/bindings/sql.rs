//! What the SQL bindings (`bindings.postgresql`, `bindings.mysql`) share:
//! the `exec`/`query`/`close` operations, the `sql` and `params` request
//! metadata, and the timing metadata of every response.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{BindingError, InvokeRequest, InvokeResponse};

pub const EXEC: &str = "exec";
pub const QUERY: &str = "query";
pub const CLOSE: &str = "close";
pub const OPERATIONS: &[&str] = &[EXEC, QUERY, CLOSE];
pub const ROWS_AFFECTED: &str = "rows-affected";

/// One `exec` or `query` call.
pub struct Command {
    pub operation: String,
    pub sql: String,
    /// The `params` metadata: a JSON array of positional parameters.
    pub params: Vec<serde_json::Value>,
    started: DateTime<Utc>,
}

impl Command {
    pub fn from_request(req: &InvokeRequest) -> Result<Self, BindingError> {
        if req.operation != EXEC && req.operation != QUERY {
            return Err(BindingError::InvalidRequest(format!(
                "invalid operation type: {}. Expected {EXEC}, {QUERY}, or {CLOSE}",
                req.operation
            )));
        }
        let sql = req
            .meta("sql")
            .ok_or_else(|| BindingError::InvalidRequest("required metadata not set: sql".into()))?
            .to_owned();
        let params = match req.meta("params") {
            None => Vec::new(),
            Some(raw) => serde_json::from_str::<Vec<serde_json::Value>>(raw).map_err(|e| {
                BindingError::InvalidRequest(format!(
                    "invalid metadata property params: failed to unserialize into an array: {e}"
                ))
            })?,
        };
        Ok(Self {
            operation: req.operation.clone(),
            sql,
            params,
            started: Utc::now(),
        })
    }

    /// A response with `operation`, `sql` and `start-time` filled in.
    pub fn start(&self) -> InvokeResponse {
        InvokeResponse {
            metadata: HashMap::from([
                ("operation".to_owned(), self.operation.clone()),
                ("sql".to_owned(), self.sql.clone()),
                (
                    "start-time".to_owned(),
                    self.started.to_rfc3339_opts(SecondsFormat::Nanos, true),
                ),
            ]),
            ..Default::default()
        }
    }

    /// Adds `end-time` and `duration` (Go's duration text, e.g. `1.234ms`).
    pub fn finish(&self, resp: &mut InvokeResponse) {
        let end = Utc::now();
        let took = (end - self.started).to_std().unwrap_or_default();
        resp.metadata.insert(
            "end-time".to_owned(),
            end.to_rfc3339_opts(SecondsFormat::Nanos, true),
        );
        resp.metadata
            .insert("duration".to_owned(), go_duration(took));
    }
}

/// Go's `time.Duration.String()` for durations under an hour.
fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".to_owned()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        trim(format!("{:.3}", ns as f64 / 1e3)) + "µs"
    } else if ns < 1_000_000_000 {
        trim(format!("{:.6}", ns as f64 / 1e6)) + "ms"
    } else {
        trim(format!("{:.9}", ns as f64 / 1e9)) + "s"
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, md: &[(&str, &str)]) -> InvokeRequest {
        InvokeRequest {
            operation: op.to_owned(),
            metadata: md
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn commands_are_validated() {
        let c = Command::from_request(&req(
            "exec",
            &[("sql", "select $1"), ("params", "[1,\"a\"]")],
        ))
        .unwrap();
        assert_eq!(c.params.len(), 2);
        let e = Command::from_request(&req("exec", &[]))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("sql")));
        let e = Command::from_request(&req("query", &[("sql", "x"), ("params", "{}")]))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("params")));
        let e = Command::from_request(&req("drop", &[("sql", "x")]))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("invalid operation type")));
    }

    #[test]
    fn durations_read_like_go() {
        use std::time::Duration;
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(800)), "800ns");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
    }
}
