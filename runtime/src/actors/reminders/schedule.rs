//! The schedule forms Dapr accepts for `dueTime`, `period` and `ttl`:
//! ISO 8601 durations (`PT1S`, `P1DT2H`, `P2W`), repetitions (`R5/PT1S`),
//! Go durations (`1h2m3.5s`) and, for `dueTime`/`ttl`, RFC 3339 times.
//!
//! The ISO 8601 reader follows Dapr's (dapr/kit `time`) on purpose, quirks
//! included: integers only (a fraction makes it fall back to the Go form),
//! and months/minutes share the `M` designator, told apart by the `T`.

use chrono::{DateTime, Days, Months, TimeDelta, Utc};

/// A parse failure, worded as Dapr words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unsupported ISO8601 duration format: {0}")]
    Iso8601(String),
    #[error("unsupported duration format: {0}")]
    Duration(String),
    #[error("unsupported time/duration format: {0}")]
    Time(String),
    #[error("repetitions are not allowed")]
    RepetitionsNotAllowed,
    #[error("parse error: {0}")]
    Period(Box<ScheduleError>),
    #[error("has zero repetitions")]
    ZeroRepetitions,
    #[error("must not be negative: {0}")]
    NegativePeriod(String),
    #[error("time out of range: {0}")]
    OutOfRange(String),
}

/// A calendar + clock span: years/months/days apply to the calendar, the rest
/// is exact nanoseconds (as Go's `AddDate(..).Add(..)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub nanos: i64,
}

impl Span {
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.nanos == 0
    }

    fn is_negative(&self) -> bool {
        self.years < 0 || self.months < 0 || self.days < 0 || self.nanos < 0
    }

    /// `t` moved forward by this span; `None` past chrono's range.
    pub fn add_to(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = i64::from(self.years) * 12 + i64::from(self.months);
        let mut t = if months >= 0 {
            t.checked_add_months(Months::new(u32::try_from(months).ok()?))?
        } else {
            t.checked_sub_months(Months::new(u32::try_from(-months).ok()?))?
        };
        t = if self.days >= 0 {
            t.checked_add_days(Days::new(u64::from(self.days.unsigned_abs())))?
        } else {
            t.checked_sub_days(Days::new(u64::from(self.days.unsigned_abs())))?
        };
        t.checked_add_signed(TimeDelta::nanoseconds(self.nanos))
    }
}

/// `(span, repetitions)`; repetitions is -1 when unbounded.
pub fn parse_iso8601_duration(s: &str) -> Result<(Span, i64), ScheduleError> {
    let err = || ScheduleError::Iso8601(s.to_owned());
    let b = s.as_bytes();
    if b.len() < 2 {
        return Err(err());
    }
    let mut reps = -1i64;
    let mut i = 0usize;
    if b[0] == b'R' {
        let slash = s.find('/').unwrap_or(s.len());
        if slash < 2 {
            return Err(err());
        }
        reps = go_atoi(&s[1..slash]).ok_or_else(err)?;
        i = slash + 1;
        if i >= b.len() {
            return Ok((Span::default(), reps));
        }
    }
    if b[i] != b'P' {
        return Err(err());
    }
    i += 1;
    let mut span = Span::default();
    let mut start = i;
    let mut in_time = false;
    while i < b.len() {
        let c = b[i];
        let field = |start: usize| -> Result<i64, ScheduleError> {
            if start == i {
                return Err(err());
            }
            go_atoi(&s[start..i]).ok_or_else(err)
        };
        match c {
            b'T' => {
                if start != i {
                    return Err(err());
                }
                in_time = true;
                start = i + 1;
            }
            b'Y' | b'W' | b'D' if in_time => return Err(err()),
            b'H' | b'S' if !in_time => return Err(err()),
            b'Y' => {
                span.years = to_i32(field(start)?).ok_or_else(err)?;
                start = i + 1;
            }
            b'W' => {
                let weeks = field(start)?.checked_mul(7).ok_or_else(err)?;
                span.days = to_i32(i64::from(span.days) + weeks).ok_or_else(err)?;
                start = i + 1;
            }
            b'D' => {
                span.days = to_i32(i64::from(span.days) + field(start)?).ok_or_else(err)?;
                start = i + 1;
            }
            b'H' => {
                span.nanos =
                    add_nanos(span.nanos, field(start)?, 3_600_000_000_000).ok_or_else(err)?;
                start = i + 1;
            }
            b'S' => {
                span.nanos = add_nanos(span.nanos, field(start)?, 1_000_000_000).ok_or_else(err)?;
                start = i + 1;
            }
            b'M' => {
                let v = field(start)?;
                if in_time {
                    span.nanos = add_nanos(span.nanos, v, 60_000_000_000).ok_or_else(err)?;
                } else {
                    span.months = to_i32(v).ok_or_else(err)?;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok((span, reps))
}

fn to_i32(v: i64) -> Option<i32> {
    i32::try_from(v).ok()
}

fn add_nanos(acc: i64, v: i64, unit: i64) -> Option<i64> {
    acc.checked_add(v.checked_mul(unit)?)
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, no spaces.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?(\d*(\.\d*)?unit)+` with
/// units ns, us/µs/μs, ms, s, m, h, or the bare `0`.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut v = whole.checked_mul(unit)?;
        // The fraction, to nanosecond precision (further digits truncate).
        let mut scale = unit;
        for d in frac_part.bytes() {
            if scale < 10 {
                break;
            }
            scale /= 10;
            v += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(v)?;
        if total > i64::MAX as u128 + u128::from(neg) {
            return None;
        }
    }
    let total = i128::try_from(total).ok()?;
    i64::try_from(if neg { -total } else { total }).ok()
}

/// A `period`: ISO 8601 (with optional repetitions) or Go duration. Dapr's
/// `kit/time.ParseDuration`.
pub fn parse_duration(s: &str) -> Result<(Span, i64), ScheduleError> {
    if let Ok(v) = parse_iso8601_duration(s) {
        return Ok(v);
    }
    if let Some(n) = parse_go_duration(s) {
        return Ok((
            Span {
                nanos: n,
                ..Span::default()
            },
            -1,
        ));
    }
    Err(ScheduleError::Duration(s.to_owned()))
}

/// A `dueTime` or `ttl`: a duration from `offset`, or an RFC 3339 time. Dapr's
/// `kit/time.ParseTime`.
pub fn parse_time(s: &str, offset: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    if let Ok((span, reps)) = parse_iso8601_duration(s) {
        if reps != -1 {
            return Err(ScheduleError::RepetitionsNotAllowed);
        }
        return span
            .add_to(offset)
            .ok_or_else(|| ScheduleError::OutOfRange(s.to_owned()));
    }
    if let Some(n) = parse_go_duration(s) {
        return offset
            .checked_add_signed(TimeDelta::nanoseconds(n))
            .ok_or_else(|| ScheduleError::OutOfRange(s.to_owned()));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    Err(ScheduleError::Time(s.to_owned()))
}

/// A parsed `period`: how far apart the ticks are and how many remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The text as the user gave it (stored and echoed back).
    pub value: String,
    pub span: Span,
    /// Ticks left; -1 = unbounded.
    pub repeats: i64,
}

impl Default for Period {
    fn default() -> Self {
        Self {
            value: String::new(),
            span: Span::default(),
            repeats: -1,
        }
    }
}

impl Period {
    /// Parses and validates a period; the empty string is "no period" (one tick).
    pub fn parse(value: &str) -> Result<Self, ScheduleError> {
        if value.is_empty() {
            return Ok(Self::default());
        }
        let (span, repeats) =
            parse_duration(value).map_err(|e| ScheduleError::Period(Box::new(e)))?;
        if repeats == 0 {
            return Err(ScheduleError::ZeroRepetitions);
        }
        // Dapr accepts negative periods and then fires in a tight loop; a
        // period that goes backwards is refused instead.
        if span.is_negative() {
            return Err(ScheduleError::NegativePeriod(value.to_owned()));
        }
        Ok(Self {
            value: value.to_owned(),
            span,
            repeats,
        })
    }

    /// Whether another tick follows the current one.
    pub fn has_repeats(&self) -> bool {
        self.repeats != 0 && !self.span.is_zero()
    }

    /// The first tick of the grid `t`, `t + period`, ... at or after `now`
    /// (`t` itself when it is not in the past or there is no period).
    pub fn first_at_or_after(&self, t: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        if t >= now || self.span.is_zero() {
            return t;
        }
        let s = &self.span;
        if s.years == 0 && s.months == 0 && s.days == 0 && s.nanos > 0 {
            // A fixed step: jump straight there.
            let behind = (now - t).num_nanoseconds().unwrap_or(i64::MAX);
            let steps = behind / s.nanos + i64::from(behind % s.nanos != 0);
            if let Some(step) = steps.checked_mul(s.nanos)
                && let Some(at) = t.checked_add_signed(TimeDelta::nanoseconds(step))
            {
                return at;
            }
            return now;
        }
        // Calendar steps (days, months): walk, bounded.
        let mut at = t;
        for _ in 0..100_000 {
            if at >= now {
                return at;
            }
            at = self.following(at);
        }
        now
    }

    /// The tick after `t`.
    pub fn following(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.span.add_to(t).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn iso8601_forms() {
        let (s, r) = parse_iso8601_duration("PT1S").unwrap();
        assert_eq!((s.nanos, r), (SEC, -1));
        let (s, _) = parse_iso8601_duration("P1DT2H").unwrap();
        assert_eq!((s.days, s.nanos), (1, 2 * 3600 * SEC));
        let (s, _) = parse_iso8601_duration("P1Y2M3W4DT5H6M7S").unwrap();
        assert_eq!((s.years, s.months, s.days), (1, 2, 25));
        assert_eq!(s.nanos, (5 * 3600 + 6 * 60 + 7) * SEC);
        let (s, r) = parse_iso8601_duration("R5/PT10S").unwrap();
        assert_eq!((s.nanos, r), (10 * SEC, 5));
        // Repetitions alone: no span.
        let (s, r) = parse_iso8601_duration("R3").unwrap();
        assert!(s.is_zero());
        assert_eq!(r, 3);
        for bad in [
            "", "P", "1S", "PT", "X", "R/PT1S", "PTS", "P1H", "PT1D", "P1.5D", "PT1.5S", "PRT",
        ] {
            if bad == "PT" {
                // Dapr accepts an empty time part: a zero span.
                assert!(parse_iso8601_duration(bad).unwrap().0.is_zero());
                continue;
            }
            assert!(parse_iso8601_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(3723 * SEC + SEC / 2));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5400 * SEC));
        assert_eq!(parse_go_duration("-2s"), Some(-2 * SEC));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("1us"), Some(1_000));
        assert_eq!(parse_go_duration("1µs"), Some(1_000));
        assert_eq!(parse_go_duration(".5s"), Some(SEC / 2));
        for bad in [
            "",
            "5",
            "1x",
            "s",
            ".s",
            "1h-2m",
            "9999999999999999999h",
            "-",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad} should fail");
        }
    }

    #[test]
    fn times() {
        let now = DateTime::parse_from_rfc3339("2024-01-31T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_time("PT1S", now).unwrap(),
            now + TimeDelta::seconds(1)
        );
        assert_eq!(parse_time("1m", now).unwrap(), now + TimeDelta::seconds(60));
        assert_eq!(
            parse_time("2030-05-01T00:00:00+02:00", now)
                .unwrap()
                .to_rfc3339(),
            "2030-04-30T22:00:00+00:00"
        );
        assert_eq!(
            parse_time("R2/PT1S", now),
            Err(ScheduleError::RepetitionsNotAllowed)
        );
        assert_eq!(
            parse_time("soon", now).unwrap_err().to_string(),
            "unsupported time/duration format: soon"
        );
    }

    #[test]
    fn periods() {
        let p = Period::parse("R5/PT1S").unwrap();
        assert_eq!(p.repeats, 5);
        assert!(p.has_repeats());
        assert!(!Period::parse("").unwrap().has_repeats());
        assert!(!Period::parse("R4").unwrap().has_repeats());
        assert_eq!(
            Period::parse("R0/PT1S").unwrap_err().to_string(),
            "has zero repetitions"
        );
        assert_eq!(
            Period::parse("often").unwrap_err().to_string(),
            "parse error: unsupported duration format: often"
        );
        assert!(Period::parse("-1s").is_err());
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Period::parse("P1MT1H").unwrap().following(t).to_rfc3339(),
            "2024-02-01T01:00:00+00:00"
        );
    }

    #[test]
    fn resumes_on_the_grid() {
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = Period::parse("500ms").unwrap();
        let now = t + TimeDelta::milliseconds(1_200);
        assert_eq!(
            p.first_at_or_after(t, now),
            t + TimeDelta::milliseconds(1_500)
        );
        assert_eq!(p.first_at_or_after(now, t), now, "future ticks stay");
        let on = t + TimeDelta::milliseconds(1_000);
        assert_eq!(p.first_at_or_after(t, on), on, "a tick exactly now fires");
        let m = Period::parse("P1M").unwrap();
        let later = t + TimeDelta::days(40);
        assert_eq!(
            m.first_at_or_after(t, later).to_rfc3339(),
            "2024-03-01T00:00:00+00:00"
        );
        let none = Period::parse("").unwrap();
        assert_eq!(none.first_at_or_after(t, later), t);
    }
}
