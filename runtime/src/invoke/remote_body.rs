//! The response body of a `CallLocalStream` call on the caller's side.
//!
//! Why a type of its own: the HTTP server writing this body to the caller's
//! client stops polling it once `content-length` bytes are out, before the
//! gRPC trailers of the stream have been read. Dropping an HTTP/2 response
//! stream early makes h2 reset it (CANCEL); the trailers that then arrive
//! for the forgotten stream make it reset again (STREAM_CLOSED), and h2
//! counts those as protocol errors: after 1024 on one connection it sends
//! GOAWAY and every call in flight between the two sidecars fails with
//! `h2 protocol error`. So an unfinished stream is read to its end in the
//! background (briefly, and only a little data) instead of being reset.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use futures::Stream;
use tonic::{Status, Streaming};

use dapr_rs_proto::generated::dapr::proto::internals::v1 as internals;

/// How long, and how much more data, a dropped stream is read for before it
/// is reset after all (a client that went away mid-download).
const DRAIN_TIME: Duration = Duration::from_secs(5);
const DRAIN_BYTES: usize = 256 * 1024;

type Inbound = Streaming<internals::InternalInvokeResponseStream>;

/// `first` (the head message's payload, if any) then the stream's payloads.
pub fn response_body(first: Option<Bytes>, inbound: Inbound) -> Body {
    Body::from_stream(RemoteBody {
        first,
        inbound: Some(inbound),
    })
}

struct RemoteBody {
    first: Option<Bytes>,
    /// `None` once the stream has ended (trailers read) or failed.
    inbound: Option<Inbound>,
}

impl Stream for RemoteBody {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        loop {
            let Some(inbound) = self.inbound.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inbound).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(m))) => {
                    if let Some(p) = m.payload {
                        return Poll::Ready(Some(Ok(Bytes::from(p.data))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.inbound = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.inbound = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for RemoteBody {
    fn drop(&mut self) {
        let Some(mut inbound) = self.inbound.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut seen = 0usize;
                while let Ok(Some(m)) = inbound.message().await {
                    seen += m.payload.map(|p| p.data.len()).unwrap_or(0);
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}
