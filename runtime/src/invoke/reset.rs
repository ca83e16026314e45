//! A caller sidecar's reset of its request stream must reach the app as an
//! aborted body, never as a finished one.
//!
//! tonic's server decoder reads a request stream reset with `CANCEL` as a
//! clean end (`Streaming::message` → `Ok(None)`), and a caller that gives
//! up on a body part way — its `--max-body-size` crossed, its client gone —
//! resets with `CANCEL` (tonic's cancellation, Go's context cancel). The
//! callee would then hand the app a truncated upload ending with a proper
//! final chunk. This layer, on the internal gRPC server, turns such resets
//! into `Aborted` before tonic decodes the stream.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use http::Request;
use http_body_util::BodyExt;
use tonic::{Code, Status, body::Body, server::NamedService};

/// `S` with request-body `CANCEL` resets reported as `Aborted`.
#[derive(Clone)]
pub struct ResetIsAbort<S>(pub S);

impl<S: NamedService> NamedService for ResetIsAbort<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for ResetIsAbort<S>
where
    S: tower::Service<Request<Body>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0
            .call(req.map(|body| Body::new(body.map_err(reset_is_abort))))
    }
}

fn reset_is_abort(status: Status) -> Status {
    if status.code() == Code::Cancelled {
        Status::aborted("the caller reset its request stream before its end")
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_body_is_an_abort_not_an_end() {
        assert_eq!(
            reset_is_abort(Status::cancelled("reset")).code(),
            Code::Aborted
        );
        assert_eq!(
            reset_is_abort(Status::internal("boom")).code(),
            Code::Internal
        );
    }
}
