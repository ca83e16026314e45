//! `bench crypto`: encryption throughput (MB/s of plaintext) of the
//! `dapr.io/enc/v1` envelope through daprd's `EncryptAlpha1` (gRPC stream)
//! and `PUT /v1.0-alpha1/crypto/{name}/encrypt` (streamed HTTP body), vs the
//! raw AES-256-GCM cipher (ring, as the envelope uses) and the envelope code run in-process, with
//! `crypto.dapr.localstorage` and an AES key (A256KW) in one run.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use dapr::dapr::proto::{
    common::v1::StreamPayload,
    runtime::v1::{EncryptRequest, EncryptRequestOptions, dapr_client::DaprClient},
};
use dapr_components::crypto::envelope::{
    DataCipher, EncryptParams, Encryptor, KeyWrapAlgorithm, SEGMENT_SIZE,
};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{
    CryptoArgs,
    daprd::{Daprd, Launch},
};

const CHUNK: usize = 1 << 20;

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// Plaintext MB/s (10^6 bytes) of `bytes` in `d`.
fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// The AEAD the envelope uses (ring's AES-256-GCM) over 64 KiB segments.
fn raw_cipher(total: usize) -> Duration {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let Ok(key) = UnboundKey::new(&AES_256_GCM, &[7u8; 32]) else {
        return Duration::MAX;
    };
    let aead = LessSafeKey::new(key);
    let mut buf = vec![1u8; SEGMENT_SIZE];
    let t = Instant::now();
    let mut sink = 0u8;
    for i in 0..total / SEGMENT_SIZE {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let nonce = Nonce::assume_unique_for_key(nonce);
        if let Ok(tag) = aead.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf) {
            sink ^= tag.as_ref()[0];
        }
    }
    std::hint::black_box(sink);
    t.elapsed()
}

fn envelope_in_process(total: usize) -> Duration {
    let fk = [3u8; 32];
    let t = Instant::now();
    let mut enc = Encryptor::new(EncryptParams {
        file_key: &fk,
        nonce_prefix: [1; 7],
        wrapped_key: &[9u8; 40],
        algorithm: KeyWrapAlgorithm::A256Kw,
        cipher: DataCipher::AesGcm,
        manifest_key_name: "key",
    });
    let mut out = Vec::with_capacity(CHUNK + 4096);
    let mut produced = 0usize;
    for i in 0..total / CHUNK {
        out.clear();
        let _ = enc.update(&chunk(i), &mut out);
        produced += out.len();
    }
    out.clear();
    enc.finish(&mut out);
    std::hint::black_box(produced + out.len());
    t.elapsed()
}

async fn via_grpc(port: u16, total: usize) -> anyhow::Result<Duration> {
    let mut c = DaprClient::connect(format!("http://127.0.0.1:{port}"))
        .await?
        .max_decoding_message_size(64 << 20);
    let t = Instant::now();
    let opts = EncryptRequestOptions {
        component_name: "benchkeys".into(),
        key_name: "aes-key".into(),
        key_wrap_algorithm: "A256KW".into(),
        data_encryption_cipher: "aes-gcm".into(),
        ..Default::default()
    };
    let first = futures::stream::once(async move {
        EncryptRequest {
            options: Some(opts),
            payload: None,
        }
    });
    let body = futures::stream::iter(0..total / CHUNK).map(|i| EncryptRequest {
        options: None,
        payload: Some(StreamPayload {
            data: chunk(i).to_vec(),
            seq: i as u64,
        }),
    });
    let mut s = c.encrypt_alpha1(first.chain(body)).await?.into_inner();
    let mut n = 0usize;
    while let Some(m) = s.message().await? {
        n += m.payload.map(|p| p.data.len()).unwrap_or(0);
    }
    let elapsed = t.elapsed();
    if n < total {
        bail!("gRPC encrypt returned {n} bytes for {total}");
    }
    Ok(elapsed)
}

async fn via_http(port: u16, total: usize) -> anyhow::Result<Duration> {
    type Body =
        StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let t = Instant::now();
    let frames = futures::stream::iter(0..total / CHUNK)
        .map(|i| Ok(Frame::data(chunk(i))))
        .boxed();
    let req = http::Request::put(format!(
        "http://127.0.0.1:{port}/v1.0-alpha1/crypto/benchkeys/encrypt"
    ))
    .header("dapr-key-name", "aes-key")
    .header("dapr-key-wrap-algorithm", "A256KW")
    .body(StreamBody::new(frames))?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("HTTP encrypt: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut n = 0usize;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f?.into_data() {
            n += d.len();
        }
    }
    let elapsed = t.elapsed();
    if n < total {
        bail!("HTTP encrypt returned {n} bytes for {total}");
    }
    Ok(elapsed)
}

fn best(runs: &[Duration]) -> Duration {
    runs.iter().copied().min().unwrap_or_default()
}

pub async fn run(args: CryptoArgs) -> anyhow::Result<()> {
    let total = args.size_mib << 20;
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    let res = dir.path().join("resources");
    std::fs::create_dir_all(&keys)?;
    std::fs::create_dir_all(&res)?;
    std::fs::write(keys.join("aes-key"), [5u8; 32])?;
    std::fs::write(
        res.join("crypto.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: benchkeys\nspec:\n  type: crypto.dapr.localstorage\n  version: v1\n  metadata:\n  - name: path\n    value: \"{}\"\n",
            keys.display()
        ),
    )?;
    let log = dir.path().join("daprd.log");
    let data = dir.path().join("data");
    let extra = [
        "--max-body-size".to_owned(),
        format!("{}Mi", args.size_mib + 16),
    ];
    let (mut d, t0) = Daprd::spawn(&Launch {
        bin: Path::new(&args.daprd),
        app_id: "bench-crypto",
        data_dir: &data,
        resources_path: Some(&res),
        log: &log,
        extra_args: &extra,
    })?;
    d.wait_ready(t0, Duration::from_millis(5), Duration::from_secs(20))?;
    let pid = d.pid();

    let mut raw = Vec::new();
    let mut env = Vec::new();
    let mut grpc = Vec::new();
    let mut http = Vec::new();
    // One untimed pass warms connections and caches.
    via_grpc(d.grpc_port, 16 << 20).await.context("warm-up")?;
    for _ in 0..args.runs {
        raw.push(raw_cipher(total));
        env.push(envelope_in_process(total));
        grpc.push(via_grpc(d.grpc_port, total).await?);
        http.push(via_http(d.http_port, total).await?);
    }
    let peak = crate::procfs::memory(pid);
    d.stop()?;

    let base = mbps(total, best(&raw));
    println!(
        "bench crypto: encrypt {} MiB, AES-256-GCM, A256KW key from crypto.dapr.localstorage; best of {} runs",
        args.size_mib, args.runs
    );
    println!("{:<34} {:>10} {:>10}", "path", "MB/s", "vs raw");
    for (name, runs) in [
        ("raw AES-256-GCM in-process", &raw),
        ("dapr.io/enc/v1 in-process", &env),
        ("daprd EncryptAlpha1 (gRPC)", &grpc),
        ("daprd PUT .../encrypt (HTTP)", &http),
    ] {
        let m = mbps(total, best(runs));
        println!("{name:<34} {m:>10.0} {:>10.2}", m / base);
    }
    if let Some(m) = peak {
        println!(
            "daprd RSS after the runs: {:.1} MiB (peak {:.1} MiB)",
            crate::procfs::mib(m.rss),
            crate::procfs::mib(m.hwm)
        );
    }
    Ok(())
}
