//! Block-level signature batching: the signatures every transaction of a block needs
//! verified (creator + endorsements) are verified in ed25519 batches of about
//! [`BATCH_SIGNATURES`], in parallel, instead of one small batch per transaction. A batch's
//! multi-scalar multiplication costs much less per signature at 64 than at 3.
//!
//! Chunks are cut at transaction boundaries in block order, so every peer forms the same
//! batches for the same block. A batch is `shared_proto::signature_batch::verify_batch`: its
//! equation is cofactored, so its verdict does not depend on its random coefficients (but for
//! a 2^-128 chance) and every peer reaches the same one; it sums the terms of each endorser's
//! key first, and a block's endorsers are few; it refuses a chunk holding a signature a strict
//! check alone refuses and a batch may not (a small-order key or `R`). A refused chunk only
//! says "some signature in here may be bad": each of its transactions is then checked on its
//! own (`tx::finish_tx`).

use ed25519_dalek::Signature;
use ed25519_dalek::VerifyingKey;
use rayon::prelude::*;
use shared_proto::signature_batch;

use super::tx::Prepared;

/// Signatures per batch (a chunk closes once it holds at least this many).
pub const BATCH_SIGNATURES: usize = 64;

/// For each transaction: whether every signature it put into the block's batches verified.
/// Transactions with nothing to batch get `true` (their own checks decide).
pub(super) fn verify_block_signatures(prepared: &[Prepared]) -> Vec<bool> {
    let items: Vec<Vec<(&[u8], Signature, VerifyingKey)>> =
        prepared.par_iter().map(Prepared::batch_items).collect();
    let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, tx_items) in items.iter().enumerate() {
        count += tx_items.len();
        if count >= BATCH_SIGNATURES {
            chunks.push(start..i + 1);
            (start, count) = (i + 1, 0);
        }
    }
    if start < items.len() {
        chunks.push(start..items.len());
    }
    let verdicts: Vec<bool> = chunks
        .par_iter()
        .map(|range| {
            let all = items[range.clone()].iter().flatten();
            let messages: Vec<&[u8]> = all.clone().map(|(m, _, _)| *m).collect();
            let signatures: Vec<Signature> = all.clone().map(|(_, s, _)| *s).collect();
            let keys: Vec<VerifyingKey> = all.map(|(_, _, k)| *k).collect();
            match messages.len() {
                0 => true,
                1 => keys[0].verify_strict(messages[0], &signatures[0]).is_ok(),
                _ => signature_batch::verify_batch(&messages, &signatures, &keys),
            }
        })
        .collect();
    let mut out = vec![true; prepared.len()];
    for (range, ok) in chunks.iter().zip(verdicts) {
        for slot in &mut out[range.clone()] {
            *slot = ok;
        }
    }
    out
}
