//! `middleware.http.ratelimit`: at most `maxRequestsPerSecond` requests per
//! second from one client to one path.
//!
//! As in Dapr (which uses tollbooth with its defaults):
//! - one token bucket per `client IP | URL path`, refilled at
//!   `maxRequestsPerSecond` tokens a second and holding at most
//!   `max(1, trunc(maxRequestsPerSecond))` (the burst), full at first;
//! - the client IP is the last `X-Forwarded-For` entry, else `X-Real-IP`, else
//!   the peer address; IPv6 addresses count by their /64 prefix; without any,
//!   every request shares the `0.0.0.0` bucket;
//! - every response gets `X-Rate-Limit-Limit` (`%.2f`), `X-Rate-Limit-Duration:
//!   1`, `X-Rate-Limit-Request-Forwarded-For` (when sent),
//!   `X-Rate-Limit-Request-Remote-Addr`, `RateLimit-Limit`, `RateLimit-Reset: 1`
//!   and `RateLimit-Remaining`;
//! - an empty bucket answers `429` `text/plain; charset=utf-8` "You have
//!   reached maximum request limit.".
//!
//! `maxRequestsPerSecond` defaults to 100 when absent (Dapr's code does so,
//! though its metadata schema marks it required) and must be > 0.
//!
//! The peer address comes from axum's `ConnectInfo<SocketAddr>`: serve the
//! router with `into_make_service_with_connect_info::<SocketAddr>()`.
//! Like Dapr, the forwarding headers are trusted as sent.
//!
//! Unlike tollbooth, which keeps buckets for ten years, buckets that have
//! refilled completely are dropped (a fresh bucket is the same), so memory
//! stays bounded by the clients of the last `burst / rate` seconds.

use std::{
    collections::HashMap,
    net::{Ipv6Addr, SocketAddr},
    sync::Mutex,
    time::Instant,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderName, StatusCode, header},
    response::Response,
};
use dapr_components::ComponentMetadata;

use super::header_value;

const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 100.0;
const LIMIT_MESSAGE: &str = "You have reached maximum request limit.";
const MIN_SWEEP: usize = 1024;

pub(super) struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    sweep_at: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(super) fn from_metadata(md: &ComponentMetadata) -> Result<Self, String> {
        let rate = md
            .get_parsed::<f64>("maxRequestsPerSecond")
            .map_err(|e| e.to_string())?
            .unwrap_or(DEFAULT_MAX_REQUESTS_PER_SECOND);
        if rate <= 0.0 || !rate.is_finite() {
            return Err("metadata property maxRequestsPerSecond must be a positive value".into());
        }
        Ok(Self::new(rate))
    }

    fn new(rate: f64) -> Self {
        Self {
            rate,
            burst: rate.max(1.0).trunc(),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Takes a token from `key`'s bucket: whether there was one, and the
    /// whole tokens left.
    fn take(&self, key: &str, now: Instant) -> (bool, u64) {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.map.len() >= buckets.sweep_at {
            let (rate, burst) = (self.rate, self.burst);
            buckets.map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            buckets.sweep_at = (buckets.map.len() * 2).max(MIN_SWEEP);
        }
        let bucket = buckets.map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            (true, bucket.tokens.trunc() as u64)
        } else {
            (false, 0)
        }
    }

    pub(super) fn apply(
        &self,
        req: &Request,
        response_headers: &mut HeaderMap,
    ) -> Option<Response> {
        let headers = req.headers();
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| *a);
        let ip = canonical_ip(&client_ip(headers, peer));
        let ip = if ip.is_empty() {
            "0.0.0.0".to_owned()
        } else {
            ip
        };
        let key = format!("{ip}|{}|", req.uri().path());

        let mut set = |name: &str, value: &str| {
            if let (Ok(n), Some(v)) = (HeaderName::try_from(name), header_value(value)) {
                response_headers.append(n, v);
            }
        };
        set("x-rate-limit-limit", &format!("{:.2}", self.rate));
        set("x-rate-limit-duration", "1");
        if let Some(xff) = first_header(headers, "x-forwarded-for")
            && !xff.trim().is_empty()
        {
            set("x-rate-limit-request-forwarded-for", xff);
        }
        if let Some(peer) = peer {
            set("x-rate-limit-request-remote-addr", &peer.to_string());
        }

        let (allowed, remaining) = self.take(&key, Instant::now());
        set("ratelimit-limit", &format!("{}", self.rate.round() as u64));
        set("ratelimit-reset", "1");
        set("ratelimit-remaining", &remaining.to_string());
        if allowed {
            return None;
        }
        tracing::debug!(client = %ip, path = %req.uri().path(), "rate limit reached");
        let mut resp = Response::new(Body::from(LIMIT_MESSAGE));
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Some(resp)
    }
}

fn first_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The client address as tollbooth looks it up: `X-Forwarded-For` (last
/// entry), `X-Real-IP`, then the peer address.
fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    if let Some(xff) = first_header(headers, "x-forwarded-for")
        && !xff.is_empty()
    {
        return xff.rsplit(',').next().unwrap_or("").trim().to_owned();
    }
    if let Some(real) = first_header(headers, "x-real-ip")
        && !real.is_empty()
    {
        return real.to_owned();
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_default()
}

/// IPv4 addresses as they are; IPv6 addresses reduced to their /64 prefix.
fn canonical_ip(ip: &str) -> String {
    match ip.chars().find(|c| *c == '.' || *c == ':') {
        Some(':') => match ip.parse::<Ipv6Addr>() {
            Ok(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                Ipv6Addr::from(octets).to_string()
            }
            Err(_) => ip.to_owned(),
        },
        _ => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_refills_at_rate_up_to_burst() {
        let rl = RateLimit::new(2.0);
        let t0 = Instant::now();
        assert_eq!(rl.take("k", t0), (true, 1));
        assert_eq!(rl.take("k", t0), (true, 0));
        assert_eq!(rl.take("k", t0), (false, 0));
        // Half a second refills one token at 2/s.
        assert_eq!(rl.take("k", t0 + Duration::from_millis(500)), (true, 0));
        assert!(!rl.take("k", t0 + Duration::from_millis(500)).0);
        // Long idle: back to the burst, not beyond.
        assert_eq!(rl.take("k", t0 + Duration::from_secs(60)), (true, 1));
        // Other keys have their own bucket.
        assert_eq!(rl.take("other", t0), (true, 1));
    }

    #[test]
    fn fractional_rates_have_a_burst_of_one() {
        let rl = RateLimit::new(0.5);
        let t0 = Instant::now();
        assert!(rl.take("k", t0).0);
        assert!(!rl.take("k", t0 + Duration::from_secs(1)).0);
        assert!(rl.take("k", t0 + Duration::from_secs(2)).0);
        assert_eq!(RateLimit::new(2.9).burst, 2.0);
    }

    #[test]
    fn full_buckets_are_swept() {
        let rl = RateLimit::new(10.0);
        let t0 = Instant::now();
        for i in 0..MIN_SWEEP {
            rl.take(&format!("k{i}"), t0);
        }
        rl.take("late", t0 + Duration::from_secs(5));
        let b = rl.buckets.lock().unwrap();
        assert_eq!(b.map.len(), 1);
    }

    #[test]
    fn client_ip_lookup_order_and_canonical_form() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(&h, Some(peer)), "10.0.0.9");
        assert_eq!(client_ip(&h, None), "");
        h.insert("x-real-ip", "192.0.2.7".parse().unwrap());
        assert_eq!(client_ip(&h, Some(peer)), "192.0.2.7");
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.5".parse().unwrap(),
        );
        assert_eq!(client_ip(&h, Some(peer)), "203.0.113.5");
        assert_eq!(canonical_ip("203.0.113.5"), "203.0.113.5");
        assert_eq!(canonical_ip("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(canonical_ip("not-an-ip"), "not-an-ip");
    }

    #[test]
    fn metadata_validation() {
        let md = |v: &str| ComponentMetadata::new("rl", "app").with("maxRequestsPerSecond", v);
        assert_eq!(RateLimit::from_metadata(&md("10")).unwrap().rate, 10.0);
        assert_eq!(RateLimit::from_metadata(&md("2.5")).unwrap().burst, 2.0);
        assert!(RateLimit::from_metadata(&md("0")).is_err());
        assert!(RateLimit::from_metadata(&md("-1")).is_err());
        assert!(RateLimit::from_metadata(&md("lots")).is_err());
        let default = ComponentMetadata::new("rl", "app");
        assert_eq!(RateLimit::from_metadata(&default).unwrap().rate, 100.0);
    }
}
