//! Chain checkers: one chain for everyone ([`no_fork`]), every chain valid on its own
//! ([`chain_valid`], built on [`verify_chain`]), no tx id twice ([`no_duplicates`]).

use std::collections::HashMap;

use prost::Message as _;
use shared_proto::block;
use shared_proto::block::Expected;
use shared_proto::channel::Channel;
use shared_proto::config_update;
use shared_proto::hash::Hash;
use shared_proto::msp::ANY_TIME;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Payload;

use super::first_few;
use super::short;
use super::ChainView;
use super::Check;

/// Whether a member whose chain is shorter than the longest fails [`no_fork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lag {
    /// Every member must have the same height (after the settle).
    Fails,
    /// A shorter chain is fine as long as it is a prefix of the others.
    Allowed,
    /// Only these members may be behind (e.g. a node stopped for good, or removed).
    AllowedFor(Vec<String>),
}

impl Lag {
    /// Whether `member` may be behind the longest chain.
    pub fn allows(&self, member: &str) -> bool {
        match self {
            Lag::Fails => false,
            Lag::Allowed => true,
            Lag::AllowedFor(members) => members.iter().any(|m| m == member),
        }
    }
}

/// Same header hash at every height on every member; a member behind the longest fails unless
/// `lag` allows it. A member whose block has no header counts as differing.
pub fn no_fork<C: AsRef<ChainView>>(chains: &[C], lag: &Lag) -> Check {
    const NAME: &str = "no_fork";
    if chains.is_empty() {
        return Check::fail(NAME, "no chain was collected");
    }
    let chains: Vec<&ChainView> = chains.iter().map(AsRef::as_ref).collect();
    let height_max = chains.iter().map(|c| c.height()).max().unwrap_or(0);
    for height in 0..height_max {
        // (member, hash) of the first member holding this height: what the others must match.
        let mut first: Option<(&str, Option<Hash>)> = None;
        for chain in &chains {
            let Some(b) = chain.blocks.get(height as usize) else {
                continue;
            };
            let hash = block::header_hash(b).ok();
            match &first {
                None => first = Some((&chain.member, hash)),
                Some((member, h)) if *h != hash || hash.is_none() => {
                    let show = |h: &Option<Hash>| h.map_or("no header".to_owned(), |h| short(&h));
                    return Check::fail(
                        NAME,
                        format!(
                            "fork at height {height}: {member} has {}, {} has {}",
                            show(h),
                            chain.member,
                            show(&hash)
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
    let longest = chains
        .iter()
        .find(|c| c.height() == height_max)
        .map_or("", |c| c.member.as_str());
    let behind: Vec<String> = chains
        .iter()
        .filter(|c| c.height() < height_max && !lag.allows(&c.member))
        .map(|c| format!("{} stops at height {}", c.member, c.height()))
        .collect();
    if !behind.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "{}; {longest} has height {height_max}",
                first_few(&behind, 3)
            ),
        );
    }
    Check::pass(
        NAME,
        format!(
            "{} members agree on every header hash up to height {height_max}",
            chains.len()
        ),
    )
}

/// Where and why a chain is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFault {
    pub member: String,
    pub number: u64,
    pub reason: String,
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: block {}: {}", self.member, self.number, self.reason)
    }
}

impl std::error::Error for ChainFault {}

/// What a valid chain ends with.
#[derive(Debug)]
pub struct VerifiedChain {
    /// Header hash of every block, by number.
    pub hashes: Vec<Hash>,
    /// The config in force after the last block.
    pub config: Channel,
    /// Number of the last config block (0: genesis).
    pub last_config_block: u64,
}

/// Verifies `chain` from block 0 as a node joining the channel would: block 0 by
/// `block::verify_genesis`; every later block by `block::verify_block` (number, previous hash,
/// data hash, orderer signatures under `BlockValidation`) against the config in force before
/// it, at any time (certificates that expired since are fine: validity must not depend on when
/// the check runs); its `last_config_index` names the latest config block (itself for a config
/// block); a config block's update must apply to the config before it
/// (`config_update::check_update`), and the config it makes is in force from the next block
/// on; validation codes, when present (a peer's copy), number one per transaction.
pub fn verify_chain(chain: &ChainView) -> Result<VerifiedChain, ChainFault> {
    let fault = |number: u64, reason: String| ChainFault {
        member: chain.member.clone(),
        number,
        reason,
    };
    let genesis = chain
        .blocks
        .first()
        .ok_or_else(|| fault(0, "the chain holds no block".into()))?;
    let (mut config, genesis_hash) =
        block::verify_genesis(genesis).map_err(|e| fault(0, e.to_string()))?;
    let mut hashes = vec![genesis_hash];
    let mut last_config_block = 0;
    for (position, b) in chain.blocks.iter().enumerate().skip(1) {
        let number = position as u64;
        let expected = Expected {
            number,
            previous_hash: hashes.last().copied(),
        };
        let hash = block::verify_block(&config, b, expected, ANY_TIME)
            .map_err(|e| fault(number, e.to_string()))?;
        let update = config_update_data(b);
        let named = block::last_config_index(b);
        let wanted = if update.is_some() {
            number
        } else {
            last_config_block
        };
        if named != wanted {
            return Err(fault(
                number,
                format!("last_config_index is {named}, but the latest config block is {wanted}"),
            ));
        }
        let codes = block::validation_codes(b).len();
        let txs = block::tx_envelopes(b).len();
        if codes != 0 && codes != txs {
            return Err(fault(
                number,
                format!("{codes} validation codes for {txs} transactions"),
            ));
        }
        if let Some(data) = update {
            let checked = config_update::check_update(&config, &data, ANY_TIME).map_err(|e| {
                fault(
                    number,
                    format!(
                        "config block does not apply to sequence {}: {e}",
                        config.sequence()
                    ),
                )
            })?;
            config = checked.channel;
            last_config_block = number;
        }
        hashes.push(hash);
    }
    Ok(VerifiedChain {
        hashes,
        config,
        last_config_block,
    })
}

/// The `ConfigUpdate` bytes of a config block (one `CONFIG_UPDATE` envelope), else `None`.
fn config_update_data(b: &shared_proto::pb::common::Block) -> Option<Vec<u8>> {
    let only = peer::channel_config::config_envelope(b)?;
    let envelope = Envelope::decode(only).ok()?;
    Some(Payload::decode(envelope.payload.as_slice()).ok()?.data)
}

/// Every chain passes [`verify_chain`]; the detail names the first member and block that do
/// not.
pub fn chain_valid<C: AsRef<ChainView>>(chains: &[C]) -> Check {
    const NAME: &str = "chain_valid";
    if chains.is_empty() {
        return Check::fail(NAME, "no chain was collected");
    }
    let mut sequences = Vec::new();
    for chain in chains {
        match verify_chain(chain.as_ref()) {
            Ok(v) => sequences.push(v.config.sequence()),
            Err(e) => return Check::fail(NAME, e.to_string()),
        }
    }
    let blocks: u64 = chains.iter().map(|c| c.as_ref().height()).sum();
    Check::pass(
        NAME,
        format!(
            "{} chains, {blocks} blocks verified; config sequences at the tips {:?}",
            chains.len(),
            sequences
        ),
    )
}

/// No tx id appears twice in any member's chain (block 0, the genesis config, excluded). The
/// detail names the member, the tx id and the blocks holding it.
pub fn no_duplicates<C: AsRef<ChainView>>(chains: &[C]) -> Check {
    const NAME: &str = "no_duplicates";
    let mut txs = 0usize;
    for chain in chains.iter().map(AsRef::as_ref) {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for (number, b) in chain.blocks.iter().enumerate().skip(1) {
            for env in block::tx_envelopes(b) {
                let Some(id) = peer::commit::tx_id_of(env) else {
                    continue;
                };
                if let Some(earlier) = seen.insert(id.clone(), number as u64) {
                    return Check::fail(
                        NAME,
                        format!(
                            "{}: tx {id} is in block {earlier} and again in block {number}",
                            chain.member
                        ),
                    );
                }
            }
        }
        txs = txs.max(seen.len());
    }
    Check::pass(
        NAME,
        format!(
            "{} chains checked; every tx id once (up to {txs} per chain)",
            chains.len()
        ),
    )
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
