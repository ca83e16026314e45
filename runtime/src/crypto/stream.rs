//! Envelope encryption and decryption over byte streams, shared by the HTTP
//! and gRPC adapters. Input is consumed chunk by chunk and output produced
//! as soon as segments complete, so memory stays bounded (about two
//! segments plus one input chunk) whatever the payload size; a decrypted
//! segment is released only after its tag verified.

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use dapr_components::crypto::{
    CryptoProvider,
    envelope::{Decryptor, Encryptor, HeaderReader},
};
use futures::{Stream, StreamExt};

use super::{CryptoApiError, begin_decrypt};

/// Input chunks; an `Err` aborts with that reason.
pub type Input = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;
/// Output chunks; an `Err` ends the stream.
pub type Output = Pin<Box<dyn Stream<Item = Result<Bytes, CryptoApiError>> + Send>>;

/// Largest output chunk handed to the transport (one segment and its tag,
/// about what Go Dapr sends per message).
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024 + 17;

enum Core {
    Enc(Encryptor),
    Dec(Decryptor),
}

impl Core {
    fn update(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoApiError> {
        let r = match self {
            Core::Enc(e) => e.update(data, out),
            Core::Dec(d) => d.update(data, out),
        };
        r.map_err(|e| CryptoApiError::Operation(e.to_string()))
    }

    fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoApiError> {
        match self {
            Core::Enc(e) => {
                e.finish(out);
                Ok(())
            }
            Core::Dec(d) => d
                .finish(out)
                .map_err(|e| CryptoApiError::Operation(e.to_string())),
        }
    }
}

struct State {
    input: Input,
    core: Option<Core>,
    /// Output produced but not yet handed out.
    ready: Bytes,
}

/// Splits off at most [`MAX_OUTPUT_CHUNK`] bytes of `ready`.
fn take_chunk(ready: &mut Bytes) -> Option<Bytes> {
    if ready.is_empty() {
        return None;
    }
    let n = ready.len().min(MAX_OUTPUT_CHUNK);
    Some(ready.split_to(n))
}

fn drive(first: Vec<u8>, input: Input, core: Core) -> Output {
    let state = State {
        input,
        core: Some(core),
        ready: Bytes::from(first),
    };
    Box::pin(futures::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            if let Some(chunk) = take_chunk(&mut st.ready) {
                return Some((Ok(chunk), Some(st)));
            }
            let core = st.core.as_mut()?;
            let mut out = Vec::new();
            match st.input.next().await {
                Some(Ok(data)) => {
                    if let Err(e) = core.update(&data, &mut out) {
                        return Some((Err(e), None));
                    }
                }
                Some(Err(reason)) => {
                    return Some((Err(CryptoApiError::Operation(reason)), None));
                }
                None => {
                    let core = st.core.take()?;
                    if let Err(e) = core.finish(&mut out) {
                        return Some((Err(e), None));
                    }
                }
            }
            st.ready = Bytes::from(out);
        }
    }))
}

/// The encrypted stream: header, then segments.
pub fn encrypt(enc: Encryptor, input: Input) -> Output {
    let header = enc.header().to_vec();
    drive(header, input, Core::Enc(enc))
}

/// Reads the header from `input`, unwraps the file key with `provider`
/// (key `key_name`, or the manifest's), then streams the plaintext.
/// Header and key errors are returned here, before any output.
pub async fn decrypt(
    provider: Arc<dyn CryptoProvider>,
    key_name: String,
    mut input: Input,
) -> Result<Output, CryptoApiError> {
    let mut reader = HeaderReader::default();
    let (header, rest) = loop {
        match input.next().await {
            Some(Ok(data)) => {
                if let Some(found) = reader
                    .push(&data)
                    .map_err(|e| CryptoApiError::Operation(e.to_string()))?
                {
                    break found;
                }
            }
            Some(Err(reason)) => return Err(CryptoApiError::Operation(reason)),
            None => return Err(CryptoApiError::Operation(reader.finish().to_string())),
        }
    };
    let mut dec = begin_decrypt(&*provider, &key_name, &header).await?;
    let mut first = Vec::new();
    dec.update(&rest, &mut first)
        .map_err(|e| CryptoApiError::Operation(e.to_string()))?;
    Ok(drive(first, input, Core::Dec(dec)))
}

/// Pulls the first item so that an error that happens before any output
/// can still be reported as a plain error response; returns the output
/// with that item put back.
pub async fn first_item(mut out: Output) -> Result<Output, CryptoApiError> {
    match out.next().await {
        None => Ok(Box::pin(futures::stream::empty())),
        Some(Err(e)) => Err(e),
        Some(Ok(b)) => Ok(Box::pin(
            futures::stream::once(async move { Ok(b) }).chain(out),
        )),
    }
}
