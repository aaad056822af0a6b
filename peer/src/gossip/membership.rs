//! Membership of one channel: the org peers heard from, their heights and leadership claims.
//!
//! A member is added by its first verified alive message, refreshed by each newer one (higher
//! sequence), and dropped when none arrived for the expiry; a dropped member that speaks again
//! is simply added again. Pure bookkeeping: the caller passes the time.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use shared_proto::hash::Hash;
use shared_proto::pb::peer::AliveInfo;

/// Most members tracked per channel; alive messages from more are ignored.
pub const MEMBERS_MAX: usize = 256;

/// What an alive message told about a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub endpoint: String,
    pub identity_id: Hash,
    pub height: u64,
    pub sequence: u64,
    pub can_lead: bool,
    pub leader: bool,
    pub last_seen: Instant,
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
    members: HashMap<String, Member>,
}

impl Membership {
    pub fn new(expiry: Duration) -> Self {
        Membership {
            expiry,
            members: HashMap::new(),
        }
    }

    pub fn observe(&mut self, info: &AliveInfo, identity_id: Hash, now: Instant) -> Observed {
        let member = Member {
            endpoint: info.endpoint.clone(),
            identity_id,
            height: info.height,
            sequence: info.sequence,
            can_lead: info.can_lead,
            leader: info.leader,
            last_seen: now,
        };
        let full = self.members.len() >= MEMBERS_MAX;
        match self.members.get_mut(&info.endpoint) {
            Some(known) if known.identity_id == identity_id && known.sequence >= info.sequence => {
                Observed::Stale
            }
            Some(known) => {
                *known = member;
                Observed::Refreshed
            }
            None if full => Observed::Full,
            None => {
                self.members.insert(info.endpoint.clone(), member);
                Observed::Joined
            }
        }
    }

    /// Drops members not heard from within the expiry; returns their endpoints.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expiry = self.expiry;
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|m| now.saturating_duration_since(m.last_seen) > expiry)
            .map(|m| m.endpoint.clone())
            .collect();
        for endpoint in &dead {
            self.members.remove(endpoint);
        }
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

    /// The highest height any alive member reported.
    pub fn max_height(&self, now: Instant) -> u64 {
        self.alive(now).iter().map(|m| m.height).max().unwrap_or(0)
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
        assert_eq!(m.max_height(t1), 9);
    }

    #[test]
    fn replayed_or_reordered_alive_is_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 10, 5), [1; 32], t0);
        assert_eq!(m.observe(&info("a:1", 4, 5), [1; 32], t0), Observed::Stale);
        assert_eq!(m.observe(&info("a:1", 4, 3), [1; 32], t0), Observed::Stale);
        assert_eq!(m.max_height(t0), 10);
        assert_eq!(
            m.observe(&info("a:1", 11, 6), [1; 32], t0),
            Observed::Refreshed
        );
        assert_eq!(m.max_height(t0), 11);
    }

    #[test]
    fn restarted_member_with_new_identity_replaces_the_old_entry() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        m.observe(&info("a:1", 10, 50), [1; 32], t0);
        assert_eq!(
            m.observe(&info("a:1", 2, 1), [2; 32], t0),
            Observed::Refreshed
        );
        assert_eq!(m.max_height(t0), 2);
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        for i in 0..MEMBERS_MAX {
            assert_eq!(
                m.observe(&info(&format!("h:{i}"), 1, 1), [0; 32], t0),
                Observed::Joined
            );
        }
        assert_eq!(
            m.observe(&info("extra:1", 1, 1), [0; 32], t0),
            Observed::Full
        );
    }
}
