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
#[derive(Clone)]
pub struct TlsMaterial {
    identity: Identity,
    ca_bundle: Certificate,
    /// DER of every CA in `tls.ca_roots`.
    ca_roots_der: Vec<Vec<u8>>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// DER of this node's own TLS certificate (what peers pin).
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsMaterial")
            .field("ca_roots", &self.ca_roots_der.len())
            .finish_non_exhaustive()
    }
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
        let mut ca_roots_der = Vec::new();
        for ca in &files.ca_roots {
            let pem = read(ca)?;
            for block in pem::parse_many(&pem).map_err(|e| TlsError::Invalid {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })? {
                ca_roots_der.push(block.into_contents());
            }
            bundle.extend(pem);
            bundle.push(b'\n');
        }
        Ok(TlsMaterial {
            identity: Identity::from_pem(&cert, &key),
            ca_bundle: Certificate::from_pem(bundle),
            ca_roots_der,
            cert_pem: cert,
            key_pem: key,
            cert_der,
        })
    }

    /// DER of every CA certificate in the node's `tls.ca_roots` files.
    pub fn ca_roots_der(&self) -> &[Vec<u8>] {
        &self.ca_roots_der
    }

    /// This node's certificate (chain), PEM.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// This node's private key, PEM.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
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
pub(crate) mod tests;
