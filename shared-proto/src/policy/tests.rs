//! Implicit-meta evaluation, org validation, text form, and property tests (parser robustness,
//! round trip, monotonicity, exactness against brute force).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn signer(id: u8, msp: &str, role: Role) -> Signer {
    Signer {
        id: [id; 32],
        msp_id: msp.to_owned(),
        role,
    }
}

/// A channel: orgs and their named policies.
#[derive(Debug, Default)]
struct Channel {
    orgs: Vec<String>,
    policies: HashMap<(String, String), Policy>,
}

impl Channel {
    /// Orgs `Org1..=Org{count}`, each with `Admins` = its admin, `Writers` = any member.
    fn new(count: usize) -> Self {
        let mut channel = Channel::default();
        for i in 1..=count {
            let org = format!("Org{i}");
            channel.set(&org, "Admins", &format!("'{org}.admin'"));
            channel.set(&org, "Writers", &format!("'{org}.member'"));
            channel.orgs.push(org);
        }
        channel
    }

    fn set(&mut self, org: &str, name: &str, text: &str) {
        let policy = Policy::parse(text).unwrap();
        self.policies
            .insert((org.to_owned(), name.to_owned()), policy);
    }
}

impl PolicyContext for Channel {
    fn org_ids(&self) -> Vec<String> {
        self.orgs.clone()
    }

    fn org_policy(&self, msp_id: &str, name: &str) -> Option<Policy> {
        self.policies
            .get(&(msp_id.to_owned(), name.to_owned()))
            .cloned()
    }
}

fn admins(orgs: &[u8]) -> Vec<Signer> {
    orgs.iter()
        .map(|&i| signer(i, &format!("Org{i}"), Role::Admin))
        .collect()
}

fn meta(text: &str, channel: &Channel, signers: &[Signer]) -> bool {
    Policy::parse(text).unwrap().evaluate(signers, channel)
}

#[test]
fn implicit_meta_any_all_majority_with_three_orgs() {
    let ch = Channel::new(3);
    assert!(meta("ANY Admins", &ch, &admins(&[2])));
    assert!(!meta("ANY Admins", &ch, &[]));
    assert!(!meta("ANY Admins", &ch, &[signer(2, "Org2", Role::Peer)]));
    assert!(meta("ANY Writers", &ch, &[signer(2, "Org2", Role::Peer)]));
    assert!(meta("ALL Admins", &ch, &admins(&[1, 2, 3])));
    assert!(!meta("ALL Admins", &ch, &admins(&[1, 3])));
    assert!(
        meta("MAJORITY Admins", &ch, &admins(&[1, 3])),
        "2 of 3 is a majority"
    );
    assert!(!meta("MAJORITY Admins", &ch, &admins(&[3])));
    assert!(
        !meta("MAJORITY Admins", &ch, &admins(&[4, 5, 6])),
        "orgs outside the channel"
    );
    // A missing sub-policy is not satisfied.
    assert!(!meta("ANY Readers", &ch, &admins(&[1, 2, 3])));
    // Signature policies evaluate directly, the context unused.
    assert!(meta(
        "AND('Org1.admin', 'Org2.admin')",
        &ch,
        &admins(&[1, 2])
    ));
}

#[test]
fn majority_boundary_with_four_orgs() {
    let ch = Channel::new(4);
    assert!(
        !meta("MAJORITY Admins", &ch, &admins(&[1, 4])),
        "2 of 4 is not a majority"
    );
    assert!(meta("MAJORITY Admins", &ch, &admins(&[1, 2, 4])));
    assert!(!meta("ALL Admins", &ch, &admins(&[1, 2, 4])));
}

#[test]
fn implicit_meta_edge_cases() {
    let empty = Channel::new(0);
    for text in ["ANY Admins", "ALL Admins", "MAJORITY Admins"] {
        assert!(!meta(text, &empty, &admins(&[1])), "{text} with no orgs");
    }
    let mut ch = Channel::new(3);
    // Listing an org twice does not give it two votes.
    ch.orgs.push("Org1".into());
    ch.orgs.push("Org1".into());
    assert!(!meta("MAJORITY Admins", &ch, &admins(&[1])));
    // An org without the sub-policy makes ALL fail.
    ch.policies
        .remove(&("Org3".to_owned(), "Admins".to_owned()));
    assert!(!meta("ALL Admins", &ch, &admins(&[1, 2, 3])));
    assert!(meta("MAJORITY Admins", &ch, &admins(&[1, 2])));
    // Implicit-meta org policies (a possible loop) are not satisfied.
    for i in 1..=3 {
        ch.set(&format!("Org{i}"), "Loop", "ANY Loop");
    }
    assert!(!meta("ANY Loop", &ch, &admins(&[1, 2, 3])));
    // Each org's sub-policy sees all signers: one signer may satisfy several orgs' policies.
    ch.set("Org1", "Shared", "'Org3.admin'");
    ch.set("Org2", "Shared", "'Org3.admin'");
    assert!(meta("MAJORITY Shared", &ch, &admins(&[3])));
}

#[test]
fn validate_orgs_names_the_unknown_org() {
    let p =
        Policy::parse("AND('Org1.peer', OR('Org2.member', 'Org9.admin', 'Org8.admin'))").unwrap();
    assert_eq!(p.validate_orgs(&["Org1", "Org2", "Org9", "Org8"]), Ok(()));
    let e = p.validate_orgs(&["Org1", "Org2"]).unwrap_err();
    assert_eq!(
        e,
        PolicyError::UnknownOrg {
            msp_id: "Org9".into()
        }
    );
    assert_eq!(e.position(), None);
    assert_eq!(
        e.to_string(),
        "policy names org 'Org9', which is not a member of the channel"
    );
    assert!(Policy::parse("ANY Admins")
        .unwrap()
        .validate_orgs(&[])
        .is_ok());
    // An unknown org still parses and evaluates: it is simply never satisfied.
    let Policy::Signature(sig) = p else {
        panic!("signature policy")
    };
    assert!(!sig.evaluate(&[
        signer(1, "Org1", Role::Peer),
        signer(2, "OrgX", Role::Admin)
    ]));
}

#[test]
fn display_forms() {
    let leaf = |msp: &str| SignaturePolicy::signed_by(msp, PrincipalRole::Peer);
    assert_eq!(leaf("a.b").to_string(), "'a.b.peer'");
    assert_eq!(
        SignaturePolicy::and(vec![leaf("A")]).to_string(),
        "AND('A.peer')"
    );
    let two = || vec![leaf("A"), leaf("B")];
    assert_eq!(
        SignaturePolicy::and(two()).to_string(),
        "AND('A.peer', 'B.peer')"
    );
    assert_eq!(
        SignaturePolicy::or(two()).to_string(),
        "OR('A.peer', 'B.peer')"
    );
    let three = SignaturePolicy::out_of(2, vec![leaf("A"), leaf("B"), leaf("C")]);
    assert_eq!(three.to_string(), "OutOf(2, 'A.peer', 'B.peer', 'C.peer')");
    let meta = Policy::ImplicitMeta {
        rule: MetaRule::Majority,
        sub_policy: "Admins".into(),
    };
    assert_eq!(meta.to_string(), "MAJORITY Admins");
    assert_eq!(PrincipalRole::from(Role::Orderer).to_string(), "orderer");
    // OR of one is AND of one: the same policy.
    assert_eq!(
        Policy::parse("OR('A.peer')").unwrap(),
        Policy::parse("AND('A.peer')").unwrap()
    );
}

#[test]
fn signer_id_is_the_certificate_hash() {
    let a = Signer::from_certificate(b"cert", "Org1", Role::Peer);
    let b = Signer::from_certificate(b"cert", "Org1", Role::Peer);
    assert_eq!(a.id, b.id);
    assert_eq!(
        hex::encode(a.id),
        "06298432e8066b29e2223bcc23aa9504b56ae508fabf3435508869b9c3190e22"
    );
    let p = SignaturePolicy::parse("OutOf(2, 'Org1.peer', 'Org1.peer')").unwrap();
    assert!(!p.evaluate(&[a, b]));
}

fn sig(text: &str) -> SignaturePolicy {
    SignaturePolicy::parse(text).unwrap()
}

#[test]
fn roles_and_orgs_must_match() {
    let member = sig("'Org1.member'");
    for role in Role::ALL {
        assert!(member.evaluate(&[signer(1, "Org1", role)]), "{role}");
        assert!(!member.evaluate(&[signer(1, "Org2", role)]), "{role}");
    }
    let peer = sig("'Org1.peer'");
    assert!(peer.evaluate(&[signer(1, "Org1", Role::Peer)]));
    for role in [Role::Client, Role::Orderer, Role::Admin] {
        assert!(!peer.evaluate(&[signer(1, "Org1", role)]), "{role}");
    }
    // An org the channel does not know is simply never satisfied.
    let unknown = sig("OR('Nobody.member', 'Org1.admin')");
    assert!(!unknown.evaluate(&[signer(1, "Org1", Role::Peer)]));
    assert!(unknown.evaluate(&[signer(1, "Org1", Role::Admin)]));
}

#[test]
fn hand_built_policies_outside_the_language_fail_closed() {
    let leaf = SignaturePolicy::signed_by("A", PrincipalRole::Member);
    let signers = [signer(1, "A", Role::Peer)];
    assert!(!SignaturePolicy::out_of(0, vec![]).evaluate(&signers));
    assert!(!SignaturePolicy::out_of(0, vec![leaf.clone()]).evaluate(&signers));
    assert!(!SignaturePolicy::out_of(2, vec![leaf.clone()]).evaluate(&signers));
    assert!(!SignaturePolicy::and(vec![]).evaluate(&signers));
    let mut deep = leaf.clone();
    for _ in 0..=MAX_DEPTH {
        deep = SignaturePolicy::or(vec![deep]);
    }
    assert!(!deep.evaluate(&signers));
    let wide = SignaturePolicy::or(vec![leaf; MAX_PRINCIPALS + 1]);
    assert!(!wide.evaluate(&signers));
}

/// Asserts `policy` evaluates to `want` with little search work.
fn quick(policy: &SignaturePolicy, signers: &[Signer], want: bool) {
    let (answer, work) = policy.evaluate_with_work(signers);
    assert_eq!(answer, Some(want), "{policy}");
    assert!(work <= 2_000, "{policy} took {work} steps");
}

fn orgs(count: usize, role: &str) -> Vec<String> {
    (0..count).map(|i| format!("'Org{i}.{role}'")).collect()
}

#[test]
fn common_cases_are_fast() {
    let and10 = sig(&format!("AND({})", orgs(10, "peer").join(",")));
    let peers: Vec<Signer> = (0..10)
        .map(|i| signer(i, &format!("Org{i}"), Role::Peer))
        .collect();
    quick(&and10, &peers, true);
    quick(&and10, &peers[1..], false);
    let of3 = sig(&format!("OutOf(3, {})", orgs(10, "member").join(",")));
    let twenty: Vec<Signer> = (0..20)
        .map(|i| signer(i, &format!("Org{}", i % 2), Role::ALL[i as usize % 4]))
        .collect();
    quick(&of3, &twenty, false);
    let spread: Vec<Signer> = (0..20)
        .map(|i| signer(i, &format!("Org{}", i % 10), Role::Peer))
        .collect();
    quick(&of3, &spread, true);
    // Many signers (past 64), many duplicates of one principal.
    let many: Vec<Signer> = (0..200).map(|i| signer(i, "Org1", Role::Peer)).collect();
    let dup = |n: usize| {
        sig(&format!(
            "OutOf({n}, {})",
            vec!["'Org1.member'"; 150].join(",")
        ))
    };
    quick(&dup(150), &many, true);
    quick(&dup(150), &many[..149], false);
    let and256 = sig(&format!("AND({})", orgs(256, "member").join(",")));
    let all: Vec<Signer> = (0..=255)
        .map(|i| signer(i, &format!("Org{i}"), Role::Admin))
        .collect();
    quick(&and256, &all, true);
    quick(&and256, &all[1..], false);
}

#[test]
fn adversarial_policies_stay_bounded() {
    // Two thresholds competing for the same 20 orgs: the counting bound (23 signers for 23
    // leaves) does not see that 11 + 11 > 20, so the search runs into its cap and fails closed.
    let o = orgs(20, "member").join(",");
    let p = sig(&format!("AND(OutOf(11, {o}), OutOf(11, {o}), 'X.peer')"));
    let mut signers: Vec<Signer> = (0..20)
        .map(|i| signer(i, &format!("Org{i}"), Role::Peer))
        .collect();
    signers.extend((100..103).map(|i| signer(i, "X", Role::Peer)));
    let start = Instant::now();
    let (answer, work) = p.evaluate_with_work(&signers);
    let elapsed = start.elapsed();
    assert_eq!(answer, None);
    assert!(
        work > MAX_SEARCH_WORK && work < MAX_SEARCH_WORK + 1000,
        "{work}"
    );
    assert!(!p.evaluate(&signers));
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    // With one org fewer per threshold it fits: 10 + 10 + 1 signers.
    let p = sig(&format!("AND(OutOf(10, {o}), OutOf(10, {o}), 'X.peer')"));
    let (answer, work) = p.evaluate_with_work(&signers);
    assert_eq!(answer, Some(true));
    assert!(work < 1_000, "{work}");
}

// ---------- property tests ----------

fn role() -> impl Strategy<Value = PrincipalRole> {
    prop::sample::select(PrincipalRole::ALL.to_vec())
}

fn cert_role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

/// Random trees of `leaf`, at most `depth` combinators deep, `1 <= n <= rules`.
fn tree(
    leaf: BoxedStrategy<SignaturePolicy>,
    depth: u32,
    width: usize,
) -> BoxedStrategy<SignaturePolicy> {
    leaf.prop_recursive(depth, 64, width as u32, move |inner| {
        prop::collection::vec(inner, 1..=width)
            .prop_flat_map(|rules| {
                let len = rules.len();
                (1..=len).prop_map(move |n| SignaturePolicy::out_of(n, rules.clone()))
            })
            .boxed()
    })
    .boxed()
}

/// Any valid policy: MSP ids with dots, dashes and non-ASCII letters; depth <= 4.
fn any_policy() -> BoxedStrategy<SignaturePolicy> {
    let leaf = ("[A-Za-z0-9é][A-Za-z0-9.é_-]{0,8}", role())
        .prop_map(|(msp, role)| SignaturePolicy::signed_by(msp, role))
        .boxed();
    tree(leaf, 4, 4)
}

/// Small policies over orgs A, B, C (at most 7 principals), for brute-force comparison.
fn small_policy() -> BoxedStrategy<SignaturePolicy> {
    let leaf = (prop::sample::select(vec!["A", "B", "C"]), role())
        .prop_map(|(msp, role)| SignaturePolicy::signed_by(msp, role))
        .boxed();
    tree(leaf, 3, 3)
        .prop_filter("at most 7 principals", |p| p.principals().count() <= 7)
        .boxed()
}

/// Up to `max` signers of orgs A..D, ids from a small range so duplicates occur.
fn signers(max: usize) -> impl Strategy<Value = Vec<Signer>> {
    let one = (
        0u8..8,
        prop::sample::select(vec!["A", "B", "C", "D"]),
        cert_role(),
    )
        .prop_map(|(id, msp, role)| signer(id, msp, role));
    prop::collection::vec(one, 0..=max)
}

/// Renders `p` in an alternative but equivalent style, exercising the parser's freedoms.
fn render(p: &SignaturePolicy, lower: bool, spaced: bool, dquote: bool, out_of: bool) -> String {
    match p {
        SignaturePolicy::SignedBy(pr) => {
            let q = if dquote { '"' } else { '\'' };
            format!("{q}{}.{}{q}", pr.msp_id, pr.role)
        }
        SignaturePolicy::OutOf { n, rules } => {
            let sep = if spaced { " ,\n\t " } else { "," };
            let inner: Vec<String> = rules
                .iter()
                .map(|r| render(r, lower, spaced, dquote, out_of))
                .collect();
            let head = if out_of || (*n != 1 && *n != rules.len()) {
                format!("OutOf{}({n}{sep}", if spaced { " " } else { "" })
            } else if *n == rules.len() {
                "AND(".to_owned()
            } else {
                "Or(".to_owned()
            };
            let head = if lower { head.to_lowercase() } else { head };
            format!("{head}{})", inner.join(sep))
        }
    }
}

/// Brute force: tries every injective assignment of (deduplicated) signers to leaves.
fn brute_force(policy: &SignaturePolicy, signers: &[Signer]) -> bool {
    let mut unique: Vec<&Signer> = Vec::new();
    for s in signers {
        if !unique.iter().any(|u| u.id == s.id) {
            unique.push(s);
        }
    }
    let leaves: Vec<&Principal> = policy.principals().collect();
    let mut assigned = vec![false; leaves.len()];
    let mut used = vec![false; unique.len()];
    assign(0, policy, &leaves, &unique, &mut assigned, &mut used)
}

fn assign(
    leaf: usize,
    policy: &SignaturePolicy,
    leaves: &[&Principal],
    signers: &[&Signer],
    assigned: &mut [bool],
    used: &mut [bool],
) -> bool {
    if leaf == leaves.len() {
        return holds(policy, assigned, &mut 0);
    }
    if assign(leaf + 1, policy, leaves, signers, assigned, used) {
        return true;
    }
    for (j, s) in signers.iter().enumerate() {
        if !used[j] && leaves[leaf].matches(&s.msp_id, s.role) {
            used[j] = true;
            assigned[leaf] = true;
            let found = assign(leaf + 1, policy, leaves, signers, assigned, used);
            used[j] = false;
            assigned[leaf] = false;
            if found {
                return true;
            }
        }
    }
    false
}

/// Whether the tree holds when exactly the `assigned` leaves (in text order) are satisfied.
fn holds(policy: &SignaturePolicy, assigned: &[bool], next: &mut usize) -> bool {
    match policy {
        SignaturePolicy::SignedBy(_) => {
            *next += 1;
            assigned[*next - 1]
        }
        SignaturePolicy::OutOf { n, rules } => {
            let results: Vec<bool> = rules.iter().map(|r| holds(r, assigned, next)).collect();
            results.iter().filter(|&&b| b).count() >= *n
        }
    }
}

/// Parse errors are well-formed; successful parses round-trip.
fn check_parse(text: &str) {
    match Policy::parse(text) {
        Ok(p) => assert_eq!(Policy::parse(&p.to_string()).as_ref(), Ok(&p), "{text:?}"),
        Err(e) => {
            if let Some(pos) = e.position() {
                assert!(
                    pos <= text.len() && text.is_char_boundary(pos),
                    "{e} in {text:?}"
                );
                assert!(e.to_string().starts_with(&format!("at position {pos}: ")));
            }
        }
    }
}

proptest! {
    #[test]
    fn parse_never_panics_on_strings(text in ".{0,300}") {
        check_parse(&text);
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parse_never_panics_on_policy_like_text(
        text in "[ANDORutfMJIYLany() ,'\".0-9a-z_-]{0,120}"
    ) {
        check_parse(&text);
    }

    #[test]
    fn parse_never_panics_on_mutated_policies(
        p in any_policy(), at in any::<prop::sample::Index>(), c in any::<char>(), delete: bool
    ) {
        let mut text = p.to_string();
        let boundaries: Vec<usize> =
            (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let i = *at.get(&boundaries);
        if delete && i < text.len() {
            text.remove(i);
        } else {
            text.insert(i, c);
        }
        check_parse(&text);
    }

    #[test]
    fn display_round_trips(
        p in any_policy(), lower: bool, spaced: bool, dquote: bool, out_of: bool
    ) {
        let text = p.to_string();
        prop_assert_eq!(SignaturePolicy::parse(&text), Ok(p.clone()), "{}", text);
        let alt = render(&p, lower, spaced, dquote, out_of);
        prop_assert_eq!(SignaturePolicy::parse(&alt), Ok(p), "{}", alt);
    }

    #[test]
    fn implicit_meta_round_trips(
        rule in prop::sample::select(vec![MetaRule::Any, MetaRule::All, MetaRule::Majority]),
        sub_policy in "[A-Za-z0-9_-]{1,20}",
    ) {
        let p = Policy::ImplicitMeta { rule, sub_policy };
        prop_assert_eq!(Policy::parse(&p.to_string()), Ok(p));
    }

    #[test]
    fn evaluation_is_monotone(
        p in small_policy(), signers in signers(6), extra in signers(2)
    ) {
        if p.evaluate(&signers) {
            let mut more = signers.clone();
            more.extend(extra);
            prop_assert!(p.evaluate(&more), "{} lost by adding signers", p);
        }
    }

    #[test]
    fn evaluation_matches_brute_force(p in small_policy(), signers in signers(6)) {
        let want = brute_force(&p, &signers);
        prop_assert_eq!(p.evaluate(&signers), want, "{} with {:?}", p, signers);
        // Through the text form and in another signer order (ids made unique): same answer.
        let mut unique = signers.clone();
        let mut seen = std::collections::HashSet::new();
        unique.retain(|s| seen.insert(s.id));
        let reparsed = SignaturePolicy::parse(&p.to_string()).unwrap();
        unique.reverse();
        prop_assert_eq!(reparsed.evaluate(&unique), brute_force(&p, &unique));
    }
}
