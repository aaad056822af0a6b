//! Assembling, signing and verifying blocks: the one definition of when a block may join a
//! channel's chain.
//!
//! An orderer builds a block with [`new_block`] (header with the data hash, last config index
//! in the metadata, no signatures, no validation codes) and signs its own copy with
//! [`sign_block`]. A node that receives a block checks it with [`verify_block`]:
//!
//! 1. the header is present, and so are data and metadata;
//! 2. the number is the one expected;
//! 3. the previous hash: empty for block 0, otherwise 32 bytes and, when the caller knows it,
//!    equal to the previous block's header hash;
//! 4. the data hash is `hash::block_data_hash` of the data;
//! 5. there is at least one signature and at most [`MAX_BLOCK_SIGNATURES`];
//! 6. every signature entry deserializes through the channel's MSPs and verifies over
//!    `signing::block_signing_parts(channel, header hash, last config index)` — one bad or
//!    foreign entry refuses the whole block, since honest orderers never produce one;
//! 7. the valid signers satisfy the channel's `BlockValidation` policy.
//!
//! **Genesis blocks are not verified by [`verify_block`].** Block 0 of a channel is its config
//! block; it carries no signatures and is trusted because the node got it from its operator (the
//! `genesis_block` file of its config), not from the network. Check it with [`verify_genesis`],
//! which checks its shape and decodes its configuration (`channel::config_from_block`). Calling
//! [`verify_block`] with `Expected { number: 0, .. }` applies the full rules and therefore
//! refuses an unsigned genesis block with [`BlockError::NoSignatures`].
//!
//! Signatures, last config index and validation codes live in the metadata, outside the header
//! hash: copies of one block signed by different orderers, or annotated by different peers,
//! share one header hash. Promises: nothing here panics on any input, and verification never
//! re-encodes a message.

use crate::channel;
use crate::channel::Channel;
use crate::channel::ChannelError;
use crate::envelope::Refusal;
use crate::hash;
use crate::hash::Hash;
use crate::msp::MspError;
use crate::msp::SigningIdentity;
use crate::pb::common::Block;
use crate::pb::common::BlockData;
use crate::pb::common::BlockHeader;
use crate::pb::common::BlockMetadata;
use crate::pb::common::MetadataSignature;
use crate::policy::Signer;
use crate::signing;
use crate::signing::Domain;

/// Most signature entries a block may carry. Each orderer signs its own copy, so honest blocks
/// carry one (or a few); the cap bounds the work an attacker can make a verifier do.
pub const MAX_BLOCK_SIGNATURES: usize = 64;

/// What the verifier expects of the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The block number.
    pub number: u64,
    /// The previous block's header hash; `None` when unknown (e.g. the first block after a gap
    /// in a node's copy). Ignored for block 0, whose previous hash must be empty.
    pub previous_hash: Option<Hash>,
}

impl Expected {
    /// The block following a block `number` with header hash `header_hash`.
    pub fn after(number: u64, header_hash: Hash) -> Self {
        Expected {
            number: number.saturating_add(1),
            previous_hash: Some(header_hash),
        }
    }
}

/// Why a block was refused. Each variant names the block and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A header, data or metadata is missing.
    #[error("malformed block: {reason}")]
    Malformed { reason: String },
    /// The block is not the one expected next.
    #[error("expected block {expected}, got block {found}")]
    WrongNumber { expected: u64, found: u64 },
    /// The previous hash is not the previous block's header hash (or not 32 bytes, or not
    /// empty for block 0).
    #[error("block {number}: previous hash does not match the chain")]
    WrongPreviousHash { number: u64 },
    /// The header's data hash is not the hash of the block's data.
    #[error("block {number}: data hash does not match the block data")]
    DataHashMismatch { number: u64 },
    /// The metadata holds no signature.
    #[error("block {number} carries no signatures")]
    NoSignatures { number: u64 },
    /// More than [`MAX_BLOCK_SIGNATURES`] signature entries.
    #[error("block {number} carries {count} signatures; at most {max} are accepted")]
    TooManySignatures {
        number: u64,
        count: usize,
        max: usize,
    },
    /// Signature entry `index` is refused; `signer` is `MSP/common name`, or `#index` when
    /// the entry's identity did not deserialize.
    #[error("block {number}: signature {index} by {signer}: {reason}")]
    BadSignature {
        number: u64,
        index: usize,
        signer: String,
        #[source]
        reason: MspError,
    },
    /// Every signature verified, but together they do not satisfy `BlockValidation`.
    #[error("block {number}: signers do not satisfy the BlockValidation policy")]
    PolicyNotSatisfied { number: u64 },
    /// The channel's configuration could not be used (genesis block, or policy lookup).
    #[error("block {number}: channel configuration: {source}")]
    Config {
        number: u64,
        #[source]
        source: ChannelError,
    },
}

impl BlockError {
    /// How a server should answer: a malformed or out-of-place block is `InvalidArgument`, a
    /// block without acceptable signatures is `PermissionDenied`.
    pub fn refusal(&self) -> Refusal {
        match self {
            BlockError::Malformed { .. }
            | BlockError::WrongNumber { .. }
            | BlockError::WrongPreviousHash { .. }
            | BlockError::DataHashMismatch { .. }
            | BlockError::TooManySignatures { .. }
            | BlockError::Config { .. } => Refusal::InvalidArgument,
            BlockError::NoSignatures { .. }
            | BlockError::BadSignature { .. }
            | BlockError::PolicyNotSatisfied { .. } => Refusal::PermissionDenied,
        }
    }
}

fn malformed(reason: &str) -> BlockError {
    BlockError::Malformed {
        reason: reason.to_owned(),
    }
}

/// An unsigned block: header (`number`, `previous_hash`, data hash of `data`), the data (each
/// item an encoded envelope), metadata with `last_config_index`, no signatures and no
/// validation codes.
pub fn new_block(
    number: u64,
    previous_hash: Vec<u8>,
    data: Vec<Vec<u8>>,
    last_config_index: u64,
) -> Block {
    Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash: hash::block_data_hash(&data).to_vec(),
        }),
        data: Some(BlockData { data }),
        metadata: Some(BlockMetadata {
            signatures: Vec::new(),
            last_config_index,
            transactions_filter: Vec::new(),
        }),
    }
}

/// The block's header hash (what the next block's previous hash holds).
pub fn header_hash(block: &Block) -> Result<Hash, BlockError> {
    block
        .header
        .as_ref()
        .map(hash::block_header_hash)
        .ok_or_else(|| malformed("block has no header"))
}

/// The last config index recorded in the metadata (0 when there is no metadata).
pub fn last_config_index(block: &Block) -> u64 {
    block.metadata.as_ref().map_or(0, |m| m.last_config_index)
}

/// Appends `signer`'s signature over `block_signing_parts(channel_id, header hash, last config
/// index)`. A block without a header (which [`new_block`] never makes) is left unsigned; the
/// verifier refuses it as [`BlockError::Malformed`] either way.
pub fn sign_block(block: &mut Block, channel_id: &str, signer: &SigningIdentity) {
    let Ok(header_hash) = header_hash(block) else {
        return;
    };
    let parts = signing::block_signing_parts(channel_id, &header_hash, last_config_index(block));
    let signature = signer.sign(Domain::Block, &[&parts]);
    block
        .metadata
        .get_or_insert_with(BlockMetadata::default)
        .signatures
        .push(MetadataSignature {
            signer: signer.serialized().to_vec(),
            signature,
        });
}

/// Verifies a block received for `channel` at time `now_unix` (see the module doc for the
/// checks and their order) and returns its header hash. Not for genesis blocks: see
/// [`verify_genesis`].
pub fn verify_block(
    channel: &Channel,
    block: &Block,
    expected: Expected,
    now_unix: i64,
) -> Result<Hash, BlockError> {
    let header = block
        .header
        .as_ref()
        .ok_or_else(|| malformed("block has no header"))?;
    let number = header.number;
    if number != expected.number {
        return Err(BlockError::WrongNumber {
            expected: expected.number,
            found: number,
        });
    }
    check_previous_hash(header, expected.previous_hash)?;
    let data = block
        .data
        .as_ref()
        .ok_or_else(|| malformed("block has no data"))?;
    if hash::block_data_hash(&data.data).as_slice() != header.data_hash.as_slice() {
        return Err(BlockError::DataHashMismatch { number });
    }
    let metadata = block
        .metadata
        .as_ref()
        .ok_or_else(|| malformed("block has no metadata"))?;
    let count = metadata.signatures.len();
    if count == 0 {
        return Err(BlockError::NoSignatures { number });
    }
    if count > MAX_BLOCK_SIGNATURES {
        return Err(BlockError::TooManySignatures {
            number,
            count,
            max: MAX_BLOCK_SIGNATURES,
        });
    }
    let header_hash = hash::block_header_hash(header);
    let parts =
        signing::block_signing_parts(channel.id(), &header_hash, metadata.last_config_index);
    let mut signers = Vec::with_capacity(count);
    for (index, entry) in metadata.signatures.iter().enumerate() {
        let bad = |signer: String, reason: MspError| BlockError::BadSignature {
            number,
            index,
            signer,
            reason,
        };
        let identity = channel
            .msps()
            .deserialize_identity(&entry.signer, now_unix)
            .map_err(|reason| bad(format!("#{index}"), reason))?;
        identity
            .verify(Domain::Block, &[&parts], &entry.signature)
            .map_err(|reason| {
                bad(
                    format!("{}/{}", identity.msp_id, identity.common_name),
                    reason,
                )
            })?;
        signers.push(Signer {
            id: identity.id,
            msp_id: identity.msp_id,
            role: identity.role,
        });
    }
    let satisfied = channel
        .evaluate(channel::BLOCK_VALIDATION, &signers)
        .map_err(|source| BlockError::Config { number, source })?;
    if !satisfied {
        return Err(BlockError::PolicyNotSatisfied { number });
    }
    Ok(header_hash)
}

fn check_previous_hash(header: &BlockHeader, expected: Option<Hash>) -> Result<(), BlockError> {
    let number = header.number;
    let ok = if number == 0 {
        header.previous_hash.is_empty()
    } else {
        match expected {
            Some(previous) => header.previous_hash.as_slice() == previous.as_slice(),
            None => header.previous_hash.len() == std::mem::size_of::<Hash>(),
        }
    };
    if ok {
        Ok(())
    } else {
        Err(BlockError::WrongPreviousHash { number })
    }
}

/// Checks a channel's genesis block and returns the channel it configures and its header hash.
///
/// Block 0 carries no signatures: it is trusted because the node got it from its operator (its
/// config file names it), never from the network. The check is of shape, not of trust: number
/// 0, empty previous hash, data hash, exactly one `CONFIG` envelope whose configuration passes
/// `Channel::from_config_block` (via `channel::config_from_block`). The config envelope's
/// signature is not checked (its creator's certificate may have expired long ago), and any
/// signature entries in the metadata are ignored.
pub fn verify_genesis(block: &Block) -> Result<(Channel, Hash), BlockError> {
    let header = block
        .header
        .as_ref()
        .ok_or_else(|| malformed("block has no header"))?;
    if header.number != 0 {
        return Err(BlockError::WrongNumber {
            expected: 0,
            found: header.number,
        });
    }
    check_previous_hash(header, None)?;
    let data = tx_envelopes(block);
    if hash::block_data_hash(data).as_slice() != header.data_hash.as_slice() {
        return Err(BlockError::DataHashMismatch { number: 0 });
    }
    let channel = Channel::from_config_block(block)
        .map_err(|source| BlockError::Config { number: 0, source })?;
    Ok((channel, hash::block_header_hash(header)))
}

/// The block's data items (each an encoded envelope); empty when the block has no data.
pub fn tx_envelopes(block: &Block) -> &[Vec<u8>] {
    block.data.as_ref().map_or(&[], |d| d.data.as_slice())
}

/// The validation codes a peer recorded (one `tx.TxValidationCode` byte per transaction);
/// empty as cut by the orderer.
pub fn validation_codes(block: &Block) -> &[u8] {
    block
        .metadata
        .as_ref()
        .map_or(&[], |m| m.transactions_filter.as_slice())
}

/// Records validation codes, one per data item in order (the caller supplies exactly
/// `tx_envelopes(block).len()` codes). Outside the header hash and the orderers' signatures,
/// so it does not change what [`verify_block`] accepts.
pub fn set_validation_codes(block: &mut Block, codes: &[u8]) {
    block
        .metadata
        .get_or_insert_with(BlockMetadata::default)
        .transactions_filter = codes.to_vec();
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
