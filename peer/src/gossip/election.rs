//! Leader election per channel and org: which orderer-connected peer pulls from the orderers.
//!
//! Every peer runs the same pure rule on its own view of the alive members, so views that
//! agree give one leader, without a voting round:
//!
//! 1. Candidates are the alive members configured to connect to the orderers (and this peer,
//!    if it is one). A candidate more than `lag` blocks behind the highest candidate is not
//!    eligible: a freshly started, empty peer never takes the org over (the weakness Fabric's
//!    own RFC lists for its id-based election).
//! 2. If eligible candidates claim leadership already, the lowest id among them keeps it
//!    (incumbency: a caught-up newcomer does not cause a hand-over).
//! 3. Otherwise the eligible candidate with the highest height leads, ties broken by lowest id.
//!
//! A leader that dies stops sending alive messages and is dropped at expiry; one that falls
//! more than `lag` blocks behind loses eligibility. Either way rule 3 picks the successor.

/// One candidate as seen from this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub height: u64,
    /// Claims to be the leader now.
    pub claims: bool,
}

/// The id of the leader the rule picks, if there is any candidate.
pub fn leader<'a>(candidates: &[Candidate<'a>], lag: u64) -> Option<&'a str> {
    let top = candidates.iter().map(|c| c.height).max()?;
    let eligible = candidates
        .iter()
        .filter(|c| c.height.saturating_add(lag) >= top);
    let claimant = eligible
        .clone()
        .filter(|c| c.claims)
        .min_by(|a, b| a.id.cmp(b.id));
    if let Some(c) = claimant {
        return Some(c.id);
    }
    eligible
        .min_by(|a, b| b.height.cmp(&a.height).then_with(|| a.id.cmp(b.id)))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, height: u64, claims: bool) -> Candidate<'_> {
        Candidate { id, height, claims }
    }

    #[test]
    fn highest_height_wins_ties_by_lowest_id() {
        assert_eq!(
            leader(
                &[c("b", 10, false), c("a", 10, false), c("c", 12, false)],
                10
            ),
            Some("c")
        );
        assert_eq!(
            leader(&[c("b", 10, false), c("a", 10, false)], 10),
            Some("a")
        );
        assert_eq!(leader(&[], 10), None);
    }

    #[test]
    fn incumbent_keeps_leadership_against_caught_up_lower_id() {
        assert_eq!(
            leader(&[c("a", 100, false), c("b", 100, true)], 10),
            Some("b")
        );
        assert_eq!(
            leader(&[c("a", 105, false), c("b", 100, true)], 10),
            Some("b")
        );
    }

    #[test]
    fn fresh_low_id_peer_far_behind_never_wins() {
        assert_eq!(
            leader(&[c("a", 1, false), c("z", 500, false)], 10),
            Some("z")
        );
        assert_eq!(
            leader(&[c("a", 1, true), c("z", 500, false)], 10),
            Some("z")
        );
    }

    #[test]
    fn leader_that_falls_behind_hands_over() {
        assert_eq!(
            leader(&[c("a", 50, true), c("b", 61, false)], 10),
            Some("b")
        );
    }

    #[test]
    fn two_claimants_after_a_partition_settle_on_lowest_id() {
        assert_eq!(leader(&[c("b", 70, true), c("a", 70, true)], 10), Some("a"));
    }
}
