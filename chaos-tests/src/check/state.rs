//! Checkers of what the peers' state and gossip show beyond the chains: the token balances
//! conserve what was minted (a lost update is invisible to `peers_agree` when every peer
//! validates alike), and a forged block reaches no peer but the one it was sent to.

use std::collections::BTreeMap;

use super::Check;

/// One peer's balances of the workload's accounts (`Err`: why they could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancesView {
    pub member: String,
    pub balances: Result<BTreeMap<String, u64>, String>,
}

/// Holds when every peer's balances of `accounts` add up to `minted`: transfers move funds,
/// so only a non-serializable commit (two transfers validated against the same stale
/// balance) changes the sum.
pub fn balances_conserved(views: &[BalancesView], accounts: &[&str], minted: u64) -> Check {
    const NAME: &str = "balances_conserved";
    if views.is_empty() {
        return Check::fail(NAME, "no peer's balances were read");
    }
    let mut wrong = Vec::new();
    for v in views {
        let b = match &v.balances {
            Ok(b) => b,
            Err(why) => {
                wrong.push(format!("{}: balances could not be read ({why})", v.member));
                continue;
            }
        };
        let missing: Vec<&&str> = accounts.iter().filter(|a| !b.contains_key(**a)).collect();
        if !missing.is_empty() {
            wrong.push(format!("{}: no balance for {missing:?}", v.member));
            continue;
        }
        let sum: u128 = accounts.iter().map(|a| u128::from(b[*a])).sum();
        if sum != u128::from(minted) {
            wrong.push(format!(
                "{}: balances add up to {sum}, {minted} were minted ({b:?})",
                v.member
            ));
        }
    }
    if wrong.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} peers: {} accounts add up to the {minted} minted",
                views.len(),
                accounts.len()
            ),
        )
    } else {
        Check::fail(NAME, super::first_few(&wrong, 3))
    }
}

/// Holds when no peer but the targets of forged gossip refused a block (`refused`: each
/// peer's count of refused blocks; `None` when it could not be read). Honest peers push only
/// blocks they verified, so a forgery that reached another peer was relayed unverified.
/// Vacuous (holds) when nothing was forged.
pub fn forged_contained(refused: &BTreeMap<String, Option<u64>>, targets: &[String]) -> Check {
    const NAME: &str = "forged_contained";
    if targets.is_empty() {
        return Check::pass(NAME, "no forged blocks were sent");
    }
    let mut wrong = Vec::new();
    for (peer, count) in refused {
        if targets.contains(peer) {
            continue;
        }
        match count {
            None => wrong.push(format!("{peer}: refused-block count could not be read")),
            Some(0) => {}
            Some(n) => wrong.push(format!(
                "{peer} refused {n} blocks: forged blocks sent to {} reached it",
                targets.join(", ")
            )),
        }
    }
    if wrong.is_empty() {
        Check::pass(
            NAME,
            format!(
                "forged blocks refused by {} and seen by no other peer",
                targets.join(", ")
            ),
        )
    } else {
        Check::fail(NAME, super::first_few(&wrong, 3))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn view(member: &str, balances: &[(&str, u64)]) -> BalancesView {
        BalancesView {
            member: member.into(),
            balances: Ok(balances.iter().map(|(a, b)| ((*a).into(), *b)).collect()),
        }
    }

    #[test]
    fn conserved_balances_hold_and_a_lost_update_fails() {
        let accounts = ["a", "b", "c"];
        let ok = view("p0", &[("a", 90), ("b", 110), ("c", 100)]);
        assert!(balances_conserved(std::slice::from_ref(&ok), &accounts, 300).passed);
        // Two transfers from a (10 to b, 5 to c) validated against the same balance of a.
        let lost = view("p1", &[("a", 95), ("b", 110), ("c", 105)]);
        let c = balances_conserved(&[ok, lost], &accounts, 300);
        assert!(!c.passed);
        assert!(
            c.detail.contains("p1: balances add up to 310"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn unread_or_missing_balances_fail() {
        let accounts = ["a", "b"];
        let unread = BalancesView {
            member: "p0".into(),
            balances: Err("unreachable".into()),
        };
        assert!(!balances_conserved(&[unread], &accounts, 2).passed);
        assert!(!balances_conserved(&[view("p0", &[("a", 2)])], &accounts, 2).passed);
        assert!(!balances_conserved(&[], &accounts, 2).passed);
    }

    #[test]
    fn forged_blocks_refused_only_by_their_target_hold_and_elsewhere_fail() {
        let targets = vec!["Org1MSP/peer0".to_owned()];
        let mut refused = BTreeMap::from([
            ("Org1MSP/peer0".to_owned(), Some(3)),
            ("Org1MSP/peer1".to_owned(), Some(0)),
        ]);
        assert!(forged_contained(&refused, &targets).passed);
        refused.insert("Org1MSP/peer1".into(), Some(2));
        let c = forged_contained(&refused, &targets);
        assert!(!c.passed);
        assert!(c.detail.contains("Org1MSP/peer1 refused 2"), "{}", c.detail);
        refused.insert("Org1MSP/peer1".into(), None);
        assert!(!forged_contained(&refused, &targets).passed);
        assert!(forged_contained(&refused, &[]).passed);
    }
}
