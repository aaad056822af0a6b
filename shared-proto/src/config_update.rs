//! Config updates: the one way a channel's configuration changes after its genesis block.
//!
//! A `CONFIG_UPDATE` envelope carries a [`ConfigUpdate`]: the channel's whole next
//! configuration (sequence = current + 1) and admins' signatures over its bytes. Orderers
//! check it when it arrives ([`check_update`] at the current time) and again when they apply it
//! (at [`ANY_TIME`], so every node reaches the same verdict); the block that orders it holds
//! it alone, and that block's number becomes the channel's `last_config_index`. Peers run the
//! same check against the config before it when they commit the block.
//!
//! Checks, in order (each failure has its own [`ConfigUpdateError`] variant):
//! 1. the data decodes as a `ConfigUpdate` whose config decodes and names this channel;
//! 2. its sequence is exactly the current sequence + 1 (a stale or skipped one is refused);
//! 3. at most one consenter changes (added, removed, or its certificates or address replaced),
//!    the set keeps at least one consenter, and the new configuration passes every check of
//!    [`Channel::from_config`];
//! 4. an added or replaced consenter's TLS certificates were issued by its org's TLS CA;
//! 5. every signature is by a valid member of the current configuration and verifies, and the
//!    signers satisfy the current `Admins` policy.
//!
//! Promises: never panics on any input; a refused update changes nothing.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::channel::Channel;
use crate::channel::ChannelError;
use crate::channel::ADMINS;
use crate::envelope::create_signed_envelope;
use crate::envelope::new_nonce;
use crate::envelope::Refusal;
use crate::msp::MspError;
use crate::msp::SigningIdentity;
pub use crate::msp::ANY_TIME;
use crate::pb::common::Envelope;
use crate::pb::common::HeaderType;
use crate::pb::config::ChannelConfig;
use crate::pb::config::ConfigSignature;
use crate::pb::config::ConfigUpdate;
use crate::pb::config::Consenter;
use crate::policy::Signer;
use crate::signing::Domain;

/// Why a config update was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigUpdateError {
    #[error("malformed config update: {0}")]
    Malformed(String),
    #[error("config update names channel {found:?}, not {expected:?}")]
    WrongChannel { expected: String, found: String },
    #[error("config update builds on sequence {}, but the channel is at sequence {current} (expected {}): rebuild it from the current config", .found.saturating_sub(1), .current + 1)]
    StaleSequence { current: u64, found: u64 },
    #[error("config update changes {count} consenters ({which}); change one at a time")]
    SeveralConsenterChanges { count: usize, which: String },
    #[error("config update removes the last consenter ({0}); a channel needs at least one")]
    LastConsenter(u64),
    #[error("consenter {id}: {field} was not issued by a TLS CA of {msp_id}: {reason}")]
    UntrustedConsenterCert {
        id: u64,
        field: &'static str,
        msp_id: String,
        reason: String,
    },
    #[error("the new config is invalid: {0}")]
    InvalidConfig(#[source] ChannelError),
    #[error("signature #{index} refused: {reason}")]
    BadSignature { index: usize, reason: MspError },
    #[error("the {signers} valid signature(s) do not satisfy the channel's Admins policy")]
    NotEnoughAdmins { signers: usize },
}

impl ConfigUpdateError {
    /// How a server answers: malformed input `InvalidArgument`, signatures `PermissionDenied`,
    /// everything that depends on the channel's current state `FailedPrecondition`.
    pub fn grpc_code_name(&self) -> &'static str {
        match self.refusal() {
            Some(r) => r.grpc_code_name(),
            None => "FAILED_PRECONDITION",
        }
    }

    /// The envelope refusal this is, or `None` for FAILED_PRECONDITION (state-dependent).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ConfigUpdateError::Malformed(_) | ConfigUpdateError::WrongChannel { .. } => {
                Some(Refusal::InvalidArgument)
            }
            ConfigUpdateError::BadSignature { .. } | ConfigUpdateError::NotEnoughAdmins { .. } => {
                Some(Refusal::PermissionDenied)
            }
            ConfigUpdateError::StaleSequence { .. }
            | ConfigUpdateError::SeveralConsenterChanges { .. }
            | ConfigUpdateError::LastConsenter(_)
            | ConfigUpdateError::UntrustedConsenterCert { .. }
            | ConfigUpdateError::InvalidConfig(_) => None,
        }
    }
}

/// What a config update changes in the consenter set (at most one consenter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsenterChange {
    None,
    Add(Consenter),
    Remove(Consenter),
    /// Same id, new certificates or address (certificate rotation, a move).
    Replace {
        old: Consenter,
        new: Consenter,
    },
}

impl ConsenterChange {
    /// What changes, by consenter id (for logs): `none`, `add 4`, `remove 2`, `replace 3`.
    pub fn summary(&self) -> String {
        describe(self)
    }
}

/// A config update that passed [`check_update`].
#[derive(Debug)]
pub struct CheckedUpdate {
    pub channel: Channel,
    pub consenters: ConsenterChange,
}

/// Signs `config` as one admin's approval.
pub fn approve(config: &[u8], admin: &SigningIdentity) -> ConfigSignature {
    ConfigSignature {
        signer: admin.serialized().to_vec(),
        signature: admin.sign(Domain::ConfigUpdate, &[config]),
    }
}

/// Builds the `CONFIG_UPDATE` envelope for `next` (whose sequence the caller set), approved
/// by every identity of `admins` and sent by `submitter`.
pub fn build_update(
    next: &ChannelConfig,
    admins: &[&SigningIdentity],
    submitter: &SigningIdentity,
    timestamp_unix_ms: u64,
) -> Envelope {
    let config = next.encode_to_vec();
    let signatures = admins.iter().map(|a| approve(&config, a)).collect();
    let data = ConfigUpdate { config, signatures }.encode_to_vec();
    create_signed_envelope(
        submitter,
        HeaderType::ConfigUpdate,
        &next.channel_id,
        data,
        new_nonce(),
        timestamp_unix_ms,
    )
}

/// Checks the data of a `CONFIG_UPDATE` envelope against the channel's current configuration
/// at `now_unix` ([`ANY_TIME`] when applying or committing a block).
pub fn check_update(
    current: &Channel,
    data: &[u8],
    now_unix: i64,
) -> Result<CheckedUpdate, ConfigUpdateError> {
    let update =
        ConfigUpdate::decode(data).map_err(|e| ConfigUpdateError::Malformed(e.to_string()))?;
    let next = ChannelConfig::decode(update.config.as_slice())
        .map_err(|e| ConfigUpdateError::Malformed(format!("config: {e}")))?;
    if next.channel_id != current.id() {
        return Err(ConfigUpdateError::WrongChannel {
            expected: current.id().to_owned(),
            found: next.channel_id,
        });
    }
    if next.sequence != current.sequence() + 1 {
        return Err(ConfigUpdateError::StaleSequence {
            current: current.sequence(),
            found: next.sequence,
        });
    }
    let consenters = consenter_change(current.consenters(), consenters_of(&next))?;
    let channel = Channel::from_config(next).map_err(ConfigUpdateError::InvalidConfig)?;
    match &consenters {
        ConsenterChange::Add(c) | ConsenterChange::Replace { new: c, .. } => {
            check_consenter_certs(&channel, c, now_unix)?;
        }
        ConsenterChange::None | ConsenterChange::Remove(_) => {}
    }
    let mut signers: Vec<Signer> = Vec::new();
    for (index, s) in update.signatures.iter().enumerate() {
        let bad = |reason| ConfigUpdateError::BadSignature { index, reason };
        let identity = current
            .msps()
            .deserialize_identity(&s.signer, now_unix)
            .map_err(bad)?;
        identity
            .verify(Domain::ConfigUpdate, &[&update.config], &s.signature)
            .map_err(bad)?;
        if !signers.iter().any(|known| known.id == identity.id) {
            signers.push(Signer {
                id: identity.id,
                msp_id: identity.msp_id,
                role: identity.role,
            });
        }
    }
    let satisfied = current
        .evaluate(ADMINS, &signers)
        .map_err(ConfigUpdateError::InvalidConfig)?;
    if !satisfied {
        return Err(ConfigUpdateError::NotEnoughAdmins {
            signers: signers.len(),
        });
    }
    Ok(CheckedUpdate {
        channel,
        consenters,
    })
}

fn consenters_of(config: &ChannelConfig) -> &[Consenter] {
    config
        .orderer
        .as_ref()
        .map_or(&[], |o| o.consenters.as_slice())
}

/// The one consenter change from `old` to `new`, or why there is not exactly one or none.
pub fn consenter_change(
    old: &[Consenter],
    new: &[Consenter],
) -> Result<ConsenterChange, ConfigUpdateError> {
    let old_by_id: BTreeMap<u64, &Consenter> = old.iter().map(|c| (c.id, c)).collect();
    let new_by_id: BTreeMap<u64, &Consenter> = new.iter().map(|c| (c.id, c)).collect();
    let mut changes = Vec::new();
    for (id, c) in &new_by_id {
        match old_by_id.get(id) {
            None => changes.push(ConsenterChange::Add((*c).clone())),
            Some(o) if o != c => changes.push(ConsenterChange::Replace {
                old: (*o).clone(),
                new: (*c).clone(),
            }),
            Some(_) => {}
        }
    }
    for (id, o) in &old_by_id {
        if !new_by_id.contains_key(id) {
            changes.push(ConsenterChange::Remove((*o).clone()));
        }
    }
    if new.is_empty() {
        if let Some(last) = old.first() {
            return Err(ConfigUpdateError::LastConsenter(last.id));
        }
    }
    match changes.len() {
        0 => Ok(ConsenterChange::None),
        1 => Ok(changes.remove(0)),
        count => Err(ConfigUpdateError::SeveralConsenterChanges {
            count,
            which: changes.iter().map(describe).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn describe(change: &ConsenterChange) -> String {
    match change {
        ConsenterChange::None => "none".into(),
        ConsenterChange::Add(c) => format!("add {}", c.id),
        ConsenterChange::Remove(c) => format!("remove {}", c.id),
        ConsenterChange::Replace { new, .. } => format!("replace {}", new.id),
    }
}

/// An added or replaced consenter's TLS certificates must chain to a TLS root of its org.
/// At [`ANY_TIME`] the chain is checked at the certificate's own `not_before`, so every node
/// reaches the same verdict whenever it applies the block.
fn check_consenter_certs(
    channel: &Channel,
    consenter: &Consenter,
    now_unix: i64,
) -> Result<(), ConfigUpdateError> {
    let roots: Vec<Vec<u8>> = channel
        .config()
        .orderer_orgs
        .iter()
        .filter(|o| o.msp_id == consenter.msp_id)
        .flat_map(|o| o.tls_root_certs.iter().cloned())
        .collect();
    for (field, der) in [
        ("client_tls_cert", &consenter.client_tls_cert),
        ("server_tls_cert", &consenter.server_tls_cert),
    ] {
        crate::tls::verify_issued(der, &roots, now_unix).map_err(|reason| {
            ConfigUpdateError::UntrustedConsenterCert {
                id: consenter.id,
                field,
                msp_id: consenter.msp_id.clone(),
                reason,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_update_tests.rs"]
mod tests;
