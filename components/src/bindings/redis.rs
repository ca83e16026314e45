//! `bindings.redis`: an output binding over plain Redis keys.
//!
//! Every operation needs the `key` request metadata. `create` SETs the data,
//! `get` returns the value (empty when absent; `delete: "true"` reads and
//! deletes it, GETDEL), `delete` DELs it, `increment` INCRs it. `create` and
//! `increment` honour `ttlInSeconds` with an EXPIRE, as Dapr's component.

use async_trait::async_trait;
use bytes::Bytes;
use redis::{
    AsyncCommands, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, aio::ConnectionManager,
};

use super::{BindingError, InvokeRequest, InvokeResponse, OutputBinding, ops};
use crate::ComponentMetadata;

const DEFAULT_PORT: u16 = 6379;
const INCREMENT: &str = "increment";

pub struct RedisBinding {
    conn: ConnectionManager,
}

fn backend(e: redis::RedisError) -> BindingError {
    BindingError::Backend(format!("redis: {e}"))
}

impl RedisBinding {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let host_field = md.require("redisHost")?.trim().to_owned();
        if host_field.contains(',')
            || md
                .get("redisType")
                .is_some_and(|t| !t.eq_ignore_ascii_case("node"))
            || md.get_bool("failover")?.unwrap_or(false)
        {
            return Err(BindingError::invalid_metadata(
                "redisType",
                "only a single Redis node is supported (no cluster or sentinel failover)",
            ));
        }
        let (host, port) = match host_field.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_owned(),
                p.parse::<u16>().map_err(|_| {
                    BindingError::invalid_metadata("redisHost", format!("invalid port '{p}'"))
                })?,
            ),
            _ => (host_field.clone(), DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(BindingError::invalid_metadata("redisHost", "empty host"));
        }
        let addr = if md.get_bool("enableTLS")?.unwrap_or(false) {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let mut settings =
            RedisConnectionInfo::default().set_db(md.get_parsed::<i64>("redisDB")?.unwrap_or(0));
        if let Some(u) = md.get("redisUsername") {
            settings = settings.set_username(u);
        }
        if let Some(p) = md.get("redisPassword") {
            settings = settings.set_password(p);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| BindingError::invalid_metadata("redisHost", e.to_string()))?
            .set_redis_settings(settings);
        let unreachable = |e: redis::RedisError| {
            BindingError::Connect(format!(
                "redis binding: cannot connect to {host_field}: {e}"
            ))
        };
        let client = redis::Client::open(info).map_err(unreachable)?;
        let mut conn = ConnectionManager::new(client).await.map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        Ok(Self { conn })
    }

    async fn expire_if_requested(
        &self,
        req: &InvokeRequest,
        key: &str,
    ) -> Result<(), BindingError> {
        let Some(raw) = req.meta("ttlInSeconds") else {
            return Ok(());
        };
        let ttl: i64 = raw.trim().parse().map_err(|_| {
            BindingError::InvalidRequest(format!(
                "ttlInSeconds must be a whole number of seconds, not '{raw}'"
            ))
        })?;
        let mut conn = self.conn.clone();
        let _: bool = conn.expire(key, ttl).await.map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl OutputBinding for RedisBinding {
    fn operations(&self) -> Vec<String> {
        [ops::CREATE, ops::DELETE, ops::GET, INCREMENT]
            .map(String::from)
            .to_vec()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let key = req
            .meta("key")
            .ok_or_else(|| {
                BindingError::InvalidRequest(
                    "redis binding: missing key in request metadata".into(),
                )
            })?
            .to_owned();
        let mut conn = self.conn.clone();
        match req.operation.as_str() {
            ops::DELETE => {
                let _: i64 = conn.del(&key).await.map_err(backend)?;
            }
            ops::GET => {
                let delete = req.meta("delete").is_some_and(|v| v == "true");
                let value: Option<Vec<u8>> = if delete {
                    conn.get_del(&key).await.map_err(backend)?
                } else {
                    conn.get(&key).await.map_err(backend)?
                };
                return Ok(InvokeResponse {
                    data: value.map(Bytes::from).unwrap_or_default(),
                    ..Default::default()
                });
            }
            ops::CREATE => {
                let _: () = conn.set(&key, req.data.as_ref()).await.map_err(backend)?;
                self.expire_if_requested(&req, &key).await?;
            }
            INCREMENT => {
                let _: i64 = conn.incr(&key, 1).await.map_err(backend)?;
                self.expire_if_requested(&req, &key).await?;
            }
            other => {
                return Err(BindingError::InvalidRequest(format!(
                    "invalid operation type: {other}"
                )));
            }
        }
        Ok(InvokeResponse::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metadata_is_validated_before_connecting() {
        let md = |host: &str| ComponentMetadata::new("cache", "app").with("redisHost", host);
        for (m, field) in [
            (ComponentMetadata::new("cache", "app"), "redisHost"),
            (md("127.0.0.1:notaport"), "redisHost"),
            (md("a:1,b:2"), "redisType"),
            (md("127.0.0.1:1").with("redisDB", "x"), "redisDB"),
        ] {
            let err = RedisBinding::connect(&m).await.err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains(field)), "{err:?}");
        }
    }
}
