//! `bindings.postgresql` (alias `bindings.postgres`): `exec`, `query` and
//! `close` against PostgreSQL.
//!
//! The statement comes from the `sql` request metadata, its positional
//! parameters (`$1`, `$2`, ...) from `params`, a JSON array. `exec` reports
//! `rows-affected`; `query` returns the rows as a JSON array of arrays of
//! column values, as Dapr's component. Every response carries `operation`,
//! `sql`, `start-time`, `end-time` and `duration`. Parameters travel in text
//! form so PostgreSQL converts them to the column types itself.

use std::{error::Error as StdError, sync::Arc};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;
use tokio_postgres::{
    Client, Config, NoTls, Row,
    config::SslMode,
    types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked},
};

use super::{BindingError, InvokeRequest, InvokeResponse, OutputBinding, sql};
use crate::ComponentMetadata;

pub struct PostgresBinding {
    name: String,
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    client: Mutex<Option<Arc<Client>>>,
    closed: std::sync::atomic::AtomicBool,
}

impl PostgresBinding {
    pub async fn connect(md: &ComponentMetadata) -> Result<Self, BindingError> {
        let raw = md
            .get_any(&["connectionString", "url"])
            .ok_or_else(|| crate::MetadataError::Missing("connectionString".to_owned()))?;
        let (config, verify) = parse_connection_string(raw)
            .map_err(|e| BindingError::invalid_metadata("connectionString", e))?;
        let tls = if verify {
            Some(tls_connector(md.get("sslRootCert"))?)
        } else {
            None
        };
        let binding = Self {
            name: md.name.clone(),
            config,
            tls,
            client: Mutex::new(None),
            closed: Default::default(),
        };
        binding
            .client()
            .await
            .map_err(|e| BindingError::Connect(e.to_string()))?;
        Ok(binding)
    }

    /// The shared connection, reconnecting when it dropped.
    async fn client(&self) -> Result<Arc<Client>, BindingError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let name = self.name.clone();
        let client = match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(pg_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(binding = %name, "postgres connection ended: {e}");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(pg_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(binding = %name, "postgres connection ended: {e}");
                    }
                });
                client
            }
        };
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }
}

/// libpq key/value or URL form. `sslmode` `disable`/`allow`/`prefer` connect
/// in plain text; `require`/`verify-ca`/`verify-full` use TLS with a verified
/// server certificate (true when TLS is wanted).
fn parse_connection_string(raw: &str) -> Result<(Config, bool), String> {
    let mut verify = false;
    let mut cleaned = raw.to_owned();
    for mode in ["verify-full", "verify-ca", "require"] {
        if cleaned.contains(&format!("sslmode={mode}")) {
            verify = true;
            cleaned = cleaned.replace(&format!("sslmode={mode}"), "sslmode=disable");
        }
    }
    for mode in ["allow", "prefer"] {
        cleaned = cleaned.replace(&format!("sslmode={mode}"), "sslmode=disable");
    }
    let mut config: Config = cleaned.parse().map_err(|e| format!("{e}"))?;
    config.ssl_mode(SslMode::Disable);
    if config.get_hosts().is_empty() {
        return Err("no host given".to_owned());
    }
    Ok((config, verify))
}

fn tls_connector(
    root: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, BindingError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| BindingError::invalid_metadata("sslRootCert", e.to_string()))?;
            roots.add_parsable_certificates(certs);
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BindingError::Connect(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn pg_err(e: tokio_postgres::Error) -> BindingError {
    // The driver's Display hides the server's message in the source.
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    BindingError::Backend(msg)
}

/// A parameter sent in text form: PostgreSQL parses it as the column type.
#[derive(Debug)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

fn text_params(values: &[serde_json::Value]) -> Vec<TextParam> {
    values
        .iter()
        .map(|v| {
            TextParam(match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
        })
        .collect()
}

/// NUMERIC in PostgreSQL's binary form, rendered as its decimal text.
struct Numeric(String);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let word = |i: usize| -> Result<i16, Box<dyn StdError + Sync + Send>> {
            raw.get(i..i + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "short numeric".into())
        };
        let ndigits = word(0)? as usize;
        let weight = word(2)? as i32;
        let sign = word(4)? as u16;
        let dscale = word(6)? as usize;
        match sign {
            0xC000 => return Ok(Numeric("NaN".into())),
            0xD000 => return Ok(Numeric("Infinity".into())),
            0xF000 => return Ok(Numeric("-Infinity".into())),
            _ => {}
        }
        let digits: Vec<i16> = (0..ndigits)
            .map(|i| word(8 + 2 * i))
            .collect::<Result<_, _>>()?;
        let mut int_part = String::new();
        for w in 0..=weight.max(-1) {
            let d = digits.get(w as usize).copied().unwrap_or(0);
            if int_part.is_empty() {
                int_part = d.to_string();
            } else {
                int_part.push_str(&format!("{d:04}"));
            }
        }
        if int_part.is_empty() {
            int_part.push('0');
        }
        let mut frac = String::new();
        let mut idx = weight + 1;
        while frac.len() < dscale {
            let d = if idx < 0 {
                0
            } else {
                digits.get(idx as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            idx += 1;
        }
        frac.truncate(dscale);
        let sign = if sign == 0x4000 { "-" } else { "" };
        Ok(Numeric(if frac.is_empty() {
            format!("{sign}{int_part}")
        } else {
            format!("{sign}{int_part}.{frac}")
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Raw text of any type whose binary form is its text (enums, citext...).
struct RawText(String);

impl<'a> FromSql<'a> for RawText {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawText(String::from_utf8_lossy(raw).into_owned()))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// One column value as JSON, the way Go's encoding of pgx values reads.
fn column_json(row: &Row, i: usize) -> Result<serde_json::Value, BindingError> {
    use serde_json::Value as J;
    let ty = row.columns()[i].type_().clone();
    let conv = |e: tokio_postgres::Error| {
        BindingError::Backend(format!(
            "cannot read column '{}' ({}): {e}",
            row.columns()[i].name(),
            ty.name()
        ))
    };
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<_, Option<$t>>(i).map_err(conv)?
        };
    }
    Ok(match ty {
        Type::BOOL => get!(bool).map_or(J::Null, J::Bool),
        Type::INT2 => get!(i16).map_or(J::Null, J::from),
        Type::INT4 => get!(i32).map_or(J::Null, J::from),
        Type::INT8 => get!(i64).map_or(J::Null, J::from),
        Type::OID => get!(u32).map_or(J::Null, J::from),
        Type::FLOAT4 => get!(f32).map_or(J::Null, |v| J::from(v as f64)),
        Type::FLOAT8 => get!(f64).map_or(J::Null, J::from),
        Type::NUMERIC => get!(Numeric).map_or(J::Null, |n| {
            serde_json::from_str::<serde_json::Number>(&n.0)
                .map(J::Number)
                .unwrap_or(J::String(n.0))
        }),
        Type::JSON | Type::JSONB => get!(serde_json::Value).unwrap_or(J::Null),
        Type::BYTEA => get!(Vec<u8>).map_or(J::Null, |b| {
            use base64::Engine as _;
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }),
        Type::TIMESTAMPTZ => get!(chrono::DateTime<chrono::Utc>).map_or(J::Null, |t| {
            J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        Type::TIMESTAMP => get!(chrono::NaiveDateTime).map_or(J::Null, |t| {
            J::String(
                t.and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            )
        }),
        Type::DATE => {
            get!(chrono::NaiveDate).map_or(J::Null, |d| J::String(format!("{d}T00:00:00Z")))
        }
        Type::UUID => get!(uuid::Uuid).map_or(J::Null, |u| J::String(u.to_string())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get!(String).map_or(J::Null, J::String)
        }
        ref t if matches!(t.kind(), Kind::Enum(_)) => {
            get!(RawText).map_or(J::Null, |s| J::String(s.0))
        }
        ref t => {
            // Types without a JSON mapping here: text when the binary form
            // is text, otherwise a clear error naming the column and type.
            match row.try_get::<_, Option<String>>(i) {
                Ok(v) => v.map_or(J::Null, J::String),
                Err(_) => {
                    return Err(BindingError::Backend(format!(
                        "column '{}' has type {} which this binding cannot return; cast it in the query (e.g. ::text)",
                        row.columns()[i].name(),
                        t.name()
                    )));
                }
            }
        }
    })
}

#[async_trait]
impl OutputBinding for PostgresBinding {
    fn operations(&self) -> Vec<String> {
        sql::OPERATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation == sql::CLOSE {
            self.closed
                .store(true, std::sync::atomic::Ordering::Release);
            self.client.lock().await.take();
            return Ok(InvokeResponse::default());
        }
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(BindingError::Closed);
        }
        let cmd = sql::Command::from_request(&req)?;
        let client = self.client().await?;
        let params = text_params(&cmd.params);
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let mut resp = cmd.start();
        match cmd.operation.as_str() {
            sql::EXEC => {
                let n = client
                    .execute(cmd.sql.as_str(), &refs)
                    .await
                    .map_err(pg_err)?;
                resp.metadata
                    .insert(sql::ROWS_AFFECTED.to_owned(), n.to_string());
            }
            sql::QUERY => {
                let rows = client
                    .query(cmd.sql.as_str(), &refs)
                    .await
                    .map_err(pg_err)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let values = (0..row.len())
                        .map(|i| column_json(row, i))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(serde_json::Value::Array(values));
                }
                resp.data = Bytes::from(
                    serde_json::to_vec(&out).map_err(|e| BindingError::Backend(e.to_string()))?,
                );
            }
            _ => unreachable_operation(&cmd.operation)?,
        }
        cmd.finish(&mut resp);
        Ok(resp)
    }

    async fn close(&self) {
        self.client.lock().await.take();
    }
}

fn unreachable_operation(op: &str) -> Result<(), BindingError> {
    Err(BindingError::InvalidRequest(format!(
        "invalid operation type: {op}. Expected {}, {}, or {}",
        sql::EXEC,
        sql::QUERY,
        sql::CLOSE
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let (c, tls) =
            parse_connection_string("host=127.0.0.1 port=15432 user=u password=p dbname=d")
                .unwrap();
        assert!(!tls);
        assert_eq!(c.get_ports(), &[15432]);
        let (_, tls) =
            parse_connection_string("postgres://u:p@127.0.0.1:5432/d?sslmode=verify-full").unwrap();
        assert!(tls);
        assert!(parse_connection_string("this is not=valid =").is_err());
    }

    #[tokio::test]
    async fn missing_connection_string_names_the_field() {
        let err = PostgresBinding::connect(&ComponentMetadata::new("db", "app"))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("connectionString")));
    }
}
