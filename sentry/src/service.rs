//! `dapr.proto.sentry.v1.CA` and the state it signs with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use dapr_rs_proto::generated::dapr::proto::sentry::v1::{
    SignCertificateRequest, SignCertificateResponse, ca_server,
};
use dapr_security::{
    Ca, CaError, SpiffeId, Svid, SvidStore, csr::parse_csr_pem, spiffe::is_control_plane_id,
};
use rustls_pki_types::PrivateKeyDer;
use tonic::{Request, Response, Status};

use crate::{metrics::Metrics, validator::Validators};

/// Everything the CA service shares with the rotation tasks.
pub struct SentryState {
    ca: ArcSwap<Ca>,
    pub validators: Validators,
    /// `spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry`.
    pub sentry_id: SpiffeId,
    /// Cluster domain used in the scheduler's DNS names.
    pub cluster_domain: String,
    /// Sentry's own serving certificate.
    pub server_svids: Arc<SvidStore>,
    pub metrics: Arc<Metrics>,
}

impl SentryState {
    /// Builds the state and issues Sentry's serving certificate.
    pub fn new(
        ca: Ca,
        validators: Validators,
        sentry_id: SpiffeId,
        cluster_domain: String,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, CaError> {
        let state = Arc::new(Self {
            ca: ArcSwap::from_pointee(ca),
            validators,
            sentry_id,
            cluster_domain,
            server_svids: SvidStore::new(),
            metrics,
        });
        state
            .metrics
            .set_issuer_expiry(state.ca().issuer_not_after());
        state.renew_server_cert()?;
        Ok(state)
    }

    /// The CA in force.
    pub fn ca(&self) -> Arc<Ca> {
        self.ca.load_full()
    }

    /// Switches to a new CA: later requests are signed by it, and Sentry's
    /// serving certificate is re-issued from it.
    pub fn install_ca(&self, ca: Ca) -> Result<(), CaError> {
        self.metrics.set_issuer_expiry(ca.issuer_not_after());
        self.ca.store(Arc::new(ca));
        self.metrics.issuer_changed.inc();
        self.renew_server_cert()
    }

    /// Issues Sentry's serving certificate from the current CA.
    pub fn renew_server_cert(&self) -> Result<(), CaError> {
        let ca = self.ca();
        let issued = ca
            .issue_with_new_key(&self.sentry_id, &[])
            .inspect_err(|_| {
                self.metrics.server_cert_failed("ca_error");
            })?;
        let svid = Svid::new(issued.0.chain, PrivateKeyDer::Pkcs8(issued.1)).map_err(|e| {
            self.metrics.server_cert_failed("invalid_cert");
            CaError::BadIssuer(e.to_string())
        })?;
        self.server_svids.set(svid);
        Ok(())
    }

    /// DNS names Sentry adds for control-plane services (webhooks, scheduler peers).
    pub fn dns_names_for(&self, namespace: &str, id: &str) -> Vec<String> {
        if namespace != self.sentry_id.namespace() {
            return Vec::new();
        }
        match id {
            "dapr-injector" => vec![format!("dapr-sidecar-injector.{namespace}.svc")],
            "dapr-operator" => vec![format!("dapr-webhook.{namespace}.svc")],
            "dapr-scheduler" => (0..3)
                .map(|i| {
                    format!(
                        "dapr-scheduler-server-{i}.dapr-scheduler-server.{namespace}.svc.{}",
                        self.cluster_domain
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The whole SignCertificate decision.
    pub async fn sign(
        &self,
        req: &SignCertificateRequest,
    ) -> Result<SignCertificateResponse, (Status, &'static str)> {
        let validator = self
            .validators
            .select(req.token_validator)
            .map_err(|e| (e.to_status(), e.reason()))?;
        // Cheap, token-independent checks first.
        crate::validator::common_checks(req).map_err(|e| (e.to_status(), e.reason()))?;
        let csr = parse_csr_pem(&req.certificate_signing_request)
            .map_err(|e| (Status::invalid_argument(e.to_string()), "invalid_csr"))?;
        let identity = self
            .validators
            .validate(validator, req)
            .await
            .map_err(|e| (e.to_status(), e.reason()))?;
        let id = SpiffeId::new(&identity.trust_domain, &req.namespace, &req.id)
            .map_err(|e| (Status::invalid_argument(e.to_string()), "invalid_request"))?;
        let dns = self.dns_names_for(&req.namespace, &req.id);
        csr.check_requested_sans(&id.to_string(), &dns)
            .map_err(|e| (Status::invalid_argument(e.to_string()), "invalid_csr"))?;
        let ca = self.ca();
        let cert = ca.sign(csr.public_key(), &id, &dns).map_err(|e| {
            tracing::error!(error = %e, "error signing identity");
            (Status::internal("failed to sign certificate"), "sign")
        })?;
        let valid_until = cert
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| prost_types::Timestamp {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            });
        if is_control_plane_id(&req.id) {
            tracing::info!(%id, "issued control-plane certificate");
        } else {
            tracing::debug!(%id, "issued workload certificate");
        }
        Ok(SignCertificateResponse {
            workload_certificate: cert.chain_pem.into_bytes(),
            trust_chain_certificates: vec![ca.trust_anchors_pem().to_vec()],
            valid_until,
            jwt: None,
            per_audience_jwts: Default::default(),
        })
    }
}

/// Attacker-controlled text for logs: bounded and quoted by `?` formatting.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct CaService {
    state: Arc<SentryState>,
}

impl CaService {
    pub fn new(state: Arc<SentryState>) -> Self {
        Self { state }
    }

    /// The tonic server for this service, with a 64 KiB request limit.
    pub fn into_server(self) -> ca_server::CaServer<Self> {
        ca_server::CaServer::new(self).max_decoding_message_size(64 * 1024)
    }
}

#[tonic::async_trait]
impl ca_server::Ca for CaService {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let metrics = &self.state.metrics;
        metrics.sign_received.inc();
        let req = request.into_inner();
        match self.state.sign(&req).await {
            Ok(resp) => {
                metrics.sign_success.inc();
                Ok(Response::new(resp))
            }
            Err((status, reason)) => {
                metrics.sign_failed(reason);
                // Never log the token or the CSR.
                tracing::info!(
                    namespace = ?clip(&req.namespace),
                    id = ?clip(&req.id),
                    validator = req.token_validator,
                    code = ?status.code(),
                    reason = %status.message(),
                    "SignCertificate refused"
                );
                Err(status)
            }
        }
    }
}
