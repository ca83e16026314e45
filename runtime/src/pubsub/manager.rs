//! Starts the app's subscriptions once it is reachable, and stops them on
//! shutdown so in-flight deliveries finish and nothing else is taken.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dapr_components::pubsub::{MessageHandler, SubscribeRequest, Subscription};
use dapr_policy::resiliency::Direction;
use tokio::sync::Mutex;

use super::{
    bulk::BulkDeliverer,
    delivery::{Deliverer, app_callback_client},
    subscriptions::{self, TopicSubscription},
    truthy,
};
use crate::{appchannel::AppChannel, components::Registry, options::AppProtocol};

/// How declarative subscriptions' `origin` starts (see `subscriptions::declarative`).
const DECLARATIVE: &str = "declarative";

/// A running topic subscription, for the metadata API and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSubscription {
    pub pubsub: String,
    pub topic: String,
    pub origin: String,
}

#[derive(Default)]
pub struct SubscriptionManager {
    running: Mutex<Vec<(ActiveSubscription, Subscription)>>,
    /// daprd's own subscriptions (outbox internal topics): not the app's,
    /// so not listed by the metadata API.
    internal: Mutex<Vec<Subscription>>,
}

impl SubscriptionManager {
    /// Subscribes to the declarative subscriptions plus the app's own. A
    /// topic subscribed twice keeps the first (declarative) definition.
    pub async fn start(
        &self,
        registry: &Arc<Registry>,
        app: &AppChannel,
        app_id: &str,
        declarative: Vec<TopicSubscription>,
    ) {
        let mut all = declarative;
        all.extend(subscriptions::programmatic(app, app_id).await);
        let mut seen = HashSet::new();
        for sub in all {
            if !seen.insert((sub.pubsub.clone(), sub.topic.clone())) {
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, origin = %sub.origin, "duplicate subscription ignored");
                continue;
            }
            self.subscribe_and_track(registry, app, app_id, sub).await;
        }
    }

    /// Subscribes and keeps the running subscription; a failure is logged,
    /// the other subscriptions go on.
    async fn subscribe_and_track(
        &self,
        registry: &Arc<Registry>,
        app: &AppChannel,
        app_id: &str,
        sub: TopicSubscription,
    ) {
        match self.subscribe(registry, app, app_id, sub.clone()).await {
            Ok(s) => {
                tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, origin = %sub.origin, "subscribed");
                self.running.lock().await.push((
                    ActiveSubscription {
                        pubsub: sub.pubsub,
                        topic: sub.topic,
                        origin: sub.origin,
                    },
                    s,
                ));
            }
            Err(e) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, origin = %sub.origin, "cannot subscribe: {e}")
            }
        }
    }

    async fn subscribe(
        &self,
        registry: &Arc<Registry>,
        app: &AppChannel,
        app_id: &str,
        sub: TopicSubscription,
    ) -> Result<Subscription, String> {
        let entry = registry
            .pubsub(&sub.pubsub)
            .ok_or_else(|| format!("pubsub {} is not found", sub.pubsub))?;
        if !entry.scopes.can_subscribe(&sub.topic) {
            return Err(format!(
                "topic {} is not allowed for app id {app_id} (subscriptionScopes/allowedTopics)",
                sub.topic
            ));
        }
        let raw_payload = truthy(&sub.metadata, super::RAW_PAYLOAD)?;
        let grpc = match app.protocol {
            AppProtocol::Grpc => Some(app_callback_client(app)?),
            _ => None,
        };
        let deliverer = Deliverer {
            pubsub_name: sub.pubsub.clone(),
            topic: sub.topic.clone(),
            broker: entry.pubsub.clone(),
            app: app.clone(),
            rules: sub.rules,
            dead_letter_topic: sub.dead_letter_topic,
            raw_payload,
            policy: registry.pubsub_policy(&sub.pubsub, Direction::Inbound),
            grpc,
        };
        let handler: Arc<dyn MessageHandler> = match sub.bulk {
            Some(settings) => Arc::new(BulkDeliverer::new(deliverer, settings)),
            None => Arc::new(deliverer),
        };
        entry
            .pubsub
            .subscribe(
                SubscribeRequest {
                    topic: sub.topic,
                    consumer_group: app_id.to_owned(),
                    metadata: sub.metadata,
                },
                handler,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Hot reload of `Subscription` resources: the running declarative
    /// subscriptions of `keys` (pubsub, topic) stop (deliveries in flight get
    /// `grace`), then those of `subs` for these keys start, as Dapr closes a
    /// changed subscription before adding it again. A key the app subscribed
    /// to itself keeps the app's subscription.
    pub async fn replace_declarative(
        &self,
        registry: &Arc<Registry>,
        app: &AppChannel,
        app_id: &str,
        keys: &HashSet<(String, String)>,
        subs: Vec<TopicSubscription>,
        grace: Duration,
    ) {
        let stopped: Vec<(ActiveSubscription, Subscription)> = {
            let mut running = self.running.lock().await;
            let (gone, kept) = std::mem::take(&mut *running)
                .into_iter()
                .partition(|(a, _)| {
                    a.origin.starts_with(DECLARATIVE)
                        && keys.contains(&(a.pubsub.clone(), a.topic.clone()))
                });
            *running = kept;
            gone
        };
        futures::future::join_all(stopped.into_iter().map(|(a, s)| async move {
            s.stop(grace).await;
            tracing::info!(pubsub = %a.pubsub, topic = %a.topic, origin = %a.origin, "unsubscribed");
        }))
        .await;
        let mut started = HashSet::new();
        for sub in subs {
            let key = (sub.pubsub.clone(), sub.topic.clone());
            if !keys.contains(&key) || !started.insert(key.clone()) {
                continue;
            }
            let taken = self
                .running
                .lock()
                .await
                .iter()
                .any(|(a, _)| a.pubsub == key.0 && a.topic == key.1);
            if taken {
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, origin = %sub.origin, "the app subscribes to this topic itself; declarative subscription ignored");
                continue;
            }
            self.subscribe_and_track(registry, app, app_id, sub).await;
        }
    }

    pub async fn active(&self) -> Vec<ActiveSubscription> {
        self.running
            .lock()
            .await
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Subscribes daprd to the transactional outbox's internal topics (no
    /// app needed: the relay only moves events between topics).
    pub async fn start_outbox(&self, registry: &Arc<Registry>, app_id: &str, namespace: &str) {
        let subs = super::outbox::subscribe_internal(registry, app_id, namespace).await;
        self.internal
            .lock()
            .await
            .extend(subs.into_iter().map(|(_, s)| s));
    }

    /// Stops taking messages; deliveries in flight get up to `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let running = std::mem::take(&mut *self.running.lock().await);
        let internal = std::mem::take(&mut *self.internal.lock().await);
        futures::future::join_all(
            running
                .into_iter()
                .map(|(_, s)| s)
                .chain(internal)
                .map(|s| s.stop(grace)),
        )
        .await;
    }
}
