//! The JWKS validator: accept/reject cases, file reload, and end to end
//! through the `dapr-sentry` binary.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, sign_certificate_request::TokenValidator,
};
use dapr_security::{
    SpiffeId,
    client::{SentryClient, SentryClientConfig, TokenSource},
};
use dapr_sentry::{
    config::JwksOptions,
    validator::{JwksValidator, ValidationError},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SENTRY_ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn es256_key(kid: &str) -> SigningKey {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw(); // 0x04 || X || Y
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]), "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

fn ed25519_key(kid: &str) -> SigningKey {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key_raw()), "kid": kid}),
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &SigningKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn claims(sub: &str, aud: serde_json::Value, exp_offset: i64) -> serde_json::Value {
    json!({"sub": sub, "aud": aud, "exp": now() as i64 + exp_offset, "iat": now()})
}

fn req(id: &str, td: &str, token: String) -> SignCertificateRequest {
    SignCertificateRequest {
        id: id.into(),
        namespace: "default".into(),
        trust_domain: td.into(),
        token,
        certificate_signing_request: b"csr".to_vec(),
        token_validator: TokenValidator::Jwks as i32,
        ..Default::default()
    }
}

fn validate(v: &JwksValidator, r: &SignCertificateRequest) -> Result<String, ValidationError> {
    let td = dapr_sentry::validator::common_checks(r)?;
    v.validate(r, td).map(|i| i.trust_domain)
}

#[test]
fn accepts_and_rejects_tokens() {
    let k1 = es256_key("k1");
    let ed = ed25519_key("ed");
    let stranger = es256_key("k1"); // same kid, different key
    let v = JwksValidator::from_jwks_json(jwks(&[&k1, &ed]).as_bytes(), SENTRY_ID.into()).unwrap();
    let me = "spiffe://public/ns/default/myapp";

    // Accepted: aud as a string, as an array with other members; EdDSA.
    let ok = token(&k1, claims(me, json!(SENTRY_ID), 600));
    assert_eq!(validate(&v, &req("myapp", "", ok)).unwrap(), "public");
    let ok = token(&k1, claims(me, json!(["other", SENTRY_ID]), 600));
    assert!(validate(&v, &req("myapp", "", ok)).is_ok());
    let ok = token(&ed, claims(me, json!(SENTRY_ID), 600));
    assert!(validate(&v, &req("myapp", "", ok)).is_ok());
    // Within the 5-minute leeway.
    let ok = token(&k1, claims(me, json!(SENTRY_ID), -120));
    assert!(validate(&v, &req("myapp", "", ok)).is_ok());
    // Trust domain requested explicitly: sub must carry it.
    let ok = token(
        &k1,
        claims(
            "spiffe://example.org/ns/default/myapp",
            json!(SENTRY_ID),
            600,
        ),
    );
    assert_eq!(
        validate(&v, &req("myapp", "example.org", ok)).unwrap(),
        "example.org"
    );

    type Case = (
        &'static str,
        SignCertificateRequest,
        fn(&ValidationError) -> bool,
    );
    let cases: Vec<Case> = vec![
        ("no token", req("myapp", "", String::new()), |e| {
            matches!(e, ValidationError::Unauthenticated(_))
        }),
        ("not a JWT", req("myapp", "", "abc.def".into()), |e| {
            matches!(e, ValidationError::Unauthenticated(_))
        }),
        (
            "wrong audience",
            req(
                "myapp",
                "",
                token(
                    &k1,
                    claims(me, json!("spiffe://localhost/ns/default/other"), 600),
                ),
            ),
            |e| matches!(e, ValidationError::PermissionDenied(m) if m.contains("audience")),
        ),
        (
            "another app's subject",
            req(
                "myapp",
                "",
                token(
                    &k1,
                    claims("spiffe://public/ns/default/admin", json!(SENTRY_ID), 600),
                ),
            ),
            |e| matches!(e, ValidationError::PermissionDenied(m) if m.contains("subject")),
        ),
        (
            "subject in another namespace",
            req(
                "myapp",
                "",
                token(
                    &k1,
                    claims("spiffe://public/ns/prod/myapp", json!(SENTRY_ID), 600),
                ),
            ),
            |e| matches!(e, ValidationError::PermissionDenied(_)),
        ),
        (
            "subject in another trust domain",
            req(
                "myapp",
                "example.org",
                token(&k1, claims(me, json!(SENTRY_ID), 600)),
            ),
            |e| matches!(e, ValidationError::PermissionDenied(_)),
        ),
        (
            "expired",
            req("myapp", "", token(&k1, claims(me, json!(SENTRY_ID), -1000))),
            |e| matches!(e, ValidationError::Unauthenticated(m) if m.contains("expired")),
        ),
        (
            "signed by a key not in the JWKS",
            req(
                "myapp",
                "",
                token(&stranger, claims(me, json!(SENTRY_ID), 600)),
            ),
            |e| matches!(e, ValidationError::Unauthenticated(m) if m.contains("signature")),
        ),
        (
            "unknown kid",
            req(
                "myapp",
                "",
                token(&es256_key("k9"), claims(me, json!(SENTRY_ID), 600)),
            ),
            |e| matches!(e, ValidationError::Unauthenticated(_)),
        ),
        (
            "no exp",
            req(
                "myapp",
                "",
                token(&k1, json!({"sub": me, "aud": SENTRY_ID})),
            ),
            |e| matches!(e, ValidationError::Unauthenticated(m) if m.contains("exp")),
        ),
        (
            "not yet valid",
            req(
                "myapp",
                "",
                token(
                    &k1,
                    json!({"sub": me, "aud": SENTRY_ID, "exp": now() + 9000, "nbf": now() + 3600}),
                ),
            ),
            |e| matches!(e, ValidationError::Unauthenticated(_)),
        ),
        (
            "HMAC token",
            req("myapp", "", {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some("k1".into());
                jsonwebtoken::encode(
                    &h,
                    &claims(me, json!(SENTRY_ID), 600),
                    &EncodingKey::from_secret(b"k1"),
                )
                .unwrap()
            }),
            |e| matches!(e, ValidationError::Unauthenticated(m) if m.contains("algorithm")),
        ),
        (
            "alg none",
            req("myapp", "", {
                let h = b64(br#"{"alg":"none","kid":"k1"}"#);
                let c = b64(claims(me, json!(SENTRY_ID), 600).to_string().as_bytes());
                format!("{h}.{c}.")
            }),
            |e| matches!(e, ValidationError::Unauthenticated(_)),
        ),
        (
            "malformed app id",
            req("my.app", "", token(&k1, claims(me, json!(SENTRY_ID), 600))),
            |e| matches!(e, ValidationError::InvalidArgument(_)),
        ),
    ];
    for (name, r, check) in cases {
        let err = validate(&v, &r).expect_err(name);
        assert!(check(&err), "{name}: {err:?}");
        // Errors never echo the token.
        assert!(
            r.token.is_empty() || !err.to_string().contains(&r.token),
            "{name}"
        );
    }
}

#[test]
fn symmetric_keys_in_the_jwks_are_ignored() {
    let set = json!({"keys": [{"kty": "oct", "k": b64(b"secret"), "kid": "k1", "alg": "HS256"}]});
    let v = JwksValidator::from_jwks_json(set.to_string().as_bytes(), SENTRY_ID.into()).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let t = jsonwebtoken::encode(
        &h,
        &claims("spiffe://public/ns/default/myapp", json!(SENTRY_ID), 600),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert!(validate(&v, &req("myapp", "", t)).is_err());
    assert!(JwksValidator::from_jwks_json(b"{\"keys\": []}", SENTRY_ID.into()).is_err());
    assert!(JwksValidator::from_jwks_json(b"not json", SENTRY_ID.into()).is_err());
}

#[tokio::test]
async fn sources_and_file_reload() {
    let sentry_id = SpiffeId::parse(SENTRY_ID).unwrap();
    let a = es256_key("a");
    let b = es256_key("b");
    let me = "spiffe://public/ns/default/myapp";

    // Inline JSON and base64 sources.
    for source in [
        jwks(&[&a]),
        base64::engine::general_purpose::STANDARD.encode(jwks(&[&a])),
    ] {
        let v = JwksValidator::from_options(
            &JwksOptions {
                source,
                min_refresh_interval: None,
            },
            &sentry_id,
        )
        .unwrap();
        assert!(
            validate(
                &v,
                &req("myapp", "", token(&a, claims(me, json!(SENTRY_ID), 600)))
            )
            .is_ok()
        );
    }
    for bad in ["", "https://example.invalid/jwks.json", "@@@not base64@@@"] {
        assert!(
            JwksValidator::from_options(
                &JwksOptions {
                    source: bad.into(),
                    min_refresh_interval: None
                },
                &sentry_id
            )
            .is_err(),
            "{bad}"
        );
    }

    // A file source is re-read: rotate from key a to key b.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&a])).unwrap();
    let v = JwksValidator::from_options(
        &JwksOptions {
            source: path.to_string_lossy().into_owned(),
            min_refresh_interval: Some(Duration::from_millis(100)),
        },
        &sentry_id,
    )
    .unwrap();
    let tok_b = token(&b, claims(me, json!(SENTRY_ID), 600));
    assert!(validate(&v, &req("myapp", "", tok_b.clone())).is_err());
    std::fs::write(&path, jwks(&[&b])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while validate(&v, &req("myapp", "", tok_b.clone())).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "JWKS file not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Key a is gone now; a broken file keeps key b.
    assert!(
        validate(
            &v,
            &req("myapp", "", token(&a, claims(me, json!(SENTRY_ID), 600)))
        )
        .is_err()
    );
    std::fs::write(&path, b"{ broken").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(validate(&v, &req("myapp", "", tok_b)).is_ok());
}

#[tokio::test]
async fn sentry_binary_with_jwks_validator() {
    dapr_security::ensure_crypto_provider();
    let key = es256_key("k1");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let inline = jwks(&[&key]);
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    workloadCertTTL: 1h\n    allowedClockSkew: 1m\n    tokenValidators:\n      - name: jwks\n        options:\n          source: '{inline}'\n"
        ),
    )
    .unwrap();
    let sentry = common::Sentry::start(
        &dir.path().join("creds"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let anchors = sentry.anchors();
    let me = "spiffe://public/ns/default/myapp";
    let client_with = |token: TokenSource, validator: TokenValidator| {
        let mut cfg = SentryClientConfig::new(
            sentry.address(),
            common::Sentry::sentry_id(),
            "myapp",
            "default",
        );
        cfg.token = token;
        cfg.token_validator = validator;
        SentryClient::new(cfg, anchors.clone()).unwrap()
    };

    // A valid token: the certificate follows the Configuration's TTL and skew.
    let good = token(&key, claims(me, json!(SENTRY_ID), 600));
    let svid = client_with(TokenSource::Static(good.clone()), TokenValidator::Jwks)
        .fetch_svid()
        .await
        .unwrap();
    assert_eq!(svid.id().to_string(), me);
    assert_eq!(
        svid.not_after().duration_since(svid.not_before()).unwrap(),
        Duration::from_secs(3600 + 60)
    );

    // Token from a file (as DAPR_SENTRY_TOKEN_FILE).
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{good}\n")).unwrap();
    client_with(TokenSource::File(token_file), TokenValidator::Jwks)
        .fetch_svid()
        .await
        .unwrap();

    let code = |e: dapr_security::client::ClientError| match e {
        dapr_security::client::ClientError::Rpc(s) => (s.code(), s.message().to_owned()),
        other => panic!("unexpected {other}"),
    };
    // The insecure validator is off once a custom validator is configured,
    // and there is no default validator.
    let (c, m) = code(
        client_with(TokenSource::None, TokenValidator::Unknown)
            .fetch_svid()
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("must be specified"), "{m}");
    let (c, _) = code(
        client_with(TokenSource::None, TokenValidator::Insecure)
            .fetch_svid()
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::InvalidArgument);
    // Token problems.
    let (c, _) = code(
        client_with(TokenSource::None, TokenValidator::Jwks)
            .fetch_svid()
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::Unauthenticated);
    let other_app = token(
        &key,
        claims("spiffe://public/ns/default/admin", json!(SENTRY_ID), 600),
    );
    let (c, _) = code(
        client_with(TokenSource::Static(other_app), TokenValidator::Jwks)
            .fetch_svid()
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::PermissionDenied);
    let log = sentry.log_text();
    assert!(!log.contains(&good), "token leaked into the log");
    assert!(log.contains("Adding validator 'jwks'"));
}
