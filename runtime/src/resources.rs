//! Reads `dapr.io` resources from the `--resources-path` directories.

use std::path::{Path, PathBuf};

use dapr_crds::{Component, Configuration, HttpEndpoint, Resource};

/// A resource and the file it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub file: PathBuf,
    pub resource: T,
}

/// Everything found in the resources paths.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub components: Vec<Sourced<Component>>,
    pub configurations: Vec<Sourced<Configuration>>,
    pub http_endpoints: Vec<Sourced<HttpEndpoint>>,
    /// Subscriptions, Resiliency, HTTPEndpoints: kept for the blocks that read them.
    pub others: Vec<Sourced<(String, serde_json::Value)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    // The cause is part of the message (not a `source`), so `{:#}` chains
    // don't print it twice.
    #[error("cannot read resources path {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("invalid resource file {path}: {cause}")]
    Parse {
        path: PathBuf,
        cause: dapr_crds::ParseError,
    },
}

/// Loads every `.yaml`/`.yml` file of each directory (or the file itself when a
/// path names a file), in name order so loading is deterministic.
pub fn load(paths: &[PathBuf]) -> Result<Resources, ResourceError> {
    let mut out = Resources::default();
    for path in paths {
        for file in yaml_files(path)? {
            let text = std::fs::read_to_string(&file).map_err(|cause| ResourceError::Read {
                path: file.clone(),
                cause,
            })?;
            let docs = dapr_crds::parse_documents(&text).map_err(|cause| ResourceError::Parse {
                path: file.clone(),
                cause,
            })?;
            for doc in docs {
                let file = file.clone();
                match doc {
                    Resource::Component(c) => out.components.push(Sourced { file, resource: *c }),
                    Resource::Configuration(c) => {
                        out.configurations.push(Sourced { file, resource: *c })
                    }
                    Resource::HttpEndpoint(e) => {
                        out.http_endpoints.push(Sourced { file, resource: *e })
                    }
                    Resource::Other { kind, document } => out.others.push(Sourced {
                        file,
                        resource: (kind, document),
                    }),
                }
            }
        }
    }
    Ok(out)
}

/// The YAML files under `path`, sorted by name.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ResourceError> {
    let read_err = |cause| ResourceError::Read {
        path: path.to_path_buf(),
        cause,
    };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a Configuration from `--config` (a file path).
pub fn load_configuration(path: &str) -> Result<Option<Configuration>, ResourceError> {
    let file = PathBuf::from(path);
    let text = std::fs::read_to_string(&file).map_err(|cause| ResourceError::Read {
        path: file.clone(),
        cause,
    })?;
    let docs = dapr_crds::parse_documents(&text).map_err(|cause| ResourceError::Parse {
        path: file.clone(),
        cause,
    })?;
    Ok(docs.into_iter().find_map(|d| match d {
        Resource::Configuration(c) => Some(*c),
        _ => None,
    }))
}
