//! Keys of crypto components: parsed from PEM (PKCS#1, PKCS#8, SEC1, PKIX),
//! JWK JSON or raw/base64 symmetric bytes, with the JWK attributes (`kid`,
//! `alg`, `use`, `key_ops`) that restrict what a key may do.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::{
    BigUint, RsaPrivateKey, RsaPublicKey,
    pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey},
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding},
    traits::PublicKeyParts,
};
use serde::Deserialize;

use super::CryptoError;

/// The key itself.
#[derive(Clone)]
pub enum KeyMaterial {
    /// Symmetric (`kty: oct`).
    Oct(Vec<u8>),
    RsaPrivate(Box<RsaPrivateKey>),
    RsaPublic(Box<RsaPublicKey>),
    P256Private(p256::SecretKey),
    P256Public(p256::PublicKey),
    P384Private(p384::SecretKey),
    P384Public(p384::PublicKey),
    Ed25519Private(Box<ed25519_dalek::SigningKey>),
    Ed25519Public(ed25519_dalek::VerifyingKey),
}

/// A key with the JWK attributes that restrict it.
#[derive(Clone)]
pub struct Key {
    pub material: KeyMaterial,
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub use_: Option<String>,
    pub key_ops: Vec<String>,
}

// Keys never appear in logs.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kty", &self.kty())
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn symmetric(bytes: Vec<u8>) -> Self {
        Self::from_material(KeyMaterial::Oct(bytes))
    }

    fn from_material(material: KeyMaterial) -> Self {
        Self {
            material,
            kid: None,
            alg: None,
            use_: None,
            key_ops: Vec::new(),
        }
    }

    pub fn kty(&self) -> &'static str {
        match &self.material {
            KeyMaterial::Oct(_) => "oct",
            KeyMaterial::RsaPrivate(_) | KeyMaterial::RsaPublic(_) => "RSA",
            KeyMaterial::P256Private(_)
            | KeyMaterial::P256Public(_)
            | KeyMaterial::P384Private(_)
            | KeyMaterial::P384Public(_) => "EC",
            KeyMaterial::Ed25519Private(_) | KeyMaterial::Ed25519Public(_) => "OKP",
        }
    }

    /// Whether the JWK's `key_ops`/`use` allow `op` (a JWK operation name:
    /// encrypt, decrypt, wrapKey, unwrapKey, sign, verify). No restriction
    /// means allowed, as contrib's `KeyCanPerformOperation`.
    pub fn can_perform(&self, op: &str) -> bool {
        if !self.key_ops.is_empty() && !self.key_ops.iter().any(|o| o == op) {
            return false;
        }
        match self.use_.as_deref() {
            None | Some("") => true,
            Some(u) => match op {
                "encrypt" | "decrypt" | "wrapKey" | "unwrapKey" => u == "enc",
                "sign" | "verify" => u == "sig",
                _ => true,
            },
        }
    }

    /// Whether the JWK's `alg` (when set) is `alg`.
    pub fn allows_algorithm(&self, alg: &str) -> bool {
        self.alg.as_deref().is_none_or(|a| a.is_empty() || a == alg)
    }

    /// The public half, as a JWK JSON object (what `SubtleGetKeyAlpha1`
    /// returns with format JSON). Symmetric keys have none.
    pub fn public_jwk(&self) -> Result<serde_json::Value, CryptoError> {
        let b64 = |b: &[u8]| serde_json::Value::String(URL_SAFE_NO_PAD.encode(b));
        let mut m = serde_json::Map::new();
        m.insert("kty".into(), self.kty().into());
        match &self.material {
            KeyMaterial::Oct(_) => return Err(CryptoError::KeyNotFound),
            KeyMaterial::RsaPrivate(k) => {
                m.insert("n".into(), b64(&k.n().to_bytes_be()));
                m.insert("e".into(), b64(&k.e().to_bytes_be()));
            }
            KeyMaterial::RsaPublic(k) => {
                m.insert("n".into(), b64(&k.n().to_bytes_be()));
                m.insert("e".into(), b64(&k.e().to_bytes_be()));
            }
            KeyMaterial::P256Private(_) | KeyMaterial::P256Public(_) => {
                let point = self.p256_public()?.to_encoded_point(false);
                m.insert("crv".into(), "P-256".into());
                m.insert(
                    "x".into(),
                    b64(point.x().map(|x| &x[..]).unwrap_or_default()),
                );
                m.insert(
                    "y".into(),
                    b64(point.y().map(|y| &y[..]).unwrap_or_default()),
                );
            }
            KeyMaterial::P384Private(_) | KeyMaterial::P384Public(_) => {
                let point = self.p384_public()?.to_encoded_point(false);
                m.insert("crv".into(), "P-384".into());
                m.insert(
                    "x".into(),
                    b64(point.x().map(|x| &x[..]).unwrap_or_default()),
                );
                m.insert(
                    "y".into(),
                    b64(point.y().map(|y| &y[..]).unwrap_or_default()),
                );
            }
            KeyMaterial::Ed25519Private(k) => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), b64(k.verifying_key().as_bytes()));
            }
            KeyMaterial::Ed25519Public(k) => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), b64(k.as_bytes()));
            }
        }
        if let Some(kid) = &self.kid {
            m.insert("kid".into(), kid.clone().into());
        }
        if let Some(alg) = &self.alg {
            m.insert("alg".into(), alg.clone().into());
        }
        if let Some(u) = &self.use_ {
            m.insert("use".into(), u.clone().into());
        }
        Ok(serde_json::Value::Object(m))
    }

    /// The public half as a PKIX `PUBLIC KEY` PEM block.
    pub fn public_pem(&self) -> Result<String, CryptoError> {
        let enc = |r: Result<String, rsa::pkcs8::spki::Error>| {
            r.map_err(|e| CryptoError::Operation(format!("failed to marshal public key: {e}")))
        };
        match &self.material {
            KeyMaterial::Oct(_) => Err(CryptoError::KeyNotFound),
            KeyMaterial::RsaPrivate(k) => enc(k.to_public_key().to_public_key_pem(LineEnding::LF)),
            KeyMaterial::RsaPublic(k) => enc(k.to_public_key_pem(LineEnding::LF)),
            KeyMaterial::P256Private(_) | KeyMaterial::P256Public(_) => {
                enc(self.p256_public()?.to_public_key_pem(LineEnding::LF))
            }
            KeyMaterial::P384Private(_) | KeyMaterial::P384Public(_) => {
                enc(self.p384_public()?.to_public_key_pem(LineEnding::LF))
            }
            KeyMaterial::Ed25519Private(k) => {
                enc(k.verifying_key().to_public_key_pem(LineEnding::LF))
            }
            KeyMaterial::Ed25519Public(k) => enc(k.to_public_key_pem(LineEnding::LF)),
        }
    }

    /// The key as bytes, as Dapr serializes keys for wrapping: symmetric
    /// keys raw, private keys PKCS#8 DER, public keys PKIX DER.
    pub fn serialize(&self) -> Result<Vec<u8>, CryptoError> {
        use rsa::pkcs8::EncodePrivateKey;
        let fail =
            |e: &dyn std::fmt::Display| CryptoError::Parse(format!("cannot serialize key: {e}"));
        let private = |r: Result<rsa::pkcs8::SecretDocument, rsa::pkcs8::Error>| {
            r.map(|d| d.as_bytes().to_vec()).map_err(|e| fail(&e))
        };
        let public = |r: Result<rsa::pkcs8::Document, rsa::pkcs8::spki::Error>| {
            r.map(|d| d.as_bytes().to_vec()).map_err(|e| fail(&e))
        };
        match &self.material {
            KeyMaterial::Oct(k) => Ok(k.clone()),
            KeyMaterial::RsaPrivate(k) => private(k.to_pkcs8_der()),
            KeyMaterial::RsaPublic(k) => public(k.to_public_key_der()),
            KeyMaterial::P256Private(k) => private(k.to_pkcs8_der()),
            KeyMaterial::P256Public(k) => public(k.to_public_key_der()),
            KeyMaterial::P384Private(k) => private(k.to_pkcs8_der()),
            KeyMaterial::P384Public(k) => public(k.to_public_key_der()),
            KeyMaterial::Ed25519Private(k) => private(k.to_pkcs8_der()),
            KeyMaterial::Ed25519Public(k) => public(k.to_public_key_der()),
        }
    }

    pub(crate) fn p256_public(&self) -> Result<p256::PublicKey, CryptoError> {
        match &self.material {
            KeyMaterial::P256Private(k) => Ok(k.public_key()),
            KeyMaterial::P256Public(k) => Ok(*k),
            _ => Err(CryptoError::KeyTypeMismatch),
        }
    }

    pub(crate) fn p384_public(&self) -> Result<p384::PublicKey, CryptoError> {
        match &self.material {
            KeyMaterial::P384Private(k) => Ok(k.public_key()),
            KeyMaterial::P384Public(k) => Ok(*k),
            _ => Err(CryptoError::KeyTypeMismatch),
        }
    }

    pub(crate) fn rsa_public(&self) -> Result<RsaPublicKey, CryptoError> {
        match &self.material {
            KeyMaterial::RsaPrivate(k) => Ok(k.to_public_key()),
            KeyMaterial::RsaPublic(k) => Ok((**k).clone()),
            _ => Err(CryptoError::KeyTypeMismatch),
        }
    }
}

/// How to read key bytes, from the file extension (contrib's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    Jwk,
    Pem,
    /// Decide from the content: JSON object, PEM armour, else symmetric.
    Guess,
}

/// Parses a key file or secret the way Dapr's `ParseKey` does.
pub fn parse_key(raw: &[u8], format: KeyFormat) -> Result<Key, CryptoError> {
    if raw.is_empty() {
        return Err(CryptoError::Parse("key is empty".into()));
    }
    match format {
        KeyFormat::Jwk => parse_jwk(raw),
        KeyFormat::Pem => parse_pem(raw),
        KeyFormat::Guess => {
            let l = raw.len();
            if raw[0] == b'{' && l != 16 && l != 24 && l != 32 {
                parse_jwk(raw)
            } else if l > 10 && raw.starts_with(b"-----") {
                parse_pem(raw)
            } else {
                Ok(parse_symmetric(raw))
            }
        }
    }
}

/// Raw bytes, or their base64 (standard or URL alphabet) when they decode.
fn parse_symmetric(raw: &[u8]) -> Key {
    let mut end = raw.len();
    while end > 0 && (raw[end - 1] == b'\n' || raw[end - 1] == b'=') {
        end -= 1;
    }
    let trimmed = &raw[..end];
    let bytes = STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .unwrap_or_else(|_| raw.to_vec());
    Key::symmetric(bytes)
}

fn parse_pem(raw: &[u8]) -> Result<Key, CryptoError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| CryptoError::Parse("PEM is not UTF-8".into()))?;
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| CryptoError::Parse("no PEM block found".into()))?;
    let text = &text[begin..];
    let label_end = text[11..]
        .find("-----")
        .ok_or_else(|| CryptoError::Parse("malformed PEM header".into()))?;
    let label = &text[11..11 + label_end];
    // Only the first block counts.
    let block = match text.find("-----END ") {
        Some(i) => match text[i + 9..].find("-----") {
            Some(j) => &text[..i + 9 + j + 5],
            None => text,
        },
        None => text,
    };
    let bad = |what: &str| CryptoError::Parse(format!("failed to parse {what} PEM block"));
    let material = match label {
        "RSA PRIVATE KEY" => KeyMaterial::RsaPrivate(Box::new(
            RsaPrivateKey::from_pkcs1_pem(block).map_err(|_| bad(label))?,
        )),
        "RSA PUBLIC KEY" => KeyMaterial::RsaPublic(Box::new(
            RsaPublicKey::from_pkcs1_pem(block).map_err(|_| bad(label))?,
        )),
        "EC PRIVATE KEY" => {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(block) {
                KeyMaterial::P256Private(k)
            } else if let Ok(k) = p384::SecretKey::from_sec1_pem(block) {
                KeyMaterial::P384Private(k)
            } else {
                return Err(bad(label));
            }
        }
        "PRIVATE KEY" => {
            if let Ok(k) = RsaPrivateKey::from_pkcs8_pem(block) {
                KeyMaterial::RsaPrivate(Box::new(k))
            } else if let Ok(k) = p256::SecretKey::from_pkcs8_pem(block) {
                KeyMaterial::P256Private(k)
            } else if let Ok(k) = p384::SecretKey::from_pkcs8_pem(block) {
                KeyMaterial::P384Private(k)
            } else if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(block) {
                KeyMaterial::Ed25519Private(Box::new(k))
            } else {
                return Err(CryptoError::Parse(
                    "unsupported PKCS#8 private key (RSA, P-256, P-384 and Ed25519 are supported)"
                        .into(),
                ));
            }
        }
        "PUBLIC KEY" => {
            if let Ok(k) = RsaPublicKey::from_public_key_pem(block) {
                KeyMaterial::RsaPublic(Box::new(k))
            } else if let Ok(k) = p256::PublicKey::from_public_key_pem(block) {
                KeyMaterial::P256Public(k)
            } else if let Ok(k) = p384::PublicKey::from_public_key_pem(block) {
                KeyMaterial::P384Public(k)
            } else if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(block) {
                KeyMaterial::Ed25519Public(k)
            } else {
                return Err(CryptoError::Parse("unsupported PKIX public key".into()));
            }
        }
        other => {
            return Err(CryptoError::Parse(format!(
                "unsupported PEM block type '{other}'"
            )));
        }
    };
    Ok(Key::from_material(material))
}

/// The JWK members dapr-rs reads.
#[derive(Deserialize, Default)]
pub(crate) struct Jwk {
    #[serde(default)]
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Vec<String>,
    crv: Option<String>,
    k: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64url(field: &str, v: &Option<String>) -> Result<Vec<u8>, CryptoError> {
    let s = v
        .as_deref()
        .ok_or_else(|| CryptoError::Parse(format!("JWK member '{field}' is missing")))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| CryptoError::Parse(format!("JWK member '{field}' is not base64url")))
}

pub(crate) fn parse_jwk(raw: &[u8]) -> Result<Key, CryptoError> {
    let jwk: Jwk =
        serde_json::from_slice(raw).map_err(|e| CryptoError::Parse(format!("invalid JWK: {e}")))?;
    jwk_to_key(jwk)
}

pub(crate) fn jwk_to_key(jwk: Jwk) -> Result<Key, CryptoError> {
    let bad = |what: &str| CryptoError::Parse(format!("invalid {what} JWK"));
    let material = match jwk.kty.as_str() {
        "oct" => KeyMaterial::Oct(b64url("k", &jwk.k)?),
        "RSA" => {
            let n = BigUint::from_bytes_be(&b64url("n", &jwk.n)?);
            let e = BigUint::from_bytes_be(&b64url("e", &jwk.e)?);
            if jwk.d.is_some() {
                let d = BigUint::from_bytes_be(&b64url("d", &jwk.d)?);
                let mut primes = Vec::new();
                if jwk.p.is_some() && jwk.q.is_some() {
                    primes.push(BigUint::from_bytes_be(&b64url("p", &jwk.p)?));
                    primes.push(BigUint::from_bytes_be(&b64url("q", &jwk.q)?));
                }
                let k = RsaPrivateKey::from_components(n, e, d, primes).map_err(|_| bad("RSA"))?;
                KeyMaterial::RsaPrivate(Box::new(k))
            } else {
                KeyMaterial::RsaPublic(Box::new(RsaPublicKey::new(n, e).map_err(|_| bad("RSA"))?))
            }
        }
        "EC" => {
            let crv = jwk.crv.as_deref().unwrap_or_default();
            if jwk.d.is_some() {
                let d = b64url("d", &jwk.d)?;
                match crv {
                    "P-256" => KeyMaterial::P256Private(
                        p256::SecretKey::from_slice(&d).map_err(|_| bad("EC"))?,
                    ),
                    "P-384" => KeyMaterial::P384Private(
                        p384::SecretKey::from_slice(&d).map_err(|_| bad("EC"))?,
                    ),
                    other => {
                        return Err(CryptoError::Parse(format!("unsupported curve '{other}'")));
                    }
                }
            } else {
                let mut sec1 = vec![4u8];
                sec1.extend(b64url("x", &jwk.x)?);
                sec1.extend(b64url("y", &jwk.y)?);
                match crv {
                    "P-256" => KeyMaterial::P256Public(
                        p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| bad("EC"))?,
                    ),
                    "P-384" => KeyMaterial::P384Public(
                        p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| bad("EC"))?,
                    ),
                    other => {
                        return Err(CryptoError::Parse(format!("unsupported curve '{other}'")));
                    }
                }
            }
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(CryptoError::Parse(
                    "only Ed25519 OKP keys are supported".into(),
                ));
            }
            if jwk.d.is_some() {
                let d: [u8; 32] = b64url("d", &jwk.d)?
                    .try_into()
                    .map_err(|_| bad("Ed25519"))?;
                KeyMaterial::Ed25519Private(Box::new(ed25519_dalek::SigningKey::from_bytes(&d)))
            } else {
                let x: [u8; 32] = b64url("x", &jwk.x)?
                    .try_into()
                    .map_err(|_| bad("Ed25519"))?;
                KeyMaterial::Ed25519Public(
                    ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| bad("Ed25519"))?,
                )
            }
        }
        other => {
            return Err(CryptoError::Parse(format!(
                "unsupported key type '{other}'"
            )));
        }
    };
    Ok(Key {
        material,
        kid: jwk.kid,
        alg: jwk.alg,
        use_: jwk.use_,
        key_ops: jwk.key_ops,
    })
}

/// A JWK Set: keys by `kid`.
pub fn parse_jwks(raw: &[u8]) -> Result<Vec<Key>, CryptoError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(raw)
        .map_err(|e| CryptoError::Parse(format!("invalid JWKS: {e}")))?;
    set.keys
        .into_iter()
        .map(|v| {
            let jwk: Jwk = serde_json::from_value(v)
                .map_err(|e| CryptoError::Parse(format!("invalid JWK in set: {e}")))?;
            jwk_to_key(jwk)
        })
        .collect()
}
