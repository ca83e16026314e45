//! Hot reload of resource files (Configuration feature `HotReload`): polls
//! the resources paths and, when a file changes, reconciles components and
//! rebuilds HTTPEndpoints, Resiliency policies and the middleware pipelines.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use dapr_crds::ConfigurationSpec;
use dapr_policy::resiliency::ResiliencyRegistry;

use crate::{
    components::ComponentLoader,
    invoke::{Invoker, external},
    middleware::{PipelineKind, SharedPipeline, build_pipeline},
    resources,
};

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

/// What a change of the resources paths rebuilds.
pub struct Reloader {
    pub paths: Vec<PathBuf>,
    pub loader: Arc<ComponentLoader>,
    pub invoker: Arc<Invoker>,
    pub app_id: String,
    /// The Configuration's spec: its pipelines name middleware Components.
    pub config: ConfigurationSpec,
    pub http_pipeline: SharedPipeline,
}

pub async fn watch(reloader: Reloader, stop: CancellationToken) {
    let mut last = fingerprint(&reloader.paths);
    tracing::info!("hot reload enabled for resources paths");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let now = fingerprint(&reloader.paths);
        if now == last {
            continue;
        }
        last = now;
        match resources::load(&reloader.paths) {
            Ok(res) => reloader.apply(&res).await,
            Err(e) => tracing::error!("hot reload skipped: {e}"),
        }
    }
}

impl Reloader {
    /// Components first (endpoints and pipelines read them), then
    /// HTTPEndpoints, Resiliency and the middleware pipelines. A part that
    /// fails to build keeps its previous version.
    async fn apply(&self, res: &resources::Resources) {
        self.loader.reconcile(&res.components).await;
        match external::build_all(&res.http_endpoints, &self.loader.registry, &self.app_id).await {
            Ok(endpoints) => {
                self.invoker.endpoints.replace(endpoints);
                tracing::info!(endpoints = ?self.invoker.endpoints.names(), "HTTPEndpoints reloaded");
            }
            Err(e) => tracing::error!("HTTPEndpoints not reloaded: {e}"),
        }
        let docs: Vec<dapr_crds::Resource> = res
            .others
            .iter()
            .map(|o| dapr_crds::Resource::Other {
                kind: o.resource.0.clone(),
                document: o.resource.1.clone(),
            })
            .collect();
        let (resiliency, errors) = ResiliencyRegistry::from_resources(&self.app_id, &docs);
        match errors.first() {
            None => {
                self.invoker.set_resiliency(resiliency);
                tracing::info!("resiliency policies reloaded");
            }
            Some(e) => tracing::error!("resiliency policies not reloaded: {e}"),
        }
        let components: Vec<&dapr_crds::Component> =
            res.components.iter().map(|c| &c.resource).collect();
        for kind in [PipelineKind::Http, PipelineKind::AppHttp] {
            let built = build_pipeline(&self.config, kind, components.iter().copied());
            let pipeline = match built {
                Ok(p) => match p.prefetch().await {
                    Ok(()) => p,
                    Err(e) => {
                        tracing::error!("{} not reloaded: {e}", kind.field());
                        continue;
                    }
                },
                Err(e) => {
                    tracing::error!("{} not reloaded: {e}", kind.field());
                    continue;
                }
            };
            match kind {
                PipelineKind::Http => self.http_pipeline.set(pipeline),
                PipelineKind::AppHttp => {
                    if let Some(app) = &self.invoker.app {
                        app.pipeline.set(pipeline);
                    }
                }
            }
        }
    }
}
