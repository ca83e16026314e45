//! `configuration.redis`: plain string keys holding `value||version` (Dapr's
//! format; no `||` means no version), watched through keyspace notifications
//! (the server needs `notify-keyspace-events` with `K` and `$`/`g` or `A`).

use std::collections::HashMap;

use async_trait::async_trait;
use futures::StreamExt;
use redis::{AsyncCommands, IntoConnectionInfo, aio::ConnectionManager};
use tokio::sync::mpsc;

use super::{
    ConfigurationError, ConfigurationInitError, ConfigurationItem, ConfigurationStore, Items,
};
use crate::ComponentMetadata;

const SEPARATOR: &str = "||";

pub struct RedisConfigurationStore {
    client: redis::Client,
    conn: ConnectionManager,
    db: i64,
}

fn backend(e: redis::RedisError) -> ConfigurationError {
    ConfigurationError::Backend(format!("redis: {e}"))
}

/// `value||version` → item; the version is what follows the last `||`.
pub fn parse_value(raw: &str) -> ConfigurationItem {
    let (value, version) = match raw.rsplit_once(SEPARATOR) {
        Some((v, ver)) => (v.to_owned(), ver.to_owned()),
        None => (raw.to_owned(), String::new()),
    };
    ConfigurationItem {
        value,
        version,
        metadata: HashMap::new(),
    }
}

impl RedisConfigurationStore {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, ConfigurationInitError> {
        let host = md.require("redisHost")?.to_owned();
        let db: i64 = match md.get("redisDB") {
            Some(v) if !v.is_empty() => v.parse().map_err(|_| {
                ConfigurationInitError::Connect(format!("redisDB must be a number, not {v:?}"))
            })?,
            _ => 0,
        };
        let user = md.get("redisUsername").unwrap_or_default();
        let password = md.get("redisPassword").unwrap_or_default();
        let (addr, port) = match host.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>().map_err(|_| {
                    ConfigurationInitError::Connect(format!("redisHost {host:?}: invalid port"))
                })?,
            ),
            None => (host.clone(), 6379),
        };
        let mut redis_cfg = redis::RedisConnectionInfo::default().set_db(db);
        if !user.is_empty() {
            redis_cfg = redis_cfg.set_username(user);
        }
        if !password.is_empty() {
            redis_cfg = redis_cfg.set_password(password);
        }
        let info = redis::ConnectionAddr::Tcp(addr, port)
            .into_connection_info()
            .map_err(|e| ConfigurationInitError::Connect(e.to_string()))?
            .set_redis_settings(redis_cfg);
        let unreachable = |e: redis::RedisError| {
            ConfigurationInitError::Connect(format!(
                "redis configuration store: cannot connect to {host}: {e}"
            ))
        };
        let client = redis::Client::open(info).map_err(unreachable)?;
        let mut conn = ConnectionManager::new(client.clone())
            .await
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        Ok(Self { client, conn, db })
    }

    async fn read(&self, keys: &[String]) -> Result<Items, ConfigurationError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = if keys.is_empty() {
            let mut all = Vec::new();
            let mut iter: redis::AsyncIter<String> = conn.scan().await.map_err(backend)?;
            while let Some(k) = iter.next_item().await {
                all.push(k.map_err(backend)?);
            }
            all
        } else {
            keys.to_vec()
        };
        if keys.is_empty() {
            return Ok(Items::new());
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, parse_value(&v))))
            .collect())
    }
}

#[async_trait]
impl ConfigurationStore for RedisConfigurationStore {
    async fn get(
        &self,
        keys: &[String],
        _metadata: &HashMap<String, String>,
    ) -> Result<Items, ConfigurationError> {
        self.read(keys).await
    }

    async fn subscribe(
        &self,
        keys: &[String],
        _metadata: &HashMap<String, String>,
        updates: mpsc::Sender<Items>,
    ) -> Result<(), ConfigurationError> {
        let prefix = format!("__keyspace@{}__:", self.db);
        let mut pubsub = self.client.get_async_pubsub().await.map_err(backend)?;
        if keys.is_empty() {
            pubsub
                .psubscribe(format!("{prefix}*"))
                .await
                .map_err(backend)?;
        } else {
            for k in keys {
                pubsub
                    .subscribe(format!("{prefix}{k}"))
                    .await
                    .map_err(backend)?;
            }
        }
        let conn = self.conn.clone();
        let prefix_len = prefix.len();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            loop {
                let msg = tokio::select! {
                    _ = updates.closed() => return,
                    m = messages.next() => match m {
                        Some(m) => m,
                        None => {
                            tracing::warn!("configuration.redis: keyspace subscription ended");
                            return;
                        }
                    },
                };
                let channel = msg.get_channel_name();
                let Some(key) = channel.get(prefix_len..).map(str::to_owned) else {
                    continue;
                };
                let event: String = msg.get_payload().unwrap_or_default();
                let item = if event == "del" || event == "expired" || event == "evicted" {
                    // A removed key is reported with an empty value.
                    ConfigurationItem::default()
                } else {
                    let mut c = conn.clone();
                    match c.get::<_, Option<String>>(&key).await {
                        Ok(Some(v)) => parse_value(&v),
                        Ok(None) => ConfigurationItem::default(),
                        Err(e) => {
                            tracing::warn!(%key, "configuration.redis: reading a changed key: {e}");
                            continue;
                        }
                    }
                };
                if updates.send(Items::from([(key, item)])).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_version_format() {
        let i = parse_value("hello||3");
        assert_eq!((i.value.as_str(), i.version.as_str()), ("hello", "3"));
        let i = parse_value("plain");
        assert_eq!((i.value.as_str(), i.version.as_str()), ("plain", ""));
        let i = parse_value("a||b||7");
        assert_eq!((i.value.as_str(), i.version.as_str()), ("a||b", "7"));
    }
}
