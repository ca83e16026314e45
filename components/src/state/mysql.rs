//! `state.mysql`: MySQL and MariaDB with the table layout of Dapr's MySQL
//! state store, so a table can be shared with Go sidecars in either
//! direction.
//!
//! Layout, in the schema `schemaName` (default `dapr_state_store`, created if
//! missing; the database in the connection string is only used to connect):
//! - `tableName` (default `state`): `id VARCHAR(255) PRIMARY KEY`,
//!   `value JSON NOT NULL`, `isbinary BOOLEAN NOT NULL`,
//!   `insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP`,
//!   `updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP`,
//!   `eTag VARCHAR(36) NOT NULL`, `expiredate TIMESTAMP NULL` (index
//!   `expiredate_idx`), `row_id BIGINT UNSIGNED AUTO_INCREMENT` (unique key
//!   `row_id_uidx`).
//! - `metadataTableName` (default `dapr_metadata`): `id VARCHAR(255) PRIMARY
//!   KEY`, `value TEXT NOT NULL`; the row `last-cleanup` coordinates TTL
//!   sweeps between sidecars.
//!
//! Values declared as JSON (an `application/json` content type, or the
//! `contentType` request metadata Dapr's gRPC API uses) are stored as JSON
//! with `isbinary = 0`, as Dapr does for JSON values; anything else is stored
//! as a base64 JSON string with `isbinary = 1`, which keeps the bytes exact. Etags are random UUIDs
//! (lowercase, hyphenated), renewed on every write.

use std::{collections::HashMap, future::Future, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use mysql_async::{
    Conn, Opts, OptsBuilder, Params, Pool, SslOpts, Value,
    prelude::{Queryable, ToValue},
};

use super::{
    BulkGetItem, Concurrency, DeleteRequest, Features, GetRequest, InitError, SetRequest,
    StateError, StateItem, StateStore, TTL_EXPIRE_TIME_KEY, TransactionOp,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_TABLE: &str = "state";
const DEFAULT_SCHEMA: &str = "dapr_state_store";
const DEFAULT_METADATA_TABLE: &str = "dapr_metadata";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
const JSON_CONTENT_TYPE: &str = "application/json";
/// Keys per `IN (...)` query of a bulk get.
const BULK_GET_CHUNK: usize = 500;
/// MySQL error for a duplicate primary key.
const ER_DUP_ENTRY: u16 = 1062;
/// MySQL error for an index name that already exists.
const ER_DUP_KEYNAME: u16 = 1061;

// ---------------------------------------------------------------------------
// Go MySQL DSN
// ---------------------------------------------------------------------------

/// How TLS is used, from the DSN's `tls` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsParam {
    Off,
    /// `true`: verify against the system roots.
    Verify,
    /// `skip-verify`: encrypt without checking the certificate.
    SkipVerify,
    /// `preferred`: like skip-verify, but plain text if the server has no TLS.
    Preferred,
    /// `custom`: verify against the `pemPath` certificate.
    Custom,
}

/// A parsed Go MySQL driver DSN:
/// `[user[:password]@][net[(addr)]]/dbname[?param=value&...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dsn {
    user: Option<String>,
    password: Option<String>,
    /// `tcp` or `unix`.
    net: String,
    /// `host:port` for tcp, a socket path for unix.
    addr: String,
    db: Option<String>,
    tls: TlsParam,
    /// Dial timeout (`timeout=`).
    connect_timeout: Option<Duration>,
    max_allowed_packet: Option<usize>,
    cleartext_passwords: bool,
    /// Parameters the Go driver sends as `SET name=value`.
    system_vars: Vec<(String, String)>,
}

/// Go driver parameters that have no equivalent here (or need none).
const IGNORED_DSN_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "writeTimeout",
];

fn query_unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "invalid percent escape in DSN parameter".to_owned())?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "DSN parameter is not UTF-8".to_owned())
}

impl Dsn {
    fn parse(dsn: &str) -> Result<Self, String> {
        // The database name cannot contain '/', so the last one separates it.
        let slash = dsn.rfind('/').ok_or_else(|| {
            "invalid DSN: missing the slash separating the database name".to_owned()
        })?;
        let (left, right) = (&dsn[..slash], &dsn[slash + 1..]);

        let (userinfo, netaddr) = match left.rfind('@') {
            Some(at) => (Some(&left[..at]), &left[at + 1..]),
            None => (None, left),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(ui.to_owned()), None),
            },
        };
        let (net, addr) = match netaddr.find('(') {
            Some(open) => {
                let inner = netaddr[open + 1..].strip_suffix(')').ok_or_else(|| {
                    "invalid DSN: network address not terminated (missing closing brace)".to_owned()
                })?;
                (&netaddr[..open], inner)
            }
            None => (netaddr, ""),
        };
        let net = if net.is_empty() { "tcp" } else { net }.to_owned();
        let addr = match (net.as_str(), addr) {
            ("tcp", "") => "127.0.0.1:3306".to_owned(),
            ("tcp", a) if !has_port(a) && a.contains(':') => format!("[{a}]:3306"),
            ("tcp", a) if !has_port(a) => format!("{a}:3306"),
            ("unix", "") => "/tmp/mysql.sock".to_owned(),
            ("tcp" | "unix", a) => a.to_owned(),
            (other, _) => return Err(format!("unsupported network '{other}' in DSN")),
        };

        let (db, params) = right.split_once('?').unwrap_or((right, ""));
        let mut out = Dsn {
            user: user.filter(|u| !u.is_empty()),
            password,
            net,
            addr,
            db: (!db.is_empty()).then(|| query_unescape(db)).transpose()?,
            tls: TlsParam::Off,
            connect_timeout: None,
            max_allowed_packet: None,
            cleartext_passwords: false,
            system_vars: Vec::new(),
        };
        for param in params.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').ok_or_else(|| {
                format!(
                    "invalid DSN parameter '{}'",
                    param.split('=').next().unwrap_or("")
                )
            })?;
            let value = query_unescape(value)?;
            match key {
                "tls" => {
                    out.tls = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => TlsParam::Verify,
                        "false" | "0" => TlsParam::Off,
                        "skip-verify" => TlsParam::SkipVerify,
                        "preferred" => TlsParam::Preferred,
                        "custom" => TlsParam::Custom,
                        other => return Err(format!("unsupported tls config '{other}' in DSN")),
                    }
                }
                "timeout" => {
                    out.connect_timeout = Some(
                        crate::duration::parse_go_duration(&value).map_err(|e| e.to_string())?,
                    )
                }
                "maxAllowedPacket" => {
                    out.max_allowed_packet = Some(
                        value
                            .parse()
                            .map_err(|_| "invalid maxAllowedPacket in DSN".to_owned())?,
                    )
                }
                "allowCleartextPasswords" => {
                    out.cleartext_passwords = matches!(value.as_str(), "true" | "1")
                }
                k if IGNORED_DSN_PARAMS.contains(&k) => {}
                k => {
                    if !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'@' || b == b'.')
                    {
                        return Err(format!("invalid DSN parameter name '{k}'"));
                    }
                    out.system_vars.push((k.to_owned(), value));
                }
            }
        }
        Ok(out)
    }

    fn opts(&self, pem_path: Option<&str>) -> Result<OptsBuilder, String> {
        let mut b = OptsBuilder::default()
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(self.db.clone())
            // Stay on the connection we were told to use.
            .prefer_socket(false)
            .enable_cleartext_plugin(self.cleartext_passwords)
            .max_allowed_packet(self.max_allowed_packet)
            .init(
                self.system_vars
                    .iter()
                    .map(|(k, v)| format!("SET {k}={v}"))
                    .collect::<Vec<_>>(),
            );
        if self.net == "unix" {
            b = b.socket(Some(self.addr.clone()));
        } else {
            let (host, port) = split_host_port(&self.addr)?;
            b = b.ip_or_hostname(host).tcp_port(port);
        }
        let ssl = match self.tls {
            TlsParam::Off => None,
            TlsParam::Verify => Some(SslOpts::default()),
            TlsParam::SkipVerify | TlsParam::Preferred => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsParam::Custom => {
                let pem = pem_path
                    .ok_or_else(|| "tls=custom requires the pemPath metadata field".to_owned())?;
                Some(
                    SslOpts::default()
                        .with_root_certs(vec![std::path::PathBuf::from(pem).into()])
                        .with_disable_built_in_roots(true),
                )
            }
        };
        Ok(b.ssl_opts(ssl))
    }
}

fn has_port(addr: &str) -> bool {
    if addr.starts_with('[') {
        addr.contains("]:")
    } else {
        // More than one ':' is a bare IPv6 address.
        addr.matches(':').count() == 1
    }
}

fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let i = addr
        .rfind(':')
        .ok_or_else(|| format!("missing port in address '{addr}'"))?;
    let host = addr[..i].trim_start_matches('[').trim_end_matches(']');
    let port = addr[i + 1..]
        .parse()
        .map_err(|_| format!("invalid port in address '{addr}'"))?;
    Ok((host.to_owned(), port))
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Settings {
    opts: OptsBuilder,
    tls_preferred: bool,
    connect_timeout: Duration,
    schema: String,
    table: String,
    metadata_table: String,
    timeout: Duration,
    cleanup_interval: Option<Duration>,
}

fn invalid(field: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Names are spliced into SQL; Dapr allows only ASCII letters, digits and `_`.
fn valid_identifier(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, InitError> {
        let ident = |key: &str, default: &str| -> Result<String, MetadataError> {
            let v = md.get(key).unwrap_or(default);
            if valid_identifier(v) {
                Ok(v.to_owned())
            } else {
                Err(invalid(
                    key,
                    "only ASCII letters, digits and '_' are allowed",
                ))
            }
        };
        let table = ident("tableName", DEFAULT_TABLE)?;
        let schema = ident("schemaName", DEFAULT_SCHEMA)?;
        let metadata_table = ident("metadataTableName", DEFAULT_METADATA_TABLE)?;

        let timeout = if let Some(secs) = md.get_parsed::<i64>("timeoutInSeconds")? {
            if secs > 0 {
                Duration::from_secs(secs as u64)
            } else {
                DEFAULT_TIMEOUT
            }
        } else {
            match md.get_duration("timeout")? {
                Some(d) if !d.is_zero() => d,
                _ => DEFAULT_TIMEOUT,
            }
        };
        let cleanup_interval = match md.get("cleanupInterval").map(str::trim) {
            None => Some(DEFAULT_CLEANUP_INTERVAL),
            Some(v) if v.starts_with('-') => None,
            Some(v) => {
                let d = crate::duration::parse_go_duration(v)
                    .map_err(|e| invalid("cleanupInterval", e.to_string()))?;
                (!d.is_zero()).then_some(d)
            }
        };

        let conn = md.require("connectionString")?;
        let pem_path = md.get("pemPath");
        let (opts, tls_preferred, dial_timeout) = if conn.starts_with("mysql://") {
            let opts = Opts::from_url(conn)
                .map_err(|e| invalid("connectionString", format!("invalid mysql:// URL: {e}")))?;
            let mut b = OptsBuilder::from_opts(opts).prefer_socket(false);
            if let Some(pem) = pem_path {
                b = b.ssl_opts(Some(
                    SslOpts::default().with_root_certs(vec![std::path::PathBuf::from(pem).into()]),
                ));
            }
            (b, false, None)
        } else {
            let dsn = Dsn::parse(conn).map_err(|e| invalid("connectionString", e))?;
            let opts = dsn
                .opts(pem_path)
                .map_err(|e| invalid("connectionString", e))?;
            (opts, dsn.tls == TlsParam::Preferred, dsn.connect_timeout)
        };
        Ok(Self {
            opts,
            tls_preferred,
            connect_timeout: dial_timeout.unwrap_or(timeout),
            schema,
            table,
            metadata_table,
            timeout,
            cleanup_interval,
        })
    }
}

// ---------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------

struct Sql {
    get: String,
    /// `SELECT … WHERE id IN (` — the placeholders and `)` are appended.
    bulk_get_prefix: String,
    bulk_get_suffix: String,
    replace: String,
    replace_ttl: String,
    insert: String,
    insert_ttl: String,
    delete_expired_key: String,
    update_with_etag: String,
    update_with_etag_ttl: String,
    delete: String,
    delete_with_etag: String,
    update_last_cleanup: String,
    delete_expired: String,
}

impl Sql {
    fn new(t: &str, meta: &str) -> Self {
        let live = "(expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)";
        let ttl = "CURRENT_TIMESTAMP + INTERVAL ? SECOND";
        let cols = "(id, value, eTag, isbinary, expiredate)";
        let update = |exp: &str| {
            format!(
                "UPDATE {t} SET value = ?, eTag = ?, isbinary = ?, expiredate = {exp} \
                 WHERE id = ? AND eTag = ? AND {live}"
            )
        };
        Self {
            // UNIX_TIMESTAMP avoids depending on the session time zone.
            get: format!(
                "SELECT value, eTag, isbinary, UNIX_TIMESTAMP(expiredate) FROM {t} WHERE id = ? AND {live}"
            ),
            bulk_get_prefix: format!(
                "SELECT id, value, eTag, isbinary, UNIX_TIMESTAMP(expiredate) FROM {t} WHERE {live} AND id IN ("
            ),
            bulk_get_suffix: ")".to_owned(),
            replace: format!("REPLACE INTO {t} {cols} VALUES (?, ?, ?, ?, NULL)"),
            replace_ttl: format!("REPLACE INTO {t} {cols} VALUES (?, ?, ?, ?, {ttl})"),
            insert: format!("INSERT INTO {t} {cols} VALUES (?, ?, ?, ?, NULL)"),
            insert_ttl: format!("INSERT INTO {t} {cols} VALUES (?, ?, ?, ?, {ttl})"),
            delete_expired_key: format!(
                "DELETE FROM {t} WHERE id = ? AND expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP"
            ),
            update_with_etag: update("NULL"),
            update_with_etag_ttl: update(ttl),
            delete: format!("DELETE FROM {t} WHERE id = ?"),
            delete_with_etag: format!("DELETE FROM {t} WHERE id = ? AND eTag = ? AND {live}"),
            // Only one sidecar sharing the table sweeps per interval: the
            // timestamp is moved only once the interval (ms) has passed, and
            // the sweep runs only if the row changed.
            update_last_cleanup: format!(
                "INSERT INTO {meta} (id, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP) \
                 ON DUPLICATE KEY UPDATE value = IF(CURRENT_TIMESTAMP > DATE_ADD(value, INTERVAL ?*1000 MICROSECOND), CURRENT_TIMESTAMP, value)"
            ),
            delete_expired: format!(
                "DELETE FROM {t} WHERE expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP"
            ),
        }
    }
}

fn my_err(e: mysql_async::Error) -> StateError {
    StateError::Backend(e.to_string())
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

async fn exec_affected<Q: Queryable>(
    q: &mut Q,
    sql: &str,
    params: Vec<Value>,
) -> Result<u64, mysql_async::Error> {
    let result = q.exec_iter(sql, Params::Positional(params)).await?;
    let n = result.affected_rows();
    result.drop_result().await?;
    Ok(n)
}

fn parse_etag(etag: &str) -> Result<String, StateError> {
    uuid::Uuid::parse_str(etag)
        .map(|u| u.to_string())
        .map_err(|_| StateError::EtagInvalid(etag.to_owned()))
}

fn is_json_content_type(ct: Option<&str>) -> bool {
    ct.and_then(|c| c.split(';').next())
        .map(|c| {
            let c = c.trim().to_ascii_lowercase();
            c == JSON_CONTENT_TYPE || c.ends_with("+json")
        })
        .unwrap_or(false)
}

/// The `value` column text and `isbinary` flag for a value.
fn encode_value(value: &[u8], content_type: Option<&str>) -> (String, bool) {
    if is_json_content_type(content_type)
        && let Ok(text) = std::str::from_utf8(value)
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return (text.to_owned(), false);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    (format!("\"{b64}\""), true)
}

fn decode_value(raw: Vec<u8>, is_binary: bool) -> Result<(Bytes, Option<String>), StateError> {
    if !is_binary {
        return Ok((Bytes::from(raw), Some(JSON_CONTENT_TYPE.to_owned())));
    }
    let s: String = serde_json::from_slice(&raw).map_err(|e| {
        StateError::Backend(format!("stored binary value is not a JSON string: {e}"))
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| StateError::Backend(format!("stored binary value is not base64: {e}")))?;
    Ok((Bytes::from(bytes), None))
}

/// Reads `UNIX_TIMESTAMP(expiredate)`, which servers return as an integer or
/// a decimal string.
fn unix_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Double(d) => Some(*d as i64),
        Value::Float(f) => Some(*f as i64),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.split('.').next())
            .and_then(|s| s.parse().ok()),
        _ => None,
    }
}

fn value_bytes(v: Value) -> Result<Vec<u8>, StateError> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::NULL => Err(StateError::Backend("unexpected NULL column".into())),
        _ => Err(StateError::Backend("unexpected column type".into())),
    }
}

fn value_bool(v: &Value) -> bool {
    match v {
        Value::Int(i) => *i != 0,
        Value::UInt(u) => *u != 0,
        Value::Bytes(b) => !matches!(b.as_slice(), b"0" | b""),
        _ => false,
    }
}

fn row_values(row: mysql_async::Row) -> Vec<Value> {
    row.unwrap_raw()
        .into_iter()
        .map(|v| v.unwrap_or(Value::NULL))
        .collect()
}

/// Builds an item from `value, eTag, isbinary, UNIX_TIMESTAMP(expiredate)`.
fn item_from_columns(mut cols: Vec<Value>) -> Result<StateItem, StateError> {
    if cols.len() < 4 {
        return Err(StateError::Backend("unexpected row shape".into()));
    }
    let expires = cols.pop().as_ref().and_then(unix_seconds);
    let is_binary = cols.pop().as_ref().is_some_and(value_bool);
    let etag = String::from_utf8(value_bytes(cols.pop().unwrap_or(Value::NULL))?)
        .map_err(|_| StateError::Backend("stored etag is not UTF-8".into()))?;
    let raw = value_bytes(cols.pop().unwrap_or(Value::NULL))?;
    let (value, content_type) = decode_value(raw, is_binary)?;
    let mut metadata = HashMap::new();
    if let Some(at) = expires.and_then(|s| chrono::DateTime::from_timestamp(s, 0)) {
        // Go formats this with time.RFC3339: whole seconds, `Z`.
        metadata.insert(
            TTL_EXPIRE_TIME_KEY.to_owned(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    Ok(StateItem {
        value,
        etag: Some(etag),
        metadata,
        content_type,
    })
}

/// Whole seconds, rounding a fraction up so an item never expires early.
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

async fn do_set<Q: Queryable>(q: &mut Q, sql: &Sql, req: &SetRequest) -> Result<(), StateError> {
    // Dapr's gRPC API marks JSON values with the `contentType` metadata.
    let content_type = req
        .content_type
        .as_deref()
        .or_else(|| req.metadata.get("contentType").map(String::as_str));
    let (value, is_binary) = encode_value(&req.value, content_type);
    let new_etag = uuid::Uuid::new_v4().to_string();
    let ttl = req.ttl.map(ttl_secs);
    let mut params: Vec<Value> = Vec::with_capacity(6);
    if let Some(etag) = &req.etag {
        let etag = parse_etag(etag)?;
        params.extend([value.to_value(), new_etag.to_value(), is_binary.to_value()]);
        if let Some(t) = ttl {
            params.push(t.to_value());
        }
        params.extend([req.key.to_value(), etag.to_value()]);
        let stmt = if ttl.is_some() {
            &sql.update_with_etag_ttl
        } else {
            &sql.update_with_etag
        };
        let n = exec_affected(q, stmt, params).await.map_err(my_err)?;
        if n == 0 {
            return Err(StateError::EtagMismatch);
        }
        return Ok(());
    }
    params.extend([
        req.key.to_value(),
        value.to_value(),
        new_etag.to_value(),
        is_binary.to_value(),
    ]);
    if let Some(t) = ttl {
        params.push(t.to_value());
    }
    match req.concurrency {
        Concurrency::LastWrite => {
            let stmt = if ttl.is_some() {
                &sql.replace_ttl
            } else {
                &sql.replace
            };
            exec_affected(q, stmt, params).await.map_err(my_err)?;
        }
        Concurrency::FirstWrite => {
            // An expired row that has not been swept yet counts as absent.
            exec_affected(q, &sql.delete_expired_key, vec![req.key.to_value()])
                .await
                .map_err(my_err)?;
            let stmt = if ttl.is_some() {
                &sql.insert_ttl
            } else {
                &sql.insert
            };
            match exec_affected(q, stmt, params).await {
                Ok(_) => {}
                Err(e) if server_code(&e) == Some(ER_DUP_ENTRY) => {
                    return Err(StateError::EtagMismatch);
                }
                Err(e) => return Err(my_err(e)),
            }
        }
    }
    Ok(())
}

async fn do_delete<Q: Queryable>(
    q: &mut Q,
    sql: &Sql,
    req: &DeleteRequest,
) -> Result<(), StateError> {
    match &req.etag {
        Some(etag) => {
            let etag = parse_etag(etag)?;
            let n = exec_affected(
                q,
                &sql.delete_with_etag,
                vec![req.key.to_value(), etag.to_value()],
            )
            .await
            .map_err(my_err)?;
            if n == 0 {
                return Err(StateError::EtagMismatch);
            }
        }
        None => {
            exec_affected(q, &sql.delete, vec![req.key.to_value()])
                .await
                .map_err(my_err)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

fn init_err(what: &'static str) -> impl Fn(mysql_async::Error) -> InitError {
    move |e| InitError::Connect(format!("{what}: {e}"))
}

async fn exists(conn: &mut Conn, sql: &str, params: Vec<Value>) -> Result<bool, InitError> {
    let n: Option<i64> = conn
        .exec_first(sql, Params::Positional(params))
        .await
        .map_err(init_err("inspecting the schema"))?;
    Ok(n.unwrap_or(0) > 0)
}

async fn ensure_schema(conn: &mut Conn, schema: &str) -> Result<(), InitError> {
    let found = exists(
        conn,
        "SELECT COUNT(*) FROM information_schema.schemata WHERE SCHEMA_NAME = ?",
        vec![schema.to_value()],
    )
    .await?;
    if !found {
        tracing::info!(schema, "creating mysql schema");
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {schema} CHARACTER SET utf8mb4"
        ))
        .await
        .map_err(init_err("creating the schema"))?;
    }
    Ok(())
}

async fn column_exists(
    conn: &mut Conn,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<bool, InitError> {
    exists(
        conn,
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = ? AND table_name = ? AND column_name = ?",
        vec![schema.to_value(), table.to_value(), column.to_value()],
    )
    .await
}

/// Creates the state and metadata tables, and adds the columns later Dapr
/// versions introduced (`expiredate`, `row_id`) to tables made by older ones.
async fn ensure_tables(conn: &mut Conn, s: &Settings) -> Result<(), InitError> {
    let (schema, table, meta) = (&s.schema, &s.table, &s.metadata_table);
    let table_sql =
        "SELECT COUNT(*) FROM information_schema.tables WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    if !exists(conn, table_sql, vec![schema.to_value(), table.to_value()]).await? {
        tracing::info!(table = %table, "creating mysql state table");
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id VARCHAR(255) NOT NULL PRIMARY KEY,
                value JSON NOT NULL,
                isbinary BOOLEAN NOT NULL,
                insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
                eTag VARCHAR(36) NOT NULL,
                expiredate TIMESTAMP NULL,
                INDEX expiredate_idx(expiredate),
                row_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
                UNIQUE KEY row_id_uidx (row_id)
            )"
        ))
        .await
        .map_err(init_err("creating the state table"))?;
    }
    if !column_exists(conn, schema, table, "expiredate").await? {
        tracing::info!(table = %table, "adding expiredate to mysql state table");
        conn.query_drop(format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate TIMESTAMP NULL"
        ))
        .await
        .map_err(init_err("adding expiredate"))?;
        match conn
            .query_drop(format!(
                "CREATE INDEX expiredate_idx ON {table} (expiredate)"
            ))
            .await
        {
            Err(e) if server_code(&e) != Some(ER_DUP_KEYNAME) => {
                return Err(init_err("indexing expiredate")(e));
            }
            _ => {}
        }
    }
    if !column_exists(conn, schema, table, "row_id").await? {
        tracing::info!(table = %table, "adding row_id to mysql state table");
        match conn
            .query_drop(format!(
                "ALTER TABLE {table} ADD COLUMN row_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, \
                 ADD UNIQUE KEY row_id_uidx (row_id)"
            ))
            .await
        {
            // A concurrent sidecar already added it.
            Err(e) if server_code(&e) != Some(ER_DUP_KEYNAME) && server_code(&e) != Some(1060) => {
                return Err(init_err("adding row_id")(e));
            }
            _ => {}
        }
    }
    if !exists(conn, table_sql, vec![schema.to_value(), meta.to_value()]).await? {
        tracing::info!(table = %meta, "creating mysql metadata table");
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {meta} (id VARCHAR(255) NOT NULL PRIMARY KEY, value TEXT NOT NULL)"
        ))
        .await
        .map_err(init_err("creating the metadata table"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

struct Inner {
    pool: Pool,
    sql: Sql,
    timeout: Duration,
    cleanup_interval: Option<Duration>,
}

impl Inner {
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            StateError::Backend(format!(
                "mysql operation timed out after {:?}",
                self.timeout
            ))
        })?
    }

    async fn conn(&self) -> Result<Conn, StateError> {
        self.pool.get_conn().await.map_err(my_err)
    }

    async fn cleanup_expired(&self) -> Result<u64, StateError> {
        let Some(interval) = self.cleanup_interval else {
            return Ok(0);
        };
        let mut conn = self.conn().await?;
        // A 100ms margin so a sweep is not skipped because of timer jitter.
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX) - 100;
        let claimed = exec_affected(
            &mut conn,
            &self.sql.update_last_cleanup,
            vec![interval_ms.to_value()],
        )
        .await
        .map_err(my_err)?;
        if claimed == 0 {
            tracing::debug!("mysql TTL sweep ran recently elsewhere; skipping");
            return Ok(0);
        }
        let removed = exec_affected(&mut conn, &self.sql.delete_expired, Vec::new())
            .await
            .map_err(my_err)?;
        tracing::debug!(removed, "mysql TTL sweep removed expired rows");
        Ok(removed)
    }
}

pub struct MySqlStore {
    inner: std::sync::Arc<Inner>,
    gc: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for MySqlStore {
    fn drop(&mut self) {
        if let Some(gc) = self.gc.take() {
            gc.abort();
        }
    }
}

/// Opens one connection; with `tls=preferred`, falls back to plain text if
/// the server offers no TLS. Returns the options that worked.
async fn first_connection(s: &Settings) -> Result<(Conn, OptsBuilder), InitError> {
    let connect = |opts: OptsBuilder| async move {
        match tokio::time::timeout(s.connect_timeout, Conn::new(opts)).await {
            Ok(r) => r.map_err(init_err("failed to connect to mysql")),
            Err(_) => Err(InitError::Connect("timed out connecting to mysql".into())),
        }
    };
    match connect(s.opts.clone()).await {
        Ok(c) => Ok((c, s.opts.clone())),
        Err(e) if s.tls_preferred => {
            tracing::debug!(error = %e, "mysql TLS connection failed; retrying without TLS (tls=preferred)");
            let plain = s.opts.clone().ssl_opts(None::<SslOpts>);
            Ok((connect(plain.clone()).await?, plain))
        }
        Err(e) => Err(e),
    }
}

impl MySqlStore {
    pub async fn connect(metadata: &ComponentMetadata) -> Result<Self, InitError> {
        let s = Settings::from_metadata(metadata)?;
        let (mut conn, opts) = first_connection(&s).await?;
        let setup = async {
            ensure_schema(&mut conn, &s.schema).await?;
            conn.query_drop(format!("USE {}", s.schema))
                .await
                .map_err(init_err("selecting the schema"))?;
            ensure_tables(&mut conn, &s).await
        };
        tokio::time::timeout(s.timeout + Duration::from_secs(60), setup)
            .await
            .map_err(|_| InitError::Connect("timed out preparing the mysql tables".into()))??;
        if let Err(e) = conn.disconnect().await {
            tracing::debug!(error = %e, "closing the mysql setup connection failed");
        }

        let pool = Pool::new(opts.db_name(Some(s.schema.clone())));
        let inner = std::sync::Arc::new(Inner {
            pool,
            sql: Sql::new(&s.table, &s.metadata_table),
            timeout: s.timeout,
            cleanup_interval: s.cleanup_interval,
        });
        let gc = s.cleanup_interval.map(|interval| {
            let inner = inner.clone();
            tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    ticker.tick().await;
                    if let Err(e) = inner.cleanup_expired().await {
                        tracing::warn!(error = %e, "mysql TTL sweep failed");
                    }
                }
            })
        });
        tracing::debug!(schema = %s.schema, table = %s.table, "mysql state store ready");
        Ok(Self { inner, gc })
    }

    /// Deletes expired rows now (if no sidecar sharing the table did so
    /// within the cleanup interval). Returns how many rows were removed.
    pub async fn cleanup_expired(&self) -> Result<u64, StateError> {
        self.inner.timed(self.inner.cleanup_expired()).await
    }
}

#[async_trait]
impl StateStore for MySqlStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
            query: false,
        }
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.conn().await?;
                let row: Option<mysql_async::Row> = conn
                    .exec_first(&inner.sql.get, (req.key.as_str(),))
                    .await
                    .map_err(my_err)?;
                row.map(|r| item_from_columns(row_values(r))).transpose()
            })
            .await
    }

    async fn bulk_get(&self, reqs: &[GetRequest], _parallelism: usize) -> Vec<BulkGetItem> {
        let inner = &self.inner;
        let found = if reqs.is_empty() {
            Ok(HashMap::new())
        } else {
            inner
                .timed(async {
                    let mut conn = inner.conn().await?;
                    let mut found = HashMap::with_capacity(reqs.len());
                    // Bounded statements: servers cap placeholders per statement.
                    for chunk in reqs.chunks(BULK_GET_CHUNK) {
                        let placeholders = vec!["?"; chunk.len()].join(",");
                        let sql = format!(
                            "{}{placeholders}{}",
                            inner.sql.bulk_get_prefix, inner.sql.bulk_get_suffix
                        );
                        let params: Vec<Value> = chunk.iter().map(|r| r.key.to_value()).collect();
                        let rows: Vec<mysql_async::Row> = conn
                            .exec(sql, Params::Positional(params))
                            .await
                            .map_err(my_err)?;
                        for row in rows {
                            let mut cols = row_values(row);
                            if cols.is_empty() {
                                continue;
                            }
                            let key =
                                String::from_utf8(value_bytes(cols.remove(0))?).map_err(|_| {
                                    StateError::Backend("stored key is not UTF-8".into())
                                })?;
                            found.insert(key, item_from_columns(cols)?);
                        }
                    }
                    Ok(found)
                })
                .await
        };
        reqs.iter()
            .map(|r| BulkGetItem {
                key: r.key.clone(),
                result: match &found {
                    Ok(map) => Ok(map.get(&r.key).cloned()),
                    Err(e) => Err(e.clone()),
                },
            })
            .collect()
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.conn().await?;
                do_set(&mut conn, &inner.sql, req).await
            })
            .await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.conn().await?;
                do_delete(&mut conn, &inner.sql, req).await
            })
            .await
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                // Dropping the transaction on error (or timeout) rolls it back.
                let mut tx = inner
                    .pool
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .map_err(my_err)?;
                for op in ops {
                    match op {
                        TransactionOp::Set(r) => do_set(&mut tx, &inner.sql, r).await?,
                        TransactionOp::Delete(r) => do_delete(&mut tx, &inner.sql, r).await?,
                    }
                }
                tx.commit().await.map_err(my_err)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.conn().await?;
                conn.ping().await.map_err(my_err)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_dsns() {
        let d = Dsn::parse("root@tcp(127.0.0.1:13306)/dapr_test").unwrap();
        assert_eq!(d.user.as_deref(), Some("root"));
        assert_eq!(d.password, None);
        assert_eq!(
            (d.net.as_str(), d.addr.as_str()),
            ("tcp", "127.0.0.1:13306")
        );
        assert_eq!(d.db.as_deref(), Some("dapr_test"));
        assert_eq!(d.tls, TlsParam::Off);

        // Passwords may contain '@' and ':'; the last '@' ends them.
        let d = Dsn::parse(
            "dapr:p@ss:w@tcp(db.example)/?allowNativePasswords=true&tls=custom&timeout=5s\
             &sql_mode=%27ANSI_QUOTES%27&parseTime=true",
        )
        .unwrap();
        assert_eq!(d.user.as_deref(), Some("dapr"));
        assert_eq!(d.password.as_deref(), Some("p@ss:w"));
        assert_eq!(d.addr, "db.example:3306");
        assert_eq!(d.db, None);
        assert_eq!(d.tls, TlsParam::Custom);
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            d.system_vars,
            [("sql_mode".to_owned(), "'ANSI_QUOTES'".to_owned())]
        );

        let d = Dsn::parse("/").unwrap();
        assert_eq!((d.user, d.addr.as_str()), (None, "127.0.0.1:3306"));
        let d = Dsn::parse("u@unix(/run/mysqld/mysqld.sock)/db").unwrap();
        assert_eq!(
            (d.net.as_str(), d.addr.as_str()),
            ("unix", "/run/mysqld/mysqld.sock")
        );
        assert_eq!(Dsn::parse("u@tcp(::1)/db").unwrap().addr, "[::1]:3306");
        assert_eq!(
            Dsn::parse("u@tcp([::1]:3307)/db").unwrap().addr,
            "[::1]:3307"
        );
        assert_eq!(
            Dsn::parse("u:@tcp(h:1)/db").unwrap().password.as_deref(),
            Some("")
        );
        for tls in ["true", "skip-verify", "preferred", "false"] {
            assert!(
                Dsn::parse(&format!("u@tcp(h)/db?tls={tls}")).is_ok(),
                "{tls}"
            );
        }

        for bad in [
            "root@tcp(127.0.0.1:3306)",
            "u@tcp(h/db",
            "u@udp(h)/db",
            "u@tcp(h)/db?tls=mine",
            "u@tcp(h)/db?noequals",
            "u@tcp(h)/db?bad;name=1",
            "u@tcp(h)/db?timeout=forever",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_driver_options() {
        let d = Dsn::parse("u:p@tcp([::1]:3307)/db?tls=skip-verify&maxAllowedPacket=1024").unwrap();
        let opts = Opts::from(d.opts(None).unwrap());
        assert_eq!(opts.ip_or_hostname(), "::1");
        assert_eq!(opts.tcp_port(), 3307);
        assert_eq!(opts.user(), Some("u"));
        assert_eq!(opts.pass(), Some("p"));
        assert_eq!(opts.db_name(), Some("db"));
        assert!(opts.ssl_opts().is_some_and(|s| s.accept_invalid_certs()));
        assert_eq!(opts.max_allowed_packet(), Some(1024));
        let d = Dsn::parse("u@tcp(h)/?tls=custom").unwrap();
        assert!(d.opts(None).is_err(), "custom TLS needs pemPath");
        let opts = Opts::from(d.opts(Some("/ca.pem")).unwrap());
        assert_eq!(opts.ssl_opts().map(|s| s.root_certs().len()), Some(1));
    }

    fn md(conn: &str) -> ComponentMetadata {
        ComponentMetadata::new("mysql", "app").with("connectionString", conn)
    }

    #[test]
    fn settings_from_metadata() {
        let s = Settings::from_metadata(&md("root@tcp(h:1)/")).unwrap();
        assert_eq!(s.schema, "dapr_state_store");
        assert_eq!(s.table, "state");
        assert_eq!(s.metadata_table, "dapr_metadata");
        assert_eq!(s.timeout, Duration::from_secs(20));
        assert_eq!(s.cleanup_interval, Some(Duration::from_secs(3600)));

        let s = Settings::from_metadata(
            &md("mysql://root@h:1/db")
                .with("schemaName", "custom_schema")
                .with("tableName", "t1")
                .with("metadataTableName", "m1")
                .with("timeoutInSeconds", "30")
                .with("cleanupInterval", "20m"),
        )
        .unwrap();
        assert_eq!(
            (s.schema.as_str(), s.table.as_str()),
            ("custom_schema", "t1")
        );
        assert_eq!(s.metadata_table, "m1");
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.cleanup_interval, Some(Duration::from_secs(1200)));
        for v in ["0", "-1"] {
            let s = Settings::from_metadata(&md("/").with("cleanupInterval", v)).unwrap();
            assert_eq!(s.cleanup_interval, None, "{v}");
        }
        for (k, v) in [
            ("tableName", "bad-name"),
            ("schemaName", "x;y"),
            ("metadataTableName", "a.b"),
            ("timeoutInSeconds", "soon"),
            ("cleanupInterval", "later"),
        ] {
            assert!(
                Settings::from_metadata(&md("/").with(k, v)).is_err(),
                "{k}={v}"
            );
        }
        assert!(Settings::from_metadata(&ComponentMetadata::new("m", "a")).is_err());
    }

    #[test]
    fn value_encoding() {
        assert_eq!(
            encode_value(br#"{"a":1}"#, Some("application/json; charset=utf-8")),
            (r#"{"a":1}"#.to_owned(), false)
        );
        assert!(is_json_content_type(Some("application/cloudevents+json")));
        assert!(!is_json_content_type(Some("text/plain")));
        // Not JSON despite the content type, or no content type: binary.
        assert_eq!(
            encode_value(b"nope", Some("application/json")),
            ("\"bm9wZQ==\"".to_owned(), true)
        );
        assert_eq!(
            encode_value(b"\x00\x01\x02", None),
            ("\"AAEC\"".to_owned(), true)
        );
        let (stored, binary) = encode_value(b"\xff\x00", None);
        assert_eq!(
            decode_value(stored.into_bytes(), binary).unwrap(),
            (Bytes::from_static(b"\xff\x00"), None)
        );
        assert_eq!(
            decode_value(b"[1, 2]".to_vec(), false).unwrap(),
            (
                Bytes::from_static(b"[1, 2]"),
                Some(JSON_CONTENT_TYPE.to_owned())
            )
        );
        assert!(decode_value(b"\"not base64!\"".to_vec(), true).is_err());
        assert_eq!(
            unix_seconds(&Value::Bytes(b"1700000000.000000".to_vec())),
            Some(1_700_000_000)
        );
        assert_eq!(unix_seconds(&Value::Int(5)), Some(5));
        assert_eq!(unix_seconds(&Value::NULL), None);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert!(matches!(parse_etag("x"), Err(StateError::EtagInvalid(_))));
    }

    // ---- against the test server -------------------------------------------

    fn test_dsn() -> String {
        std::env::var("DAPR_RS_TEST_MYSQL")
            .unwrap_or_else(|_| "root@tcp(127.0.0.1:13306)/dapr_test".into())
    }

    fn unreachable(e: impl std::fmt::Display) -> ! {
        panic!(
            "MySQL/MariaDB test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_MYSQL."
        )
    }

    /// A schema of its own, dropped on `cleanup`.
    struct Scratch {
        schema: String,
        conn: Conn,
    }

    impl Scratch {
        async fn new() -> Self {
            let dsn = Dsn::parse(&test_dsn()).unwrap();
            let conn = Conn::new(dsn.opts(None).unwrap())
                .await
                .unwrap_or_else(|e| unreachable(e));
            Self {
                schema: format!(
                    "dapr_rs_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                ),
                conn,
            }
        }
        fn metadata(&self) -> ComponentMetadata {
            md(&test_dsn()).with("schemaName", &self.schema)
        }
        async fn store(&self, m: ComponentMetadata) -> MySqlStore {
            MySqlStore::connect(&m)
                .await
                .unwrap_or_else(|e| unreachable(e))
        }
        async fn rows(&mut self, sql: &str) -> Vec<mysql_async::Row> {
            self.conn.query(sql).await.unwrap()
        }
        async fn cleanup(mut self) {
            let sql = format!("DROP DATABASE IF EXISTS {}", self.schema);
            self.conn.query_drop(sql).await.unwrap();
        }
    }

    fn set(key: &str, value: &'static [u8]) -> SetRequest {
        SetRequest {
            key: key.to_owned(),
            value: Bytes::from_static(value),
            ..SetRequest::default()
        }
    }

    fn get(key: &str) -> GetRequest {
        GetRequest {
            key: key.to_owned(),
            ..GetRequest::default()
        }
    }

    #[tokio::test]
    async fn creates_daprs_layout() {
        let mut t = Scratch::new().await;
        let store = t.store(t.metadata()).await;
        let sql = format!(
            "SELECT column_name, column_key, is_nullable FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'state' ORDER BY ordinal_position",
            t.schema
        );
        let cols: Vec<(String, String, String)> = t.conn.query(sql).await.unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "value",
                "isbinary",
                "insertDate",
                "updateDate",
                "eTag",
                "expiredate",
                "row_id"
            ]
        );
        assert_eq!(cols[0].1, "PRI");
        assert_eq!(cols[7].1, "UNI");
        assert_eq!(cols[6].2, "YES");
        let sql = format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'dapr_metadata' ORDER BY ordinal_position",
            t.schema
        );
        let meta: Vec<String> = t.conn.query(sql).await.unwrap();
        assert_eq!(meta, ["id", "value"]);
        drop(store);
        // Connecting again finds everything in place.
        let store = t.store(t.metadata()).await;
        store.ping().await.unwrap();
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn rows_are_interchangeable_with_go() {
        let mut t = Scratch::new().await;
        let store = t.store(t.metadata()).await;
        // Rows as Dapr's Go component writes them: JSON values from the HTTP
        // API, base64 for bytes from gRPC.
        let sql = format!(
            "INSERT INTO {}.state (id, value, eTag, isbinary) VALUES \
             ('app||json', '{{\"from\":\"go\"}}', '6f9619ff-8b86-d011-b42d-00cf4fc964ff', 0), \
             ('app||bin', '\"AAEC/w==\"', '7f9619ff-8b86-d011-b42d-00cf4fc964ff', 1)",
            t.schema
        );
        t.conn.query_drop(sql).await.unwrap();
        let item = store.get(&get("app||json")).await.unwrap().unwrap();
        assert_eq!(item.value, &br#"{"from":"go"}"#[..]);
        assert_eq!(
            item.etag.as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00cf4fc964ff")
        );
        assert_eq!(item.content_type.as_deref(), Some("application/json"));
        let item = store.get(&get("app||bin")).await.unwrap().unwrap();
        assert_eq!(item.value, &b"\x00\x01\x02\xff"[..]);

        // Our writes, as Go reads them back.
        let mut req = set("app||json", br#"{"from":"rust"}"#);
        req.etag = Some("6F9619FF-8B86-D011-B42D-00CF4FC964FF".into());
        req.content_type = Some("application/json".into());
        req.ttl = Some(Duration::from_secs(100));
        store.set(&req).await.unwrap();
        let mut bin = set("app||bin", b"\xfe\x00");
        bin.metadata
            .insert("contentType".into(), "application/octet-stream".into());
        store.set(&bin).await.unwrap();
        let sql = format!(
            "SELECT id, value, isbinary, eTag, TIMESTAMPDIFF(SECOND, CURRENT_TIMESTAMP, expiredate) \
             FROM {}.state ORDER BY id",
            t.schema
        );
        let rows = t.rows(&sql).await;
        let parsed: Vec<(String, String, bool, String, Option<i64>)> =
            rows.into_iter().map(mysql_async::from_row).collect();
        assert_eq!(parsed[0].0, "app||bin");
        assert_eq!((parsed[0].1.as_str(), parsed[0].2), ("\"/gA=\"", true));
        assert_eq!(parsed[0].4, None);
        assert_eq!(
            (parsed[1].1.as_str(), parsed[1].2),
            (r#"{"from":"rust"}"#, false)
        );
        assert!(uuid::Uuid::parse_str(&parsed[1].3).is_ok());
        assert_ne!(parsed[1].3, "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
        assert!(matches!(parsed[1].4, Some(98..=100)), "{:?}", parsed[1].4);
        let item = store.get(&get("app||json")).await.unwrap().unwrap();
        assert!(item.metadata.contains_key(TTL_EXPIRE_TIME_KEY));
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn upgrades_a_pre_ttl_table() {
        let mut t = Scratch::new().await;
        // The layout Dapr used before TTLs (no expiredate) and row_id.
        let sql = format!(
            "CREATE DATABASE {s}; CREATE TABLE {s}.state (
               id VARCHAR(255) NOT NULL PRIMARY KEY, value JSON NOT NULL,
               isbinary BOOLEAN NOT NULL,
               insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
               updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
               eTag VARCHAR(36) NOT NULL);
             INSERT INTO {s}.state (id, value, isbinary, eTag) VALUES ('old', '1', 0, 'e');",
            s = t.schema
        );
        t.conn.query_drop(sql).await.unwrap();
        let store = t.store(t.metadata()).await;
        store.set(&set("new", b"2")).await.unwrap();
        let sql = format!("SELECT id, row_id FROM {}.state ORDER BY row_id", t.schema);
        let ids: Vec<(String, u64)> = t.conn.query(sql).await.unwrap();
        assert_eq!(ids, [("old".to_owned(), 1), ("new".to_owned(), 2)]);
        assert_eq!(
            store.get(&get("old")).await.unwrap().unwrap().value,
            &b"1"[..]
        );
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn expired_rows_are_swept() {
        let mut t = Scratch::new().await;
        let store = t.store(t.metadata().with("cleanupInterval", "1h")).await;
        let mut req = set("short", b"1");
        req.ttl = Some(Duration::from_secs(1));
        store.set(&req).await.unwrap();
        store.set(&set("kept", b"2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(store.get(&get("short")).await.unwrap(), None);
        assert_eq!(store.cleanup_expired().await.unwrap(), 1);
        let sql = format!("SELECT id FROM {}.state", t.schema);
        let left: Vec<String> = t.conn.query(sql).await.unwrap();
        assert_eq!(left, ["kept"]);
        let sql = format!("SELECT id FROM {}.dapr_metadata", t.schema);
        let meta: Vec<String> = t.conn.query(sql).await.unwrap();
        assert_eq!(meta, ["last-cleanup"]);
        // Another sweep within the interval is skipped.
        store.set(&req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(store.cleanup_expired().await.unwrap(), 0);
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn bulk_get_spans_chunks() {
        let t = Scratch::new().await;
        let store = t.store(t.metadata()).await;
        let reqs: Vec<GetRequest> = (0..2 * BULK_GET_CHUNK + 1)
            .map(|i| get(&format!("k{i}")))
            .collect();
        for i in [0, BULK_GET_CHUNK, 2 * BULK_GET_CHUNK] {
            store.set(&set(&format!("k{i}"), b"1")).await.unwrap();
        }
        let out = store.bulk_get(&reqs, 1).await;
        let found: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, item)| item.result.as_ref().unwrap().is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, [0, BULK_GET_CHUNK, 2 * BULK_GET_CHUNK]);
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn tls_preferred_falls_back_to_plain_text() {
        // The test server has no TLS: `preferred` connects, `true` must not.
        let t = Scratch::new().await;
        let with_tls = |mode: &str| {
            let dsn = test_dsn();
            let sep = if dsn.contains('?') { '&' } else { '?' };
            md(&format!("{dsn}{sep}tls={mode}")).with("schemaName", &t.schema)
        };
        let store = t.store(with_tls("preferred")).await;
        store.set(&set("k", b"1")).await.unwrap();
        drop(store);
        assert!(MySqlStore::connect(&with_tls("true")).await.is_err());
        t.cleanup().await;
    }

    #[tokio::test]
    async fn unreachable_server_is_an_init_error() {
        let m = md("root:secret@tcp(127.0.0.1:1)/?timeout=2s");
        match MySqlStore::connect(&m).await {
            Err(InitError::Connect(msg)) => assert!(!msg.contains("secret"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to port 1"),
        }
    }
}
