//! Server-side TLS whose trust follows the channels: the client certificates a node accepts
//! are those issued by a CA of its config files (`tls.ca_roots`) or by a TLS root CA of an org
//! in any channel it serves (`tls_root_certs` in the channel config), as of the latest config
//! block. An org added by a config update can therefore reach the nodes at once, with no
//! restart and no file to edit; an org removed from every channel can no longer connect.
//!
//! Promises:
//! - [`Trust`] is rebuilt (never patched) on every change; a root that does not parse is
//!   skipped with a warning and the others stay in force.
//! - [`incoming`] handshakes each connection on its own task under a deadline
//!   ([`HANDSHAKE_TIMEOUT`]) with at most [`HANDSHAKES_MAX`] in flight, so a slow or silent
//!   client holds up nobody; it stops accepting when the server drops it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::RwLock;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerified;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::DigitallySignedStruct;
use rustls::DistinguishedName;
use rustls::ServerConfig;
use rustls::SignatureScheme;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::TlsError;
use crate::tls::TlsMaterial;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per listener; further connections wait to be accepted.
pub const HANDSHAKES_MAX: usize = 256;
/// Accepted connections waiting for the server to take them.
const READY_MAX: usize = 64;

/// The client certificate roots a node accepts, shared by its servers.
pub struct Trust {
    fixed: Vec<Vec<u8>>,
    channels: Mutex<BTreeMap<String, Vec<Vec<u8>>>>,
    current: RwLock<Verifiers>,
}

#[derive(Clone)]
struct Verifiers {
    mandatory: Arc<dyn ClientCertVerifier>,
    optional: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("fixed_roots", &self.fixed.len())
            .finish_non_exhaustive()
    }
}

fn build(roots: &BTreeSet<&[u8]>) -> Result<Verifiers, String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        if let Err(e) = store.add(CertificateDer::from(root.to_vec())) {
            tracing::warn!(error = %e, "a TLS root certificate does not parse; skipped");
        }
    }
    let store = Arc::new(store);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mandatory = WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let optional = WebPkiClientVerifier::builder_with_provider(store, provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Verifiers {
        mandatory,
        optional,
    })
}

impl Trust {
    /// Trust built from the node's own CA files (DER), before any channel is known.
    pub fn new(fixed: Vec<Vec<u8>>) -> Result<Arc<Self>, TlsError> {
        let current = build(&fixed.iter().map(Vec::as_slice).collect()).map_err(|reason| {
            TlsError::Invalid {
                path: "tls.ca_roots".into(),
                reason,
            }
        })?;
        Ok(Arc::new(Trust {
            fixed,
            channels: Mutex::default(),
            current: RwLock::new(current),
        }))
    }

    /// Sets the TLS roots a channel's config names (every org's `tls_root_certs`).
    pub fn set_channel(&self, channel: &str, roots: Vec<Vec<u8>>) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels.get(channel) == Some(&roots) {
            return;
        }
        channels.insert(channel.to_owned(), roots);
        self.rebuild(&channels);
    }

    /// Forgets a channel's roots (the channel was removed from this node).
    pub fn remove_channel(&self, channel: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels.remove(channel).is_some() {
            self.rebuild(&channels);
        }
    }

    fn rebuild(&self, channels: &BTreeMap<String, Vec<Vec<u8>>>) {
        let all: BTreeSet<&[u8]> = self
            .fixed
            .iter()
            .chain(channels.values().flatten())
            .map(Vec::as_slice)
            .collect();
        match build(&all) {
            Ok(v) => {
                tracing::debug!(roots = all.len(), "TLS client trust updated");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = v;
            }
            Err(e) => tracing::warn!(error = %e, "TLS client trust unchanged"),
        }
    }

    fn verifier(&self, mandatory: bool) -> Arc<dyn ClientCertVerifier> {
        let v = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if mandatory {
            v.mandatory.clone()
        } else {
            v.optional.clone()
        }
    }

    /// Whether `der` chains to a root trusted now (what a handshake would decide).
    pub fn accepts(&self, der: &[u8]) -> bool {
        let now = UnixTime::now();
        self.verifier(true)
            .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], now)
            .is_ok()
    }
}

/// Every org's TLS root certificates in a channel config (orderer and application orgs).
pub fn channel_roots(channel: &crate::channel::Channel) -> Vec<Vec<u8>> {
    let config = channel.config();
    config
        .orderer_orgs
        .iter()
        .chain(&config.application_orgs)
        .flat_map(|o| o.tls_root_certs.iter().cloned())
        .collect()
}

/// Keeps `trust` in step with a channel's live config until the config's sender is gone (the
/// channel stopped); the caller forgets the channel's roots when it removes the channel.
pub async fn follow(
    trust: Arc<Trust>,
    channel_id: String,
    mut config: tokio::sync::watch::Receiver<Arc<crate::channel::Channel>>,
) {
    loop {
        let roots = channel_roots(&config.borrow_and_update());
        trust.set_channel(&channel_id, roots);
        if config.changed().await.is_err() {
            return;
        }
    }
}

/// A client-certificate verifier that asks the [`Trust`] in force at each handshake.
#[derive(Debug)]
struct Following {
    trust: Arc<Trust>,
    mandatory: bool,
}

impl ClientCertVerifier for Following {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would borrow from a trust that may change; clients send the one
        // certificate they have regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .verifier(self.mandatory)
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .verifier(self.mandatory)
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .verifier(self.mandatory)
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .verifier(self.mandatory)
            .supported_verify_schemes()
    }
}

/// A rustls server config presenting `tls`'s certificate and verifying clients against
/// `trust` as it is at each handshake; `require_client_cert` for mutual TLS.
pub fn server_config(
    tls: &TlsMaterial,
    trust: &Arc<Trust>,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let invalid = |path: &str, reason: String| TlsError::Invalid {
        path: path.into(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(tls.cert_pem())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls.cert", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem())
        .map_err(|e| invalid("tls.key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", e.to_string()))?
        .with_client_cert_verifier(Arc::new(Following {
            trust: trust.clone(),
            mandatory: require_client_cert,
        }))
        .with_single_cert(chain, key)
        .map_err(|e| invalid("tls.key", e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepted TLS connections, as `tonic::transport::Server::serve_with_incoming*` takes them.
pub type Incoming =
    tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// [`incoming`] for a server that trusts only the CA files of `tls` (tools and tests).
pub fn incoming_with_own_roots(
    listener: TcpListener,
    tls: &TlsMaterial,
    require_client_cert: bool,
) -> Result<Incoming, TlsError> {
    let trust = Trust::new(tls.ca_roots_der().to_vec())?;
    Ok(incoming(
        listener,
        server_config(tls, &trust, require_client_cert)?,
    ))
}

/// The TLS connections of `listener` for `tonic::transport::Server::serve_with_incoming*`
/// (which then reports the client's certificates in `Request::peer_certs`).
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> Incoming {
    let (tx, rx) = tokio::sync::mpsc::channel(READY_MAX);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, from) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%from, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
#[path = "tls_server_tests.rs"]
mod tests;
