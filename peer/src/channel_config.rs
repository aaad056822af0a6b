//! Channel config (peer flow: deliver_client / gossip -> commit [config block? -> channel_config]
//! -> ledger).
//!
//! A channel's configuration changes only through config blocks: a block holding exactly one
//! `CONFIG_UPDATE` envelope, which the orderers cut alone ([`config_envelope`]). The committer
//! verifies such a block as any other (orderer signatures under the `BlockValidation` policy of
//! the config before it), then [`validate_config_block`] decides its one validation code,
//! against the config in force before it and at [`ANY_TIME`] (every peer reaches the same
//! verdict whenever it commits the block):
//!
//! | check | code |
//! |---|---|
//! | the envelope decodes and verifies (`verify_envelope`: header, tx id, creator and signature) | its envelope code, e.g. `BAD_CREATOR_SIGNATURE` |
//! | its tx id is not committed yet | `DUPLICATE_TXID` |
//! | `config_update::check_update` (sequence + 1, admins' signatures satisfy `Admins`, the new config is valid, ...) | `INVALID_CONFIG_TRANSACTION` |
//! | all pass | `VALID`: the new config is in force for every later block and every service |
//!
//! An invalid config block stays in the chain with its code and changes nothing.
//!
//! The config in force is a live value, [`LiveConfig`]: the committer switches it right after
//! the config block's batch is committed and before it takes the next block, so the block after
//! a config block is always verified and validated under the new config; readers (endorser,
//! queries, events, gossip, the deliver client) take [`LiveConfig::current`] per request, or
//! [`LiveConfig::subscribe`] to follow changes. A request running across the switch may use
//! either config.
//!
//! `last_config_index`: the orderers set a config block's to its own number and every later
//! block's to the latest config block's. The committer refuses a block that names another
//! ([`LiveConfig::expected_last_config_index`]), so the tip of a ledger always names its latest
//! config block, and a restarted peer reads its config from there ([`load_in_force`]), never
//! from the genesis file alone.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update;
use shared_proto::envelope;
use shared_proto::hash::Hash;
use shared_proto::msp::ANY_TIME;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::tx::TxValidationCode;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::ledger::LedgerError;
use crate::ledger::StateReader;
use crate::validate;

/// Why a channel's config in force could not be established when its ledger was opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("genesis block: {0}")]
    Genesis(#[source] block::BlockError),
    #[error("the genesis block file (header hash {file}) is not block 0 of the ledger in the data dir ({ledger}): the data dir belongs to another channel or network")]
    GenesisMismatch { file: String, ledger: String },
    #[error("block {number}, named by the chain as its config block: {reason}")]
    BadConfigBlock { number: u64, reason: String },
}

/// The config in force on one channel, and the blocks that name it. Switched only by the
/// committer, under its commit lock.
#[derive(Debug)]
pub struct LiveConfig {
    channel_id: String,
    current: watch::Sender<Arc<Channel>>,
    /// Number of the block whose config is in force (0: genesis).
    in_force_block: AtomicU64,
    /// The chain's latest config block as the orderers count them (every block of one
    /// `CONFIG_UPDATE` envelope, whatever this peer decided about it): what the next block's
    /// `last_config_index` must name.
    chain_config_block: AtomicU64,
}

impl LiveConfig {
    /// The genesis config of a pristine (or just bootstrapped) ledger.
    pub fn new(genesis: Arc<Channel>) -> Self {
        LiveConfig {
            channel_id: genesis.id().to_owned(),
            current: watch::Sender::new(genesis),
            in_force_block: AtomicU64::new(0),
            chain_config_block: AtomicU64::new(0),
        }
    }

    /// The channel id (no config update can change it).
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// The config in force now. Take it once per request and use that one throughout.
    pub fn current(&self) -> Arc<Channel> {
        self.current.borrow().clone()
    }

    /// Follows the config in force: `changed()` completes when a config block switched it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Channel>> {
        self.current.subscribe()
    }

    /// Number of the block whose config is in force (0: genesis).
    pub fn in_force_block(&self) -> u64 {
        self.in_force_block.load(Ordering::Acquire)
    }

    /// The `last_config_index` block `number` must carry: its own number for a config block,
    /// else the chain's latest config block.
    pub fn expected_last_config_index(&self, number: u64, is_config_block: bool) -> u64 {
        if is_config_block {
            number
        } else {
            self.chain_config_block.load(Ordering::Acquire)
        }
    }

    /// Records that block `number` is committed; `next` is the config it put in force (a
    /// valid config block). Called by the committer after the block's batch is durable.
    pub(crate) fn committed(&self, number: u64, is_config_block: bool, next: Option<Channel>) {
        if is_config_block {
            self.chain_config_block.store(number, Ordering::Release);
        }
        if let Some(next) = next {
            self.in_force_block.store(number, Ordering::Release);
            tracing::info!(
                channel = %self.channel_id,
                block = number,
                sequence = next.sequence(),
                "config block committed; its config is in force"
            );
            self.current.send_replace(Arc::new(next));
        }
    }

    /// Makes a config read back from the ledger the one in force (start of a peer).
    pub(crate) fn restore(&self, in_force: InForce) {
        self.in_force_block.store(in_force.block, Ordering::Release);
        self.chain_config_block
            .store(in_force.chain_config_block, Ordering::Release);
        self.current.send_replace(Arc::new(in_force.channel));
    }
}

/// The single `CONFIG_UPDATE` envelope of a config block, or `None` for any other block (a
/// block whose one envelope does not decode is not a config block: validation gives it its
/// code).
pub fn config_envelope(block: &Block) -> Option<&[u8]> {
    let [only] = block::tx_envelopes(block) else {
        return None;
    };
    let envelope = Envelope::decode(only.as_slice()).ok()?;
    let header_type = Payload::decode(envelope.payload.as_slice())
        .ok()?
        .header?
        .channel_header?
        .r#type;
    (header_type == HeaderType::ConfigUpdate as i32).then_some(only.as_slice())
}

/// What a config block decided.
#[derive(Debug)]
pub struct ConfigVerdict {
    pub code: TxValidationCode,
    /// The envelope's tx id, when its envelope verified.
    pub tx_id: Option<String>,
    /// The config the block puts in force, when `code` is `VALID`.
    pub next: Option<Channel>,
}

/// Validates the `CONFIG_UPDATE` envelope of a config block against `current`, the config in
/// force before it (see the module doc). `Err` only when `state` fails.
pub fn validate_config_block(
    current: &Channel,
    state: &dyn StateReader,
    envelope_bytes: &[u8],
) -> Result<ConfigVerdict, LedgerError> {
    let refused = |code| ConfigVerdict {
        code,
        tx_id: None,
        next: None,
    };
    let Ok(envelope) = envelope::decode_envelope(envelope_bytes) else {
        return Ok(refused(TxValidationCode::BadPayload));
    };
    let verified = match envelope::verify_envelope(current, &envelope, ANY_TIME) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(channel = %current.id(), error = %e, "config update envelope refused");
            return Ok(refused(validate::envelope_code(&e)));
        }
    };
    let tx_id = Some(verified.tx_id).filter(|id| !id.is_empty());
    if let Some(id) = &tx_id {
        if state.has_tx(id)? {
            return Ok(ConfigVerdict {
                code: TxValidationCode::DuplicateTxid,
                tx_id,
                next: None,
            });
        }
    }
    match config_update::check_update(current, &verified.data, ANY_TIME) {
        Ok(checked) => Ok(ConfigVerdict {
            code: TxValidationCode::Valid,
            tx_id,
            next: Some(checked.channel),
        }),
        Err(e) => {
            tracing::warn!(channel = %current.id(), sequence = current.sequence(), error = %e, "config block invalid; the config in force does not change");
            Ok(ConfigVerdict {
                code: TxValidationCode::InvalidConfigTransaction,
                tx_id,
                next: None,
            })
        }
    }
}

/// The config in force as a ledger records it.
#[derive(Debug)]
pub struct InForce {
    pub channel: Channel,
    /// The block that put it in force (0: genesis).
    pub block: u64,
    /// The chain's latest config block (the tip's `last_config_index`).
    pub chain_config_block: u64,
}

/// Checks that the ledger's block 0 is the genesis block the peer was configured with.
pub fn check_genesis(ledger: &Ledger, genesis_hash: Hash) -> Result<(), ConfigError> {
    let stored = ledger
        .block(0)?
        .ok_or_else(|| corrupt(0, "missing below the savepoint"))?;
    let stored_hash = block::header_hash(&stored).map_err(|e| corrupt(0, e))?;
    if stored_hash != genesis_hash {
        return Err(ConfigError::GenesisMismatch {
            file: hex::encode(genesis_hash),
            ledger: hex::encode(stored_hash),
        });
    }
    Ok(())
}

/// Reads the config in force from a non-empty ledger: the tip's `last_config_index` names the
/// chain's latest config block. If this peer committed that block `VALID`, its config is in
/// force; if not, the config before it was, which the block before it names, and so on down
/// to block 0 (genesis).
pub fn load_in_force(ledger: &Ledger) -> Result<InForce, ConfigError> {
    let height = ledger.height();
    let Some(tip_number) = height.checked_sub(1) else {
        return Err(corrupt(0, "the ledger holds no block"));
    };
    let read = |number: u64| -> Result<Block, ConfigError> {
        ledger
            .block(number)?
            .ok_or_else(|| corrupt(number, "missing below the savepoint"))
    };
    let chain_config_block = block::last_config_index(&read(tip_number)?);
    let mut at = chain_config_block;
    loop {
        if at >= height {
            return Err(corrupt(at, format!("beyond the ledger height {height}")));
        }
        let candidate = read(at)?;
        let valid = block::validation_codes(&candidate).first().copied()
            == Some(validate::code_byte(TxValidationCode::Valid));
        if at == 0 || (valid && config_envelope(&candidate).is_some()) {
            let channel = Channel::from_config_block(&candidate).map_err(|e| corrupt(at, e))?;
            return Ok(InForce {
                channel,
                block: at,
                chain_config_block,
            });
        }
        if config_envelope(&candidate).is_none() {
            return Err(corrupt(at, "it holds no single CONFIG_UPDATE envelope"));
        }
        // This peer found it invalid: the config before it is in force, named by the block
        // before it (a config block names a strictly earlier one there).
        let before = block::last_config_index(&read(at - 1)?);
        if before >= at {
            return Err(corrupt(
                at - 1,
                format!("names block {before} as the config block before block {at}"),
            ));
        }
        at = before;
    }
}

fn corrupt(number: u64, reason: impl ToString) -> ConfigError {
    ConfigError::BadConfigBlock {
        number,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[path = "channel_config_tests.rs"]
mod tests;
