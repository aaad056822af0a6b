//! Deciding whether a set of signers satisfies a policy.
//!
//! A signature policy is satisfied iff its leaves (principals) can be given *distinct* signers
//! so that the tree of `OutOf` thresholds holds. Unlike Fabric's greedy evaluation (which can
//! answer "no" when a different choice would have worked), this is an exact search:
//!
//! 1. signers are deduplicated by certificate hash (the first occurrence wins), and signers
//!    matching no principal of the policy are dropped;
//! 2. the remaining signers are grouped into classes by the set of distinct principals they
//!    match; signers of one class are interchangeable, so the search tracks a count per class
//!    (no limit on the number of signers, and no symmetric re-tries);
//! 3. the policy is compiled: unsatisfiable leaves and gates are removed, single-child gates
//!    collapsed, children sorted so that identical siblings are adjacent (a skipped child's
//!    identical siblings are skipped too);
//! 4. a depth-first search picks, for each needed child, one class with signers left; it prunes
//!    when the pending goals need more signers than remain, or when a gate's remaining children
//!    cannot reach its threshold even ignoring conflicts.
//!
//! Common policies take a few dozen steps. The work is capped at [`MAX_SEARCH_WORK`]; past it
//! the evaluation answers "not satisfied" (fail closed). Hand-built policies outside the
//! parser's limits ([`MAX_DEPTH`], [`MAX_PRINCIPALS`], `1 <= n <= rules`) count as not
//! satisfied.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{MetaRule, Policy, Principal, SignaturePolicy, MAX_DEPTH, MAX_PRINCIPALS};
use crate::msp::Role;

/// Cap on the work (search steps plus pruning checks) of one signature-policy evaluation. A
/// policy that needs more is reported as not satisfied; no policy the parser accepts with
/// realistic signer sets gets near it.
pub const MAX_SEARCH_WORK: u64 = 1 << 20;

/// A verified signature's identity. Two signers with the same `id` are one signer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signer {
    /// SHA-256 of the signer's certificate (DER).
    pub id: [u8; 32],
    /// The org (MSP) that issued the certificate.
    pub msp_id: String,
    /// The role the certificate carries.
    pub role: Role,
}

impl Signer {
    /// A signer whose `id` is the SHA-256 of `cert_der`.
    pub fn from_certificate(cert_der: &[u8], msp_id: impl Into<String>, role: Role) -> Self {
        Signer {
            id: Sha256::digest(cert_der).into(),
            msp_id: msp_id.into(),
            role,
        }
    }
}

/// What implicit-meta policies are evaluated against: the channel's orgs and their policies.
pub trait PolicyContext {
    /// The MSP ids of the orgs the rule ranges over (duplicates are ignored).
    fn org_ids(&self) -> Vec<String>;
    /// The policy named `name` of org `msp_id`, if it has one.
    fn org_policy(&self, msp_id: &str, name: &str) -> Option<Policy>;
}

impl Policy {
    /// Whether `signers` satisfy this policy.
    ///
    /// Implicit-meta: each org's sub-policy is evaluated on its own against all signers; a
    /// missing sub-policy, or one that is itself implicit-meta (which would allow loops), is
    /// not satisfied. `ANY`: at least one org; `ALL`: every org, and at least one org exists;
    /// `MAJORITY`: strictly more than half of the orgs.
    pub fn evaluate(&self, signers: &[Signer], ctx: &dyn PolicyContext) -> bool {
        let (rule, sub_policy) = match self {
            Policy::Signature(policy) => return policy.evaluate(signers),
            Policy::ImplicitMeta { rule, sub_policy } => (*rule, sub_policy),
        };
        let mut orgs = ctx.org_ids();
        orgs.sort_unstable();
        orgs.dedup();
        let total = orgs.len();
        let needed = match rule {
            MetaRule::Any => 1,
            MetaRule::All => total,
            MetaRule::Majority => total / 2 + 1,
        };
        if total == 0 {
            return false;
        }
        let mut satisfied = 0;
        for (i, org) in orgs.iter().enumerate() {
            let ok = match ctx.org_policy(org, sub_policy) {
                Some(Policy::Signature(policy)) => policy.evaluate(signers),
                Some(Policy::ImplicitMeta { .. }) | None => false,
            };
            if ok {
                satisfied += 1;
                if satisfied >= needed {
                    return true;
                }
            } else if satisfied + (total - i - 1) < needed {
                return false;
            }
        }
        false
    }
}

impl SignaturePolicy {
    /// Whether `signers` satisfy this policy, each distinct signer (by `id`) counting for at
    /// most one principal across the whole policy. Exact within [`MAX_SEARCH_WORK`].
    pub fn evaluate(&self, signers: &[Signer]) -> bool {
        self.evaluate_with_work(signers).0.unwrap_or(false)
    }

    /// The exact answer (`None` if the work cap was reached) and the work it took.
    pub(super) fn evaluate_with_work(&self, signers: &[Signer]) -> (Option<bool>, u64) {
        if !within_limits(self) {
            return (Some(false), 0);
        }
        let classes = SignerClasses::new(self, signers);
        let root = compile(self, &classes);
        let mut search = Search {
            classes_of: &classes.classes_of,
            free: classes.counts.iter().sum(),
            remaining: classes.counts,
            pending: 0,
            work: 0,
            goals: Vec::new(),
        };
        search.push(Goal::Node(&root));
        let answer = search.solve().ok();
        (answer, search.work)
    }
}

/// Whether a (possibly hand-built) policy stays within the parser's depth and size limits.
fn within_limits(policy: &SignaturePolicy) -> bool {
    let mut stack = vec![(policy, 0usize)];
    let mut principals = 0usize;
    while let Some((node, depth)) = stack.pop() {
        match node {
            SignaturePolicy::SignedBy(_) => {
                principals += 1;
                if principals > MAX_PRINCIPALS {
                    return false;
                }
            }
            SignaturePolicy::OutOf { rules, .. } => {
                if depth >= MAX_DEPTH {
                    return false;
                }
                stack.extend(rules.iter().map(|r| (r, depth + 1)));
            }
        }
    }
    true
}

/// The relevant signers, grouped by which distinct principals they match.
#[derive(Debug)]
struct SignerClasses<'p> {
    /// Distinct principals of the policy, and their index.
    index: HashMap<&'p Principal, usize>,
    /// For each principal, the classes whose signers match it, most specific class first.
    classes_of: Vec<Vec<usize>>,
    /// Number of distinct signers in each class.
    counts: Vec<usize>,
}

impl<'p> SignerClasses<'p> {
    fn new(policy: &'p SignaturePolicy, signers: &[Signer]) -> Self {
        let mut index = HashMap::new();
        let mut principals: Vec<&Principal> = Vec::new();
        let mut by_msp: HashMap<&str, Vec<usize>> = HashMap::new();
        for p in policy.principals() {
            index.entry(p).or_insert_with(|| {
                by_msp.entry(&p.msp_id).or_default().push(principals.len());
                principals.push(p);
                principals.len() - 1
            });
        }
        let mut seen = HashSet::new();
        let mut class_of_set: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut sets: Vec<Vec<usize>> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for signer in signers {
            if !seen.insert(signer.id) {
                continue;
            }
            let matched: Vec<usize> = by_msp
                .get(signer.msp_id.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| {
                    principals
                        .get(i)
                        .is_some_and(|p| p.role.matches(signer.role))
                })
                .collect();
            if matched.is_empty() {
                continue;
            }
            if let Some(&class) = class_of_set.get(&matched) {
                if let Some(count) = counts.get_mut(class) {
                    *count += 1;
                }
            } else {
                class_of_set.insert(matched.clone(), counts.len());
                sets.push(matched);
                counts.push(1);
            }
        }
        let mut classes_of = vec![Vec::new(); principals.len()];
        for (class, set) in sets.iter().enumerate() {
            for &p in set {
                if let Some(list) = classes_of.get_mut(p) {
                    list.push(class);
                }
            }
        }
        for list in &mut classes_of {
            list.sort_by_key(|&class| sets.get(class).map_or(0, Vec::len));
        }
        SignerClasses {
            index,
            classes_of,
            counts,
        }
    }
}

/// A policy reduced to what the present signers could possibly satisfy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    /// Cannot be satisfied by these signers.
    Never,
    /// A principal (index into `classes_of`) that some signer matches.
    Leaf(usize),
    /// At least `n` of `children` (2 or more, sorted, none `Never`, `n <= children.len()`);
    /// `min_need` is a lower bound on the signers that takes.
    Gate {
        n: usize,
        min_need: usize,
        children: Vec<Node>,
    },
}

impl Node {
    /// A lower bound on the distinct signers needed to satisfy this node.
    fn min_need(&self) -> usize {
        match self {
            Node::Never => usize::MAX / 2,
            Node::Leaf(_) => 1,
            Node::Gate { min_need, .. } => *min_need,
        }
    }
}

/// Compiles `policy` against the signer classes. Recursion depth is bounded by [`MAX_DEPTH`].
fn compile(policy: &SignaturePolicy, classes: &SignerClasses<'_>) -> Node {
    match policy {
        SignaturePolicy::SignedBy(p) => match classes.index.get(p) {
            Some(&i) if classes.classes_of.get(i).is_some_and(|c| !c.is_empty()) => Node::Leaf(i),
            _ => Node::Never,
        },
        SignaturePolicy::OutOf { n, rules } => {
            let n = *n;
            let mut children: Vec<Node> = rules
                .iter()
                .map(|rule| compile(rule, classes))
                .filter(|node| *node != Node::Never)
                .collect();
            if n == 0 || children.len() < n {
                // n == 0 is outside the language: fail closed rather than be trivially true.
                return Node::Never;
            }
            if children.len() == 1 {
                return children.pop().unwrap_or(Node::Never);
            }
            let mut needs: Vec<usize> = children.iter().map(Node::min_need).collect();
            needs.sort_unstable();
            let min_need = needs.iter().take(n).sum();
            children.sort();
            Node::Gate {
                n,
                min_need,
                children,
            }
        }
    }
}

/// An obligation of the search.
#[derive(Debug, Clone, Copy)]
enum Goal<'n> {
    /// Satisfy this node.
    Node(&'n Node),
    /// Satisfy `need` more of `children[next..]`.
    Pick {
        children: &'n [Node],
        next: usize,
        need: usize,
    },
}

impl Goal<'_> {
    /// A lower bound on the distinct signers this goal needs.
    fn need(&self) -> usize {
        match self {
            Goal::Node(node) => node.min_need(),
            Goal::Pick { need, .. } => *need,
        }
    }
}

/// The work cap was reached.
#[derive(Debug)]
struct OutOfWork;

/// Depth-first search for an assignment of distinct signers.
#[derive(Debug)]
struct Search<'n> {
    /// For each principal, the classes that match it.
    classes_of: &'n [Vec<usize>],
    /// Unused signers per class.
    remaining: Vec<usize>,
    /// Sum of `remaining`.
    free: usize,
    /// Sum of `need()` over `goals`.
    pending: usize,
    /// Work done so far, against [`MAX_SEARCH_WORK`].
    work: u64,
    /// Obligations still to satisfy (last = next).
    goals: Vec<Goal<'n>>,
}

impl<'n> Search<'n> {
    fn push(&mut self, goal: Goal<'n>) {
        self.pending = self.pending.saturating_add(goal.need());
        self.goals.push(goal);
    }

    fn pop(&mut self) -> Option<Goal<'n>> {
        let goal = self.goals.pop()?;
        self.pending = self.pending.saturating_sub(goal.need());
        Some(goal)
    }

    /// Whether all goals can be satisfied with the remaining signers. On `Ok(false)` the
    /// state (goals, counts) is as it was on entry.
    fn solve(&mut self) -> Result<bool, OutOfWork> {
        self.work += 1;
        if self.work > MAX_SEARCH_WORK {
            return Err(OutOfWork);
        }
        if self.pending > self.free {
            return Ok(false);
        }
        let Some(goal) = self.pop() else {
            return Ok(true);
        };
        let found = self.expand(goal)?;
        if !found {
            self.push(goal);
        }
        Ok(found)
    }

    /// Tries to satisfy `goal` (already popped) and then the rest.
    fn expand(&mut self, goal: Goal<'n>) -> Result<bool, OutOfWork> {
        match goal {
            Goal::Node(Node::Never) => Ok(false),
            Goal::Node(Node::Leaf(p)) => {
                let classes: &'n [usize] = self.classes_of.get(*p).map_or(&[], Vec::as_slice);
                for &class in classes {
                    let Some(left) = self.remaining.get_mut(class) else {
                        continue;
                    };
                    if *left == 0 {
                        continue;
                    }
                    *left -= 1;
                    self.free -= 1;
                    let found = self.solve()?;
                    if let Some(left) = self.remaining.get_mut(class) {
                        *left += 1;
                    }
                    self.free += 1;
                    if found {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Goal::Node(Node::Gate { n, children, .. }) => self.then(&[Goal::Pick {
                children,
                next: 0,
                need: *n,
            }]),
            Goal::Pick { need: 0, .. } => self.solve(),
            Goal::Pick {
                children,
                next,
                need,
            } => {
                let rest = children.get(next..).unwrap_or_default();
                let Some(first) = rest.first() else {
                    return Ok(false);
                };
                if rest.len() < need {
                    return Ok(false);
                }
                // Prune if the children left cannot reach `need` even ignoring conflicts.
                // Checked on entering the gate, and while there is slack (with none, every
                // child must be satisfied anyway, and checking each step would be quadratic).
                let check = next == 0 || rest.len() > need;
                if check && self.possible_count(rest, need) < need {
                    return Ok(false);
                }
                // Take `first`...
                let take = [
                    Goal::Pick {
                        children,
                        next: next + 1,
                        need: need - 1,
                    },
                    Goal::Node(first),
                ];
                if self.then(&take)? {
                    return Ok(true);
                }
                // ... or skip it, and its identical siblings (taking one of them instead
                // would just repeat the search above).
                let same = rest.iter().skip(1).take_while(|c| *c == first).count();
                self.then(&[Goal::Pick {
                    children,
                    next: next + 1 + same,
                    need,
                }])
            }
        }
    }

    /// Pushes `goals` (in order), solves, and on failure pops them again.
    fn then(&mut self, goals: &[Goal<'n>]) -> Result<bool, OutOfWork> {
        for goal in goals {
            self.push(*goal);
        }
        let found = self.solve()?;
        if !found {
            for _ in goals {
                self.pop();
            }
        }
        Ok(found)
    }

    /// How many of `nodes` (counting up to `enough`) could each be satisfied by the remaining
    /// signers on its own, ignoring conflicts between them: an upper bound for pruning.
    fn possible_count(&mut self, nodes: &[Node], enough: usize) -> usize {
        let mut count = 0;
        let mut rest = nodes;
        while let Some(first) = rest.first() {
            // Identical siblings are adjacent and equally possible: check one per run.
            let run = rest.iter().take_while(|node| *node == first).count();
            if self.possible(first) {
                count += run;
                if count >= enough {
                    break;
                }
            }
            rest = rest.get(run..).unwrap_or_default();
        }
        count
    }

    /// Whether `node` could be satisfied by the remaining signers, ignoring that its leaves
    /// need distinct signers.
    fn possible(&mut self, node: &Node) -> bool {
        self.work += 1;
        match node {
            Node::Never => false,
            Node::Leaf(p) => self.classes_of.get(*p).is_some_and(|classes| {
                classes
                    .iter()
                    .any(|&c| self.remaining.get(c).is_some_and(|&left| left > 0))
            }),
            Node::Gate { n, children, .. } => self.possible_count(children, *n) >= *n,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn signer(id: u8, msp: &str, role: Role) -> Signer {
        Signer {
            id: [id; 32],
            msp_id: msp.to_owned(),
            role,
        }
    }

    fn sig(text: &str) -> SignaturePolicy {
        SignaturePolicy::parse(text).unwrap()
    }

    const EXAMPLE: &str = "AND('Org1.peer', OR('Org2.member', \
                           OutOf(2, 'Org3.admin', 'Org4.peer', 'Org5.client')))";

    #[test]
    fn example_policy() {
        let p = sig(EXAMPLE);
        let org1 = signer(1, "Org1", Role::Peer);
        let org2 = signer(2, "Org2", Role::Client);
        let org3 = signer(3, "Org3", Role::Admin);
        let org4 = signer(4, "Org4", Role::Peer);
        let org5 = signer(5, "Org5", Role::Client);
        assert!(p.evaluate(&[org1.clone(), org2.clone()]));
        assert!(p.evaluate(&[org3.clone(), org1.clone(), org4.clone()]));
        assert!(p.evaluate(&[org5.clone(), org4.clone(), org1.clone()]));
        assert!(
            !p.evaluate(std::slice::from_ref(&org1)),
            "the OR is unsatisfied"
        );
        assert!(
            !p.evaluate(&[org2.clone(), org3.clone(), org4.clone()]),
            "no Org1 peer"
        );
        assert!(
            !p.evaluate(&[org1.clone(), org3.clone()]),
            "OutOf(2) has only one"
        );
        let org1_client = signer(6, "Org1", Role::Client);
        assert!(
            !p.evaluate(&[org1_client, org2.clone()]),
            "Org1 client is not a peer"
        );
        let org4_admin = signer(7, "Org4", Role::Admin);
        assert!(
            !p.evaluate(&[org1, org3, org4_admin]),
            "Org4 admin is not a peer"
        );
        assert!(!p.evaluate(&[]));
    }

    #[test]
    fn nested_and_out_of() {
        let p = sig("OutOf(2, AND('A.peer', 'B.peer'), OR('C.admin', 'D.admin'), 'E.client')");
        let a = signer(1, "A", Role::Peer);
        let b = signer(2, "B", Role::Peer);
        let c = signer(3, "C", Role::Admin);
        let e = signer(5, "E", Role::Client);
        assert!(p.evaluate(&[a.clone(), b.clone(), c.clone()]));
        assert!(p.evaluate(&[c.clone(), e.clone()]));
        assert!(
            !p.evaluate(&[a.clone(), c.clone()]),
            "AND half done counts for nothing"
        );
        assert!(!p.evaluate(&[a, e.clone(), signer(6, "E", Role::Peer)]));
        assert!(p.evaluate(&[e, signer(4, "D", Role::Admin)]));
    }

    #[test]
    fn a_signer_counts_once() {
        let p = sig("OutOf(2, 'Org1.member', 'Org1.member')");
        let one = signer(1, "Org1", Role::Peer);
        assert!(!p.evaluate(std::slice::from_ref(&one)));
        assert!(
            !p.evaluate(&[one.clone(), one.clone()]),
            "same id passed twice"
        );
        // Same id with other attributes is still the same signer (first occurrence wins).
        let mut alias = one.clone();
        alias.role = Role::Admin;
        assert!(!p.evaluate(&[one.clone(), alias]));
        assert!(p.evaluate(&[one.clone(), signer(2, "Org1", Role::Client)]));
        // One signer matching two leaves satisfies only one of them.
        let both = sig("AND('Org1.peer', 'Org1.member')");
        assert!(!both.evaluate(std::slice::from_ref(&one)));
        assert!(both.evaluate(&[one, signer(3, "Org1", Role::Orderer)]));
    }

    #[test]
    fn exact_where_greedy_fails() {
        // Greedy would give the peer to 'Org1.member' and then miss 'Org1.peer'.
        let p = sig("AND(OR('Org1.member', 'Org2.admin'), OR('Org1.peer', 'Org3.peer'))");
        let peer = signer(1, "Org1", Role::Peer);
        let admin = signer(2, "Org1", Role::Admin);
        assert!(p.evaluate(&[peer.clone(), admin.clone()]));
        assert!(p.evaluate(&[admin, peer.clone()]));
        assert!(!p.evaluate(&[peer]));
        let q = sig("AND('Org1.member', OutOf(2, 'Org1.peer', 'Org1.admin', 'Org2.member'))");
        let signers = [
            signer(1, "Org1", Role::Peer),
            signer(2, "Org1", Role::Admin),
            signer(3, "Org2", Role::Orderer),
        ];
        assert!(q.evaluate(&signers));
    }
}
