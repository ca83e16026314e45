//! gRPC `EncryptAlpha1`/`DecryptAlpha1` (bidi streams of `StreamPayload`
//! chunks: options in the first message, `seq` counting from 0) and the
//! `Subtle*Alpha1` calls, around `crate::crypto`.

use std::time::Duration;

use bytes::Bytes;
use dapr_rs_proto::{common::StreamPayload, runtime as pb};
use futures::StreamExt;
use tonic::{Status, Streaming, codegen::BoxStream};

use crate::{
    crypto::{self, CryptoApiError, EncryptOptions, stream},
    error::MappedError,
    sidecar::Sidecar,
};

/// Dapr's wait for the message carrying the options.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

fn status(e: CryptoApiError) -> Status {
    MappedError::from(e).into()
}

/// A request message of either stream.
trait CryptoRequest: Send + 'static {
    fn has_options(&self) -> bool;
    fn take_payload(&mut self) -> Option<StreamPayload>;
}

impl CryptoRequest for pb::EncryptRequest {
    fn has_options(&self) -> bool {
        self.options.is_some()
    }
    fn take_payload(&mut self) -> Option<StreamPayload> {
        self.payload.take()
    }
}

impl CryptoRequest for pb::DecryptRequest {
    fn has_options(&self) -> bool {
        self.options.is_some()
    }
    fn take_payload(&mut self) -> Option<StreamPayload> {
        self.payload.take()
    }
}

async fn first_message<T: CryptoRequest>(s: &mut Streaming<T>) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, s.message()).await {
        Err(_) => Err(status(CryptoApiError::BadRequest(
            "error waiting for first message: context deadline exceeded".into(),
        ))),
        Ok(Err(e)) => Err(status(CryptoApiError::Operation(format!(
            "error receiving the first message: {}",
            e.message()
        )))),
        Ok(Ok(None)) => Err(status(CryptoApiError::Operation(
            "error receiving the first message: EOF".into(),
        ))),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

/// The payload chunks of the stream, `first`'s included, with Dapr's checks
/// (sequence numbers in order, options only in the first message).
fn payloads<T: CryptoRequest>(mut first: T, rest: Streaming<T>) -> stream::Input {
    let head = first.take_payload();
    let state = (head, rest, 0u64, false);
    Box::pin(futures::stream::unfold(
        state,
        |(mut pending, mut rest, mut expect, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(p) = pending.take() {
                    if p.seq != expect {
                        let e = format!(
                            "invalid sequence number received: {} (expected: {expect})",
                            p.seq
                        );
                        return Some((Err(e), (None, rest, expect, true)));
                    }
                    expect += 1;
                    if !p.data.is_empty() {
                        return Some((Ok(Bytes::from(p.data)), (None, rest, expect, false)));
                    }
                }
                match rest.message().await {
                    Ok(None) => return None,
                    Err(e) => {
                        let e = format!("error receiving message: {}", e.message());
                        return Some((Err(e), (None, rest, expect, true)));
                    }
                    Ok(Some(mut m)) => {
                        if m.has_options() {
                            let e = "options found in non-leading message".to_owned();
                            return Some((Err(e), (None, rest, expect, true)));
                        }
                        pending = m.take_payload();
                    }
                }
            }
        },
    ))
}

/// Output chunks as response messages with their own `seq`.
fn responses<R: Send + 'static>(out: stream::Output, wrap: fn(StreamPayload) -> R) -> BoxStream<R> {
    let mut seq = 0u64;
    Box::pin(out.map(move |r| match r {
        Ok(data) => {
            let p = StreamPayload {
                data: data.to_vec(),
                seq,
            };
            seq += 1;
            Ok(wrap(p))
        }
        Err(e) => Err(status(e)),
    }))
}

pub async fn encrypt(
    sidecar: &Sidecar,
    mut s: Streaming<pb::EncryptRequest>,
) -> Result<BoxStream<pb::EncryptResponse>, Status> {
    let first = first_message(&mut s).await?;
    let Some(o) = first.options.clone() else {
        return Err(status(CryptoApiError::BadRequest(
            "first message does not contain the required options".into(),
        )));
    };
    if o.key_name.is_empty() {
        return Err(status(CryptoApiError::BadRequest(
            "missing property 'keyName' in the options message".into(),
        )));
    }
    if o.key_wrap_algorithm.is_empty() {
        return Err(status(CryptoApiError::BadRequest(
            "missing property 'keyWrapAlgorithm' in the options message".into(),
        )));
    }
    let opts = EncryptOptions {
        component: o.component_name,
        key_name: o.key_name,
        key_wrap_algorithm: o.key_wrap_algorithm,
        data_encryption_cipher: o.data_encryption_cipher,
        omit_decryption_key_name: o.omit_decryption_key_name,
        decryption_key_name: o.decryption_key_name,
    };
    let enc = crypto::begin_encrypt(sidecar, &opts)
        .await
        .map_err(status)?;
    let out = stream::encrypt(enc, payloads(first, s));
    Ok(responses(out, |p| pb::EncryptResponse { payload: Some(p) }))
}

pub async fn decrypt(
    sidecar: &Sidecar,
    mut s: Streaming<pb::DecryptRequest>,
) -> Result<BoxStream<pb::DecryptResponse>, Status> {
    let first = first_message(&mut s).await?;
    let Some(o) = first.options.clone() else {
        return Err(status(CryptoApiError::BadRequest(
            "first message does not contain the required options".into(),
        )));
    };
    let provider = crypto::provider(sidecar, &o.component_name).map_err(status)?;
    // The header is read as the stream goes, so its errors arrive in the
    // response stream, as Go Dapr's do.
    let input = payloads(first, s);
    let out: stream::Output = Box::pin(
        futures::stream::once(async move {
            match stream::decrypt(provider, o.key_name, input).await {
                Ok(out) => out,
                Err(e) => Box::pin(futures::stream::once(async move { Err(e) })) as stream::Output,
            }
        })
        .flatten(),
    );
    Ok(responses(out, |p| pb::DecryptResponse { payload: Some(p) }))
}

pub async fn get_key(
    sidecar: &Sidecar,
    req: pb::SubtleGetKeyRequest,
) -> Result<pb::SubtleGetKeyResponse, Status> {
    use pb::subtle_get_key_request::KeyFormat;
    let json = match KeyFormat::try_from(req.format) {
        Ok(KeyFormat::Pem) => false,
        Ok(KeyFormat::Json) => true,
        Err(_) => {
            crypto::provider(sidecar, &req.component_name).map_err(status)?;
            return Err(status(CryptoApiError::BadRequest(
                "invalid key format".into(),
            )));
        }
    };
    let (name, public_key) = crypto::get_key(sidecar, &req.component_name, &req.name, json)
        .await
        .map_err(status)?;
    Ok(pb::SubtleGetKeyResponse { name, public_key })
}

pub async fn encrypt_subtle(
    sidecar: &Sidecar,
    r: pb::SubtleEncryptRequest,
) -> Result<pb::SubtleEncryptResponse, Status> {
    let (ciphertext, tag) = crypto::subtle_encrypt(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.plaintext,
        &r.nonce,
        &r.associated_data,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleEncryptResponse { ciphertext, tag })
}

pub async fn decrypt_subtle(
    sidecar: &Sidecar,
    r: pb::SubtleDecryptRequest,
) -> Result<pb::SubtleDecryptResponse, Status> {
    let plaintext = crypto::subtle_decrypt(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.ciphertext,
        &r.nonce,
        &r.tag,
        &r.associated_data,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleDecryptResponse { plaintext })
}

pub async fn wrap_key(
    sidecar: &Sidecar,
    r: pb::SubtleWrapKeyRequest,
) -> Result<pb::SubtleWrapKeyResponse, Status> {
    let (wrapped_key, tag) = crypto::subtle_wrap_key(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.plaintext_key,
        &r.nonce,
        &r.associated_data,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleWrapKeyResponse { wrapped_key, tag })
}

pub async fn unwrap_key(
    sidecar: &Sidecar,
    r: pb::SubtleUnwrapKeyRequest,
) -> Result<pb::SubtleUnwrapKeyResponse, Status> {
    let plaintext_key = crypto::subtle_unwrap_key(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.wrapped_key,
        &r.nonce,
        &r.tag,
        &r.associated_data,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleUnwrapKeyResponse { plaintext_key })
}

pub async fn sign(
    sidecar: &Sidecar,
    r: pb::SubtleSignRequest,
) -> Result<pb::SubtleSignResponse, Status> {
    let signature = crypto::subtle_sign(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.digest,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleSignResponse { signature })
}

pub async fn verify(
    sidecar: &Sidecar,
    r: pb::SubtleVerifyRequest,
) -> Result<pb::SubtleVerifyResponse, Status> {
    let valid = crypto::subtle_verify(
        sidecar,
        &r.component_name,
        &r.key_name,
        &r.algorithm,
        &r.digest,
        &r.signature,
    )
    .await
    .map_err(status)?;
    Ok(pb::SubtleVerifyResponse { valid })
}
