//! Leader election on a `coordination.k8s.io/v1` Lease: the replica holding
//! the Lease runs the reconciler; every replica serves the gRPC API.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio::task::JoinHandle;

/// Timings as in client-go's defaults used by controller-runtime.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
}

/// The leader's work: stopped when leadership ends or the elector itself
/// is dropped or aborted.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following(String),
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
        }
    }

    /// Runs `work` while this replica leads, forever. Leadership lost (or not
    /// renewed within the renew deadline) stops the work; it is restarted
    /// when leadership comes back.
    pub async fn run<F, Fut>(self, work: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut task: Option<AbortOnDrop> = None;
        let mut last_renew: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    last_renew = Some(Instant::now());
                    if task.as_ref().is_none_or(|t| t.0.is_finished()) {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                        task = Some(AbortOnDrop(tokio::spawn(work())));
                    }
                }
                Ok(Attempt::Following(holder)) => {
                    if task.take().is_some() {
                        tracing::warn!(lease = %self.name, %holder, "lost leadership");
                    }
                    last_renew = None;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "leader election attempt failed");
                    let stale =
                        last_renew.is_some_and(|t| t.elapsed() > self.timings.renew_deadline);
                    if stale && task.take().is_some() {
                        tracing::warn!(lease = %self.name, "could not renew leadership in time; stepping down");
                        last_renew = None;
                    }
                }
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                // Someone else created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following(String::new())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec.lease_duration_seconds.unwrap_or(secs).max(1);
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| now.as_second() > t.0.as_second() + i64::from(duration));
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(Attempt::Following(holder));
        }
        if holder != self.identity {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
        // resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following(holder)),
            Err(e) => Err(e),
        }
    }
}
