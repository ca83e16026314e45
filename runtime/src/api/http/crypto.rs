//! `PUT /v1.0-alpha1/crypto/{name}/encrypt|decrypt`: the body is the
//! plaintext (ciphertext) stream, the response the ciphertext (plaintext)
//! stream, both processed as they flow. Options come in Dapr's headers.

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};

use super::{AppState, PathParams};
use crate::{
    crypto::{self, CryptoApiError, EncryptOptions, stream},
    error::{ApiError, MappedError},
};

const KEY_NAME: &str = "dapr-key-name";
const KEY_WRAP_ALGORITHM: &str = "dapr-key-wrap-algorithm";
const OMIT_DECRYPTION_KEY_NAME: &str = "dapr-omit-decryption-key-name";
const DECRYPTION_KEY_NAME: &str = "dapr-decryption-key-name";
const DATA_ENCRYPTION_CIPHER: &str = "dapr-data-encryption-cipher";

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Dapr's `IsTruthy`.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

/// The request body as a stream held to `--max-body-size`; `Err` when
/// the declared length is already over it.
fn body_input(req: Request, limit: u64) -> Result<stream::Input, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut seen = 0u64;
    let s = req.into_body().into_data_stream().map(move |r| {
        let b = r.map_err(|e| format!("failed to read request body: {e}"))?;
        seen += b.len() as u64;
        if seen > limit {
            return Err(format!(
                "request body is larger than the limit of {limit} bytes (--max-body-size)"
            ));
        }
        Ok(b)
    });
    Ok(Box::pin(s))
}

fn respond(out: stream::Output) -> Response {
    let body = axum::body::Body::from_stream(out.map(|r| {
        r.map_err(|e| {
            // The status line is gone: abort the body so the client sees an
            // incomplete response, never a truncated one passed off as whole.
            tracing::debug!("crypto stream failed: {e}");
            std::io::Error::other(e.to_string())
        })
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

fn error(e: CryptoApiError) -> Response {
    MappedError::from(e).into_response()
}

pub async fn encrypt(
    State(sidecar): State<AppState>,
    PathParams(name): PathParams<String>,
    req: Request,
) -> Response {
    let h = req.headers();
    let opts = EncryptOptions {
        component: name,
        key_name: header_str(h, KEY_NAME).to_owned(),
        key_wrap_algorithm: header_str(h, KEY_WRAP_ALGORITHM).to_owned(),
        data_encryption_cipher: header_str(h, DATA_ENCRYPTION_CIPHER).to_owned(),
        omit_decryption_key_name: truthy(header_str(h, OMIT_DECRYPTION_KEY_NAME)),
        decryption_key_name: header_str(h, DECRYPTION_KEY_NAME).to_owned(),
    };
    if let Err(e) = crypto::provider(&sidecar, &opts.component) {
        return error(e);
    }
    for (value, header) in [
        (&opts.key_name, KEY_NAME),
        (&opts.key_wrap_algorithm, KEY_WRAP_ALGORITHM),
    ] {
        if value.is_empty() {
            return error(CryptoApiError::BadRequest(format!(
                "missing header '{header}'"
            )));
        }
    }
    let input = match body_input(req, sidecar.max_body_size) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let enc = match crypto::begin_encrypt(&sidecar, &opts).await {
        Ok(e) => e,
        Err(e) => return error(e),
    };
    respond(stream::encrypt(enc, input))
}

pub async fn decrypt(
    State(sidecar): State<AppState>,
    PathParams(name): PathParams<String>,
    req: Request,
) -> Response {
    let provider = match crypto::provider(&sidecar, &name) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let key_name = header_str(req.headers(), KEY_NAME).to_owned();
    let input = match body_input(req, sidecar.max_body_size) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let out = match stream::decrypt(provider, key_name, input).await {
        Ok(o) => o,
        Err(e) => return error(e),
    };
    // A failure in the first segment is still a proper error response.
    match stream::first_item(out).await {
        Ok(o) => respond(o),
        Err(e) => error(e),
    }
}
