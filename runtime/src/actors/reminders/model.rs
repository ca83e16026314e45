//! A reminder or timer: what the user registered and where it is in its
//! schedule, plus the JSON bodies Dapr sends to the app when it fires.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::schedule::{Period, ScheduleError, parse_time};

pub const SEPARATOR: &str = "||";

/// Reminders and timers share one shape; timers also carry a `callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub actor_type: String,
    pub actor_id: String,
    pub name: String,
    /// JSON text, as given (HTTP) or wrapped (gRPC bytes that are not JSON).
    pub data: Option<Bytes>,
    pub period: Period,
    /// The next tick (Dapr's `RegisteredTime`).
    pub registered_time: DateTime<Utc>,
    /// The `dueTime` text as the user gave it.
    pub due_time: String,
    pub expiration_time: Option<DateTime<Utc>>,
    /// Timers only: the method the SDK calls back.
    pub callback: String,
}

/// Which of the two the scheduler is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Reminder,
    Timer,
}

impl Kind {
    /// The app method prefix: `remind/<name>` or `timer/<name>`.
    pub fn method_prefix(self) -> &'static str {
        match self {
            Kind::Reminder => "remind",
            Kind::Timer => "timer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Reminder => "reminder",
            Kind::Timer => "timer",
        }
    }
}

/// The user's request to create a reminder or timer.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub actor_type: String,
    pub actor_id: String,
    pub name: String,
    pub data: Option<Bytes>,
    pub due_time: String,
    pub period: String,
    pub ttl: String,
    pub callback: String,
    /// Reminders: `overwrite` as Dapr takes it (unset = true); `false`
    /// refuses to replace an existing reminder of the same name.
    pub overwrite: Option<bool>,
}

/// A schedule the user gave that cannot be used, worded as Dapr words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("error parsing {0} due time: {1}")]
    DueTime(&'static str, ScheduleError),
    #[error("invalid {0} period: {1}")]
    Period(&'static str, ScheduleError),
    #[error("error parsing {0} TTL: {1}")]
    Ttl(&'static str, ScheduleError),
    #[error("{kind} {key} has already expired: dueTime: {due} TTL: {ttl}")]
    Expired {
        kind: &'static str,
        key: String,
        due: String,
        ttl: String,
    },
}

pub fn actor_key(actor_type: &str, actor_id: &str) -> String {
    format!("{actor_type}{SEPARATOR}{actor_id}")
}

pub fn reminder_key(actor_type: &str, actor_id: &str, name: &str) -> String {
    format!("{actor_type}{SEPARATOR}{actor_id}{SEPARATOR}{name}")
}

impl CreateRequest {
    /// Validates the schedule and builds the reminder as registered `now`.
    pub fn build(self, kind: Kind, now: DateTime<Utc>) -> Result<Reminder, InvalidSchedule> {
        let label = kind.label();
        let registered_time = if self.due_time.is_empty() {
            now
        } else {
            parse_time(&self.due_time, now).map_err(|e| InvalidSchedule::DueTime(label, e))?
        };
        let period = Period::parse(&self.period).map_err(|e| InvalidSchedule::Period(label, e))?;
        let mut expiration_time = None;
        if !self.ttl.is_empty() {
            let exp = parse_time(&self.ttl, registered_time)
                .map_err(|e| InvalidSchedule::Ttl(label, e))?;
            if now > exp || registered_time > exp {
                return Err(InvalidSchedule::Expired {
                    kind: label,
                    key: reminder_key(&self.actor_type, &self.actor_id, &self.name),
                    due: registered_time.to_rfc3339(),
                    ttl: self.ttl,
                });
            }
            expiration_time = Some(exp);
        }
        Ok(Reminder {
            actor_type: self.actor_type,
            actor_id: self.actor_id,
            name: self.name,
            data: self.data.filter(|d| !d.is_empty() && &d[..] != b"null"),
            period,
            registered_time,
            due_time: self.due_time,
            expiration_time,
            callback: self.callback,
        })
    }
}

/// What is persisted per reminder besides its definition: when it last fired
/// and how many repetitions remain (Dapr's `ReminderTrack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub last_fired_time: DateTime<Utc>,
    pub repetition_left: i64,
}

impl Reminder {
    pub fn key(&self) -> String {
        reminder_key(&self.actor_type, &self.actor_id, &self.name)
    }

    pub fn actor_key(&self) -> String {
        actor_key(&self.actor_type, &self.actor_id)
    }

    /// The next tick, and whether it is still within the ttl.
    pub fn next_tick(&self) -> (DateTime<Utc>, bool) {
        let active = self
            .expiration_time
            .is_none_or(|exp| self.registered_time < exp);
        (self.registered_time, active)
    }

    /// Records one tick as executed; true when no further tick follows.
    pub fn tick_executed(&mut self) -> bool {
        if self.period.repeats > 0 {
            self.period.repeats -= 1;
        }
        if !self.period.has_repeats() {
            return true;
        }
        self.registered_time = self.period.following(self.registered_time);
        false
    }

    /// Resumes from a persisted track (after a restart or a host move).
    pub fn apply_track(&mut self, track: &Track) {
        self.period.repeats = track.repetition_left;
        self.registered_time = self.period.following(track.last_fired_time);
    }

    /// Whether re-registering with `new` changes anything (Dapr's
    /// `RequiresUpdating`): same schedule and data → nothing to do.
    pub fn requires_update(&self, new: &Reminder) -> bool {
        self.due_time != new.due_time
            || self.period != new.period
            || new.expiration_time.is_some()
            || (self.expiration_time.is_some() && new.expiration_time.is_none())
            || self.data != new.data
    }

    /// The body of `PUT /actors/{type}/{id}/method/remind/{name}` or
    /// `.../timer/{name}`, as Dapr sends it.
    pub fn callback_body(&self, kind: Kind) -> Bytes {
        let data = self
            .data
            .as_ref()
            .and_then(|d| serde_json::from_slice::<&serde_json::value::RawValue>(d).ok());
        let body = match kind {
            Kind::Reminder => serde_json::to_vec(&ReminderBody {
                data,
                due_time: &self.due_time,
                period: &self.period.value,
            }),
            Kind::Timer => serde_json::to_vec(&TimerBody {
                data,
                callback: &self.callback,
                due_time: &self.due_time,
                period: &self.period.value,
            }),
        };
        Bytes::from(body.unwrap_or_default())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReminderBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::value::RawValue>,
    due_time: &'a str,
    period: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimerBody<'a> {
    // Dapr sends `"data":null` to timers without data.
    data: Option<&'a serde_json::value::RawValue>,
    callback: &'a str,
    due_time: &'a str,
    period: &'a str,
}

/// Turns gRPC `bytes data` into JSON text: JSON stays as is, anything else
/// becomes a base64 JSON string (what Go's `json.Marshal([]byte)` gives).
pub fn data_from_bytes(b: &[u8]) -> Option<Bytes> {
    if b.is_empty() {
        return None;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok() {
        return Some(Bytes::copy_from_slice(b));
    }
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(b);
    Some(Bytes::from(serde_json::to_vec(&s).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn req(due: &str, period: &str, ttl: &str) -> CreateRequest {
        CreateRequest {
            actor_type: "T".into(),
            actor_id: "a".into(),
            name: "r".into(),
            due_time: due.into(),
            period: period.into(),
            ttl: ttl.into(),
            ..Default::default()
        }
    }

    #[test]
    fn repetitions_count_down_then_stop() {
        let now = t("2024-01-01T00:00:00Z");
        let mut r = req("PT2S", "R3/PT1S", "")
            .build(Kind::Reminder, now)
            .unwrap();
        assert_eq!(r.next_tick().0, t("2024-01-01T00:00:02Z"));
        assert!(!r.tick_executed());
        assert_eq!(r.next_tick().0, t("2024-01-01T00:00:03Z"));
        assert!(!r.tick_executed());
        assert!(r.tick_executed());
    }

    #[test]
    fn ttl_bounds_ticks() {
        let now = t("2024-01-01T00:00:00Z");
        let mut r = req("", "PT1S", "PT2S").build(Kind::Reminder, now).unwrap();
        assert!(r.next_tick().1);
        r.tick_executed();
        r.tick_executed();
        assert!(!r.next_tick().1, "third tick at +2s is past the ttl");
        let err = req("PT5S", "", "2023-01-01T00:00:00Z")
            .build(Kind::Reminder, now)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reminder T||a||r has already expired")
        );
        let err = req("soon", "", "").build(Kind::Timer, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error parsing timer due time: unsupported time/duration format: soon"
        );
    }

    #[test]
    fn track_resumes_schedule() {
        let now = t("2024-01-01T00:00:00Z");
        let mut r = req("", "R10/PT5S", "").build(Kind::Reminder, now).unwrap();
        r.apply_track(&Track {
            last_fired_time: t("2024-01-01T00:01:00Z"),
            repetition_left: 4,
        });
        assert_eq!(r.registered_time, t("2024-01-01T00:01:05Z"));
        assert_eq!(r.period.repeats, 4);
    }

    #[test]
    fn callback_bodies_match_dapr() {
        let now = t("2024-01-01T00:00:00Z");
        let mut q = req("1s", "PT1S", "");
        q.data = Some(Bytes::from_static(br#""aGk=""#));
        q.callback = "cb".into();
        let r = q.build(Kind::Timer, now).unwrap();
        assert_eq!(
            &r.callback_body(Kind::Reminder)[..],
            br#"{"data":"aGk=","dueTime":"1s","period":"PT1S"}"#
        );
        let mut bare = req("", "", "").build(Kind::Timer, now).unwrap();
        bare.callback = "cb".into();
        assert_eq!(
            &bare.callback_body(Kind::Timer)[..],
            br#"{"data":null,"callback":"cb","dueTime":"","period":""}"#
        );
        assert_eq!(&data_from_bytes(b"{\"a\":1}").unwrap()[..], b"{\"a\":1}");
        assert_eq!(&data_from_bytes(b"hi").unwrap()[..], b"\"aGk=\"");
    }
}
