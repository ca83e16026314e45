//! Log setup shared by every binary: `--log-level` and `--log-as-json` with
//! Dapr's JSON fields (`time`, `level`, `msg`, `scope`, `app_id`,
//! `instance`, `type`, `ver`). An event's own `scope` field (API logs use
//! `dapr.runtime.http-info`) replaces the binary's scope; other fields are
//! added as top-level keys, as Dapr's `WithFields` does.

use std::fmt;

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// debug, info, warn, error or fatal (Dapr's levels).
    pub level: String,
    pub json: bool,
    /// Dapr's logger scope for this binary: `dapr.runtime`, `dapr.sentry`, ...
    pub scope: String,
    /// Empty for control-plane binaries.
    pub app_id: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid --log-level '{0}': expected debug, info, warn, error or fatal")]
    Level(String),
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// Installs the global subscriber (stderr). `DAPR_RS_LOG` (an `EnvFilter`
/// directive) overrides the level for debugging.
pub fn init(opts: &LogOptions) -> Result<(), LogError> {
    init_with(opts, "")
}

/// The logger of a control-plane binary (`scope`: `dapr.sentry`,
/// `dapr.placement`, `dapr.operator`, `dapr.injector`): Dapr's JSON fields
/// without `app_id`. `extra_directives` (e.g. `openraft=warn`) quiet
/// dependencies unless the level is `debug`.
pub fn init_control_plane(
    scope: &str,
    level: &str,
    json: bool,
    extra_directives: &str,
) -> Result<(), LogError> {
    let opts = LogOptions {
        level: level.to_ascii_lowercase(),
        json,
        scope: scope.to_owned(),
        app_id: String::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let extra = if opts.level == "debug" {
        ""
    } else {
        extra_directives
    };
    init_with(&opts, extra)
}

fn init_with(opts: &LogOptions, extra_directives: &str) -> Result<(), LogError> {
    let level = match opts.level.as_str() {
        "debug" | "info" | "warn" | "error" => opts.level.as_str(),
        "fatal" => "error",
        other => return Err(LogError::Level(other.to_owned())),
    };
    let directives = if extra_directives.is_empty() {
        level.to_owned()
    } else {
        format!("{level},{extra_directives}")
    };
    let filter =
        EnvFilter::try_from_env("DAPR_RS_LOG").unwrap_or_else(|_| EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in log files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let res = if opts.json {
        builder
            .event_format(DaprJson {
                scope: opts.scope.clone(),
                app_id: opts.app_id.clone(),
                instance: hostname(),
                version: opts.version.clone(),
            })
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
    res.map_err(|e| LogError::Install(e.to_string()))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Dapr's JSON log line.
pub struct DaprJson {
    pub scope: String,
    pub app_id: String,
    pub instance: String,
    pub version: String,
}

impl<S, N> FormatEvent<S, N> for DaprJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut v = Fields::default();
        event.record(&mut v);
        let mut line = v.map;
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        let scope = line
            .remove("scope")
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_else(|| self.scope.clone());
        line.insert("time".into(), chrono::Utc::now().to_rfc3339().into());
        line.insert("level".into(), level.into());
        line.insert("msg".into(), v.message.into());
        line.insert("scope".into(), scope.into());
        if !self.app_id.is_empty() {
            line.insert("app_id".into(), self.app_id.clone().into());
        }
        line.insert("instance".into(), self.instance.clone().into());
        line.insert("type".into(), "log".into());
        line.insert("ver".into(), self.version.clone().into());
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    map: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.map.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.map
                .insert(field.name().to_owned(), format!("{value:?}").into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_daprs_fields() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .event_format(DaprJson {
                scope: "dapr.runtime".into(),
                app_id: "shop".into(),
                instance: "host1".into(),
                version: "1.2.3".into(),
            })
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!("dapr initialized. Status: Running");
            tracing::info!(
                scope = "dapr.runtime.http-info",
                code = 200u64,
                "HTTP API Called"
            );
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let l = &lines[0];
        for k in [
            "time", "level", "msg", "scope", "app_id", "instance", "type", "ver",
        ] {
            assert!(l.get(k).is_some(), "missing {k} in {l}");
        }
        assert_eq!(l["msg"], "dapr initialized. Status: Running");
        assert_eq!(l["scope"], "dapr.runtime");
        assert_eq!(l["type"], "log");
        assert_eq!(lines[1]["scope"], "dapr.runtime.http-info");
        assert_eq!(lines[1]["code"], 200);
    }

    #[test]
    fn bad_level_is_an_error() {
        let o = LogOptions {
            level: "loud".into(),
            json: false,
            scope: "x".into(),
            app_id: String::new(),
            version: String::new(),
        };
        assert!(matches!(init(&o), Err(LogError::Level(_))));
    }
}
