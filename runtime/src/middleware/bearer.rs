//! `middleware.http.bearer`: requests need `Authorization: Bearer <JWT>`
//! signed by a key of a JWKS, for the configured issuer and audience.
//!
//! Metadata: `issuer` (alias `issuerURL`) and `audience` (alias `clientID`),
//! both required; `jwksURL`, where the key set is. Without `jwksURL` the key
//! set's address is read from `<issuer>/.well-known/openid-configuration`,
//! whose `issuer` must equal the configured one (as in Dapr). `jwksURL` may be
//! an `http(s)://` URL (as in Dapr), or — dapr-rs additions — a `file://`
//! path or the JWKS JSON itself.
//!
//! Checks, as in Dapr (jwx with its defaults):
//! - the header is `Bearer <token>` (prefix case-insensitive) with a token of
//!   at least 10 characters;
//! - the token names a key (`kid`) of the set, its `alg` is the key's `alg`
//!   or, for keys without one, fits the key type (RSA: RS*/PS*, EC: ES256 on
//!   P-256 / ES384 on P-384, OKP: EdDSA, oct: HS*), and the signature verifies;
//! - `iss` equals the issuer; `aud` (string or array) contains the audience;
//! - `exp`, `nbf` and `iat`, when present, hold with 5 minutes of clock skew.
//!
//! Any failure answers `401` `text/plain` "Unauthorized"; when the key set
//! cannot be loaded, `500` "Internal Server Error". Tokens are never logged.
//!
//! Remote key sets are cached and refreshed in the background after
//! `max(10 minutes, Cache-Control max-age)` (Dapr's minimum refresh
//! interval); a failed refresh keeps the keys held and retries 30 s later.
//! `file://` sets are re-read on the same schedule; inline sets never change.

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::Response,
};
use dapr_components::ComponentMetadata;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk},
};
use serde_json::Value;

const BEARER_PREFIX: &[u8] = b"bearer ";
const ALLOWED_CLOCK_SKEW: f64 = 300.0;
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DOCUMENT: usize = 4 << 20;
const MAX_REDIRECTS: usize = 5;

pub(super) struct Bearer {
    component: String,
    issuer: String,
    audience: String,
    jwks: Arc<Jwks>,
}

impl Bearer {
    pub(super) fn from_metadata(md: &ComponentMetadata) -> Result<Self, String> {
        let issuer = md
            .get_any(&["issuer", "issuerURL"])
            .ok_or("metadata property 'issuer' is required")?
            .to_owned();
        let audience = md
            .get_any(&["audience", "clientID"])
            .ok_or("metadata property 'audience' is required")?
            .to_owned();
        let jwks = Jwks::new(md.get("jwksURL"), &issuer)?;
        Ok(Self {
            component: md.name.clone(),
            issuer,
            audience,
            jwks: Arc::new(jwks),
        })
    }

    pub(super) async fn prefetch(&self) -> Result<(), String> {
        self.jwks.keys().await.map(|_| ())
    }

    /// Takes the headers only: `&Request` is not `Send` (its body is not `Sync`).
    pub(super) async fn apply(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(token) = bearer_token(headers) else {
            tracing::debug!(component = %self.component, "no bearer token in the request");
            return Some(plain(StatusCode::UNAUTHORIZED));
        };
        let keys = match self.jwks.keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(component = %self.component, "failed to load the JWKS: {e}");
                return Some(plain(StatusCode::INTERNAL_SERVER_ERROR));
            }
        };
        match verify(token, &keys, &self.issuer, &self.audience, unix_now()) {
            Ok(()) => None,
            Err(reason) => {
                tracing::debug!(component = %self.component, "bearer token rejected: {reason}");
                Some(plain(StatusCode::UNAUTHORIZED))
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` header, as Dapr takes it.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    if value.len() < BEARER_PREFIX.len() + 1
        || !value[..BEARER_PREFIX.len()].eq_ignore_ascii_case(BEARER_PREFIX)
    {
        return None;
    }
    let token = std::str::from_utf8(&value[BEARER_PREFIX.len()..]).ok()?;
    (token.len() >= 10).then_some(token)
}

/// A status with its reason phrase as a plain-text body.
fn plain(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::from(status.canonical_reason().unwrap_or("")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A usable verification key of a JWKS.
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
}

fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("the JWKS is not valid JSON: {e}"))?;
    let raw = match doc.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        Some(_) => return Err("the JWKS 'keys' member is not an array".into()),
        None if doc.get("kty").is_some() => vec![doc],
        None => return Err("the document is neither a JWK set nor a JWK".into()),
    };
    let mut set = KeySet::default();
    for (i, k) in raw.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(k) {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!("JWKS key {i} skipped: {e}");
                continue;
            }
        };
        let algorithms = key_algorithms(&jwk);
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(k) if !algorithms.is_empty() => k,
            _ => {
                tracing::debug!("JWKS key {i} skipped: not a supported signature key");
                continue;
            }
        };
        set.keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if set.keys.is_empty() {
        tracing::warn!("the JWKS holds no usable signature key; every token will be rejected");
    }
    Ok(set)
}

/// The algorithms a key verifies: its `alg`, or those of its key type.
fn key_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg)
            .map(|a| vec![a])
            .unwrap_or_default();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
        _ => Vec::new(),
    }
}

/// Verifies signature and claims. The error says why, without the token.
fn verify(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    audience: &str,
    now: f64,
) -> Result<(), &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
    let kid = header
        .kid
        .as_deref()
        .ok_or("the token has no key id (kid)")?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut candidate = false;
    let mut claims = None;
    for key in keys
        .keys
        .iter()
        .filter(|k| k.kid.as_deref() == Some(kid) && k.algorithms.contains(&header.alg))
    {
        candidate = true;
        if let Ok(data) = jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = match claims {
        Some(c) => c,
        None if candidate => return Err("invalid signature"),
        None => return Err("no key of the JWKS matches the token's kid and alg"),
    };
    check_claims(&claims, issuer, audience, now)
}

fn check_claims(
    claims: &Value,
    issuer: &str,
    audience: &str,
    now: f64,
) -> Result<(), &'static str> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("issuer mismatch");
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err("audience mismatch");
    }
    if let Some(exp) = numeric_date(claims, "exp")?
        && now - ALLOWED_CLOCK_SKEW >= exp
    {
        return Err("token expired");
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now + ALLOWED_CLOCK_SKEW
    {
        return Err("token not valid yet (nbf)");
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat > now + ALLOWED_CLOCK_SKEW
    {
        return Err("token issued in the future (iat)");
    }
    Ok(())
}

fn numeric_date(claims: &Value, name: &str) -> Result<Option<f64>, &'static str> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or("malformed time claim"),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| "malformed time claim"),
        Some(_) => Err("malformed time claim"),
    }
}

/// Where the key set comes from.
enum Source {
    Inline,
    File(PathBuf),
    Url(String),
    /// OpenID discovery from the issuer; the JWKS URL once found.
    Discover {
        issuer: String,
        url: tokio::sync::OnceCell<String>,
    },
}

struct Loaded {
    keys: Arc<KeySet>,
    next_refresh: Instant,
}

/// A cached key set.
struct Jwks {
    source: Source,
    refresh_interval: Duration,
    state: RwLock<Option<Loaded>>,
    last_error: RwLock<Option<(Instant, String)>>,
    load: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

impl Jwks {
    fn new(jwks_url: Option<&str>, issuer: &str) -> Result<Self, String> {
        let mut initial = None;
        let source = match jwks_url.map(str::trim) {
            None | Some("") => {
                if !issuer.starts_with("http://") && !issuer.starts_with("https://") {
                    return Err(
                        "metadata property 'jwksURL' is required unless 'issuer' is an http(s) URL serving an OpenID configuration"
                            .into(),
                    );
                }
                Source::Discover {
                    issuer: issuer.to_owned(),
                    url: tokio::sync::OnceCell::new(),
                }
            }
            Some(inline) if inline.starts_with('{') => {
                initial = Some(parse_jwks(inline)?);
                Source::Inline
            }
            Some(url) if url.starts_with("file://") => {
                let path = PathBuf::from(&url["file://".len()..]);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
                initial = Some(parse_jwks(&text)?);
                Source::File(path)
            }
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.parse::<Uri>()
                    .map_err(|e| format!("invalid jwksURL '{url}': {e}"))?;
                Source::Url(url.to_owned())
            }
            Some(other) => {
                return Err(format!(
                    "unsupported jwksURL '{other}': expected an http(s):// or file:// URL or inline JWKS JSON"
                ));
            }
        };
        let jwks = Self {
            source,
            refresh_interval: MIN_REFRESH_INTERVAL,
            state: RwLock::new(None),
            last_error: RwLock::new(None),
            load: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        };
        if let Some(keys) = initial {
            jwks.store(keys, jwks.refresh_interval);
        }
        Ok(jwks)
    }

    fn current(&self) -> Option<(Arc<KeySet>, Instant)> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|l| (l.keys.clone(), l.next_refresh))
    }

    fn store(&self, keys: KeySet, valid_for: Duration) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Loaded {
            keys: Arc::new(keys),
            next_refresh: Instant::now() + valid_for,
        });
    }

    fn postpone(&self, by: Duration) {
        if let Some(l) = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            l.next_refresh = Instant::now() + by;
        }
    }

    /// The key set: loaded now if never loaded, refreshed in the background
    /// once stale.
    async fn keys(self: &Arc<Self>) -> Result<Arc<KeySet>, String> {
        if let Some((keys, next_refresh)) = self.current() {
            if next_refresh <= Instant::now() && !matches!(self.source, Source::Inline) {
                self.refresh_in_background();
            }
            return Ok(keys);
        }
        let _guard = self.load.lock().await;
        if let Some((keys, _)) = self.current() {
            return Ok(keys);
        }
        // Do not hammer a failing endpoint with every request.
        if let Some((at, e)) = self
            .last_error
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Err(e.clone());
        }
        match self.fetch().await {
            Ok((keys, valid_for)) => {
                self.store(keys, valid_for);
                *self
                    .last_error
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.current()
                    .map(|(k, _)| k)
                    .ok_or_else(|| "the JWKS vanished".to_owned())
            }
            Err(e) => {
                *self
                    .last_error
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            let _guard = me.load.lock().await;
            match me.fetch().await {
                Ok((keys, valid_for)) => {
                    tracing::debug!("JWKS refreshed");
                    me.store(keys, valid_for);
                }
                Err(e) => {
                    tracing::warn!(
                        "error while refreshing the JWKS (keeping the cached keys): {e}"
                    );
                    me.postpone(RETRY_AFTER_FAILURE);
                }
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// Loads the key set and says how long it stays fresh.
    async fn fetch(&self) -> Result<(KeySet, Duration), String> {
        match &self.source {
            Source::Inline => Err("inline JWKS are not fetched".into()),
            Source::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
                Ok((parse_jwks(&text)?, self.refresh_interval))
            }
            Source::Url(url) => self.fetch_url(url).await,
            Source::Discover { issuer, url } => {
                let url = url.get_or_try_init(|| discover_jwks_url(issuer)).await?;
                self.fetch_url(url).await
            }
        }
    }

    async fn fetch_url(&self, url: &str) -> Result<(KeySet, Duration), String> {
        let (body, max_age) = http_get(url)
            .await
            .map_err(|e| format!("failed to fetch JWKS from {url}: {e}"))?;
        let text = std::str::from_utf8(&body).map_err(|_| "the JWKS is not UTF-8".to_owned())?;
        let keys = parse_jwks(text)?;
        Ok((keys, max_age.unwrap_or_default().max(self.refresh_interval)))
    }
}

/// Reads `jwks_uri` from the issuer's OpenID configuration.
async fn discover_jwks_url(issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    tracing::debug!("fetching the OpenID configuration at {url}");
    let (body, _) = http_get(&url)
        .await
        .map_err(|e| format!("failed to retrieve OpenID Configuration document {url}: {e}"))?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("failed to decode the OpenID Configuration document: {e}"))?;
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or("the OpenID Configuration document does not contain a 'jwks_uri'")?;
    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if found != issuer {
        return Err(format!(
            "the issuer found in the OpenID Configuration document ('{found}') doesn't match the one provided in the component's metadata ('{issuer}')"
        ));
    }
    Ok(jwks_uri.to_owned())
}

type PlainClient = Client<HttpConnector, Empty<Bytes>>;
type TlsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn plain_client() -> &'static PlainClient {
    static CLIENT: OnceLock<PlainClient> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

fn tls_client() -> Result<&'static TlsClient, String> {
    static CLIENT: OnceLock<Result<TlsClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(Client::builder(TokioExecutor::new()).build(connector))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// GETs `url` (following redirects): the body of a 200 and its
/// `Cache-Control: max-age`.
async fn http_get(url: &str) -> Result<(Bytes, Option<Duration>), String> {
    let mut uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let req = http::Request::get(uri.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let fut = match uri.scheme_str() {
            Some("http") => plain_client().request(req),
            Some("https") => tls_client()?.request(req),
            _ => return Err("only http and https URLs can be fetched".into()),
        };
        let resp = tokio::time::timeout(FETCH_TIMEOUT, fut)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_redirection()
            && let Some(location) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
        {
            uri = redirect_target(&uri, location)?;
            continue;
        }
        if status != StatusCode::OK {
            return Err(format!("invalid response status code: {}", status.as_u16()));
        }
        let max_age = resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(resp.into_body(), MAX_DOCUMENT).collect(),
        )
        .await
        .map_err(|_| "timed out reading the response".to_owned())?
        .map_err(|e| format!("failed to read response body: {e}"))?
        .to_bytes();
        return Ok((body, max_age));
    }
    Err("too many redirects".into())
}

fn redirect_target(base: &Uri, location: &str) -> Result<Uri, String> {
    let target: Uri = location
        .parse()
        .map_err(|e| format!("invalid redirect location: {e}"))?;
    if target.scheme().is_some() {
        return Ok(target);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = target.path_and_query().cloned();
    Uri::from_parts(parts).map_err(|e| format!("invalid redirect location: {e}"))
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode, jwk::JwkSet};
    use serde_json::json;

    pub(crate) const ISSUER: &str = "https://issuer.example";
    pub(crate) const AUDIENCE: &str = "my-app";
    const RSA_PEM: &str = include_str!("testdata/rsa_test_key.pem");

    /// Signing keys for tests and the JWKS of their public halves.
    pub(crate) struct Keys {
        pub ec: EncodingKey,
        pub rsa: EncodingKey,
        /// Not in the JWKS: signs "bad signature" tokens.
        pub other_ec: EncodingKey,
        pub jwks: String,
    }

    fn ec_key() -> EncodingKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap()
    }

    pub(crate) fn keys() -> Keys {
        let ec = ec_key();
        let other_ec = ec_key();
        let rsa = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
        let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
        ec_jwk.common.key_id = Some("ec-1".into());
        // No `alg`: the algorithms follow from the key type.
        let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
        rsa_jwk.common.key_id = Some("rsa-1".into());
        rsa_jwk.common.key_algorithm = None;
        let jwks = serde_json::to_string(&JwkSet {
            keys: vec![ec_jwk, rsa_jwk],
        })
        .unwrap();
        Keys {
            ec,
            rsa,
            other_ec,
            jwks,
        }
    }

    pub(crate) fn now() -> i64 {
        unix_now() as i64
    }

    pub(crate) fn claims() -> Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now(), "exp": now() + 600})
    }

    pub(crate) fn token(
        alg: Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
        claims: &Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    fn set(jwks: &str) -> KeySet {
        parse_jwks(jwks).unwrap()
    }

    #[test]
    fn accepts_es256_and_rs256_and_ps256() {
        let k = keys();
        let set = set(&k.jwks);
        assert_eq!(set.keys.len(), 2);
        let t = unix_now();
        let es = token(Algorithm::ES256, Some("ec-1"), &k.ec, &claims());
        assert_eq!(verify(&es, &set, ISSUER, AUDIENCE, t), Ok(()));
        let rs = token(Algorithm::RS256, Some("rsa-1"), &k.rsa, &claims());
        assert_eq!(verify(&rs, &set, ISSUER, AUDIENCE, t), Ok(()));
        let ps = token(Algorithm::PS256, Some("rsa-1"), &k.rsa, &claims());
        assert_eq!(verify(&ps, &set, ISSUER, AUDIENCE, t), Ok(()));
        let mut many = claims();
        many["aud"] = json!(["other", AUDIENCE]);
        let es = token(Algorithm::ES256, Some("ec-1"), &k.ec, &many);
        assert_eq!(verify(&es, &set, ISSUER, AUDIENCE, t), Ok(()));
    }

    #[test]
    fn rejects_bad_tokens() {
        let k = keys();
        let set = set(&k.jwks);
        let t = unix_now();
        let check = |claims: &Value| {
            let tok = token(Algorithm::ES256, Some("ec-1"), &k.ec, claims);
            verify(&tok, &set, ISSUER, AUDIENCE, t)
        };
        let mut c = claims();
        c["exp"] = json!(now() - 301);
        assert_eq!(check(&c), Err("token expired"));
        // Within the 5 minutes of allowed skew.
        c["exp"] = json!(now() - 200);
        assert_eq!(check(&c), Ok(()));
        let mut c = claims();
        c["nbf"] = json!(now() + 400);
        assert!(check(&c).is_err());
        let mut c = claims();
        c["iat"] = json!(now() + 400);
        assert!(check(&c).is_err());
        let mut c = claims();
        c["exp"] = json!("soon");
        assert!(check(&c).is_err());
        let mut c = claims();
        c["aud"] = json!("someone-else");
        assert_eq!(check(&c), Err("audience mismatch"));
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(&c), Err("audience mismatch"));
        let mut c = claims();
        c["iss"] = json!("https://evil.example");
        assert_eq!(check(&c), Err("issuer mismatch"));

        let forged = token(Algorithm::ES256, Some("ec-1"), &k.other_ec, &claims());
        assert_eq!(
            verify(&forged, &set, ISSUER, AUDIENCE, t),
            Err("invalid signature")
        );
        let no_kid = token(Algorithm::ES256, None, &k.ec, &claims());
        assert!(verify(&no_kid, &set, ISSUER, AUDIENCE, t).is_err());
        let unknown_kid = token(Algorithm::ES256, Some("nope"), &k.ec, &claims());
        assert!(verify(&unknown_kid, &set, ISSUER, AUDIENCE, t).is_err());
        // An algorithm the key is not for.
        let wrong_alg = token(Algorithm::RS256, Some("ec-1"), &k.rsa, &claims());
        assert!(verify(&wrong_alg, &set, ISSUER, AUDIENCE, t).is_err());
        // HS256 signed with the RSA modulus as secret must not pass.
        let hs = token(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(b"whatever"),
            &claims(),
        );
        assert!(verify(&hs, &set, ISSUER, AUDIENCE, t).is_err());
        assert!(verify("not.a.token", &set, ISSUER, AUDIENCE, t).is_err());
    }

    #[test]
    fn header_parsing() {
        let req = |v: Option<&str>| {
            let mut b = axum::http::Request::builder();
            if let Some(v) = v {
                b = b.header("authorization", v);
            }
            b.body(Body::empty()).unwrap().into_parts().0.headers
        };
        assert_eq!(
            bearer_token(&req(Some("Bearer abcdefghij"))),
            Some("abcdefghij")
        );
        assert_eq!(
            bearer_token(&req(Some("bEaReR abcdefghij"))),
            Some("abcdefghij")
        );
        assert_eq!(bearer_token(&req(Some("Bearer short"))), None);
        assert_eq!(bearer_token(&req(Some("Basic abcdefghijkl"))), None);
        assert_eq!(bearer_token(&req(Some("Bearer "))), None);
        assert_eq!(bearer_token(&req(None)), None);
    }

    #[test]
    fn jwks_documents() {
        assert!(parse_jwks("nope").is_err());
        assert!(parse_jwks(r#"{"keys": 1}"#).is_err());
        assert!(parse_jwks(r#"{"foo": 1}"#).is_err());
        // Unusable keys are skipped, not fatal.
        let set = parse_jwks(
            r#"{"keys":[{"kty":"RSA","alg":"RSA-OAEP","n":"AQAB","e":"AQAB","kid":"enc"},{"kty":"weird"}]}"#,
        )
        .unwrap();
        assert!(set.keys.is_empty());
        let k = keys();
        let one: Value = serde_json::from_str(&k.jwks).unwrap();
        let single = serde_json::to_string(&one["keys"][0]).unwrap();
        assert_eq!(parse_jwks(&single).unwrap().keys.len(), 1);
    }

    #[test]
    fn metadata() {
        let md = |pairs: &[(&str, &str)]| {
            let mut m = ComponentMetadata::new("auth", "app");
            for (k, v) in pairs {
                m.insert(k, *v);
            }
            Bearer::from_metadata(&m)
        };
        let k = keys();
        assert!(md(&[("audience", "a"), ("jwksURL", &k.jwks)]).is_err());
        assert!(md(&[("issuer", "i"), ("jwksURL", &k.jwks)]).is_err());
        assert!(md(&[("issuerURL", "i"), ("clientID", "a"), ("jwksURL", &k.jwks)]).is_ok());
        // No jwksURL: discovery needs an http(s) issuer.
        assert!(md(&[("issuer", "i"), ("audience", "a")]).is_err());
        assert!(md(&[("issuer", ISSUER), ("audience", "a")]).is_ok());
        assert!(md(&[("issuer", "i"), ("audience", "a"), ("jwksURL", "ftp://x")]).is_err());
        assert!(
            md(&[
                ("issuer", "i"),
                ("audience", "a"),
                ("jwksURL", "file:///does/not/exist")
            ])
            .is_err()
        );
    }

    #[tokio::test]
    async fn stale_remote_sets_are_refreshed_in_the_background() {
        use std::sync::atomic::AtomicUsize;
        let (old, new) = (keys(), keys());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, first, later) = (hits.clone(), old.jwks.clone(), new.jwks.clone());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let body = if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    first.clone()
                } else {
                    later.clone()
                };
                async move { body }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut jwks = Jwks::new(Some(&url), ISSUER).unwrap();
        jwks.refresh_interval = Duration::ZERO;
        let jwks = Arc::new(jwks);
        // Same kid, rotated key.
        let rotated = token(Algorithm::ES256, Some("ec-1"), &new.ec, &claims());
        let t = unix_now();

        let set = jwks.keys().await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(verify(&rotated, &set, ISSUER, AUDIENCE, t).is_err());
        // Stale: answered from the cache while a refresh runs.
        let set = jwks.keys().await.unwrap();
        assert!(verify(&rotated, &set, ISSUER, AUDIENCE, t).is_err());
        for _ in 0..500 {
            if hits.load(Ordering::SeqCst) >= 2 && !jwks.refreshing.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (set, _) = jwks.current().unwrap();
        assert_eq!(verify(&rotated, &set, ISSUER, AUDIENCE, t), Ok(()));
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-cache"), None);
    }
}
