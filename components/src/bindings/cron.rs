//! `bindings.cron`: an input binding that fires on a schedule.
//!
//! `schedule` takes a cron expression with seconds first (`*/5 * * * * *`;
//! the five-field form without seconds also parses) or a descriptor:
//! `@every <duration>`, `@yearly`/`@annually`, `@monthly`, `@weekly`,
//! `@daily`/`@midnight`, `@hourly`. Times are UTC. Each tick delivers an
//! empty body with `timeZone` and `readTimeUTC` metadata.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use super::{BindingError, BindingEvent, EventHandler, InputBinding, Reader, StopSignal};
use crate::ComponentMetadata;

#[derive(Debug, Clone)]
enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

impl Schedule {
    fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if let Some(every) = s.strip_prefix("@every") {
            let d = crate::duration::parse_go_duration(every.trim()).map_err(|e| e.to_string())?;
            if d.is_zero() {
                return Err("@every needs a duration above zero".to_owned());
            }
            return Ok(Schedule::Every(d));
        }
        // croner knows every descriptor but `@midnight`.
        let pattern = if s.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            s
        };
        if pattern.starts_with('@')
            && !KNOWN_DESCRIPTORS.contains(&pattern.to_ascii_lowercase().as_str())
        {
            return Err(format!("unknown descriptor '{pattern}'"));
        }
        CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| e.to_string())
    }

    /// The first firing time strictly after `after`.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| after + d),
            Schedule::Cron(c) => c.find_next_occurrence(&after, false).ok(),
        }
    }
}

const KNOWN_DESCRIPTORS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

pub struct CronBinding {
    name: String,
    schedule: Schedule,
}

impl CronBinding {
    pub fn new(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let raw = md.require("schedule")?;
        let schedule = Schedule::parse(raw)
            .map_err(|e| BindingError::invalid_metadata("schedule", format!("'{raw}': {e}")))?;
        Ok(Self {
            name: md.name.clone(),
            schedule,
        })
    }
}

#[async_trait]
impl InputBinding for CronBinding {
    async fn read(&self, handler: Arc<dyn EventHandler>) -> Result<Reader, BindingError> {
        let (tx, mut stop) = StopSignal::pair();
        let schedule = self.schedule.clone();
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            let mut last = Utc::now();
            loop {
                let Some(next) = schedule.next_after(last) else {
                    tracing::warn!(binding = %name, "cron schedule has no further firing time");
                    return;
                };
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                last = next;
                let event = BindingEvent {
                    data: Default::default(),
                    metadata: HashMap::from([
                        ("timeZone".to_owned(), "UTC".to_owned()),
                        ("readTimeUTC".to_owned(), Utc::now().to_rfc3339()),
                    ]),
                    content_type: None,
                };
                // Each tick runs on its own so a slow app does not delay the
                // next one (a tick has nothing to redeliver).
                let handler = handler.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    if let Err(e) = handler.handle(event).await {
                        tracing::debug!(binding = %name, "cron event not taken by the app: {e}");
                    }
                });
            }
        });
        Ok(Reader::new(tx, vec![task]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, s).single().unwrap()
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/15 * * * * *").unwrap();
        assert_eq!(s.next_after(at(1, 2, 3)), Some(at(1, 2, 15)));
        let s = Schedule::parse("30 0 * * * *").unwrap();
        assert_eq!(s.next_after(at(1, 2, 3)), Some(at(2, 0, 30)));
    }

    #[test]
    fn descriptors() {
        let s = Schedule::parse("@every 1s").unwrap();
        assert_eq!(s.next_after(at(1, 2, 3)), Some(at(1, 2, 4)));
        let s = Schedule::parse("@every 1m30s").unwrap();
        assert_eq!(s.next_after(at(1, 2, 3)), Some(at(1, 3, 33)));
        for d in ["@daily", "@midnight", "@DAILY"] {
            let s = Schedule::parse(d).unwrap();
            assert_eq!(
                s.next_after(at(1, 2, 3)),
                Some(Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0).single().unwrap())
            );
        }
        let s = Schedule::parse("@hourly").unwrap();
        assert_eq!(s.next_after(at(1, 2, 3)), Some(at(2, 0, 0)));
    }

    #[test]
    fn bad_schedules_name_the_field() {
        for bad in [
            "",
            "@every",
            "@every 0s",
            "@every soon",
            "@sometimes",
            "61 * * * * *",
            "a b c",
        ] {
            let md = ComponentMetadata::new("tick", "app").with("schedule", bad);
            let err = match CronBinding::new(&md) {
                Ok(_) => panic!("'{bad}' parsed"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("schedule"), "{bad}: {err}");
        }
    }
}
