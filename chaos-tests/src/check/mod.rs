//! Invariant checkers (chaos run: workload → faults → history → [checks] → report).
//!
//! At the end of a scenario, once the faults have healed and the network has settled, the
//! runner collects what every node holds ([`collect`]: each orderer's and each peer's chain,
//! each peer's validation codes and state hash, each node's config) and decides each property
//! of report.json's `checks` from it and the [`crate::history::History`]:
//!
//! | checker | holds when | fed by |
//! |---|---|---|
//! | [`no_fork`] | every member has the same header hash at every height (and, unless [`Lag`] allows it, the same height) | [`ChainView`]s |
//! | [`chain_valid`] | every chain numbers from 0, links previous hashes, matches data hashes and carries orderer signatures that satisfy `BlockValidation` under the config in force, config blocks included | [`ChainView`]s |
//! | [`acked_not_lost`] | every tx id an orderer acked is in the chain | history, [`ChainIndex`] |
//! | [`no_duplicates`] | no tx id appears twice in any chain | [`ChainView`]s |
//! | [`peers_agree`] | peers have identical validation codes per block and, at equal heights, equal state hashes | [`PeerStateView`]s |
//! | [`config_agree`] | every node has the same config sequence and consenter set | [`ConfigView`]s |
//! | [`live_after_heal`] | a transaction committed VALID within a bound after the last heal | history's commit times |
//! | [`balances_conserved`] | every peer's token balances of the workload's accounts add up to what was minted | [`BalancesView`]s |
//! | [`forged_contained`] | no peer but the one forged gossip blocks were sent to refused a block | each peer's `blocks_refused` metric |
//!
//! Every checker returns a [`Check`] whose `detail` names the first offending member, height or
//! tx, so a failed run says where to look. Promises: checkers are pure (no IO, no clock) and
//! never panic on any input, malformed blocks included: a block the checker cannot read is a
//! failed check, not a crash.

mod agree;
mod chain;
pub mod collect;
pub mod probe;
mod state;
mod txs;

#[cfg(test)]
mod fixture;

pub use agree::config_agree;
pub use agree::consenter_names;
pub use agree::live_after_heal;
pub use agree::peers_agree;
pub use agree::ConfigView;
pub use agree::Liveness;
pub use agree::PeerStateView;
pub use chain::chain_valid;
pub use chain::no_duplicates;
pub use chain::no_fork;
pub use chain::verify_chain;
pub use chain::ChainFault;
pub use chain::Lag;
pub use chain::VerifiedChain;
pub use state::balances_conserved;
pub use state::forged_contained;
pub use state::BalancesView;
pub use txs::acked_not_lost;
pub use txs::ChainIndex;
pub use txs::TxPlace;

use shared_proto::pb::common::Block;

/// One property's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// report.json's key for it (`no_fork`, `chain_valid`, ...).
    pub name: &'static str,
    pub passed: bool,
    /// Why: the first offending member, height or tx when it fails; what was compared when it
    /// holds.
    pub detail: String,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            passed: true,
            detail: detail.into(),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            passed: false,
            detail: detail.into(),
        }
    }
}

/// The blocks one member (orderer or peer) holds, from block 0 in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainView {
    /// The node's name (`orderer1`, `Org1MSP/peer0`).
    pub member: String,
    pub blocks: Vec<Block>,
}

impl AsRef<ChainView> for ChainView {
    fn as_ref(&self) -> &ChainView {
        self
    }
}

impl ChainView {
    pub fn height(&self) -> u64 {
        self.blocks.len() as u64
    }
}

/// The first characters of a hex hash: enough to tell two apart in a detail line.
fn short(hash: &[u8]) -> String {
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// At most `max` items of a list, then how many more.
fn first_few<T: std::fmt::Display>(items: &[T], max: usize) -> String {
    let shown: Vec<String> = items.iter().take(max).map(ToString::to_string).collect();
    match items.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
