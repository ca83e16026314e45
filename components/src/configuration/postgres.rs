//! `configuration.postgresql`: items in a table `(key, value, version,
//! metadata json)`; subscriptions `LISTEN` on the channel named by the
//! subscribe metadata `pgNotifyChannel`, fed by the trigger Dapr documents
//! (`pg_notify(channel, json_build_object('table',..,'action',..,'data',row))`).

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{
    ConfigurationError, ConfigurationInitError, ConfigurationItem, ConfigurationStore, Items,
};
use crate::ComponentMetadata;

pub struct PostgresConfigurationStore {
    conn_str: String,
    table: String,
    client: tokio_postgres::Client,
}

fn backend(e: tokio_postgres::Error) -> ConfigurationError {
    ConfigurationError::Backend(format!("postgresql: {e}"))
}

/// Table names go into SQL text, so only identifiers (optionally
/// schema-qualified) are accepted.
fn valid_table(t: &str) -> bool {
    !t.is_empty()
        && t.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn metadata_map(v: Option<serde_json::Value>) -> HashMap<String, String> {
    match v {
        Some(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => HashMap::new(),
    }
}

impl PostgresConfigurationStore {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, ConfigurationInitError> {
        let conn_str = md.require("connectionString")?.to_owned();
        let table = md.require("table")?.to_owned();
        if !valid_table(&table) {
            return Err(ConfigurationInitError::Connect(format!(
                "table {table:?} is not a valid table name"
            )));
        }
        let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
            .await
            .map_err(|e| ConfigurationInitError::Connect(format!("postgresql: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("configuration.postgresql connection ended: {e}");
            }
        });
        client
            .simple_query(&format!("SELECT 1 FROM {table} LIMIT 0"))
            .await
            .map_err(|e| ConfigurationInitError::Connect(format!("table {table}: {e}")))?;
        Ok(Self {
            conn_str,
            table,
            client,
        })
    }
}

#[async_trait]
impl ConfigurationStore for PostgresConfigurationStore {
    async fn get(
        &self,
        keys: &[String],
        _metadata: &HashMap<String, String>,
    ) -> Result<Items, ConfigurationError> {
        let base = format!("SELECT key, value, version, metadata FROM {}", self.table);
        let rows = if keys.is_empty() {
            self.client.query(&base, &[]).await
        } else {
            self.client
                .query(&format!("{base} WHERE key = ANY($1)"), &[&keys])
                .await
        }
        .map_err(backend)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(backend)?,
                    ConfigurationItem {
                        value: r.try_get(1).map_err(backend)?,
                        version: r.try_get(2).map_err(backend)?,
                        metadata: metadata_map(r.try_get(3).map_err(backend)?),
                    },
                ))
            })
            .collect()
    }

    async fn subscribe(
        &self,
        keys: &[String],
        metadata: &HashMap<String, String>,
        updates: mpsc::Sender<Items>,
    ) -> Result<(), ConfigurationError> {
        let channel = metadata
            .get("pgNotifyChannel")
            .filter(|c| valid_table(c))
            .ok_or_else(|| {
                ConfigurationError::InvalidRequest(
                    "metadata pgNotifyChannel (an identifier) is required to subscribe".into(),
                )
            })?
            .clone();
        let (client, mut conn) = tokio_postgres::connect(&self.conn_str, NoTls)
            .await
            .map_err(backend)?;
        let (ntx, mut nrx) = mpsc::unbounded_channel::<String>();
        // The connection must be polled for LISTEN to complete and for
        // notifications to arrive.
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = futures::StreamExt::next(&mut messages).await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if ntx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("configuration.postgresql LISTEN connection: {e}");
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(backend)?;
        let keys = keys.to_vec();
        tokio::spawn(async move {
            let _client = client; // keeps the LISTEN session open
            loop {
                let payload = tokio::select! {
                    _ = updates.closed() => return,
                    p = nrx.recv() => match p { Some(p) => p, None => return },
                };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&payload) else {
                    tracing::warn!("configuration.postgresql: a notification is not JSON");
                    continue;
                };
                let data = &event["data"];
                let Some(key) = data["key"].as_str() else {
                    continue;
                };
                if !keys.is_empty() && !keys.iter().any(|k| k == key) {
                    continue;
                }
                let item = if event["action"] == "DELETE" {
                    ConfigurationItem::default()
                } else {
                    ConfigurationItem {
                        value: data["value"].as_str().unwrap_or_default().to_owned(),
                        version: data["version"].as_str().unwrap_or_default().to_owned(),
                        metadata: metadata_map(Some(data["metadata"].clone())),
                    }
                };
                if updates
                    .send(Items::from([(key.to_owned(), item)]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(())
    }
}
