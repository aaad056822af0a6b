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

/// The host part of `host:port` (brackets stripped for IPv6).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
