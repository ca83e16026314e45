//! The cryptography API against the real daprd: envelope encryption over
//! HTTP and gRPC with every wrap algorithm and cipher (crossing transports),
//! tampering, Dapr's error codes, the subtle calls, a 100 MiB round trip with
//! daprd's peak RSS measured from /proc, and the Python SDK.

mod common;

use std::time::Instant;

use common::*;
use dapr_rs_proto::{common::StreamPayload, runtime as pb};
use futures::StreamExt;
use http_body_util::BodyExt;

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/src/crypto/testdata/keys"
);

fn crypto_components(dir: &std::path::Path) {
    write_resource(
        dir,
        "local.yaml",
        &component_yaml("localkeys", "crypto.dapr.localstorage", &[("path", KEYS)]),
    );
    write_resource(
        dir,
        "jwks.yaml",
        &component_yaml(
            "jwkskeys",
            "crypto.dapr.jwks",
            &[("jwks", &format!("{KEYS}/jwks.json"))],
        ),
    );
}

async fn start(extra: &[&str]) -> (Daprd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    crypto_components(dir.path());
    let mut b = DaprdBuilder::new("crypto").resources(dir.path());
    for a in extra {
        b = b.arg(*a);
    }
    (b.start().await, dir)
}

async fn grpc(d: &Daprd) -> pb::dapr_client::DaprClient<tonic::transport::Channel> {
    pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

async fn http_encrypt(d: &Daprd, comp: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    request(
        "PUT",
        &d.url(&format!("/v1.0-alpha1/crypto/{comp}/encrypt")),
        Some(body.to_vec()),
        headers,
    )
    .await
    .unwrap()
}

async fn http_decrypt(d: &Daprd, comp: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    request(
        "PUT",
        &d.url(&format!("/v1.0-alpha1/crypto/{comp}/decrypt")),
        Some(body.to_vec()),
        headers,
    )
    .await
    .unwrap()
}

/// Chunks of `data` as request messages; options in the first one.
fn chunks<T>(data: &[u8], chunk: usize, first: T, wrap: fn(StreamPayload) -> T) -> Vec<T>
where
    T: Clone,
{
    let mut out = vec![first];
    for (i, c) in data.chunks(chunk).enumerate() {
        out.push(wrap(StreamPayload {
            data: c.to_vec(),
            seq: i as u64,
        }));
    }
    out
}

async fn grpc_encrypt(
    d: &Daprd,
    opts: pb::EncryptRequestOptions,
    data: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    let mut c = grpc(d).await;
    let msgs = chunks(
        data,
        10_000,
        pb::EncryptRequest {
            options: Some(opts),
            payload: None,
        },
        |p| pb::EncryptRequest {
            options: None,
            payload: Some(p),
        },
    );
    let mut s = c
        .encrypt_alpha1(futures::stream::iter(msgs))
        .await?
        .into_inner();
    let mut out = Vec::new();
    let mut seq = 0;
    while let Some(m) = s.message().await? {
        let p = m.payload.unwrap();
        assert_eq!(p.seq, seq);
        seq += 1;
        out.extend(p.data);
    }
    Ok(out)
}

async fn grpc_decrypt(
    d: &Daprd,
    comp: &str,
    key_name: &str,
    data: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    let mut c = grpc(d).await;
    let msgs = chunks(
        data,
        7_000,
        pb::DecryptRequest {
            options: Some(pb::DecryptRequestOptions {
                component_name: comp.into(),
                key_name: key_name.into(),
            }),
            payload: None,
        },
        |p| pb::DecryptRequest {
            options: None,
            payload: Some(p),
        },
    );
    let mut s = c
        .decrypt_alpha1(futures::stream::iter(msgs))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(m.payload.unwrap().data);
    }
    Ok(out)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn manifest(ct: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(&ct[..ct.len().min(2000)]).to_string();
    let mut lines = text.split('\n');
    assert_eq!(lines.next(), Some("dapr.io/enc/v1"));
    serde_json::from_str(lines.next().unwrap()).unwrap()
}

#[tokio::test]
async fn envelope_round_trips_every_algorithm_over_http_and_grpc() {
    let (d, _dir) = start(&[]).await;
    let data = payload(200_000);
    let cases = [
        ("localkeys", "symmetric-key-256", "A256KW", 1),
        ("localkeys", "symmetric-key-256", "AES", 1),
        ("localkeys", "rsa-private-key.pem", "RSA-OAEP-256", 5),
        ("localkeys", "rsa-public-key.pem", "rsa", 5),
        ("jwkskeys", "jwks-aes", "A256KW", 1),
        ("jwkskeys", "jwks-rsa", "RSA-OAEP-256", 5),
    ];
    for (comp, key, alg, kw) in cases {
        // A public key encrypts; its private half decrypts.
        let dec_key = if key == "rsa-public-key.pem" {
            "rsa-private-key.pem"
        } else {
            key
        };
        for (cipher, cph) in [("", 1), ("aes-gcm", 1), ("chacha20-poly1305", 2)] {
            let what = format!("{comp}/{key}/{alg}/{cipher}");
            let mut headers = vec![("dapr-key-name", key), ("dapr-key-wrap-algorithm", alg)];
            if !cipher.is_empty() {
                headers.push(("dapr-data-encryption-cipher", cipher));
            }
            if dec_key != key {
                headers.push(("dapr-decryption-key-name", dec_key));
            }
            let r = http_encrypt(&d, comp, &data, &headers).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_eq!(r.headers["content-type"], "application/octet-stream");
            let ct = r.body.to_vec();
            let m = manifest(&ct);
            assert_eq!(
                (m["k"].as_str(), m["kw"].as_i64(), m["cph"].as_i64()),
                (Some(dec_key), Some(kw), Some(cph)),
                "{what}"
            );
            // 200 000 bytes: 4 segments, 16-byte tag each.
            let header_len = ct.len() - data.len() - 4 * 16;
            assert!(header_len < 700, "{what}: header {header_len} bytes");

            // HTTP → HTTP, HTTP → gRPC (key name from the manifest).
            let r = http_decrypt(&d, comp, &ct, &[]).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert!(r.body[..] == data[..], "{what}: HTTP decrypt");
            let back = grpc_decrypt(&d, comp, "", &ct).await.unwrap();
            assert!(back == data, "{what}: gRPC decrypt");

            // gRPC → HTTP.
            let opts = pb::EncryptRequestOptions {
                component_name: comp.into(),
                key_name: key.into(),
                key_wrap_algorithm: alg.into(),
                data_encryption_cipher: cipher.into(),
                omit_decryption_key_name: false,
                decryption_key_name: if dec_key != key {
                    dec_key.into()
                } else {
                    String::new()
                },
            };
            let ct2 = grpc_encrypt(&d, opts, &data).await.unwrap();
            assert_ne!(ct2, ct, "fresh file key per message");
            let r = http_decrypt(&d, comp, &ct2, &[("dapr-key-name", dec_key)]).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert!(r.body[..] == data[..], "{what}: gRPC → HTTP");
        }
    }

    // Omitted key name: decryption needs it from the caller.
    let r = http_encrypt(
        &d,
        "localkeys",
        b"secret",
        &[
            ("dapr-key-name", "symmetric-key-256"),
            ("dapr-key-wrap-algorithm", "A256KW"),
            ("dapr-omit-decryption-key-name", "true"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(manifest(&r.body).get("k").is_none());
    let missing = http_decrypt(&d, "localkeys", &r.body, &[]).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (500, "ERR_CRYPTO")
    );
    assert!(
        missing.text().contains("does not contain a key name"),
        "{}",
        missing.text()
    );
    let ok = http_decrypt(
        &d,
        "localkeys",
        &r.body,
        &[("dapr-key-name", "symmetric-key-256")],
    )
    .await;
    assert_eq!(&ok.body[..], b"secret");

    // Empty message.
    let r = http_encrypt(
        &d,
        "localkeys",
        b"",
        &[
            ("dapr-key-name", "symmetric-key-256"),
            ("dapr-key-wrap-algorithm", "A256KW"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let back = http_decrypt(&d, "localkeys", &r.body, &[]).await;
    assert_eq!((back.status, back.body.len()), (200, 0));
}

#[tokio::test]
async fn tampering_and_errors_are_rejected_with_dapr_codes() {
    let (d, _dir) = start(&[]).await;
    let data = payload(150_000);
    let hdrs = [
        ("dapr-key-name", "symmetric-key-256"),
        ("dapr-key-wrap-algorithm", "A256KW"),
    ];
    let ct = http_encrypt(&d, "localkeys", &data, &hdrs)
        .await
        .body
        .to_vec();
    let h = ct
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;

    // Tampered first segment, manifest, MAC: clean 500 ERR_CRYPTO, no data.
    for pos in [h + 3, 30, h - 4] {
        let mut bad = ct.clone();
        bad[pos] ^= 0x04;
        let r = http_decrypt(&d, "localkeys", &bad, &[]).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "ERR_CRYPTO"),
            "pos {pos}: {}",
            r.text()
        );
        let e = grpc_decrypt(&d, "localkeys", "", &bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal, "pos {pos}");
    }
    // Tampered later segment or truncated: the stream is aborted, never
    // completed (HTTP: broken body; gRPC: error status).
    let mut bad = ct.clone();
    let last = bad.len() - 20;
    bad[last] ^= 1;
    for broken in [
        bad,
        ct[..ct.len() - 1].to_vec(),
        ct[..h + 65536 + 16].to_vec(),
    ] {
        match request(
            "PUT",
            &d.url("/v1.0-alpha1/crypto/localkeys/decrypt"),
            Some(broken.clone()),
            &[],
        )
        .await
        {
            Err(_) => {}
            // Nothing released before the failure: a plain error response.
            Ok(r) if r.status == 500 => assert_eq!(r.error_code(), "ERR_CRYPTO"),
            Ok(r) => panic!(
                "tampered stream completed with {} ({} bytes)",
                r.status,
                r.body.len()
            ),
        }
        let e = grpc_decrypt(&d, "localkeys", "", &broken)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(
            e.message().contains("failed to decrypt segment")
                || e.message().contains("unexpected end"),
            "{}",
            e.message()
        );
    }
    // Wrong key: the header does not authenticate.
    let r = http_decrypt(
        &d,
        "localkeys",
        &ct,
        &[("dapr-key-name", "symmetric-key.json")],
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("signature"), "{}", r.text());
    // Not an envelope at all.
    let r = http_decrypt(&d, "localkeys", b"hello there\nnot a header\n", &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_CRYPTO"));

    // Lookup and validation errors.
    let r = http_encrypt(&d, "nope", b"x", &hdrs).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_CRYPTO_PROVIDER_NOT_FOUND")
    );
    assert!(r.text().contains("crypto provider nope not found"));
    let r = http_encrypt(
        &d,
        "localkeys",
        b"x",
        &[("dapr-key-name", "symmetric-key-256")],
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_BAD_REQUEST")
    );
    let r = http_encrypt(
        &d,
        "localkeys",
        b"x",
        &[
            ("dapr-key-name", "symmetric-key-256"),
            ("dapr-key-wrap-algorithm", "RSA-OAEP-999"),
        ],
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_CRYPTO"));
    let r = http_encrypt(
        &d,
        "localkeys",
        b"x",
        &[
            ("dapr-key-name", "no-such-key"),
            ("dapr-key-wrap-algorithm", "A256KW"),
        ],
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_CRYPTO"));
    assert!(
        r.text().contains("failed to wrap the file key"),
        "{}",
        r.text()
    );
    let r = http_encrypt(
        &d,
        "localkeys",
        b"x",
        &[
            ("dapr-key-name", "../etc/passwd"),
            ("dapr-key-wrap-algorithm", "A256KW"),
        ],
    )
    .await;
    assert_eq!(r.status, 500);
    // A symmetric key cannot do RSA-OAEP.
    let r = http_encrypt(
        &d,
        "localkeys",
        b"x",
        &[
            ("dapr-key-name", "symmetric-key-256"),
            ("dapr-key-wrap-algorithm", "RSA-OAEP-256"),
        ],
    )
    .await;
    assert_eq!(r.status, 500);
    // gRPC: no options, missing key name, out-of-order seq.
    let mut c = grpc(&d).await;
    let e = c
        .encrypt_alpha1(futures::stream::iter(vec![pb::EncryptRequest {
            options: None,
            payload: Some(StreamPayload {
                data: b"x".to_vec(),
                seq: 0,
            }),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let opts = pb::EncryptRequestOptions {
        component_name: "localkeys".into(),
        key_name: "symmetric-key-256".into(),
        key_wrap_algorithm: "A256KW".into(),
        ..Default::default()
    };
    let msgs = vec![
        pb::EncryptRequest {
            options: Some(opts.clone()),
            payload: Some(StreamPayload {
                data: b"a".to_vec(),
                seq: 0,
            }),
        },
        pb::EncryptRequest {
            options: None,
            payload: Some(StreamPayload {
                data: b"b".to_vec(),
                seq: 2,
            }),
        },
    ];
    let r = c.encrypt_alpha1(futures::stream::iter(msgs)).await;
    let failed = match r {
        Err(_) => true,
        Ok(s) => s
            .into_inner()
            .collect::<Vec<_>>()
            .await
            .iter()
            .any(|m| m.is_err()),
    };
    assert!(failed, "out-of-order seq accepted");
    let e = grpc_encrypt(
        &d,
        pb::EncryptRequestOptions {
            key_name: String::new(),
            ..opts.clone()
        },
        b"x",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = grpc_encrypt(
        &d,
        pb::EncryptRequestOptions {
            component_name: "nope".into(),
            ..opts
        },
        b"x",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("crypto provider nope not found"));

    // A sidecar without crypto components.
    let empty = tempfile::tempdir().unwrap();
    let bare = DaprdBuilder::new("crypto-bare")
        .resources(empty.path())
        .start()
        .await;
    let r = http_encrypt(&bare, "any", b"x", &hdrs).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_CRYPTO_PROVIDERS_NOT_CONFIGURED")
    );
    let e = grpc(&bare)
        .await
        .subtle_get_key_alpha1(pb::SubtleGetKeyRequest {
            component_name: "any".into(),
            name: "k".into(),
            format: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
}

#[tokio::test]
async fn subtle_apis() {
    let (d, _dir) = start(&[]).await;
    let mut c = grpc(&d).await;
    let comp = "localkeys";

    // getkey: PEM and JSON of public halves; symmetric keys are not exposed.
    let r = c
        .subtle_get_key_alpha1(pb::SubtleGetKeyRequest {
            component_name: comp.into(),
            name: "rsa-private-key.pem".into(),
            format: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.name, "rsa-private-key.pem");
    assert!(
        r.public_key.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{}",
        r.public_key
    );
    let public = std::fs::read_to_string(format!("{KEYS}/rsa-public-key.pem")).unwrap();
    assert_eq!(r.public_key.trim(), public.trim());
    let r = c
        .subtle_get_key_alpha1(pb::SubtleGetKeyRequest {
            component_name: "jwkskeys".into(),
            name: "jwks-ec".into(),
            format: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let jwk: serde_json::Value = serde_json::from_str(&r.public_key).unwrap();
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["crv"].as_str(),
            jwk["kid"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("jwks-ec"))
    );
    assert!(jwk.get("d").is_none(), "private part leaked");
    let e = c
        .subtle_get_key_alpha1(pb::SubtleGetKeyRequest {
            component_name: comp.into(),
            name: "symmetric-key-256".into(),
            format: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    let e = c
        .subtle_get_key_alpha1(pb::SubtleGetKeyRequest {
            component_name: comp.into(),
            name: "rsa-private-key.pem".into(),
            format: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // encrypt/decrypt with every symmetric AEAD, key wrap and RSA.
    let aad = b"context".to_vec();
    for (alg, key, nonce_len) in [
        ("A256GCM", "symmetric-key-256", 12),
        ("C20P", "symmetric-key-256", 12),
        ("XC20P", "symmetric-key-256", 24),
        ("A256CBC", "symmetric-key-256", 16),
        ("A256KW", "symmetric-key-256", 0),
        ("RSA-OAEP", "rsa-private-key.pem", 0),
        ("RSA-OAEP-256", "rsa-private-key.pem", 0),
        ("RSA1_5", "rsa-private-key.pem", 0),
    ] {
        let plaintext = vec![42u8; 32];
        let nonce = vec![3u8; nonce_len];
        let aad = if alg.starts_with("RSA") || alg.ends_with("KW") || alg.ends_with("CBC") {
            Vec::new()
        } else {
            aad.clone()
        };
        let enc = c
            .subtle_encrypt_alpha1(pb::SubtleEncryptRequest {
                component_name: comp.into(),
                plaintext: plaintext.clone(),
                algorithm: alg.into(),
                key_name: key.into(),
                nonce: nonce.clone(),
                associated_data: aad.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .into_inner();
        assert_ne!(enc.ciphertext, plaintext);
        let aead = alg.ends_with("GCM") || alg.ends_with("C20P");
        assert_eq!(enc.tag.len(), if aead { 16 } else { 0 }, "{alg}");
        let dec = c
            .subtle_decrypt_alpha1(pb::SubtleDecryptRequest {
                component_name: comp.into(),
                ciphertext: enc.ciphertext.clone(),
                algorithm: alg.into(),
                key_name: key.into(),
                nonce: nonce.clone(),
                tag: enc.tag.clone(),
                associated_data: aad.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .into_inner();
        assert_eq!(dec.plaintext, plaintext, "{alg}");
        if aead {
            let mut bad = enc.ciphertext.clone();
            bad[0] ^= 1;
            let e = c
                .subtle_decrypt_alpha1(pb::SubtleDecryptRequest {
                    component_name: comp.into(),
                    ciphertext: bad,
                    algorithm: alg.into(),
                    key_name: key.into(),
                    nonce,
                    tag: enc.tag,
                    associated_data: aad,
                })
                .await
                .unwrap_err();
            assert_eq!(
                (e.code(), e.message()),
                (
                    tonic::Code::Internal,
                    "failed to perform operation: failed to decrypt"
                )
            );
        }
    }

    // wrapkey/unwrapkey.
    let w = c
        .subtle_wrap_key_alpha1(pb::SubtleWrapKeyRequest {
            component_name: comp.into(),
            plaintext_key: vec![9u8; 32],
            algorithm: "A256KW".into(),
            key_name: "symmetric-key-256".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.wrapped_key.len(), 40);
    let u = c
        .subtle_unwrap_key_alpha1(pb::SubtleUnwrapKeyRequest {
            component_name: comp.into(),
            wrapped_key: w.wrapped_key,
            algorithm: "A256KW".into(),
            key_name: "symmetric-key-256".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.plaintext_key, vec![9u8; 32]);

    // sign/verify.
    let digest = vec![0x5au8; 32];
    for (alg, comp, key) in [
        ("RS256", "localkeys", "rsa-private-key.pem"),
        ("PS256", "localkeys", "rsa-private-key.pem"),
        ("ES256", "localkeys", "ec-p256-key.pem"),
        ("ES256", "jwkskeys", "jwks-ec"),
        ("EdDSA", "localkeys", "ed25519-key.pem"),
    ] {
        let sig = c
            .subtle_sign_alpha1(pb::SubtleSignRequest {
                component_name: comp.into(),
                digest: digest.clone(),
                algorithm: alg.into(),
                key_name: key.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .into_inner()
            .signature;
        let verify = |d: Vec<u8>, s: Vec<u8>| pb::SubtleVerifyRequest {
            component_name: comp.into(),
            digest: d,
            algorithm: alg.into(),
            key_name: key.into(),
            signature: s,
        };
        let ok = c
            .subtle_verify_alpha1(verify(digest.clone(), sig.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.valid, "{alg}");
        let mut other = digest.clone();
        other[0] ^= 1;
        let bad = c
            .subtle_verify_alpha1(verify(other, sig))
            .await
            .unwrap()
            .into_inner();
        assert!(!bad.valid, "{alg}: wrong digest verified");
    }
    // A verify-only public key verifies an RSA signature made by its private half.
    let sig = c
        .subtle_sign_alpha1(pb::SubtleSignRequest {
            component_name: comp.into(),
            digest: digest.clone(),
            algorithm: "RS256".into(),
            key_name: "rsa-private-key.pem".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .signature;
    let ok = c
        .subtle_verify_alpha1(pb::SubtleVerifyRequest {
            component_name: comp.into(),
            digest,
            algorithm: "RS256".into(),
            key_name: "rsa-public-key.pem".into(),
            signature: sig,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.valid);
    // jwks-ec has use=sig: encryption with it is refused.
    let e = c
        .subtle_wrap_key_alpha1(pb::SubtleWrapKeyRequest {
            component_name: "jwkskeys".into(),
            plaintext_key: vec![1; 32],
            algorithm: "ES256".into(),
            key_name: "jwks-ec".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn hundred_mib_round_trip_in_bounded_memory() {
    const SIZE: usize = 100 << 20;
    let (d, _dir) = start(&["--max-body-size", "200Mi"]).await;
    let pid = d.child.as_ref().unwrap().id();
    // Warm up so the baseline includes the servers' steady state.
    let warm = http_encrypt(
        &d,
        "localkeys",
        b"warm",
        &[
            ("dapr-key-name", "symmetric-key-256"),
            ("dapr-key-wrap-algorithm", "A256KW"),
        ],
    )
    .await;
    assert_eq!(warm.status, 200);
    let before = peak_rss_kib(pid);
    let started = Instant::now();

    // gRPC encrypt: 100 MiB generated on the fly in 1 MiB messages, the
    // ciphertext kept in the test (not in daprd).
    let mut c = grpc(&d).await;
    let opts = pb::EncryptRequestOptions {
        component_name: "localkeys".into(),
        key_name: "symmetric-key-256".into(),
        key_wrap_algorithm: "A256KW".into(),
        data_encryption_cipher: "aes-gcm".into(),
        ..Default::default()
    };
    let first = futures::stream::once(async move {
        pb::EncryptRequest {
            options: Some(opts),
            payload: None,
        }
    });
    let body = futures::stream::iter(0..(SIZE >> 20)).map(|i| pb::EncryptRequest {
        options: None,
        payload: Some(StreamPayload {
            data: vec![(i % 251) as u8; 1 << 20],
            seq: i as u64,
        }),
    });
    let mut s = c
        .encrypt_alpha1(first.chain(body))
        .await
        .unwrap()
        .into_inner();
    let mut ct = Vec::with_capacity(SIZE + (SIZE >> 12) + 4096);
    while let Some(m) = s.message().await.unwrap() {
        ct.extend(m.payload.unwrap().data);
    }
    assert_eq!(ct.len() - manifest_len(&ct), SIZE + (SIZE / 65536) * 16);

    // HTTP decrypt of the 100 MiB, streamed back and checked as it comes.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::put(d.url("/v1.0-alpha1/crypto/localkeys/decrypt"))
        .body(http_body_util::Full::new(bytes::Bytes::from(ct)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();
    let encrypted_in = started.elapsed();
    let mut n = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        // Compare runs of equal bytes (each MiB of plaintext is one value).
        let mut j = 0;
        while j < chunk.len() {
            let i = n + j;
            let run = ((1 << 20) - (i & ((1 << 20) - 1))).min(chunk.len() - j);
            let want = ((i >> 20) % 251) as u8;
            assert!(chunk[j..j + run].iter().all(|b| *b == want), "bytes at {i}");
            j += run;
        }
        n += chunk.len();
    }
    assert_eq!(n, SIZE);
    let after = peak_rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    println!(
        "100 MiB encrypt (gRPC) in {encrypted_in:?} + decrypt (HTTP) in {:?}; daprd peak RSS {} → {} MiB (+{growth_mib} MiB)",
        started.elapsed() - encrypted_in,
        before / 1024,
        after / 1024
    );
    assert!(
        growth_mib < 48,
        "daprd peak RSS grew by {growth_mib} MiB for a 100 MiB stream"
    );
}

fn manifest_len(ct: &[u8]) -> usize {
    ct.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1
}

#[tokio::test]
async fn python_sdk_encrypt_decrypt_and_independent_decoder() {
    let (d, _dir) = start(&[]).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/e2e/python/test_crypto.py"))
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("CRYPTO_KEYS_DIR", KEYS)
        .output()
        .expect("python3 -m pytest (run scripts/test-services.sh to install the SDK)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pytest failed:\n{text}\n--- daprd log ---\n{}",
        d.logs()
    );
    assert!(text.contains(" passed"), "{text}");
}
