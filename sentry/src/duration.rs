//! Go `time.ParseDuration` syntax (`24h`, `1h30m`, `15m`, `500ms`, `1.5h`),
//! used by Dapr Configuration fields such as `workloadCertTTL`.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a non-negative Go duration string.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.chars().take(64).collect(),
        reason,
    };
    let s = input.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_end == 0 {
            return Err(err("expected a number"));
        }
        let number = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number out of range"))?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(|| err("overflow"))?;
        if !frac_part.is_empty() {
            if frac_part.contains('.') {
                return Err(err("malformed number"));
            }
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| err("malformed number"))?;
            let denom = 10u128.pow(digits.len() as u32);
            nanos = nanos
                .checked_add(frac * scale / denom)
                .ok_or_else(|| err("overflow"))?;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| err("overflow"))?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("overflow"))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("24h", Duration::from_secs(86400)),
            ("15m", Duration::from_secs(900)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m3.5s", Duration::from_millis(123_500)),
            ("0", Duration::ZERO),
            ("1us", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
        ];
        for (s, d) in cases {
            assert_eq!(parse_go_duration(s).unwrap(), d, "{s}");
        }
        for bad in ["", "h", "10", "-5m", "5x", "1..5s", "ms10"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
