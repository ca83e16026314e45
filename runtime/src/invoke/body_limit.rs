//! `--max-body-size` for invocation request bodies of unknown length
//! (chunked): counted as they stream, since they can't be checked up front.
//! Also the limit on HTTP app responses (see [`limit_response`]).
//!
//! Past the limit the body ends with an error, never a clean end, so every
//! upstream (the app channel, an HTTPEndpoint, another sidecar's stream)
//! aborts its request instead of delivering a truncated body as complete.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the limit of {limit} bytes (--max-body-size)")]
pub struct BodyTooLarge {
    pub limit: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the app's response body is larger than the limit of {limit} bytes")]
pub struct ResponseTooLarge {
    pub limit: u64,
}

/// Set once the body went over the limit; read by the API that answers.
#[derive(Clone, Default)]
pub struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `body`, failing once more than `limit` bytes have been read.
pub fn limit(body: Body, limit: u64) -> (Body, Exceeded) {
    let exceeded = Exceeded::default();
    let limited = Limited {
        inner: body,
        seen: 0,
        limit,
        exceeded: exceeded.clone(),
        error: |limit| BodyTooLarge { limit }.into(),
    };
    (Body::new(limited), exceeded)
}

/// The limit Dapr's HTTP app channel puts on an app's response: the
/// `--max-body-size` byte count taken as MiB (`maxRequestBodySize << 20`
/// in Go Dapr's channel), so 4 TiB by default; saturates.
pub fn response_limit(max_body_size: u64) -> u64 {
    max_body_size.saturating_mul(1 << 20)
}

/// An app's response `body`, failing (never ending cleanly) once more than
/// `limit` bytes have been read: the caller then sees an aborted response.
pub fn limit_response<B>(body: B, limit: u64) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(Limited {
        inner: body,
        seen: 0,
        limit,
        exceeded: Exceeded::default(),
        error: |limit| ResponseTooLarge { limit }.into(),
    })
}

struct Limited<B> {
    inner: B,
    seen: u64,
    limit: u64,
    exceeded: Exceeded,
    error: fn(u64) -> axum::BoxError,
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.exceeded.get() {
            return Poll::Ready(Some(Err((self.error)(self.limit))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            self.seen = self.seen.saturating_add(data.len() as u64);
            if self.seen > self.limit {
                self.exceeded.0.store(true, Ordering::Release);
                return Poll::Ready(Some(Err((self.error)(self.limit))));
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        // Never claim the end once failed: hyper would close the body cleanly.
        !self.exceeded.get() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunked(chunks: usize, size: usize) -> Body {
        let chunk = Bytes::from(vec![b'x'; size]);
        Body::from_stream(futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        ))
    }

    #[tokio::test]
    async fn within_the_limit_ends_cleanly() {
        let (body, exceeded) = limit(chunked(4, 10), 40);
        let mut stream = body.into_data_stream();
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, 40);
        assert!(!exceeded.get());
    }

    #[tokio::test]
    async fn over_the_limit_ends_with_an_error() {
        let (body, exceeded) = limit(chunked(5, 10), 40);
        let mut stream = body.into_data_stream();
        let mut n = 0;
        let err = loop {
            match stream.next().await {
                Some(Ok(chunk)) => n += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("a body over the limit must not end cleanly"),
            }
        };
        assert_eq!(n, 40);
        assert!(err.to_string().contains("limit of 40 bytes"), "{err}");
        assert!(exceeded.get());
    }

    #[tokio::test]
    async fn a_response_over_its_limit_ends_with_an_error() {
        let mut stream = limit_response(chunked(3, 10), 25).into_data_stream();
        let mut n = 0;
        let err = loop {
            match stream.next().await {
                Some(Ok(chunk)) => n += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("a response over the limit must not end cleanly"),
            }
        };
        assert_eq!(n, 20);
        assert!(err.to_string().contains("response body"), "{err}");
    }

    #[test]
    fn response_limit_is_the_byte_count_in_mib() {
        assert_eq!(response_limit(4 << 20), 4 << 40);
        assert_eq!(response_limit(2), 2 << 20);
        assert_eq!(response_limit(u64::MAX), u64::MAX);
    }
}
