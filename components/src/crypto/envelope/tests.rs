//! Format tests. `../testdata/kit/*.enc` were produced by Go Dapr's own
//! implementation (see `../testdata/README.md`): decrypting them, and
//! re-creating one byte for byte from its key material, shows the two
//! implementations agree on the wire format.

use super::*;

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/crypto/testdata/kit");

fn kit(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KIT}/{name}.enc")).unwrap()
}

/// Decrypts a whole message, feeding it in `chunk`-byte pieces; the kit
/// vectors store the file key unwrapped (their tests wrap with the
/// identity function), so `unwrap` maps the wrapped key to the file key.
fn decrypt_all(
    data: &[u8],
    chunk: usize,
    unwrap: impl Fn(&Header) -> Vec<u8>,
) -> Result<(Header, Vec<u8>), EnvelopeError> {
    let mut reader = HeaderReader::default();
    let mut chunks = data.chunks(chunk.max(1));
    let (header, rest) = loop {
        match chunks.next() {
            Some(c) => {
                if let Some(h) = reader.push(c)? {
                    break h;
                }
            }
            None => return Err(reader.finish()),
        }
    };
    let mut dec = Decryptor::new(&header, &unwrap(&header))?;
    let mut out = Vec::new();
    dec.update(&rest, &mut out)?;
    for c in chunks {
        dec.update(c, &mut out)?;
    }
    dec.finish(&mut out)?;
    Ok((header, out))
}

fn identity(h: &Header) -> Vec<u8> {
    h.wrapped_key.clone()
}

fn encrypt_all(
    plaintext: &[u8],
    chunk: usize,
    fk: &[u8; 32],
    np: [u8; 7],
    cipher: DataCipher,
    key_name: &str,
) -> Vec<u8> {
    let mut enc = Encryptor::new(EncryptParams {
        file_key: fk,
        nonce_prefix: np,
        wrapped_key: fk,
        algorithm: KeyWrapAlgorithm::A256Kw,
        cipher,
        manifest_key_name: key_name,
    });
    let mut out = enc.header().to_vec();
    for c in plaintext.chunks(chunk.max(1)) {
        enc.update(c, &mut out).unwrap();
    }
    enc.finish(&mut out);
    out
}

fn repeat(pattern: &[u8], times: usize) -> Vec<u8> {
    pattern.repeat(times)
}

fn kit_plaintexts() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("single-segment", b"hello world".to_vec()),
        ("single-segment-no-key-name", b"hello world".to_vec()),
        (
            "multi-segment",
            repeat(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0], 12 << 10),
        ),
        (
            "one-full-segment",
            repeat(&[1, 2, 3, 4, 5, 6, 7, 8], 8 << 10),
        ),
        (
            "two-full-segments",
            repeat(&[1, 2, 3, 4, 5, 6, 7, 8], 16 << 10),
        ),
        ("empty-message", Vec::new()),
    ]
}

#[test]
fn go_dapr_ciphertexts_decrypt() {
    for (name, want) in kit_plaintexts() {
        for chunk in [1usize, 7, 4096, 1 << 20] {
            if chunk == 1 && want.len() > 1000 {
                continue;
            }
            let (header, got) = decrypt_all(&kit(name), chunk, identity)
                .unwrap_or_else(|e| panic!("{name} (chunk {chunk}): {e}"));
            assert_eq!(got, want, "{name}");
            let expected_name = if name.ends_with("no-key-name") {
                ""
            } else {
                "mykey"
            };
            assert_eq!(header.key_name, expected_name, "{name}");
            assert_eq!(header.algorithm, KeyWrapAlgorithm::A256Kw);
            assert_eq!(header.cipher, DataCipher::AesGcm);
        }
    }
}

#[test]
fn reencrypting_go_vectors_reproduces_them_byte_for_byte() {
    // Same file key, nonce prefix, key name and plaintext as Go used: the
    // manifest JSON, MAC and every segment must come out identical.
    for (name, plaintext) in kit_plaintexts() {
        let go = kit(name);
        let (header, _) = decrypt_all(&go, 1 << 20, identity).unwrap();
        let fk: [u8; 32] = header.wrapped_key.clone().try_into().unwrap();
        let ours = encrypt_all(
            &plaintext,
            5000,
            &fk,
            header.nonce_prefix,
            header.cipher,
            &header.key_name,
        );
        assert!(ours == go, "{name}: re-encryption differs from Go's bytes");
    }
}

#[test]
fn round_trips_both_ciphers_at_segment_boundaries() {
    let fk = [7u8; 32];
    for cipher in [DataCipher::AesGcm, DataCipher::ChaCha20Poly1305] {
        for len in [
            0,
            1,
            SEGMENT_SIZE - 1,
            SEGMENT_SIZE,
            SEGMENT_SIZE + 1,
            3 * SEGMENT_SIZE,
            3 * SEGMENT_SIZE + 17,
        ] {
            let pt: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for chunk in [1000, SEGMENT_SIZE, 1 << 20] {
                let ct = encrypt_all(&pt, chunk, &fk, [1, 2, 3, 4, 5, 6, 7], cipher, "k");
                let segments = len.div_ceil(SEGMENT_SIZE);
                let header_len = ct.len() - len - segments * SEGMENT_OVERHEAD;
                assert!(header_len < 200, "only header + segments + tags");
                let (_, back) = decrypt_all(&ct, chunk / 3 + 1, identity).unwrap();
                assert!(back == pt, "{cipher:?} len {len} chunk {chunk}");
            }
        }
    }
}

fn sample(len: usize) -> (Vec<u8>, Vec<u8>) {
    let pt: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
    let ct = encrypt_all(
        &pt,
        1 << 20,
        &[9u8; 32],
        [0; 7],
        DataCipher::AesGcm,
        "mykey",
    );
    (pt, ct)
}

fn header_len(ct: &[u8]) -> usize {
    let mut n = 0;
    for (i, b) in ct.iter().enumerate() {
        if *b == b'\n' {
            n += 1;
            if n == 3 {
                return i + 1;
            }
        }
    }
    panic!("no header")
}

#[test]
fn tampered_ciphertext_is_rejected() {
    let (_, ct) = sample(3 * SEGMENT_SIZE + 100);
    let h = header_len(&ct);
    let full = SEGMENT_SIZE + SEGMENT_OVERHEAD;

    // Any flipped payload byte: that segment fails, nothing after it is
    // released.
    for pos in [
        h,
        h + 5,
        h + full + 1,
        ct.len() - 1,
        ct.len() - SEGMENT_OVERHEAD,
    ] {
        let mut bad = ct.clone();
        bad[pos] ^= 0x01;
        let err = decrypt_all(&bad, 4096, identity).unwrap_err();
        assert!(matches!(err, EnvelopeError::Segment(_)), "pos {pos}: {err}");
    }

    // Manifest edits that keep it valid JSON break the MAC.
    let text = String::from_utf8_lossy(&ct[..h]).to_string();
    let renamed = text.replacen("\"k\":\"mykey\"", "\"k\":\"other\"", 1);
    let mut bad = renamed.into_bytes();
    bad.extend_from_slice(&ct[h..]);
    assert_eq!(
        decrypt_all(&bad, 4096, identity).unwrap_err(),
        EnvelopeError::Signature
    );

    // A flipped MAC byte.
    let mut bad = ct.clone();
    bad[h - 3] = if bad[h - 3] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        decrypt_all(&bad, 4096, identity).unwrap_err(),
        EnvelopeError::Signature
    );

    // Wrong file key (what a wrong KEK unwraps to) and a wrongly sized one.
    assert_eq!(
        decrypt_all(&ct, 4096, |_| vec![1u8; 32]).unwrap_err(),
        EnvelopeError::Signature
    );
    assert_eq!(
        decrypt_all(&ct, 4096, |_| vec![1u8; 16]).unwrap_err(),
        EnvelopeError::Signature
    );
}

#[test]
fn truncated_reordered_or_extended_ciphertext_is_rejected() {
    let (_, ct) = sample(3 * SEGMENT_SIZE + 100);
    let h = header_len(&ct);
    let full = SEGMENT_SIZE + SEGMENT_OVERHEAD;

    // Cut inside the last segment, at a segment boundary (the final segment
    // missing: the previous one is not flagged last), inside the header.
    assert!(decrypt_all(&ct[..ct.len() - 1], 4096, identity).is_err());
    let boundary = &ct[..h + 3 * full];
    assert_eq!(
        decrypt_all(boundary, 4096, identity).unwrap_err(),
        EnvelopeError::Segment(2)
    );
    assert!(decrypt_all(&ct[..h - 10], 4096, identity).is_err());

    // Swap segments 0 and 1.
    let mut swapped = ct[..h].to_vec();
    swapped.extend_from_slice(&ct[h + full..h + 2 * full]);
    swapped.extend_from_slice(&ct[h..h + full]);
    swapped.extend_from_slice(&ct[h + 2 * full..]);
    assert_eq!(
        decrypt_all(&swapped, 4096, identity).unwrap_err(),
        EnvelopeError::Segment(0)
    );

    // Trailing bytes after the final segment.
    let mut extended = ct.clone();
    extended.extend_from_slice(b"junk");
    assert!(decrypt_all(&extended, 4096, identity).is_err());

    // Removing whole segments past the first.
    let mut dropped = ct[..h + full].to_vec();
    dropped.extend_from_slice(&ct[h + 2 * full..]);
    assert!(decrypt_all(&dropped, 4096, identity).is_err());
}

#[test]
fn malformed_headers_are_rejected() {
    let cases: &[&[u8]] = &[
        b"",
        b"dapr.io/enc/v2\n{}\nAAAA\n",
        b"\n\n\n",
        b"dapr.io/enc/v1\nnot json\nAAAA\n",
        b"dapr.io/enc/v1\n{\"kw\":9,\"wfk\":\"AAAA\",\"cph\":1,\"np\":\"AAAAAAAAAA==\"}\nAAAA\n",
        b"dapr.io/enc/v1\n{\"kw\":1,\"wfk\":\"AAAA\",\"cph\":3,\"np\":\"AAAAAAAAAA==\"}\nAAAA\n",
        b"dapr.io/enc/v1\n{\"kw\":1,\"wfk\":\"AAAA\",\"cph\":1,\"np\":\"AAAA\"}\nAAAA\n",
        b"dapr.io/enc/v1\n{\"kw\":1,\"wfk\":\"\",\"cph\":1,\"np\":\"AAAAAAAAAA==\"}\nAAAA\n",
    ];
    for c in cases {
        assert!(
            decrypt_all(c, 3, identity).is_err(),
            "{}",
            String::from_utf8_lossy(c)
        );
    }
    let huge = vec![b'x'; MAX_HEADER + 10];
    assert!(decrypt_all(&huge, 4096, identity).is_err());
}

#[test]
fn algorithm_and_cipher_names() {
    assert_eq!(
        KeyWrapAlgorithm::parse("aes").unwrap(),
        KeyWrapAlgorithm::A256Kw
    );
    assert_eq!(
        KeyWrapAlgorithm::parse("RSA").unwrap(),
        KeyWrapAlgorithm::RsaOaep256
    );
    assert_eq!(
        KeyWrapAlgorithm::parse("rsa-oaep-256").unwrap().name(),
        "RSA-OAEP-256"
    );
    assert!(KeyWrapAlgorithm::parse("RSA-OAEP").is_err());
    assert_eq!(
        DataCipher::parse("chacha20-poly1305").unwrap(),
        DataCipher::ChaCha20Poly1305
    );
    assert!(DataCipher::parse("AES-CBC").is_err());
}
