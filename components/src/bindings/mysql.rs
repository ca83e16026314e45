//! `bindings.mysql`: `exec`, `query` and `close` against MySQL or MariaDB.
//!
//! `url` is a Go driver DSN (`user:pass@tcp(host:3306)/db?tls=false`) or a
//! `mysql://` URL; `pemPath` adds a root certificate for `tls=custom`. The
//! statement comes from the `sql` request metadata, its `?` parameters from
//! `params` (a JSON array). `query` returns a JSON array with one object per
//! row, column name → value, NULL columns left out (`null` for no rows), as
//! Dapr's component.

use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use mysql_async::{
    Opts, OptsBuilder, Params, Pool, Row, SslOpts, Value, consts::ColumnType, prelude::Queryable,
};

use super::{BindingError, InvokeRequest, InvokeResponse, OutputBinding, sql};
use crate::ComponentMetadata;

/// The binary character set: such string columns hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

pub struct MySqlBinding {
    pool: tokio::sync::RwLock<Option<Pool>>,
}

fn my_err(e: mysql_async::Error) -> BindingError {
    BindingError::Backend(format!("error executing query: {e}"))
}

impl MySqlBinding {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let url = md.require("url")?;
        let opts = parse_dsn(url, md.get("pemPath"))
            .map_err(|e| BindingError::invalid_metadata("url", e))?;
        let mut opts = opts;
        if let Some(n) = md.get_parsed::<usize>("maxOpenConns")? {
            let n = n.max(1);
            let constraints = mysql_async::PoolConstraints::new(1.min(n), n).ok_or_else(|| {
                BindingError::invalid_metadata("maxOpenConns", "must be at least 1")
            })?;
            opts = opts.pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints));
        }
        let pool = Pool::new(opts);
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|e| BindingError::Connect(format!("unable to ping the DB: {e}")))?;
        conn.ping()
            .await
            .map_err(|e| BindingError::Connect(format!("unable to ping the DB: {e}")))?;
        drop(conn);
        Ok(Self {
            pool: tokio::sync::RwLock::new(Some(pool)),
        })
    }
}

/// `[user[:password]@][net[(addr)]]/dbname[?param=value&...]`, or a
/// `mysql://` URL.
fn parse_dsn(dsn: &str, pem_path: Option<&str>) -> Result<OptsBuilder, String> {
    if dsn.starts_with("mysql://") {
        let opts = Opts::from_url(dsn).map_err(|e| format!("invalid mysql:// URL: {e}"))?;
        let mut b = OptsBuilder::from_opts(opts).prefer_socket(false);
        if let Some(pem) = pem_path {
            b = b.ssl_opts(Some(
                SslOpts::default().with_root_certs(vec![PathBuf::from(pem).into()]),
            ));
        }
        return Ok(b);
    }
    let slash = dsn
        .rfind('/')
        .ok_or("illegal Data Source Name: missing the slash before the database name")?;
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (db, query) = tail.split_once('?').unwrap_or((tail, ""));
    let (creds, addr_part) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, pass) = match creds {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (c.to_owned(), None),
        },
        None => (String::new(), None),
    };
    let (net, addr) = match addr_part.split_once('(') {
        Some((net, rest)) => (
            net,
            rest.strip_suffix(')')
                .ok_or("illegal Data Source Name: unclosed address parenthesis")?,
        ),
        None if addr_part.is_empty() => ("tcp", "127.0.0.1:3306"),
        None => (addr_part, ""),
    };
    let mut b = OptsBuilder::default()
        .user((!user.is_empty()).then_some(user))
        .pass(pass)
        .db_name((!db.is_empty()).then(|| db.to_owned()))
        .prefer_socket(false);
    match net {
        "tcp" => {
            let addr = if addr.is_empty() {
                "127.0.0.1:3306"
            } else {
                addr
            };
            let (host, port) = match addr.rsplit_once(':') {
                Some((h, p)) => (
                    h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p.parse::<u16>()
                        .map_err(|_| format!("invalid port in '{addr}'"))?,
                ),
                None => (addr.to_owned(), 3306),
            };
            b = b.ip_or_hostname(host).tcp_port(port);
        }
        "unix" => b = b.socket(Some(addr.to_owned())),
        other => return Err(format!("unsupported network '{other}' (tcp or unix)")),
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "tls" {
            let ssl = match v {
                "false" | "" => None,
                "true" => Some(SslOpts::default()),
                "skip-verify" | "preferred" => Some(
                    SslOpts::default()
                        .with_danger_accept_invalid_certs(true)
                        .with_danger_skip_domain_validation(true),
                ),
                "custom" => {
                    let pem = pem_path.ok_or("tls=custom requires the pemPath metadata field")?;
                    Some(SslOpts::default().with_root_certs(vec![PathBuf::from(pem).into()]))
                }
                other => return Err(format!("invalid tls value '{other}'")),
            };
            b = b.ssl_opts(ssl);
        }
        // Other driver parameters (parseTime, charset, ...) change nothing
        // here: times are always read as times, text as UTF-8.
    }
    Ok(b)
}

fn param_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::NULL,
        J::Bool(b) => Value::Int(i64::from(*b)),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Double(n.as_f64().unwrap_or_default())
            }
        }
        J::String(s) => Value::Bytes(s.clone().into_bytes()),
        other => Value::Bytes(other.to_string().into_bytes()),
    }
}

/// One row as Dapr's component shows it: column → value, NULLs left out.
fn row_json(row: Row) -> serde_json::Value {
    use serde_json::Value as J;
    let columns = row.columns();
    let values = row.unwrap();
    let mut out = serde_json::Map::new();
    for (col, value) in columns.iter().zip(values) {
        let ty = col.column_type();
        let json = match value {
            Value::NULL => continue,
            Value::Int(i) => J::from(i),
            Value::UInt(u) => J::from(u),
            Value::Float(f) => J::from(f as f64),
            Value::Double(f) => J::from(f),
            Value::Date(y, mo, d, h, mi, s, us) => J::String(
                if matches!(
                    ty,
                    ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
                ) {
                    format!("{y:04}-{mo:02}-{d:02}T00:00:00Z")
                } else if us > 0 {
                    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
                } else {
                    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
                },
            ),
            Value::Time(neg, days, h, mi, s, us) => {
                let hours = u32::from(h) + days * 24;
                let sign = if neg { "-" } else { "" };
                J::String(if us > 0 {
                    format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
                } else {
                    format!("{sign}{hours:02}:{mi:02}:{s:02}")
                })
            }
            Value::Bytes(b) => {
                let text = col.character_set() != BINARY_CHARSET
                    || matches!(
                        ty,
                        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL
                    );
                match (text, String::from_utf8(b)) {
                    (true, Ok(s)) if ty == ColumnType::MYSQL_TYPE_JSON => {
                        serde_json::from_str(&s).unwrap_or(J::String(s))
                    }
                    (true, Ok(s)) => J::String(s),
                    // Go encodes raw bytes as base64.
                    (_, Ok(s)) => J::String(base64::engine::general_purpose::STANDARD.encode(s)),
                    (_, Err(e)) => {
                        J::String(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
                    }
                }
            }
        };
        out.insert(col.name_str().into_owned(), json);
    }
    J::Object(out)
}

#[async_trait]
impl OutputBinding for MySqlBinding {
    fn operations(&self) -> Vec<String> {
        sql::OPERATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation == sql::CLOSE {
            if let Some(pool) = self.pool.write().await.take() {
                let _ = pool.disconnect().await;
            }
            return Ok(InvokeResponse::default());
        }
        let cmd = sql::Command::from_request(&req)?;
        let pool = self.pool.read().await.clone().ok_or(BindingError::Closed)?;
        let mut conn = pool.get_conn().await.map_err(my_err)?;
        let params = if cmd.params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(cmd.params.iter().map(param_value).collect())
        };
        let mut resp = cmd.start();
        match cmd.operation.as_str() {
            sql::EXEC => {
                if matches!(params, Params::Empty) {
                    // Text protocol: DDL and statements that cannot be prepared.
                    conn.query_drop(cmd.sql.as_str()).await.map_err(my_err)?;
                } else {
                    conn.exec_drop(cmd.sql.as_str(), params)
                        .await
                        .map_err(my_err)?;
                }
                resp.metadata.insert(
                    sql::ROWS_AFFECTED.to_owned(),
                    conn.affected_rows().to_string(),
                );
            }
            _ => {
                let rows: Vec<Row> = conn.exec(cmd.sql.as_str(), params).await.map_err(my_err)?;
                let body = if rows.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::Array(rows.into_iter().map(row_json).collect())
                };
                resp.data = Bytes::from(body.to_string());
            }
        }
        cmd.finish(&mut resp);
        Ok(resp)
    }

    async fn close(&self) {
        if let Some(pool) = self.pool.write().await.take() {
            let _ = pool.disconnect().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_dsns() {
        let o: Opts = parse_dsn(
            "root:p@ss@tcp(127.0.0.1:13306)/dapr?tls=false&parseTime=true",
            None,
        )
        .unwrap()
        .into();
        assert_eq!(o.user(), Some("root"));
        assert_eq!(o.pass(), Some("p@ss"));
        assert_eq!(o.tcp_port(), 13306);
        assert_eq!(o.db_name(), Some("dapr"));
        let o: Opts = parse_dsn("/db", None).unwrap().into();
        assert_eq!(o.tcp_port(), 3306);
        for bad in [
            "nodb",
            "u@tcp(127.0.0.1:x)/d",
            "u@tcp(h/d",
            "u@tcp(h:1)/d?tls=maybe",
        ] {
            assert!(parse_dsn(bad, None).is_err(), "{bad}");
        }
        assert!(parse_dsn("u@tcp(h:1)/d?tls=custom", None).is_err());
    }

    #[tokio::test]
    async fn missing_url_names_the_field() {
        let err = MySqlBinding::connect(&ComponentMetadata::new("db", "app"))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("'url'")));
    }
}
