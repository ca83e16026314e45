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
//!
//! The body ends cleanly only when the caller's stream did (an explicit end
//! marker). Any other way the pump stops — the caller reset the stream
//! (e.g. its `--max-body-size` was crossed), the call was abandoned, the
//! task was dropped — ends the body with an error, so the app channel aborts
//! its request and the app never takes a cut-short body as complete. (The
//! pump used to just drop its sender, which the app channel read as a clean
//! end: when the caller's reset dropped the call before the pump saw the
//! error, the app got a truncated upload with a proper final chunk.)

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use futures::Stream;
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

/// What the pump hands the body.
enum Piece {
    Data(Bytes),
    /// The caller ended its stream: the only clean end.
    End,
    Failed(Status),
}

/// The request body for the app, fed from `inbound` after `first`.
pub fn request_body(
    first: Option<Bytes>,
    mut inbound: Streaming<internals::InternalInvokeRequestStream>,
) -> (Body, ResponseGuard) {
    let (tx, rx) = mpsc::channel::<Piece>(BUFFERED_CHUNKS);
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
    let body = PumpedBody {
        first,
        rx,
        finished: false,
    };
    (Body::from_stream(body), ResponseGuard { _done: done_tx })
}

/// Moves one message from the stream to the body; false at the end.
async fn pump_one(
    inbound: &mut Streaming<internals::InternalInvokeRequestStream>,
    tx: &mut Option<mpsc::Sender<Piece>>,
) -> bool {
    let piece = match inbound.message().await {
        Ok(Some(m)) => match m.payload {
            Some(p) => Piece::Data(Bytes::from(p.data)),
            None => return true,
        },
        Ok(None) => Piece::End,
        Err(e) => Piece::Failed(e),
    };
    let more = matches!(piece, Piece::Data(_));
    if let Some(sender) = tx
        && sender.send(piece).await.is_err()
    {
        *tx = None;
    }
    more
}

struct PumpedBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Piece>,
    finished: bool,
}

impl Stream for PumpedBody {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        let item = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Piece::Data(b))) => return Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Piece::End)) => None,
            Poll::Ready(Some(Piece::Failed(e))) => Some(Err(e)),
            // The pump stopped without the caller's end of stream.
            Poll::Ready(None) => Some(Err(Status::cancelled(
                "the caller's request stream stopped before its end",
            ))),
        };
        self.finished = true;
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn body(pieces: Vec<Piece>) -> PumpedBody {
        let (tx, rx) = mpsc::channel(pieces.len().max(1));
        for p in pieces {
            let _ = tx.try_send(p);
        }
        PumpedBody {
            first: Some(Bytes::from_static(b"a")),
            rx,
            finished: false,
        }
    }

    #[tokio::test]
    async fn only_the_callers_end_of_stream_ends_the_body_cleanly() {
        let mut b = body(vec![Piece::Data(Bytes::from_static(b"b")), Piece::End]);
        assert_eq!(b.next().await.unwrap().unwrap(), "a");
        assert_eq!(b.next().await.unwrap().unwrap(), "b");
        assert!(b.next().await.is_none());
        assert!(b.next().await.is_none());
    }

    #[tokio::test]
    async fn a_pump_that_stops_early_fails_the_body() {
        // The sender is gone without an end marker (call dropped, reset).
        let mut b = body(vec![Piece::Data(Bytes::from_static(b"b"))]);
        assert_eq!(b.next().await.unwrap().unwrap(), "a");
        assert_eq!(b.next().await.unwrap().unwrap(), "b");
        assert!(b.next().await.unwrap().is_err());
        assert!(b.next().await.is_none());
        // A reset the pump saw.
        let mut b = body(vec![Piece::Failed(Status::cancelled("reset"))]);
        assert!(b.next().await.unwrap().is_ok());
        assert!(b.next().await.unwrap().is_err());
    }
}
