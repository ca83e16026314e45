//! CloudEvents 1.0 envelopes in Dapr's shape: the fields Dapr writes, its
//! defaults, `data` vs `data_base64` by content type, and `expiration` for
//! `ttlInSeconds`.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

pub const CLOUD_EVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";
pub const DEFAULT_SOURCE: &str = "Dapr";
pub const SPEC_VERSION: &str = "1.0";
pub const DEFAULT_DATA_CONTENT_TYPE: &str = "text/plain";

pub const ID: &str = "id";
pub const SOURCE: &str = "source";
pub const TYPE: &str = "type";
pub const SPECVERSION: &str = "specversion";
pub const DATA_CONTENT_TYPE: &str = "datacontenttype";
pub const DATA: &str = "data";
pub const DATA_BASE64: &str = "data_base64";
pub const SUBJECT: &str = "subject";
pub const TOPIC: &str = "topic";
pub const PUBSUB_NAME: &str = "pubsubname";
pub const TRACE_ID: &str = "traceid";
pub const TRACE_PARENT: &str = "traceparent";
pub const TRACE_STATE: &str = "tracestate";
pub const TIME: &str = "time";
pub const EXPIRATION: &str = "expiration";

fn has_prefix(content_type: &str, target: &str) -> bool {
    content_type.to_ascii_lowercase().starts_with(target)
}

pub fn is_cloud_event_content_type(ct: &str) -> bool {
    has_prefix(ct, CLOUD_EVENT_CONTENT_TYPE)
}

pub fn is_json_content_type(ct: &str) -> bool {
    has_prefix(ct, "application/json")
}

pub fn is_binary_content_type(ct: &str) -> bool {
    has_prefix(ct, "application/octet-stream")
}

pub fn is_string_content_type(ct: &str) -> bool {
    has_prefix(ct, "text/") || has_prefix(ct, "application/xml")
}

/// The fields of a new envelope; empty strings take Dapr's defaults.
#[derive(Debug, Clone, Default)]
pub struct EnvelopeFields {
    pub id: String,
    pub source: String,
    pub type_: String,
    pub subject: String,
    pub topic: String,
    pub pubsub_name: String,
    pub data_content_type: String,
    pub trace_parent: String,
    pub trace_state: String,
}

/// Wraps `data` in a new envelope. JSON content that does not parse is
/// carried as a string, as Dapr does.
pub fn new_envelope(f: EnvelopeFields, data: &[u8]) -> Map<String, Value> {
    let or = |v: String, d: &str| if v.is_empty() { d.to_owned() } else { v };
    let id = if f.id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        f.id
    };
    let content_type = or(f.data_content_type, DEFAULT_DATA_CONTENT_TYPE);
    let (field, value) = if is_json_content_type(&content_type) {
        let v = serde_json::from_slice(data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
        (DATA, v)
    } else if is_binary_content_type(&content_type) {
        (
            DATA_BASE64,
            Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
        )
    } else {
        (
            DATA,
            Value::String(String::from_utf8_lossy(data).into_owned()),
        )
    };
    let mut ce = Map::new();
    let mut put = |k: &str, v: String| {
        ce.insert(k.to_owned(), Value::String(v));
    };
    put(ID, id);
    put(SPECVERSION, SPEC_VERSION.to_owned());
    put(DATA_CONTENT_TYPE, content_type);
    put(SOURCE, or(f.source, DEFAULT_SOURCE));
    put(TYPE, or(f.type_, DEFAULT_TYPE));
    put(TOPIC, f.topic);
    put(PUBSUB_NAME, f.pubsub_name);
    put(TRACE_ID, f.trace_parent.clone());
    put(TRACE_PARENT, f.trace_parent);
    put(TRACE_STATE, f.trace_state);
    put(TIME, Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    if !f.subject.is_empty() {
        put(SUBJECT, f.subject);
    }
    ce.insert(field.to_owned(), value);
    ce
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the CloudEvent is not a JSON object: {0}")]
    NotAnObject(String),
}

/// An app-made CloudEvent (`application/cloudevents+json`): Dapr sets topic,
/// pubsub and trace fields and fills missing required attributes.
pub fn from_cloud_event(
    bytes: &[u8],
    topic: &str,
    pubsub_name: &str,
    trace_parent: &str,
    trace_state: &str,
) -> Result<Map<String, Value>, EnvelopeError> {
    let mut ce = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return Err(EnvelopeError::NotAnObject(format!("got {other}"))),
        Err(e) => return Err(EnvelopeError::NotAnObject(e.to_string())),
    };
    let s = |v: &str| Value::String(v.to_owned());
    ce.insert(TOPIC.into(), s(topic));
    ce.insert(PUBSUB_NAME.into(), s(pubsub_name));
    if !trace_parent.is_empty() || !ce.contains_key(TRACE_PARENT) {
        ce.insert(TRACE_ID.into(), s(trace_parent));
        ce.insert(TRACE_PARENT.into(), s(trace_parent));
    }
    if !trace_state.is_empty() || !ce.contains_key(TRACE_STATE) {
        ce.insert(TRACE_STATE.into(), s(trace_state));
    }
    ce.entry(SOURCE).or_insert_with(|| s(DEFAULT_SOURCE));
    ce.entry(TYPE).or_insert_with(|| s(DEFAULT_TYPE));
    ce.entry(SPECVERSION).or_insert_with(|| s(SPEC_VERSION));
    // Required by CloudEvents 1.0; subscribers rely on it.
    ce.entry(ID)
        .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
    Ok(ce)
}

/// A message published with `rawPayload=true`, as a subscriber without raw
/// payload handling sees it: a fresh envelope with the bytes in `data_base64`.
pub fn from_raw_payload(data: &[u8], topic: &str, pubsub_name: &str) -> Map<String, Value> {
    let mut ce = Map::new();
    let s = |v: &str| Value::String(v.to_owned());
    ce.insert(ID.into(), Value::String(uuid::Uuid::new_v4().to_string()));
    ce.insert(SPECVERSION.into(), s(SPEC_VERSION));
    ce.insert(DATA_CONTENT_TYPE.into(), s("application/octet-stream"));
    ce.insert(SOURCE.into(), s(""));
    ce.insert(TYPE.into(), s(""));
    ce.insert(TOPIC.into(), s(topic));
    ce.insert(PUBSUB_NAME.into(), s(pubsub_name));
    ce.insert(
        DATA_BASE64.into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
    );
    ce
}

/// Sets `expiration` to now + `ttl_seconds`.
pub fn apply_ttl(ce: &mut Map<String, Value>, ttl_seconds: i64, now: DateTime<Utc>) {
    let at = now + chrono::Duration::seconds(ttl_seconds);
    ce.insert(
        EXPIRATION.into(),
        Value::String(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
}

/// Whether the envelope's `expiration` has passed.
pub fn has_expired(ce: &Map<String, Value>, now: DateTime<Utc>) -> bool {
    ce.get(EXPIRATION)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|at| at.with_timezone(&Utc) <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(ct: &str) -> EnvelopeFields {
        EnvelopeFields {
            source: "app1".into(),
            topic: "orders".into(),
            pubsub_name: "pubsub".into(),
            data_content_type: ct.into(),
            trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_data_is_embedded() {
        let ce = new_envelope(fields("application/json"), br#"{"a":1}"#);
        assert_eq!(ce[DATA]["a"], 1);
        assert_eq!(ce[TYPE], DEFAULT_TYPE);
        assert_eq!(ce[SPECVERSION], "1.0");
        assert_eq!(ce[SOURCE], "app1");
        assert_eq!(ce[TRACE_ID], ce[TRACE_PARENT]);
        assert!(!ce[ID].as_str().unwrap().is_empty());
    }

    #[test]
    fn binary_goes_to_data_base64_and_text_stays_text() {
        let ce = new_envelope(fields("application/octet-stream"), &[0, 1, 255]);
        assert_eq!(ce[DATA_BASE64], "AAH/");
        assert!(!ce.contains_key(DATA));
        let ce = new_envelope(fields(""), b"hello");
        assert_eq!(ce[DATA], "hello");
        assert_eq!(ce[DATA_CONTENT_TYPE], "text/plain");
        let ce = new_envelope(fields("application/json"), b"not json");
        assert_eq!(ce[DATA], "not json");
    }

    #[test]
    fn cloud_event_pass_through_fills_defaults() {
        let ce = from_cloud_event(
            br#"{"id":"x","data":{"k":"v"},"type":"custom"}"#,
            "t",
            "ps",
            "",
            "",
        )
        .unwrap();
        assert_eq!(ce[ID], "x");
        assert_eq!(ce[TYPE], "custom");
        assert_eq!(ce[SOURCE], DEFAULT_SOURCE);
        assert_eq!(ce[SPECVERSION], "1.0");
        assert_eq!(ce[TOPIC], "t");
        assert_eq!(ce[PUBSUB_NAME], "ps");
        assert!(from_cloud_event(b"[1]", "t", "ps", "", "").is_err());
    }

    #[test]
    fn ttl_expiration() {
        let now = Utc::now();
        let mut ce = new_envelope(fields(""), b"x");
        apply_ttl(&mut ce, 10, now);
        assert!(!has_expired(&ce, now));
        assert!(has_expired(&ce, now + chrono::Duration::seconds(11)));
    }
}
