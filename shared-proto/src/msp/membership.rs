//! Verifying identities against a channel's organisations, with a bounded cache.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use prost::Message as _;

use super::CertInfo;
use super::MspError;
use super::Role;
use crate::hash::sha256;
use crate::hash::Hash;
use crate::pb::config::NodeOus;
use crate::pb::msp::SerializedIdentity;
use crate::signing;
use crate::signing::Domain;

/// A member whose certificate chained to its org's root, was within its validity window and
/// carried exactly one role when it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// SHA-256 of the certificate DER: two signatures with the same id are one signer.
    pub id: Hash,
    pub msp_id: String,
    pub role: Role,
    pub common_name: String,
    pub public_key: VerifyingKey,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl VerifiedIdentity {
    /// Verifies this member's signature over `parts` for `domain`.
    pub fn verify(
        &self,
        domain: Domain,
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), MspError> {
        signing::verify(&self.public_key, domain, parts, signature).map_err(|source| {
            MspError::BadSignature {
                subject: self.common_name.clone(),
                source,
            }
        })
    }

    /// Refuses this identity unless it has `role`.
    pub fn require_role(&self, role: Role) -> Result<(), MspError> {
        if self.role == role {
            Ok(())
        } else {
            Err(MspError::WrongRole {
                subject: self.common_name.clone(),
                expected: role,
                found: self.role,
            })
        }
    }

    fn check_time(&self, now_unix: i64) -> Result<(), MspError> {
        check_window(
            &self.common_name,
            self.not_before_unix,
            self.not_after_unix,
            now_unix,
        )
    }
}

/// Pass as `now_unix` to skip validity-window checks. Committing peers use it (as Fabric's
/// committer does): a block's validity must not depend on when a peer happens to validate it,
/// or two peers could record different codes for the same transaction.
pub const ANY_TIME: i64 = i64::MIN;

fn check_window(subject: &str, not_before: i64, not_after: i64, now: i64) -> Result<(), MspError> {
    if now == ANY_TIME {
        return Ok(());
    }
    if now < not_before {
        return Err(MspError::NotYetValid {
            subject: subject.to_owned(),
            not_before_unix: not_before,
            now_unix: now,
        });
    }
    if now > not_after {
        return Err(MspError::Expired {
            subject: subject.to_owned(),
            not_after_unix: not_after,
            now_unix: now,
        });
    }
    Ok(())
}

/// One organisation: its root CAs and how OUs map to roles.
#[derive(Debug, Clone)]
pub struct Msp {
    msp_id: String,
    roots: Vec<CertInfo>,
    ous: Vec<(String, Role)>,
}

impl Msp {
    /// Builds an MSP from DER root certificates, each of which must be a self-signed CA.
    /// `node_ous` defaults to the role names (`client`, `peer`, `orderer`, `admin`).
    pub fn new(
        msp_id: &str,
        root_certs: &[Vec<u8>],
        node_ous: Option<&NodeOus>,
    ) -> Result<Self, MspError> {
        if root_certs.is_empty() {
            return Err(MspError::BadRoot {
                msp_id: msp_id.to_owned(),
            });
        }
        let mut roots = Vec::with_capacity(root_certs.len());
        for der in root_certs {
            let info = CertInfo::from_der(der)?;
            if !info.is_ca || !info.is_signed_by(&info) {
                return Err(MspError::BadRoot {
                    msp_id: msp_id.to_owned(),
                });
            }
            roots.push(info);
        }
        let pick = |configured: Option<&String>, role: Role| match configured {
            Some(ou) if !ou.is_empty() => (ou.clone(), role),
            _ => (role.as_str().to_owned(), role),
        };
        let ous = vec![
            pick(node_ous.map(|n| &n.client_ou), Role::Client),
            pick(node_ous.map(|n| &n.peer_ou), Role::Peer),
            pick(node_ous.map(|n| &n.orderer_ou), Role::Orderer),
            pick(node_ous.map(|n| &n.admin_ou), Role::Admin),
        ];
        Ok(Msp {
            msp_id: msp_id.to_owned(),
            roots,
            ous,
        })
    }

    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    /// Checks a member certificate at time `now_unix`: issued by one of the roots, within its
    /// validity window, a leaf, with exactly one role OU.
    pub fn validate(&self, cert_der: &[u8], now_unix: i64) -> Result<VerifiedIdentity, MspError> {
        let info = CertInfo::from_der(cert_der)?;
        let subject = info.common_name.clone();
        if !self.roots.iter().any(|root| info.is_signed_by(root)) {
            return Err(MspError::UntrustedIssuer {
                msp_id: self.msp_id.clone(),
                subject,
            });
        }
        if info.is_ca {
            return Err(MspError::IsCa { subject });
        }
        check_window(
            &subject,
            info.not_before_unix,
            info.not_after_unix,
            now_unix,
        )?;
        let roles: Vec<Role> = info
            .organizational_units
            .iter()
            .filter_map(|ou| self.ous.iter().find(|(o, _)| o == ou).map(|(_, r)| *r))
            .collect();
        let role = match roles.as_slice() {
            [role] => *role,
            [] => {
                return Err(MspError::NoRole {
                    subject,
                    found: info.organizational_units,
                })
            }
            _ => {
                return Err(MspError::AmbiguousRole {
                    subject,
                    found: info.organizational_units,
                })
            }
        };
        Ok(VerifiedIdentity {
            id: sha256(cert_der),
            msp_id: self.msp_id.clone(),
            role,
            common_name: subject,
            public_key: info.public_key,
            not_before_unix: info.not_before_unix,
            not_after_unix: info.not_after_unix,
        })
    }
}

/// The organisations of a channel, and a cache of identities already verified.
///
/// The cache is keyed by the hash of the serialized identity; a hit skips parsing and chain
/// verification but still checks the validity window against `now`, so an identity that
/// expires while cached is refused. The cache holds at most `cache_capacity` entries and is
/// emptied when full (cheap, and bounded).
#[derive(Debug)]
pub struct MspManager {
    msps: BTreeMap<String, Msp>,
    cache: Mutex<HashMap<Hash, VerifiedIdentity>>,
    cache_capacity: usize,
}

impl MspManager {
    pub const DEFAULT_CACHE_CAPACITY: usize = 16_384;

    pub fn new(msps: impl IntoIterator<Item = Msp>) -> Self {
        Self::with_cache_capacity(msps, Self::DEFAULT_CACHE_CAPACITY)
    }

    pub fn with_cache_capacity(msps: impl IntoIterator<Item = Msp>, cache_capacity: usize) -> Self {
        MspManager {
            msps: msps.into_iter().map(|m| (m.msp_id.clone(), m)).collect(),
            cache: Mutex::new(HashMap::new()),
            cache_capacity: cache_capacity.max(1),
        }
    }

    pub fn msp(&self, msp_id: &str) -> Option<&Msp> {
        self.msps.get(msp_id)
    }

    pub fn msp_ids(&self) -> impl Iterator<Item = &str> {
        self.msps.keys().map(String::as_str)
    }

    /// Decodes an encoded `SerializedIdentity` and verifies it against its org.
    pub fn deserialize_identity(
        &self,
        serialized: &[u8],
        now_unix: i64,
    ) -> Result<VerifiedIdentity, MspError> {
        let key = sha256(serialized);
        if let Some(hit) = self.cache_get(&key) {
            hit.check_time(now_unix)?;
            return Ok(hit);
        }
        let identity =
            SerializedIdentity::decode(serialized).map_err(|e| MspError::MalformedIdentity {
                reason: e.to_string(),
            })?;
        let verified = self.validate(&identity.mspid, &identity.id_bytes, now_unix)?;
        self.cache_put(key, verified.clone());
        Ok(verified)
    }

    /// Verifies a DER certificate claimed to belong to `msp_id`.
    pub fn validate(
        &self,
        msp_id: &str,
        cert_der: &[u8],
        now_unix: i64,
    ) -> Result<VerifiedIdentity, MspError> {
        let msp = self.msps.get(msp_id).ok_or_else(|| MspError::UnknownMsp {
            msp_id: msp_id.to_owned(),
        })?;
        msp.validate(cert_der, now_unix)
    }

    fn cache_get(&self, key: &Hash) -> Option<VerifiedIdentity> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still a
        // valid cache, so keep using it.
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    fn cache_put(&self, key: Hash, identity: VerifiedIdentity) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.cache_capacity {
            cache.clear();
        }
        cache.insert(key, identity);
    }

    /// Number of cached identities (for metrics and tests).
    pub fn cache_len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
