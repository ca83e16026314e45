//! The Configuration sections this crate reads: `metric`/`metrics`,
//! `tracing` and `logging`, with Dapr's field names and defaults.

use serde::Deserialize;

use crate::metrics::{DEFAULT_LATENCY_BUCKETS_MS, MetricsError};

/// The three sections, taken from a Configuration spec's JSON.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityConfig {
    pub metrics: MetricSpec,
    pub tracing: Option<TracingSpec>,
    pub logging: LoggingSpec,
}

#[derive(Debug, thiserror::Error)]
#[error("Configuration {section}: {source}")]
pub struct ConfigError {
    section: &'static str,
    source: serde_json::Error,
}

impl ObservabilityConfig {
    /// Reads the sections from the spec's unparsed fields (`metrics` wins
    /// over the older `metric`, as in Dapr).
    pub fn from_spec(
        spec: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ConfigError> {
        fn section<T: for<'de> Deserialize<'de>>(
            spec: &serde_json::Map<String, serde_json::Value>,
            name: &'static str,
        ) -> Result<Option<T>, ConfigError> {
            spec.get(name)
                .filter(|v| !v.is_null())
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()
                .map_err(|source| ConfigError {
                    section: name,
                    source,
                })
        }
        let metrics = match section::<MetricSpec>(spec, "metrics")? {
            Some(m) => m,
            None => section(spec, "metric")?.unwrap_or_default(),
        };
        Ok(Self {
            metrics,
            tracing: section(spec, "tracing")?,
            logging: section(spec, "logging")?.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    pub enabled: Option<bool>,
    pub record_error_codes: Option<bool>,
    pub http: Option<MetricHttp>,
    pub latency_distribution_buckets: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricHttp {
    pub increased_cardinality: Option<bool>,
    #[serde(default)]
    pub path_matching: Vec<String>,
    pub exclude_verbs: Option<bool>,
}

impl MetricSpec {
    /// Dapr still defaults to the high-cardinality ("legacy") path labels.
    pub fn increased_cardinality(&self) -> bool {
        self.http
            .as_ref()
            .and_then(|h| h.increased_cardinality)
            .unwrap_or(true)
    }

    pub fn path_matching(&self) -> &[String] {
        self.http
            .as_ref()
            .map(|h| h.path_matching.as_slice())
            .unwrap_or(&[])
    }

    pub fn exclude_verbs(&self) -> bool {
        self.http
            .as_ref()
            .and_then(|h| h.exclude_verbs)
            .unwrap_or(false)
    }

    pub fn latency_buckets(&self) -> Result<Vec<f64>, MetricsError> {
        match &self.latency_distribution_buckets {
            Some(b) if !b.is_empty() => {
                let v: Vec<f64> = b.iter().map(|x| *x as f64).collect();
                if v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(MetricsError::Config(format!(
                        "latencyDistributionBuckets must be increasing, got {b:?}"
                    )));
                }
                Ok(v)
            }
            _ => Ok(DEFAULT_LATENCY_BUCKETS_MS.to_vec()),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    #[serde(default)]
    pub sampling_rate: String,
    #[serde(default)]
    pub stdout: bool,
    pub zipkin: Option<ZipkinSpec>,
    pub otel: Option<OtelSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpec {
    #[serde(default)]
    pub endpoint_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtelSpec {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub endpoint_address: String,
    /// Defaults to true, as in Dapr.
    pub is_secure: Option<bool>,
    /// `key=value` strings.
    #[serde(default)]
    pub headers: Vec<String>,
    /// A Go duration string (`10s`, `500ms`).
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    pub api_logging: Option<ApiLoggingSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiLoggingSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, rename = "obfuscateURLs")]
    pub obfuscate_urls: bool,
    #[serde(default)]
    pub omit_health_checks: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dapr_sections() {
        let v = serde_json::json!({
            "metric": {"enabled": false},
            "metrics": {"enabled": true, "recordErrorCodes": true,
                        "http": {"increasedCardinality": false, "pathMatching": ["/a/{b}"]},
                        "latencyDistributionBuckets": [1, 10]},
            "tracing": {"samplingRate": "0.5", "otel": {"endpointAddress": "127.0.0.1:4317", "protocol": "grpc", "isSecure": false}},
            "logging": {"apiLogging": {"enabled": true, "obfuscateURLs": true, "omitHealthChecks": true}}
        });
        let c = ObservabilityConfig::from_spec(v.as_object().unwrap()).unwrap();
        assert_eq!(c.metrics.enabled, Some(true));
        assert!(!c.metrics.increased_cardinality());
        assert_eq!(c.metrics.latency_buckets().unwrap(), vec![1.0, 10.0]);
        let t = c.tracing.unwrap();
        assert_eq!(t.sampling_rate, "0.5");
        assert_eq!(t.otel.unwrap().is_secure, Some(false));
        let a = c.logging.api_logging.unwrap();
        assert!(a.enabled && a.obfuscate_urls && a.omit_health_checks);
    }

    #[test]
    fn bad_section_is_an_error_naming_it() {
        let v = serde_json::json!({"tracing": {"samplingRate": 5}});
        let e = ObservabilityConfig::from_spec(v.as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("tracing"), "{e}");
        let spec = MetricSpec {
            latency_distribution_buckets: Some(vec![5, 1]),
            ..Default::default()
        };
        assert!(spec.latency_buckets().is_err());
    }
}
