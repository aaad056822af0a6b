//! Consensus (orderer flow: broadcast -> [consensus: raft log -> state machine -> cutter] ->
//! block_store -> deliver).
//!
//! One openraft group per channel. Raft entries are batches of verified envelopes, plus
//! `TimeToCut{block_number}` markers the leader proposes when the oldest pending envelope has
//! waited the batch timeout, or `QuietCut{block_number}` when it has nothing more to add. Every node applies the same committed entries through the same
//! pure [`crate::cutter`], so every node cuts the same blocks: no in-flight chain on the leader,
//! nothing to fence on leader change, fork-freedom by construction.

// openraft's storage traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

pub mod batch_timer;
pub mod dedup;
pub mod log_store;
pub mod network;
pub mod proposer;
pub mod rejoin;
pub mod snapshot;
pub mod state_machine;

#[cfg(test)]
mod scripted_raft;
#[cfg(test)]
mod test_material;

use std::io::Cursor;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

/// Longest a leader may go without a quorum's acknowledgement and still report ready: twice
/// the longest election timeout (by then the others have elected a new leader, or cannot
/// reach each other either), and at least [`QUORUM_SILENCE_MIN`] so a loaded node does not
/// flap.
pub fn quorum_silence_max(config: &openraft::Config) -> Duration {
    Duration::from_millis(config.election_timeout_max.saturating_mul(2)).max(QUORUM_SILENCE_MIN)
}

/// Floor of [`quorum_silence_max`].
pub const QUORUM_SILENCE_MIN: Duration = Duration::from_secs(1);

/// Raft node id (the `node_id` of the orderer config, pinned as a consenter).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The orderer's Raft types: entries carry [`Request`]s.
    pub TypeConfig:
        D = Request,
        R = Response,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

/// What a Raft entry asks the state machine to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Envelopes the leader received (already verified), in the order they are to be cut.
    Envelopes(Vec<serde_bytes::ByteBuf>),
    /// Cut the pending envelopes into block `block_number`, if it is still the next block.
    /// A stale marker (the block was already cut by count or size) does nothing.
    TimeToCut { block_number: u64 },
    /// Cut the pending envelopes into block `block_number`, if it is still the next block,
    /// because the leader had nothing more on its way to the log (the quiet cut of
    /// [`batch_timer`]). Applied as `TimeToCut`; only the recorded reason differs.
    QuietCut { block_number: u64 },
}

/// What applying an entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Blocks cut while applying this entry.
    pub blocks_cut: u32,
    /// Envelopes refused by the cutter (larger than `bytes_absolute_max`).
    pub envelopes_refused: u32,
    /// Positions (in the entry) of the refused envelopes: they must not be answered SUCCESS.
    pub refused_at: Vec<u32>,
    /// Envelopes dropped because their tx id was accepted recently (a client's retry).
    pub duplicates_dropped: u32,
    /// Config updates refused when applied (position, why), e.g. one built on a sequence
    /// another update changed first. Also listed in `refused_at`.
    pub config_refused: Vec<(u32, String)>,
    /// The block envelopes wait in after this entry of envelopes, if any wait (the leader's
    /// batch timer counts their wait from when it received this entry's first envelope).
    pub pending_in: Option<u64>,
}

/// Encodes values stored on disk or sent between orderers (postcard, versioned by prefix byte).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![CODEC_VERSION];
    out.extend(postcard::to_stdvec(value)?);
    Ok(out)
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&CODEC_VERSION, rest)) => postcard::from_bytes(rest).map_err(CodecError::Postcard),
        Some((v, _)) => Err(CodecError::Version(*v)),
        None => Err(CodecError::Empty),
    }
}

const CODEC_VERSION: u8 = 1;

/// A stored or received value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown encoding version {0}")]
    Version(u8),
    #[error(transparent)]
    Postcard(postcard::Error),
}
