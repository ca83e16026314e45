//! `nameresolution.sqlite`: sidecars on one machine (or sharing a file
//! system) register in a shared SQLite file and refresh a heartbeat; lookups
//! return live registrations round-robin. Works where multicast does not.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Instance, NameResolutionError, NameResolver};
use crate::ComponentMetadata;

const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(5);
/// Resolutions are cached this long to keep SQLite off the hot path.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// (app id, namespace).
type AppKey = (String, String);

pub struct SqliteResolver {
    conn: Arc<Mutex<Connection>>,
    update_interval: Duration,
    registration: Mutex<Option<(String, tokio::task::JoinHandle<()>)>>,
    cache: Mutex<HashMap<AppKey, (Instant, Vec<String>)>>,
    next: AtomicUsize,
}

fn backend(e: impl std::fmt::Display) -> NameResolutionError {
    NameResolutionError::Backend(e.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteResolver {
    /// Metadata: `connectionString` (file path), `updateInterval` (Go duration, default 5s).
    pub fn open(metadata: &ComponentMetadata) -> Result<Self, NameResolutionError> {
        let path = PathBuf::from(metadata.get_any(&["connectionString", "path"]).ok_or_else(
            || NameResolutionError::Backend("missing metadata 'connectionString'".into()),
        )?);
        let update_interval = metadata
            .get_duration("updateInterval")
            .map_err(backend)?
            .unwrap_or(DEFAULT_UPDATE_INTERVAL)
            .max(Duration::from_millis(100));
        let conn = Connection::open(&path).map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS hosts (
                 registration_id TEXT NOT NULL PRIMARY KEY,
                 address TEXT NOT NULL,
                 app_id TEXT NOT NULL,
                 namespace TEXT NOT NULL DEFAULT '',
                 last_update INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS hosts_app_id ON hosts (app_id, namespace);",
        )
        .map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            update_interval,
            registration: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, NameResolutionError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&guard)
        })
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    fn lookup_cached(&self, key: &(String, String)) -> Option<Vec<String>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }
}

#[async_trait]
impl NameResolver for SqliteResolver {
    async fn register(&self, instance: &Instance) -> Result<(), NameResolutionError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (rid, inst) = (id.clone(), instance.clone());
        self.blocking(move |c| {
            c.execute(
                "INSERT INTO hosts (registration_id, address, app_id, namespace, last_update) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rid, inst.address, inst.app_id, inst.namespace, now_secs()],
            )
        })
        .await?;
        let conn = self.conn.clone();
        let interval = self.update_interval;
        let rid = id.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let conn = conn.clone();
                let rid = rid.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let c = conn.lock().unwrap_or_else(PoisonError::into_inner);
                    c.execute(
                        "UPDATE hosts SET last_update = ?1 WHERE registration_id = ?2",
                        params![now_secs(), rid],
                    )
                })
                .await;
                if !matches!(res, Ok(Ok(_))) {
                    tracing::warn!("name resolution heartbeat failed; retrying");
                }
            }
        });
        let mut reg = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, old)) = reg.replace((id, heartbeat)) {
            old.abort();
        }
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, NameResolutionError> {
        let key = (app_id.to_owned(), namespace.to_owned());
        let addresses = match self.lookup_cached(&key) {
            Some(a) => a,
            None => {
                // A registration is live while its heartbeat is at most 3 intervals old.
                let min = now_secs() - (3 * self.update_interval.as_secs().max(1)) as i64;
                let (app, ns) = key.clone();
                let found: Vec<String> = self
                    .blocking(move |c| {
                        let mut stmt = c.prepare_cached(
                            "SELECT address FROM hosts WHERE app_id = ?1 AND namespace = ?2 AND last_update >= ?3 ORDER BY address",
                        )?;
                        let rows = stmt.query_map(params![app, ns, min], |r| r.get::<_, String>(0))?;
                        rows.collect()
                    })
                    .await?;
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, (Instant::now(), found.clone()));
                found
            }
        };
        if addresses.is_empty() {
            return Err(NameResolutionError::NotFound(app_id.to_owned()));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % addresses.len();
        Ok(addresses[i].clone())
    }

    async fn unregister(&self) -> Result<(), NameResolutionError> {
        let reg = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((id, heartbeat)) = reg {
            heartbeat.abort();
            self.blocking(move |c| {
                c.execute("DELETE FROM hosts WHERE registration_id = ?1", params![id])
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registers_resolves_round_robin_and_unregisters() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        let md = ComponentMetadata::new("nr", "a").with("connectionString", db.to_string_lossy());
        let one = SqliteResolver::open(&md).unwrap();
        let two = SqliteResolver::open(&md).unwrap();
        let reader = SqliteResolver::open(&md).unwrap();
        for (r, addr) in [(&one, "127.0.0.1:1001"), (&two, "127.0.0.1:1002")] {
            r.register(&Instance {
                app_id: "orders".into(),
                namespace: String::new(),
                address: addr.into(),
            })
            .await
            .unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            seen.insert(reader.resolve("orders", "").await.unwrap());
        }
        assert_eq!(seen.len(), 2, "both instances are used: {seen:?}");
        assert!(matches!(
            reader.resolve("nobody", "").await,
            Err(NameResolutionError::NotFound(_))
        ));
        assert!(matches!(
            reader.resolve("orders", "prod").await,
            Err(NameResolutionError::NotFound(_))
        ));
        one.unregister().await.unwrap();
        two.unregister().await.unwrap();
        let fresh = SqliteResolver::open(&md).unwrap();
        assert!(fresh.resolve("orders", "").await.is_err());
    }
}
