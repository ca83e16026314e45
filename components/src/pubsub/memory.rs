//! `pubsub.in-memory`: topics inside one sidecar process. Every subscription
//! of a topic gets every message published after it started, in publish
//! order; a message whose handler fails is retried in place (so order holds)
//! every `redeliverInterval` until it succeeds or the subscription stops.
//! Nothing survives the process.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    Message, MessageHandler, PubSub, PubSubError, PublishRequest, StopSignal, SubscribeRequest,
    Subscription, duration_or_millis,
};
use crate::ComponentMetadata;

/// Wait before handing a failed message to the handler again.
const DEFAULT_REDELIVER_INTERVAL: Duration = Duration::from_millis(500);

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>;

#[derive(Default)]
struct Bus {
    topics: Mutex<Subscribers>,
    next_id: AtomicU64,
}

impl Bus {
    fn topics(&self) -> MutexGuard<'_, Subscribers> {
        // Entries are whole senders; a panic elsewhere leaves the map usable.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct InMemoryPubSub {
    bus: Arc<Bus>,
    component: ComponentMetadata,
}

impl InMemoryPubSub {
    pub fn new(metadata: &ComponentMetadata) -> Result<Self, PubSubError> {
        // Validate now so a bad value fails at load time, not per subscription.
        duration_or_millis(&HashMap::new(), metadata, "redeliverInterval")?;
        Ok(Self {
            bus: Arc::default(),
            component: metadata.clone(),
        })
    }
}

/// Removes a subscriber from the bus when its task ends, however it ends.
struct Registration {
    bus: Arc<Bus>,
    topic: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut topics = self.bus.topics();
        if let Some(subs) = topics.get_mut(&self.topic) {
            subs.retain(|(id, _)| *id != self.id);
            if subs.is_empty() {
                topics.remove(&self.topic);
            }
        }
    }
}

#[async_trait]
impl PubSub for InMemoryPubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        let msg = Message {
            topic: req.topic.clone(),
            data: req.data,
            content_type: req.content_type,
            metadata: req.metadata,
        };
        if let Some(subs) = self.bus.topics().get(&req.topic) {
            for (_, tx) in subs {
                // A closed receiver is a subscription shutting down.
                let _ = tx.send(msg.clone());
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Subscription, PubSubError> {
        let redeliver = duration_or_millis(&req.metadata, &self.component, "redeliverInterval")?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_REDELIVER_INTERVAL);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = self.bus.next_id.fetch_add(1, Ordering::Relaxed);
        self.bus
            .topics()
            .entry(req.topic.clone())
            .or_default()
            .push((id, tx));
        let registration = Registration {
            bus: self.bus.clone(),
            topic: req.topic.clone(),
            id,
        };
        let (stop_tx, mut stop) = StopSignal::pair();
        let task = tokio::spawn(async move {
            let _registration = registration;
            loop {
                let msg = tokio::select! {
                    _ = stop.stopped() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                };
                loop {
                    match handler.handle(msg.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!(topic = %msg.topic, error = %e, "in-memory pub/sub: redelivering");
                            tokio::select! {
                                _ = stop.stopped() => return,
                                _ = tokio::time::sleep(redeliver) => {}
                            }
                        }
                    }
                }
            }
        });
        Ok(Subscription::new(stop_tx, vec![task]))
    }
}
