//! Validation (peer flow: deliver_client -> [validate] -> commit -> ledger -> events).
//!
//! Decides, for each transaction of a block the caller has already verified (orderer
//! signatures, hash chain: `shared_proto::block::verify_block`), whether it is valid, and
//! collects the state changes of the valid ones. Fabric's committer semantics and code names.
//!
//! # Two phases
//!
//! **Phase 1, per transaction, in parallel** (rayon; `tx.rs`; [`prevalidate`]) — each check
//! depends only on the transaction and the channel, never on state, so the order of work
//! cannot change a result and the committer runs it for block N+1 while block N commits
//! (`commit::pipeline`).
//! Signatures (each transaction's creator and endorsements) are verified across the block in
//! ed25519 batches of about [`batch::BATCH_SIGNATURES`], split at transaction boundaries
//! (`batch.rs`); a transaction in a failed batch is re-checked on its own.
//! Checks run in this order; the first failure gives the code:
//!
//! | check | code |
//! |---|---|
//! | data item is empty | `NIL_ENVELOPE` |
//! | envelope or its payload does not decode, or the payload is empty | `BAD_PAYLOAD` |
//! | header, channel header or signature header missing | `BAD_COMMON_HEADER` |
//! | header type is not a known `HeaderType` | `UNKNOWN_TX_TYPE` |
//! | channel id is not this channel's | `TARGET_CHAIN_NOT_FOUND` |
//! | nonce shorter than `envelope::MIN_NONCE_LEN` | `BAD_COMMON_HEADER` |
//! | tx id is not hex(SHA-256(nonce ‖ creator)) | `BAD_PROPOSAL_TXID` |
//! | creator is not a valid member at `now_unix`, or its signature does not verify | `BAD_CREATOR_SIGNATURE` |
//! | header type is `CONFIG_UPDATE` (a config update not alone in its block; config blocks are validated by `channel_config`) | `INVALID_CONFIG_TRANSACTION` |
//! | header type is not `ENDORSER_TRANSACTION` | `UNKNOWN_TX_TYPE` |
//! | data does not decode as `Transaction` | `BAD_PAYLOAD` |
//! | more than [`MAX_ENDORSEMENTS`] endorsements | `INVALID_ENDORSER_TRANSACTION` |
//! | `proposal_response_payload` does not decode | `BAD_RESPONSE_PAYLOAD` |
//! | no `ChaincodeAction` | `NIL_TXACTION` |
//! | chaincode not defined on the channel | `INVALID_CHAINCODE` |
//! | action's chaincode version differs from the definition | `CHAINCODE_VERSION_CONFLICT` |
//! | chaincode response missing or status >= 400 | `ENDORSEMENT_POLICY_FAILURE` (1) |
//! | read/write set malformed (see `tx.rs`) or over [`MAX_RWSET_ITEMS`] | `BAD_RWSET` |
//! | writes to a namespace other than the chaincode's | `ILLEGAL_WRITESET` |
//! | valid endorsements do not satisfy the chaincode's endorsement policy | `ENDORSEMENT_POLICY_FAILURE` (2) |
//!
//! (1) Endorsers refuse to endorse an error response (Fabric's `ERRORTHRESHOLD`), so a signed
//! one is not a valid endorsement of anything and no endorsement set can satisfy the policy.
//! (2) As Fabric: endorsements whose identity does not deserialize through the channel MSPs at
//! `now_unix`, or whose signature over `proposal_response_payload ‖ endorser`
//! (`Domain::Endorsement`) does not verify, are dropped; the remaining endorsers, deduplicated by
//! certificate (first wins), are evaluated against the policy.
//!
//! **Phase 2, in block order** (`mvcc.rs`; [`validate_in_order`]), against state as every
//! earlier block left it:
//!
//! | check | code |
//! |---|---|
//! | tx id already committed, or carried by an earlier transaction of this block | `DUPLICATE_TXID` |
//! | a point read's version differs from the current one (committed state overlaid with the writes of earlier valid transactions of this block; no version = key must not exist) | `MVCC_READ_CONFLICT` |
//! | re-executing a range query over the same overlay gives other keys or versions | `PHANTOM_READ_CONFLICT` |
//!
//! Duplicate tx ids follow Fabric (`markTXIdDuplicates`): a transaction's tx id counts once its
//! envelope verified (tx id bound to nonce and creator, creator signed) — whatever later checks
//! decide — and a duplicate gets `DUPLICATE_TXID` *overriding* its phase-1 code. Hence the tx ids in
//! [`ValidatedBlock::tx_ids`] of transactions not marked `DUPLICATE_TXID` differ from each
//! other and from every committed one, which is what the tx index needs. Envelopes
//! that did not verify get no tx id (`None`): their claimed id is unauthenticated, and counting
//! it would let anyone squat a victim's future tx id.
//!
//! Valid transactions' writes get version `(block number, tx index)`, join the overlay, and are
//! returned in block order in [`ValidatedBlock::writes`]. Invalid transactions contribute none.
//!
//! # Promises
//!
//! - Deterministic: the result depends only on the channel, committed state, the block and
//!   `now_unix` — not on thread count or scheduling (phase 1 results are collected in order;
//!   batch verification's randomness is derived from its inputs, see `tx.rs`). The caller must
//!   pass the same `now_unix` on every peer for a given block (a value derived from the block,
//!   not the wall clock), or peers may disagree about certificate expiry.
//! - `Err` only for storage failures; every validation outcome is a code.
//! - Never panics on any block content; work per transaction is bounded by
//!   [`MAX_RWSET_ITEMS`] and [`MAX_ENDORSEMENTS`] (plus the orderer's block size limits).

mod batch;
mod mvcc;
mod tx;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mvcc;

use rayon::prelude::*;
use shared_proto::channel::Channel;
use shared_proto::pb::common::Block;
use shared_proto::pb::tx::TxValidationCode;

use crate::ledger::LedgerError;
use crate::ledger::StateReader;
use crate::ledger::StateWrite;

pub(crate) use tx::envelope_code;

/// Most reads + writes + range queries + range-query results one transaction may carry;
/// beyond, `BAD_RWSET`. Bounds phase 2's storage reads per transaction.
pub const MAX_RWSET_ITEMS: usize = 100_000;
/// Most endorsements one transaction may carry; beyond, `INVALID_ENDORSER_TRANSACTION`.
/// Bounds identity and signature checks per transaction (policies name at most 256 principals).
pub const MAX_ENDORSEMENTS: usize = 256;

/// What validation decided about a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBlock {
    /// One code per envelope in `block.data`, in order.
    pub codes: Vec<TxValidationCode>,
    /// State changes of the valid transactions only, in block order (within a transaction, in
    /// rwset order); version = (block number, tx index).
    pub writes: Vec<StateWrite>,
    /// Each envelope's tx id, when its envelope verified (see the module doc); `None` otherwise.
    pub tx_ids: Vec<Option<String>>,
}

impl ValidatedBlock {
    /// The codes as `transactions_filter` bytes (`shared_proto::block::set_validation_codes`).
    pub fn filter_bytes(&self) -> Vec<u8> {
        self.codes.iter().map(|c| code_byte(*c)).collect()
    }
}

/// A code as its one-byte `transactions_filter` value (every `TxValidationCode` fits).
pub fn code_byte(code: TxValidationCode) -> u8 {
    u8::try_from(code as i32).unwrap_or(u8::MAX)
}

/// Validates every transaction of `block` against `channel` and committed `state` (see the
/// module doc). `Err` only when `state` fails.
pub fn validate_block(
    channel: &Channel,
    state: &dyn StateReader,
    block: &Block,
    now_unix: i64,
) -> Result<ValidatedBlock, LedgerError> {
    validate_in_order(state, prevalidate(channel, block, now_unix))
}

/// A block through phase 1: every check that depends only on the transaction and the channel
/// (decode, signatures, endorsement policy). Reads no state.
#[derive(Debug)]
pub struct Prevalidated {
    block_num: u64,
    checked: Vec<tx::CheckedTx>,
}

/// Phase 1 of [`validate_block`]. Reads no state, so it may run while the previous block is
/// still being committed; it must run under the config in force for `block`.
pub fn prevalidate(channel: &Channel, block: &Block, now_unix: i64) -> Prevalidated {
    let block_num = block.header.as_ref().map_or(0, |h| h.number);
    let envelopes = shared_proto::block::tx_envelopes(block);
    let prepared: Vec<tx::Prepared> = envelopes
        .par_iter()
        .map(|bytes| tx::prepare_tx(channel, bytes, now_unix))
        .collect();
    let batch_ok = batch::verify_block_signatures(&prepared);
    let checked = prepared
        .into_par_iter()
        .zip(batch_ok)
        .map(|(p, ok)| tx::finish_tx(channel, p, ok, now_unix))
        .collect();
    Prevalidated { block_num, checked }
}

/// Phase 2 of [`validate_block`] (duplicate tx ids, MVCC), against `state` as every earlier
/// block left it. `Err` only when `state` fails.
pub fn validate_in_order(
    state: &dyn StateReader,
    prevalidated: Prevalidated,
) -> Result<ValidatedBlock, LedgerError> {
    mvcc::validate_in_order(state, prevalidated.block_num, prevalidated.checked)
}
