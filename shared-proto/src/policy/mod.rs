//! The policy language: who must sign for a transaction, block or config update to be accepted.
//!
//! Two forms, as in Hyperledger Fabric:
//! - signature policies over principals (`'MSPID.role'`), combined with `AND`, `OR` and
//!   `OutOf(n, ...)`, e.g. `AND('Org1.peer', OR('Org2.member', OutOf(2, 'Org3.admin',
//!   'Org4.peer', 'Org5.client')))`;
//! - implicit-meta policies over the orgs of a channel: `ANY Writers`, `ALL Readers`,
//!   `MAJORITY Admins`.
//!
//! Promises:
//! - [`Policy::parse`] never panics, bounds its work ([`MAX_POLICY_LEN`] bytes, [`MAX_DEPTH`]
//!   nested combinators, [`MAX_PRINCIPALS`] principals) and names the 0-based byte position of
//!   every error, with what was expected and what was found;
//! - `Display` prints text that parses back to an equal policy (for every policy the parser
//!   produces);
//! - [`SignaturePolicy::evaluate`] counts each signer (identified by its certificate hash) once
//!   across the whole policy, and is exact: it answers `true` iff some assignment of distinct
//!   signers to principals satisfies the policy (see [`MAX_SEARCH_WORK`] for its one bound).

mod eval;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use crate::msp::Role;

pub use eval::{PolicyContext, Signer, MAX_SEARCH_WORK};

/// Longest policy text accepted, in bytes: keeps parsing cheap for any input.
pub const MAX_POLICY_LEN: usize = 4096;
/// Deepest nesting of `AND`/`OR`/`OutOf` accepted: keeps recursion bounded.
pub const MAX_DEPTH: usize = 32;
/// Most principals one policy may name: keeps evaluation bounded.
pub const MAX_PRINCIPALS: usize = 256;

/// The role a principal asks for. `Member` is satisfied by a signer of any role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalRole {
    Member,
    Client,
    Peer,
    Orderer,
    Admin,
}

impl PrincipalRole {
    /// Every principal role, in a fixed order.
    pub const ALL: [PrincipalRole; 5] = [
        PrincipalRole::Member,
        PrincipalRole::Client,
        PrincipalRole::Peer,
        PrincipalRole::Orderer,
        PrincipalRole::Admin,
    ];

    /// The lowercase name used in policy text (`member`, `client`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalRole::Member => "member",
            PrincipalRole::Client => "client",
            PrincipalRole::Peer => "peer",
            PrincipalRole::Orderer => "orderer",
            PrincipalRole::Admin => "admin",
        }
    }

    /// The role named exactly `name` (lowercase, as Fabric), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        PrincipalRole::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether a certificate carrying `role` satisfies this principal role.
    pub fn matches(self, role: Role) -> bool {
        match self {
            PrincipalRole::Member => true,
            PrincipalRole::Client => role == Role::Client,
            PrincipalRole::Peer => role == Role::Peer,
            PrincipalRole::Orderer => role == Role::Orderer,
            PrincipalRole::Admin => role == Role::Admin,
        }
    }
}

impl From<Role> for PrincipalRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Client => PrincipalRole::Client,
            Role::Peer => PrincipalRole::Peer,
            Role::Orderer => PrincipalRole::Orderer,
            Role::Admin => PrincipalRole::Admin,
        }
    }
}

impl fmt::Display for PrincipalRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One org in one role: text form `'Org1.peer'` (split on the last `.`, so MSP ids may contain
/// dots).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub msp_id: String,
    pub role: PrincipalRole,
}

impl Principal {
    /// A principal; `msp_id` should pass [`Principal::is_valid_msp_id`] for its text form to
    /// parse back.
    pub fn new(msp_id: impl Into<String>, role: PrincipalRole) -> Self {
        Principal {
            msp_id: msp_id.into(),
            role,
        }
    }

    /// Whether `msp_id` can appear in policy text: non-empty, and no quotes, whitespace or
    /// control characters.
    pub fn is_valid_msp_id(msp_id: &str) -> bool {
        !msp_id.is_empty() && !msp_id.contains(is_forbidden_in_msp_id)
    }

    /// Whether a signer of org `msp_id` with certificate role `role` satisfies this principal.
    pub fn matches(&self, msp_id: &str, role: Role) -> bool {
        self.msp_id == msp_id && self.role.matches(role)
    }
}

/// Characters an MSP id may not contain in policy text.
fn is_forbidden_in_msp_id(c: char) -> bool {
    c == '\'' || c == '"' || c.is_whitespace() || c.is_control()
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}.{}'", self.msp_id, self.role)
    }
}

/// A rule over signatures. `AND(a, b, ..)` is `OutOf { n: len, .. }` and `OR(a, b, ..)` is
/// `OutOf { n: 1, .. }`; equality is therefore semantic for the combinators.
///
/// The parser only produces `OutOf` with `1 <= n <= rules.len()`; a hand-built policy outside
/// that range is never satisfied and its text form does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignaturePolicy {
    /// Satisfied by one signer matching the principal.
    SignedBy(Principal),
    /// Satisfied when at least `n` of `rules` are, each by signers no other rule uses.
    OutOf {
        n: usize,
        rules: Vec<SignaturePolicy>,
    },
}

impl SignaturePolicy {
    /// `SignedBy` a principal of org `msp_id` in `role`.
    pub fn signed_by(msp_id: impl Into<String>, role: PrincipalRole) -> Self {
        SignaturePolicy::SignedBy(Principal::new(msp_id, role))
    }

    /// Every rule must be satisfied.
    pub fn and(rules: Vec<SignaturePolicy>) -> Self {
        SignaturePolicy::OutOf {
            n: rules.len(),
            rules,
        }
    }

    /// At least one rule must be satisfied.
    pub fn or(rules: Vec<SignaturePolicy>) -> Self {
        SignaturePolicy::OutOf { n: 1, rules }
    }

    /// At least `n` rules must be satisfied.
    pub fn out_of(n: usize, rules: Vec<SignaturePolicy>) -> Self {
        SignaturePolicy::OutOf { n, rules }
    }

    /// Parses a signature policy; implicit-meta text (`ANY Writers`) is rejected. Same limits
    /// and errors as [`Policy::parse`].
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        match parse::parse_policy(text, false)? {
            Policy::Signature(policy) => Ok(policy),
            // parse_policy(.., false) never returns implicit-meta policies.
            Policy::ImplicitMeta { .. } => Err(PolicyError::Syntax {
                pos: 0,
                expected: parse::SIGNATURE_START.to_owned(),
                found: "an implicit-meta policy".to_owned(),
            }),
        }
    }

    /// The principals named, in text order (duplicates included).
    pub fn principals(&self) -> Principals<'_> {
        Principals { stack: vec![self] }
    }

    /// Checks that every principal names an org in `known` (used when channel config is
    /// loaded); the first unknown org, in text order, is reported.
    pub fn validate_orgs(&self, known: &[&str]) -> Result<(), PolicyError> {
        match self
            .principals()
            .find(|p| !known.contains(&p.msp_id.as_str()))
        {
            Some(p) => Err(PolicyError::UnknownOrg {
                msp_id: p.msp_id.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Iterator over the principals of a [`SignaturePolicy`], in text order.
#[derive(Debug, Clone)]
pub struct Principals<'a> {
    stack: Vec<&'a SignaturePolicy>,
}

impl<'a> Iterator for Principals<'a> {
    type Item = &'a Principal;

    fn next(&mut self) -> Option<&'a Principal> {
        while let Some(policy) = self.stack.pop() {
            match policy {
                SignaturePolicy::SignedBy(p) => return Some(p),
                SignaturePolicy::OutOf { rules, .. } => self.stack.extend(rules.iter().rev()),
            }
        }
        None
    }
}

impl fmt::Display for SignaturePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignaturePolicy::SignedBy(p) => p.fmt(f),
            SignaturePolicy::OutOf { n, rules } => {
                if *n == rules.len() && *n > 0 {
                    f.write_str("AND(")?;
                } else if *n == 1 {
                    f.write_str("OR(")?;
                } else {
                    write!(f, "OutOf({n}, ")?;
                }
                for (i, rule) in rules.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    rule.fmt(f)?;
                }
                f.write_str(")")
            }
        }
    }
}

impl FromStr for SignaturePolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignaturePolicy::parse(s)
    }
}

/// How an implicit-meta policy combines the orgs' sub-policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaRule {
    /// At least one org's sub-policy is satisfied.
    Any,
    /// Every org's sub-policy is satisfied (and there is at least one org).
    All,
    /// Strictly more than half of the orgs' sub-policies are satisfied.
    Majority,
}

impl MetaRule {
    /// The keyword used in policy text (`ANY`, `ALL`, `MAJORITY`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetaRule::Any => "ANY",
            MetaRule::All => "ALL",
            MetaRule::Majority => "MAJORITY",
        }
    }

    /// The rule named by `word`, ignoring ASCII case.
    pub fn from_keyword(word: &str) -> Option<Self> {
        [MetaRule::Any, MetaRule::All, MetaRule::Majority]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for MetaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel or org policy: a signature policy, or an implicit-meta rule over the orgs'
/// sub-policies of one name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Satisfied by signatures directly.
    Signature(SignaturePolicy),
    /// Satisfied by `rule` over every org's policy named `sub_policy` (letters, digits, `_`,
    /// `-`).
    ImplicitMeta { rule: MetaRule, sub_policy: String },
}

impl Policy {
    /// Parses policy text: a signature policy or `ANY|ALL|MAJORITY <SubPolicy>`.
    ///
    /// Keywords are case-insensitive, whitespace is free between tokens, principals are in
    /// single or double quotes with lowercase roles. Errors name the byte position.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        parse::parse_policy(text, true)
    }

    /// Checks that every principal names an org in `known`; implicit-meta policies name no org.
    pub fn validate_orgs(&self, known: &[&str]) -> Result<(), PolicyError> {
        match self {
            Policy::Signature(policy) => policy.validate_orgs(known),
            Policy::ImplicitMeta { .. } => Ok(()),
        }
    }
}

impl From<SignaturePolicy> for Policy {
    fn from(policy: SignaturePolicy) -> Self {
        Policy::Signature(policy)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Signature(policy) => policy.fmt(f),
            Policy::ImplicitMeta { rule, sub_policy } => write!(f, "{rule} {sub_policy}"),
        }
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

/// Why policy text was rejected, or why a policy does not fit a channel. Positions are 0-based
/// byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is longer than [`MAX_POLICY_LEN`]; nothing was parsed.
    #[error("policy text is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    /// A token other than the one the grammar allows here.
    #[error("at position {pos}: expected {expected}, found {found}")]
    Syntax {
        pos: usize,
        expected: String,
        found: String,
    },
    /// A complete policy was followed by more text.
    #[error("at position {pos}: unexpected {found} after the end of the policy")]
    TrailingInput { pos: usize, found: String },
    /// A principal whose role (after the last `.`) is not a known role.
    #[error(
        "at position {pos}: unknown role '{role}' in principal; \
         expected member, client, peer, orderer or admin"
    )]
    UnknownRole { pos: usize, role: String },
    /// A principal that is not of the form `MSPID.role` with a valid MSP id.
    #[error("at position {pos}: invalid principal {text}: {reason}")]
    BadPrincipal {
        pos: usize,
        text: String,
        reason: &'static str,
    },
    /// `AND()`, `OR()` or `OutOf(n)` without sub-rules (`pos`: the keyword).
    #[error("at position {pos}: {keyword} needs at least one sub-rule")]
    EmptyRule { pos: usize, keyword: &'static str },
    /// `OutOf(n, ..)` with n = 0 or n > number of sub-rules (`pos`: the number).
    #[error(
        "at position {pos}: OutOf({n}, ...) over {rules} sub-rule(s) can never be satisfied; \
         n must be between 1 and {rules}"
    )]
    Unsatisfiable { pos: usize, n: u64, rules: usize },
    /// More than [`MAX_DEPTH`] nested combinators (`pos`: the first one too deep).
    #[error("at position {pos}: policy nested deeper than {max} levels")]
    TooDeep { pos: usize, max: usize },
    /// More than [`MAX_PRINCIPALS`] principals (`pos`: the first one too many).
    #[error("at position {pos}: policy names more than {max} principals")]
    TooManyPrincipals { pos: usize, max: usize },
    /// A principal names an org that is not a member of the channel.
    #[error("policy names org '{msp_id}', which is not a member of the channel")]
    UnknownOrg { msp_id: String },
}

impl PolicyError {
    /// The byte offset in the text the error is about, for errors that have one.
    pub fn position(&self) -> Option<usize> {
        match self {
            PolicyError::Syntax { pos, .. }
            | PolicyError::TrailingInput { pos, .. }
            | PolicyError::UnknownRole { pos, .. }
            | PolicyError::BadPrincipal { pos, .. }
            | PolicyError::EmptyRule { pos, .. }
            | PolicyError::Unsatisfiable { pos, .. }
            | PolicyError::TooDeep { pos, .. }
            | PolicyError::TooManyPrincipals { pos, .. } => Some(*pos),
            PolicyError::TooLong { .. } | PolicyError::UnknownOrg { .. } => None,
        }
    }
}
