//! Issuer rotation without restart while clients keep requesting certificates.

mod common;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::Sentry;
use dapr_security::{TrustAnchors, pem::parse_certs};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

struct Root {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca_params(org: &str, pathlen: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.is_ca = IsCa::Ca(match pathlen {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(600);
    p.not_after = now + Duration::from_secs(30 * 24 * 3600);
    p
}

fn root(name: &str) -> Root {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = ca_params(name, None);
    let pem = params.self_signed(&key).unwrap().pem();
    Root { params, key, pem }
}

/// An issuer signed by `root`: (cert PEM, key PEM, cert DER).
fn issuer(root: &Root) -> (String, String, CertificateDer<'static>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = ca_params("spiffe://localhost/ns/default/dapr-sentry", Some(0));
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &Issuer::from_params(&root.params, &root.key))
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Default)]
struct Observed {
    /// (request start, request end, issuer certificate)
    results: Mutex<Vec<(Instant, Instant, CertificateDer<'static>)>>,
    failures: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Observed {
    /// When the first response signed by `issuer` arrived: Sentry had
    /// switched by then, so every request started later must use it.
    fn saw_issuer_since(&self, issuer: &CertificateDer<'_>) -> Option<Instant> {
        let r = self.results.lock().unwrap();
        r.iter()
            .filter(|(_, _, i)| i == issuer)
            .map(|(_, end, _)| *end)
            .min()
    }
}

async fn wait_for_issuer(obs: &Observed, issuer: &CertificateDer<'_>, sentry: &Sentry) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = obs.saw_issuer_since(issuer) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "new issuer never used; failures {:?}; log:\n{}",
            obs.errors.lock().unwrap(),
            sentry.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_issuer_without_restart_or_failed_requests() {
    dapr_security::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let root1 = root("localhost");
    let (iss1_pem, iss1_key, iss1_der) = issuer(&root1);
    std::fs::write(creds.join("ca.crt"), &root1.pem).unwrap();
    std::fs::write(creds.join("issuer.crt"), &iss1_pem).unwrap();
    std::fs::write(creds.join("issuer.key"), &iss1_key).unwrap();
    let sentry = Sentry::start(&creds, &[]).await;

    // Clients trust what the sidecar would load from the trust-anchor file.
    let anchors = TrustAnchors::from_pem(root1.pem.as_bytes()).unwrap();
    let obs = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let obs = obs.clone();
        let stop = stop.clone();
        let anchors = anchors.clone();
        let addr = sentry.address();
        workers.push(tokio::spawn(async move {
            let make = || {
                dapr_security::client::SentryClient::new(
                    dapr_security::client::SentryClientConfig::new(
                        addr.clone(),
                        Sentry::sentry_id(),
                        format!("app-{w}"),
                        "default",
                    ),
                    anchors.clone(),
                )
                .unwrap()
            };
            let mut client = make();
            while !stop.load(Ordering::SeqCst) {
                // Worker 0 opens a new connection (new TLS handshake) every time.
                if w == 0 {
                    client = make();
                }
                let started = Instant::now();
                match client.fetch_svid().await {
                    Ok(svid) => {
                        let chain = svid.chain();
                        obs.results.lock().unwrap().push((
                            started,
                            Instant::now(),
                            chain[1].clone(),
                        ));
                    }
                    Err(e) => {
                        obs.failures.fetch_add(1, Ordering::SeqCst);
                        obs.errors.lock().unwrap().push(e.to_string());
                    }
                }
            }
        }));
    }
    // Raw requests also report how many trust anchors Sentry serves.
    let anchors_seen = {
        let obs = obs.clone();
        let stop = stop.clone();
        let channel = sentry.channel(anchors.clone());
        tokio::spawn(async move {
            let mut max = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (csr, _k) = common::p256_csr();
                match common::sign(&channel, common::request("raw", "default", csr.as_bytes()))
                    .await
                {
                    Ok(resp) => {
                        let n = parse_certs(&resp.trust_chain_certificates[0])
                            .unwrap()
                            .len();
                        max = max.max(n);
                    }
                    Err(e) => {
                        obs.failures.fetch_add(1, Ordering::SeqCst);
                        obs.errors.lock().unwrap().push(e.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_issuer(&obs, &iss1_der, &sentry).await;

    // Phase 1: new issuer under the same root.
    let (iss2_pem, iss2_key, iss2_der) = issuer(&root1);
    write_atomic(&creds.join("issuer.crt"), iss2_pem.as_bytes());
    write_atomic(&creds.join("issuer.key"), iss2_key.as_bytes());
    let t2 = wait_for_issuer(&obs, &iss2_der, &sentry).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let r = obs.results.lock().unwrap();
        let after: Vec<_> = r.iter().filter(|(t, _, _)| *t > t2).collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|(_, _, i)| *i == iss2_der),
            "a request started after the switch was signed by the old issuer"
        );
    }

    // Phase 2: root rotation. First the bundle (old + new root) everywhere...
    let root2 = root("localhost");
    let bundle = format!("{}{}", root1.pem, root2.pem);
    write_atomic(&creds.join("ca.crt"), bundle.as_bytes());
    anchors.update_pem(bundle.as_bytes()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...then an issuer under the new root.
    let (iss3_pem, iss3_key, iss3_der) = issuer(&root2);
    write_atomic(&creds.join("issuer.crt"), iss3_pem.as_bytes());
    write_atomic(&creds.join("issuer.key"), iss3_key.as_bytes());
    let t3 = wait_for_issuer(&obs, &iss3_der, &sentry).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 3: broken credentials (key of another issuer) are refused; the
    // current issuer keeps signing.
    let (_, other_key, _) = issuer(&root2);
    write_atomic(&creds.join("issuer.key"), other_key.as_bytes());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n_before = obs.results.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let max_anchors = anchors_seen.await.unwrap();

    let failures = obs.failures.load(Ordering::SeqCst);
    let results = obs.results.lock().unwrap();
    eprintln!(
        "rotation test: {} certificates issued, {failures} failures",
        results.len()
    );
    assert_eq!(
        failures,
        0,
        "failed requests: {:?}",
        obs.errors.lock().unwrap()
    );
    assert!(
        results.len() > n_before,
        "no certificates after the broken key was written"
    );
    assert!(
        results
            .iter()
            .filter(|(t, _, _)| *t > t3)
            .all(|(_, _, i)| *i == iss3_der),
        "old issuer used after the switch to the new root"
    );
    assert_eq!(max_anchors, 2, "Sentry never served the two-root bundle");
    let log = sentry.log_text();
    assert!(log.contains("Issuer credentials changed"), "{log}");
    assert!(log.contains("new issuer credentials rejected"), "{log}");
}
