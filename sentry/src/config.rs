//! Sentry's view of a Dapr `Configuration` (`spec.mtls`).
//!
//! Standalone: `--config` is a path to a YAML Configuration; a missing file
//! means defaults. Kubernetes: `--config` names a `Configuration` object in
//! the control-plane namespace (default `daprsystem`); a missing object
//! means defaults.

use std::{collections::BTreeMap, path::Path, time::Duration};

use dapr_rs_proto::generated::dapr::proto::sentry::v1::sign_certificate_request::TokenValidator;
use dapr_security::SignPolicy;
use serde::Deserialize;
use thiserror::Error;

use crate::duration::{DurationError, parse_go_duration};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading configuration {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing configuration: {0}")]
    Parse(String),
    #[error("configuration spec.mtls.{field}: {source}")]
    Duration {
        field: &'static str,
        source: DurationError,
    },
    #[error("configuration spec.mtls.workloadCertTTL must be positive")]
    ZeroTtl,
    #[error("invalid token validator name {0:?}; supported values: 'jwks'")]
    UnknownValidator(String),
    #[error(
        "invalid token validator: the built-in 'kubernetes' and 'insecure' validators cannot be configured manually"
    )]
    BuiltinValidator,
}

#[derive(Debug, Default, Deserialize)]
struct Configuration {
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    mtls: Option<MtlsSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MtlsSpec {
    #[serde(default, rename = "workloadCertTTL")]
    workload_cert_ttl: Option<String>,
    #[serde(default)]
    allowed_clock_skew: Option<String>,
    #[serde(default)]
    token_validators: Vec<ValidatorSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct ValidatorSpec {
    name: String,
    #[serde(default)]
    options: Option<BTreeMap<String, serde_json::Value>>,
}

/// Options of the JWKS validator (`tokenValidators[].options`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwksOptions {
    /// A path to a JWKS file, an inline JWKS JSON document, or base64 of one.
    pub source: String,
    /// How often a file source is re-read.
    pub min_refresh_interval: Option<Duration>,
}

/// Which validators are enabled, and the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorsConfig {
    pub default: TokenValidator,
    pub insecure: bool,
    pub kubernetes: bool,
    pub jwks: Option<JwksOptions>,
}

/// Everything Sentry takes from a Configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentryConfig {
    pub policy: SignPolicy,
    pub validators: ValidatorsConfig,
}

impl SentryConfig {
    /// Defaults: 24h certificates, 15m skew; the `insecure` validator when
    /// self-hosted, the `kubernetes` one on Kubernetes.
    pub fn defaults(kubernetes: bool) -> Self {
        Self {
            policy: SignPolicy::default(),
            validators: ValidatorsConfig {
                default: if kubernetes {
                    TokenValidator::Kubernetes
                } else {
                    TokenValidator::Insecure
                },
                insecure: !kubernetes,
                kubernetes,
                jwks: None,
            },
        }
    }

    /// Parses a Configuration document (YAML or JSON).
    pub fn parse(document: &str, kubernetes: bool) -> Result<Self, ConfigError> {
        let cfg: Configuration =
            serde_saphyr::from_str(document).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::from_configuration(cfg, kubernetes)
    }

    /// Parses the JSON `spec` of a Configuration object from the API server.
    pub fn from_spec_json(spec: &serde_json::Value, kubernetes: bool) -> Result<Self, ConfigError> {
        let spec: Spec =
            serde_json::from_value(spec.clone()).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::from_configuration(Configuration { spec }, kubernetes)
    }

    /// Reads a standalone Configuration file; a missing file yields defaults.
    pub fn load_file(path: &Path, kubernetes: bool) -> Result<Option<Self>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::parse(&s, kubernetes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn from_configuration(cfg: Configuration, kubernetes: bool) -> Result<Self, ConfigError> {
        let mut out = Self::defaults(kubernetes);
        let Some(mtls) = cfg.spec.mtls else {
            return Ok(out);
        };
        if let Some(ttl) = mtls.workload_cert_ttl.filter(|s| !s.is_empty()) {
            out.policy.workload_ttl =
                parse_go_duration(&ttl).map_err(|source| ConfigError::Duration {
                    field: "workloadCertTTL",
                    source,
                })?;
            if out.policy.workload_ttl.is_zero() {
                return Err(ConfigError::ZeroTtl);
            }
        }
        if let Some(skew) = mtls.allowed_clock_skew.filter(|s| !s.is_empty()) {
            out.policy.clock_skew =
                parse_go_duration(&skew).map_err(|source| ConfigError::Duration {
                    field: "allowedClockSkew",
                    source,
                })?;
        }
        if !mtls.token_validators.is_empty() {
            // A custom validator replaces the self-hosted default; on
            // Kubernetes the built-in validator stays.
            if !kubernetes {
                out.validators.insecure = false;
                out.validators.default = TokenValidator::Unknown;
            }
            for v in mtls.token_validators {
                match v.name.to_ascii_lowercase().as_str() {
                    "jwks" => {
                        let opts = stringify(v.options.unwrap_or_default());
                        let min_refresh_interval = match opts.get("minRefreshInterval") {
                            Some(s) if !s.is_empty() => {
                                Some(parse_go_duration(s).map_err(|source| {
                                    ConfigError::Duration {
                                        field: "tokenValidators.options.minRefreshInterval",
                                        source,
                                    }
                                })?)
                            }
                            _ => None,
                        };
                        out.validators.jwks = Some(JwksOptions {
                            source: opts.get("source").cloned().unwrap_or_default(),
                            min_refresh_interval,
                        });
                    }
                    "kubernetes" | "insecure" => return Err(ConfigError::BuiltinValidator),
                    _ => return Err(ConfigError::UnknownValidator(v.name)),
                }
            }
        }
        Ok(out)
    }
}

/// Validator options as strings (Dapr casts them to map[string]string).
fn stringify(map: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_mode() {
        let s = SentryConfig::defaults(false);
        assert!(s.validators.insecure && !s.validators.kubernetes);
        assert_eq!(s.validators.default, TokenValidator::Insecure);
        let k = SentryConfig::defaults(true);
        assert!(!k.validators.insecure && k.validators.kubernetes);
        assert_eq!(k.validators.default, TokenValidator::Kubernetes);
        assert_eq!(s.policy.workload_ttl, Duration::from_secs(86400));
        assert_eq!(s.policy.clock_skew, Duration::from_secs(900));
    }

    #[test]
    fn parses_mtls_spec() {
        let doc = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: 1h
    allowedClockSkew: 5m
    tokenValidators:
      - name: jwks
        options:
          minRefreshInterval: 2m
          source: /etc/jwks.json
"#;
        let c = SentryConfig::parse(doc, false).unwrap();
        assert_eq!(c.policy.workload_ttl, Duration::from_secs(3600));
        assert_eq!(c.policy.clock_skew, Duration::from_secs(300));
        assert!(!c.validators.insecure);
        assert_eq!(c.validators.default, TokenValidator::Unknown);
        let j = c.validators.jwks.unwrap();
        assert_eq!(j.source, "/etc/jwks.json");
        assert_eq!(j.min_refresh_interval, Some(Duration::from_secs(120)));

        let k = SentryConfig::parse(doc, true).unwrap();
        assert!(k.validators.kubernetes);
        assert_eq!(k.validators.default, TokenValidator::Kubernetes);
    }

    #[test]
    fn rejects_bad_validators_and_durations() {
        let with = |v: &str| format!("spec:\n  mtls:\n    tokenValidators:\n      - name: {v}\n");
        assert!(matches!(
            SentryConfig::parse(&with("insecure"), false),
            Err(ConfigError::BuiltinValidator)
        ));
        assert!(matches!(
            SentryConfig::parse(&with("oidc"), false),
            Err(ConfigError::UnknownValidator(_))
        ));
        assert!(SentryConfig::parse("spec:\n  mtls:\n    workloadCertTTL: soon\n", false).is_err());
        assert!(SentryConfig::parse("spec:\n  mtls:\n    workloadCertTTL: 0s\n", false).is_err());
        // No mtls section: defaults.
        assert_eq!(
            SentryConfig::parse("spec: {}\n", false).unwrap(),
            SentryConfig::defaults(false)
        );
    }
}
