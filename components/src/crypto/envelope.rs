//! Dapr's encryption scheme `dapr.io/enc/v1` (the format of
//! `EncryptAlpha1`/`DecryptAlpha1`), written from its specification in
//! dapr/kit `schemes/enc/v1/README.md`:
//!
//! ```text
//! dapr.io/enc/v1\n
//! {"k":<key name>,"kw":<wrap alg id>,"wfk":<b64 wrapped file key>,"cph":<cipher id>,"np":<b64 7-byte nonce prefix>}\n
//! <b64 HMAC-SHA-256 over the two lines above, key HKDF(fk, info "header")>\n
//! segment_0 || segment_1 || ...    each ≤ 64 KiB of plaintext + 16-byte tag,
//!                                  key HKDF(fk, salt np, info "payload"),
//!                                  nonce np || u32 BE index || last flag
//! ```
//!
//! Sans-IO: [`Encryptor`] and [`Decryptor`] turn input chunks into output
//! bytes and hold at most one segment, so a stream of any size is processed
//! in constant memory. A segment's plaintext is only released after its tag
//! verified; truncation, reordering and a missing final segment are detected
//! through the index and last-segment flag bound into every nonce.

use base64::{Engine, engine::general_purpose::STANDARD};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const SCHEME_NAME: &str = "dapr.io/enc/v1";
/// Plaintext bytes per segment.
pub const SEGMENT_SIZE: usize = 64 << 10;
/// AEAD tag appended to each segment.
pub const SEGMENT_OVERHEAD: usize = 16;
pub const NONCE_PREFIX_LEN: usize = 7;
pub const FILE_KEY_LEN: usize = 32;
/// The header may not be longer than one segment.
const MAX_HEADER: usize = SEGMENT_SIZE;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    #[error("invalid header: invalid manifest")]
    InvalidManifest,
    #[error("unsupported key wrap algorithm '{0}'")]
    UnsupportedAlgorithm(String),
    #[error("unsupported cipher '{0}'")]
    UnsupportedCipher(String),
    #[error("document's manifest does not contain a key name, and no key name was provided")]
    DecryptionKeyMissing,
    #[error("failed to validate the document's signature")]
    Signature,
    #[error("error processing segment {0}: failed to decrypt segment")]
    Segment(u32),
    #[error("unexpected end of the encrypted stream")]
    Truncated,
    #[error("input stream is too large")]
    TooLarge,
}

/// Key wrapping algorithms of the scheme, with their manifest ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrapAlgorithm {
    A256Kw = 1,
    A128CbcNoPad = 2,
    A192CbcNoPad = 3,
    A256CbcNoPad = 4,
    RsaOaep256 = 5,
}

impl KeyWrapAlgorithm {
    /// From a request's (case-insensitive) name; `AES` and `RSA` are aliases.
    pub fn parse(name: &str) -> Result<Self, EnvelopeError> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "A256KW" | "AES" => Self::A256Kw,
            "A128CBC-NOPAD" => Self::A128CbcNoPad,
            "A192CBC-NOPAD" => Self::A192CbcNoPad,
            "A256CBC-NOPAD" => Self::A256CbcNoPad,
            "RSA-OAEP-256" | "RSA" => Self::RsaOaep256,
            _ => return Err(EnvelopeError::UnsupportedAlgorithm(name.to_owned())),
        })
    }

    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            1 => Self::A256Kw,
            2 => Self::A128CbcNoPad,
            3 => Self::A192CbcNoPad,
            4 => Self::A256CbcNoPad,
            5 => Self::RsaOaep256,
            _ => return None,
        })
    }

    /// The algorithm name handed to the component to wrap/unwrap the key.
    pub fn name(self) -> &'static str {
        match self {
            Self::A256Kw => "A256KW",
            Self::A128CbcNoPad => "A128CBC-NOPAD",
            Self::A192CbcNoPad => "A192CBC-NOPAD",
            Self::A256CbcNoPad => "A256CBC-NOPAD",
            Self::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

/// The AEAD that encrypts the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCipher {
    AesGcm = 1,
    ChaCha20Poly1305 = 2,
}

impl DataCipher {
    pub fn parse(name: &str) -> Result<Self, EnvelopeError> {
        match name.to_ascii_uppercase().as_str() {
            "AES-GCM" => Ok(Self::AesGcm),
            "CHACHA20-POLY1305" => Ok(Self::ChaCha20Poly1305),
            _ => Err(EnvelopeError::UnsupportedCipher(name.to_owned())),
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::AesGcm),
            2 => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// The manifest line. Field order is the specification's (`k`, `kw`, `wfk`,
/// `cph`, `np`), which serde keeps.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    k: String,
    kw: u8,
    wfk: String,
    cph: u8,
    np: String,
}

/// A parsed, not yet authenticated, header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The manifest line exactly as received (the MAC covers these bytes).
    raw_manifest: Vec<u8>,
    mac: Vec<u8>,
    pub key_name: String,
    pub algorithm: KeyWrapAlgorithm,
    pub wrapped_key: Vec<u8>,
    pub cipher: DataCipher,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

/// Keys derived from a file key. The segment AEAD is ring's (AES-256-GCM
/// or ChaCha20-Poly1305, both standard 12-byte-nonce constructions).
struct FileKey {
    header_key: [u8; 32],
    aead: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl FileKey {
    fn new(fk: &[u8], nonce_prefix: [u8; NONCE_PREFIX_LEN], cipher: DataCipher) -> Self {
        let mut header_key = [0u8; 32];
        let mut payload_key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's 8160-byte output limit.
        let _ = Hkdf::<Sha256>::new(None, fk).expand(b"header", &mut header_key);
        let _ = Hkdf::<Sha256>::new(Some(&nonce_prefix), fk).expand(b"payload", &mut payload_key);
        let alg = match cipher {
            DataCipher::AesGcm => &AES_256_GCM,
            DataCipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        // Both algorithms take exactly the 32-byte key derived above.
        let aead = LessSafeKey::new(
            UnboundKey::new(alg, &payload_key)
                .unwrap_or_else(|_| unreachable!("32-byte key for a 256-bit AEAD")),
        );
        Self {
            header_key,
            aead,
            nonce_prefix,
        }
    }

    fn header_mac(&self, manifest: &[u8]) -> [u8; 32] {
        // Infallible: HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.header_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(SCHEME_NAME.as_bytes());
        mac.update(b"\n");
        mac.update(manifest);
        mac.update(b"\n");
        mac.finalize().into_bytes().into()
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    /// Appends the sealed `plaintext` to `out`.
    fn seal(&self, plaintext: &[u8], index: u32, last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let nonce = Nonce::assume_unique_for_key(self.nonce(index, last));
        let buf = &mut out[start..];
        // Sealing fails only for inputs over the AEAD's size limit (GiBs);
        // segments are 64 KiB.
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce, Aad::empty(), buf)
            .unwrap_or_else(|_| unreachable!("segment within AEAD limits"));
        out.extend_from_slice(tag.as_ref());
    }

    /// Appends the plaintext of `segment` (ciphertext || tag) to `out`, only
    /// if it authenticates.
    fn open(&self, segment: &[u8], index: u32, last: bool, out: &mut Vec<u8>) -> bool {
        if segment.len() < SEGMENT_OVERHEAD {
            return false;
        }
        let (ct, tag) = segment.split_at(segment.len() - SEGMENT_OVERHEAD);
        let start = out.len();
        out.extend_from_slice(ct);
        let nonce = Nonce::assume_unique_for_key(self.nonce(index, last));
        let buf = &mut out[start..];
        let ok = match <[u8; SEGMENT_OVERHEAD]>::try_from(tag) {
            Ok(tag) => self
                .aead
                .open_in_place_separate_tag(nonce, Aad::empty(), Tag::from(tag), buf, 0..)
                .is_ok(),
            Err(_) => false,
        };
        if !ok {
            out.truncate(start);
        }
        ok
    }
}

/// What a new envelope needs besides the plaintext.
pub struct EncryptParams<'a> {
    /// Fresh random file key (32 bytes) and nonce prefix (7 bytes).
    pub file_key: &'a [u8; FILE_KEY_LEN],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The file key wrapped by the key encryption key.
    pub wrapped_key: &'a [u8],
    pub algorithm: KeyWrapAlgorithm,
    pub cipher: DataCipher,
    /// Key name written to the manifest; empty omits it.
    pub manifest_key_name: &'a str,
}

/// Encrypts a stream: [`Encryptor::header`] first, then the output of each
/// [`Encryptor::update`], then [`Encryptor::finish`].
pub struct Encryptor {
    fk: FileKey,
    pending: Vec<u8>,
    index: u32,
    header: Vec<u8>,
}

impl Encryptor {
    pub fn new(p: EncryptParams<'_>) -> Self {
        let fk = FileKey::new(p.file_key, p.nonce_prefix, p.cipher);
        let manifest = ManifestJson {
            k: p.manifest_key_name.to_owned(),
            kw: p.algorithm as u8,
            wfk: STANDARD.encode(p.wrapped_key),
            cph: p.cipher as u8,
            np: STANDARD.encode(p.nonce_prefix),
        };
        // Serializing plain strings and integers cannot fail.
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let mac = fk.header_mac(&manifest);
        let mut header = Vec::with_capacity(manifest.len() + 64);
        header.extend_from_slice(SCHEME_NAME.as_bytes());
        header.push(b'\n');
        header.extend_from_slice(&manifest);
        header.push(b'\n');
        header.extend_from_slice(STANDARD.encode(mac).as_bytes());
        header.push(b'\n');
        Self {
            fk,
            pending: Vec::with_capacity(SEGMENT_SIZE * 2),
            index: 0,
            header,
        }
    }

    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Seals every full segment that is known not to be the last one.
    pub fn update(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        self.pending.extend_from_slice(data);
        let mut off = 0;
        // A full segment is sealed only once a byte after it exists: the
        // final segment (even a full one) carries the last flag.
        while self.pending.len() - off > SEGMENT_SIZE {
            self.fk.seal(
                &self.pending[off..off + SEGMENT_SIZE],
                self.index,
                false,
                out,
            );
            self.index = self.index.checked_add(1).ok_or(EnvelopeError::TooLarge)?;
            off += SEGMENT_SIZE;
        }
        self.pending.drain(..off);
        Ok(())
    }

    /// Seals the final segment (none for an empty message).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.fk.seal(&pending, self.index, true, out);
        }
    }
}

/// Reads the header from the front of a stream.
#[derive(Default)]
pub struct HeaderReader {
    buf: Vec<u8>,
}

impl HeaderReader {
    /// Feeds bytes; once the three header lines are in, the header and the
    /// bytes after it.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<(Header, Vec<u8>)>, EnvelopeError> {
        self.buf.extend_from_slice(data);
        let mut lines = Vec::with_capacity(3);
        let mut start = 0;
        for (i, b) in self.buf.iter().enumerate() {
            if *b != b'\n' {
                continue;
            }
            if i == start {
                return Err(EnvelopeError::InvalidHeader("invalid format"));
            }
            lines.push(start..i);
            start = i + 1;
            if lines.len() == 1 && &self.buf[lines[0].clone()] != SCHEME_NAME.as_bytes() {
                return Err(EnvelopeError::InvalidHeader("unsupported scheme"));
            }
            if lines.len() == 3 {
                break;
            }
        }
        if lines.len() < 3 {
            if lines.is_empty() && self.buf.len() > SCHEME_NAME.len() {
                return Err(EnvelopeError::InvalidHeader("unsupported scheme"));
            }
            if self.buf.len() >= MAX_HEADER {
                return Err(EnvelopeError::InvalidHeader("header is too long"));
            }
            return Ok(None);
        }
        let raw_manifest = self.buf[lines[1].clone()].to_vec();
        let mac = self.buf[lines[2].clone()].to_vec();
        let rest = self.buf[start..].to_vec();
        self.buf.clear();
        Ok(Some((parse_manifest(raw_manifest, mac)?, rest)))
    }

    /// The stream ended before the header was complete.
    pub fn finish(&self) -> EnvelopeError {
        if self.buf.is_empty() {
            EnvelopeError::InvalidHeader("scheme name not found")
        } else {
            EnvelopeError::InvalidHeader("header is incomplete")
        }
    }
}

fn parse_manifest(raw_manifest: Vec<u8>, mac: Vec<u8>) -> Result<Header, EnvelopeError> {
    let m: ManifestJson =
        serde_json::from_slice(&raw_manifest).map_err(|_| EnvelopeError::InvalidManifest)?;
    let algorithm = KeyWrapAlgorithm::from_id(m.kw).ok_or(EnvelopeError::InvalidManifest)?;
    let cipher = DataCipher::from_id(m.cph).ok_or(EnvelopeError::InvalidManifest)?;
    let wrapped_key = STANDARD
        .decode(&m.wfk)
        .map_err(|_| EnvelopeError::InvalidManifest)?;
    if wrapped_key.is_empty() {
        return Err(EnvelopeError::InvalidManifest);
    }
    let nonce_prefix: [u8; NONCE_PREFIX_LEN] = STANDARD
        .decode(&m.np)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(EnvelopeError::InvalidManifest)?;
    Ok(Header {
        raw_manifest,
        mac,
        key_name: m.k,
        algorithm,
        wrapped_key,
        cipher,
        nonce_prefix,
    })
}

/// Decrypts the segments after a [`Header`].
pub struct Decryptor {
    fk: FileKey,
    pending: Vec<u8>,
    index: u32,
}

impl Decryptor {
    /// Authenticates the header with the unwrapped file key. A key of the
    /// wrong size fails the same way as a wrong key (the MAC check), so the
    /// error does not tell which part was wrong.
    pub fn new(header: &Header, file_key: &[u8]) -> Result<Self, EnvelopeError> {
        let zero = [0u8; FILE_KEY_LEN];
        let fk_bytes = if file_key.len() == FILE_KEY_LEN {
            file_key
        } else {
            &zero
        };
        let fk = FileKey::new(fk_bytes, header.nonce_prefix, header.cipher);
        let given = STANDARD
            .decode(&header.mac)
            .map_err(|_| EnvelopeError::Signature)?;
        let expected = fk.header_mac(&header.raw_manifest);
        if file_key.len() != FILE_KEY_LEN || !constant_time_eq(&given, &expected) {
            return Err(EnvelopeError::Signature);
        }
        Ok(Self {
            fk,
            pending: Vec::with_capacity((SEGMENT_SIZE + SEGMENT_OVERHEAD) * 2),
            index: 0,
        })
    }

    /// Appends the plaintext of every complete non-final segment to `out`.
    pub fn update(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        const FULL: usize = SEGMENT_SIZE + SEGMENT_OVERHEAD;
        self.pending.extend_from_slice(data);
        let mut off = 0;
        while self.pending.len() - off > FULL {
            if !self
                .fk
                .open(&self.pending[off..off + FULL], self.index, false, out)
            {
                return Err(EnvelopeError::Segment(self.index));
            }
            self.index = self.index.checked_add(1).ok_or(EnvelopeError::TooLarge)?;
            off += FULL;
        }
        self.pending.drain(..off);
        Ok(())
    }

    /// Opens the final segment. A stream that ends right after the header is
    /// the empty message; one that ends after non-final segments is
    /// truncated.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        if self.pending.is_empty() {
            return if self.index == 0 {
                Ok(())
            } else {
                Err(EnvelopeError::Truncated)
            };
        }
        let pending = std::mem::take(&mut self.pending);
        if self.fk.open(&pending, self.index, true, out) {
            Ok(())
        } else {
            Err(EnvelopeError::Segment(self.index))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
