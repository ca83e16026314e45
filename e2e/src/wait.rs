//! Polling until a condition holds: the cluster is eventually consistent.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::E2eError;

/// Calls `probe` every `every` until it returns `Ok(Some(v))` or `timeout` passes.
/// `Ok(None)` and `Err(_)` both mean "not yet"; the last one is reported on timeout.
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, E2eError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(E2eError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(every).await;
    }
}
