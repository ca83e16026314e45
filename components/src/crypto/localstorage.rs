//! `crypto.dapr.localstorage`: keys are files in the `path` directory; the
//! key name is the file name (`.json`: a JWK, `.pem`: PEM, anything else:
//! guessed from the content, raw bytes being a symmetric key). Files are
//! read on every use, so keys can be rotated on disk.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;

use super::{CryptoError, CryptoInitError, CryptoProvider, Key, KeyFormat, keys::parse_key};
use crate::ComponentMetadata;

pub struct LocalStorage {
    dir: PathBuf,
}

impl LocalStorage {
    pub fn new(metadata: &ComponentMetadata) -> Result<Self, CryptoInitError> {
        let path = metadata.require("path")?;
        let dir = PathBuf::from(path);
        let meta = std::fs::metadata(&dir)
            .map_err(|e| CryptoInitError::Invalid(format!("could not stat path '{path}': {e}")))?;
        if !meta.is_dir() {
            return Err(CryptoInitError::Invalid(format!(
                "path '{path}' is not a directory"
            )));
        }
        Ok(Self { dir })
    }
}

#[async_trait]
impl CryptoProvider for LocalStorage {
    async fn retrieve_key(&self, name: &str) -> Result<Arc<Key>, CryptoError> {
        if name.contains("..") {
            return Err(CryptoError::InvalidKeyPath);
        }
        let path = self.dir.join(name.trim_start_matches('/'));
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| CryptoError::Load {
                name: name.to_owned(),
                reason: match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file".to_owned(),
                    _ => e.to_string(),
                },
            })?;
        let format = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => KeyFormat::Jwk,
            Some("pem") => KeyFormat::Pem,
            _ => KeyFormat::Guess,
        };
        let key = parse_key(&data, format)
            .map_err(|e| CryptoError::Parse(format!("key '{name}': {e}")))?;
        Ok(Arc::new(key))
    }
}
