//! `crypto.dapr.jwks`: keys from a JSON Web Key Set, looked up by `kid`.
//! `jwks` is an `http(s)://` URL (fetched at init within `requestTimeout`,
//! refreshed every `minRefreshInterval`), a path to a file (re-read when it
//! changes), or the JWKS itself, optionally base64-encoded.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock, Weak},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use http_body_util::{BodyExt, Empty, Limited};

use super::{CryptoError, CryptoInitError, CryptoProvider, Key, keys::parse_jwks};
use crate::ComponentMetadata;

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(600);
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 4 << 20;

enum Source {
    Url {
        url: String,
        timeout: Duration,
    },
    File {
        path: PathBuf,
        modified: RwLock<Option<SystemTime>>,
    },
    Inline,
}

pub struct Jwks {
    source: Source,
    keys: RwLock<HashMap<String, Arc<Key>>>,
}

type KeyMap = HashMap<String, Arc<Key>>;

fn to_map(raw: &[u8]) -> Result<KeyMap, CryptoError> {
    Ok(parse_jwks(raw)?
        .into_iter()
        .filter_map(|k| k.kid.clone().map(|kid| (kid, Arc::new(k))))
        .collect())
}

impl Jwks {
    pub async fn new(metadata: &ComponentMetadata) -> Result<Self, CryptoInitError> {
        let location = metadata.require("jwks")?.trim().to_owned();
        let timeout = metadata
            .get_duration("requestTimeout")?
            .filter(|d| *d >= Duration::from_millis(1))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let invalid = |e: CryptoError| CryptoInitError::Invalid(format!("jwks: {e}"));
        if location.starts_with("https://") || location.starts_with("http://") {
            let body = fetch(&location, timeout)
                .await
                .map_err(|e| CryptoInitError::Invalid(format!("jwks: {e}")))?;
            let keys = to_map(&body).map_err(invalid)?;
            return Ok(Self {
                source: Source::Url {
                    url: location,
                    timeout,
                },
                keys: RwLock::new(keys),
            });
        }
        let path = PathBuf::from(&location);
        if path.is_file() {
            let raw = std::fs::read(&path)
                .map_err(|e| CryptoInitError::Invalid(format!("jwks: reading {location}: {e}")))?;
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            return Ok(Self {
                keys: RwLock::new(to_map(&raw).map_err(invalid)?),
                source: Source::File {
                    path,
                    modified: RwLock::new(modified),
                },
            });
        }
        let decoded = STANDARD_NO_PAD.decode(location.trim_end_matches('='));
        let raw = decoded.unwrap_or_else(|_| location.clone().into_bytes());
        let keys = to_map(&raw).map_err(|_| {
            CryptoInitError::Invalid(
                "failed to parse property 'jwks': not a URL, path to local file, or JSON value (optionally base64-encoded)".into(),
            )
        })?;
        Ok(Self {
            source: Source::Inline,
            keys: RwLock::new(keys),
        })
    }

    /// Starts the periodic refresh of a URL source; it stops when the
    /// component is dropped.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        if !matches!(self.source, Source::Url { .. }) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = weak.upgrade() else { return };
                if let Source::Url { url, timeout } = &this.source {
                    match fetch(url, *timeout)
                        .await
                        .map_err(CryptoError::Operation)
                        .and_then(|b| to_map(&b))
                    {
                        Ok(keys) => *write(&this.keys) = keys,
                        Err(e) => tracing::warn!("crypto.dapr.jwks: refreshing {url} failed: {e}"),
                    }
                }
            }
        });
    }

    fn reload_file_if_changed(&self) {
        let Source::File { path, modified } = &self.source else {
            return;
        };
        let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if now == *read(modified) {
            return;
        }
        match std::fs::read(path)
            .map_err(|e| CryptoError::Operation(e.to_string()))
            .and_then(|raw| to_map(&raw))
        {
            Ok(keys) => {
                *write(&self.keys) = keys;
                *write(modified) = now;
            }
            Err(e) => tracing::warn!("crypto.dapr.jwks: reloading {} failed: {e}", path.display()),
        }
    }
}

/// Builds the component and starts its refresh task.
pub async fn create(metadata: &ComponentMetadata) -> Result<Arc<Jwks>, CryptoInitError> {
    let every = metadata
        .get_duration("minRefreshInterval")?
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(DEFAULT_MIN_REFRESH);
    let this = Arc::new(Jwks::new(metadata).await?);
    this.spawn_refresh(every);
    Ok(this)
}

#[async_trait]
impl CryptoProvider for Jwks {
    async fn retrieve_key(&self, name: &str) -> Result<Arc<Key>, CryptoError> {
        self.reload_file_if_changed();
        read(&self.keys)
            .get(name)
            .cloned()
            .ok_or(CryptoError::KeyNotFound)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

async fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| format!("GET {url}: {e}"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("GET {url}: timed out after {timeout:?} (requestTimeout)"))?
}
