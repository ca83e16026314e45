//! The `dapr-sentry` binary as a process: CSRs over gRPC, good and bad.

mod common;

use std::time::{Duration, SystemTime};

use common::{Sentry, http_get, p256_csr, request, sign};
use dapr_security::{SpiffeId, pem::parse_certs};
use tonic::Code;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn init() {
    dapr_security::ensure_crypto_provider();
}

fn sans(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = cert.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    (uris, dns)
}

/// An RSA-1024 CSR, signed with the `rsa` crate (ring refuses such keys).
fn rsa_1024_csr() -> String {
    use rsa::{
        pkcs1::EncodeRsaPublicKey, pkcs1v15::SigningKey, rand_core::CryptoRng, rand_core::RngCore,
        signature::SignatureEncoding, signature::Signer,
    };

    struct Rng;
    impl RngCore for Rng {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rustls::crypto::ring::default_provider()
                .secure_random
                .fill(dest)
                .unwrap();
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl CryptoRng for Rng {}

    struct RsaKey {
        key: rsa::RsaPrivateKey,
        public: Vec<u8>,
    }
    impl rcgen::PublicKeyData for RsaKey {
        fn der_bytes(&self) -> &[u8] {
            &self.public
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }
    impl rcgen::SigningKey for RsaKey {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            let signer = SigningKey::<sha2::Sha256>::new(self.key.clone());
            Ok(signer.sign(msg).to_vec())
        }
    }

    let key = rsa::RsaPrivateKey::new(&mut Rng, 1024).unwrap();
    let public = key
        .to_public_key()
        .to_pkcs1_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let key = RsaKey { key, public };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn signs_and_refuses_csrs_over_grpc() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let sentry = Sentry::start(&creds, &[]).await;
    // Standalone Sentry generated and wrote the credentials.
    for f in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(creds.join(f).is_file(), "{f} not written");
    }
    let anchors = sentry.anchors();

    // 1. The library client: key in memory, CSR, call, verification.
    let client = sentry.client(anchors.clone(), "myapp");
    let svid = client.fetch_svid().await.expect("svid");
    assert_eq!(
        svid.id(),
        &SpiffeId::new("public", "default", "myapp").unwrap()
    );
    let lifetime = svid.not_after().duration_since(svid.not_before()).unwrap();
    assert_eq!(lifetime, Duration::from_secs(24 * 3600 + 15 * 60));
    assert!(svid.not_before() < SystemTime::now() - Duration::from_secs(14 * 60));
    assert_eq!(svid.chain().len(), 2);

    let channel = sentry.channel(anchors.clone());

    // 2. Raw request: response fields.
    let (csr, _key) = p256_csr();
    let mut req = request("orders", "default", csr.as_bytes());
    req.trust_domain = "example.org".into();
    let resp = sign(&channel, req).await.expect("signed");
    let chain = parse_certs(&resp.workload_certificate).unwrap();
    assert_eq!(chain.len(), 2);
    let (uris, dns) = sans(chain[0].as_ref());
    assert_eq!(
        uris,
        vec!["spiffe://example.org/ns/default/orders".to_string()]
    );
    assert!(dns.is_empty());
    assert_eq!(resp.trust_chain_certificates.len(), 1);
    assert_eq!(
        parse_certs(&resp.trust_chain_certificates[0]).unwrap(),
        anchors.current().certs().to_vec()
    );
    let valid_until = resp.valid_until.expect("valid_until");
    let (_, leaf) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
    assert_eq!(valid_until.seconds, leaf.validity().not_after.timestamp());
    assert!(resp.jwt.is_none());

    // 3. Control-plane ids in the control-plane namespace get DNS names.
    let (csr, _key) = p256_csr();
    let mut req = request("dapr-scheduler", "default", csr.as_bytes());
    req.trust_domain = "localhost".into();
    let resp = sign(&channel, req).await.expect("signed");
    let chain = parse_certs(&resp.workload_certificate).unwrap();
    let (uris, dns) = sans(chain[0].as_ref());
    assert_eq!(
        uris,
        vec!["spiffe://localhost/ns/default/dapr-scheduler".to_string()]
    );
    assert_eq!(dns.len(), 3);
    assert!(dns[0].starts_with("dapr-scheduler-server-0.dapr-scheduler-server.default.svc."));
    let (csr, _key) = p256_csr();
    let resp = sign(
        &channel,
        request("dapr-injector", "default", csr.as_bytes()),
    )
    .await
    .expect("signed");
    let (_, dns) = sans(parse_certs(&resp.workload_certificate).unwrap()[0].as_ref());
    assert_eq!(dns, vec!["dapr-sidecar-injector.default.svc".to_string()]);

    // 4. A CSR that asks for exactly what Sentry assigns is fine.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://public/ns/default/orders".try_into().unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    sign(&channel, request("orders", "default", csr.as_bytes()))
        .await
        .expect("CSR with the assigned SAN");

    // Refusals: (request, expected code, message fragment).
    let (good_csr, _k) = p256_csr();
    let evil_dns = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::CertificateParams::new(vec!["evil.example.com".into()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    };
    let other_uri = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://public/ns/default/admin".try_into().unwrap(),
        )];
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    let ip_san = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap())];
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    let oversized = {
        // A syntactically plausible PEM just over the 16 KiB limit.
        let mut s = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        while s.len() < 17 * 1024 {
            s.push_str(&"A".repeat(64));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE REQUEST-----\n");
        s
    };
    let tampered = {
        let mut b = good_csr.clone().into_bytes();
        // Flip a base64 character inside the body.
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let rsa_small = rsa_1024_csr();
    let cases: Vec<(
        &str,
        dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest,
        Code,
        &str,
    )> = vec![
        (
            "garbage CSR",
            request("orders", "default", b"hello, sentry"),
            Code::InvalidArgument,
            "not a PEM",
        ),
        (
            "garbage inside PEM",
            request(
                "orders",
                "default",
                dapr_security::pem::encode("CERTIFICATE REQUEST", b"junk junk").as_bytes(),
            ),
            Code::InvalidArgument,
            "could not be parsed",
        ),
        (
            "tampered CSR",
            request("orders", "default", tampered.as_bytes()),
            Code::InvalidArgument,
            "",
        ),
        (
            "oversized CSR",
            request("orders", "default", oversized.as_bytes()),
            Code::InvalidArgument,
            "larger than",
        ),
        (
            "extra DNS SAN",
            request("orders", "default", evil_dns.as_bytes()),
            Code::InvalidArgument,
            "evil.example.com",
        ),
        (
            "other URI SAN",
            request("orders", "default", other_uri.as_bytes()),
            Code::InvalidArgument,
            "subject alternative name",
        ),
        (
            "IP SAN",
            request("orders", "default", ip_san.as_bytes()),
            Code::InvalidArgument,
            "subject alternative name",
        ),
        (
            "RSA-1024 key",
            request("orders", "default", rsa_small.as_bytes()),
            Code::InvalidArgument,
            "too small",
        ),
        (
            "empty CSR",
            request("orders", "default", b""),
            Code::InvalidArgument,
            "CSR is required",
        ),
        (
            "app id with dots",
            request("my.app", "default", good_csr.as_bytes()),
            Code::InvalidArgument,
            "dots",
        ),
        (
            "app id too long",
            request(&"a".repeat(65), "default", good_csr.as_bytes()),
            Code::InvalidArgument,
            "longer",
        ),
        (
            "empty app id",
            request("", "default", good_csr.as_bytes()),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "bad namespace",
            request("orders", "a/b", good_csr.as_bytes()),
            Code::InvalidArgument,
            "namespace",
        ),
        (
            "bad trust domain",
            dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest {
                trust_domain: "Evil Domain".into(),
                ..request("orders", "default", good_csr.as_bytes())
            },
            Code::InvalidArgument,
            "trust domain",
        ),
        (
            "validator not enabled",
            dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest {
                token_validator: 3,
                ..request("orders", "default", good_csr.as_bytes())
            },
            Code::InvalidArgument,
            "not enabled",
        ),
        (
            "unknown validator",
            dapr_rs_proto::generated::dapr::proto::sentry::v1::SignCertificateRequest {
                token_validator: 99,
                ..request("orders", "default", good_csr.as_bytes())
            },
            Code::InvalidArgument,
            "unknown token validator",
        ),
    ];
    for (name, req, code, fragment) in cases {
        let status = sign(&channel, req).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(fragment),
            "{name}: message {:?} lacks {fragment:?}",
            status.message()
        );
    }

    // A gRPC message over the 64 KiB limit is refused by the transport...
    let huge = request("orders", "default", &vec![b'A'; 200 * 1024]);
    let status = sign(&channel, huge).await.expect_err("huge message");
    assert_ne!(status.code(), Code::Ok);
    // ...and Sentry keeps serving.
    let (csr, _key) = p256_csr();
    sign(&channel, request("after-huge", "default", csr.as_bytes()))
        .await
        .expect("still serving");

    // Refusals were logged without the CSR body, and counted.
    let log = sentry.log_text();
    assert!(log.contains("SignCertificate refused"));
    assert!(!log.contains("BEGIN CERTIFICATE REQUEST"));
    let (status, metrics) = http_get(sentry.metrics_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("dapr_sentry_cert_sign_success_total 6"),
        "{metrics}"
    );
    assert!(metrics.contains("dapr_sentry_cert_sign_failure_total{reason=\"invalid_csr\"}"));
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_sentry() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(&dir.path().join("creds"), &[]).await;
    let anchors = sentry.anchors();
    // Expect another identity for Sentry: the TLS handshake must fail.
    let cfg = dapr_security::client::SentryClientConfig::new(
        sentry.address(),
        SpiffeId::sentry("localhost", "dapr-system").unwrap(),
        "myapp",
        "default",
    );
    let client = dapr_security::client::SentryClient::new(cfg, anchors).unwrap();
    let err = client
        .fetch_svid()
        .await
        .expect_err("wrong Sentry identity");
    assert!(
        matches!(err, dapr_security::client::ClientError::Rpc(_)),
        "{err}"
    );

    // Other trust anchors: the handshake fails as well.
    let other = dapr_security::CaCredentials::generate_default("localhost", "default").unwrap();
    let other_anchors = dapr_security::TrustAnchors::from_pem(&other.trust_anchors_pem).unwrap();
    let client = sentry.client(other_anchors, "myapp");
    assert!(client.fetch_svid().await.is_err());
}

#[tokio::test]
async fn loads_existing_credentials_with_cert_manager_names() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let creds_dir = dir.path().join("creds");
    std::fs::create_dir_all(&creds_dir).unwrap();
    let creds = dapr_security::CaCredentials::generate_default("localhost", "default").unwrap();
    std::fs::write(creds_dir.join("ca.crt"), &creds.trust_anchors_pem).unwrap();
    std::fs::write(creds_dir.join("tls.crt"), &creds.issuer_chain_pem).unwrap();
    std::fs::write(creds_dir.join("tls.key"), &creds.issuer_key_pem).unwrap();
    let sentry = Sentry::start(
        &creds_dir,
        &[
            "--issuer-certificate-filename",
            "tls.crt",
            "--issuer-key-filename",
            "tls.key",
        ],
    )
    .await;
    let svid = sentry
        .client(sentry.anchors(), "myapp")
        .fetch_svid()
        .await
        .unwrap();
    assert_eq!(
        parse_certs(&creds.issuer_chain_pem).unwrap()[0],
        svid.chain()[1]
    );
    // Nothing was regenerated.
    assert_eq!(
        std::fs::read(creds_dir.join("ca.crt")).unwrap(),
        creds.trust_anchors_pem
    );
    assert!(!creds_dir.join("issuer.crt").exists());
}

#[tokio::test]
async fn refuses_to_start_with_partial_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let creds_dir = dir.path().join("creds");
    std::fs::create_dir_all(&creds_dir).unwrap();
    std::fs::write(creds_dir.join("ca.crt"), b"x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dapr-sentry"))
        .args([
            "--issuer-credentials",
            creds_dir.to_str().unwrap(),
            "--port",
            &common::free_port().to_string(),
            "--healthz-port",
            &common::free_port().to_string(),
            "--enable-metrics=false",
            "--listen-address",
            "127.0.0.1",
            "--healthz-listen-address",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(std::fs::read(creds_dir.join("ca.crt")).unwrap(), b"x");
}

/// Interoperability with an independent X.509 implementation: a CSR made by
/// the `openssl` CLI is accepted, and OpenSSL verifies the issued chain for
/// both TLS server and client use and reads the SPIFFE URI SAN. Skipped when
/// `openssl` is not installed.
#[tokio::test]
async fn openssl_interop() {
    init();
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let sentry = Sentry::start(&creds, &[]).await;
    let key = dir.path().join("key.pem");
    let csr = dir.path().join("csr.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let channel = sentry.channel(sentry.anchors());
    let resp = sign(
        &channel,
        request("interop", "default", &std::fs::read(&csr).unwrap()),
    )
    .await
    .expect("openssl CSR accepted");
    let chain = parse_certs(&resp.workload_certificate).unwrap();
    let leaf = dir.path().join("leaf.pem");
    let issuer = dir.path().join("issuer.pem");
    std::fs::write(
        &leaf,
        dapr_security::pem::encode("CERTIFICATE", chain[0].as_ref()),
    )
    .unwrap();
    std::fs::write(
        &issuer,
        dapr_security::pem::encode("CERTIFICATE", chain[1].as_ref()),
    )
    .unwrap();
    for purpose in ["sslserver", "sslclient"] {
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(creds.join("ca.crt"))
            .arg("-untrusted")
            .arg(&issuer)
            .args(["-purpose", purpose])
            .arg(&leaf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{purpose}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://public/ns/default/interop"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );

    // OpenSSL as a TLS client of Sentry: ALPN h2 and a chain to ca.crt.
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &sentry.address(),
            "-alpn",
            "h2",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(creds.join("ca.crt"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}
