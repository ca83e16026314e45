//! Command line, with Dapr's flag names and defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// Raft-replicated service telling sidecars which host owns which actor.
#[derive(Parser, Debug, Clone)]
#[command(name = "dapr-placement", version, about)]
pub struct Options {
    /// Placement server (Raft node) id.
    #[arg(long, default_value = "dapr-placement-0")]
    pub id: String,
    /// Raft peers, `id=host:port`, comma-separated or repeated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dapr-placement-0=127.0.0.1:8201"
    )]
    pub initial_cluster: Vec<String>,
    /// Keep the Raft log in memory (ignored when --raft-logstore-path is set).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub inmem_store_enabled: bool,
    /// Directory of the persistent Raft log (redb file `raft.redb`).
    #[arg(long)]
    pub raft_logstore_path: Option<PathBuf>,
    /// gRPC port sidecars connect to.
    #[arg(long, default_value_t = 50005)]
    pub port: u16,
    /// Listen address of the gRPC server (all interfaces when empty).
    #[arg(long, default_value = "")]
    pub listen_address: String,
    /// Port of the healthz (and /placement/state) server.
    #[arg(long, default_value_t = 8080)]
    pub healthz_port: u16,
    /// Listen address of the healthz server (all interfaces when empty).
    #[arg(long, default_value = "")]
    pub healthz_listen_address: String,
    /// Prometheus metrics port.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Serve metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// Listen address of the metrics server (all interfaces when empty).
    #[arg(long, default_value = "")]
    pub metrics_listen_address: String,
    /// Serve the membership at GET /placement/state on the healthz port.
    #[arg(long, env = "DAPR_PLACEMENT_METADATA_ENABLED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metadata_enabled: bool,
    /// Virtual nodes per host on the consistent-hash ring.
    #[arg(long = "replicationFactor", default_value_t = 100)]
    pub replication_factor: i64,
    /// Upper bound of the actor API level announced in tables (<0: none).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub max_api_level: i64,
    /// Lower bound of the actor API level announced in tables.
    #[arg(long, default_value_t = 0)]
    pub min_api_level: u32,
    /// HTTP/2 keepalive ping interval towards sidecars.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub keepalive_time: Duration,
    /// HTTP/2 keepalive ping timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Time a dissemination phase may take; sidecars that have not
    /// acknowledged by then are disconnected.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub disseminate_timeout: Duration,
    /// Batching window: membership changes arriving within it are committed
    /// and disseminated together.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub disseminate_coalesce_window: Duration,
    /// A sidecar that heartbeats is dropped after this long without a report.
    #[arg(long, default_value = "3s", value_parser = parse_duration, hide = true)]
    pub heartbeat_timeout: Duration,
    /// After winning leadership, hosts of the replicated membership that have
    /// not reconnected within this time are removed.
    #[arg(long, default_value = "6s", value_parser = parse_duration, hide = true)]
    pub faulty_host_detect_duration: Duration,
    /// Raft snapshot after this many log entries (older entries are purged).
    #[arg(long, default_value_t = 1000, hide = true)]
    pub raft_snapshot_threshold: u64,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    /// Serve gRPC with mTLS: a certificate from Sentry for
    /// `spiffe://<trust-domain>/ns/<NAMESPACE>/dapr-placement`; sidecars
    /// must present certificates chained to the trust anchors.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_enabled: bool,
    /// Trust domain of the control plane.
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// Trust anchors file (PEM), reloaded when it changes.
    #[arg(long, default_value = "/var/run/secrets/dapr.io/tls/ca.crt")]
    pub trust_anchors_file: String,
    /// Sentry address (default `dapr-sentry.<NAMESPACE>.svc:443`).
    #[arg(long, default_value = "")]
    pub sentry_address: String,
    /// Runtime mode: standalone or kubernetes.
    #[arg(long, default_value = "standalone")]
    pub mode: String,
}

/// A Raft peer from `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Placement id.
    pub id: String,
    /// `host:port` of its Raft server.
    pub addr: String,
}

/// Invalid option values.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// An `--initial-cluster` entry is not `id=host:port`.
    #[error("invalid --initial-cluster entry {0:?}: expected id=host:port")]
    Peer(String),
    /// `--id` is not in `--initial-cluster`.
    #[error("--id {0:?} is not listed in --initial-cluster")]
    SelfNotInCluster(String),
    /// Two peers share an id.
    #[error("--initial-cluster lists {0:?} twice")]
    DuplicatePeer(String),
    /// A listen address does not parse.
    #[error("invalid listen address {0:?}")]
    ListenAddress(String),
    /// Replication factor out of range.
    #[error("--replicationFactor must be between 1 and 100000, got {0}")]
    ReplicationFactor(i64),
}

impl Options {
    /// Parses the process arguments, accepting Go-style single-dash flags.
    pub fn from_env() -> Self {
        Self::parse_from(normalize_args(std::env::args()))
    }

    /// The peers, in the given order.
    pub fn peers(&self) -> Result<Vec<Peer>, OptionsError> {
        let mut peers: Vec<Peer> = Vec::new();
        for entry in self
            .initial_cluster
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| OptionsError::Peer(entry.into()))?;
            let (id, addr) = (id.trim(), addr.trim());
            if id.is_empty()
                || addr
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(OptionsError::Peer(entry.into()));
            }
            if peers.iter().any(|p| p.id == id) {
                return Err(OptionsError::DuplicatePeer(id.into()));
            }
            peers.push(Peer {
                id: id.into(),
                addr: addr.into(),
            });
        }
        if !peers.iter().any(|p| p.id == self.id) {
            return Err(OptionsError::SelfNotInCluster(self.id.clone()));
        }
        if !(1..=100_000).contains(&self.replication_factor) {
            return Err(OptionsError::ReplicationFactor(self.replication_factor));
        }
        Ok(peers)
    }

    /// `--max-api-level`, `None` when negative.
    pub fn max_api_level(&self) -> Option<u32> {
        u32::try_from(self.max_api_level).ok()
    }
}

/// `address:port` to bind, all interfaces when `address` is empty.
pub fn bind_addr(address: &str, port: u16) -> Result<SocketAddr, OptionsError> {
    let host = if address.is_empty() {
        "0.0.0.0"
    } else {
        address
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| OptionsError::ListenAddress(address.into()))?;
    Ok(SocketAddr::new(ip, port))
}

/// The Raft bind address for a peer address: its IP, or all interfaces when
/// the peer is named by a DNS name.
pub fn raft_bind_addr(peer_addr: &str) -> Result<SocketAddr, OptionsError> {
    let (host, port) = peer_addr
        .rsplit_once(':')
        .ok_or_else(|| OptionsError::Peer(peer_addr.into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| OptionsError::Peer(peer_addr.into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    Ok(SocketAddr::new(ip, port))
}

/// Go's flag package accepts `-flag` as well as `--flag`; clap only the
/// latter. Rewrite `-name...` (a letter after one dash, longer than one
/// letter) to `--name...`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let b = a.as_bytes();
            if i > 0 && b.len() > 2 && b[0] == b'-' && b[1] != b'-' && b[1].is_ascii_alphabetic() {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Parses a Go duration (`300ms`, `2s`, `1m30s`, `1.5h`, `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn single_dash_flags_and_peers() {
        let args = normalize_args(
            [
                "dapr-placement",
                "-id",
                "p1",
                "--initial-cluster",
                "p0=127.0.0.1:8201,p1=127.0.0.1:8202",
                "-replicationFactor",
                "50",
                "--metadata-enabled",
            ]
            .map(String::from),
        );
        let o = Options::parse_from(args);
        assert_eq!(o.id, "p1");
        assert_eq!(o.replication_factor, 50);
        assert!(o.metadata_enabled);
        let peers = o.peers().expect("valid peers");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].addr, "127.0.0.1:8202");
        assert_eq!(o.disseminate_timeout, Duration::from_secs(8));
    }

    #[test]
    fn bad_peers() {
        let mut o = Options::parse_from(["dapr-placement"]);
        o.initial_cluster = vec!["nope".into()];
        assert!(o.peers().is_err());
        o.initial_cluster = vec!["other=127.0.0.1:1".into()];
        assert!(matches!(o.peers(), Err(OptionsError::SelfNotInCluster(_))));
    }
}
