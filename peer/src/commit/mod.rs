//! Commit (peer flow: deliver_client -> [verify -> validate -> commit] -> ledger -> events).
//!
//! The one path every block takes, whether it came from an orderer or from a fellow peer by
//! gossip: verify it is the next block (number, previous hash, data hash, orderer
//! signatures against BlockValidation, `last_config_index`), validate its transactions (a
//! config block: its config update, see [`crate::channel_config`]), record the codes in its
//! metadata and commit block + codes + state + index + savepoint in one atomic batch. A valid
//! config block's config is in force from the next block on: every check of a block uses the
//! config in force before it.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use shared_proto::block;
use shared_proto::block::BlockError;
use shared_proto::block::Expected;
use shared_proto::channel::Channel;
use shared_proto::msp::ANY_TIME;
use shared_proto::pb::common::Block;
use shared_proto::pb::tx::TxValidationCode;

use crate::channel_config;
use crate::channel_config::ConfigError;
use crate::channel_config::LiveConfig;
use crate::ledger::Ledger;
use crate::ledger::LedgerError;
use crate::metrics::Metrics;
use crate::validate;
use crate::validate::ValidatedBlock;

mod pipeline;

pub use pipeline::RunOutcome;
pub use pipeline::RUN_BLOCKS_MAX;
pub use pipeline::RUN_BYTES_MAX;

/// Why a block was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The block is not the valid next block: refused, nothing written. The source is suspect.
    #[error("block refused: {0}")]
    Refused(#[from] BlockError),
    /// The orderers' signatures hold, but the block names another config block than the
    /// chain's latest: refused, nothing written (a restart would read the wrong config).
    #[error("block {number} refused: its last_config_index is {found}, but the chain's latest config block is {expected}")]
    LastConfigIndex {
        number: u64,
        found: u64,
        expected: u64,
    },
    /// The ledger already holds this block (another source delivered it first): nothing to do.
    #[error("block {number} is already committed")]
    AlreadyCommitted { number: u64 },
    /// Storage failed: the peer must stop.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

impl CommitError {
    /// Whether the block was refused (the source is suspect; the peer goes on).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CommitError::Refused(_) | CommitError::LastConfigIndex { .. }
        )
    }
}

/// What committing a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub number: u64,
    pub codes: Vec<TxValidationCode>,
}

/// Verifies, validates and commits blocks of one channel, in order.
#[derive(Debug)]
pub struct Committer {
    /// The config in force; switched here when a valid config block commits.
    config: LiveConfig,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    /// Highest block number + 1 seen from any source (for readiness).
    tip_seen: std::sync::atomic::AtomicU64,
    /// Orderer deliver and gossip may offer the same block at once: one commits at a time.
    commit_lock: std::sync::Mutex<()>,
}

impl Committer {
    /// A committer for a pristine ledger, under `channel` (its genesis config): benchmarks and
    /// tests. A node opens its channels with [`Committer::open`].
    pub fn new(channel: Arc<Channel>, ledger: Ledger, metrics: Arc<Metrics>) -> Self {
        Committer {
            config: LiveConfig::new(channel),
            ledger,
            metrics,
            tip_seen: std::sync::atomic::AtomicU64::new(0),
            commit_lock: std::sync::Mutex::new(()),
        }
    }

    /// Opens a channel's committer: commits `genesis` on a pristine ledger; otherwise checks
    /// that the ledger's block 0 is `genesis` and reads the config in force from the ledger
    /// (its latest valid config block, see [`channel_config::load_in_force`]).
    pub fn open(
        genesis: &Block,
        ledger: Ledger,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let (channel, genesis_hash) =
            block::verify_genesis(genesis).map_err(ConfigError::Genesis)?;
        let committer = Committer::new(Arc::new(channel), ledger, metrics);
        if committer.ledger.height() == 0 {
            committer.bootstrap(genesis).map_err(|e| match e {
                CommitError::Refused(e) => ConfigError::Genesis(e),
                CommitError::Ledger(e) => ConfigError::Ledger(e),
                other => ConfigError::BadConfigBlock {
                    number: 0,
                    reason: other.to_string(),
                },
            })?;
            return Ok(committer);
        }
        channel_config::check_genesis(&committer.ledger, genesis_hash)?;
        let in_force = channel_config::load_in_force(&committer.ledger)?;
        tracing::info!(
            channel = %committer.channel_id(),
            sequence = in_force.channel.sequence(),
            config_block = in_force.block,
            height = committer.ledger.height(),
            "config in force read from the ledger"
        );
        committer.config.restore(in_force);
        Ok(committer)
    }

    pub fn channel_id(&self) -> &str {
        self.config.channel_id()
    }

    /// The config in force now (take it once per request).
    pub fn config(&self) -> Arc<Channel> {
        self.config.current()
    }

    /// The live config: subscribe to follow config blocks.
    pub fn live_config(&self) -> &LiveConfig {
        &self.config
    }

    /// Records that a source has block `number` (so the chain is at least `number + 1` long).
    pub fn saw_block(&self, number: u64) {
        self.tip_seen.fetch_max(
            number.saturating_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The longest chain any source has shown this peer.
    pub fn tip_seen(&self) -> u64 {
        self.tip_seen
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(self.ledger.height())
    }

    /// Commits the channel's genesis block on a pristine ledger (it comes from the operator's
    /// config, not the network, so it is checked for shape only).
    pub fn bootstrap(&self, genesis: &Block) -> Result<(), CommitError> {
        if self.ledger.height() > 0 {
            return Ok(());
        }
        block::verify_genesis(genesis)?;
        let mut genesis = genesis.clone();
        let codes = vec![TxValidationCode::Valid as i32; block::tx_envelopes(&genesis).len()];
        let code_bytes: Vec<u8> = codes.iter().map(|c| *c as u8).collect();
        block::set_validation_codes(&mut genesis, &code_bytes);
        let tx_ids: Vec<Option<String>> = block::tx_envelopes(&genesis)
            .iter()
            .map(|e| tx_id_of(e))
            .collect();
        self.ledger.commit(&genesis, &tx_ids, &codes, &[])?;
        Ok(())
    }

    /// Verifies, validates and commits `block`, which must be the next block. Blocking (CPU
    /// and storage): call it from a blocking thread.
    ///
    /// Certificates are checked for chain and role but not for their validity window
    /// ([`ANY_TIME`]): every peer must reach the same verdict on a block whenever it validates
    /// it (a peer catching up a year later included). Expiry is enforced where time is
    /// meaningful: by orderers at Broadcast and by endorsers.
    pub fn process(&self, block: Block) -> Result<Committed, CommitError> {
        self.process_at(block, ANY_TIME)
    }

    /// As [`Committer::process`], with certificate validity checked at `now_unix` (tests).
    pub fn process_at(&self, block: Block, now_unix: i64) -> Result<Committed, CommitError> {
        // Poisoning only means another commit panicked; the ledger batch is atomic either way.
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let expected = self.expected_from_ledger(&block)?;
        let staged = self.stage(block, expected, now_unix)?;
        self.finish(staged)
    }

    /// What the next block must link to, from the ledger; `AlreadyCommitted` for a block the
    /// ledger holds. Call under the commit lock.
    fn expected_from_ledger(&self, block: &Block) -> Result<Expected, CommitError> {
        let number = block.header.as_ref().map_or(0, |h| h.number);
        if number < self.ledger.height() {
            return Err(CommitError::AlreadyCommitted { number });
        }
        Ok(Expected {
            number: self.ledger.height(),
            previous_hash: self.ledger.last_block_hash()?,
        })
    }

    /// The state-free stage: verifies `block` as the block after `expected` under the config
    /// in force, and runs validation phase 1 on a transaction block. A config block's
    /// validation reads state and changes the config: it waits for [`Committer::finish`].
    fn stage(
        &self,
        block: Block,
        expected: Expected,
        now_unix: i64,
    ) -> Result<Staged, CommitError> {
        let number = block.header.as_ref().map_or(0, |h| h.number);
        if number < expected.number {
            return Err(CommitError::AlreadyCommitted { number });
        }
        let current = self.config.current();
        block::verify_block(&current, &block, expected, now_unix)?;
        let is_config_block = channel_config::config_envelope(&block).is_some();
        let want = self
            .config
            .expected_last_config_index(number, is_config_block);
        let found = block::last_config_index(&block);
        if found != want {
            return Err(CommitError::LastConfigIndex {
                number,
                found,
                expected: want,
            });
        }
        let started = Instant::now();
        let phase1 = (!is_config_block).then(|| validate::prevalidate(&current, &block, now_unix));
        Ok(Staged {
            header_hash: block::header_hash(&block)?,
            block,
            number,
            config: current,
            phase1,
            phase1_time: started.elapsed(),
        })
    }

    /// The in-order stage: duplicate tx ids and MVCC against state as every earlier block left
    /// it (a config block: its config update), then the atomic ledger commit and, for a valid
    /// config block, the config switch. Call under the commit lock, after the previous block's
    /// `finish` returned.
    fn finish(&self, staged: Staged) -> Result<Committed, CommitError> {
        let Staged {
            mut block,
            number,
            config: current,
            phase1,
            phase1_time,
            ..
        } = staged;
        let started = Instant::now();
        let is_config_block = phase1.is_none();
        let (validated, next) = match phase1 {
            Some(phase1) => (validate::validate_in_order(&self.ledger, phase1)?, None),
            // Config blocks are judged at ANY_TIME whatever `now_unix` (see channel_config).
            None => {
                let envelope = channel_config::config_envelope(&block).unwrap_or_default();
                let verdict =
                    channel_config::validate_config_block(&current, &self.ledger, envelope)?;
                let validated = ValidatedBlock {
                    codes: vec![verdict.code],
                    writes: Vec::new(),
                    tx_ids: vec![verdict.tx_id],
                };
                (validated, verdict.next)
            }
        };
        let validated_at = Instant::now();
        let code_bytes: Vec<u8> = validated.codes.iter().map(|c| *c as u8).collect();
        block::set_validation_codes(&mut block, &code_bytes);
        let codes: Vec<i32> = validated.codes.iter().map(|c| *c as i32).collect();
        self.ledger
            .commit(&block, &validated.tx_ids, &codes, &validated.writes)?;
        // Still under the commit lock: the next block is checked under the new config.
        self.config.committed(number, is_config_block, next);
        self.metrics.observe_block(
            &validated.codes,
            phase1_time + (validated_at - started),
            validated_at.elapsed(),
        );
        tracing::debug!(
            block = number,
            txs = validated.codes.len(),
            phase1_ms = phase1_time.as_secs_f64() * 1e3,
            in_order_ms = (validated_at - started).as_secs_f64() * 1e3,
            commit_ms = validated_at.elapsed().as_secs_f64() * 1e3,
            "block committed"
        );
        Ok(Committed {
            number,
            codes: validated.codes,
        })
    }
}

/// A block verified and through validation phase 1, waiting for its in-order stage.
#[derive(Debug)]
struct Staged {
    block: Block,
    number: u64,
    /// What the block after it must name as its previous hash.
    header_hash: [u8; 32],
    /// The config it was verified under (the one in force for it).
    config: Arc<Channel>,
    /// `None` for a config block (validated whole in the in-order stage).
    phase1: Option<validate::Prevalidated>,
    phase1_time: Duration,
}

/// The tx id in an encoded envelope's channel header, if any.
pub fn tx_id_of(envelope: &[u8]) -> Option<String> {
    use prost::Message as _;
    let env = shared_proto::pb::common::Envelope::decode(envelope).ok()?;
    let payload = shared_proto::pb::common::Payload::decode(env.payload.as_slice()).ok()?;
    let id = payload.header?.channel_header?.tx_id;
    (!id.is_empty()).then_some(id)
}
