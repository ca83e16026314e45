//! The HTTP/2 server for sidecar streams, on hyper directly.
//!
//! Every connected sidecar holds one HTTP/2 connection and one stream for as
//! long as it runs, so the per-connection cost decides placement's memory
//! with a thousand sidecars. tonic's server wraps each connection in a task
//! carrying hyper-util's HTTP/1-or-2 connection enum, connection-age timers
//! and a boxed service stack (~2.4 KiB per connection before hyper's own
//! state); serving [`PlacementService`] (already wired at the HTTP level)
//! with hyper's HTTP/2-only connection needs much less, with the same
//! protocol behaviour: h2c or TLS, HTTP/2 keepalive pings, graceful close.

use std::{future::Future, pin::pin, time::Duration};

use futures::{Stream, StreamExt};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tonic::codegen::Service;
use tracing::debug;

use crate::grpc::PlacementService;

/// HTTP/2 settings of the sidecar-facing server.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// HTTP/2 ping interval.
    pub keepalive_time: Duration,
    /// Time a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// How long connections may take to close after shutdown was requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `service` on every connection `incoming` yields until `shutdown`
/// resolves (or `incoming` ends); then stops accepting, closes connections
/// gracefully and waits for them, at most [`DRAIN_TIMEOUT`].
pub async fn serve<I, IO, E>(
    incoming: I,
    service: PlacementService,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(opts.keepalive_time))
        .keep_alive_timeout(opts.keepalive_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            let io = tokio::select! {
                () = &mut shutdown => break,
                next = incoming.next() => match next {
                    None => break,
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        debug!(error = %e, "accepting a connection failed");
                        // Typically EMFILE: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let svc = service.clone();
            // Boxed before it moves into the task: the connection state is
            // large (hyper's and h2's per-connection structs), and a value
            // moved into an async block and pinned there can occupy two
            // slots of the task's state.
            let mut conn = Box::pin(builder.serve_connection(
                TokioIo::new(io),
                service_fn(move |req: http::Request<Incoming>| svc.clone().call(req)),
            ));
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(error = %e, "sidecar connection ended");
                        }
                        return;
                    }
                    _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                }
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
            });
        }
        // `incoming` is dropped here: the listening socket closes.
    }
    let _ = stop_tx.send(true);
    drop(stop_rx);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), stop_tx.closed()).await;
}
