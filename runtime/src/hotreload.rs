//! Hot reload of resource files (Configuration feature `HotReload`): polls
//! the resources paths and reconciles components when a file changes.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use crate::{components::ComponentLoader, resources};

const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// (path, modified, length) of every resource file: changes when any file is
/// added, removed or rewritten.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for p in paths {
        for f in resources::yaml_files(p).unwrap_or_default() {
            let meta = std::fs::metadata(&f).ok();
            out.push((
                f,
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map(|m| m.len()).unwrap_or(0),
            ));
        }
    }
    out
}

pub async fn watch(paths: Vec<PathBuf>, loader: Arc<ComponentLoader>, stop: CancellationToken) {
    let mut last = fingerprint(&paths);
    tracing::info!("hot reload enabled for resources paths");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let now = fingerprint(&paths);
        if now == last {
            continue;
        }
        last = now;
        match resources::load(&paths) {
            Ok(res) => loader.reconcile(&res.components).await,
            Err(e) => tracing::error!("hot reload skipped: {e}"),
        }
    }
}
