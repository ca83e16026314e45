//! `state.redis`: state in Redis, in the format of Dapr's Go component so
//! either runtime can read the other's data.
//!
//! Each key is a hash with fields `data` (the raw value bytes) and `version`
//! (an integer bumped with `HINCRBY` on every write, starting at 1); the etag
//! is the version in decimal. Writes made with first-write concurrency also
//! set `first-write` to 0, as Dapr does. TTLs are plain key expiries.
//!
//! Every check-then-write runs as one Lua script, so it is atomic on the
//! server: single sets and deletes, and transactions, whose script checks all
//! operations (in order, on the state the earlier ones leave) before writing
//! anything.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use redis::{
    ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    Concurrency, Consistency, DeleteRequest, Features, GetRequest, InitError, SetRequest,
    StateError, StateItem, StateStore, TTL_EXPIRE_TIME_KEY, TTL_METADATA_KEY, TransactionOp,
};
use crate::{ComponentMetadata, MetadataError};

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// About 100 years; far below where Redis' expiry arithmetic overflows.
const MAX_TTL_MILLIS: u64 = 100 * 366 * 24 * 3600 * 1000;

/// Reads a key: `{data, version, pttl}`, or nil when missing. A plain string
/// key (Dapr's pre-hash format) comes back without a version.
pub const GET_SCRIPT: &str = r#"
local t = redis.call("TYPE", KEYS[1])["ok"]
if t == "hash" then
  local v = redis.call("HMGET", KEYS[1], "data", "version")
  return {v[1], v[2], redis.call("PTTL", KEYS[1])}
elseif t == "string" then
  return {redis.call("GET", KEYS[1]), false, redis.call("PTTL", KEYS[1])}
end
return false
"#;

/// Shared Lua: the current version of a key (false when missing or not a
/// Dapr hash), the check of one operation, and its write.
///
/// An op is (kind "s"/"d", etag or "", first-write "1"/"0", data, ttl ms).
pub const LUA_HELPERS: &str = r#"
local function version_of(key)
  if redis.call("TYPE", key)["ok"] == "hash" then
    return redis.call("HGET", key, "version")
  end
  return false
end

-- Returns true when the op may run against a key currently at `ver`.
local function allowed(ver, kind, etag, fw)
  if etag ~= "" then
    return ver == etag
  end
  if kind == "s" and fw == "1" then
    return not ver
  end
  return true
end

local function apply(key, kind, fw, data, ttl)
  if kind == "d" then
    redis.call("DEL", key)
    return 0
  end
  if redis.call("TYPE", key)["ok"] ~= "hash" then
    redis.call("DEL", key)
  end
  redis.call("HSET", key, "data", data)
  if fw == "1" then
    redis.call("HSET", key, "first-write", 0)
  end
  local v = redis.call("HINCRBY", key, "version", 1)
  if tonumber(ttl) > 0 then
    redis.call("PEXPIRE", key, ttl)
  else
    redis.call("PERSIST", key)
  end
  return v
end
"#;

/// One set or delete: ARGV is one op. Returns the new version (0 for a
/// delete), or -1 when the etag / first-write check fails.
pub const OP_SCRIPT_BODY: &str = r#"
local kind, etag, fw, data, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ver = version_of(KEYS[1])
if not allowed(ver, kind, etag, fw) then
  return -1
end
if kind == "s" and ver and not tonumber(ver) then
  return redis.error_reply("hash field 'version' is not an integer")
end
return apply(KEYS[1], kind, fw, data, ttl)
"#;

/// A transaction: KEYS[i] is op i's key, ARGV holds 5 values per op. Checks
/// every op first, tracking the versions earlier ops produce, and writes only
/// if all pass. Returns 0, or -i when op i fails its check.
const TRANSACTION_SCRIPT_BODY: &str = r#"
local vers = {}
for i = 1, #KEYS do
  local key, b = KEYS[i], (i - 1) * 5
  local kind, etag, fw = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local ver = vers[key]
  if ver == nil then
    ver = version_of(key)
  end
  if not allowed(ver, kind, etag, fw) then
    return -i
  end
  if kind == "s" then
    if ver and not tonumber(ver) then
      return redis.error_reply("hash field 'version' of a key in the transaction is not an integer")
    end
    vers[key] = tostring((tonumber(ver) or 0) + 1)
  else
    vers[key] = false
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  apply(KEYS[i], ARGV[b + 1], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5])
end
return 0
"#;

/// Resolved component configuration. Not `Debug`: it holds the password.
struct Config {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    tls: bool,
    default_ttl: Option<Duration>,
    dial_timeout: Duration,
    read_timeout: Option<Duration>,
    max_retries: usize,
}

fn invalid(field: &str, reason: impl Into<String>) -> InitError {
    InitError::Metadata(MetadataError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    })
}

impl Config {
    fn from_metadata(md: &ComponentMetadata) -> Result<Self, InitError> {
        let host_field = md.require("redisHost")?;
        if host_field.contains(',')
            || md
                .get("redisType")
                .is_some_and(|t| !t.eq_ignore_ascii_case("node"))
            || md.get_bool("failover")?.unwrap_or(false)
        {
            return Err(invalid(
                "redisType",
                "only a single Redis node is supported (no cluster or sentinel failover)",
            ));
        }
        let explicit_port = md.get_parsed::<u16>("redisPort")?;
        let (host, port) = split_host_port(host_field, explicit_port)?;

        if md.get_bool("insecureSkipTLSVerify")?.unwrap_or(false) {
            return Err(invalid(
                "insecureSkipTLSVerify",
                "skipping TLS verification is not supported",
            ));
        }
        for unsupported in ["clientCert", "clientKey", "useEntraID", "useOIDC"] {
            if md.get(unsupported).is_some_and(|v| v != "false") {
                return Err(invalid(unsupported, "not supported by this state store"));
            }
        }

        // Dapr: a TTL <= 0 means "no expiry".
        let default_ttl = md
            .get_parsed::<i64>(TTL_METADATA_KEY)?
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs);

        // Dapr: -1 disables retries / the read timeout.
        let max_retries = match md.get_parsed::<i64>("redisMaxRetries")? {
            None => 3,
            Some(n) => usize::try_from(n).unwrap_or(0),
        };
        let dial_timeout = positive_duration(md, "dialTimeout")?.unwrap_or(DEFAULT_DIAL_TIMEOUT);
        let read_timeout = match md.get("readTimeout") {
            Some(v) if v.trim_start().starts_with('-') => None,
            _ => Some(positive_duration(md, "readTimeout")?.unwrap_or(DEFAULT_READ_TIMEOUT)),
        };

        Ok(Self {
            host,
            port,
            username: md.get("redisUsername").map(str::to_owned),
            password: md.get("redisPassword").map(str::to_owned),
            db: md.get_parsed::<i64>("redisDB")?.unwrap_or(0),
            tls: md.get_bool("enableTLS")?.unwrap_or(false),
            default_ttl,
            dial_timeout,
            read_timeout,
            max_retries,
        })
    }

    fn connection_info(&self) -> Result<redis::ConnectionInfo, InitError> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut redis_info = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &self.password {
            redis_info = redis_info.set_password(p);
        }
        Ok(addr
            .into_connection_info()
            .map_err(|e| InitError::Connect(format!("redis: invalid address: {e}")))?
            .set_redis_settings(redis_info))
    }
}

/// A Go duration or seconds; zero or negative yields `None` (the default).
fn positive_duration(md: &ComponentMetadata, key: &str) -> Result<Option<Duration>, InitError> {
    if md.get(key).is_some_and(|v| v.trim_start().starts_with('-')) {
        return Ok(None);
    }
    Ok(md.get_duration(key)?.filter(|d| !d.is_zero()))
}

/// `host`, `host:port` or `[v6]:port`, with Dapr's `redisPort` as fallback.
fn split_host_port(s: &str, explicit_port: Option<u16>) -> Result<(String, u16), InitError> {
    let s = s.trim();
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| invalid("redisHost", format!("invalid port '{p}'")))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("redisHost", "unterminated IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(parse_port(p)?)),
            None if after.is_empty() => (h, None),
            None => return Err(invalid("redisHost", "expected host:port")),
        }
    } else {
        match s.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((h, _)) if h.contains(':') => (s, None),
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("redisHost", "empty host"));
    }
    if let (Some(a), Some(b)) = (port, explicit_port)
        && a != b
    {
        return Err(invalid(
            "redisPort",
            format!("conflicts with the port in redisHost ({a})"),
        ));
    }
    Ok((
        host.to_owned(),
        port.or(explicit_port).unwrap_or(DEFAULT_PORT),
    ))
}

struct Scripts {
    get: Script,
    op: Script,
    transaction: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            get: Script::new(GET_SCRIPT),
            op: Script::new(&format!("{LUA_HELPERS}{OP_SCRIPT_BODY}")),
            transaction: Script::new(&format!("{LUA_HELPERS}{TRANSACTION_SCRIPT_BODY}")),
        }
    }
}

/// `state.redis` store.
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Scripts,
    default_ttl: Option<Duration>,
    /// Replicas seen at startup; strong-consistency writes wait for them.
    replicas: usize,
}

fn backend(e: redis::RedisError) -> StateError {
    StateError::Backend(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects and pings; fails if the server cannot be reached.
    pub async fn connect(metadata: &ComponentMetadata) -> Result<Self, InitError> {
        let cfg = Config::from_metadata(metadata)?;
        let target = format!("{}:{}", cfg.host, cfg.port);
        let unreachable = |e: redis::RedisError| {
            InitError::Connect(format!(
                "redis state store: cannot connect to {target}: {e}"
            ))
        };
        let client = redis::Client::open(cfg.connection_info()?).map_err(unreachable)?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_number_of_retries(cfg.max_retries)
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(cfg.dial_timeout))
            .set_response_timeout(cfg.read_timeout);
        let mut conn = ConnectionManager::new_with_config(client, mgr_cfg)
            .await
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let replicas = parse_connected_replicas(&info);
        tracing::info!(
            component = %metadata.name,
            target = %target,
            db = cfg.db,
            tls = cfg.tls,
            replicas,
            "redis state store connected"
        );
        Ok(Self {
            conn,
            scripts: Scripts::new(),
            default_ttl: cfg.default_ttl,
            replicas,
        })
    }

    /// The expiry for a write in milliseconds; 0 clears any expiry. A request
    /// TTL wins over the component default; an explicit `ttlInSeconds <= 0`
    /// in the request disables the default.
    fn ttl_millis(&self, req: &SetRequest) -> Result<u64, StateError> {
        let explicit_none = req
            .metadata
            .get(TTL_METADATA_KEY)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|v| v <= 0);
        let ttl = match req.ttl {
            Some(t) => Some(t),
            None if explicit_none => None,
            None => self.default_ttl,
        };
        // Dapr: a zero TTL means no expiry; sub-millisecond TTLs round up.
        let ms = ttl.filter(|t| !t.is_zero()).map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        // Redis rejects expiries that overflow its clock; checking here keeps
        // a script from failing half-way through its writes.
        if ms > MAX_TTL_MILLIS {
            return Err(StateError::InvalidRequest(format!(
                "TTL of {}s is too large",
                ms / 1000
            )));
        }
        Ok(ms)
    }

    /// The five script arguments of one operation.
    fn op_args(&self, op: &TransactionOp) -> Result<[OpArg; 5], StateError> {
        Ok(match op {
            TransactionOp::Set(r) => [
                OpArg::Str("s"),
                OpArg::Owned(normalize_etag(&r.etag)?),
                OpArg::Str(if r.concurrency == Concurrency::FirstWrite {
                    "1"
                } else {
                    "0"
                }),
                OpArg::Data(r.value.clone()),
                OpArg::Owned(self.ttl_millis(r)?.to_string()),
            ],
            TransactionOp::Delete(r) => [
                OpArg::Str("d"),
                OpArg::Owned(normalize_etag(&r.etag)?),
                OpArg::Str("0"),
                OpArg::Str(""),
                OpArg::Str("0"),
            ],
        })
    }

    async fn run_op(&self, op: TransactionOp, strong: bool) -> Result<(), StateError> {
        let args = self.op_args(&op)?;
        let mut inv = self.scripts.op.key(op.key());
        for a in &args {
            a.push(&mut inv);
        }
        let mut conn = self.conn.clone();
        let res: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        if res < 0 {
            return Err(StateError::EtagMismatch);
        }
        if strong {
            self.wait_for_replicas().await?;
        }
        Ok(())
    }

    async fn wait_for_replicas(&self) -> Result<(), StateError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// A script argument without copying values more than once.
enum OpArg {
    Str(&'static str),
    Owned(String),
    Data(Bytes),
}

impl OpArg {
    fn push(&self, inv: &mut redis::ScriptInvocation<'_>) {
        match self {
            OpArg::Str(s) => inv.arg(*s),
            OpArg::Owned(s) => inv.arg(s.as_str()),
            OpArg::Data(b) => inv.arg(&b[..]),
        };
    }
}

/// Etags are versions: decimal integers. Returns the canonical form ("" for
/// none) so `007` matches version `7`, as in Dapr.
fn normalize_etag(etag: &Option<String>) -> Result<String, StateError> {
    match etag.as_deref().filter(|e| !e.is_empty()) {
        None => Ok(String::new()),
        Some(e) => e
            .trim()
            .parse::<i64>()
            .map(|v| v.to_string())
            .map_err(|_| StateError::EtagInvalid(e.to_owned())),
    }
}

fn parse_connected_replicas(info: &str) -> usize {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn parse_get(key: &str, v: Value) -> Result<Option<StateItem>, StateError> {
    let parts = match v {
        Value::Nil | Value::Boolean(false) => return Ok(None),
        Value::Array(parts) if parts.len() == 3 => parts,
        _ => {
            return Err(StateError::Backend(
                "redis: unexpected reply to the get script".into(),
            ));
        }
    };
    let mut parts = parts.into_iter();
    let (data, version, pttl) = match (parts.next(), parts.next(), parts.next()) {
        (Some(d), Some(v), Some(t)) => (d, v, t),
        _ => return Ok(None),
    };
    let Some(data) = bytes_of(data) else {
        // Dapr's Go component rejects such hashes the same way.
        return Err(StateError::Backend(format!(
            "redis: key '{key}' is a hash without a 'data' field"
        )));
    };
    let etag = bytes_of(version).map(|v| String::from_utf8_lossy(&v).into_owned());
    let mut metadata = HashMap::new();
    if let Value::Int(ms) = pttl
        && ms > 0
        && let Some(at) = Utc::now().checked_add_signed(chrono::Duration::milliseconds(ms))
    {
        metadata.insert(
            TTL_EXPIRE_TIME_KEY.to_owned(),
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
    }
    Ok(Some(StateItem {
        value: Bytes::from(data),
        etag,
        metadata,
        content_type: None,
    }))
}

#[async_trait]
impl StateStore for RedisStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
            query: false,
        }
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        let mut conn = self.conn.clone();
        let v: Value = self
            .scripts
            .get
            .key(&req.key)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        parse_get(&req.key, v)
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let strong = req.consistency == Consistency::Strong;
        self.run_op(TransactionOp::Set(req.clone()), strong).await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let strong = req.consistency == Consistency::Strong;
        self.run_op(TransactionOp::Delete(req.clone()), strong)
            .await
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.transaction.prepare_invoke();
        let mut strong = false;
        for op in ops {
            let args = self.op_args(op)?;
            inv.key(op.key());
            for a in &args {
                a.push(&mut inv);
            }
            strong |= match op {
                TransactionOp::Set(r) => r.consistency == Consistency::Strong,
                TransactionOp::Delete(r) => r.consistency == Consistency::Strong,
            };
        }
        let mut conn = self.conn.clone();
        let res: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        if res < 0 {
            tracing::debug!(op = -res, "redis transaction rejected by an etag check");
            return Err(StateError::EtagMismatch);
        }
        if strong {
            self.wait_for_replicas().await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        let hp = |s, p| split_host_port(s, p).unwrap();
        assert_eq!(hp("localhost:6380", None), ("localhost".into(), 6380));
        assert_eq!(hp("localhost", None), ("localhost".into(), 6379));
        assert_eq!(hp("localhost", Some(7000)), ("localhost".into(), 7000));
        assert_eq!(hp("[::1]:7001", None), ("::1".into(), 7001));
        assert_eq!(hp("::1", None), ("::1".into(), 6379));
        assert!(split_host_port("localhost:x", None).is_err());
        assert!(split_host_port("localhost:6380", Some(7000)).is_err());
        assert!(split_host_port(":6379", None).is_err());
    }

    #[test]
    fn metadata() {
        let md = ComponentMetadata::new("s", "app")
            .with("redisHost", "127.0.0.1:6390")
            .with("redisPassword", "secret")
            .with("redisDB", "3")
            .with("ttlInSeconds", "60");
        let c = Config::from_metadata(&md).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 6390, 3));
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(c.default_ttl, Some(Duration::from_secs(60)));
        assert!(!c.tls);
        let c = Config::from_metadata(&md.clone().with("ttlInSeconds", "-1")).unwrap();
        assert_eq!(c.default_ttl, None);
        assert!(Config::from_metadata(&ComponentMetadata::new("s", "app")).is_err());
        assert!(Config::from_metadata(&md.clone().with("redisType", "cluster")).is_err());
        assert!(Config::from_metadata(&md.clone().with("redisDB", "x")).is_err());
    }

    #[test]
    fn etags() {
        assert_eq!(normalize_etag(&None).unwrap(), "");
        assert_eq!(normalize_etag(&Some(String::new())).unwrap(), "");
        assert_eq!(normalize_etag(&Some("007".into())).unwrap(), "7");
        assert!(matches!(
            normalize_etag(&Some("abc".into())),
            Err(StateError::EtagInvalid(_))
        ));
    }

    #[test]
    fn replicas_from_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n";
        assert_eq!(parse_connected_replicas(info), 2);
        assert_eq!(parse_connected_replicas("role:master"), 0);
    }

    #[test]
    fn get_replies() {
        assert_eq!(parse_get("k", Value::Nil).unwrap(), None);
        let item = parse_get(
            "k",
            Value::Array(vec![
                Value::BulkString(b"v".to_vec()),
                Value::BulkString(b"3".to_vec()),
                Value::Int(-1),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(item.value, "v");
        assert_eq!(item.etag.as_deref(), Some("3"));
        assert!(item.metadata.is_empty());
        let item = parse_get(
            "k",
            Value::Array(vec![
                Value::BulkString(b"v".to_vec()),
                Value::Nil,
                Value::Int(5000),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(item.etag, None);
        assert!(item.metadata.contains_key(TTL_EXPIRE_TIME_KEY));
        assert!(
            parse_get(
                "k",
                Value::Array(vec![Value::Nil, Value::Nil, Value::Int(-1)])
            )
            .is_err()
        );
    }
}

/// Checks against the test server (see `tests/state_conformance.rs`).
#[cfg(test)]
mod server_tests {
    use super::*;

    fn addr() -> String {
        std::env::var("DAPR_RS_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:16379".to_owned())
    }

    async fn store() -> (RedisStore, ConnectionManager) {
        let md = ComponentMetadata::new("s", "app").with("redisHost", addr());
        let store = RedisStore::connect(&md).await.unwrap_or_else(|e| {
            panic!("needs the Redis test server ({e}); run scripts/test.sh or set DAPR_RS_TEST_REDIS_ADDR")
        });
        let raw = store.conn.clone();
        (store, raw)
    }

    fn key(name: &str) -> String {
        format!("unit-{}||{name}", uuid::Uuid::new_v4().simple())
    }

    async fn raw_hash(conn: &mut ConnectionManager, key: &str) -> HashMap<String, Vec<u8>> {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn data_layout_matches_dapr() {
        let (store, mut raw) = store().await;
        let k = key("layout");
        let set = |value: &'static [u8], concurrency| SetRequest {
            key: k.clone(),
            value: Bytes::from_static(value),
            concurrency,
            ..SetRequest::default()
        };
        store
            .set(&set(b"\x00bin\xff", Concurrency::FirstWrite))
            .await
            .unwrap();
        let h = raw_hash(&mut raw, &k).await;
        assert_eq!(h["data"], b"\x00bin\xff");
        assert_eq!(h["version"], b"1");
        assert_eq!(h["first-write"], b"0");
        store
            .set(&set(br#"{"a":1}"#, Concurrency::LastWrite))
            .await
            .unwrap();
        let h = raw_hash(&mut raw, &k).await;
        assert_eq!(h["data"], br#"{"a":1}"#);
        assert_eq!(h["version"], b"2");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(ttl, -1);

        store
            .set(&SetRequest {
                ttl: Some(Duration::from_secs(100)),
                ..set(b"1", Concurrency::LastWrite)
            })
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!((98..=100).contains(&ttl), "{ttl}");
        // A later write without a TTL clears it.
        store.set(&set(b"2", Concurrency::LastWrite)).await.unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(ttl, -1);
        let _: i64 = redis::cmd("DEL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reads_and_updates_dapr_written_keys() {
        let (store, mut raw) = store().await;
        let (hash, plain) = (key("go-hash"), key("go-plain"));
        let _: i64 = redis::cmd("HSET")
            .arg(&hash)
            .arg("data")
            .arg("\"go\"")
            .arg("version")
            .arg(7)
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(&plain)
            .arg("legacy")
            .query_async(&mut raw)
            .await
            .unwrap();
        let get = |k: &str| GetRequest {
            key: k.to_owned(),
            ..GetRequest::default()
        };
        let item = store.get(&get(&hash)).await.unwrap().unwrap();
        assert_eq!(
            (item.value.as_ref(), item.etag.as_deref()),
            (&b"\"go\""[..], Some("7"))
        );
        let item = store.get(&get(&plain)).await.unwrap().unwrap();
        assert_eq!((item.value.as_ref(), item.etag), (&b"legacy"[..], None));

        // The Go etag works, and the version continues from it.
        store
            .set(&SetRequest {
                key: hash.clone(),
                value: Bytes::from_static(b"\"rs\""),
                etag: Some("7".into()),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(raw_hash(&mut raw, &hash).await["version"], b"8");
        // A legacy plain key is replaced by a hash on write.
        store
            .set(&SetRequest {
                key: plain.clone(),
                value: Bytes::from_static(b"new"),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(raw_hash(&mut raw, &plain).await["version"], b"1");
        let _: i64 = redis::cmd("DEL")
            .arg(&hash)
            .arg(&plain)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn component_default_ttl() {
        let md = ComponentMetadata::new("s", "app")
            .with("redisHost", addr())
            .with("ttlInSeconds", "50");
        let store = RedisStore::connect(&md).await.unwrap();
        let mut raw = store.conn.clone();
        let k = key("default-ttl");
        let mut req = SetRequest {
            key: k.clone(),
            value: Bytes::from_static(b"1"),
            ..SetRequest::default()
        };
        store.set(&req).await.unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!((48..=50).contains(&ttl), "{ttl}");
        req.metadata.insert(TTL_METADATA_KEY.into(), "-1".into());
        store.set(&req).await.unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(ttl, -1);
        let _: i64 = redis::cmd("DEL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unreachable_server_is_an_init_error() {
        let md = ComponentMetadata::new("s", "app")
            .with("redisHost", "127.0.0.1:1")
            .with("redisMaxRetries", "0");
        match RedisStore::connect(&md).await {
            Err(InitError::Connect(msg)) => assert!(msg.contains("127.0.0.1:1"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }
}
