//! Agreement checkers: peers decided alike ([`peers_agree`]), nodes ended with one config
//! ([`config_agree`]), and the network served again after the faults healed
//! ([`live_after_heal`]).

use std::collections::BTreeMap;

use shared_proto::block;
use shared_proto::channel::Channel;

use super::first_few;
use super::ChainView;
use super::Check;

/// What one peer decided: its height, the validation codes of each of its blocks and its state
/// hash (hex, as its ops `/status` reports it) at that height.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStateView {
    pub member: String,
    pub height: u64,
    /// Per block from block 0: one `TxValidationCode` (as i32) per transaction.
    pub codes: Vec<Vec<i32>>,
    pub state_hash: String,
}

impl PeerStateView {
    /// The view of a peer's chain, with the state hash it reported at `chain.height()`.
    pub fn from_chain(chain: &ChainView, state_hash: &str) -> Self {
        PeerStateView {
            member: chain.member.clone(),
            height: chain.height(),
            codes: chain
                .blocks
                .iter()
                .map(|b| {
                    block::validation_codes(b)
                        .iter()
                        .map(|c| i32::from(*c))
                        .collect()
                })
                .collect(),
            state_hash: state_hash.to_owned(),
        }
    }
}

/// One node's channel config: its sequence and its consenter set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigView {
    pub member: String,
    pub sequence: u64,
    /// Each consenter as [`consenter_names`] writes it, sorted.
    pub consenters: Vec<String>,
}

/// The consenters of `channel` as `id:MSP@host:port`, sorted by id (certificates left out: a
/// replaced certificate shows as a new sequence).
pub fn consenter_names(channel: &Channel) -> Vec<String> {
    let mut consenters: Vec<_> = channel.consenters().iter().collect();
    consenters.sort_by_key(|c| c.id);
    consenters
        .into_iter()
        .map(|c| format!("{}:{}@{}:{}", c.id, c.msp_id, c.host, c.port))
        .collect()
}

/// Peers recorded identical validation codes for every block they both hold, and peers at the
/// same height report the same state hash. The detail names the first block (or height) and
/// the two peers that differ.
pub fn peers_agree(peers: &[PeerStateView]) -> Check {
    const NAME: &str = "peers_agree";
    let Some(longest) = peers.iter().max_by_key(|p| p.height) else {
        return Check::fail(NAME, "no peer state was collected");
    };
    for number in 0..longest.codes.len() {
        let mut first: Option<(&str, &Vec<i32>)> = None;
        for p in peers {
            let Some(codes) = p.codes.get(number) else {
                continue;
            };
            match first {
                None => first = Some((&p.member, codes)),
                Some((member, c)) if c != codes => {
                    return Check::fail(
                        NAME,
                        format!(
                            "block {number}: {member} recorded codes {}, {} recorded {}",
                            codes_text(c),
                            p.member,
                            codes_text(codes)
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
    let mut by_height: BTreeMap<u64, Vec<&PeerStateView>> = BTreeMap::new();
    for p in peers {
        by_height.entry(p.height).or_default().push(p);
    }
    let mut compared = 0;
    for (height, same) in &by_height {
        let Some((first, rest)) = same.split_first() else {
            continue;
        };
        for p in rest {
            if p.state_hash != first.state_hash || p.state_hash.is_empty() {
                return Check::fail(
                    NAME,
                    format!(
                        "height {height}: {} has state hash {:?}, {} has {:?}",
                        first.member,
                        short_hex(&first.state_hash),
                        p.member,
                        short_hex(&p.state_hash)
                    ),
                );
            }
            compared += 1;
        }
    }
    let heights: Vec<String> = peers
        .iter()
        .map(|p| format!("{}={}", p.member, p.height))
        .collect();
    Check::pass(
        NAME,
        format!(
            "codes agree on every shared block; {compared} state hash comparisons at equal heights ({})",
            heights.join(", ")
        ),
    )
}

fn codes_text(codes: &[i32]) -> String {
    let shown: Vec<String> = codes.iter().take(16).map(ToString::to_string).collect();
    let more = if codes.len() > 16 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(","))
}

fn short_hex(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Every node reports the same config sequence and consenter set. The detail names the first
/// node that differs from the first one and both configs.
pub fn config_agree(configs: &[ConfigView]) -> Check {
    const NAME: &str = "config_agree";
    let Some((first, rest)) = configs.split_first() else {
        return Check::fail(NAME, "no config was collected");
    };
    for c in rest {
        if c.sequence != first.sequence || c.consenters != first.consenters {
            return Check::fail(
                NAME,
                format!(
                    "{} is at sequence {} with consenters [{}]; {} is at sequence {} with [{}]",
                    c.member,
                    c.sequence,
                    first_few(&c.consenters, 8),
                    first.member,
                    first.sequence,
                    first_few(&first.consenters, 8)
                ),
            );
        }
    }
    Check::pass(
        NAME,
        format!(
            "{} nodes at sequence {} with {} consenters",
            configs.len(),
            first.sequence,
            first.consenters.len()
        ),
    )
}

/// [`live_after_heal`]'s verdict and report.json's `liveness_after_heal_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    pub check: Check,
    /// From the heal to the first VALID commit after it; when there was none, the time
    /// observed after the heal.
    pub seconds: f64,
}

/// A transaction committed VALID within `bound_s` of `healed_at_s` (the last fault's heal).
/// `commit_times` are (commit time, latency) in seconds since the run started, as
/// `History::commit_times` gives them; `observed_until_s` is when the run stopped looking.
pub fn live_after_heal(
    healed_at_s: f64,
    commit_times: &[(f64, f64)],
    bound_s: f64,
    observed_until_s: f64,
) -> Liveness {
    const NAME: &str = "live_after_heal";
    let first = commit_times
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| t.is_finite() && *t >= healed_at_s)
        .min_by(f64::total_cmp);
    match first {
        Some(t) if t - healed_at_s <= bound_s => Liveness {
            check: Check::pass(
                NAME,
                format!(
                    "first commit {:.2}s after the heal at {healed_at_s:.2}s (bound {bound_s:.1}s)",
                    t - healed_at_s
                ),
            ),
            seconds: t - healed_at_s,
        },
        Some(t) => Liveness {
            check: Check::fail(
                NAME,
                format!(
                    "first commit {:.2}s after the heal at {healed_at_s:.2}s, beyond the bound of {bound_s:.1}s",
                    t - healed_at_s
                ),
            ),
            seconds: t - healed_at_s,
        },
        None => {
            let waited = (observed_until_s - healed_at_s).max(0.0);
            Liveness {
                check: Check::fail(
                    NAME,
                    format!(
                        "no commit in the {waited:.2}s observed after the heal at {healed_at_s:.2}s (bound {bound_s:.1}s)"
                    ),
                ),
                seconds: waited,
            }
        }
    }
}

#[cfg(test)]
#[path = "agree_tests.rs"]
mod tests;
