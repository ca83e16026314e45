//! `state.sqlite`: state in a SQLite database, in the same layout as Dapr's
//! Go component so either runtime can read the other's data.
//!
//! Layout (created on first use, recorded as migration level 1 in the
//! metadata table exactly as Dapr does):
//!
//! ```sql
//! CREATE TABLE state (
//!     key TEXT NOT NULL PRIMARY KEY,
//!     value TEXT NOT NULL,              -- JSON text, or base64 when is_binary
//!     is_binary BOOLEAN NOT NULL,
//!     etag TEXT NOT NULL,               -- random UUID, new on every write
//!     expiration_time TIMESTAMP DEFAULT NULL,  -- 'YYYY-MM-DD HH:MM:SS[.SSS]' UTC
//!     update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
//! );
//! CREATE TABLE metadata (key text NOT NULL PRIMARY KEY, value text NOT NULL);
//! ```
//!
//! Timestamps are compared as text, as Dapr does; our expiry times carry
//! milliseconds, which still order correctly against Dapr's whole seconds.
//!
//! All SQLite work runs on the blocking pool over one connection behind a
//! mutex; each statement is bounded by the `timeout` metadata through a
//! progress handler.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, TransactionBehavior, params, types::ValueRef,
};

use super::{
    BulkGetItem, Concurrency, DeleteRequest, Features, GetRequest, InitError, SetRequest,
    StateError, StateItem, StateStore, TTL_EXPIRE_TIME_KEY, TransactionOp, query,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_TABLE: &str = "state";
const DEFAULT_METADATA_TABLE: &str = "metadata";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// Dapr's Go component leaves cleanup off by default; expired rows are
/// invisible either way, but we sweep hourly so the file does not grow forever.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
/// Key of the migration level in the metadata table (shared with Dapr).
const MIGRATIONS_KEY: &str = "migrations";
/// Keys per `IN (...)` query in bulk gets, well under SQLite's variable limit.
const BULK_GET_CHUNK: usize = 500;
/// Text layout of timestamps we write; sorts correctly against SQLite's
/// `CURRENT_TIMESTAMP` (`%Y-%m-%d %H:%M:%S`), which Dapr writes.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// Resolved component configuration.
#[derive(Debug, Clone)]
struct Config {
    uri: String,
    in_memory: bool,
    read_only: bool,
    pragmas: Vec<String>,
    table: String,
    metadata_table: String,
    timeout: Duration,
    busy_timeout: Duration,
    disable_wal: bool,
    cleanup_interval: Option<Duration>,
}

impl Config {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, InitError> {
        let cs = md
            .get_any(&["connectionString", "url"])
            .ok_or_else(|| MetadataError::Missing("connectionString".into()))?;
        let conn = parse_connection_string(cs)?;

        let table = md.get("tableName").unwrap_or(DEFAULT_TABLE).to_owned();
        let metadata_table = md
            .get("metadataTableName")
            .unwrap_or(DEFAULT_METADATA_TABLE)
            .to_owned();
        for (field, name) in [
            ("tableName", &table),
            ("metadataTableName", &metadata_table),
        ] {
            if !valid_identifier(name) {
                return Err(invalid(
                    field,
                    "only letters, digits and underscores are allowed",
                ));
            }
        }

        let timeout = match md.get_any(&["timeout", "timeoutInSeconds"]) {
            Some(_) => duration_field(md, &["timeout", "timeoutInSeconds"])?,
            None => Some(DEFAULT_TIMEOUT),
        };
        let timeout = timeout
            .filter(|t| *t >= Duration::from_secs(1))
            .ok_or_else(|| invalid("timeout", "must be at least 1s"))?;
        let busy_timeout = match md.get("busyTimeout") {
            Some(_) => duration_field(md, &["busyTimeout"])?.unwrap_or_default(),
            None => DEFAULT_BUSY_TIMEOUT,
        };
        let cleanup_interval = match md.get_any(&["cleanupInterval", "cleanupIntervalInSeconds"]) {
            Some(_) => duration_field(md, &["cleanupInterval", "cleanupIntervalInSeconds"])?
                .filter(|d| !d.is_zero()),
            None => Some(DEFAULT_CLEANUP_INTERVAL),
        };

        Ok(Self {
            uri: conn.uri,
            in_memory: conn.in_memory,
            read_only: conn.read_only,
            pragmas: conn.pragmas,
            table,
            metadata_table,
            timeout,
            busy_timeout,
            disable_wal: md.get_bool("disableWAL")?.unwrap_or(false),
            cleanup_interval,
        })
    }
}

fn invalid(field: &str, reason: &str) -> InitError {
    InitError::Metadata(MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    })
}

/// A Go duration or a number of seconds; a negative value (`-1`) means
/// "disabled" as in Dapr and yields `None`, as does zero for callers that
/// filter it.
fn duration_field(md: &ComponentMetadata, keys: &[&str]) -> Result<Option<Duration>, InitError> {
    let Some((key, value)) = keys.iter().find_map(|k| md.get(k).map(|v| (*k, v))) else {
        return Ok(None);
    };
    if value.trim_start().starts_with('-') {
        return Ok(None);
    }
    Ok(md.get_duration(key)?)
}

/// Same rule as Dapr: ASCII letters, digits and underscores only.
fn valid_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Debug, PartialEq)]
struct ConnSpec {
    uri: String,
    in_memory: bool,
    read_only: bool,
    pragmas: Vec<String>,
}

/// Turns a Dapr SQLite connection string (a path, `:memory:`, or a `file:`
/// URI with options) into a SQLite URI plus the `_pragma` statements the Go
/// driver would run. Options starting with `_` belong to the Go driver and
/// are not passed to SQLite.
fn parse_connection_string(cs: &str) -> Result<ConnSpec, InitError> {
    let lower = cs.to_ascii_lowercase();
    let in_memory = lower.starts_with(":memory:") || lower.starts_with("file::memory:");
    let (base, qs) = match cs.find('?') {
        Some(i) if i > 0 => (&cs[..i], &cs[i + 1..]),
        _ => (cs, ""),
    };

    let mut keep = Vec::new();
    let mut pragmas = Vec::new();
    let mut read_only = false;
    for pair in qs.split('&').filter(|p| !p.is_empty()) {
        let (raw_k, raw_v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(raw_k), percent_decode(raw_v));
        match k.as_str() {
            "_pragma" => pragmas.push(pragma_statement(&v)?),
            _ if k.starts_with('_') => {}
            "mode" if v == "ro" => {
                read_only = true;
                keep.push(pair);
            }
            "immutable" if v == "1" => {
                read_only = true;
                keep.push(pair);
            }
            _ => keep.push(pair),
        }
    }

    let mut uri = if lower.starts_with("file:") {
        base.to_owned()
    } else {
        format!("file:{base}")
    };
    if !keep.is_empty() {
        uri.push('?');
        uri.push_str(&keep.join("&"));
    }
    Ok(ConnSpec {
        uri,
        in_memory,
        read_only,
        pragmas,
    })
}

/// `name(value)` (the Go driver's `_pragma` syntax) → `PRAGMA name = value`.
fn pragma_statement(p: &str) -> Result<String, InitError> {
    let lower = p.to_ascii_lowercase();
    for (forbidden, instead) in [
        ("busy_timeout", "use the busyTimeout metadata property"),
        ("journal_mode", "use the disableWAL metadata property"),
        ("foreign_keys", "it is managed by the component"),
    ] {
        if lower.starts_with(forbidden) {
            return Err(invalid(
                "connectionString",
                &format!("_pragma={forbidden} is not allowed: {instead}"),
            ));
        }
    }
    let (name, value) = match p.split_once('(') {
        Some((name, rest)) => (name, Some(rest.strip_suffix(')').unwrap_or(rest))),
        None => (p, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    let value_ok = value.is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.'".contains(&b))
    });
    if !name_ok || !value_ok {
        return Err(invalid(
            "connectionString",
            &format!("invalid _pragma option '{p}'"),
        ));
    }
    Ok(match value {
        Some(v) => format!("PRAGMA {name} = {v}"),
        None => format!("PRAGMA {name}"),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// SQL text for one table pair, built once.
struct Sql {
    get: String,
    bulk_get_prefix: String,
    set_etag: String,
    set_first_write: String,
    set_last_write: String,
    delete: String,
    delete_etag: String,
    query: String,
    update_last_cleanup: String,
    delete_expired: String,
}

impl Sql {
    fn new(t: &str, m: &str) -> Self {
        const LIVE: &str = "(expiration_time IS NULL OR expiration_time > ?now)";
        const UPSERT: &str =
            "INSERT INTO {t} (key, value, is_binary, etag, expiration_time, update_time)
             VALUES (?1, ?2, ?3, ?4, ?5, CURRENT_TIMESTAMP)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, is_binary = excluded.is_binary,
                 etag = excluded.etag, expiration_time = excluded.expiration_time,
                 update_time = excluded.update_time";
        let live = |n: u8| LIVE.replace("?now", &format!("?{n}"));
        let upsert = UPSERT.replace("{t}", t);
        Self {
            get: format!(
                "SELECT value, is_binary, etag, expiration_time FROM {t} WHERE key = ?1 AND {}",
                live(2)
            ),
            bulk_get_prefix: format!(
                "SELECT key, value, is_binary, etag, expiration_time FROM {t} WHERE {} AND key IN (",
                live(1)
            ),
            set_etag: format!(
                "UPDATE {t} SET value = ?2, is_binary = ?3, etag = ?4, expiration_time = ?5,
                     update_time = CURRENT_TIMESTAMP
                 WHERE key = ?1 AND etag = ?6 AND {}",
                live(7)
            ),
            // A row that exists but has expired counts as missing.
            set_first_write: format!(
                "{upsert} WHERE {t}.expiration_time IS NOT NULL AND {t}.expiration_time <= ?6"
            ),
            set_last_write: upsert,
            delete: format!("DELETE FROM {t} WHERE key = ?1"),
            delete_etag: format!(
                "DELETE FROM {t} WHERE key = ?1 AND etag = ?2 AND {}",
                live(3)
            ),
            query: format!(
                "SELECT key, value, is_binary, etag, expiration_time FROM {t}
                 WHERE substr(key, 1, ?1) = ?2 AND {}",
                live(3)
            ),
            // Same coordination as Dapr: only one process per interval wins
            // the right to sweep.
            update_last_cleanup: format!(
                "INSERT INTO {m} (key, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)
                 ON CONFLICT (key) DO UPDATE SET value = CURRENT_TIMESTAMP
                 WHERE (unixepoch(CURRENT_TIMESTAMP) - unixepoch(value)) * 1000 > ?1"
            ),
            delete_expired: format!(
                "DELETE FROM {t} WHERE expiration_time IS NOT NULL AND expiration_time < ?1"
            ),
        }
    }
}

struct Db {
    conn: Mutex<Connection>,
    sql: Sql,
    timeout: Duration,
    cleanup_interval: Option<Duration>,
}

impl Db {
    /// Runs `f` on the blocking pool with the connection, bounded by the
    /// configured timeout (waiting for the connection included).
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Sql, &mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let db = Arc::clone(self);
        let deadline = Instant::now() + self.timeout;
        tokio::task::spawn_blocking(move || {
            // A panic mid-operation drops its transaction (rolling it back),
            // so a poisoned connection is still consistent.
            let mut conn = db.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if Instant::now() >= deadline {
                return Err(timed_out(db.timeout));
            }
            conn.progress_handler(1000, Some(move || Instant::now() >= deadline))
                .map_err(db_err)?;
            let res = f(&db.sql, &mut conn);
            // Clearing can only fail on a closed connection; the next call
            // installs a fresh handler anyway.
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            res.map_err(|e| match e {
                StateError::Backend(msg) if msg == INTERRUPTED => timed_out(db.timeout),
                other => other,
            })
        })
        .await
        .map_err(|e| StateError::Backend(format!("sqlite worker failed: {e}")))?
    }
}

const INTERRUPTED: &str = "interrupted";

fn timed_out(timeout: Duration) -> StateError {
    StateError::Backend(format!("sqlite operation timed out after {timeout:?}"))
}

fn db_err(e: rusqlite::Error) -> StateError {
    if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
        return StateError::Backend(INTERRUPTED.into());
    }
    StateError::Backend(format!("sqlite: {e}"))
}

/// `state.sqlite` store.
pub struct SqliteStore {
    db: Arc<Db>,
    gc: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(gc) = self.gc.take() {
            gc.abort();
        }
    }
}

impl SqliteStore {
    pub async fn open(metadata: &ComponentMetadata) -> Result<Self, InitError> {
        let cfg = Config::from_metadata(metadata)?;
        let name = metadata.name.clone();
        let table = cfg.table.clone();
        let conn_cfg = cfg.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&conn_cfg))
            .await
            .map_err(|e| InitError::Connect(format!("sqlite: opening failed: {e}")))??;

        let db = Arc::new(Db {
            conn: Mutex::new(conn),
            sql: Sql::new(&cfg.table, &cfg.metadata_table),
            timeout: cfg.timeout,
            cleanup_interval: cfg.cleanup_interval,
        });
        let gc = cfg
            .cleanup_interval
            .filter(|_| !cfg.read_only)
            .map(|every| tokio::spawn(gc_loop(Arc::downgrade(&db), every)));
        tracing::info!(
            component = %name,
            table = %table,
            in_memory = cfg.in_memory,
            cleanup_interval = ?cfg.cleanup_interval,
            "sqlite state store ready"
        );
        Ok(Self { db, gc })
    }

    /// Deletes expired rows now, unless another process (or this one) swept
    /// within the cleanup interval. Returns the number of rows removed.
    pub async fn cleanup_expired(&self) -> Result<usize, StateError> {
        cleanup(&self.db).await
    }
}

async fn gc_loop(db: Weak<Db>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(db) = db.upgrade() else { return };
        match cleanup(&db).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "removed expired sqlite state rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite expired-state cleanup failed"),
        }
    }
}

async fn cleanup(db: &Arc<Db>) -> Result<usize, StateError> {
    let interval_ms = db
        .cleanup_interval
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .saturating_sub(100);
    db.run(move |sql, conn| {
        let won = conn
            .execute(&sql.update_last_cleanup, params![interval_ms])
            .map_err(db_err)?;
        if won == 0 {
            return Ok(0);
        }
        conn.execute(&sql.delete_expired, params![now_text()])
            .map_err(db_err)
    })
    .await
}

fn open_connection(cfg: &Config) -> Result<Connection, InitError> {
    let connect = |e: rusqlite::Error| InitError::Connect(format!("sqlite: {e}"));
    let mut conn = Connection::open(&cfg.uri).map_err(connect)?;
    conn.busy_timeout(cfg.busy_timeout).map_err(connect)?;
    let journal = if cfg.in_memory {
        // The only mode besides OFF that keeps transactions working.
        "MEMORY"
    } else if cfg.disable_wal || cfg.read_only {
        "DELETE"
    } else {
        "WAL"
    };
    let _: String = conn
        .query_row(&format!("PRAGMA journal_mode = {journal}"), [], |r| {
            r.get(0)
        })
        .map_err(connect)?;
    for pragma in &cfg.pragmas {
        run_pragma(&conn, pragma).map_err(connect)?;
    }
    if !cfg.read_only {
        migrate(&mut conn, &cfg.table, &cfg.metadata_table).map_err(connect)?;
    }
    Ok(conn)
}

fn run_pragma(conn: &Connection, pragma: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(pragma)?;
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    Ok(())
}

/// Dapr's migrations: a metadata table holding the level under
/// `migrations`; level 1 creates the state table.
fn migrate(conn: &mut Connection, table: &str, metadata_table: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    tx.execute(
        &format!(
            "CREATE TABLE IF NOT EXISTS {metadata_table} (
                key text NOT NULL PRIMARY KEY,
                value text NOT NULL
            )"
        ),
        [],
    )?;
    let level: Option<String> = tx
        .query_row(
            &format!("SELECT value FROM {metadata_table} WHERE key = ?1"),
            [MIGRATIONS_KEY],
            |r| r.get(0),
        )
        .optional()?;
    let level: u32 = level.and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    if level < 1 {
        tracing::info!(table, "creating sqlite state table");
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    key TEXT NOT NULL PRIMARY KEY,
                    value TEXT NOT NULL,
                    is_binary BOOLEAN NOT NULL,
                    etag TEXT NOT NULL,
                    expiration_time TIMESTAMP DEFAULT NULL,
                    update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
                )"
            ),
            [],
        )?;
        tx.execute(
            &format!("REPLACE INTO {metadata_table} (key, value) VALUES (?1, '1')"),
            [MIGRATIONS_KEY],
        )?;
    }
    tx.commit()
}

fn now_text() -> String {
    Utc::now().format(TIME_FORMAT).to_string()
}

/// JSON is stored as text, anything else base64 with `is_binary` set, which is
/// what Dapr writes for JSON (HTTP) and byte (gRPC) values respectively.
fn encode_value(v: &[u8]) -> (String, bool) {
    if let Ok(s) = std::str::from_utf8(v)
        && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
    {
        return (s.to_owned(), false);
    }
    (BASE64.encode(v), true)
}

fn expiry_text(ttl: Option<Duration>) -> Result<Option<String>, StateError> {
    let Some(ttl) = ttl.filter(|t| !t.is_zero()) else {
        return Ok(None);
    };
    let at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(|| StateError::InvalidRequest(format!("TTL {ttl:?} is out of range")))?;
    Ok(Some(at.format(TIME_FORMAT).to_string()))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.to_utc()))
}

fn etag_checked(etag: &Option<String>) -> Result<Option<&str>, StateError> {
    // Dapr treats an empty etag as none.
    match etag.as_deref().filter(|e| !e.is_empty()) {
        Some(e) if uuid::Uuid::try_parse(e).is_err() => Err(StateError::EtagInvalid(e.to_owned())),
        other => Ok(other),
    }
}

/// Builds an item from the `value, is_binary, etag, expiration_time` columns
/// starting at `at`.
fn read_item(row: &rusqlite::Row<'_>, at: usize) -> Result<StateItem, StateError> {
    let value: Vec<u8> = match row.get_ref(at).map_err(db_err)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Null => Vec::new(),
    };
    let is_binary = match row.get_ref(at + 1).map_err(db_err)? {
        ValueRef::Integer(i) => i != 0,
        ValueRef::Text(t) => matches!(t, b"1" | b"true" | b"TRUE"),
        _ => false,
    };
    let value = if is_binary {
        BASE64
            .decode(&value)
            .map_err(|e| StateError::Backend(format!("failed to decode binary data: {e}")))?
    } else {
        value
    };
    let etag = match row.get_ref(at + 2).map_err(db_err)? {
        ValueRef::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    let mut metadata = HashMap::new();
    if let ValueRef::Text(t) = row.get_ref(at + 3).map_err(db_err)?
        && let Some(at) = std::str::from_utf8(t).ok().and_then(parse_time)
    {
        metadata.insert(
            TTL_EXPIRE_TIME_KEY.to_owned(),
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
    }
    Ok(StateItem {
        value: Bytes::from(value),
        etag,
        metadata,
        content_type: None,
    })
}

fn do_get(sql: &Sql, conn: &Connection, key: &str) -> Result<Option<StateItem>, StateError> {
    let mut stmt = conn.prepare_cached(&sql.get).map_err(db_err)?;
    let mut rows = stmt.query(params![key, now_text()]).map_err(db_err)?;
    match rows.next().map_err(db_err)? {
        Some(row) => read_item(row, 0).map(Some),
        None => Ok(None),
    }
}

fn do_set(sql: &Sql, conn: &Connection, req: &SetRequest) -> Result<(), StateError> {
    let etag = etag_checked(&req.etag)?;
    let (value, is_binary) = encode_value(&req.value);
    let expires = expiry_text(req.ttl)?;
    let new_etag = uuid::Uuid::new_v4().to_string();
    let now = now_text();
    let changed = match etag {
        Some(etag) => conn.prepare_cached(&sql.set_etag).and_then(|mut s| {
            s.execute(params![
                req.key, value, is_binary, new_etag, expires, etag, now
            ])
        }),
        None if req.concurrency == Concurrency::FirstWrite => {
            conn.prepare_cached(&sql.set_first_write).and_then(|mut s| {
                s.execute(params![req.key, value, is_binary, new_etag, expires, now])
            })
        }
        None => conn
            .prepare_cached(&sql.set_last_write)
            .and_then(|mut s| s.execute(params![req.key, value, is_binary, new_etag, expires])),
    }
    .map_err(db_err)?;
    if changed == 0 {
        return Err(StateError::EtagMismatch);
    }
    Ok(())
}

fn do_delete(sql: &Sql, conn: &Connection, req: &DeleteRequest) -> Result<(), StateError> {
    match etag_checked(&req.etag)? {
        Some(etag) => {
            let n = conn
                .prepare_cached(&sql.delete_etag)
                .and_then(|mut s| s.execute(params![req.key, etag, now_text()]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(StateError::EtagMismatch);
            }
        }
        None => {
            conn.prepare_cached(&sql.delete)
                .and_then(|mut s| s.execute(params![req.key]))
                .map_err(db_err)?;
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for SqliteStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
            query: true,
        }
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        let key = req.key.clone();
        self.db.run(move |sql, conn| do_get(sql, conn, &key)).await
    }

    async fn bulk_get(&self, reqs: &[GetRequest], _parallelism: usize) -> Vec<BulkGetItem> {
        // One query per chunk beats `parallelism` single gets on one connection.
        let keys: Vec<String> = reqs.iter().map(|r| r.key.clone()).collect();
        let found = self
            .db
            .run(move |sql, conn| {
                let now = now_text();
                let mut found: HashMap<String, Result<StateItem, StateError>> = HashMap::new();
                for chunk in keys.chunks(BULK_GET_CHUNK) {
                    let placeholders = vec!["?"; chunk.len()].join(",");
                    let q = format!("{}{placeholders})", sql.bulk_get_prefix);
                    let mut stmt = conn.prepare(&q).map_err(db_err)?;
                    let args = std::iter::once(&now).chain(chunk.iter());
                    let mut rows = stmt
                        .query(rusqlite::params_from_iter(args))
                        .map_err(db_err)?;
                    while let Some(row) = rows.next().map_err(db_err)? {
                        let key: String = row.get(0).map_err(db_err)?;
                        found.insert(key, read_item(row, 1));
                    }
                }
                Ok(found)
            })
            .await;
        reqs.iter()
            .map(|r| BulkGetItem {
                key: r.key.clone(),
                result: match &found {
                    Ok(found) => found.get(&r.key).cloned().transpose(),
                    Err(e) => Err(e.clone()),
                },
            })
            .collect()
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let req = req.clone();
        self.db.run(move |sql, conn| do_set(sql, conn, &req)).await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let req = req.clone();
        self.db
            .run(move |sql, conn| do_delete(sql, conn, &req))
            .await
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        let ops = ops.to_vec();
        self.db
            .run(move |sql, conn| {
                // IMMEDIATE takes the write lock up front, so concurrent
                // writers in other processes wait instead of failing mid-way.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err)?;
                for op in &ops {
                    match op {
                        TransactionOp::Set(r) => do_set(sql, &tx, r)?,
                        TransactionOp::Delete(r) => do_delete(sql, &tx, r)?,
                    }
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn query(
        &self,
        key_prefix: &str,
        q: &query::Query,
    ) -> Result<query::QueryResponse, StateError> {
        let prefix = key_prefix.to_owned();
        let items = self
            .db
            .run(move |sql, conn| {
                // substr counts characters, so the prefix length must too;
                // unlike LIKE it is case-sensitive and needs no escaping.
                let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
                let mut stmt = conn.prepare_cached(&sql.query).map_err(db_err)?;
                let mut rows = stmt
                    .query(params![len, prefix, now_text()])
                    .map_err(db_err)?;
                let mut items = Vec::new();
                while let Some(row) = rows.next().map_err(db_err)? {
                    let key: String = row.get(0).map_err(db_err)?;
                    let Some(rest) = key.strip_prefix(prefix.as_str()) else {
                        continue;
                    };
                    items.push((rest.to_owned(), read_item(row, 1)?));
                }
                Ok(items)
            })
            .await?;
        q.run(items)
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.db
            .run(|_, conn| {
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(|_| ())
                    .map_err(db_err)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let c = parse_connection_string("data.db").unwrap();
        assert_eq!(c.uri, "file:data.db");
        assert!(!c.in_memory && !c.read_only);

        let c = parse_connection_string(":memory:").unwrap();
        assert_eq!(c.uri, "file::memory:");
        assert!(c.in_memory);

        let c = parse_connection_string(
            "file:/var/db.sqlite?mode=ro&_txlock=immediate&_pragma=synchronous(NORMAL)&cache=private",
        )
        .unwrap();
        assert_eq!(c.uri, "file:/var/db.sqlite?mode=ro&cache=private");
        assert!(c.read_only);
        assert_eq!(c.pragmas, ["PRAGMA synchronous = NORMAL"]);

        let c = parse_connection_string("x.db?_pragma=synchronous%28OFF%29").unwrap();
        assert_eq!(c.pragmas, ["PRAGMA synchronous = OFF"]);

        assert!(parse_connection_string("x.db?_pragma=busy_timeout(10)").is_err());
        assert!(parse_connection_string("x.db?_pragma=journal_mode(WAL)").is_err());
        assert!(parse_connection_string("x.db?_pragma=a(1);drop table x").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%28b%29c"), "a(b)c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b"), "a b");
    }

    #[test]
    fn metadata_validation() {
        let md = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .fold(ComponentMetadata::new("s", "app"), |m, (k, v)| {
                    m.with(k, *v)
                })
        };
        assert!(Config::from_metadata(&md(&[])).is_err());
        let c = Config::from_metadata(&md(&[("connectionString", "x.db")])).unwrap();
        assert_eq!(c.table, "state");
        assert_eq!(c.metadata_table, "metadata");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.busy_timeout, DEFAULT_BUSY_TIMEOUT);
        assert_eq!(c.cleanup_interval, Some(DEFAULT_CLEANUP_INTERVAL));
        let c = Config::from_metadata(&md(&[
            ("url", "x.db"),
            ("tableName", "my_state"),
            ("timeout", "5"),
            ("busyTimeout", "500ms"),
            ("cleanupInterval", "0"),
            ("disableWAL", "true"),
        ]))
        .unwrap();
        assert_eq!(c.table, "my_state");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.busy_timeout, Duration::from_millis(500));
        assert_eq!(c.cleanup_interval, None);
        assert!(c.disable_wal);
        let c = Config::from_metadata(&md(&[("url", "x.db"), ("cleanupInterval", "-1")])).unwrap();
        assert_eq!(c.cleanup_interval, None);
        assert!(Config::from_metadata(&md(&[("url", "x.db"), ("tableName", "a; drop")])).is_err());
        assert!(Config::from_metadata(&md(&[("url", "x.db"), ("timeout", "500ms")])).is_err());
    }

    #[test]
    fn value_encoding() {
        assert_eq!(
            encode_value(br#"{"a":1}"#),
            (r#"{"a":1}"#.to_owned(), false)
        );
        assert_eq!(encode_value(b"\"s\""), ("\"s\"".to_owned(), false));
        assert_eq!(encode_value(b"plain"), ("cGxhaW4=".to_owned(), true));
        assert_eq!(encode_value(&[0xff, 0x00]), ("/wA=".to_owned(), true));
        assert_eq!(encode_value(b""), (String::new(), true));
    }

    fn file_store_md(dir: &tempfile::TempDir) -> (ComponentMetadata, std::path::PathBuf) {
        let path = dir.path().join("state.db");
        let md = ComponentMetadata::new("s", "app")
            .with("connectionString", path.to_string_lossy().to_string())
            .with("cleanupInterval", "1h");
        (md, path)
    }

    #[tokio::test]
    async fn on_disk_layout_matches_dapr() {
        let dir = tempfile::tempdir().unwrap();
        let (md, path) = file_store_md(&dir);
        let store = SqliteStore::open(&md).await.unwrap();
        store
            .set(&SetRequest {
                key: "app||json".into(),
                value: Bytes::from_static(br#"{"x":1}"#),
                ttl: Some(Duration::from_secs(60)),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        store
            .set(&SetRequest {
                key: "app||bin".into(),
                value: Bytes::from_static(&[0, 159, 146, 150]),
                ..SetRequest::default()
            })
            .await
            .unwrap();

        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let level: String = conn
            .query_row(
                "SELECT value FROM metadata WHERE key = 'migrations'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(level, "1");
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('state') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            cols,
            [
                "key",
                "value",
                "is_binary",
                "etag",
                "expiration_time",
                "update_time"
            ]
        );
        let (value, is_binary, etag, exp, upd): (String, i64, String, String, String) = conn
            .query_row(
                "SELECT value, is_binary, etag, expiration_time, update_time FROM state WHERE key = 'app||json'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(value, r#"{"x":1}"#);
        assert_eq!(is_binary, 0);
        assert!(uuid::Uuid::parse_str(&etag).is_ok());
        assert!(parse_time(&exp).unwrap() > Utc::now());
        assert_eq!(upd.len(), "2024-01-01 00:00:00".len());
        let (value, is_binary): (String, bool) = conn
            .query_row(
                "SELECT value, is_binary FROM state WHERE key = 'app||bin'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(value, "AJ+Slg==");
        assert!(is_binary);
    }

    #[tokio::test]
    async fn reads_rows_written_by_dapr() {
        let dir = tempfile::tempdir().unwrap();
        let (md, path) = file_store_md(&dir);
        let store = SqliteStore::open(&md).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        // What the Go component writes: SQLite's own timestamps, booleans as 0/1.
        conn.execute_batch(
            "INSERT INTO state (key, value, is_binary, etag, expiration_time) VALUES
               ('a||live', '\"hi\"', 0, '8b7f3c2e-1111-4d4d-9999-0123456789ab',
                DATETIME(CURRENT_TIMESTAMP, '+60 seconds')),
               ('a||bin', 'aGVsbG8=', 1, '8b7f3c2e-2222-4d4d-9999-0123456789ab', NULL),
               ('a||gone', '1', 0, '8b7f3c2e-3333-4d4d-9999-0123456789ab',
                DATETIME(CURRENT_TIMESTAMP, '-1 seconds'));",
        )
        .unwrap();
        let get = |k: &str| GetRequest {
            key: k.into(),
            ..GetRequest::default()
        };
        let item = store.get(&get("a||live")).await.unwrap().unwrap();
        assert_eq!(item.value, "\"hi\"");
        assert_eq!(
            item.etag.as_deref(),
            Some("8b7f3c2e-1111-4d4d-9999-0123456789ab")
        );
        let exp = item.metadata.get(TTL_EXPIRE_TIME_KEY).unwrap();
        assert!(exp.ends_with('Z'), "{exp}");
        let item = store.get(&get("a||bin")).await.unwrap().unwrap();
        assert_eq!(item.value, "hello");
        assert!(item.metadata.is_empty());
        assert!(store.get(&get("a||gone")).await.unwrap().is_none());

        // The Go etag works for a conditional write.
        store
            .set(&SetRequest {
                key: "a||bin".into(),
                value: Bytes::from_static(b"2"),
                etag: Some("8b7f3c2e-2222-4d4d-9999-0123456789ab".into()),
                ..SetRequest::default()
            })
            .await
            .unwrap();

        // The expired row is swept once; an immediate second sweep is skipped.
        assert_eq!(store.cleanup_expired().await.unwrap(), 1);
        assert_eq!(store.cleanup_expired().await.unwrap(), 0);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let (md, _) = file_store_md(&dir);
        let md = md.with("disableWAL", "true").with("tableName", "custom");
        {
            let store = SqliteStore::open(&md).await.unwrap();
            store
                .set(&SetRequest {
                    key: "k".into(),
                    value: Bytes::from_static(b"1"),
                    ..SetRequest::default()
                })
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&md).await.unwrap();
        let item = store
            .get(&GetRequest {
                key: "k".into(),
                ..GetRequest::default()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item.value, "1");
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn in_memory_stores_are_separate() {
        let md = ComponentMetadata::new("s", "app").with("connectionString", ":memory:");
        let a = SqliteStore::open(&md).await.unwrap();
        let b = SqliteStore::open(&md).await.unwrap();
        a.set(&SetRequest {
            key: "k".into(),
            value: Bytes::from_static(b"1"),
            ..SetRequest::default()
        })
        .await
        .unwrap();
        let get = GetRequest {
            key: "k".into(),
            ..GetRequest::default()
        };
        assert!(a.get(&get).await.unwrap().is_some());
        assert!(b.get(&get).await.unwrap().is_none());
    }
}
