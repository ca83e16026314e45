//! Streaming subscriptions (gRPC `SubscribeTopicEventsAlpha1`): the client
//! opens a stream with an initial request (pubsub, topic, metadata,
//! dead-letter topic), daprd answers with an initial response, then sends
//! each event and waits for the client's `EventProcessed` with the event id
//! and a SUCCESS/RETRY/DROP status before acking the broker. The
//! subscription lives as long as the stream.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use dapr_components::pubsub::{
    HandlerError, Message, MessageHandler, PubSub, PublishRequest, SubscribeRequest, envelope as ce,
};
use dapr_rs_proto::runtime::{
    self as pb, subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In,
    subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out,
    topic_event_response::TopicEventResponseStatus,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tonic::Status;

use super::{PubSubApiError, delivery::topic_event_request, truthy};
use crate::sidecar::Sidecar;

type Outbound = mpsc::Sender<Result<pb::SubscribeTopicEventsResponseAlpha1, Status>>;
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<i32>>>>;

struct StreamHandler {
    pubsub: String,
    topic: String,
    raw_payload: bool,
    dead_letter_topic: String,
    broker: Arc<dyn PubSub>,
    out: Outbound,
    waiting: Waiting,
}

impl StreamHandler {
    async fn dead_letter(&self, msg: &Message) -> Result<(), HandlerError> {
        if self.dead_letter_topic.is_empty() {
            return Ok(());
        }
        self.broker
            .publish(PublishRequest {
                topic: self.dead_letter_topic.clone(),
                data: msg.data.clone(),
                content_type: msg.content_type.clone(),
                metadata: msg.metadata.clone(),
            })
            .await
            .map_err(|e| HandlerError(format!("dead letter topic: {e}")))
    }
}

#[async_trait]
impl MessageHandler for StreamHandler {
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let event = if self.raw_payload {
            ce::from_raw_payload(&msg.data, &self.topic, &self.pubsub)
        } else {
            match serde_json::from_slice::<Value>(&msg.data) {
                Ok(Value::Object(m)) => m,
                _ => {
                    self.dead_letter(&msg).await?;
                    return Err(HandlerError("the message is not a CloudEvent".into()));
                }
            }
        };
        if ce::has_expired(&event, chrono::Utc::now()) {
            let _ = self.dead_letter(&msg).await;
            return Ok(());
        }
        let req =
            topic_event_request(&event, &self.topic, &self.pubsub, "").map_err(HandlerError)?;
        let id = req.id.clone();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().await.insert(id.clone(), tx);
        let sent = self
            .out
            .send(Ok(pb::SubscribeTopicEventsResponseAlpha1 {
                subscribe_topic_events_response_type: Some(Out::EventMessage(req)),
            }))
            .await;
        if sent.is_err() {
            self.waiting.lock().await.remove(&id);
            return Err(HandlerError("the streaming subscriber is gone".into()));
        }
        let status = rx
            .await
            .map_err(|_| HandlerError("the streaming subscriber is gone".into()))?;
        match TopicEventResponseStatus::try_from(status) {
            Ok(TopicEventResponseStatus::Success) => Ok(()),
            Ok(TopicEventResponseStatus::Drop) => self.dead_letter(&msg).await,
            _ => Err(HandlerError(format!(
                "the streaming subscriber asked to retry event {id}"
            ))),
        }
    }
}

/// Serves one `SubscribeTopicEventsAlpha1` stream.
pub async fn subscribe(
    sidecar: &Sidecar,
    mut inbound: tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>,
) -> Result<tonic::codegen::BoxStream<pb::SubscribeTopicEventsResponseAlpha1>, Status> {
    let first = inbound
        .message()
        .await?
        .and_then(|m| m.subscribe_topic_events_request_type);
    let Some(In::InitialRequest(init)) = first else {
        return Err(Status::invalid_argument(
            "initial request is required: the first message must be InitialRequest",
        ));
    };
    if init.pubsub_name.is_empty() {
        return Err(PubSubApiError::NameEmpty.into());
    }
    let entry = sidecar
        .registry
        .pubsub(&init.pubsub_name)
        .ok_or_else(|| PubSubApiError::NotFound(init.pubsub_name.clone()))?;
    if init.topic.is_empty() {
        return Err(PubSubApiError::TopicEmpty(init.pubsub_name).into());
    }
    if !entry.scopes.can_subscribe(&init.topic) {
        return Err(PubSubApiError::Forbidden {
            pubsub: init.pubsub_name,
            topic: init.topic,
            app_id: sidecar.app_id.clone(),
        }
        .into());
    }
    let raw_payload =
        truthy(&init.metadata, super::RAW_PAYLOAD).map_err(Status::invalid_argument)?;
    let (out_tx, out_rx) = mpsc::channel(16);
    let waiting: Waiting = Arc::default();
    let handler = StreamHandler {
        pubsub: init.pubsub_name.clone(),
        topic: init.topic.clone(),
        raw_payload,
        dead_letter_topic: init.dead_letter_topic.unwrap_or_default(),
        broker: entry.pubsub.clone(),
        out: out_tx.clone(),
        waiting: waiting.clone(),
    };
    // The initial response goes out before any event.
    out_tx
        .send(Ok(pb::SubscribeTopicEventsResponseAlpha1 {
            subscribe_topic_events_response_type: Some(Out::InitialResponse(
                pb::SubscribeTopicEventsResponseInitialAlpha1 {},
            )),
        }))
        .await
        .map_err(|_| Status::cancelled("subscriber went away"))?;
    let subscription = entry
        .pubsub
        .subscribe(
            SubscribeRequest {
                topic: init.topic.clone(),
                consumer_group: sidecar.app_id.clone(),
                metadata: init.metadata,
            },
            Arc::new(handler),
        )
        .await
        .map_err(|e| Status::internal(format!("subscribing to {}: {e}", init.topic)))?;
    tracing::info!(pubsub = %init.pubsub_name, topic = %init.topic, "streaming subscription started");
    let stop = sidecar.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                n = inbound.next() => n,
            };
            match next {
                Some(Ok(pb::SubscribeTopicEventsRequestAlpha1 {
                    subscribe_topic_events_request_type: Some(In::EventProcessed(p)),
                })) => {
                    let status = p.status.map(|s| s.status).unwrap_or_default();
                    if let Some(tx) = waiting.lock().await.remove(&p.id) {
                        let _ = tx.send(status);
                    }
                }
                Some(Ok(_)) => tracing::debug!("ignoring a repeated initial request"),
                Some(Err(_)) | None => break,
            }
        }
        // Unanswered events stay unacknowledged and are redelivered.
        waiting.lock().await.clear();
        subscription.stop(Duration::from_secs(1)).await;
        tracing::info!(topic = %init.topic, "streaming subscription ended");
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        out_rx,
    )))
}
