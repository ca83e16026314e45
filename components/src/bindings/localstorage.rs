//! `bindings.localstorage`: files under `rootPath`.
//!
//! Operations `create` (metadata `fileName`, a random UUID when absent),
//! `get`, `list` (a directory under the root, the root by default) and
//! `delete`. As Dapr's component, `create` first unwraps data that is a JSON
//! string and then base64-decodes it when it is valid base64, so binary files
//! travel as base64. File names stay inside the root: absolute names, `..`
//! components and symlinks that lead out are refused.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;

use super::{BindingError, InvokeRequest, InvokeResponse, OutputBinding, ops};
use crate::ComponentMetadata;

const FILE_NAME: &str = "fileName";

/// Roots Dapr refuses: kernel interfaces, boot files, mounted credentials.
const DISALLOWED_ROOTS: &[&str] = &["/proc", "/sys", "/boot", "/var/run/secrets"];

pub struct LocalStorageBinding {
    root: PathBuf,
}

impl LocalStorageBinding {
    pub async fn new(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let raw = md.require("rootPath")?;
        let mut root = PathBuf::from(raw);
        if !root.is_absolute() {
            let cwd = std::env::current_dir()
                .map_err(|e| BindingError::invalid_metadata("rootPath", e.to_string()))?;
            root = cwd.join(root);
        }
        tokio::fs::create_dir_all(&root).await.map_err(|e| {
            BindingError::invalid_metadata("rootPath", format!("cannot create '{raw}': {e}"))
        })?;
        let root = tokio::fs::canonicalize(&root).await.map_err(|e| {
            BindingError::invalid_metadata("rootPath", format!("cannot resolve '{raw}': {e}"))
        })?;
        if !root.is_dir() {
            return Err(BindingError::invalid_metadata(
                "rootPath",
                format!("'{raw}' is not a directory"),
            ));
        }
        if DISALLOWED_ROOTS
            .iter()
            .any(|d| root.starts_with(Path::new(d)))
        {
            return Err(BindingError::invalid_metadata(
                "rootPath",
                format!("'{raw}' points to a disallowed location"),
            ));
        }
        Ok(Self { root })
    }

    /// The path of `name` under the root, refusing anything that leaves it.
    fn resolve(&self, name: &str) -> Result<PathBuf, BindingError> {
        let rel = Path::new(name);
        let mut out = self.root.clone();
        for c in rel.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(BindingError::InvalidRequest(format!(
                        "fileName '{name}' must be a relative path inside rootPath (no '..', no leading '/')"
                    )));
                }
            }
        }
        // A symlink inside the root could still point outside it: check the
        // deepest existing ancestor once resolved.
        let mut probe = out.as_path();
        loop {
            if let Ok(real) = std::fs::canonicalize(probe) {
                if !real.starts_with(&self.root) {
                    return Err(BindingError::InvalidRequest(format!(
                        "fileName '{name}' resolves outside rootPath"
                    )));
                }
                break;
            }
            match probe.parent() {
                Some(p) => probe = p,
                None => break,
            }
        }
        Ok(out)
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    async fn create(&self, req: &InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = match req.meta(FILE_NAME) {
            Some(n) => n.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let path = self.resolve(&name)?;
        let content = decode_content(&req.data);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| BindingError::Backend(format!("error creating directory: {e}")))?;
        }
        tokio::fs::write(&path, &content)
            .await
            .map_err(|e| BindingError::Backend(format!("error writing file {name}: {e}")))?;
        let body = serde_json::json!({ "fileName": self.relative(&path) });
        Ok(InvokeResponse {
            data: Bytes::from(body.to_string()),
            ..Default::default()
        })
    }

    async fn get(&self, req: &InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = required_name(req)?;
        let path = self.resolve(name)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(InvokeResponse {
                data: Bytes::from(data),
                ..Default::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BindingError::Backend(format!("file not found: {name}")))
            }
            Err(e) => Err(BindingError::Backend(format!(
                "error reading file {name}: {e}"
            ))),
        }
    }

    async fn delete(&self, req: &InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = required_name(req)?;
        let path = self.resolve(name)?;
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| BindingError::Backend(format!("error deleting file {name}: {e}")))?;
        Ok(InvokeResponse::default())
    }

    async fn list(&self, req: &InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let dir = match req.meta(FILE_NAME) {
            Some(n) => self.resolve(n)?,
            None => self.root.clone(),
        };
        let files = tokio::task::spawn_blocking(move || walk(&dir))
            .await
            .map_err(|e| BindingError::Backend(e.to_string()))??;
        // Dapr lists the files' full paths.
        let names: Vec<String> = files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let body = serde_json::to_vec(&names).map_err(|e| BindingError::Backend(e.to_string()))?;
        Ok(InvokeResponse {
            data: Bytes::from(body),
            ..Default::default()
        })
    }
}

fn required_name(req: &InvokeRequest) -> Result<&str, BindingError> {
    req.meta(FILE_NAME).ok_or_else(|| {
        BindingError::InvalidRequest(format!(
            "required metadata '{FILE_NAME}' is missing for operation '{}'",
            req.operation
        ))
    })
}

/// A JSON string is unwrapped, then valid base64 decoded (Dapr's rules).
fn decode_content(data: &[u8]) -> Vec<u8> {
    let unquoted = serde_json::from_slice::<String>(data)
        .map(String::into_bytes)
        .unwrap_or_else(|_| data.to_vec());
    base64::engine::general_purpose::STANDARD
        .decode(&unquoted)
        .unwrap_or(unquoted)
}

/// Files (not directories) under `dir`, depth first, sorted per directory.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, BindingError> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| BindingError::Backend(format!("error listing {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(BindingError::InvalidRequest(format!(
            "unable to list files: {} is not a directory",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| BindingError::Backend(format!("error listing {}: {e}", d.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            // Symlinked directories are not followed (they may leave the root).
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

#[async_trait]
impl OutputBinding for LocalStorageBinding {
    fn operations(&self) -> Vec<String> {
        [ops::CREATE, ops::GET, ops::LIST, ops::DELETE]
            .map(String::from)
            .to_vec()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        match req.operation.as_str() {
            ops::CREATE => self.create(&req).await,
            ops::GET => self.get(&req).await,
            ops::DELETE => self.delete(&req).await,
            ops::LIST => self.list(&req).await,
            other => Err(BindingError::InvalidRequest(format!(
                "unsupported operation {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, data: &str, file: Option<&str>) -> InvokeRequest {
        InvokeRequest {
            operation: op.to_owned(),
            data: Bytes::from(data.to_owned()),
            metadata: file
                .map(|f| [(FILE_NAME.to_owned(), f.to_owned())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn content_decoding_follows_dapr() {
        assert_eq!(decode_content(br#""Hello World""#), b"Hello World");
        assert_eq!(decode_content(br#""aGk=""#), b"hi");
        assert_eq!(decode_content(b"aGk="), b"hi");
        assert_eq!(decode_content(b"{\"a\":1}"), b"{\"a\":1}");
    }

    #[tokio::test]
    async fn round_trip_and_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let md = ComponentMetadata::new("files", "app")
            .with("rootPath", dir.path().join("root").to_string_lossy());
        let b = LocalStorageBinding::new(&md).await.unwrap();
        let out = b
            .invoke(req("create", r#""Hello World""#, Some("a/b.txt")))
            .await
            .unwrap();
        assert_eq!(&out.data[..], br#"{"fileName":"a/b.txt"}"#);
        let got = b.invoke(req("get", "", Some("a/b.txt"))).await.unwrap();
        assert_eq!(&got.data[..], b"Hello World");
        let list = b.invoke(req("list", "", None)).await.unwrap();
        let names: Vec<String> = serde_json::from_slice(&list.data).unwrap();
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with("root/a/b.txt"), "{names:?}");

        for bad in ["../escape", "/etc/passwd", "a/../../x"] {
            let err = b.invoke(req("create", "x", Some(bad))).await.unwrap_err();
            assert!(
                matches!(err, BindingError::InvalidRequest(_)),
                "{bad}: {err}"
            );
        }
        std::os::unix::fs::symlink(dir.path(), dir.path().join("root/out")).unwrap();
        let err = b
            .invoke(req("create", "x", Some("out/f")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");

        b.invoke(req("delete", "", Some("a/b.txt"))).await.unwrap();
        let err = b.invoke(req("get", "", Some("a/b.txt"))).await.unwrap_err();
        assert!(err.to_string().contains("file not found"), "{err}");
        let err = b.invoke(req("get", "", None)).await.unwrap_err();
        assert!(err.to_string().contains("fileName"), "{err}");
    }

    #[tokio::test]
    async fn refuses_bad_roots() {
        for root in ["/proc/self", "/sys"] {
            let md = ComponentMetadata::new("files", "app").with("rootPath", root);
            let err = LocalStorageBinding::new(&md)
                .await
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("rootPath")), "{root}");
        }
        let md = ComponentMetadata::new("files", "app");
        let err = LocalStorageBinding::new(&md)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("rootPath")));
    }
}
