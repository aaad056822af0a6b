//! Membership of one channel: the org peers heard from, their heights and leadership claims.
//!
//! A member is keyed by its verified identity (the SHA-256 of the signing certificate its
//! alive message was verified with), never by the endpoint it names: one identity holds one
//! entry whatever it claims. It is added by its first verified alive message, refreshed by
//! each newer one (higher sequence), and dropped when none arrived for the expiry; a dropped
//! member that speaks again is simply added again.
//!
//! A claimed height is only a claim. [`Member::credited`] is what this peer believes: the
//! claim, but no more than the member has shown (`proven`, raised by a block it served whose
//! orderer signatures verify) or than this peer's own height. A member claiming more than it
//! can be credited with is probed; one whose claim failed is distrusted for a while (no
//! leadership, no pulls from it). Pure bookkeeping: the caller passes the time.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use shared_proto::hash::Hash;
use shared_proto::pb::peer::AliveInfo;

/// Most members tracked per channel; alive messages from more are ignored.
pub const MEMBERS_MAX: usize = 256;

/// What alive messages told about a member, and what it has shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub endpoint: String,
    pub identity_id: Hash,
    /// Claimed ledger height.
    pub height: u64,
    /// Height shown: one more than the highest block it served that verified.
    pub proven: u64,
    pub sequence: u64,
    pub can_lead: bool,
    pub leader: bool,
    pub last_seen: Instant,
    /// A claim of this member failed: ignored for leadership and pulls until then.
    pub distrusted_until: Option<Instant>,
    /// Height whose last block was asked of it to prove the claim, and when.
    pub probe: Option<(u64, Instant)>,
}

impl Member {
    /// The height this peer believes the member has (`own` is this peer's height).
    pub fn credited(&self, own: u64) -> u64 {
        self.height.min(self.proven.max(own))
    }

    /// It claims more than `lag` blocks beyond what can be credited: the claim must be
    /// checked before it counts.
    pub fn unverified(&self, own: u64, lag: u64) -> bool {
        self.height > self.proven.max(own).saturating_add(lag)
    }

    pub fn distrusted(&self, now: Instant) -> bool {
        self.distrusted_until.is_some_and(|until| now < until)
    }
}

/// What [`Membership::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First heard from (or back after being dropped).
    Joined,
    Refreshed,
    /// Not newer than what we have (replayed or reordered): ignored.
    Stale,
    /// The table is full.
    Full,
}

#[derive(Debug)]
pub struct Membership {
    expiry: Duration,
    members: HashMap<Hash, Member>,
}

impl Membership {
    pub fn new(expiry: Duration) -> Self {
        Membership {
            expiry,
            members: HashMap::new(),
        }
    }

    pub fn observe(&mut self, info: &AliveInfo, identity_id: Hash, now: Instant) -> Observed {
        let full = self.members.len() >= MEMBERS_MAX;
        match self.members.get_mut(&identity_id) {
            Some(known) if known.sequence >= info.sequence => Observed::Stale,
            Some(known) => {
                known.endpoint.clone_from(&info.endpoint);
                known.height = info.height;
                known.sequence = info.sequence;
                known.can_lead = info.can_lead;
                known.leader = info.leader;
                known.last_seen = now;
                Observed::Refreshed
            }
            None if full => Observed::Full,
            None => {
                let member = Member {
                    endpoint: info.endpoint.clone(),
                    identity_id,
                    height: info.height,
                    proven: 0,
                    sequence: info.sequence,
                    can_lead: info.can_lead,
                    leader: info.leader,
                    last_seen: now,
                    distrusted_until: None,
                    probe: None,
                };
                self.members.insert(identity_id, member);
                Observed::Joined
            }
        }
    }

    /// Drops members not heard from within the expiry; returns their endpoints.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expiry = self.expiry;
        let mut dead = Vec::new();
        self.members.retain(|_, m| {
            let alive = now.saturating_duration_since(m.last_seen) <= expiry;
            if !alive {
                dead.push(m.endpoint.clone());
            }
            alive
        });
        dead
    }

    /// Members heard from within the expiry, sorted by endpoint.
    pub fn alive(&self, now: Instant) -> Vec<Member> {
        let mut alive: Vec<Member> = self
            .members
            .values()
            .filter(|m| now.saturating_duration_since(m.last_seen) <= self.expiry)
            .cloned()
            .collect();
        alive.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        alive
    }

    pub fn get(&self, identity_id: &Hash) -> Option<&Member> {
        self.members.get(identity_id)
    }

    /// The member served a verified block `height - 1`.
    pub fn prove(&mut self, identity_id: &Hash, height: u64) {
        if let Some(m) = self.members.get_mut(identity_id) {
            m.proven = m.proven.max(height);
            if m.probe.is_some_and(|(asked, _)| asked <= m.proven) {
                m.probe = None;
            }
        }
    }

    /// A claim of the member failed: distrust it until `until`.
    pub fn distrust(&mut self, identity_id: &Hash, until: Instant) {
        if let Some(m) = self.members.get_mut(identity_id) {
            m.distrusted_until = Some(until);
            m.probe = None;
        }
    }

    pub fn start_probe(&mut self, identity_id: &Hash, height: u64, now: Instant) {
        if let Some(m) = self.members.get_mut(identity_id) {
            m.probe = Some((height, now));
        }
    }

    /// Members whose probe has been unanswered for `timeout`.
    pub fn probes_overdue(&self, now: Instant, timeout: Duration) -> Vec<Hash> {
        self.members
            .values()
            .filter(|m| {
                m.probe
                    .is_some_and(|(_, at)| now.saturating_duration_since(at) > timeout)
            })
            .map(|m| m.identity_id)
            .collect()
    }

    /// The highest height credited to any alive member (`own`: this peer's height).
    pub fn max_credited(&self, own: u64, now: Instant) -> u64 {
        self.alive(now)
            .iter()
            .filter(|m| !m.distrusted(now))
            .map(|m| m.credited(own))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(endpoint: &str, height: u64, sequence: u64) -> AliveInfo {
        AliveInfo {
            endpoint: endpoint.into(),
            height,
            sequence,
            can_lead: true,
            ..Default::default()
        }
    }

    #[test]
    fn member_silent_past_expiry_is_dropped_and_readded_when_it_speaks() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        assert_eq!(m.observe(&info("a:1", 3, 1), [1; 32], t0), Observed::Joined);
        assert_eq!(m.alive(t0 + Duration::from_secs(5)).len(), 1);
        assert_eq!(
            m.expire(t0 + Duration::from_secs(6)),
            vec!["a:1".to_owned()]
        );
        assert!(m.alive(t0 + Duration::from_secs(6)).is_empty());
        let t1 = t0 + Duration::from_secs(7);
        assert_eq!(m.observe(&info("a:1", 9, 2), [1; 32], t1), Observed::Joined);
        assert_eq!(m.alive(t1)[0].height, 9);
    }

    #[test]
    fn replayed_or_reordered_alive_is_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 10, 5), [1; 32], t0);
        assert_eq!(m.observe(&info("a:1", 4, 5), [1; 32], t0), Observed::Stale);
        assert_eq!(m.observe(&info("a:1", 4, 3), [1; 32], t0), Observed::Stale);
        assert_eq!(m.alive(t0)[0].height, 10);
        assert_eq!(
            m.observe(&info("a:1", 11, 6), [1; 32], t0),
            Observed::Refreshed
        );
        assert_eq!(m.alive(t0)[0].height, 11);
    }

    #[test]
    fn members_are_keyed_by_identity_not_by_the_endpoint_they_claim() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 10, 50), [1; 32], t0);
        // Another identity naming the same endpoint is another member.
        assert_eq!(m.observe(&info("a:1", 2, 1), [2; 32], t0), Observed::Joined);
        // One identity naming ever new endpoints stays one member.
        for i in 0..10 {
            m.observe(&info(&format!("b:{i}"), 3, 51 + i), [1; 32], t0);
        }
        let alive = m.alive(t0);
        assert_eq!(alive.len(), 2);
        assert!(alive.iter().any(|a| a.endpoint == "b:9" && a.height == 3));
    }

    #[test]
    fn claimed_height_is_credited_only_up_to_what_was_proven_or_own_height() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 10_010, 1), [1; 32], t0);
        let a = m.get(&[1; 32]).unwrap().clone();
        assert_eq!(a.credited(10), 10);
        assert!(a.unverified(10, 10));
        m.prove(&[1; 32], 500);
        assert_eq!(m.max_credited(10, t0), 500);
        m.distrust(&[1; 32], t0 + Duration::from_secs(60));
        assert_eq!(
            m.max_credited(10, t0),
            0,
            "a distrusted member counts for nothing"
        );
        assert!(!m
            .get(&[1; 32])
            .unwrap()
            .distrusted(t0 + Duration::from_secs(61)));
    }

    #[test]
    fn unanswered_probe_is_overdue_and_an_answer_clears_it() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 100, 1), [1; 32], t0);
        m.observe(&info("b:1", 100, 1), [2; 32], t0);
        m.start_probe(&[1; 32], 100, t0);
        m.start_probe(&[2; 32], 100, t0);
        m.prove(&[2; 32], 100);
        let late = t0 + Duration::from_secs(6);
        assert_eq!(
            m.probes_overdue(late, Duration::from_secs(5)),
            vec![[1; 32]]
        );
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        for i in 0..MEMBERS_MAX {
            assert_eq!(
                m.observe(&info(&format!("h:{i}"), 1, 1), [i as u8; 32], t0),
                Observed::Joined
            );
        }
        let mut extra = [0u8; 32];
        extra[31] = 1;
        assert_eq!(m.observe(&info("extra:1", 1, 1), extra, t0), Observed::Full);
    }
}
