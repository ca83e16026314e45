//! Pub/sub through the real `daprd` binary and a real subscriber app over
//! HTTP: envelopes, raw payloads, CEL routing, dead letters, RETRY/DROP,
//! declarative subscriptions, errors, bulk publish — on `pubsub.in-memory`,
//! `pubsub.redis` (127.0.0.1:16379) and `pubsub.rabbitmq` (127.0.0.1:15673),
//! both started by scripts/test-services.sh.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use common::{brokers::*, *};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One delivery the subscriber app saw.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    content_type: String,
    event: Value,
}

#[derive(Clone)]
struct AppState {
    subscriptions: Value,
    tx: mpsc::UnboundedSender<Delivery>,
    /// Deliveries per event id, to answer RETRY only the first time.
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

/// A subscriber app: `/dapr/subscribe` answers `subscriptions`; every POST is
/// recorded and answered by its path: `/retry` (RETRY once, then SUCCESS),
/// `/drop` (DROP), `/missing` (404), `/fail` (500 once, then 200), anything
/// else 200 with an empty body.
async fn start_app(subscriptions: Value) -> (u16, mpsc::UnboundedReceiver<Delivery>) {
    async fn subscribe(State(s): State<AppState>) -> Json<Value> {
        Json(s.subscriptions.clone())
    }
    async fn deliver(State(s): State<AppState>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let n = {
            let mut seen = s.seen.lock().unwrap();
            let n = seen.entry(format!("{path}{id}")).or_default();
            *n += 1;
            *n
        };
        let _ = s.tx.send(Delivery {
            path: path.clone(),
            content_type,
            event,
        });
        match path.as_str() {
            "/retry" if n == 1 => Json(json!({"status": "RETRY"})).into_response(),
            "/retry" => Json(json!({"status": "SUCCESS"})).into_response(),
            "/drop" => Json(json!({"status": "DROP"})).into_response(),
            "/missing" => StatusCode::NOT_FOUND.into_response(),
            "/fail" if n == 1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let state = AppState {
        subscriptions,
        tx,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .fallback(deliver)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, rx)
}

/// A unique topic name: Redis streams outlive the test run.
fn topic(name: &str) -> String {
    format!("{TOPIC_PREFIX}{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The log text without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until `daprd` logged that each topic is subscribed (its broker
/// subscription is in place, so nothing published from now on is missed).
async fn wait_subscribed(daprd: &Daprd, topics: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logs = strip_ansi(&daprd.logs());
        let done = topics.iter().all(|t| {
            let field = format!("topic={t}");
            logs.lines().any(|l| {
                l.contains(" subscribed") && l.split_whitespace().any(|w| w == field.as_str())
            })
        });
        if done {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("not subscribed to {topics:?} within 20 s; daprd logs:\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Env {
    daprd: Daprd,
    rx: mpsc::UnboundedReceiver<Delivery>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(broker: Broker, subscriptions: Value, extra: &[(&str, String)]) -> Self {
        broker.prepare().await;
        let dir = tempfile::tempdir().unwrap();
        write_resource(dir.path(), "pubsub.yaml", &broker.component());
        for (file, yaml) in extra {
            write_resource(dir.path(), file, yaml);
        }
        let topics: Vec<String> = subscriptions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["topic"].as_str().map(str::to_owned))
            .collect();
        let (port, rx) = start_app(subscriptions).await;
        let daprd = DaprdBuilder::new("subscriber")
            .resources(dir.path())
            .arg("--app-port")
            .arg(port.to_string())
            .start()
            .await;
        // Brokers deliver only what is published once the subscription is
        // in place (groups, queues, shared subscriptions are made then).
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        wait_subscribed(&daprd, &topics).await;
        Self {
            daprd,
            rx,
            _dir: dir,
        }
    }

    async fn publish(
        &self,
        topic: &str,
        body: &str,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Reply {
        let url = self
            .daprd
            .url(&format!("/v1.0/publish/pubsub/{topic}{query}"));
        request("POST", &url, Some(body.as_bytes().to_vec()), headers)
            .await
            .unwrap()
    }

    async fn next(&mut self) -> Delivery {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.recv()).await {
            Ok(Some(d)) => d,
            _ => panic!(
                "no delivery within 10 s; daprd logs:\n{}",
                self.daprd.logs()
            ),
        }
    }

    /// Asserts nothing else is delivered for `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("unexpected delivery: {extra:?}");
        }
    }
}

fn sub(topic: &str, route: &str) -> Value {
    json!({"pubsubname": "pubsub", "topic": topic, "route": route})
}

async fn envelope_fields(broker: Broker) {
    let t = topic("orders");
    let mut env = Env::start(broker, json!([sub(&t, "/orders")]), &[]).await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = env
        .publish(
            &t,
            r#"{"item":"book","qty":2}"#,
            &[("content-type", "application/json"), ("traceparent", tp)],
            "",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let d = env.next().await;
    assert_eq!(d.path, "/orders");
    assert_eq!(d.content_type, "application/cloudevents+json");
    let e = &d.event;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "com.dapr.event.sent");
    assert_eq!(e["source"], "subscriber");
    assert_eq!(e["topic"], t.as_str());
    assert_eq!(e["pubsubname"], "pubsub");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["traceparent"], tp);
    assert_eq!(e["traceid"], tp);
    assert_eq!(e["data"], json!({"item": "book", "qty": 2}));
    assert!(!e["id"].as_str().unwrap().is_empty());
    assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok());

    // metadata.cloudevent.* overrides, and text data stays a string.
    env.publish(
        &t,
        "hello",
        &[("content-type", "text/plain")],
        "?metadata.cloudevent.id=my-id&metadata.cloudevent.type=my.type&metadata.cloudevent.source=elsewhere",
    )
    .await;
    let e = env.next().await.event;
    assert_eq!(
        (e["id"].as_str(), e["type"].as_str()),
        (Some("my-id"), Some("my.type"))
    );
    assert_eq!(e["source"], "elsewhere");
    assert_eq!(e["data"], "hello");

    // An app-made CloudEvent passes through, missing fields filled.
    env.publish(
        &t,
        r#"{"id":"ce-1","type":"custom.type","data":{"x":1},"datacontenttype":"application/json"}"#,
        &[("content-type", "application/cloudevents+json")],
        "",
    )
    .await;
    let e = env.next().await.event;
    assert_eq!(e["id"], "ce-1");
    assert_eq!(e["type"], "custom.type");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["topic"], t.as_str());
    assert_eq!(e["data"]["x"], 1);

    // Binary data travels as data_base64.
    env.publish(
        &t,
        "\u{1}\u{2}",
        &[("content-type", "application/octet-stream")],
        "",
    )
    .await;
    let e = env.next().await.event;
    assert_eq!(e["data_base64"], "AQI=");

    // ttlInSeconds becomes the envelope's expiration.
    env.publish(&t, "young", &[], "?metadata.ttlInSeconds=60")
        .await;
    let e = env.next().await.event;
    assert!(e["expiration"].is_string());
}

async fn raw_payload(broker: Broker) {
    let t = topic("raw");
    let mut env = Env::start(
        broker,
        json!([{"pubsubname": "pubsub", "topic": t, "route": "/raw",
                "metadata": {"rawPayload": "true"}}]),
        &[],
    )
    .await;
    let r = env
        .publish(
            &t,
            "not-json-at-all",
            &[("content-type", "text/plain")],
            "?metadata.rawPayload=true",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let e = env.next().await.event;
    assert_eq!(e["data_base64"], "bm90LWpzb24tYXQtYWxs"); // base64("not-json-at-all")
    assert_eq!(e["datacontenttype"], "application/octet-stream");
    assert_eq!(e["topic"], t.as_str());
}

async fn routing_rules(broker: Broker) {
    let t = topic("routed");
    let mut env = Env::start(
        broker,
        json!([{"pubsubname": "pubsub", "topic": t, "routes": {
            "rules": [
                {"match": "event.type == \"urgent\"", "path": "/urgent"},
                {"match": "event.data.qty > 10", "path": "/bulk-order"}
            ],
            "default": "/normal"}}]),
        &[],
    )
    .await;
    let json_ct = [("content-type", "application/json")];
    env.publish(
        &t,
        r#"{"qty":1}"#,
        &json_ct,
        "?metadata.cloudevent.type=urgent",
    )
    .await;
    assert_eq!(env.next().await.path, "/urgent");
    env.publish(&t, r#"{"qty":50}"#, &json_ct, "").await;
    assert_eq!(env.next().await.path, "/bulk-order");
    env.publish(&t, r#"{"qty":1}"#, &json_ct, "").await;
    assert_eq!(env.next().await.path, "/normal");
}

async fn not_found_goes_to_dead_letter_topic(broker: Broker) {
    let (t, dlq) = (topic("dl-src"), topic("dl-dlq"));
    let mut env = Env::start(
        broker,
        json!([
            {"pubsubname": "pubsub", "topic": t, "route": "/missing", "deadLetterTopic": dlq},
            sub(&dlq, "/dead")
        ]),
        &[],
    )
    .await;
    env.publish(
        &t,
        r#"{"n":1}"#,
        &[("content-type", "application/json")],
        "?metadata.cloudevent.id=dl-1",
    )
    .await;
    let first = env.next().await;
    assert_eq!(first.path, "/missing");
    let dead = env.next().await;
    assert_eq!(dead.path, "/dead");
    assert_eq!(dead.event["id"], "dl-1");
    assert_eq!(dead.event["data"]["n"], 1);
    env.quiet(Duration::from_secs(2)).await;
}

async fn retry_redelivers_and_drop_does_not(broker: Broker) {
    let (tr, td, tf) = (topic("retry"), topic("drop"), topic("fail"));
    let mut env = Env::start(
        broker,
        json!([sub(&tr, "/retry"), sub(&td, "/drop"), sub(&tf, "/fail")]),
        &[],
    )
    .await;
    env.publish(&tr, "again", &[], "?metadata.cloudevent.id=r-1")
        .await;
    let a = env.next().await;
    let b = env.next().await;
    assert_eq!((a.path.as_str(), b.path.as_str()), ("/retry", "/retry"));
    assert_eq!(a.event["id"], b.event["id"]);
    env.publish(&tf, "again", &[], "?metadata.cloudevent.id=f-1")
        .await;
    let a = env.next().await;
    let b = env.next().await;
    assert_eq!((a.path.as_str(), b.path.as_str()), ("/fail", "/fail"));
    env.quiet(Duration::from_secs(2)).await;
    env.publish(&td, "bye", &[], "").await;
    assert_eq!(env.next().await.path, "/drop");
    env.quiet(Duration::from_secs(3)).await;
}

async fn declarative_subscription(broker: Broker) {
    let (t1, t2) = (topic("decl1"), topic("decl2"));
    let v2 = format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s2\nspec:\n  pubsubname: pubsub\n  topic: {t2}\n  routes:\n    rules:\n    - match: event.type == \"special\"\n      path: /special\n    default: /plain\nscopes:\n- subscriber\n"
    );
    let v1 = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s1\nspec:\n  pubsubname: pubsub\n  topic: {t1}\n  route: /v1route\n"
    );
    let other = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s3\nspec:\n  pubsubname: pubsub\n  topic: {t1}-other\n  route: /never\nscopes:\n- someone-else\n"
    );
    let mut env = Env::start(
        broker,
        json!([]),
        &[("sub1.yaml", v1), ("sub2.yaml", v2), ("sub3.yaml", other)],
    )
    .await;
    wait_subscribed(&env.daprd, &[&t1, &t2]).await;
    env.publish(&t1, "a", &[], "").await;
    assert_eq!(env.next().await.path, "/v1route");
    env.publish(&t2, "b", &[], "?metadata.cloudevent.type=special")
        .await;
    assert_eq!(env.next().await.path, "/special");
    env.publish(&t2, "c", &[], "").await;
    assert_eq!(env.next().await.path, "/plain");
    env.publish(&format!("{t1}-other"), "d", &[], "").await;
    env.quiet(Duration::from_secs(1)).await;
}

async fn errors_and_bulk(broker: Broker) {
    let t = topic("bulk");
    let scoped = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: scoped\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n  - name: publishingScopes\n    value: \"subscriber=allowed\"\n".to_owned();
    let mut env = Env::start(
        broker,
        json!([sub(&t, "/bulk")]),
        &[("scoped.yaml", scoped)],
    )
    .await;
    let r = env.publish(&t, "x", &[], "").await;
    assert_eq!(r.status, 204);
    env.next().await;

    let port = env.daprd.http_port;
    let url = move |p: &str| format!("http://127.0.0.1:{port}{p}");
    let r = http("POST", &url("/v1.0/publish/nope/t"), "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_PUBSUB_NOT_FOUND")
    );
    let r = http("POST", &url("/v1.0/publish/scoped/secret"), "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "ERR_PUBSUB_FORBIDDEN")
    );
    let r = http("POST", &url("/v1.0/publish/scoped/allowed"), "x").await;
    assert_eq!(r.status, 204);
    let r = http("POST", &url("/v1.0/publish/pubsub/"), "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_TOPIC_NAME_EMPTY")
    );

    let entries = json!([
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "2", "event": "two", "contentType": "text/plain",
         "metadata": {"cloudevent.id": "bulk-2"}}
    ]);
    for prefix in ["/v1.0-alpha1", "/v1.0"] {
        let r = http(
            "POST",
            &url(&format!("{prefix}/publish/bulk/pubsub/{t}")),
            &entries.to_string(),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
        let mut got = [env.next().await.event, env.next().await.event];
        got.sort_by_key(|e| e["id"].as_str().map(|s| s == "bulk-2"));
        assert_eq!(got[0]["data"]["n"], 1);
        assert_eq!(
            (got[1]["id"].as_str(), got[1]["data"].as_str()),
            (Some("bulk-2"), Some("two"))
        );
    }
    let dup = json!([{"entryId": "1", "event": 1, "contentType": "application/json"},
                     {"entryId": "1", "event": 2, "contentType": "application/json"}]);
    let r = http(
        "POST",
        &url(&format!("/v1.0/publish/bulk/pubsub/{t}")),
        &dup.to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_EVENTS_SER")
    );
    let r = http("POST", &url(&format!("/v1.0/publish/bulk/pubsub/{t}")), "{").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_EVENTS_SER")
    );
}

macro_rules! broker_tests {
    ($broker:ident: $($test:ident),* $(,)?) => {
        #[allow(non_snake_case)]
        mod $broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::Broker::$broker).await;
                }
            )*
        }
    };
}

broker_tests!(InMemory: envelope_fields, raw_payload, routing_rules,
    not_found_goes_to_dead_letter_topic, retry_redelivers_and_drop_does_not,
    declarative_subscription, errors_and_bulk);
broker_tests!(Redis: envelope_fields, raw_payload, routing_rules,
    not_found_goes_to_dead_letter_topic, retry_redelivers_and_drop_does_not,
    declarative_subscription, errors_and_bulk);
broker_tests!(JetStream: envelope_fields, raw_payload, routing_rules,
    not_found_goes_to_dead_letter_topic, retry_redelivers_and_drop_does_not,
    declarative_subscription, errors_and_bulk);
broker_tests!(RabbitMq: envelope_fields, raw_payload, routing_rules,
    not_found_goes_to_dead_letter_topic, retry_redelivers_and_drop_does_not,
    declarative_subscription, errors_and_bulk);
broker_tests!(Mqtt3: envelope_fields, raw_payload, routing_rules,
    not_found_goes_to_dead_letter_topic, retry_redelivers_and_drop_does_not,
    declarative_subscription, errors_and_bulk);

/// `daprd --app-id X` with no resources path offers an in-memory pub/sub
/// named `pubsub` beside the SQLite state store.
#[tokio::test]
async fn embedded_default_has_pubsub() {
    let t = topic("default");
    let (port, mut rx) = start_app(json!([sub(&t, "/in")])).await;
    let daprd = DaprdBuilder::new("subscriber")
        .arg("--app-port")
        .arg(port.to_string())
        .start()
        .await;
    wait_subscribed(&daprd, &[&t]).await;
    let meta = http("GET", &daprd.url("/v1.0/metadata"), "").await.json();
    let names: Vec<&str> = meta["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pubsub") && names.contains(&"statestore"),
        "{meta}"
    );
    let r = http(
        "POST",
        &daprd.url(&format!("/v1.0/publish/pubsub/{t}")),
        "hi",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("delivery")
        .unwrap();
    assert_eq!(
        (d.path.as_str(), d.event["data"].as_str()),
        ("/in", Some("hi"))
    );
}

mod grpc {
    use super::*;
    use dapr::dapr::proto::runtime::v1::{
        self as pb, dapr_client::DaprClient,
        subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In,
        subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out,
        topic_event_response::TopicEventResponseStatus,
    };
    use futures::StreamExt;

    fn initial(topic: &str) -> pb::SubscribeTopicEventsRequestAlpha1 {
        pb::SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(In::InitialRequest(
                pb::SubscribeTopicEventsRequestInitialAlpha1 {
                    pubsub_name: "pubsub".into(),
                    topic: topic.into(),
                    metadata: HashMap::new(),
                    dead_letter_topic: None,
                },
            )),
        }
    }

    fn processed(
        id: &str,
        status: TopicEventResponseStatus,
    ) -> pb::SubscribeTopicEventsRequestAlpha1 {
        pb::SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(In::EventProcessed(
                pb::SubscribeTopicEventsRequestProcessedAlpha1 {
                    id: id.into(),
                    status: Some(pb::TopicEventResponse {
                        status: status as i32,
                    }),
                },
            )),
        }
    }

    async fn next_event(
        stream: &mut tonic::Streaming<pb::SubscribeTopicEventsResponseAlpha1>,
    ) -> pb::TopicEventRequest {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("no event within 10 s")
            .expect("stream ended")
            .expect("stream error");
        match msg.subscribe_topic_events_response_type {
            Some(Out::EventMessage(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// gRPC `PublishEvent`/`BulkPublishEvent` into a streaming
    /// subscription (`SubscribeTopicEventsAlpha1`): events arrive with their
    /// envelope, RETRY redelivers, SUCCESS acks.
    async fn streaming(broker: Broker) {
        let t = topic("stream");
        let env = Env::start(broker, json!([]), &[]).await;
        let mut client = DaprClient::connect(env.daprd.grpc_endpoint())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(initial(&t)).await.unwrap();
        let mut stream = client
            .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert!(matches!(
            first.subscribe_topic_events_response_type,
            Some(Out::InitialResponse(_))
        ));
        client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: "pubsub".into(),
                topic: t.clone(),
                data: br#"{"n":1}"#.to_vec(),
                data_content_type: "application/json".into(),
                metadata: HashMap::from([("cloudevent.id".to_owned(), "s-1".to_owned())]),
            })
            .await
            .unwrap();
        let e = next_event(&mut stream).await;
        assert_eq!((e.id.as_str(), e.topic.as_str()), ("s-1", t.as_str()));
        assert_eq!(e.data, br#"{"n":1}"#);
        assert_eq!(e.source, "subscriber");
        tx.send(processed("s-1", TopicEventResponseStatus::Retry))
            .await
            .unwrap();
        let again = next_event(&mut stream).await;
        assert_eq!(again.id, "s-1");
        tx.send(processed("s-1", TopicEventResponseStatus::Success))
            .await
            .unwrap();

        let bulk = client
            .bulk_publish_event(pb::BulkPublishRequest {
                pubsub_name: "pubsub".into(),
                topic: t.clone(),
                entries: (0..2)
                    .map(|i| pb::BulkPublishRequestEntry {
                        entry_id: i.to_string(),
                        event: format!("e{i}").into_bytes(),
                        content_type: "text/plain".into(),
                        metadata: HashMap::new(),
                    })
                    .collect(),
                metadata: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(bulk.failed_entries.is_empty());
        let mut got = Vec::new();
        for _ in 0..2 {
            let e = next_event(&mut stream).await;
            tx.send(processed(&e.id, TopicEventResponseStatus::Success))
                .await
                .unwrap();
            got.push(String::from_utf8(e.data).unwrap());
        }
        got.sort();
        assert_eq!(got, ["e0", "e1"]);

        let err = client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: "nope".into(),
                topic: t.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("nope"), "{err:?}");
    }

    broker_tests!(InMemory: streaming);
    broker_tests!(Redis: streaming);
}

/// A `Resiliency` policy on the component's inbound direction retries a
/// failed delivery inside daprd, long before the broker would redeliver
/// (here in 60 s).
#[tokio::test]
async fn inbound_resiliency_retries_delivery() {
    let t = topic("resilient");
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "pubsub.yaml",
        &component_yaml(
            "pubsub",
            "pubsub.in-memory",
            &[("redeliverInterval", "60s")],
        ),
    );
    write_resource(
        dir.path(),
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 100ms\n        maxRetries: 3\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: quick\n",
    );
    let (port, mut rx) = start_app(json!([sub(&t, "/fail")])).await;
    let daprd = DaprdBuilder::new("subscriber")
        .resources(dir.path())
        .arg("--app-port")
        .arg(port.to_string())
        .start()
        .await;
    let r = http(
        "POST",
        &daprd.url(&format!("/v1.0/publish/pubsub/{t}")),
        "x",
    )
    .await;
    assert_eq!(r.status, 204);
    for attempt in 1..=2 {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt} not delivered; logs:\n{}", daprd.logs()))
            .unwrap();
        assert_eq!(d.path, "/fail");
    }
}

/// Publish → delivery latency through one sidecar, sequential publishes
/// paced at ~1000/s. Not a pass/fail test: run with
/// `DAPRD_BIN=target/release/daprd cargo test -p daprd --test pubsub -- --ignored --nocapture measure`
/// (the debug binary otherwise).
#[tokio::test]
#[ignore]
async fn measure_publish_to_delivery() {
    use std::time::Instant;
    let bin = std::env::var("DAPRD_BIN").unwrap_or_else(|_| DAPRD.to_owned());
    for broker in [Broker::InMemory, Broker::Redis] {
        let t = topic("measure");
        let dir = tempfile::tempdir().unwrap();
        write_resource(dir.path(), "pubsub.yaml", &broker.component());
        let (port, mut rx) = start_app(json!([sub(&t, "/m")])).await;
        let (http_port, grpc_port) = (free_port(), free_port());
        let mut child = std::process::Command::new(&bin)
            .args(["--app-id", "measure", "--app-port", &port.to_string()])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            .args([
                "--dapr-listen-addresses",
                "127.0.0.1",
                "--log-level",
                "warn",
            ])
            .args(["--resources-path", &dir.path().display().to_string()])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{http_port}/v1.0/publish/pubsub/{t}");
        let ready = format!("http://127.0.0.1:{http_port}/v1.0/healthz");
        while request("GET", &ready, None, &[]).await.map(|r| r.status) != Ok(204) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = 2000usize;
        let mut latencies = Vec::with_capacity(n);
        let started = Instant::now();
        for i in 0..n {
            let due = started + Duration::from_micros(1000 * i as u64);
            tokio::time::sleep_until(due.into()).await;
            let sent = Instant::now();
            let r = request(
                "POST",
                &url,
                Some(b"{\"x\":1}".to_vec()),
                &[("content-type", "application/json")],
            )
            .await
            .unwrap();
            assert_eq!(r.status, 204);
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            latencies.push(sent.elapsed());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1000.0;
        println!(
            "{broker:?}: {n} events in {:.2}s ({:.0}/s), publish→delivery p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Bulk subscribe (`bulkSubscribe.enabled`): batches of CloudEvents in one
/// call per route, each entry acked on its own status.
mod bulk {
    use super::*;
    use dapr_rs_proto::runtime as pb;
    use dapr_rs_proto::server::{
        app_callback_alpha_server::{AppCallbackAlpha, AppCallbackAlphaServer},
        app_callback_server::{AppCallback, AppCallbackServer},
    };
    use pb::topic_event_response::TopicEventResponseStatus as Status;

    /// What the app answers for event `n`: 1 → RETRY the first time, 2 →
    /// DROP, else SUCCESS.
    fn verdict(n: i64, seen: &Mutex<HashMap<String, usize>>, id: &str) -> &'static str {
        let times = {
            let mut s = seen.lock().unwrap();
            let c = s.entry(id.to_owned()).or_default();
            *c += 1;
            *c
        };
        match (n, times) {
            (1, 1) => "RETRY",
            (2, _) => "DROP",
            _ => "SUCCESS",
        }
    }

    fn redis_component() -> String {
        component_yaml(
            "pubsub",
            "pubsub.redis",
            &[
                ("redisHost", &redis_addr()),
                ("processingTimeout", "1s"),
                ("redeliverInterval", "300ms"),
            ],
        )
    }

    /// Publishes `{"n":0..5}` in one bulk call.
    async fn publish_five(daprd: &Daprd, t: &str) {
        let entries: Vec<Value> = (0..5)
            .map(|i| json!({"entryId": i.to_string(), "event": {"n": i}, "contentType": "application/json"}))
            .collect();
        let r = http(
            "POST",
            &daprd.url(&format!("/v1.0-alpha1/publish/bulk/pubsub/{t}")),
            &serde_json::to_string(&entries).unwrap(),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// Collects (n, status) answers until `want` many arrived, and the
    /// dead-letter topic's events until `dlq_want` many did; then checks
    /// that nothing more comes (acked entries stay acked).
    async fn collect(
        rx: &mut mpsc::UnboundedReceiver<(i64, &'static str)>,
        dlq: &mut mpsc::UnboundedReceiver<i64>,
        want: usize,
        dlq_want: usize,
        daprd: &Daprd,
    ) -> (Vec<(i64, &'static str)>, Vec<i64>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut answers = Vec::new();
        while answers.len() < want {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(a)) => answers.push(a),
                _ => panic!(
                    "bulk deliveries incomplete: {answers:?}; daprd logs:\n{}",
                    daprd.logs()
                ),
            }
        }
        let mut dropped = Vec::new();
        while dropped.len() < dlq_want {
            match tokio::time::timeout_at(deadline, dlq.recv()).await {
                Ok(Some(n)) => dropped.push(n),
                _ => panic!("dead-letter topic got only {dropped:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while let Ok(a) = rx.try_recv() {
            answers.push(a);
        }
        while let Ok(n) = dlq.try_recv() {
            dropped.push(n);
        }
        answers.sort();
        dropped.sort();
        (answers, dropped)
    }

    /// HTTP app: the bulk envelope arrives at the route with Dapr's fields;
    /// with a dead-letter topic, the DROPped entry and (as in Dapr, which
    /// sends a bulk's failed entries there rather than back to the broker)
    /// the RETRYed one go to it, the others are acked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_app_gets_batches_with_per_entry_statuses() {
        let t = topic("bulk");
        let dlq_topic = topic("bulk-dlq");
        let subs = json!([
            {"pubsubname": "pubsub", "topic": t, "route": "/bulk", "deadLetterTopic": dlq_topic,
             "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 300}},
            {"pubsubname": "pubsub", "topic": dlq_topic, "route": "/dlq"}
        ]);
        #[derive(Clone)]
        struct S {
            subs: Value,
            answers: mpsc::UnboundedSender<(i64, &'static str)>,
            envelopes: mpsc::UnboundedSender<Value>,
            dlq: mpsc::UnboundedSender<i64>,
            seen: Arc<Mutex<HashMap<String, usize>>>,
        }
        async fn subscribe(State(s): State<S>) -> Json<Value> {
            Json(s.subs.clone())
        }
        async fn deliver(State(s): State<S>, req: Request) -> Response {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if path == "/dlq" {
                let _ = s.dlq.send(v["data"]["n"].as_i64().unwrap_or(-1));
                return StatusCode::OK.into_response();
            }
            let _ = s.envelopes.send(v.clone());
            let statuses: Vec<Value> = v["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let n = e["event"]["data"]["n"].as_i64().unwrap_or(-1);
                    let status = verdict(n, &s.seen, e["event"]["id"].as_str().unwrap_or_default());
                    let _ = s.answers.send((n, status));
                    json!({"entryId": e["entryId"], "status": status})
                })
                .collect();
            Json(json!({"statuses": statuses})).into_response()
        }
        let (answers, mut answers_rx) = mpsc::unbounded_channel();
        let (envelopes, mut envelopes_rx) = mpsc::unbounded_channel();
        let (dlq, mut dlq_rx) = mpsc::unbounded_channel();
        let state = S {
            subs,
            answers,
            envelopes,
            dlq,
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/dapr/subscribe", get(subscribe))
            .fallback(deliver)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        write_resource(dir.path(), "pubsub.yaml", &redis_component());
        let daprd = DaprdBuilder::new("bulk-http")
            .resources(dir.path())
            .arg("--app-port")
            .arg(port.to_string())
            .start()
            .await;
        wait_subscribed(&daprd, &[&t, &dlq_topic]).await;
        publish_five(&daprd, &t).await;
        let (answers, dropped) = collect(&mut answers_rx, &mut dlq_rx, 5, 2, &daprd).await;
        assert_eq!(
            answers,
            [
                (0, "SUCCESS"),
                (1, "RETRY"),
                (2, "DROP"),
                (3, "SUCCESS"),
                (4, "SUCCESS")
            ]
        );
        assert_eq!(dropped, [1, 2]);
        let first = envelopes_rx.recv().await.unwrap();
        assert_eq!(first["type"], "com.dapr.event.sent.bulk");
        assert_eq!(
            (first["topic"].as_str(), first["pubsubname"].as_str()),
            (Some(t.as_str()), Some("pubsub"))
        );
        assert!(!first["id"].as_str().unwrap_or_default().is_empty());
        let entries = first["entries"].as_array().unwrap();
        assert!(entries.len() >= 2, "not batched: {first}");
        for e in entries {
            assert!(!e["entryId"].as_str().unwrap_or_default().is_empty());
            assert_eq!(e["contentType"], "application/cloudevents+json");
            assert_eq!(e["event"]["topic"], t.as_str());
            assert_eq!(e["event"]["source"], "bulk-http");
        }
    }

    #[derive(Clone)]
    struct GrpcApp {
        topic: String,
        answers: mpsc::UnboundedSender<(i64, &'static str)>,
        dlq: mpsc::UnboundedSender<i64>,
        batch_sizes: mpsc::UnboundedSender<usize>,
        seen: Arc<Mutex<HashMap<String, usize>>>,
    }

    #[tonic::async_trait]
    impl AppCallback for GrpcApp {
        async fn list_topic_subscriptions(
            &self,
            _req: tonic::Request<()>,
        ) -> Result<tonic::Response<pb::ListTopicSubscriptionsResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::ListTopicSubscriptionsResponse {
                subscriptions: vec![
                    pb::TopicSubscription {
                        pubsub_name: "pubsub".into(),
                        topic: self.topic.clone(),
                        bulk_subscribe: Some(pb::BulkSubscribeConfig {
                            enabled: true,
                            max_messages_count: 10,
                            max_await_duration_ms: 300,
                        }),
                        ..Default::default()
                    },
                    pb::TopicSubscription {
                        pubsub_name: "pubsub".into(),
                        topic: format!("{}-dlq", self.topic),
                        ..Default::default()
                    },
                ],
            }))
        }

        async fn on_topic_event(
            &self,
            req: tonic::Request<pb::TopicEventRequest>,
        ) -> Result<tonic::Response<pb::TopicEventResponse>, tonic::Status> {
            let e = req.into_inner();
            let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
            let _ = self.dlq.send(v["n"].as_i64().unwrap_or(-1));
            Ok(tonic::Response::new(pb::TopicEventResponse {
                status: Status::Success as i32,
            }))
        }
    }

    /// Only the Alpha1 bulk callback: daprd falls back to it after
    /// `OnBulkTopicEvent` answers Unimplemented, as Dapr does.
    #[tonic::async_trait]
    impl AppCallbackAlpha for GrpcApp {
        async fn on_bulk_topic_event_alpha1(
            &self,
            req: tonic::Request<pb::TopicEventBulkRequest>,
        ) -> Result<tonic::Response<pb::TopicEventBulkResponse>, tonic::Status> {
            let r = req.into_inner();
            assert_eq!(r.r#type, "com.dapr.event.sent.bulk");
            assert_eq!(
                (r.topic.as_str(), r.pubsub_name.as_str()),
                (self.topic.as_str(), "pubsub")
            );
            let _ = self.batch_sizes.send(r.entries.len());
            let statuses = r
                .entries
                .iter()
                .map(|e| {
                    let Some(pb::topic_event_bulk_request_entry::Event::CloudEvent(ce)) = &e.event
                    else {
                        panic!("expected a CloudEvent entry: {e:?}");
                    };
                    let v: Value = serde_json::from_slice(&ce.data).unwrap_or(Value::Null);
                    let n = v["n"].as_i64().unwrap_or(-1);
                    let status = verdict(n, &self.seen, &ce.id);
                    let _ = self.answers.send((n, status));
                    let status = match status {
                        "RETRY" => Status::Retry,
                        "DROP" => Status::Drop,
                        _ => Status::Success,
                    };
                    pb::TopicEventBulkResponseEntry {
                        entry_id: e.entry_id.clone(),
                        status: status as i32,
                    }
                })
                .collect();
            Ok(tonic::Response::new(pb::TopicEventBulkResponse {
                statuses,
            }))
        }
    }

    /// gRPC app: `OnBulkTopicEventAlpha1` gets the batch as CloudEvent
    /// entries; without a dead-letter topic only the RETRYed entry comes
    /// back (broker redelivery), DROP acks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_app_gets_batches_with_per_entry_statuses() {
        let t = topic("bulkgrpc");
        let (answers, mut answers_rx) = mpsc::unbounded_channel();
        let (dlq, mut dlq_rx) = mpsc::unbounded_channel();
        let (batch_sizes, mut sizes_rx) = mpsc::unbounded_channel();
        let app = GrpcApp {
            topic: t.clone(),
            answers,
            dlq,
            batch_sizes,
            seen: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(AppCallbackServer::new(app.clone()))
                .add_service(AppCallbackAlphaServer::new(app))
                .serve_with_incoming(incoming)
                .await;
        });
        let dir = tempfile::tempdir().unwrap();
        write_resource(dir.path(), "pubsub.yaml", &redis_component());
        let daprd = DaprdBuilder::new("bulk-grpc")
            .resources(dir.path())
            .arg("--app-port")
            .arg(port.to_string())
            .arg("--app-protocol")
            .arg("grpc")
            .start()
            .await;
        wait_subscribed(&daprd, &[&t, &format!("{t}-dlq")]).await;
        publish_five(&daprd, &t).await;
        let (answers, dropped) = collect(&mut answers_rx, &mut dlq_rx, 6, 0, &daprd).await;
        assert_eq!(
            answers,
            [
                (0, "SUCCESS"),
                (1, "RETRY"),
                (1, "SUCCESS"),
                (2, "DROP"),
                (3, "SUCCESS"),
                (4, "SUCCESS")
            ]
        );
        assert!(dropped.is_empty(), "no dead-letter topic, yet {dropped:?}");
        assert!(
            sizes_rx.recv().await.unwrap() >= 2,
            "the first batch was not batched"
        );
    }
}

/// The transactional outbox on Redis state + Redis pub/sub: a committed
/// transaction publishes its upsert once; a failed one publishes nothing.
mod outbox {
    use super::*;

    /// The outbox's first phase fails (the pub/sub refuses the internal
    /// event: no JetStream stream captures that subject): the transaction
    /// answers Dapr's `ERR_PUBLISH_OUTBOX` (500 / gRPC Internal), and
    /// nothing is saved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_outbox_publish_answers_err_publish_outbox() {
        let dir = tempfile::tempdir().unwrap();
        write_resource(
            dir.path(),
            "pubsub.yaml",
            &component_yaml("pubsub", "pubsub.jetstream", &[("natsURL", &nats_url())]),
        );
        write_resource(
            dir.path(),
            "state.yaml",
            &component_yaml(
                "statestore",
                "state.in-memory",
                &[
                    ("outboxPublishPubsub", "pubsub"),
                    ("outboxPublishTopic", "uncaptured-orders"),
                ],
            ),
        );
        let daprd = DaprdBuilder::new("outbox-fail")
            .resources(dir.path())
            .start()
            .await;
        let r = http(
            "POST",
            &daprd.url("/v1.0/state/statestore/transaction"),
            &json!({"operations": [{"operation": "upsert",
                "request": {"key": "k1", "value": {"n": 1}}}]})
            .to_string(),
        )
        .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "ERR_PUBLISH_OUTBOX"),
            "{}",
            r.text()
        );
        let body = r.json();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("error while publishing outbox message: ")
                && !message.ends_with("message: "),
            "{body}"
        );
        assert_eq!(body["details"][0]["reason"], "DAPR_PUBSUB_OUTBOX", "{body}");
        assert_eq!(body["details"][0]["metadata"]["appID"], "outbox-fail");
        let saved = http("GET", &daprd.url("/v1.0/state/statestore/k1"), "").await;
        assert_eq!(saved.status, 204, "saved anyway: {}", saved.text());

        let mut client =
            dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(daprd.grpc_endpoint())
                .await
                .unwrap();
        use dapr::dapr::proto::{common::v1::StateItem, runtime::v1 as rpb};
        let err = client
            .execute_state_transaction(rpb::ExecuteStateTransactionRequest {
                store_name: "statestore".into(),
                operations: vec![rpb::TransactionalStateOperation {
                    operation_type: "upsert".into(),
                    request: Some(StateItem {
                        key: "k2".into(),
                        value: b"2".to_vec(),
                        ..Default::default()
                    }),
                }],
                metadata: HashMap::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
        assert!(
            err.message()
                .starts_with("error while publishing outbox message: "),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn event_if_and_only_if_the_transaction_commits() {
        let t = topic("outbox");
        let (port, mut rx) = start_app(json!([sub(&t, "/orders")])).await;
        let dir = tempfile::tempdir().unwrap();
        write_resource(
            dir.path(),
            "pubsub.yaml",
            &component_yaml(
                "pubsub",
                "pubsub.redis",
                &[
                    ("redisHost", &redis_addr()),
                    ("processingTimeout", "1s"),
                    ("redeliverInterval", "300ms"),
                ],
            ),
        );
        write_resource(
            dir.path(),
            "state.yaml",
            &component_yaml(
                "statestore",
                "state.redis",
                &[
                    ("redisHost", &redis_addr()),
                    ("outboxPublishPubsub", "pubsub"),
                    ("outboxPublishTopic", &t),
                    ("outboxDiscardWhenMissingState", "true"),
                ],
            ),
        );
        let daprd = DaprdBuilder::new("outbox-app")
            .resources(dir.path())
            .arg("--app-port")
            .arg(port.to_string())
            .start()
            .await;
        wait_subscribed(&daprd, &[&t]).await;
        let key = format!("order-{}", uuid::Uuid::new_v4().simple());
        let tx_url = daprd.url("/v1.0/state/statestore/transaction");

        // A transaction that fails (etag mismatch) publishes nothing.
        let r = http(
            "POST",
            &daprd.url("/v1.0/state/statestore"),
            &json!([{"key": key, "value": {"n": 0}}]).to_string(),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
        let r = http(
            "POST",
            &tx_url,
            &json!({"operations": [{"operation": "upsert",
                "request": {"key": key, "value": {"n": 1}, "etag": "9999"}}]})
            .to_string(),
        )
        .await;
        assert!(
            r.status >= 400,
            "the etag mismatch went through: {}",
            r.text()
        );
        let quiet = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
        assert!(
            quiet.is_err(),
            "a failed transaction published {:?}",
            quiet.unwrap()
        );

        // A committed one publishes its upsert, once.
        let r = http(
            "POST",
            &tx_url,
            &json!({"operations": [
                {"operation": "upsert", "request": {"key": key, "value": {"n": 2}}},
                {"operation": "delete", "request": {"key": "nothing-here"}}]})
            .to_string(),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
        let d = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no outbox event; daprd logs:\n{}", daprd.logs()))
            .unwrap();
        assert_eq!(d.path, "/orders");
        assert_eq!(d.event["data"], json!({"n": 2}));
        assert_eq!(d.event["topic"], t.as_str());
        assert_eq!(d.event["pubsubname"], "pubsub");
        assert_eq!(d.event["source"], "outbox-app");
        assert!(
            d.event["id"]
                .as_str()
                .unwrap_or_default()
                .starts_with("outbox-"),
            "{}",
            d.event
        );
        let again = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(again.is_err(), "delivered twice: {:?}", again.unwrap());
        let saved = http(
            "GET",
            &daprd.url(&format!("/v1.0/state/statestore/{key}")),
            "",
        )
        .await;
        assert_eq!(saved.json(), json!({"n": 2}));
    }
}

/// At least once, through real sidecars: a SIGKILLed subscriber sidecar,
/// competing replicas, 1 MiB messages, a broker that goes away and returns.
mod durability {
    use super::*;
    use std::{
        collections::BTreeSet,
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    };

    type Seen = mpsc::UnboundedSender<(&'static str, i64)>;

    #[derive(Clone)]
    struct CountingApp {
        subs: Value,
        tag: &'static str,
        hold: Arc<AtomicBool>,
        held: Arc<AtomicUsize>,
        tx: Seen,
    }

    /// An app whose route answers 200 and reports `(tag, data.n)`; while
    /// `hold` is set it keeps each delivery waiting (a stuck app: nothing is
    /// acknowledged) and, once released, fails it unreported.
    async fn counting_app(
        subs: Value,
        tag: &'static str,
        hold: Arc<AtomicBool>,
        held: Arc<AtomicUsize>,
        tx: Seen,
    ) -> u16 {
        async fn subscribe(State(s): State<CountingApp>) -> Json<Value> {
            Json(s.subs.clone())
        }
        async fn deliver(State(s): State<CountingApp>, req: Request) -> Response {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let event: Value = body
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            if s.hold.load(Ordering::SeqCst) {
                s.held.fetch_add(1, Ordering::SeqCst);
                while s.hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let _ =
                s.tx.send((s.tag, event["data"]["n"].as_i64().unwrap_or(-1)));
            StatusCode::OK.into_response()
        }
        let app = Router::new()
            .route("/dapr/subscribe", get(subscribe))
            .fallback(deliver)
            .with_state(CountingApp {
                subs,
                tag,
                hold,
                held,
                tx,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }

    async fn publish_n(daprd: &Daprd, t: &str, n: i64) -> Reply {
        request(
            "POST",
            &daprd.url(&format!("/v1.0/publish/pubsub/{t}")),
            Some(json!({ "n": n }).to_string().into_bytes()),
            &[("content-type", "application/json")],
        )
        .await
        .expect("publish request")
    }

    async fn publish_ok(daprd: &Daprd, t: &str, n: i64) {
        let r = publish_n(daprd, t, n).await;
        assert_eq!(r.status, 204, "publish {n}: {}", r.text());
    }

    /// Receives until every number in `want` was reported by an app whose
    /// tag `matches`; returns how often each tag reported each number.
    async fn collect_all(
        rx: &mut mpsc::UnboundedReceiver<(&'static str, i64)>,
        want: &BTreeSet<i64>,
        within: Duration,
        logs: impl Fn() -> String,
    ) -> Vec<(&'static str, i64)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        let missing = |got: &Vec<(&'static str, i64)>| {
            let seen: BTreeSet<i64> = got.iter().map(|(_, n)| *n).collect();
            want.difference(&seen).copied().collect::<Vec<_>>()
        };
        while !missing(&got).is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(d)) => got.push(d),
                _ => panic!(
                    "never delivered: {:?}; daprd logs:\n{}",
                    missing(&got),
                    logs()
                ),
            }
        }
        got
    }

    fn component_dir(broker: Broker, extra: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_resource(dir.path(), "pubsub.yaml", &broker.component_with(extra));
        dir
    }

    /// A subscriber sidecar SIGKILLed while its app holds messages
    /// unanswered: after a restart every message the publisher's sidecar
    /// acknowledged arrives — the held ones again, and the ones published
    /// while it was down. Only for brokers that keep a consumer's place:
    /// `pubsub.in-memory` dies with the process, and `pubsub.mqtt3` runs
    /// clean sessions (what a dead member held is dropped by the broker).
    async fn sidecar_kill_redelivers(broker: Broker) {
        broker.prepare().await;
        let t = topic("kill");
        // RabbitMQ: Dapr's default auto-deletes the queue with its last
        // consumer, taking its messages along.
        let dir = component_dir(
            broker,
            &[("deletedWhenUnused", "false")][..usize::from(broker == Broker::RabbitMq)],
        );
        let (hold, held) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let port = counting_app(
            json!([sub(&t, "/c")]),
            "sub",
            hold.clone(),
            held.clone(),
            tx,
        )
        .await;
        let publisher = DaprdBuilder::new("kill-pub")
            .resources(dir.path())
            .start()
            .await;
        let start_subscriber = || {
            DaprdBuilder::new("kill-sub")
                .resources(dir.path())
                .arg("--app-port")
                .arg(port.to_string())
                .start()
        };
        let mut subscriber = start_subscriber().await;
        wait_subscribed(&subscriber, &[&t]).await;
        for n in 0..10 {
            publish_ok(&publisher, &t, n).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while held.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing reached the app; logs:\n{}",
                subscriber.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut child = subscriber.child.take().expect("running");
        child.kill().expect("SIGKILL daprd");
        let _ = child.wait();
        hold.store(false, Ordering::SeqCst);
        for n in 10..20 {
            publish_ok(&publisher, &t, n).await;
        }
        let subscriber = start_subscriber().await;
        let want: BTreeSet<i64> = (0..20).collect();
        collect_all(&mut rx, &want, Duration::from_secs(30), || {
            subscriber.logs()
        })
        .await;
    }

    /// Two replicas of one app id compete (each message to exactly one of
    /// them) while another app id gets every message. Not for
    /// `pubsub.in-memory`: its topics live inside one sidecar.
    async fn replicas_compete_other_apps_get_all(broker: Broker) {
        broker.prepare().await;
        let t = topic("replicas");
        let dir = component_dir(broker, &[]);
        // One message at a time per replica, so both get a share.
        let subs = json!([{"pubsubname": "pubsub", "topic": t, "route": "/c",
                           "metadata": {"concurrency": "1", "queueDepth": "1"}}]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let no_hold = || (Arc::new(AtomicBool::new(false)), Arc::default());
        let mut sidecars = Vec::new();
        for (tag, app_id) in [("w1", "workers"), ("w2", "workers"), ("audit", "audit")] {
            let (hold, held) = no_hold();
            let port = counting_app(subs.clone(), tag, hold, held, tx.clone()).await;
            let d = DaprdBuilder::new(app_id)
                .resources(dir.path())
                .arg("--app-port")
                .arg(port.to_string())
                .start()
                .await;
            wait_subscribed(&d, &[&t]).await;
            sidecars.push(d);
        }
        const N: i64 = 40;
        for n in 0..N {
            publish_ok(&sidecars[2], &t, n).await;
        }
        let want: BTreeSet<i64> = (0..N).collect();
        let logs = || {
            sidecars
                .iter()
                .map(Daprd::logs)
                .collect::<Vec<_>>()
                .join("\n----\n")
        };
        let mut got: Vec<(&'static str, i64)> = Vec::new();
        // Until the workers together and the audit app each saw all of them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = |f: &dyn Fn(&str) -> bool| -> BTreeSet<i64> {
                got.iter()
                    .filter(|(tag, _)| f(tag))
                    .map(|(_, n)| *n)
                    .collect()
            };
            if seen(&|t| t != "audit") == want && seen(&|t| t == "audit") == want {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(d)) => got.push(d),
                _ => panic!("incomplete deliveries {got:?}; logs:\n{}", logs()),
            }
        }
        // Nothing comes twice.
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await {
            got.push(d);
        }
        let count = |tag: &str| got.iter().filter(|(t, _)| *t == tag).count();
        let (w1, w2, audit) = (count("w1"), count("w2"), count("audit"));
        assert_eq!(w1 + w2, N as usize, "a worker message came twice: {got:?}");
        assert_eq!(audit, N as usize, "the audit app got duplicates: {got:?}");
        assert!(w1 > 0 && w2 > 0, "one replica got everything ({w1}/{w2})");
    }

    /// A 1 MiB body travels publisher → broker → app intact.
    async fn one_mib_message(broker: Broker) {
        let t = topic("big");
        let mut env = Env::start(broker, json!([sub(&t, "/big")]), &[]).await;
        let body: String = (0..1usize << 20)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let r = env
            .publish(&t, &body, &[("content-type", "text/plain")], "")
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
        let d = env.next().await;
        let data = d.event["data"].as_str().unwrap_or_default();
        assert_eq!(data.len(), body.len());
        assert!(data == body, "payload corrupted");
    }

    broker_tests!(InMemory: one_mib_message);
    broker_tests!(Redis: one_mib_message, sidecar_kill_redelivers,
        replicas_compete_other_apps_get_all);
    broker_tests!(JetStream: one_mib_message, sidecar_kill_redelivers,
        replicas_compete_other_apps_get_all);
    broker_tests!(RabbitMq: one_mib_message, sidecar_kill_redelivers,
        replicas_compete_other_apps_get_all);
    broker_tests!(Mqtt3: one_mib_message, replicas_compete_other_apps_get_all);

    /// A Redis server of the test's own on a free port, persisting every
    /// write (AOF, fsync always), so it can be killed and restarted.
    struct OwnRedis {
        child: Option<std::process::Child>,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl OwnRedis {
        async fn start() -> Self {
            let mut r = Self {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().unwrap(),
            };
            r.run().await;
            r
        }

        async fn run(&mut self) {
            let child = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (scripts/test-services.sh installs it)");
            self.child = Some(child);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// The broker goes down: a publish fails with ERR_PUBSUB_PUBLISH_MESSAGE
    /// within the Resiliency timeout. It comes back: publishing works again
    /// and the subscriber, reconnecting by itself, gets every message that
    /// was acknowledged to the publisher.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_down_then_back() {
        let mut redis = OwnRedis::start().await;
        let t = topic("down");
        let dir = tempfile::tempdir().unwrap();
        write_resource(
            dir.path(),
            "pubsub.yaml",
            &component_yaml(
                "pubsub",
                "pubsub.redis",
                &[
                    ("redisHost", &format!("127.0.0.1:{}", redis.port)),
                    ("processingTimeout", "1s"),
                    ("redeliverInterval", "300ms"),
                ],
            ),
        );
        write_resource(
            dir.path(),
            "resiliency.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      publish: 2s\n  targets:\n    components:\n      pubsub:\n        outbound:\n          timeout: publish\n",
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let port = counting_app(
            json!([sub(&t, "/c")]),
            "app",
            Arc::new(AtomicBool::new(false)),
            Arc::default(),
            tx,
        )
        .await;
        let daprd = DaprdBuilder::new("down-app")
            .resources(dir.path())
            .arg("--app-port")
            .arg(port.to_string())
            .start()
            .await;
        wait_subscribed(&daprd, &[&t]).await;
        let mut acked: BTreeSet<i64> = BTreeSet::new();
        for n in 0..3 {
            publish_ok(&daprd, &t, n).await;
            acked.insert(n);
        }
        collect_all(&mut rx, &acked, Duration::from_secs(15), || daprd.logs()).await;
        let before_outage = acked.len();

        redis.kill();
        let started = std::time::Instant::now();
        let r = publish_n(&daprd, &t, 100).await;
        let took = started.elapsed();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "ERR_PUBSUB_PUBLISH_MESSAGE"),
            "{}",
            r.text()
        );
        assert!(
            took < Duration::from_secs(4),
            "publish failed only after {took:?}"
        );

        redis.run().await;
        // Publishing recovers by itself; a refused publish is not a loss.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut n = 3;
        while acked.len() < 8 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not recover; logs:\n{}",
                daprd.logs()
            );
            if publish_n(&daprd, &t, n).await.status == 204 {
                acked.insert(n);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n += 1;
        }
        // Those acknowledged after the outage (the earlier ones arrived).
        let after: BTreeSet<i64> = acked.iter().skip(before_outage).copied().collect();
        collect_all(&mut rx, &after, Duration::from_secs(20), || daprd.logs()).await;
    }
}
