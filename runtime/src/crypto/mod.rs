//! The cryptography API (`v1.0-alpha1`): provider lookup, the subtle
//! operations, and the start of an envelope encryption/decryption (key
//! wrapping through the provider). Streaming lives in [`stream`].

pub mod stream;

use std::sync::Arc;

use dapr_components::crypto::{
    CryptoError, CryptoProvider, Key, KeyFormat, KeyMaterial,
    envelope::{
        DataCipher, Decryptor, EncryptParams, Encryptor, FILE_KEY_LEN, Header, KeyWrapAlgorithm,
        NONCE_PREFIX_LEN,
    },
    keys::parse_key,
    subtle,
};
use http::StatusCode;
use tonic::Code;

use crate::{error::MappedError, sidecar::Sidecar};

#[derive(Debug, thiserror::Error)]
pub enum CryptoApiError {
    #[error("crypto providers not configured")]
    NotConfigured,
    #[error("crypto provider {0} not found")]
    ProviderNotFound(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("failed to retrieve key {name}: {source}")]
    GetKey { name: String, source: CryptoError },
    #[error("failed to perform operation: {0}")]
    Operation(String),
}

impl From<CryptoApiError> for MappedError {
    fn from(e: CryptoApiError) -> Self {
        use CryptoApiError::*;
        let (code, http, grpc) = match &e {
            NotConfigured => (
                "ERR_CRYPTO_PROVIDERS_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            ProviderNotFound(_) => (
                "ERR_CRYPTO_PROVIDER_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            BadRequest(_) => (
                "ERR_BAD_REQUEST",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            GetKey { .. } => (
                "ERR_CRYPTO_KEY",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
            Operation(_) => (
                "ERR_CRYPTO",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        };
        MappedError::new(code, http, grpc, e.to_string())
    }
}

/// The provider named `name`, Dapr's checks in Dapr's order.
pub fn provider(sidecar: &Sidecar, name: &str) -> Result<Arc<dyn CryptoProvider>, CryptoApiError> {
    if !sidecar.registry.has_crypto_providers() {
        return Err(CryptoApiError::NotConfigured);
    }
    if name.is_empty() {
        return Err(CryptoApiError::BadRequest("missing component name".into()));
    }
    sidecar
        .registry
        .crypto_provider(name)
        .ok_or_else(|| CryptoApiError::ProviderNotFound(name.to_owned()))
}

/// What `EncryptAlpha1` and the HTTP encrypt route take.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    pub component: String,
    pub key_name: String,
    pub key_wrap_algorithm: String,
    pub data_encryption_cipher: String,
    pub omit_decryption_key_name: bool,
    pub decryption_key_name: String,
}

fn random<const N: usize>() -> Result<[u8; N], CryptoApiError> {
    dapr_components::crypto::random_bytes::<N>()
        .map_err(|e| CryptoApiError::Operation(format!("failed to generate file key: {e}")))
}

/// Validates the options, wraps a fresh file key with the provider's key
/// and returns the encryptor (its header is ready).
pub async fn begin_encrypt(
    sidecar: &Sidecar,
    o: &EncryptOptions,
) -> Result<Encryptor, CryptoApiError> {
    let p = provider(sidecar, &o.component)?;
    let algorithm = KeyWrapAlgorithm::parse(&o.key_wrap_algorithm)
        .map_err(|e| CryptoApiError::Operation(format!("option Algorithm is not valid: {e}")))?;
    let cipher = if o.data_encryption_cipher.is_empty() {
        DataCipher::AesGcm
    } else {
        DataCipher::parse(&o.data_encryption_cipher)
            .map_err(|e| CryptoApiError::Operation(format!("option Cipher is not valid: {e}")))?
    };
    let file_key = random::<FILE_KEY_LEN>()?;
    let nonce_prefix = random::<NONCE_PREFIX_LEN>()?;
    let wrapped = async {
        let kek = p.retrieve_key(&o.key_name).await?;
        subtle::encrypt(&kek, "wrapKey", algorithm.name(), &file_key, &[], &[]).map(|(c, _)| c)
    }
    .await
    .map_err(|e| CryptoApiError::Operation(format!("failed to wrap the file key: {e}")))?;
    let manifest_key_name = if o.omit_decryption_key_name {
        ""
    } else if o.decryption_key_name.is_empty() {
        &o.key_name
    } else {
        &o.decryption_key_name
    };
    Ok(Encryptor::new(EncryptParams {
        file_key: &file_key,
        nonce_prefix,
        wrapped_key: &wrapped,
        algorithm,
        cipher,
        manifest_key_name,
    }))
}

/// Unwraps the file key of a parsed header and authenticates the header.
/// As in Dapr, a key that cannot be retrieved or unwrapped surfaces as a
/// header signature failure, so callers cannot probe which part was wrong.
pub async fn begin_decrypt(
    provider: &dyn CryptoProvider,
    key_name: &str,
    header: &Header,
) -> Result<Decryptor, CryptoApiError> {
    let key_name = if key_name.is_empty() {
        if header.key_name.is_empty() {
            return Err(CryptoApiError::Operation(
                dapr_components::crypto::envelope::EnvelopeError::DecryptionKeyMissing.to_string(),
            ));
        }
        header.key_name.as_str()
    } else {
        key_name
    };
    let unwrapped = async {
        let kek = provider.retrieve_key(key_name).await?;
        subtle::decrypt(
            &kek,
            "unwrapKey",
            header.algorithm.name(),
            &header.wrapped_key,
            &[],
            &[],
            &[],
        )
    }
    .await;
    let file_key = unwrapped.unwrap_or_else(|e| {
        tracing::debug!("crypto: unwrapping the file key with '{key_name}' failed: {e}");
        Vec::new()
    });
    Decryptor::new(header, &file_key).map_err(|e| CryptoApiError::Operation(e.to_string()))
}

async fn key(p: &dyn CryptoProvider, name: &str) -> Result<Arc<Key>, CryptoError> {
    p.retrieve_key(name).await
}

/// `SubtleGetKeyAlpha1`: the public key as PEM or JWK JSON, and its name.
pub async fn get_key(
    sidecar: &Sidecar,
    component: &str,
    name: &str,
    json: bool,
) -> Result<(String, String), CryptoApiError> {
    let p = provider(sidecar, component)?;
    let get_key = |source| CryptoApiError::GetKey {
        name: name.to_owned(),
        source,
    };
    let k = key(&*p, name).await.map_err(get_key)?;
    if matches!(k.material, KeyMaterial::Oct(_)) {
        return Err(get_key(CryptoError::KeyNotFound));
    }
    let public = if json {
        serde_json::to_string(&k.public_jwk().map_err(get_key)?)
            .map_err(|e| CryptoApiError::Operation(e.to_string()))?
    } else {
        k.public_pem().map_err(get_key)?
    };
    let kid = k
        .kid
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or(name.to_owned());
    Ok((kid, public))
}

/// `SubtleEncryptAlpha1`: ciphertext and tag.
pub async fn subtle_encrypt(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    plaintext: &[u8],
    nonce: &[u8],
    aad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CryptoApiError> {
    let p = provider(sidecar, component)?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::encrypt(&k, "encrypt", algorithm, plaintext, nonce, aad)
        },
        "failed to encrypt",
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn subtle_decrypt(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    ciphertext: &[u8],
    nonce: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoApiError> {
    let p = provider(sidecar, component)?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::decrypt(&k, "decrypt", algorithm, ciphertext, nonce, tag, aad)
        },
        "failed to decrypt",
    )
    .await
}

/// `SubtleWrapKeyAlpha1`: the plaintext key is parsed (raw/base64
/// symmetric, PEM or JWK) and serialized (raw bytes, PKCS#8 or PKIX DER)
/// before wrapping, as Dapr does.
#[allow(clippy::too_many_arguments)]
pub async fn subtle_wrap_key(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    plaintext_key: &[u8],
    nonce: &[u8],
    aad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CryptoApiError> {
    let p = provider(sidecar, component)?;
    let pk = parse_key(plaintext_key, KeyFormat::Guess)
        .and_then(|k| k.serialize())
        .map_err(|e| CryptoApiError::Operation(format!("failed to parse plaintext key: {e}")))?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::encrypt(&k, "wrapKey", algorithm, &pk, nonce, aad)
        },
        "failed to wrap key",
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn subtle_unwrap_key(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    wrapped: &[u8],
    nonce: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoApiError> {
    let p = provider(sidecar, component)?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::decrypt(&k, "unwrapKey", algorithm, wrapped, nonce, tag, aad)
        },
        "failed to unwrap key",
    )
    .await
}

pub async fn subtle_sign(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    digest: &[u8],
) -> Result<Vec<u8>, CryptoApiError> {
    let p = provider(sidecar, component)?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::sign(&k, algorithm, digest)
        },
        "failed to sign",
    )
    .await
}

pub async fn subtle_verify(
    sidecar: &Sidecar,
    component: &str,
    key_name: &str,
    algorithm: &str,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, CryptoApiError> {
    let p = provider(sidecar, component)?;
    run(
        async {
            let k = key(&*p, key_name).await?;
            subtle::verify(&k, algorithm, digest, signature)
        },
        "failed to verify",
    )
    .await
}

/// Dapr answers subtle failures with a generic message and logs the cause
/// (which may describe key material) only at debug level.
async fn run<T>(
    f: impl std::future::Future<Output = Result<T, CryptoError>>,
    what: &str,
) -> Result<T, CryptoApiError> {
    f.await.map_err(|e| {
        tracing::debug!("crypto: {what}: {e}");
        CryptoApiError::Operation(what.to_owned())
    })
}
