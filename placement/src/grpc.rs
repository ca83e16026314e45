//! The `dapr.proto.placement.v1.Placement` gRPC service.
//!
//! Hand-wired at the HTTP level instead of through the generated server:
//! orders are gRPC-framed once (an "update" carrying a thousand-host table
//! is encoded once per dissemination round) and the same buffer is handed to
//! every sidecar's HTTP/2 stream, so no per-stream copy or per-stream encode
//! buffer sized to the largest table is kept alive. Requests are decoded
//! with tonic's streaming decoder.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use dapr_placement_core::proto::{Host, HostOperation, PlacementOrder, PlacementTables};
use http_body::Frame;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::{
    Status, Streaming,
    body::Body,
    codec::BufferSettings,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
};
use tracing::debug;

use crate::leader::{Event, StreamId};

/// Full gRPC path of the only method.
pub const REPORT_DAPR_STATUS: &str = "/dapr.proto.placement.v1.Placement/ReportDaprStatus";

/// Time a new stream has to send its first report.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest host report accepted.
const MAX_REPORT_SIZE: usize = 4 << 20;

/// Orders queued per stream before it is considered stuck.
pub const STREAM_QUEUE: usize = 16;

/// A gRPC length-prefixed message, framed ahead of time (cheap to clone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded(pub Bytes);

/// Encodes and frames a `PlacementOrder`.
pub fn encode_order(operation: &str, version: u64, tables: Option<PlacementTables>) -> Encoded {
    let order = PlacementOrder {
        tables,
        operation: operation.to_owned(),
        version,
    };
    let len = order.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    order.encode_raw(&mut buf);
    Encoded(buf.freeze())
}

/// Stream item type of the response.
pub type OrderItem = Result<Encoded, Box<Status>>;

/// Why an order could not be queued to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// `STREAM_QUEUE` orders are waiting: the sidecar is not reading.
    Full,
    /// The stream is gone.
    Closed,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<OrderItem>,
    sender_gone: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
}

fn lock_queue(q: &Mutex<QueueState>) -> std::sync::MutexGuard<'_, QueueState> {
    q.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The leader's end of a stream's order queue.
///
/// One bounded queue per sidecar with a single consumer: a mutex-guarded
/// `VecDeque` and one waker, about 100 bytes when empty, where a tokio mpsc
/// channel costs ~1.5 KiB (cache-padded channel state plus a 32-slot block)
/// per stream, 1.5 MiB with a thousand sidecars connected.
pub struct OrderSender(Arc<Mutex<QueueState>>);

/// The response body's end of a stream's order queue.
pub struct OrderReceiver(Arc<Mutex<QueueState>>);

/// A new order queue for one stream.
pub fn order_queue() -> (OrderSender, OrderReceiver) {
    let q = Arc::new(Mutex::new(QueueState::default()));
    (OrderSender(q.clone()), OrderReceiver(q))
}

impl OrderSender {
    /// Queues an order without waiting.
    pub fn try_send(&self, item: OrderItem) -> Result<(), QueueError> {
        let waker = {
            let mut q = lock_queue(&self.0);
            if q.receiver_gone {
                return Err(QueueError::Closed);
            }
            if q.items.len() >= STREAM_QUEUE {
                return Err(QueueError::Full);
            }
            q.items.push_back(item);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for OrderSender {
    fn drop(&mut self) {
        let waker = {
            let mut q = lock_queue(&self.0);
            q.sender_gone = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl OrderReceiver {
    /// The next order; None once the sender is gone and the queue is empty.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<OrderItem>> {
        let mut q = lock_queue(&self.0);
        if let Some(item) = q.items.pop_front() {
            if q.items.is_empty() {
                // Back to no allocation between rounds.
                q.items = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        if q.sender_gone {
            return Poll::Ready(None);
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OrderReceiver {
    fn drop(&mut self) {
        let mut q = lock_queue(&self.0);
        q.receiver_gone = true;
        q.items.clear();
    }
}

/// Where streams go: the leader loop of the current term, if this node leads.
#[derive(Clone, Default)]
pub struct LeaderSlot(Arc<Mutex<Option<mpsc::Sender<Event>>>>);

impl LeaderSlot {
    /// Installs (Some) or clears (None) the current leader loop.
    pub fn set(&self, tx: Option<mpsc::Sender<Event>>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = tx;
        }
    }

    /// Removes the current leader loop.
    pub fn take(&self) -> Option<mpsc::Sender<Event>> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }

    fn get(&self) -> Option<mpsc::Sender<Event>> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The status followers answer with (Dapr's wording).
pub fn not_leader(node: &str) -> Status {
    Status::failed_precondition(format!(
        "node id={node} is not a leader. Only the leader can serve requests"
    ))
}

/// The Placement service.
#[derive(Clone)]
pub struct PlacementService {
    node: Arc<str>,
    leader: LeaderSlot,
    next_id: Arc<AtomicU64>,
}

impl PlacementService {
    /// A service for node `node` that forwards streams to `leader`.
    pub fn new(node: &str, leader: LeaderSlot) -> Self {
        Self {
            node: node.into(),
            leader,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    async fn report_dapr_status(
        self,
        mut inbound: Streaming<Host>,
    ) -> Result<OrderReceiver, Status> {
        let Some(leader) = self.leader.get() else {
            return Err(not_leader(&self.node));
        };
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no host report received")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before the first report")),
            Ok(Ok(Some(h))) => h,
        };
        if first.name.is_empty() && !first.entities.is_empty() {
            return Err(Status::invalid_argument(
                "a host with actor types needs a name",
            ));
        }
        let id: StreamId = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = order_queue();
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        let legacy = first.operation == HostOperation::Unknown as i32;
        debug!(stream = id, host = %first.name, namespace = %first.namespace, app = %first.id, legacy, "stream opened");
        let open = Event::Open {
            stream: id,
            first,
            out: out_tx,
            kill: kill_tx,
            legacy,
        };
        if leader.send(open).await.is_err() {
            return Err(not_leader(&self.node));
        }
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut kill_rx => break,
                    msg = inbound.message() => match msg {
                        Ok(Some(host)) => {
                            if leader.send(Event::Report { stream: id, host }).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!(stream = id, %status, "stream receive failed");
                            break;
                        }
                    },
                }
            }
            let _ = leader.send(Event::Closed { stream: id }).await;
        });
        Ok(out_rx)
    }
}

/// The response body: framed orders, then the status as trailers.
struct OrdersBody {
    rx: OrderReceiver,
    done: bool,
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    map
}

impl http_body::Body for OrdersBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(order))) => Poll::Ready(Some(Ok(Frame::data(order.0)))),
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl<B> Service<http::Request<B>> for PlacementService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != REPORT_DAPR_STATUS {
            return Box::pin(
                async move { Ok(Status::unimplemented("unknown method").into_http()) },
            );
        }
        let compressed = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        let svc = self.clone();
        Box::pin(async move {
            if compressed {
                return Ok(
                    Status::unimplemented("compressed requests are not supported").into_http(),
                );
            }
            // Reports are small: a small initial decode buffer per stream.
            let decoder =
                tonic_prost::ProstDecoder::<Host>::new(BufferSettings::new(512, 32 * 1024));
            let inbound =
                Streaming::new_request(decoder, req.into_body(), None, Some(MAX_REPORT_SIZE));
            match svc.report_dapr_status(inbound).await {
                Ok(rx) => {
                    let mut resp = http::Response::new(Body::new(OrdersBody { rx, done: false }));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(resp)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl NamedService for PlacementService {
    const NAME: &'static str = "dapr.proto.placement.v1.Placement";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn order_queue_is_bounded_and_reports_closure() {
        let (tx, mut rx) = order_queue();
        for v in 0..STREAM_QUEUE {
            tx.try_send(Ok(encode_order("lock", v as u64, None)))
                .expect("room");
        }
        assert_eq!(
            tx.try_send(Ok(encode_order("lock", 99, None))),
            Err(QueueError::Full)
        );
        // A waiting receiver is woken by the next order.
        for v in 0..STREAM_QUEUE {
            let got = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
            assert_eq!(
                got.and_then(Result::ok),
                Some(encode_order("lock", v as u64, None))
            );
        }
        let waiter = tokio::spawn(async move {
            let first = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
            let end = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(Ok(encode_order("unlock", 7, None)))
            .expect("room");
        drop(tx);
        let (first, end) = waiter.await.expect("receiver task");
        assert_eq!(
            first.and_then(Result::ok),
            Some(encode_order("unlock", 7, None))
        );
        assert!(end.is_none(), "sender gone: end of stream");

        let (tx, rx) = order_queue();
        drop(rx);
        assert_eq!(
            tx.try_send(Ok(encode_order("lock", 1, None))),
            Err(QueueError::Closed)
        );
    }

    #[test]
    fn framed_order_decodes_as_placement_order() {
        let mut tables = PlacementTables {
            replication_factor: 100,
            ..Default::default()
        };
        #[allow(deprecated)]
        {
            tables.version = "3".into();
        }
        let enc = encode_order("update", 3, Some(tables.clone()));
        assert_eq!(enc.0[0], 0, "not compressed");
        let len = u32::from_be_bytes([enc.0[1], enc.0[2], enc.0[3], enc.0[4]]) as usize;
        assert_eq!(len + 5, enc.0.len());
        let order = PlacementOrder::decode(&enc.0[5..]).expect("decodes");
        assert_eq!(order.operation, "update");
        assert_eq!(order.version, 3);
        assert_eq!(order.tables, Some(tables));
    }
}
