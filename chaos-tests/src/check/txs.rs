//! Where each transaction ended up in the final chain ([`ChainIndex`]), and the checker that
//! every acked transaction is there ([`acked_not_lost`]).

use std::collections::HashMap;

use shared_proto::block;

use super::first_few;
use super::ChainView;
use super::Check;
use crate::history::History;

/// One copy of a transaction in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPlace {
    pub block: u64,
    /// Position among the block's transactions.
    pub index: usize,
    /// The validation code a peer recorded for this copy (`TxValidationCode` as i32); `None`
    /// when no collected peer holds this block.
    pub code: Option<i32>,
}

/// Every tx id of the final chain and where its copies are, with the peers' validation codes.
///
/// The reference chain is the longest orderer chain (the ordered truth: what was acked must be
/// there, whatever the peers did); with no orderer chain, the longest peer chain. Codes come
/// from the longest peer chain, for the blocks whose header hash matches the reference's (a
/// forked peer's codes describe other blocks). Block 0, the genesis config, is left out.
#[derive(Debug, Clone, Default)]
pub struct ChainIndex {
    /// Which member's chain is the reference, and its height.
    pub reference: String,
    pub height: u64,
    places: HashMap<String, Vec<TxPlace>>,
    extra_copies: u64,
}

impl ChainIndex {
    /// The index of the final chain from what was collected of every orderer and peer.
    pub fn new(orderers: &[ChainView], peers: &[ChainView]) -> Self {
        let longest = |chains: &'_ [ChainView]| -> Option<usize> {
            (0..chains.len()).max_by_key(|&i| (chains[i].height(), std::cmp::Reverse(i)))
        };
        let reference = longest(orderers)
            .map(|i| &orderers[i])
            .or_else(|| longest(peers).map(|i| &peers[i]));
        let Some(reference) = reference else {
            return ChainIndex::default();
        };
        let codes_from = longest(peers).map(|i| &peers[i]);
        Self::from_chain(reference, codes_from)
    }

    /// The index of `reference`, with codes from `codes_from` (which may be `reference`
    /// itself, when it is a peer's copy).
    pub fn from_chain(reference: &ChainView, codes_from: Option<&ChainView>) -> Self {
        let mut places: HashMap<String, Vec<TxPlace>> = HashMap::new();
        let mut extra_copies = 0;
        for (number, b) in reference.blocks.iter().enumerate().skip(1) {
            let annotated = codes_from
                .and_then(|p| p.blocks.get(number))
                .filter(|p| same_header(p, b));
            let codes = annotated.map(block::validation_codes).unwrap_or_default();
            for (index, env) in block::tx_envelopes(b).iter().enumerate() {
                let Some(id) = peer::commit::tx_id_of(env) else {
                    continue;
                };
                let copies = places.entry(id).or_default();
                extra_copies += u64::from(!copies.is_empty());
                copies.push(TxPlace {
                    block: number as u64,
                    index,
                    code: codes.get(index).map(|c| i32::from(*c)),
                });
            }
        }
        ChainIndex {
            reference: reference.member.clone(),
            height: reference.height(),
            places,
            extra_copies,
        }
    }

    /// The first copy of `tx_id`, if the chain holds it.
    pub fn first(&self, tx_id: &str) -> Option<&TxPlace> {
        self.places.get(tx_id).and_then(|p| p.first())
    }

    /// Every copy of `tx_id`, in chain order.
    pub fn copies(&self, tx_id: &str) -> &[TxPlace] {
        self.places.get(tx_id).map_or(&[], Vec::as_slice)
    }

    pub fn contains(&self, tx_id: &str) -> bool {
        self.places.contains_key(tx_id)
    }

    /// Copies beyond the first, summed over every tx id.
    pub fn extra_copies(&self) -> u64 {
        self.extra_copies
    }

    /// Distinct tx ids in the chain.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

fn same_header(a: &shared_proto::pb::common::Block, b: &shared_proto::pb::common::Block) -> bool {
    matches!((block::header_hash(a), block::header_hash(b)), (Ok(x), Ok(y)) if x == y)
}

/// Every tx id an orderer acked is in the chain. The detail lists the first few missing ones
/// (by ack time) with the orderer that acked each and when.
pub fn acked_not_lost(history: &History, chain: &ChainIndex) -> Check {
    const NAME: &str = "acked_not_lost";
    let records = history.records();
    let acked: Vec<_> = records.iter().filter(|r| r.acked.is_some()).collect();
    let mut missing: Vec<(f64, String)> = acked
        .iter()
        .filter(|r| !chain.contains(&r.tx_id))
        .filter_map(|r| {
            let (orderer, t) = r.acked.as_ref()?;
            Some((*t, format!("{} (acked by {orderer} at {t:.2}s)", r.tx_id)))
        })
        .collect();
    if missing.is_empty() {
        return Check::pass(
            NAME,
            format!(
                "all {} acked txs are in {}'s chain (height {})",
                acked.len(),
                chain.reference,
                chain.height
            ),
        );
    }
    missing.sort_by(|a, b| a.0.total_cmp(&b.0));
    let lines: Vec<String> = missing.into_iter().map(|(_, line)| line).collect();
    Check::fail(
        NAME,
        format!(
            "{} of {} acked txs are not in {}'s chain (height {}): {}",
            lines.len(),
            acked.len(),
            chain.reference,
            chain.height,
            first_few(&lines, 3)
        ),
    )
}

#[cfg(test)]
#[path = "txs_tests.rs"]
mod tests;
