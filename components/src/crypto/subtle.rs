//! The subtle operations over a [`Key`], with the algorithm names and
//! conventions of Dapr's local crypto components: AEAD ciphertext and tag are
//! returned separately, signatures are over a caller-computed digest (EdDSA:
//! over the message), ECDSA signatures are ASN.1 DER.

use aes_gcm::{
    AesGcm,
    aead::{AeadInPlace, KeyInit, generic_array::typenum::U12},
};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use rsa::{Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey, traits::PublicKeyParts};

use super::{
    CryptoError,
    keys::{Key, KeyMaterial},
};

/// Encryption (and key wrapping) algorithms.
pub const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "A128CBC",
    "A192CBC",
    "A256CBC",
    "A128CBC-NOPAD",
    "A192CBC-NOPAD",
    "A256CBC-NOPAD",
    "A128GCM",
    "A192GCM",
    "A256GCM",
    "A128KW",
    "A192KW",
    "A256KW",
    "C20P",
    "C20PKW",
    "XC20P",
    "XC20PKW",
    "RSA1_5",
    "RSA-OAEP",
    "RSA-OAEP-256",
    "RSA-OAEP-384",
    "RSA-OAEP-512",
];

/// Signature algorithms.
pub const SIGNATURE_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

const TAG_LEN: usize = 16;

fn check(key: &Key, op: &str, alg: &str) -> Result<(), CryptoError> {
    if !key.can_perform(op) {
        return Err(CryptoError::Operation(format!(
            "key cannot perform the '{op}' operation"
        )));
    }
    if !key.allows_algorithm(alg) {
        return Err(CryptoError::Operation(format!(
            "key cannot be used with algorithm '{alg}'"
        )));
    }
    Ok(())
}

fn oct(key: &Key) -> Result<&[u8], CryptoError> {
    match &key.material {
        KeyMaterial::Oct(k) => Ok(k),
        _ => Err(CryptoError::KeyTypeMismatch),
    }
}

fn aes_size(alg: &str) -> usize {
    match &alg[..4] {
        "A128" => 16,
        "A192" => 24,
        _ => 32,
    }
}

/// `encrypt` (and `wrapKey`, which is the same operation on a serialized
/// key): ciphertext and, for AEADs, the tag.
pub fn encrypt(
    key: &Key,
    op: &str,
    alg: &str,
    plaintext: &[u8],
    nonce: &[u8],
    aad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    check(key, op, alg)?;
    match alg {
        "A128GCM" | "A192GCM" | "A256GCM" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            let nonce = nonce_of(nonce, 12)?;
            let mut buf = plaintext.to_vec();
            let tag = match k.len() {
                16 => AesGcm::<aes::Aes128, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .encrypt_in_place_detached(nonce.into(), aad, &mut buf),
                24 => AesGcm::<aes::Aes192, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .encrypt_in_place_detached(nonce.into(), aad, &mut buf),
                _ => AesGcm::<aes::Aes256, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .encrypt_in_place_detached(nonce.into(), aad, &mut buf),
            }
            .map_err(|_| CryptoError::Operation("AES-GCM encryption failed".into()))?;
            Ok((buf, tag.to_vec()))
        }
        "C20P" | "C20PKW" | "XC20P" | "XC20PKW" => {
            let k = sized(oct(key)?, 32)?;
            let mut buf = plaintext.to_vec();
            let tag = if alg.starts_with('X') {
                XChaCha20Poly1305::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .encrypt_in_place_detached(nonce_of(nonce, 24)?.into(), aad, &mut buf)
            } else {
                ChaCha20Poly1305::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .encrypt_in_place_detached(nonce_of(nonce, 12)?.into(), aad, &mut buf)
            }
            .map_err(|_| CryptoError::Operation("ChaCha20-Poly1305 encryption failed".into()))?;
            Ok((buf, tag.to_vec()))
        }
        "A128KW" | "A192KW" | "A256KW" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            Ok((aes_kw_wrap(k, plaintext)?, Vec::new()))
        }
        "A128CBC" | "A192CBC" | "A256CBC" | "A128CBC-NOPAD" | "A192CBC-NOPAD" | "A256CBC-NOPAD" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            let iv = nonce_of(nonce, 16)?;
            Ok((
                aes_cbc_encrypt(k, iv, plaintext, alg.ends_with("NOPAD"))?,
                Vec::new(),
            ))
        }
        "RSA1_5" | "RSA-OAEP" | "RSA-OAEP-256" | "RSA-OAEP-384" | "RSA-OAEP-512" => {
            let public = key.rsa_public()?;
            let mut rng = rand_core::OsRng;
            let out = match alg {
                "RSA1_5" => public.encrypt(&mut rng, Pkcs1v15Encrypt, plaintext),
                _ => public.encrypt(&mut rng, oaep(alg, aad)?, plaintext),
            }
            .map_err(|e| CryptoError::Operation(format!("RSA encryption failed: {e}")))?;
            Ok((out, Vec::new()))
        }
        _ => Err(CryptoError::UnsupportedAlgorithm(alg.to_owned())),
    }
}

/// `decrypt` (and `unwrapKey`).
pub fn decrypt(
    key: &Key,
    op: &str,
    alg: &str,
    ciphertext: &[u8],
    nonce: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check(key, op, alg)?;
    let auth_failed = || CryptoError::Operation("message authentication failed".into());
    match alg {
        "A128GCM" | "A192GCM" | "A256GCM" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            let nonce = nonce_of(nonce, 12)?;
            let tag = tag_of(tag)?;
            let mut buf = ciphertext.to_vec();
            match k.len() {
                16 => AesGcm::<aes::Aes128, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .decrypt_in_place_detached(nonce.into(), aad, &mut buf, tag.into()),
                24 => AesGcm::<aes::Aes192, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .decrypt_in_place_detached(nonce.into(), aad, &mut buf, tag.into()),
                _ => AesGcm::<aes::Aes256, U12>::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .decrypt_in_place_detached(nonce.into(), aad, &mut buf, tag.into()),
            }
            .map_err(|_| auth_failed())?;
            Ok(buf)
        }
        "C20P" | "C20PKW" | "XC20P" | "XC20PKW" => {
            let k = sized(oct(key)?, 32)?;
            let tag = tag_of(tag)?;
            let mut buf = ciphertext.to_vec();
            if alg.starts_with('X') {
                XChaCha20Poly1305::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .decrypt_in_place_detached(
                        nonce_of(nonce, 24)?.into(),
                        aad,
                        &mut buf,
                        tag.into(),
                    )
            } else {
                ChaCha20Poly1305::new_from_slice(k)
                    .map_err(|_| CryptoError::KeyTypeMismatch)?
                    .decrypt_in_place_detached(
                        nonce_of(nonce, 12)?.into(),
                        aad,
                        &mut buf,
                        tag.into(),
                    )
            }
            .map_err(|_| auth_failed())?;
            Ok(buf)
        }
        "A128KW" | "A192KW" | "A256KW" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            aes_kw_unwrap(k, ciphertext)
        }
        "A128CBC" | "A192CBC" | "A256CBC" | "A128CBC-NOPAD" | "A192CBC-NOPAD" | "A256CBC-NOPAD" => {
            let k = sized(oct(key)?, aes_size(alg))?;
            let iv = nonce_of(nonce, 16)?;
            aes_cbc_decrypt(k, iv, ciphertext, alg.ends_with("NOPAD"))
        }
        "RSA1_5" | "RSA-OAEP" | "RSA-OAEP-256" | "RSA-OAEP-384" | "RSA-OAEP-512" => {
            let KeyMaterial::RsaPrivate(private) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            match alg {
                "RSA1_5" => private.decrypt(Pkcs1v15Encrypt, ciphertext),
                _ => private.decrypt(oaep(alg, aad)?, ciphertext),
            }
            .map_err(|_| CryptoError::Operation("RSA decryption failed".into()))
        }
        _ => Err(CryptoError::UnsupportedAlgorithm(alg.to_owned())),
    }
}

/// Signs `digest` (the message for EdDSA).
pub fn sign(key: &Key, alg: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
    check(key, "sign", alg)?;
    let failed = |e: &dyn std::fmt::Display| CryptoError::Operation(format!("failed to sign: {e}"));
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let KeyMaterial::RsaPrivate(k) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            k.sign(pkcs1_scheme(alg), digest).map_err(|e| failed(&e))
        }
        "PS256" | "PS384" | "PS512" => {
            let KeyMaterial::RsaPrivate(k) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            // Go's rsa.SignPSS with nil options uses the largest salt.
            let salt = max_pss_salt(k, hash_len(alg));
            k.sign_with_rng(&mut rand_core::OsRng, pss_scheme(alg, salt), digest)
                .map_err(|e| failed(&e))
        }
        "ES256" => {
            use p256::ecdsa::signature::hazmat::PrehashSigner;
            let KeyMaterial::P256Private(k) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                .sign_prehash(digest)
                .map_err(|e| failed(&e))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        "ES384" => {
            use p384::ecdsa::signature::hazmat::PrehashSigner;
            let KeyMaterial::P384Private(k) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                .sign_prehash(digest)
                .map_err(|e| failed(&e))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        "EdDSA" => {
            use ed25519_dalek::Signer;
            let KeyMaterial::Ed25519Private(k) = &key.material else {
                return Err(CryptoError::KeyTypeMismatch);
            };
            Ok(k.sign(digest).to_bytes().to_vec())
        }
        _ => Err(CryptoError::UnsupportedAlgorithm(alg.to_owned())),
    }
}

/// Whether `signature` is valid for `digest`; a wrong signature is `Ok(false)`.
pub fn verify(key: &Key, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
    check(key, "verify", alg)?;
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let public = key.rsa_public()?;
            Ok(public.verify(pkcs1_scheme(alg), digest, signature).is_ok())
        }
        "PS256" | "PS384" | "PS512" => {
            let public = key.rsa_public()?;
            // Go verifies PSS with an auto-detected salt length: accept the
            // two lengths signers use (hash length, maximum).
            let h = hash_len(alg);
            let max = public.size().saturating_sub(h + 2);
            Ok([h, max].into_iter().any(|salt| {
                public
                    .verify(pss_scheme(alg, salt), digest, signature)
                    .is_ok()
            }))
        }
        "ES256" => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let public = key.p256_public()?;
            let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
                return Ok(false);
            };
            Ok(p256::ecdsa::VerifyingKey::from(public)
                .verify_prehash(digest, &sig)
                .is_ok())
        }
        "ES384" => {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            let public = key.p384_public()?;
            let Ok(sig) = p384::ecdsa::Signature::from_der(signature) else {
                return Ok(false);
            };
            Ok(p384::ecdsa::VerifyingKey::from(public)
                .verify_prehash(digest, &sig)
                .is_ok())
        }
        "EdDSA" => {
            let public = match &key.material {
                KeyMaterial::Ed25519Private(k) => k.verifying_key(),
                KeyMaterial::Ed25519Public(k) => *k,
                _ => return Err(CryptoError::KeyTypeMismatch),
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                return Ok(false);
            };
            Ok(public.verify_strict(digest, &sig).is_ok())
        }
        _ => Err(CryptoError::UnsupportedAlgorithm(alg.to_owned())),
    }
}

fn sized(k: &[u8], len: usize) -> Result<&[u8], CryptoError> {
    if k.len() == len {
        Ok(k)
    } else {
        Err(CryptoError::KeyTypeMismatch)
    }
}

fn nonce_of(nonce: &[u8], len: usize) -> Result<&[u8], CryptoError> {
    if nonce.len() == len {
        Ok(nonce)
    } else {
        Err(CryptoError::InvalidNonce)
    }
}

fn tag_of(tag: &[u8]) -> Result<&[u8], CryptoError> {
    if tag.len() == TAG_LEN {
        Ok(tag)
    } else {
        Err(CryptoError::Operation("invalid tag".into()))
    }
}

fn aes_kw_wrap(kek: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let err = |_| CryptoError::Operation("invalid plaintext length for AES-KW".into());
    match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .wrap_vec(plaintext)
            .map_err(err),
        24 => aes_kw::KekAes192::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .wrap_vec(plaintext)
            .map_err(err),
        _ => aes_kw::KekAes256::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .wrap_vec(plaintext)
            .map_err(err),
    }
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let err = |_| CryptoError::Operation("AES-KW unwrap failed (integrity check)".into());
    match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .unwrap_vec(wrapped)
            .map_err(err),
        24 => aes_kw::KekAes192::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .unwrap_vec(wrapped)
            .map_err(err),
        _ => aes_kw::KekAes256::try_from(kek)
            .map_err(|_| CryptoError::KeyTypeMismatch)?
            .unwrap_vec(wrapped)
            .map_err(err),
    }
}

fn aes_cbc_encrypt(k: &[u8], iv: &[u8], pt: &[u8], nopad: bool) -> Result<Vec<u8>, CryptoError> {
    if nopad && !pt.len().is_multiple_of(16) {
        return Err(CryptoError::Operation("invalid plaintext length".into()));
    }
    macro_rules! run {
        ($aes:ty) => {{
            let c = cbc::Encryptor::<$aes>::new_from_slices(k, iv)
                .map_err(|_| CryptoError::KeyTypeMismatch)?;
            if nopad {
                c.encrypt_padded_vec_mut::<block_padding::NoPadding>(pt)
            } else {
                c.encrypt_padded_vec_mut::<block_padding::Pkcs7>(pt)
            }
        }};
    }
    Ok(match k.len() {
        16 => run!(aes::Aes128),
        24 => run!(aes::Aes192),
        _ => run!(aes::Aes256),
    })
}

fn aes_cbc_decrypt(k: &[u8], iv: &[u8], ct: &[u8], nopad: bool) -> Result<Vec<u8>, CryptoError> {
    if !ct.len().is_multiple_of(16) {
        return Err(CryptoError::Operation("invalid ciphertext length".into()));
    }
    let failed = |_| CryptoError::Operation("invalid padding".into());
    macro_rules! run {
        ($aes:ty) => {{
            let c = cbc::Decryptor::<$aes>::new_from_slices(k, iv)
                .map_err(|_| CryptoError::KeyTypeMismatch)?;
            if nopad {
                c.decrypt_padded_vec_mut::<block_padding::NoPadding>(ct)
                    .map_err(failed)?
            } else {
                c.decrypt_padded_vec_mut::<block_padding::Pkcs7>(ct)
                    .map_err(failed)?
            }
        }};
    }
    Ok(match k.len() {
        16 => run!(aes::Aes128),
        24 => run!(aes::Aes192),
        _ => run!(aes::Aes256),
    })
}

fn oaep(alg: &str, label: &[u8]) -> Result<Oaep, CryptoError> {
    // The RSA crate takes the OAEP label as a string.
    let label = if label.is_empty() {
        None
    } else {
        Some(String::from_utf8(label.to_vec()).map_err(|_| {
            CryptoError::Operation("associated data must be UTF-8 for RSA-OAEP".into())
        })?)
    };
    Ok(match (alg, label) {
        ("RSA-OAEP", None) => Oaep::new::<sha1::Sha1>(),
        ("RSA-OAEP", Some(l)) => Oaep::new_with_label::<sha1::Sha1, _>(l),
        ("RSA-OAEP-384", None) => Oaep::new::<sha2::Sha384>(),
        ("RSA-OAEP-384", Some(l)) => Oaep::new_with_label::<sha2::Sha384, _>(l),
        ("RSA-OAEP-512", None) => Oaep::new::<sha2::Sha512>(),
        ("RSA-OAEP-512", Some(l)) => Oaep::new_with_label::<sha2::Sha512, _>(l),
        (_, None) => Oaep::new::<sha2::Sha256>(),
        (_, Some(l)) => Oaep::new_with_label::<sha2::Sha256, _>(l),
    })
}

fn hash_len(alg: &str) -> usize {
    match &alg[2..] {
        "384" => 48,
        "512" => 64,
        _ => 32,
    }
}

fn pkcs1_scheme(alg: &str) -> Pkcs1v15Sign {
    match alg {
        "RS384" => Pkcs1v15Sign::new::<sha2::Sha384>(),
        "RS512" => Pkcs1v15Sign::new::<sha2::Sha512>(),
        _ => Pkcs1v15Sign::new::<sha2::Sha256>(),
    }
}

fn pss_scheme(alg: &str, salt: usize) -> Pss {
    match alg {
        "PS384" => Pss::new_with_salt::<sha2::Sha384>(salt),
        "PS512" => Pss::new_with_salt::<sha2::Sha512>(salt),
        _ => Pss::new_with_salt::<sha2::Sha256>(salt),
    }
}

fn max_pss_salt(k: &RsaPrivateKey, hash_len: usize) -> usize {
    // emLen = ceil((modBits - 1) / 8); salt = emLen - hLen - 2.
    let em_len = (k.n().bits() - 1).div_ceil(8);
    em_len.saturating_sub(hash_len + 2)
}
