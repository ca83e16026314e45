//! `state.postgresql` (alias `state.postgres`): PostgreSQL with the table
//! layout of Dapr's PostgreSQL state store **v2**, so a table can be shared
//! with Go sidecars in either direction.
//!
//! Layout (created if missing, migrations tracked as Dapr does):
//! - `<tablePrefix>state`: `key text PRIMARY KEY`, `value bytea NOT NULL`
//!   (the raw value bytes), `etag uuid NOT NULL DEFAULT gen_random_uuid()`,
//!   `created_at timestamptz NOT NULL DEFAULT now()`, `updated_at timestamptz`,
//!   `expires_at timestamptz` (indexed), `row_id bigint` identity with a unique
//!   index `<table>_row_id_uidx`.
//! - `<metadataTableName>` (default `dapr_metadata`): `key text PRIMARY KEY`,
//!   `value text NOT NULL`. Rows used: `lock` (migration lock),
//!   `migrations-state-v2-<tablePrefix>` (migration level, currently "2") and
//!   `last-cleanup-state-v2-<tablePrefix>` (time of the last TTL sweep, shared
//!   by every sidecar using the table).
//!
//! Etags are the row's UUID in canonical lowercase hyphenated form, renewed on
//! every write.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{
    Client, GenericClient, NoTls, Row, Statement, config::SslMode, error::SqlState, types::ToSql,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    BulkGetItem, Concurrency, DeleteRequest, Features, GetRequest, InitError, SetRequest,
    StateError, StateItem, StateStore, TTL_EXPIRE_TIME_KEY, TransactionOp,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_METADATA_TABLE: &str = "dapr_metadata";
const STATE_TABLE: &str = "state";
/// Row in the metadata table whose row lock serialises migrations.
const LOCK_KEY: &str = "lock";
/// Connection-string keys pgx accepts (pool tuning and the like) that
/// tokio-postgres would reject as unknown; they are dropped.
const PGX_ONLY_KEYS: &[&str] = &[
    "pool_max_conns",
    "pool_min_conns",
    "pool_min_idle_conns",
    "pool_max_conn_lifetime",
    "pool_max_conn_lifetime_jitter",
    "pool_max_conn_idle_time",
    "pool_health_check_period",
    "default_query_exec_mode",
    "statement_cache_capacity",
    "description_cache_capacity",
    "sslsni",
];

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// How (and whether) the server certificate is checked, from libpq's sslmode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    /// Encrypt if possible, without checking the certificate (libpq's
    /// allow/prefer/require without a root certificate).
    NoVerify,
    /// Check the chain but not the host name.
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone)]
struct Settings {
    pg: tokio_postgres::Config,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    table_prefix: String,
    state_table: String,
    metadata_table: String,
    timeout: Duration,
    cleanup_interval: Option<Duration>,
    max_conns: usize,
    max_idle_time: Option<Duration>,
    cache_statements: bool,
}

fn invalid(field: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Table names are spliced into SQL, so only plain (optionally
/// schema-qualified) identifiers are accepted.
fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
                && !part.as_bytes()[0].is_ascii_digit()
        })
}

/// Parses a Go duration where "0" or a negative value means "disabled".
fn optional_interval(md: &ComponentMetadata, keys: &[&str]) -> Result<Option<Duration>, InitError> {
    let Some((key, raw)) = keys.iter().find_map(|k| md.get(k).map(|v| (*k, v))) else {
        return Ok(Some(DEFAULT_CLEANUP_INTERVAL));
    };
    let raw = raw.trim();
    if raw.starts_with('-') {
        return Ok(None);
    }
    let d = crate::duration::parse_go_duration(raw).map_err(|e| invalid(key, e.to_string()))?;
    Ok((!d.is_zero()).then_some(d))
}

impl Settings {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, InitError> {
        let timeout = match md.get_any(&["timeout", "timeoutInSeconds"]) {
            None => DEFAULT_TIMEOUT,
            Some(_) => {
                let key = if md.get("timeout").is_some() {
                    "timeout"
                } else {
                    "timeoutInSeconds"
                };
                let d = md.get_duration(key)?.unwrap_or(DEFAULT_TIMEOUT);
                if d < Duration::from_secs(1) {
                    return Err(invalid(key, "must be at least 1s").into());
                }
                d
            }
        };
        let cleanup_interval =
            optional_interval(md, &["cleanupInterval", "cleanupIntervalInSeconds"])?;

        let table_prefix = md.get("tablePrefix").unwrap_or("").to_owned();
        let state_table = format!("{table_prefix}{STATE_TABLE}");
        if !valid_table_name(&state_table) {
            return Err(invalid(
                "tablePrefix",
                "only letters, digits, '_' and a schema '.' are allowed",
            )
            .into());
        }
        let metadata_table = md
            .get("metadataTableName")
            .unwrap_or(DEFAULT_METADATA_TABLE)
            .to_owned();
        if !valid_table_name(&metadata_table) {
            return Err(invalid(
                "metadataTableName",
                "only letters, digits, '_' and a schema '.' are allowed",
            )
            .into());
        }

        // As in Dapr, the separate host/user/... fields may stand alone.
        let conn = match md.get_any(&["connectionString", "url"]) {
            Some(c) => c,
            None if md.get_any(&["host", "hostaddr"]).is_some() => "",
            None => return Err(MetadataError::Missing("connectionString".to_owned()).into()),
        };
        let mut parsed = ConnString::parse(conn).map_err(|e| invalid("connectionString", e))?;
        let overrides = Overrides {
            host: md.get("hostaddr").or(md.get("host")).map(str::to_owned),
            port: md.get("port").map(str::to_owned),
            dbname: md.get("database").map(str::to_owned),
            user: md.get("user").map(str::to_owned),
            password: md.get("password").map(str::to_owned),
        };
        let mut pg = parsed
            .to_config(&overrides)
            .map_err(|e| invalid("connectionString", e))?;
        if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
            pg.host("localhost");
        }
        if pg.get_user().is_none() {
            // libpq and pgx fall back to the OS user.
            if let Ok(user) = std::env::var("USER") {
                pg.user(user);
            }
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(timeout);
        }

        let root_cert = md
            .get("sslRootCert")
            .map(str::to_owned)
            .or(parsed.ssl_root_cert.take())
            .map(PathBuf::from);
        let tls = match parsed.ssl_mode.as_deref() {
            None | Some("prefer") | Some("allow") => {
                pg.ssl_mode(SslMode::Prefer);
                TlsMode::NoVerify
            }
            Some("disable") => {
                pg.ssl_mode(SslMode::Disable);
                TlsMode::Disable
            }
            // libpq: require with a root certificate behaves like verify-ca.
            Some("require") => {
                pg.ssl_mode(SslMode::Require);
                if root_cert.is_some() {
                    TlsMode::VerifyCa
                } else {
                    TlsMode::NoVerify
                }
            }
            Some("verify-ca") => {
                pg.ssl_mode(SslMode::Require);
                TlsMode::VerifyCa
            }
            Some("verify-full") => {
                pg.ssl_mode(SslMode::Require);
                TlsMode::VerifyFull
            }
            Some(other) => {
                return Err(
                    invalid("connectionString", format!("unsupported sslmode '{other}'")).into(),
                );
            }
        };

        let max_conns = match md.get_parsed::<i64>("maxConns")? {
            Some(n) if n > 0 => n as usize,
            Some(_) => default_max_conns(),
            None => match parsed.pool_max_conns.as_deref() {
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("connectionString", "invalid pool_max_conns"))?,
                None => default_max_conns(),
            },
        }
        // Migrations hold a lock on one connection while running on another.
        .max(2);
        let max_idle_time = match md.get_duration("connectionMaxIdleTime")? {
            Some(d) if !d.is_zero() => Some(d),
            Some(_) => None,
            None => parsed
                .pool_max_conn_idle_time
                .as_deref()
                .map(|v| {
                    crate::duration::parse_go_duration(v)
                        .map_err(|e| invalid("connectionString", e.to_string()))
                })
                .transpose()?,
        };
        // Named prepared statements break behind transaction-pooling proxies
        // such as PgBouncer; Dapr's `exec`/`simple_protocol` modes are used there.
        let cache_statements = !matches!(
            md.get("queryExecMode")
                .or(parsed.query_exec_mode.as_deref())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("exec") | Some("simple_protocol")
        );

        Ok(Self {
            pg,
            tls,
            root_cert,
            table_prefix,
            state_table,
            metadata_table,
            timeout,
            cleanup_interval,
            max_conns,
            max_idle_time,
            cache_statements,
        })
    }
}

fn default_max_conns() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

// ---------------------------------------------------------------------------
// Connection strings
// ---------------------------------------------------------------------------

/// Fields given as separate metadata, which take precedence over the
/// connection string as in Dapr.
#[derive(Debug, Default)]
struct Overrides {
    host: Option<String>,
    port: Option<String>,
    dbname: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Debug)]
enum ConnForm {
    /// libpq `key=value` pairs.
    KeyValue(Vec<(String, String)>),
    /// `postgres://…` up to the query string, plus the kept raw `k=v` params.
    Url { base: String, params: Vec<String> },
}

/// A connection string with the parts tokio-postgres does not understand
/// taken out.
#[derive(Debug)]
struct ConnString {
    form: ConnForm,
    ssl_mode: Option<String>,
    ssl_root_cert: Option<String>,
    pool_max_conns: Option<String>,
    pool_max_conn_idle_time: Option<String>,
    query_exec_mode: Option<String>,
}

impl ConnString {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut out = ConnString {
            form: ConnForm::KeyValue(Vec::new()),
            ssl_mode: None,
            ssl_root_cert: None,
            pool_max_conns: None,
            pool_max_conn_idle_time: None,
            query_exec_mode: None,
        };
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let (base, query) = s.split_once('?').unwrap_or((s, ""));
            let mut params = Vec::new();
            for raw in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
                let key = percent_decode(k);
                if out.take_special(&key, &percent_decode(v))? {
                    continue;
                }
                params.push(raw.to_owned());
            }
            out.form = ConnForm::Url {
                base: base.to_owned(),
                params,
            };
        } else {
            let mut pairs = Vec::new();
            for (k, v) in parse_key_values(s)? {
                let key = if k == "database" {
                    "dbname".to_owned()
                } else {
                    k
                };
                if !out.take_special(&key, &v)? {
                    pairs.push((key, v));
                }
            }
            out.form = ConnForm::KeyValue(pairs);
        }
        Ok(out)
    }

    /// Handles keys that are ours to interpret; returns true if consumed.
    fn take_special(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let slot = match key {
            "sslmode" => &mut self.ssl_mode,
            "sslrootcert" => &mut self.ssl_root_cert,
            "pool_max_conns" => &mut self.pool_max_conns,
            "pool_max_conn_idle_time" => &mut self.pool_max_conn_idle_time,
            "default_query_exec_mode" => &mut self.query_exec_mode,
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!("'{key}' (client certificates) is not supported"));
            }
            k if PGX_ONLY_KEYS.contains(&k) => return Ok(true),
            _ => return Ok(false),
        };
        *slot = Some(value.to_owned());
        Ok(true)
    }

    fn to_config(&self, o: &Overrides) -> Result<tokio_postgres::Config, String> {
        let text = match &self.form {
            ConnForm::KeyValue(pairs) => {
                let mut pairs = pairs.clone();
                let mut set = |key: &str, value: &Option<String>| {
                    if let Some(v) = value {
                        match pairs.iter_mut().find(|(k, _)| k == key) {
                            Some(p) => p.1 = v.clone(),
                            None => pairs.push((key.to_owned(), v.clone())),
                        }
                    }
                };
                set("host", &o.host);
                set("port", &o.port);
                set("dbname", &o.dbname);
                set("user", &o.user);
                set("password", &o.password);
                if o.host.is_some() {
                    pairs.retain(|(k, _)| k != "hostaddr");
                }
                render_key_values(&pairs)
            }
            ConnForm::Url { base, params } => {
                let base = url_with_host(base, o.host.as_deref(), o.port.as_deref());
                if params.is_empty() {
                    base
                } else {
                    format!("{base}?{}", params.join("&"))
                }
            }
        };
        let mut cfg = tokio_postgres::Config::from_str(&text).map_err(|e| e.to_string())?;
        if matches!(self.form, ConnForm::Url { .. }) {
            if let Some(u) = &o.user {
                cfg.user(u);
            }
            if let Some(p) = &o.password {
                cfg.password(p);
            }
            if let Some(d) = &o.dbname {
                cfg.dbname(d);
            }
        }
        Ok(cfg)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the host (and port) of a `postgres://` URL without its query.
fn url_with_host(base: &str, host: Option<&str>, port: Option<&str>) -> String {
    if host.is_none() && port.is_none() {
        return base.to_owned();
    }
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(auth_end);
    let (userinfo, hostspec) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    // Strip an existing port (not inside an IPv6 literal).
    let bare_host = match hostspec.rfind(':') {
        Some(i) if !hostspec[i..].contains(']') => &hostspec[..i],
        _ => hostspec,
    };
    let new_host = host.unwrap_or(bare_host);
    let new_hostspec = match port {
        Some(p) => format!("{new_host}:{p}"),
        None if host.is_some() => new_host.to_owned(),
        None => hostspec.to_owned(),
    };
    format!("{scheme}://{userinfo}{new_hostspec}{path}")
}

/// Splits a libpq `key=value` string (values optionally single-quoted, with
/// backslash escapes).
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("expected '=' after '{key}'"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for '{key}'")),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for '{key}'")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn render_key_values(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{k}='{escaped}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

fn tls_connector(s: &Settings) -> Result<Option<MakeRustlsConnect>, InitError> {
    use rustls::{RootCertStore, client::WebPkiServerVerifier};
    use rustls_pki_types::{CertificateDer, pem::PemObject};

    if s.tls == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| InitError::Connect(format!("TLS setup failed: {e}")))?;
    let config = if s.tls == TlsMode::NoVerify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &s.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| InitError::Connect(format!("cannot read sslrootcert: {e}")))?;
                roots.add_parsable_certificates(certs);
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if roots.is_empty() {
            return Err(InitError::Connect(
                "no usable root certificates for sslmode verification".into(),
            ));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| InitError::Connect(format!("TLS setup failed: {e}")))?;
        let builder = builder.dangerous();
        let builder = if s.tls == TlsMode::VerifyCa {
            builder.with_custom_certificate_verifier(Arc::new(tls::IgnoreHostname(verifier)))
        } else {
            builder.with_custom_certificate_verifier(verifier)
        };
        builder.with_no_client_auth()
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

mod tls {
    use std::sync::Arc;

    use rustls::{
        CertificateError, DigitallySignedStruct, Error, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::CryptoProvider,
    };
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// libpq's sslmode=prefer/require: encrypted, certificate not checked.
    #[derive(Debug)]
    pub(super) struct NoVerify(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// libpq's sslmode=verify-ca: the chain is checked, the host name is not.
    #[derive(Debug)]
    pub(super) struct IgnoreHostname(pub Arc<dyn ServerCertVerifier>);

    impl ServerCertVerifier for IgnoreHostname {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

// ---------------------------------------------------------------------------
// Connection pool
// ---------------------------------------------------------------------------

struct PgConn {
    client: Client,
    /// Prepared statements by SQL text; `None` when caching is off.
    stmts: Option<HashMap<String, Statement>>,
}

struct Pool {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<(PgConn, Instant)>>,
    permits: Arc<Semaphore>,
    max_idle_time: Option<Duration>,
    cache_statements: bool,
}

/// A connection checked out of the pool; returned to it on drop if healthy.
struct Pooled {
    conn: Option<PgConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        // `conn` is only taken in `drop`.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool.lock_idle().push((conn, Instant::now()));
        }
    }
}

impl Pool {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConn, Instant)>> {
        // The idle list is only pushed to and popped from; a panic elsewhere
        // cannot leave it inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(self: &Arc<Self>) -> Result<Pooled, StateError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StateError::Backend("connection pool closed".into()))?;
        let reused = {
            let mut idle = self.lock_idle();
            let mut found = None;
            while let Some((conn, since)) = idle.pop() {
                let stale = self.max_idle_time.is_some_and(|max| since.elapsed() > max);
                if !stale && !conn.client.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<PgConn, StateError> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(pg_err)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "postgres connection closed");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(pg_err)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "postgres connection closed");
                    }
                });
                client
            }
        };
        Ok(PgConn {
            client,
            stmts: self.cache_statements.then(HashMap::new),
        })
    }
}

fn pg_err(e: tokio_postgres::Error) -> StateError {
    StateError::Backend(error_chain(&e))
}

/// The error with its causes (tokio-postgres hides e.g. TLS reasons in them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

/// The message of a `StateError` without its "state store error" prefix.
fn plain(e: StateError) -> String {
    match e {
        StateError::Backend(msg) => msg,
        other => other.to_string(),
    }
}

/// Prepares `sql` on `c`, reusing the connection's cached statement.
async fn prepare<C: GenericClient>(
    c: &C,
    cache: &mut Option<HashMap<String, Statement>>,
    sql: &str,
) -> Result<Statement, StateError> {
    if let Some(stmt) = cache.as_ref().and_then(|m| m.get(sql)) {
        return Ok(stmt.clone());
    }
    let stmt = c.prepare(sql).await.map_err(pg_err)?;
    if let Some(m) = cache {
        m.insert(sql.to_owned(), stmt.clone());
    }
    Ok(stmt)
}

async fn execute<C: GenericClient>(
    c: &C,
    cache: &mut Option<HashMap<String, Statement>>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StateError> {
    let stmt = prepare(c, cache, sql).await?;
    c.execute(&stmt, params).await.map_err(pg_err)
}

async fn query<C: GenericClient>(
    c: &C,
    cache: &mut Option<HashMap<String, Statement>>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StateError> {
    let stmt = prepare(c, cache, sql).await?;
    c.query(&stmt, params).await.map_err(pg_err)
}

// ---------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------

/// The statements used at run time, with the table name spliced in.
struct Sql {
    get: String,
    bulk_get: String,
    upsert: String,
    insert_first_write: String,
    update_with_etag: String,
    delete: String,
    delete_with_etag: String,
    update_last_cleanup: String,
    delete_expired: String,
}

impl Sql {
    fn new(table: &str, metadata_table: &str) -> Self {
        // `$3` is the TTL in seconds; NULL makes `expires_at` NULL.
        let expires = "now() + $3::float8 * interval '1 second'";
        let live = "(expires_at IS NULL OR expires_at >= now())";
        let upsert = format!(
            "INSERT INTO {table} AS t (key, value, etag, expires_at) \
             VALUES ($1, $2, gen_random_uuid(), {expires}) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now(), \
             etag = gen_random_uuid(), expires_at = excluded.expires_at"
        );
        Self {
            get: format!("SELECT value, etag, expires_at FROM {table} WHERE key = $1 AND {live}"),
            bulk_get: format!(
                "SELECT key, value, etag, expires_at FROM {table} WHERE key = ANY($1) AND {live}"
            ),
            // First-write may only replace a row that has expired but not
            // been swept yet.
            insert_first_write: format!(
                "{upsert} WHERE t.expires_at IS NOT NULL AND t.expires_at < now()"
            ),
            upsert,
            update_with_etag: format!(
                "UPDATE {table} SET value = $2, updated_at = now(), etag = gen_random_uuid(), \
                 expires_at = {expires} WHERE key = $1 AND etag = $4 AND {live}"
            ),
            delete: format!("DELETE FROM {table} WHERE key = $1"),
            delete_with_etag: format!(
                "DELETE FROM {table} WHERE key = $1 AND etag = $2 AND {live}"
            ),
            // Only one sidecar sharing the table sweeps per interval: the
            // timestamp row is moved forward only if the interval ($1, ms)
            // has passed, and the sweep runs only when a row was written.
            update_last_cleanup: format!(
                "INSERT INTO {metadata_table} (key, value) VALUES ($2, now()::text) \
                 ON CONFLICT (key) DO UPDATE SET value = now()::text \
                 WHERE (EXTRACT('epoch' FROM now() - {metadata_table}.value::timestamp with time zone) * 1000)::bigint > $1"
            ),
            delete_expired: format!(
                "DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at < now()"
            ),
        }
    }
}

fn parse_etag(etag: &str) -> Result<uuid::Uuid, StateError> {
    uuid::Uuid::parse_str(etag).map_err(|_| StateError::EtagInvalid(etag.to_owned()))
}

fn ttl_seconds(ttl: Option<Duration>) -> Option<f64> {
    ttl.map(|d| d.as_secs_f64())
}

fn expire_metadata(expires: Option<DateTime<Utc>>) -> HashMap<String, String> {
    let mut md = HashMap::new();
    if let Some(at) = expires {
        // Go formats this with time.RFC3339: whole seconds, `Z`.
        md.insert(
            TTL_EXPIRE_TIME_KEY.to_owned(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    md
}

fn row_to_item(row: &Row, offset: usize) -> Result<StateItem, StateError> {
    let value: Vec<u8> = row.try_get(offset).map_err(pg_err)?;
    let etag: uuid::Uuid = row.try_get(offset + 1).map_err(pg_err)?;
    let expires: Option<DateTime<Utc>> = row.try_get(offset + 2).map_err(pg_err)?;
    Ok(StateItem {
        value: Bytes::from(value),
        etag: Some(etag.to_string()),
        metadata: expire_metadata(expires),
        content_type: None,
    })
}

async fn do_set<C: GenericClient>(
    c: &C,
    cache: &mut Option<HashMap<String, Statement>>,
    sql: &Sql,
    req: &SetRequest,
) -> Result<(), StateError> {
    let ttl = ttl_seconds(req.ttl);
    let value: &[u8] = &req.value;
    let affected = match &req.etag {
        Some(etag) => {
            let etag = parse_etag(etag)?;
            execute(
                c,
                cache,
                &sql.update_with_etag,
                &[&req.key, &value, &ttl, &etag],
            )
            .await?
        }
        None => {
            let stmt = match req.concurrency {
                Concurrency::FirstWrite => &sql.insert_first_write,
                Concurrency::LastWrite => &sql.upsert,
            };
            execute(c, cache, stmt, &[&req.key, &value, &ttl]).await?
        }
    };
    if affected == 0 {
        return Err(StateError::EtagMismatch);
    }
    Ok(())
}

async fn do_delete<C: GenericClient>(
    c: &C,
    cache: &mut Option<HashMap<String, Statement>>,
    sql: &Sql,
    req: &DeleteRequest,
) -> Result<(), StateError> {
    match &req.etag {
        Some(etag) => {
            let etag = parse_etag(etag)?;
            let n = execute(c, cache, &sql.delete_with_etag, &[&req.key, &etag]).await?;
            if n == 0 {
                return Err(StateError::EtagMismatch);
            }
        }
        None => {
            execute(c, cache, &sql.delete, &[&req.key]).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn init_err(what: &str) -> impl Fn(tokio_postgres::Error) -> InitError + '_ {
    move |e| InitError::Connect(format!("{what}: {}", error_chain(&e)))
}

/// Creates the metadata table and brings the state table to the current
/// migration level, holding Dapr's row lock so concurrent sidecars (Go or
/// ours) migrate one at a time.
async fn migrate(pool: &Arc<Pool>, s: &Settings) -> Result<(), InitError> {
    let meta = &s.metadata_table;
    let conn = pool.get().await.map_err(|e| InitError::Connect(plain(e)))?;
    let create_meta = format!(
        "CREATE TABLE IF NOT EXISTS {meta} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
    );
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide on the type
    // name (23505); retry a few times as Dapr does.
    let mut attempt = 0;
    loop {
        match conn.client.batch_execute(&create_meta).await {
            Ok(()) => break,
            Err(e) if is_unique_violation(&e) && attempt < 2 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(init_err("creating the metadata table")(e)),
        }
    }
    conn.client
        .execute(
            &format!(
                "INSERT INTO {meta} (key, value) VALUES ($1, 'lock') ON CONFLICT (key) DO NOTHING"
            ),
            &[&LOCK_KEY],
        )
        .await
        .map_err(init_err("creating the migration lock row"))?;

    // The lock is a row lock held by an open transaction on this connection;
    // the migrations themselves run on another one.
    let mut lock_conn = conn;
    let lock_tx = lock_conn
        .client
        .transaction()
        .await
        .map_err(init_err("starting the migration transaction"))?;
    lock_tx
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = $1 FOR UPDATE"),
            &[&LOCK_KEY],
        )
        .await
        .map_err(init_err("acquiring the migration lock"))?;

    let result = run_migrations(pool, s).await;
    // Rolling back releases the lock; the lock row is never changed.
    if let Err(e) = lock_tx.rollback().await {
        tracing::warn!(error = %e, "releasing the postgres migration lock failed");
    }
    result
}

async fn run_migrations(pool: &Arc<Pool>, s: &Settings) -> Result<(), InitError> {
    let meta = &s.metadata_table;
    let version_key = format!("migrations-state-v2-{}", s.table_prefix);
    let conn = pool.get().await.map_err(|e| InitError::Connect(plain(e)))?;
    let level: usize = match conn
        .client
        .query_opt(
            &format!("SELECT value FROM {meta} WHERE key = $1"),
            &[&version_key],
        )
        .await
        .map_err(init_err("reading the migration level"))?
    {
        None => 0,
        Some(row) => {
            let v: String = row
                .try_get(0)
                .map_err(init_err("reading the migration level"))?;
            v.trim().parse().map_err(|_| {
                InitError::Connect(format!(
                    "invalid migration level '{v}' in metadata table {meta}"
                ))
            })?
        }
    };
    const MIGRATIONS: usize = 2;
    for n in level..MIGRATIONS {
        tracing::info!(table = %s.state_table, migration = n + 1, "performing postgres state store migration");
        match n {
            0 => migration_create_table(&conn.client, &s.state_table).await?,
            _ => migration_row_id(&conn.client, &s.state_table).await?,
        }
        conn.client
            .execute(
                &format!(
                    "INSERT INTO {meta} (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = $2"
                ),
                &[&version_key, &(n + 1).to_string()],
            )
            .await
            .map_err(init_err("updating the migration level"))?;
    }
    Ok(())
}

async fn migration_create_table(c: &Client, table: &str) -> Result<(), InitError> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            key text NOT NULL PRIMARY KEY,
            value bytea NOT NULL,
            etag uuid NOT NULL DEFAULT gen_random_uuid(),
            created_at timestamp with time zone NOT NULL DEFAULT now(),
            updated_at timestamp with time zone,
            expires_at timestamp with time zone
        );
        CREATE INDEX ON {table} (expires_at);"
    );
    match c.batch_execute(&ddl).await {
        Ok(()) => Ok(()),
        // Another sidecar won the race to create it.
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(init_err("creating the state table")(e)),
    }
}

/// Adds the `row_id` identity column (numbered by creation order for
/// existing rows) with its unique index, as Dapr's second migration does.
async fn migration_row_id(c: &Client, table: &str) -> Result<(), InitError> {
    let err = init_err("adding row_id to the state table");
    let row = c
        .query_opt(
            "SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), \
                    n.nspname || '.' || c.relname \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1)",
            &[&table],
        )
        .await
        .map_err(&err)?
        .ok_or_else(|| InitError::Connect(format!("state table {table} not found")))?;
    let schema: String = row.try_get(0).map_err(&err)?;
    let relname: String = row.try_get(1).map_err(&err)?;
    let quoted: String = row.try_get(2).map_err(&err)?;
    let regname: String = row.try_get(3).map_err(&err)?;

    let has_column: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname = 'row_id' AND NOT attisdropped)",
            &[&table],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(&err)?;
    if !has_column {
        c.batch_execute(&format!("ALTER TABLE {quoted} ADD COLUMN row_id BIGINT"))
            .await
            .map_err(&err)?;
    }
    c.batch_execute(&format!(
        "UPDATE {quoted} AS t SET row_id = r.rn FROM ( \
           SELECT key, ROW_NUMBER() OVER (ORDER BY created_at ASC, key ASC) AS rn \
           FROM {quoted} WHERE row_id IS NULL) r \
         WHERE r.key = t.key; \
         ALTER TABLE {quoted} ALTER COLUMN row_id SET NOT NULL;"
    ))
    .await
    .map_err(&err)?;

    let is_identity: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 \
             AND table_name = $2 AND column_name = 'row_id' AND is_identity = 'YES')",
            &[&schema, &relname],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(&err)?;
    if !is_identity {
        c.batch_execute(&format!(
            "ALTER TABLE {quoted} ALTER COLUMN row_id ADD GENERATED BY DEFAULT AS IDENTITY"
        ))
        .await
        .map_err(&err)?;
    }
    let seq: Option<String> = c
        .query_one("SELECT pg_get_serial_sequence($1, 'row_id')", &[&regname])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(&err)?;
    if let Some(seq) = seq.filter(|s| !s.is_empty()) {
        c.execute(
            &format!(
                "SELECT setval($1::text::regclass, COALESCE((SELECT MAX(row_id) FROM {quoted}), 0) + 1, false)"
            ),
            &[&seq],
        )
        .await
        .map_err(&err)?;
    }
    let index = format!(
        "\"{}\"",
        format!("{relname}_row_id_uidx").replace('"', "\"\"")
    );
    c.batch_execute(&format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {quoted} (row_id)"
    ))
    .await
    .map_err(&err)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

struct Inner {
    pool: Arc<Pool>,
    sql: Sql,
    timeout: Duration,
    table_prefix: String,
    cleanup_interval: Option<Duration>,
}

impl Inner {
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            StateError::Backend(format!(
                "postgres operation timed out after {:?}",
                self.timeout
            ))
        })?
    }

    async fn cleanup_expired(&self) -> Result<u64, StateError> {
        let Some(interval) = self.cleanup_interval else {
            return Ok(0);
        };
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        // A 100ms margin so a sweep is not skipped because of timer jitter.
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX) - 100;
        let cleanup_key = format!("last-cleanup-state-v2-{}", self.table_prefix);
        let claimed = execute(
            client,
            stmts,
            &self.sql.update_last_cleanup,
            &[&interval_ms, &cleanup_key],
        )
        .await?;
        if claimed == 0 {
            tracing::debug!("postgres TTL sweep ran recently elsewhere; skipping");
            return Ok(0);
        }
        let removed = execute(client, stmts, &self.sql.delete_expired, &[]).await?;
        tracing::debug!(removed, "postgres TTL sweep removed expired rows");
        Ok(removed)
    }
}

pub struct PostgresStore {
    inner: Arc<Inner>,
    gc: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(gc) = self.gc.take() {
            gc.abort();
        }
    }
}

impl PostgresStore {
    pub async fn connect(metadata: &ComponentMetadata) -> Result<Self, InitError> {
        let s = Settings::from_metadata(metadata)?;
        let tls = tls_connector(&s)?;
        let pool = Arc::new(Pool {
            config: s.pg.clone(),
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(s.max_conns)),
            max_idle_time: s.max_idle_time,
            cache_statements: s.cache_statements,
        });

        let setup = async {
            let conn = pool.get().await.map_err(|e| {
                InitError::Connect(format!("failed to connect to postgres: {}", plain(e)))
            })?;
            conn.client
                .simple_query("SELECT 1")
                .await
                .map_err(init_err("failed to ping postgres"))?;
            drop(conn);
            migrate(&pool, &s).await
        };
        // Migrations may wait on another sidecar's lock, so they get more
        // than one operation's timeout.
        tokio::time::timeout(s.timeout + Duration::from_secs(60), setup)
            .await
            .map_err(|_| InitError::Connect("timed out connecting to postgres".into()))??;

        let inner = Arc::new(Inner {
            pool,
            sql: Sql::new(&s.state_table, &s.metadata_table),
            timeout: s.timeout,
            table_prefix: s.table_prefix.clone(),
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
                        tracing::warn!(error = %e, "postgres TTL sweep failed");
                    }
                }
            })
        });
        tracing::debug!(table = %s.state_table, "postgres state store ready");
        Ok(Self { inner, gc })
    }

    /// Deletes expired rows now (if no sidecar sharing the table did so
    /// within the cleanup interval). Returns how many rows were removed.
    pub async fn cleanup_expired(&self) -> Result<u64, StateError> {
        self.inner.timed(self.inner.cleanup_expired()).await
    }
}

#[async_trait]
impl StateStore for PostgresStore {
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
                let mut conn = inner.pool.get().await?;
                let PgConn { client, stmts } = &mut *conn;
                let rows = query(client, stmts, &inner.sql.get, &[&req.key]).await?;
                rows.first().map(|r| row_to_item(r, 0)).transpose()
            })
            .await
    }

    async fn bulk_get(&self, reqs: &[GetRequest], _parallelism: usize) -> Vec<BulkGetItem> {
        let inner = &self.inner;
        let keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
        let found = inner
            .timed(async {
                let mut conn = inner.pool.get().await?;
                let PgConn { client, stmts } = &mut *conn;
                let rows = query(client, stmts, &inner.sql.bulk_get, &[&keys]).await?;
                let mut found = HashMap::with_capacity(rows.len());
                for row in &rows {
                    let key: String = row.try_get(0).map_err(pg_err)?;
                    found.insert(key, row_to_item(row, 1)?);
                }
                Ok(found)
            })
            .await;
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
                let mut conn = inner.pool.get().await?;
                let PgConn { client, stmts } = &mut *conn;
                do_set(client, stmts, &inner.sql, req).await
            })
            .await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.pool.get().await?;
                let PgConn { client, stmts } = &mut *conn;
                do_delete(client, stmts, &inner.sql, req).await
            })
            .await
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let mut conn = inner.pool.get().await?;
                let PgConn { client, stmts } = &mut *conn;
                // Dropping the transaction on error (or timeout) rolls it back.
                let tx = client.transaction().await.map_err(pg_err)?;
                for op in ops {
                    match op {
                        TransactionOp::Set(r) => do_set(&tx, stmts, &inner.sql, r).await?,
                        TransactionOp::Delete(r) => do_delete(&tx, stmts, &inner.sql, r).await?,
                    }
                }
                tx.commit().await.map_err(pg_err)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StateError> {
        let inner = &self.inner;
        inner
            .timed(async {
                let conn = inner.pool.get().await?;
                conn.client.simple_query("SELECT 1").await.map_err(pg_err)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(conn: &str) -> ComponentMetadata {
        ComponentMetadata::new("pg", "app").with("connectionString", conn)
    }

    fn settings(m: &ComponentMetadata) -> Settings {
        Settings::from_metadata(m).unwrap()
    }

    #[test]
    fn key_value_connection_strings() {
        let s = settings(&md(
            "host=db.local port=6543 user=dapr password='a b\\'c' database=dapr_test \
             sslmode=disable pool_max_conns=7 connect_timeout=10 pool_health_check_period=1m",
        ));
        assert_eq!(s.pg.get_dbname(), Some("dapr_test"));
        assert_eq!(s.pg.get_user(), Some("dapr"));
        assert_eq!(s.pg.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(s.pg.get_ports(), &[6543]);
        assert_eq!(s.pg.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(s.pg.get_ssl_mode(), SslMode::Disable);
        assert_eq!(s.tls, TlsMode::Disable);
        assert_eq!(s.max_conns, 7);
        assert!(s.cache_statements);
        // Defaults from Dapr.
        assert_eq!(s.state_table, "state");
        assert_eq!(s.metadata_table, "dapr_metadata");
        assert_eq!(s.timeout, Duration::from_secs(20));
        assert_eq!(s.cleanup_interval, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn url_connection_strings() {
        let s = settings(&md(
            "postgres://dapr:p%40ss@db.example:6543/mydb?sslmode=require&pool_max_conns=3&application_name=x",
        ));
        assert_eq!(s.pg.get_user(), Some("dapr"));
        assert_eq!(s.pg.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(s.pg.get_dbname(), Some("mydb"));
        assert_eq!(s.pg.get_ports(), &[6543]);
        assert_eq!(s.pg.get_application_name(), Some("x"));
        assert_eq!(s.pg.get_ssl_mode(), SslMode::Require);
        assert_eq!(s.tls, TlsMode::NoVerify);
        assert_eq!(s.max_conns, 3);
        // The connect timeout defaults to the operation timeout.
        assert_eq!(s.pg.get_connect_timeout(), Some(&Duration::from_secs(20)));
    }

    #[test]
    fn separate_fields_override_the_connection_string() {
        let m = md("host=a port=1 user=u password=p dbname=d")
            .with("host", "b")
            .with("port", "2")
            .with("user", "v")
            .with("password", "q")
            .with("database", "e");
        let s = settings(&m);
        assert_eq!(format!("{:?}", s.pg.get_hosts()), r#"[Tcp("b")]"#);
        assert_eq!(s.pg.get_ports(), &[2]);
        assert_eq!(s.pg.get_user(), Some("v"));
        assert_eq!(s.pg.get_password(), Some(&b"q"[..]));
        assert_eq!(s.pg.get_dbname(), Some("e"));

        let m = md("postgresql://u:p@a:1/d")
            .with("host", "b")
            .with("port", "2")
            .with("user", "v")
            .with("database", "e");
        let s = settings(&m);
        assert_eq!(format!("{:?}", s.pg.get_hosts()), r#"[Tcp("b")]"#);
        assert_eq!(s.pg.get_ports(), &[2]);
        assert_eq!(s.pg.get_user(), Some("v"));
        assert_eq!(s.pg.get_password(), Some(&b"p"[..]));
        assert_eq!(s.pg.get_dbname(), Some("e"));
    }

    #[test]
    fn url_host_rewriting() {
        assert_eq!(
            url_with_host("postgres://u:p@a:1/db", Some("b"), None),
            "postgres://u:p@b/db"
        );
        assert_eq!(
            url_with_host("postgres://a:1/db", None, Some("9")),
            "postgres://a:9/db"
        );
        assert_eq!(
            url_with_host("postgres://u@[::1]/db", None, Some("9")),
            "postgres://u@[::1]:9/db"
        );
        assert_eq!(url_with_host("postgres://a", None, None), "postgres://a");
    }

    #[test]
    fn key_value_parser() {
        assert_eq!(
            parse_key_values(" a = 1  b='x y'\tc=\\'q ").unwrap(),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x y".to_owned()),
                ("c".to_owned(), "'q".to_owned()),
            ]
        );
        assert!(parse_key_values("a").is_err());
        assert!(parse_key_values("a='open").is_err());
        let pairs = vec![("password".to_owned(), "it's \\ ok".to_owned())];
        assert_eq!(parse_key_values(&render_key_values(&pairs)).unwrap(), pairs);
    }

    #[test]
    fn ssl_modes() {
        let mode = |m: &str| settings(&md(&format!("host=h user=u sslmode={m}"))).tls;
        assert_eq!(mode("prefer"), TlsMode::NoVerify);
        assert_eq!(mode("allow"), TlsMode::NoVerify);
        assert_eq!(mode("require"), TlsMode::NoVerify);
        assert_eq!(mode("verify-ca"), TlsMode::VerifyCa);
        assert_eq!(mode("verify-full"), TlsMode::VerifyFull);
        assert_eq!(settings(&md("host=h user=u")).tls, TlsMode::NoVerify);
        let s = settings(&md("host=h user=u sslmode=require sslrootcert=/ca.pem"));
        assert_eq!(s.tls, TlsMode::VerifyCa);
        assert_eq!(s.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(Settings::from_metadata(&md("host=h sslmode=bogus")).is_err());
        assert!(Settings::from_metadata(&md("host=h sslcert=/c.pem")).is_err());
    }

    #[test]
    fn table_names_and_intervals() {
        let s = settings(
            &md("host=h user=u")
                .with("tablePrefix", "public.my_")
                .with("metadataTableName", "dapr.meta")
                .with("timeout", "30s")
                .with("cleanupInterval", "10m")
                .with("maxConns", "0"),
        );
        assert_eq!(s.state_table, "public.my_state");
        assert_eq!(s.metadata_table, "dapr.meta");
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.cleanup_interval, Some(Duration::from_secs(600)));
        assert!(s.max_conns >= 4);

        for (k, v) in [
            ("tablePrefix", "x; DROP TABLE y; --"),
            ("metadataTableName", "a b"),
            ("timeout", "500ms"),
            ("cleanupInterval", "soon"),
            ("maxConns", "many"),
        ] {
            assert!(
                Settings::from_metadata(&md("host=h").with(k, v)).is_err(),
                "{k}={v}"
            );
        }
        for v in ["0", "-1", "-1s"] {
            let s = settings(&md("host=h user=u").with("cleanupInterval", v));
            assert_eq!(s.cleanup_interval, None, "{v}");
        }
        let s = settings(
            &md("host=h user=u")
                .with("cleanupIntervalInSeconds", "30")
                .with("timeoutInSeconds", "5"),
        );
        assert_eq!(s.cleanup_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(Settings::from_metadata(&ComponentMetadata::new("pg", "app")).is_err());
        let fields_only = ComponentMetadata::new("pg", "app")
            .with("host", "h")
            .with("user", "u")
            .with("database", "d");
        assert_eq!(settings(&fields_only).pg.get_dbname(), Some("d"));
        assert!(
            !settings(&md("host=h user=u").with("queryExecMode", "simple_protocol"))
                .cache_statements
        );
    }

    #[test]
    fn etags_and_expiry_format() {
        let u = parse_etag("6F9619FF-8B86-D011-B42D-00CF4FC964FF").unwrap();
        assert_eq!(u.to_string(), "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
        assert_eq!(
            parse_etag("12"),
            Err(StateError::EtagInvalid("12".to_owned()))
        );
        let at = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            expire_metadata(Some(at)).get(TTL_EXPIRE_TIME_KEY).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert!(expire_metadata(None).is_empty());
    }

    // ---- against the test server -------------------------------------------

    fn test_conn_string() -> String {
        std::env::var("DAPR_RS_TEST_POSTGRES")
            .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test".into())
    }

    fn unreachable(e: impl std::fmt::Display) -> ! {
        panic!(
            "PostgreSQL test server unreachable ({e}). Run the tests with `scripts/test.sh` \
             (it starts the servers via scripts/test-services.sh), or set DAPR_RS_TEST_POSTGRES."
        )
    }

    async fn raw_client() -> Client {
        let (client, conn) = tokio_postgres::connect(&test_conn_string(), NoTls)
            .await
            .unwrap_or_else(|e| unreachable(e));
        tokio::spawn(conn);
        client
    }

    /// A table prefix and metadata table of its own, dropped on `cleanup`.
    struct Scratch {
        prefix: String,
        client: Client,
    }

    impl Scratch {
        async fn new() -> Self {
            Self {
                prefix: format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                client: raw_client().await,
            }
        }
        fn table(&self) -> String {
            format!("{}state", self.prefix)
        }
        fn meta(&self) -> String {
            format!("{}meta", self.prefix)
        }
        fn metadata(&self) -> ComponentMetadata {
            md(&test_conn_string())
                .with("tablePrefix", &self.prefix)
                .with("metadataTableName", self.meta())
        }
        async fn store(&self, m: ComponentMetadata) -> PostgresStore {
            PostgresStore::connect(&m)
                .await
                .unwrap_or_else(|e| unreachable(e))
        }
        async fn cleanup(self) {
            self.client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}, {}",
                    self.table(),
                    self.meta()
                ))
                .await
                .unwrap();
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
    async fn creates_daprs_v2_layout() {
        let t = Scratch::new().await;
        let store = t.store(t.metadata()).await;
        let cols: Vec<(String, String, String)> = t
            .client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable::text \
                 FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                &[&t.table()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let expect = [
            ("key", "text", "NO"),
            ("value", "bytea", "NO"),
            ("etag", "uuid", "NO"),
            ("created_at", "timestamp with time zone", "NO"),
            ("updated_at", "timestamp with time zone", "YES"),
            ("expires_at", "timestamp with time zone", "YES"),
            ("row_id", "bigint", "NO"),
        ];
        let got: Vec<(&str, &str, &str)> = cols
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(got, expect);
        let indexes: Vec<String> = t
            .client
            .query(
                "SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1",
                &[&t.table()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            indexes.contains(&format!("{}_row_id_uidx", t.table())),
            "{indexes:?}"
        );
        assert!(
            indexes.contains(&format!("{}_expires_at_idx", t.table())),
            "{indexes:?}"
        );
        let level: String = t
            .client
            .query_one(
                &format!("SELECT value FROM {} WHERE key = $1", t.meta()),
                &[&format!("migrations-state-v2-{}", t.prefix)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(level, "2");

        // Connecting again finds everything in place.
        drop(store);
        let store = t.store(t.metadata()).await;
        store.ping().await.unwrap();
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn rows_are_interchangeable_with_go() {
        let t = Scratch::new().await;
        let store = t.store(t.metadata()).await;
        // A row as Dapr's Go component writes it (etag from the column default).
        t.client
            .execute(
                &format!(
                    "INSERT INTO {} (key, value) VALUES ('app||go', $1)",
                    t.table()
                ),
                &[&&b"{\"from\":\"go\"}"[..]],
            )
            .await
            .unwrap();
        let go_etag: uuid::Uuid = t
            .client
            .query_one(
                &format!("SELECT etag FROM {} WHERE key = 'app||go'", t.table()),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let item = store.get(&get("app||go")).await.unwrap().unwrap();
        assert_eq!(item.value, &b"{\"from\":\"go\"}"[..]);
        assert_eq!(item.etag.as_deref(), Some(go_etag.to_string().as_str()));

        // Our write with that etag, as Go would read it back.
        let mut req = set("app||go", b"\x00binary\xff");
        req.etag = item.etag.clone();
        req.ttl = Some(Duration::from_secs(100));
        store.set(&req).await.unwrap();
        let row = t
            .client
            .query_one(
                &format!(
                    "SELECT value, etag, updated_at IS NOT NULL, \
                     EXTRACT(EPOCH FROM expires_at - now())::float8 FROM {} WHERE key = 'app||go'",
                    t.table()
                ),
                &[],
            )
            .await
            .unwrap();
        let value: Vec<u8> = row.get(0);
        let etag: uuid::Uuid = row.get(1);
        let updated: bool = row.get(2);
        let ttl_left: f64 = row.get(3);
        assert_eq!(value, b"\x00binary\xff");
        assert_ne!(etag, go_etag);
        assert!(updated);
        assert!((95.0..=100.5).contains(&ttl_left), "{ttl_left}");
        let item = store.get(&get("app||go")).await.unwrap().unwrap();
        assert_eq!(item.etag, Some(etag.to_string()));
        assert!(item.metadata.contains_key(TTL_EXPIRE_TIME_KEY));

        // A valid etag that matches nothing is a mismatch, not invalid.
        req.etag = Some(uuid::Uuid::new_v4().to_string());
        assert_eq!(store.set(&req).await, Err(StateError::EtagMismatch));
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn upgrades_a_table_from_migration_level_1() {
        let t = Scratch::new().await;
        // The layout an older Dapr (before row_id) leaves behind.
        t.client
            .batch_execute(&format!(
                "CREATE TABLE {meta} (key text NOT NULL PRIMARY KEY, value text NOT NULL);
                 INSERT INTO {meta} VALUES ('migrations-state-v2-{prefix}', '1');
                 CREATE TABLE {table} (
                   key text NOT NULL PRIMARY KEY,
                   value bytea NOT NULL,
                   etag uuid NOT NULL DEFAULT gen_random_uuid(),
                   created_at timestamp with time zone NOT NULL DEFAULT now(),
                   updated_at timestamp with time zone,
                   expires_at timestamp with time zone);
                 INSERT INTO {table} (key, value, created_at) VALUES
                   ('b', '\\x01', now() - interval '1 hour'),
                   ('a', '\\x02', now());",
                meta = t.meta(),
                table = t.table(),
                prefix = t.prefix,
            ))
            .await
            .unwrap();
        let store = t.store(t.metadata()).await;
        store.set(&set("c", b"3")).await.unwrap();
        let ids: Vec<(String, i64)> = t
            .client
            .query(
                &format!("SELECT key, row_id FROM {} ORDER BY row_id", t.table()),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            ids,
            [
                ("b".to_owned(), 1),
                ("a".to_owned(), 2),
                ("c".to_owned(), 3)
            ]
        );
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn expired_rows_are_swept() {
        let t = Scratch::new().await;
        let store = t.store(t.metadata().with("cleanupInterval", "1h")).await;
        let mut req = set("short", b"1");
        req.ttl = Some(Duration::from_millis(300));
        store.set(&req).await.unwrap();
        store.set(&set("kept", b"2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get(&get("short")).await.unwrap(), None);
        assert_eq!(store.cleanup_expired().await.unwrap(), 1);
        let left: i64 = t
            .client
            .query_one(&format!("SELECT count(*) FROM {}", t.table()), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1);
        let last: String = t
            .client
            .query_one(
                &format!("SELECT value FROM {} WHERE key = $1", t.meta()),
                &[&format!("last-cleanup-state-v2-{}", t.prefix)],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!last.is_empty());
        // Another sweep within the interval is skipped (the row says "done").
        store.set(&req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.cleanup_expired().await.unwrap(), 0);
        drop(store);
        t.cleanup().await;
    }

    #[tokio::test]
    async fn unreachable_server_is_an_init_error() {
        let m = md("host=127.0.0.1 port=1 user=u connect_timeout=2");
        match PostgresStore::connect(&m).await {
            Err(InitError::Connect(msg)) => assert!(!msg.contains("password"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to port 1"),
        }
    }
}
