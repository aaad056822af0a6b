//! TLS material of a node, turned into tonic server and client configs (rustls with ring).
//!
//! Any key type rustls with ring handles works, for this node's own key and for the
//! certificates it verifies: ECDSA P-256/P-384, RSA and Ed25519 (tested in `tls_tests.rs`).
//! Nothing here assumes Ed25519; the generator issues ECDSA P-256 by default.

use std::path::Path;

use crate::node_config::TlsFiles;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;
use tonic::transport::ServerTlsConfig;

/// TLS files could not be read or are not PEM certificates/keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// This node's TLS certificate and key, and every CA whose certificates it accepts.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    identity: Identity,
    ca_bundle: Certificate,
    /// DER of this node's own TLS certificate (what peers pin).
    pub cert_der: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        let cert_der = crate::msp::pem_to_der(&String::from_utf8_lossy(&cert)).map_err(|e| {
            TlsError::Invalid {
                path: files.cert.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let mut bundle = Vec::new();
        for ca in &files.ca_roots {
            bundle.extend(read(ca)?);
            bundle.push(b'\n');
        }
        Ok(TlsMaterial {
            identity: Identity::from_pem(cert, key),
            ca_bundle: Certificate::from_pem(bundle),
            cert_der,
        })
    }

    /// Server config; `require_client_cert` for mutual TLS (cluster, gossip).
    pub fn server(&self, require_client_cert: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca_bundle.clone())
            .client_auth_optional(!require_client_cert)
    }

    /// Client config presenting this node's certificate, verifying the server as `host`.
    pub fn client(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca_bundle.clone())
            .identity(self.identity.clone())
            .domain_name(host)
    }
}

/// Whether the DER certificate `der` chains to one of `roots` (DER) and is valid at
/// `now_unix`; at [`crate::msp::ANY_TIME`] the chain is checked at the certificate's own
/// `not_before`, so the verdict does not depend on when it is asked. Any key type rustls with
/// ring verifies. The error says why, in words.
pub fn verify_issued(der: &[u8], roots: &[Vec<u8>], now_unix: i64) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::UnixTime;
    use x509_parser::prelude::FromDer as _;
    let at = if now_unix == crate::msp::ANY_TIME {
        let (_, cert) = x509_parser::prelude::X509Certificate::from_der(der)
            .map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        cert.validity().not_before.timestamp()
    } else {
        now_unix
    };
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.clone()))
            .map_err(|e| format!("TLS root certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err("the organisation has no TLS root certificates".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(store),
        provider,
    )
    .build()
    .map_err(|e| e.to_string())?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at).unwrap_or(0),
    ));
    verifier
        .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The host part of `host:port` (brackets stripped for IPv6).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
