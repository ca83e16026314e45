//! `/v1.0/state` routes.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use bytes::Bytes;
use dapr_components::state::StateItem;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, value::RawValue};

use super::{AppState, Body, PathParams, query_metadata, query_param};
use crate::{
    error::ApiError,
    state::{
        DeleteItem, SaveItem, TxOperation, WriteOptions, parse_concurrency, parse_consistency,
    },
};

#[derive(Debug, Deserialize)]
struct SaveStateItem {
    key: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "string_or_number")]
    etag: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    metadata: HashMap<String, String>,
    #[serde(default)]
    options: Option<StateOptionsJson>,
}

#[derive(Debug, Default, Deserialize)]
struct StateOptionsJson {
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    consistency: String,
}

impl StateOptionsJson {
    fn parse(self) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            concurrency: parse_concurrency(&self.concurrency)?,
            consistency: parse_consistency(&self.consistency)?,
        })
    }
}

/// Dapr's metadata maps hold strings; scalars are accepted and stringified.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    let raw: Option<HashMap<String, Value>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "metadata '{k}' must be a string"
            ))),
        })
        .collect()
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(serde::de::Error::custom("etag must be a string")),
    })
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedRequest(e.to_string()))
}

impl SaveStateItem {
    fn into_save_item(self) -> Result<SaveItem, ApiError> {
        // The value is stored as the JSON text the caller sent, so a JSON
        // string keeps its quotes, as with Dapr.
        let value = match &self.value {
            Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
            None => Bytes::from_static(b"null"),
        };
        Ok(SaveItem {
            key: self.key,
            value,
            etag: self.etag,
            options: self.options.unwrap_or_default().parse()?,
            metadata: self.metadata,
            // HTTP values are JSON text; stores with a JSON column (MySQL) use it.
            content_type: Some("application/json".to_owned()),
        })
    }
}

pub async fn save(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(q): RawQuery,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let items: Vec<SaveStateItem> = parse_json(&body)?;
    let query_md = query_metadata(q.as_deref());
    let items = items
        .into_iter()
        .map(|i| {
            let mut item = i.into_save_item()?;
            for (k, v) in &query_md {
                item.metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Ok(item)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    sidecar.state.save(&store, items).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(sidecar): State<AppState>,
    PathParams((store, key)): PathParams<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let consistency =
        parse_consistency(&query_param(q.as_deref(), "consistency").unwrap_or_default())?;
    let item = sidecar
        .state
        .get(&store, &key, consistency, query_metadata(q.as_deref()))
        .await?;
    let Some(item) = item.filter(|i| !i.value.is_empty()) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut headers = HeaderMap::new();
    let content_type = item.content_type.as_deref().unwrap_or("application/json");
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(etag) = item
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        headers.insert(header::ETAG, etag);
    }
    for (k, v) in &item.metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(format!("metadata.{k}")),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    Ok((StatusCode::OK, headers, item.value).into_response())
}

pub async fn delete(
    State(sidecar): State<AppState>,
    PathParams((store, key)): PathParams<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let etag = match headers.get(header::IF_MATCH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("If-Match must be ASCII".into()))?
                .trim_matches('"')
                .to_owned(),
        ),
        None => None,
    };
    let options = WriteOptions {
        concurrency: parse_concurrency(
            &query_param(q.as_deref(), "concurrency").unwrap_or_default(),
        )?,
        consistency: parse_consistency(
            &query_param(q.as_deref(), "consistency").unwrap_or_default(),
        )?,
    };
    sidecar
        .state
        .delete(&store, &key, etag, options, query_metadata(q.as_deref()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct BulkGetBody {
    keys: Vec<String>,
    #[serde(default)]
    parallelism: usize,
}

/// A stored value as JSON: itself when it is JSON, else a string (base64 for
/// binary values that are not UTF-8).
fn value_as_json(bytes: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

fn item_json(key: &str, item: &StateItem) -> Value {
    let mut out = serde_json::json!({ "key": key, "data": value_as_json(&item.value) });
    if let Some(etag) = &item.etag {
        out["etag"] = Value::String(etag.clone());
    }
    if !item.metadata.is_empty() {
        out["metadata"] = serde_json::json!(item.metadata);
    }
    out
}

pub async fn bulk_get(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(q): RawQuery,
    Body(body): Body,
) -> Result<Json<Vec<Value>>, ApiError> {
    let req: BulkGetBody = parse_json(&body)?;
    let items = sidecar
        .state
        .bulk_get(
            &store,
            &req.keys,
            req.parallelism,
            query_metadata(q.as_deref()),
        )
        .await?;
    Ok(Json(
        items
            .into_iter()
            .map(|i| match i.result {
                Ok(Some(item)) if !item.value.is_empty() => item_json(&i.key, &item),
                Ok(_) => serde_json::json!({ "key": i.key }),
                Err(e) => serde_json::json!({ "key": i.key, "error": e.to_string() }),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct TransactionBody {
    operations: Vec<TransactionOpJson>,
    #[serde(default, deserialize_with = "string_map")]
    metadata: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct TransactionOpJson {
    operation: String,
    request: SaveStateItem,
}

pub async fn transaction(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    RawQuery(q): RawQuery,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let req: TransactionBody = parse_json(&body)?;
    let mut metadata = query_metadata(q.as_deref());
    metadata.extend(req.metadata);
    let ops = req
        .operations
        .into_iter()
        .map(|op| match op.operation.as_str() {
            "upsert" => Ok(TxOperation::Upsert(op.request.into_save_item()?)),
            "delete" => Ok(TxOperation::Delete(DeleteItem {
                key: op.request.key,
                etag: op.request.etag,
                options: op.request.options.unwrap_or_default().parse()?,
                metadata: op.request.metadata,
            })),
            other => Err(ApiError::UnsupportedStateOperation(other.to_owned())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    sidecar.state.transact(&store, ops, metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn query(
    State(sidecar): State<AppState>,
    PathParams(store): PathParams<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let (items, token) = sidecar.state.query(&store, &body).await?;
    let results: Vec<Value> = items.iter().map(|i| item_json(&i.key, &i.item)).collect();
    let mut out = serde_json::json!({ "results": results });
    if let Some(t) = token {
        out["token"] = Value::String(t);
    }
    Ok(Json(out))
}
