//! Reminders in the actor state store, in Dapr's layout, so a Go daprd and
//! this one read each other's data:
//!
//! - `actors||<type>||metadata`: `{"id":<uuid>,"actorRemindersMetadata":{"partitionCount":N}}`
//! - N = 0: every reminder of the type in one list at `actors||<type>`
//! - N > 0: lists at `actors||<type>||<metadata id>||reminders||<1..N>`, the
//!   partition being FNV-1a-32(actor id ‖ name) mod N + 1
//! - `<type>||<id>||<name>`: the track `{"lastFiredTime":..,"repetitionLeft":..}`
//!
//! Lists are written as `\0pb` + protobuf `dapr.proto.internals.v1.Reminders`
//! (Dapr's compact form); JSON lists (Dapr's older form) are read too. Every
//! list write goes with the metadata in one transaction guarded by etags, and
//! is retried on an etag conflict, so hosts sharing a store never lose each
//! other's reminders.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use dapr_components::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, SetRequest, StateError, StateStore,
    TransactionOp,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{
    model::{Reminder, SEPARATOR, Track, reminder_key},
    schedule::Period,
};

const PB_PREFIX: &[u8] = b"\0pb";
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";
const PARTITION_KEY_METADATA: &str = "partitionKey";
/// How many times a list write is retried after losing an etag race.
const MAX_ATTEMPTS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store error: {0}")]
    State(#[from] StateError),
    #[error("could not parse reminders stored at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("too many concurrent updates of the reminders of actor type {0}")]
    Contention(String),
}

/// Dapr's `ActorMetadata`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypeMetadata {
    pub id: String,
    #[serde(rename = "actorRemindersMetadata")]
    pub reminders: RemindersMetadata,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemindersMetadata {
    #[serde(rename = "partitionCount", default)]
    pub partition_count: u32,
}

impl Default for TypeMetadata {
    fn default() -> Self {
        Self {
            id: NIL_UUID.to_owned(),
            reminders: RemindersMetadata::default(),
        }
    }
}

impl TypeMetadata {
    /// 0 when unpartitioned, else 1..=N.
    pub fn partition_of(&self, actor_id: &str, name: &str) -> u32 {
        let n = self.reminders.partition_count;
        if n == 0 {
            return 0;
        }
        // FNV-1a 32 over id then name: Dapr's choice, fixed forever.
        let mut h: u32 = 0x811c_9dc5;
        for b in actor_id.bytes().chain(name.bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h % n + 1
    }

    pub fn list_key(&self, actor_type: &str, partition: u32) -> String {
        if partition == 0 {
            format!("actors{SEPARATOR}{actor_type}")
        } else {
            format!(
                "actors{SEPARATOR}{actor_type}{SEPARATOR}{}{SEPARATOR}reminders{SEPARATOR}{partition}",
                self.id
            )
        }
    }

    /// Cosmos DB's partition key, which Dapr passes to every store.
    fn db_partition_key(&self, list_key: &str) -> String {
        if self.reminders.partition_count > 0 {
            self.id.clone()
        } else {
            list_key.to_owned()
        }
    }
}

fn metadata_key(actor_type: &str) -> String {
    format!("actors{SEPARATOR}{actor_type}{SEPARATOR}metadata")
}

// Dapr 1.14's `dapr.proto.internals.v1.Reminder(s)`: `data` as bytes.
#[derive(Clone, PartialEq, Message)]
struct PbReminder {
    #[prost(string, tag = "1")]
    actor_id: String,
    #[prost(string, tag = "2")]
    actor_type: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(bytes = "bytes", tag = "4")]
    data: Bytes,
    #[prost(string, tag = "5")]
    period: String,
    #[prost(message, optional, tag = "6")]
    registered_time: Option<prost_types::Timestamp>,
    #[prost(string, tag = "7")]
    due_time: String,
    #[prost(message, optional, tag = "8")]
    expiration_time: Option<prost_types::Timestamp>,
}

#[derive(Clone, PartialEq, Message)]
struct PbReminders {
    #[prost(message, repeated, tag = "1")]
    reminders: Vec<PbReminder>,
}

/// Dapr's JSON form of a stored reminder.
#[derive(Serialize, Deserialize, Default)]
struct JsonReminder {
    #[serde(rename = "actorID", default)]
    actor_id: String,
    #[serde(rename = "actorType", default)]
    actor_type: String,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    period: Option<serde_json::Value>,
    #[serde(rename = "registeredTime", default)]
    registered_time: Option<String>,
    #[serde(rename = "dueTime", default)]
    due_time: String,
    #[serde(rename = "expirationTime", default)]
    expiration_time: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JsonTrack {
    #[serde(rename = "lastFiredTime", default)]
    last_fired_time: String,
    #[serde(rename = "repetitionLeft", default)]
    repetition_left: i64,
}

fn to_ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_ts(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored list → reminders; bad entries make the whole list unreadable
/// (as in Dapr), reported with the key.
pub fn decode_list(key: &str, raw: &[u8]) -> Result<Vec<Reminder>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(pb) = raw.strip_prefix(PB_PREFIX) {
        let list = PbReminders::decode(pb).map_err(|e| corrupt(e.to_string()))?;
        return list
            .reminders
            .into_iter()
            .map(|r| {
                let period = Period::parse(&r.period).map_err(|e| corrupt(e.to_string()))?;
                Ok(Reminder {
                    actor_type: r.actor_type,
                    actor_id: r.actor_id,
                    name: r.name,
                    data: (!r.data.is_empty()).then_some(r.data),
                    period,
                    registered_time: r
                        .registered_time
                        .as_ref()
                        .and_then(from_ts)
                        .unwrap_or(DateTime::UNIX_EPOCH),
                    due_time: r.due_time,
                    expiration_time: r.expiration_time.as_ref().and_then(from_ts),
                    callback: String::new(),
                })
            })
            .collect();
    }
    let list: Option<Vec<JsonReminder>> =
        serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
    list.unwrap_or_default()
        .into_iter()
        .map(|r| {
            let period_text = match r.period {
                Some(serde_json::Value::String(s)) => s,
                _ => String::new(),
            };
            let period = Period::parse(&period_text).map_err(|e| corrupt(e.to_string()))?;
            let time = |s: Option<String>| -> Result<Option<DateTime<Utc>>, StoreError> {
                match s.filter(|s| !s.is_empty()) {
                    None => Ok(None),
                    Some(s) => parse_rfc3339(&s)
                        .map(Some)
                        .ok_or_else(|| corrupt(format!("bad time {s}"))),
                }
            };
            Ok(Reminder {
                actor_type: r.actor_type,
                actor_id: r.actor_id,
                name: r.name,
                data: r
                    .data
                    .map(|d| Bytes::copy_from_slice(d.get().as_bytes()))
                    .filter(|d| &d[..] != b"null"),
                period,
                registered_time: time(r.registered_time)?.unwrap_or(DateTime::UNIX_EPOCH),
                due_time: r.due_time,
                expiration_time: time(r.expiration_time)?,
                callback: String::new(),
            })
        })
        .collect()
}

pub fn encode_list(list: &[Reminder]) -> Bytes {
    let pb = PbReminders {
        reminders: list
            .iter()
            .map(|r| PbReminder {
                actor_id: r.actor_id.clone(),
                actor_type: r.actor_type.clone(),
                name: r.name.clone(),
                data: r.data.clone().unwrap_or_default(),
                period: r.period.value.clone(),
                registered_time: Some(to_ts(r.registered_time)),
                due_time: r.due_time.clone(),
                expiration_time: r.expiration_time.map(to_ts),
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(PB_PREFIX.len() + pb.encoded_len());
    out.extend_from_slice(PB_PREFIX);
    pb.encode(&mut out).unwrap_or_default();
    Bytes::from(out)
}

pub fn encode_track(t: &Track) -> Bytes {
    let j = JsonTrack {
        last_fired_time: t
            .last_fired_time
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        repetition_left: t.repetition_left,
    };
    Bytes::from(serde_json::to_vec(&j).unwrap_or_default())
}

pub fn decode_track(raw: &[u8]) -> Option<Track> {
    let j: JsonTrack = serde_json::from_slice(raw).ok()?;
    Some(Track {
        last_fired_time: parse_rfc3339(&j.last_fired_time)?,
        repetition_left: j.repetition_left,
    })
}

/// Whether an upsert stored something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Stored,
    Unchanged,
    /// `overwrite: false` and a reminder of that name exists.
    Exists,
}

/// The reminders of every actor type, in one actor state store.
#[derive(Clone)]
pub struct ReminderStore {
    store: Arc<dyn StateStore>,
}

impl ReminderStore {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    async fn get(
        &self,
        key: &str,
        partition_key: Option<&str>,
    ) -> Result<(Option<Bytes>, Option<String>), StoreError> {
        let mut req = GetRequest {
            key: key.to_owned(),
            ..Default::default()
        };
        if let Some(pk) = partition_key {
            req.metadata
                .insert(PARTITION_KEY_METADATA.to_owned(), pk.to_owned());
        }
        Ok(match self.store.get(&req).await? {
            Some(item) => (Some(item.value), item.etag),
            None => (None, None),
        })
    }

    /// The type's metadata and its etag (`None` when never written).
    pub async fn metadata(
        &self,
        actor_type: &str,
    ) -> Result<(TypeMetadata, Option<String>), StoreError> {
        let key = metadata_key(actor_type);
        let pk = format!("actors{SEPARATOR}{actor_type}");
        let (raw, etag) = self.get(&key, Some(&pk)).await?;
        let meta = match raw.filter(|r| !r.is_empty()) {
            Some(r) => serde_json::from_slice(&r).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?,
            None => TypeMetadata::default(),
        };
        Ok((meta, etag))
    }

    async fn list(
        &self,
        meta: &TypeMetadata,
        key: &str,
    ) -> Result<(Vec<Reminder>, Option<String>), StoreError> {
        let (raw, etag) = self.get(key, Some(&meta.db_partition_key(key))).await?;
        let list = match raw {
            Some(r) => decode_list(key, &r)?,
            None => Vec::new(),
        };
        Ok((list, etag))
    }

    /// Every reminder of a type. Repartitions first when the app now asks
    /// for more partitions than are stored (Dapr never shrinks them).
    pub async fn load_all(
        &self,
        actor_type: &str,
        wanted_partitions: u32,
    ) -> Result<Vec<Reminder>, StoreError> {
        let (mut meta, mut etag) = self.metadata(actor_type).await?;
        if wanted_partitions > meta.reminders.partition_count {
            self.migrate(actor_type, &meta, etag.as_deref(), wanted_partitions)
                .await?;
            (meta, etag) = self.metadata(actor_type).await?;
        }
        let _ = etag;
        let n = meta.reminders.partition_count;
        if n == 0 {
            return Ok(self.list(&meta, &meta.list_key(actor_type, 0)).await?.0);
        }
        let reqs: Vec<GetRequest> = (1..=n)
            .map(|p| GetRequest {
                key: meta.list_key(actor_type, p),
                metadata: HashMap::from([(PARTITION_KEY_METADATA.to_owned(), meta.id.clone())]),
                ..Default::default()
            })
            .collect();
        let mut out = Vec::new();
        for BulkGetItem { key, result } in self.store.bulk_get(&reqs, 16).await {
            if let Some(item) = result? {
                out.extend(decode_list(&key, &item.value)?);
            }
        }
        Ok(out)
    }

    /// Rewrites the type's reminders into `partitions` partitions under a new
    /// metadata id, in one transaction.
    async fn migrate(
        &self,
        actor_type: &str,
        old: &TypeMetadata,
        old_etag: Option<&str>,
        partitions: u32,
    ) -> Result<(), StoreError> {
        let mut all = Vec::new();
        for p in 0..=old.reminders.partition_count {
            if p == 0 && old.reminders.partition_count > 0 {
                continue;
            }
            all.extend(self.list(old, &old.list_key(actor_type, p)).await?.0);
        }
        tracing::info!(
            actor_type,
            count = all.len(),
            from = old.reminders.partition_count,
            to = partitions,
            "repartitioning actor reminders"
        );
        let meta = TypeMetadata {
            id: uuid::Uuid::new_v4().to_string(),
            reminders: RemindersMetadata {
                partition_count: partitions,
            },
        };
        let mut parts: Vec<Vec<Reminder>> = vec![Vec::new(); partitions as usize];
        for r in all {
            let p = meta.partition_of(&r.actor_id, &r.name);
            parts[(p - 1) as usize].push(r);
        }
        let pk = meta.id.clone();
        let mut ops: Vec<TransactionOp> = parts
            .iter()
            .enumerate()
            .map(|(i, list)| {
                TransactionOp::Set(self.set_req(
                    meta.list_key(actor_type, i as u32 + 1),
                    encode_list(list),
                    None,
                    Concurrency::LastWrite,
                    &pk,
                ))
            })
            .collect();
        ops.push(TransactionOp::Set(
            self.metadata_set(actor_type, &meta, old_etag, &pk),
        ));
        self.transact(&ops).await
    }

    fn set_req(
        &self,
        key: String,
        value: Bytes,
        etag: Option<&str>,
        concurrency: Concurrency,
        partition_key: &str,
    ) -> SetRequest {
        SetRequest {
            key,
            value,
            etag: etag.map(str::to_owned),
            concurrency,
            metadata: HashMap::from([(
                PARTITION_KEY_METADATA.to_owned(),
                partition_key.to_owned(),
            )]),
            ..Default::default()
        }
    }

    fn metadata_set(
        &self,
        actor_type: &str,
        meta: &TypeMetadata,
        etag: Option<&str>,
        partition_key: &str,
    ) -> SetRequest {
        self.set_req(
            metadata_key(actor_type),
            Bytes::from(serde_json::to_vec(meta).unwrap_or_default()),
            etag,
            // No etag: the metadata must not exist yet.
            Concurrency::FirstWrite,
            partition_key,
        )
    }

    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StoreError> {
        if self.store.features().transactional {
            return Ok(self.store.transact(ops).await?);
        }
        for op in ops {
            match op {
                TransactionOp::Set(s) => self.store.set(s).await?,
                TransactionOp::Delete(d) => self.store.delete(d).await?,
            }
        }
        Ok(())
    }

    /// Read-modify-write of the list holding (type, id, name); `change` edits
    /// the list and says whether to write it. Retried on etag conflicts.
    async fn modify<T>(
        &self,
        actor_type: &str,
        actor_id: &str,
        name: &str,
        wanted_partitions: u32,
        mut change: impl FnMut(&mut Vec<Reminder>) -> (bool, T),
    ) -> Result<T, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let (mut meta, mut meta_etag) = self.metadata(actor_type).await?;
            if wanted_partitions > meta.reminders.partition_count {
                self.migrate(actor_type, &meta, meta_etag.as_deref(), wanted_partitions)
                    .await?;
                (meta, meta_etag) = self.metadata(actor_type).await?;
            }
            let key = meta.list_key(actor_type, meta.partition_of(actor_id, name));
            let (mut list, etag) = self.list(&meta, &key).await?;
            let (write, out) = change(&mut list);
            if !write {
                return Ok(out);
            }
            let pk = meta.db_partition_key(&key);
            let concurrency = if etag.is_some() {
                Concurrency::LastWrite
            } else {
                Concurrency::FirstWrite
            };
            let ops = [
                TransactionOp::Set(self.set_req(
                    key,
                    encode_list(&list),
                    etag.as_deref(),
                    concurrency,
                    &pk,
                )),
                TransactionOp::Set(self.metadata_set(actor_type, &meta, meta_etag.as_deref(), &pk)),
            ];
            match self.transact(&ops).await {
                Ok(()) => return Ok(out),
                Err(StoreError::State(StateError::EtagMismatch)) => {
                    // Another host (or a concurrent request) won; read again.
                    let jitter = (attempt as u64 + 1) * 3 + u64::from(rand_u8() % 8);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention(actor_type.to_owned()))
    }

    /// Stores `r` (replacing a same-named one). Unchanged when an identical
    /// reminder is already stored (Dapr's `RequiresUpdating`).
    pub async fn upsert(&self, r: &Reminder, wanted_partitions: u32) -> Result<Upsert, StoreError> {
        self.upsert_with(r, wanted_partitions, true).await
    }

    /// As [`ReminderStore::upsert`]; with `overwrite` false an existing
    /// reminder of the same name is left alone and reported as
    /// [`Upsert::Exists`].
    pub async fn upsert_with(
        &self,
        r: &Reminder,
        wanted_partitions: u32,
        overwrite: bool,
    ) -> Result<Upsert, StoreError> {
        let outcome = self
            .modify(
                &r.actor_type,
                &r.actor_id,
                &r.name,
                wanted_partitions,
                |list| {
                    let pos = list
                        .iter()
                        .position(|x| x.actor_id == r.actor_id && x.name == r.name);
                    match pos {
                        Some(_) if !overwrite => (false, Upsert::Exists),
                        Some(i) if !list[i].requires_update(r) => (false, Upsert::Unchanged),
                        Some(i) => {
                            list[i] = r.clone();
                            (true, Upsert::Stored)
                        }
                        None => {
                            list.push(r.clone());
                            (true, Upsert::Stored)
                        }
                    }
                },
            )
            .await?;
        if outcome == Upsert::Stored {
            // A replaced reminder starts over: its old track must not apply.
            self.delete_track(&r.key()).await?;
        }
        Ok(outcome)
    }

    /// Removes a reminder and its track; false when there was none.
    pub async fn remove(
        &self,
        actor_type: &str,
        actor_id: &str,
        name: &str,
        wanted_partitions: u32,
    ) -> Result<bool, StoreError> {
        let found = self
            .modify(actor_type, actor_id, name, wanted_partitions, |list| {
                let before = list.len();
                list.retain(|x| !(x.actor_id == actor_id && x.name == name));
                let found = list.len() != before;
                (found, found)
            })
            .await?;
        self.delete_track(&reminder_key(actor_type, actor_id, name))
            .await?;
        Ok(found)
    }

    /// One stored reminder, read from its partition.
    pub async fn get_one(
        &self,
        actor_type: &str,
        actor_id: &str,
        name: &str,
    ) -> Result<Option<Reminder>, StoreError> {
        let (meta, _) = self.metadata(actor_type).await?;
        let key = meta.list_key(actor_type, meta.partition_of(actor_id, name));
        let (list, _) = self.list(&meta, &key).await?;
        Ok(list
            .into_iter()
            .find(|x| x.actor_id == actor_id && x.name == name))
    }

    pub async fn tracks(&self, keys: &[String]) -> Vec<Option<Track>> {
        let reqs: Vec<GetRequest> = keys
            .iter()
            .map(|k| GetRequest {
                key: k.clone(),
                ..Default::default()
            })
            .collect();
        self.store
            .bulk_get(&reqs, 32)
            .await
            .into_iter()
            .map(|item| match item.result {
                Ok(Some(v)) => decode_track(&v.value),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(key = item.key, "reading reminder track: {e}");
                    None
                }
            })
            .collect()
    }

    /// Writes many tracks at once (the scheduler batches them).
    pub async fn save_tracks(&self, tracks: &[(String, Track)]) -> Result<(), StoreError> {
        let reqs: Vec<SetRequest> = tracks
            .iter()
            .map(|(k, t)| SetRequest {
                key: k.clone(),
                value: encode_track(t),
                ..Default::default()
            })
            .collect();
        Ok(self.store.bulk_set(&reqs).await?)
    }

    pub async fn delete_track(&self, key: &str) -> Result<(), StoreError> {
        Ok(self
            .store
            .delete(&DeleteRequest {
                key: key.to_owned(),
                ..Default::default()
            })
            .await?)
    }
}

/// A little jitter without a RNG dependency.
fn rand_u8() -> u8 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n >> 8) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::reminders::model::{CreateRequest, Kind};
    use dapr_components::state::memory::InMemoryStore;

    fn reminder(id: &str, name: &str, period: &str) -> Reminder {
        CreateRequest {
            actor_type: "T".into(),
            actor_id: id.into(),
            name: name.into(),
            data: Some(Bytes::from_static(br#"{"x":1}"#)),
            due_time: "PT1S".into(),
            period: period.into(),
            ..Default::default()
        }
        .build(Kind::Reminder, Utc::now())
        .unwrap()
    }

    #[test]
    fn partition_hash_is_fnv1a() {
        let m = TypeMetadata {
            id: "m".into(),
            reminders: RemindersMetadata { partition_count: 7 },
        };
        // FNV-1a-32("ab") = 0x4d2505ca.
        assert_eq!(m.partition_of("a", "b"), 0x4d25_05ca % 7 + 1);
        assert_eq!(m.list_key("T", 3), "actors||T||m||reminders||3");
        assert_eq!(TypeMetadata::default().list_key("T", 0), "actors||T");
    }

    #[test]
    fn lists_round_trip_and_json_is_read() {
        let list = vec![reminder("a", "r1", "R5/PT1S"), reminder("b", "r2", "")];
        let raw = encode_list(&list);
        assert!(raw.starts_with(b"\0pb"));
        assert_eq!(decode_list("k", &raw).unwrap(), list);
        let json = br#"[{"actorID":"a","actorType":"T","name":"n","data":"aGk=","period":"PT2S","registeredTime":"2024-01-01T00:00:00Z","dueTime":"0s","expirationTime":"2025-01-01T00:00:00Z"}]"#;
        let got = decode_list("k", json).unwrap();
        assert_eq!(got[0].period.value, "PT2S");
        assert_eq!(got[0].data.as_deref(), Some(&b"\"aGk=\""[..]));
        assert!(got[0].expiration_time.is_some());
        assert!(decode_list("k", b"{nope").is_err());
        let t = Track {
            last_fired_time: Utc::now(),
            repetition_left: 3,
        };
        assert_eq!(decode_track(&encode_track(&t)), Some(t));
    }

    #[tokio::test]
    async fn upsert_remove_and_repartition() {
        let mem: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let s = ReminderStore::new(mem.clone());
        let a = reminder("a", "r", "PT1S");
        assert_eq!(s.upsert(&a, 0).await.unwrap(), Upsert::Stored);
        assert_eq!(s.upsert(&a, 0).await.unwrap(), Upsert::Unchanged);
        for i in 0..20 {
            s.upsert(&reminder(&format!("id{i}"), "r", "PT1S"), 0)
                .await
                .unwrap();
        }
        assert!(
            mem.get(&GetRequest {
                key: "actors||T".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_some()
        );
        // Asking for partitions moves everything under a new metadata id.
        assert_eq!(s.load_all("T", 4).await.unwrap().len(), 21);
        let (meta, _) = s.metadata("T").await.unwrap();
        assert_eq!(meta.reminders.partition_count, 4);
        assert_ne!(meta.id, NIL_UUID);
        assert!(s.get_one("T", "id7", "r").await.unwrap().is_some());
        assert!(s.remove("T", "id7", "r", 4).await.unwrap());
        assert!(!s.remove("T", "id7", "r", 4).await.unwrap());
        assert!(s.get_one("T", "id7", "r").await.unwrap().is_none());
        assert_eq!(s.load_all("T", 4).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn concurrent_upserts_lose_nothing() {
        let mem: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let s = ReminderStore::new(mem);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(
                    async move { s.upsert(&reminder(&format!("c{i}"), "r", "PT1S"), 0).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.load_all("T", 0).await.unwrap().len(), 16);
    }
}
