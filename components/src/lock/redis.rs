//! `lock.redis`: `SET key owner NX PX expiry`, released by a script that
//! deletes the key only for its owner.

use async_trait::async_trait;
use redis::{IntoConnectionInfo, Script, aio::ConnectionManager};

use super::{LockError, LockInitError, LockStore, UnlockStatus};
use crate::ComponentMetadata;

/// 1: released; 0: no such lock; -1: held by another owner.
const UNLOCK: &str = r#"
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
if v == ARGV[1] then redis.call("DEL", KEYS[1]) return 1 end
return -1
"#;

pub struct RedisLock {
    conn: ConnectionManager,
    unlock: Script,
}

fn backend(e: redis::RedisError) -> LockError {
    LockError::Backend(format!("redis: {e}"))
}

impl RedisLock {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, LockInitError> {
        let host = md.require("redisHost")?.to_owned();
        let (addr, port) = match host.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>().map_err(|_| {
                    LockInitError::Connect(format!("redisHost {host:?}: invalid port"))
                })?,
            ),
            None => (host.clone(), 6379),
        };
        let db: i64 = match md.get("redisDB") {
            Some(v) if !v.is_empty() => v.parse().map_err(|_| {
                LockInitError::Connect(format!("redisDB must be a number, not {v:?}"))
            })?,
            _ => 0,
        };
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(u) = md.get("redisUsername").filter(|u| !u.is_empty()) {
            settings = settings.set_username(u);
        }
        if let Some(p) = md.get("redisPassword").filter(|p| !p.is_empty()) {
            settings = settings.set_password(p);
        }
        let info = redis::ConnectionAddr::Tcp(addr, port)
            .into_connection_info()
            .map_err(|e| LockInitError::Connect(e.to_string()))?
            .set_redis_settings(settings);
        let unreachable = |e: redis::RedisError| {
            LockInitError::Connect(format!("redis lock store: cannot connect to {host}: {e}"))
        };
        let client = redis::Client::open(info).map_err(unreachable)?;
        let mut conn = ConnectionManager::new(client).await.map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        Ok(Self {
            conn,
            unlock: Script::new(UNLOCK),
        })
    }
}

#[async_trait]
impl LockStore for RedisLock {
    async fn try_lock(&self, key: &str, owner: &str, expiry_secs: u32) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(u64::from(expiry_secs) * 1000)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(set.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let mut conn = self.conn.clone();
        let r: i64 = self
            .unlock
            .key(key)
            .arg(owner)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(match r {
            1 => UnlockStatus::Success,
            0 => UnlockStatus::LockDoesNotExist,
            -1 => UnlockStatus::LockBelongsToOthers,
            _ => UnlockStatus::InternalError,
        })
    }
}
