//! A node's or user's own identity: certificate plus private key, able to sign.

use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;
use prost::Message as _;

use super::ca::key_from_pem;
use super::ca::pem_to_der;
use super::MspError;
use crate::pb::msp::SerializedIdentity;
use crate::signing;
use crate::signing::Domain;

/// A certificate and its key. `serialized` is what goes into `creator`, `endorser` and `signer`
/// fields, encoded once.
#[derive(Clone)]
pub struct SigningIdentity {
    msp_id: String,
    cert_der: Vec<u8>,
    key: SigningKey,
    serialized: Vec<u8>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SigningIdentity")
            .field("msp_id", &self.msp_id)
            .field("cert_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// Pairs a certificate with its key; refuses a key that does not match the certificate.
    pub fn new(msp_id: &str, cert_der: Vec<u8>, key: SigningKey) -> Result<Self, MspError> {
        let info = super::CertInfo::from_der(&cert_der)?;
        if info.public_key != key.verifying_key() {
            return Err(MspError::Malformed {
                reason: format!(
                    "private key does not match certificate {:?}",
                    info.common_name
                ),
            });
        }
        let serialized = SerializedIdentity {
            mspid: msp_id.to_owned(),
            id_bytes: cert_der.clone(),
        }
        .encode_to_vec();
        Ok(SigningIdentity {
            msp_id: msp_id.to_owned(),
            cert_der,
            key,
            serialized,
        })
    }

    /// Loads a PEM certificate and a PKCS#8 PEM key from files.
    pub fn from_pem_files(msp_id: &str, cert: &Path, key: &Path) -> Result<Self, MspError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| MspError::Io {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let cert_der = pem_to_der(&read(cert)?)?;
        let key = key_from_pem(&read(key)?)?;
        Self::new(msp_id, cert_der, key)
    }

    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The encoded `SerializedIdentity`.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs `parts` for `domain` (see [`crate::signing`]).
    pub fn sign(&self, domain: Domain, parts: &[&[u8]]) -> Vec<u8> {
        signing::sign(&self.key, domain, parts)
    }
}
