//! The request body of a `CallLocalStream` call, read from the caller
//! sidecar's stream.
//!
//! Why not just hand the gRPC stream to the app channel: the app channel
//! drops the request body as soon as it is done with it (an app may answer
//! before reading it all; HTTP/1 stops at `content-length`). Dropping an
//! HTTP/2 request stream whose response is still being sent makes h2 reset
//! the whole stream with CANCEL, and the caller then loses the response
//! mid-flight (`h2 protocol error: stream no longer needed`). So the stream
//! is owned by a pump that keeps it open until the client ends it or the
//! response has been sent; only then is it released (a reset after the
//! response is complete is NO_ERROR, which RFC 9113 §8.1 allows).

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use dapr_rs_proto::generated::dapr::proto::internals::v1 as internals;

/// Held by the response stream; dropping it (response sent or abandoned)
/// lets the pump release the request stream.
pub struct ResponseGuard {
    _done: oneshot::Sender<()>,
}

/// Chunks buffered between the gRPC stream and the app channel.
const BUFFERED_CHUNKS: usize = 4;

/// The request body for the app, fed from `inbound` after `first`.
pub fn request_body(
    first: Option<Bytes>,
    mut inbound: Streaming<internals::InternalInvokeRequestStream>,
) -> (Body, ResponseGuard) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Status>>(BUFFERED_CHUNKS);
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        // `None` once the app has dropped the body: keep reading (and
        // discarding) so the stream stays open until it ends.
        let mut tx = Some(tx);
        loop {
            tokio::select! {
                biased;
                _ = &mut done_rx => break,
                more = pump_one(&mut inbound, &mut tx) => if !more { break },
            }
        }
    });
    let body =
        futures::stream::iter(first.map(Ok)).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
    (Body::from_stream(body), ResponseGuard { _done: done_tx })
}

/// Moves one message from the stream to the body; false at the end.
async fn pump_one(
    inbound: &mut Streaming<internals::InternalInvokeRequestStream>,
    tx: &mut Option<mpsc::Sender<Result<Bytes, Status>>>,
) -> bool {
    let item = match inbound.message().await {
        Ok(Some(m)) => match m.payload {
            Some(p) => Ok(Bytes::from(p.data)),
            None => return true,
        },
        Ok(None) => return false,
        Err(e) => Err(e),
    };
    let end = item.is_err();
    if let Some(sender) = tx
        && sender.send(item).await.is_err()
    {
        *tx = None;
    }
    !end
}
