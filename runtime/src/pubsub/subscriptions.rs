//! Where subscriptions come from: `Subscription` resources (v1alpha1 and
//! v2alpha1) in the resources paths, and the app itself (`GET
//! /dapr/subscribe`, or `ListTopicSubscriptions` for gRPC apps).

use std::collections::HashMap;

use dapr_crds::subscription::{SUBSCRIPTION_KIND, subscription_from_document, v2alpha1};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::routing::{RouteError, Rule};
use crate::{appchannel::AppChannel, options::AppProtocol, resources::Sourced};

/// One topic subscription, whatever declared it.
#[derive(Debug, Clone)]
pub struct TopicSubscription {
    pub pubsub: String,
    pub topic: String,
    pub metadata: HashMap<String, String>,
    /// Rules in order; a default route is a last rule without `match`.
    pub rules: Vec<Rule>,
    pub dead_letter_topic: String,
    pub bulk: Option<BulkSettings>,
    /// `declarative <file>` or `programmatic`, for logs.
    pub origin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSettings {
    pub max_messages_count: i32,
    pub max_await_duration_ms: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("invalid Subscription in {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error(transparent)]
    Route(#[from] RouteError),
}

fn rules(
    rules: impl IntoIterator<Item = (String, String)>,
    default: &str,
) -> Result<Vec<Rule>, RouteError> {
    let mut out = Vec::new();
    for (m, p) in rules {
        out.push(Rule::new(&m, &p)?);
    }
    if !default.is_empty() {
        out.push(Rule::new("", default)?);
    }
    Ok(out)
}

fn bulk(
    enabled: bool,
    max_messages_count: i32,
    max_await_duration_ms: i32,
) -> Option<BulkSettings> {
    enabled.then_some(BulkSettings {
        max_messages_count,
        max_await_duration_ms,
    })
}

/// The `Subscription` resources that apply to `app_id`.
pub fn declarative(
    others: &[Sourced<(String, serde_json::Value)>],
    app_id: &str,
) -> Result<Vec<TopicSubscription>, SubscriptionError> {
    let mut out = Vec::new();
    for doc in others.iter().filter(|o| o.resource.0 == SUBSCRIPTION_KIND) {
        let file = doc.file.display().to_string();
        let sub: v2alpha1::Subscription =
            subscription_from_document(&doc.resource.1).map_err(|e| {
                SubscriptionError::Invalid {
                    file: file.clone(),
                    reason: e.to_string(),
                }
            })?;
        if !sub.in_scope(app_id) {
            continue;
        }
        let spec = sub.spec;
        if spec.pubsubname.is_empty() || spec.topic.is_empty() {
            return Err(SubscriptionError::Invalid {
                file,
                reason: format!(
                    "subscription '{}' needs spec.pubsubname and spec.topic",
                    sub.metadata.name
                ),
            });
        }
        let rules = rules(
            spec.routes.rules.into_iter().map(|r| (r.match_, r.path)),
            &spec.routes.default,
        )
        .map_err(|e| SubscriptionError::Invalid {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        if rules.is_empty() {
            tracing::warn!(file = %file, topic = %spec.topic, "subscription has no routes; ignored");
            continue;
        }
        out.push(TopicSubscription {
            pubsub: spec.pubsubname,
            topic: spec.topic,
            metadata: spec.metadata.into_iter().collect(),
            rules,
            dead_letter_topic: spec.dead_letter_topic,
            bulk: bulk(
                spec.bulk_subscribe.enabled,
                spec.bulk_subscribe.max_messages_count,
                spec.bulk_subscribe.max_await_duration_ms,
            ),
            origin: format!("declarative {file}"),
        });
    }
    Ok(out)
}

/// `GET /dapr/subscribe`'s items.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionJson {
    #[serde(default, rename = "pubsubname")]
    pubsub_name: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    dead_letter_topic: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    route: String,
    #[serde(default)]
    routes: RoutesJson,
    #[serde(default)]
    bulk_subscribe: BulkJson,
}

#[derive(Debug, Default, Deserialize)]
struct RoutesJson {
    #[serde(default)]
    rules: Vec<RuleJson>,
    #[serde(default)]
    default: String,
}

#[derive(Debug, Deserialize)]
struct RuleJson {
    #[serde(default, rename = "match")]
    match_: String,
    #[serde(default)]
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkJson {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    max_messages_count: i32,
    #[serde(default)]
    max_await_duration_ms: i32,
}

/// Parses the app's answer to `GET /dapr/subscribe`.
pub fn parse_http_subscriptions(body: &[u8]) -> Result<Vec<TopicSubscription>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let items: Vec<SubscriptionJson> =
        serde_json::from_slice(body).map_err(|e| format!("error getting topics from app: {e}"))?;
    let mut out = Vec::new();
    for si in items {
        let default = if si.routes.default.is_empty() {
            si.route.as_str()
        } else {
            si.routes.default.as_str()
        };
        let rules = rules(
            si.routes
                .rules
                .iter()
                .map(|r| (r.match_.clone(), r.path.clone())),
            default,
        )
        .map_err(|e| e.to_string())?;
        if rules.is_empty() {
            tracing::warn!(topic = %si.topic, "topic has no routes; removed from the subscriptions");
            continue;
        }
        out.push(TopicSubscription {
            pubsub: si.pubsub_name,
            topic: si.topic,
            metadata: si.metadata,
            rules,
            dead_letter_topic: si.dead_letter_topic,
            bulk: bulk(
                si.bulk_subscribe.enabled,
                si.bulk_subscribe.max_messages_count,
                si.bulk_subscribe.max_await_duration_ms,
            ),
            origin: "programmatic".to_owned(),
        });
    }
    Ok(out)
}

/// Asks the app for its subscriptions. Unreachable apps are asked again a
/// few times (Dapr's initialization retries); a 404 / `Unimplemented` means
/// none.
pub async fn programmatic(app: &AppChannel, app_id: &str) -> Vec<TopicSubscription> {
    for attempt in 1..=3 {
        let ask = async {
            match app.protocol {
                AppProtocol::Grpc | AppProtocol::Grpcs => grpc(app).await,
                _ => http(app, app_id).await,
            }
        };
        // An app that never answers must not hold daprd's readiness.
        let res = tokio::time::timeout(ASK_TIMEOUT, ask)
            .await
            .unwrap_or_else(|_| Err(Ask::Invalid(format!("no answer within {ASK_TIMEOUT:?}"))));
        match res {
            Ok(subs) => return subs,
            Err(Ask::Unreachable(e)) if attempt < 3 => {
                tracing::debug!(error = %e, "asking the app for subscriptions; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(Ask::Unreachable(e) | Ask::Invalid(e)) => {
                tracing::error!("cannot read the app's subscriptions: {e}");
                return Vec::new();
            }
        }
    }
    Vec::new()
}

const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

enum Ask {
    Unreachable(String),
    Invalid(String),
}

async fn http(app: &AppChannel, app_id: &str) -> Result<Vec<TopicSubscription>, Ask> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(app_id) {
        headers.insert("dapr-app-id", v);
    }
    let resp = app
        .call_http(
            Method::GET,
            "/dapr/subscribe",
            &headers,
            axum::body::Body::empty(),
        )
        .await
        .map_err(|e| Ask::Unreachable(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Ask::Unreachable(e.to_string()))?
        .to_bytes();
    match status {
        StatusCode::OK => parse_http_subscriptions(&body).map_err(Ask::Invalid),
        StatusCode::NOT_FOUND => Ok(Vec::new()),
        other => {
            tracing::error!(
                "app returned http status code {} from subscription endpoint",
                other.as_u16()
            );
            Ok(Vec::new())
        }
    }
}

async fn grpc(app: &AppChannel) -> Result<Vec<TopicSubscription>, Ask> {
    let mut client = super::delivery::app_callback_client(app).map_err(Ask::Unreachable)?;
    let resp = match client
        .list_topic_subscriptions(super::delivery::with_app_token(()))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Vec::new()),
        Err(s) if s.code() == tonic::Code::Unavailable => {
            return Err(Ask::Unreachable(s.message().to_owned()));
        }
        Err(s) => return Err(Ask::Invalid(s.message().to_owned())),
    };
    let mut out = Vec::new();
    for s in resp.subscriptions {
        let routes = s.routes.unwrap_or_default();
        let mut list = rules(
            routes
                .rules
                .iter()
                .map(|r| (r.r#match.clone(), r.path.clone())),
            &routes.default,
        )
        .map_err(|e| Ask::Invalid(e.to_string()))?;
        // Without routes a gRPC app gets the empty path (the SDK dispatches
        // OnTopicEvent on the topic), as in Dapr.
        if list.is_empty() {
            list.push(Rule::new("", "").map_err(|e| Ask::Invalid(e.to_string()))?);
        }
        let b = s.bulk_subscribe.unwrap_or_default();
        out.push(TopicSubscription {
            pubsub: s.pubsub_name,
            topic: s.topic,
            metadata: s.metadata,
            rules: list,
            dead_letter_topic: s.dead_letter_topic,
            bulk: bulk(b.enabled, b.max_messages_count, b.max_await_duration_ms),
            origin: "programmatic".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_subscriptions_v1_and_v2_shapes() {
        let body = br#"[
          {"pubsubname":"ps","topic":"a","route":"/a","deadLetterTopic":"dlq","metadata":{"rawPayload":"true"}},
          {"pubsubname":"ps","topic":"b","routes":{"rules":[{"match":"event.type == \"x\"","path":"/x"}],"default":"/b"}},
          {"pubsubname":"ps","topic":"none"}
        ]"#;
        let subs = parse_http_subscriptions(body).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].rules[0].path, "/a");
        assert_eq!(subs[0].dead_letter_topic, "dlq");
        assert_eq!(subs[1].rules.len(), 2);
        assert_eq!(subs[1].rules[1].path, "/b");
        assert!(parse_http_subscriptions(b"{").is_err());
        assert!(parse_http_subscriptions(b"").unwrap().is_empty());
    }

    #[test]
    fn declarative_scopes_and_versions() {
        let doc = |v: serde_json::Value| Sourced {
            file: "s.yaml".into(),
            resource: ("Subscription".to_owned(), v),
        };
        let docs = vec![
            doc(
                serde_json::json!({"apiVersion":"dapr.io/v1alpha1","kind":"Subscription",
                "metadata":{"name":"a"},"spec":{"pubsubname":"ps","topic":"t1","route":"/r1"},"scopes":["app"]}),
            ),
            doc(
                serde_json::json!({"apiVersion":"dapr.io/v2alpha1","kind":"Subscription",
                "metadata":{"name":"b"},"spec":{"pubsubname":"ps","topic":"t2",
                "routes":{"rules":[{"match":"event.type == \"a\"","path":"/a"}],"default":"/d"}}}),
            ),
            doc(
                serde_json::json!({"apiVersion":"dapr.io/v1alpha1","kind":"Subscription",
                "metadata":{"name":"c"},"spec":{"pubsubname":"ps","topic":"t3","route":"/r3"},"scopes":["other"]}),
            ),
        ];
        let subs = declarative(&docs, "app").unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].rules[0].path, "/r1");
        assert_eq!(subs[1].rules.len(), 2);
        let bad = vec![doc(
            serde_json::json!({"apiVersion":"dapr.io/v2alpha1","kind":"Subscription",
            "metadata":{"name":"x"},"spec":{"pubsubname":"ps","topic":"t",
            "routes":{"rules":[{"match":"event.type ==","path":"/a"}]}}}),
        )];
        assert!(declarative(&bad, "app").is_err());
    }
}
