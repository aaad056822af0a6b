//! Membership (orderer flow: config block applied -> [membership] -> Raft voters).
//!
//! The consenter set lives in the channel config and changes only through config blocks
//! (one consenter at a time, see `shared_proto::config_update`). Raft's membership follows
//! it, driven by the leader ([`run`]), the way etcd adds members:
//!
//! | config vs Raft membership                         | the leader does                       |
//! |---------------------------------------------------|---------------------------------------|
//! | a consenter Raft does not know                     | adds it as a learner (it replicates the log, or gets a snapshot and pulls the blocks) |
//! | a learner the config names, caught up              | promotes it to voter                  |
//! | a voter the config no longer names                 | removes it (joint consensus)          |
//! | itself, no longer named                             | stops its Raft for the channel; the others elect a leader that removes it |
//! | a learner the config does not name                 | removes it                            |
//! | a member whose address changed                     | updates its address                   |
//!
//! Before a consenter change is ordered, [`check_change`] refuses one that would leave fewer
//! live, caught-up voters than a quorum, and any change while another is still being carried
//! out (the config and Raft's voters differ): the operator gets a message naming why.
//!
//! A node removed from the consenter set stops its Raft for the channel once Raft's membership
//! no longer has it, or once it is fully applied and no leader replicates to it (see
//! [`removal_final`]), logs why, and does not try to rejoin; to take part again it must be
//! named by a later config and restarted.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use openraft::BasicNode;
use openraft::ChangeMembers;
use shared_proto::config_update::ConsenterChange;

use crate::broadcast::BroadcastError;
use crate::channels::ChannelRuntime;
use crate::consensus::NodeId;

/// How often the leader compares the config with Raft's membership.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(200);
/// Deadline of one membership change call.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A learner within this many entries of the leader's log is caught up and may be promoted.
pub const CAUGHT_UP_ENTRIES: u64 = 64;
/// A removed consenter that has had no leader this long since its removal stops.
pub const LEADERLESS: Duration = Duration::from_secs(5);

/// When this node last heard an answer from each other member of one channel's Raft.
#[derive(Debug, Default)]
pub struct Liveness {
    last_ok: Mutex<BTreeMap<NodeId, Instant>>,
}

impl Liveness {
    pub fn heard(&self, node: NodeId) {
        let mut map = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(node, Instant::now());
    }

    /// Whether `node` answered within `bound`.
    pub fn recent(&self, node: NodeId, bound: Duration) -> bool {
        self.active([node].into_iter(), 0, Instant::now(), bound) == 1
    }

    /// How many of `voters` answered within `bound` before `now`, counting `this_node` (which
    /// hears itself) when it is a voter (the `active_nodes` metric).
    pub fn active(
        &self,
        voters: impl Iterator<Item = NodeId>,
        this_node: NodeId,
        now: Instant,
        bound: Duration,
    ) -> usize {
        let last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        voters
            .filter(|v| {
                *v == this_node
                    || last
                        .get(v)
                        .is_some_and(|t| now.saturating_duration_since(*t) <= bound)
            })
            .count()
    }
}

/// This node's role in the channel: `consenter` (a Raft voter), `onboarding` (named by the
/// config, not yet a voter: a learner catching up), `follower` (not named by the config) or
/// `removed` (a config update removed it; its Raft is stopped).
pub fn role(me: NodeId, channel: &ChannelRuntime) -> &'static str {
    if channel.removed_at().is_some() {
        return "removed";
    }
    let named = channel.config().consenters().iter().any(|c| c.id == me);
    let voter = channel
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == me);
    match (named, voter) {
        (_, true) => "consenter",
        (true, false) => "onboarding",
        (false, false) => "follower",
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

fn refused(message: String) -> BroadcastError {
    BroadcastError::ConfigUpdate {
        refusal: None,
        message,
    }
}

/// The desired members: the config's consenters and their cluster addresses.
fn desired(channel: &ChannelRuntime) -> BTreeMap<NodeId, String> {
    channel
        .config()
        .consenters()
        .iter()
        .map(|c| (c.id, format!("{}:{}", c.host, c.port)))
        .collect()
}

/// Refuses a consenter change while another is in flight, and (on the leader, which alone
/// knows who is live) one that would leave fewer live, caught-up voters than a quorum.
pub fn check_change(
    me: NodeId,
    channel: &ChannelRuntime,
    change: &ConsenterChange,
) -> Result<(), BroadcastError> {
    let metrics = channel.raft.metrics().borrow().clone();
    if *change == ConsenterChange::None || metrics.current_leader != Some(me) {
        // Only the leader knows the membership for sure (a node that just joined knows none)
        // and who is live: it checks again when a follower forwards the update.
        return Ok(());
    }
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let wanted: BTreeSet<NodeId> = desired(channel).keys().copied().collect();
    if membership.get_joint_config().len() > 1 || voters != wanted {
        return Err(refused(format!(
            "a consenter change is still in progress: the config names consenters {wanted:?} \
             but Raft's voters are {voters:?} (learners {learners:?}); retry when they agree \
             (`orderer admin status` shows both)"
        )));
    }
    let bound = crate::consensus::quorum_silence_max(channel.raft.config());
    let last = metrics.last_log_index.unwrap_or(0);
    let replication = metrics.replication.clone().unwrap_or_default();
    let live: BTreeSet<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| {
            *v == me
                || (channel.liveness.recent(*v, bound)
                    && replication
                        .get(v)
                        .and_then(|m| m.map(|l| l.index))
                        .is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last))
        })
        .collect();
    let (what, after, live_after) = match change {
        ConsenterChange::None => return Ok(()),
        ConsenterChange::Add(c) => (
            format!("adding consenter {}", c.id),
            voters.len() + 1,
            // The new node counts once it is caught up and promoted.
            live.len() + 1,
        ),
        ConsenterChange::Remove(c) => (
            format!("removing consenter {}", c.id),
            voters.len() - usize::from(voters.contains(&c.id)),
            live.len() - usize::from(live.contains(&c.id)),
        ),
        ConsenterChange::Replace { new, .. } => (
            // The node restarts with its new certificate or address: out for a while.
            format!("replacing consenter {} (it restarts)", new.id),
            voters.len(),
            live.len() - usize::from(live.contains(&new.id)),
        ),
    };
    if live_after < quorum(after) {
        return Err(refused(format!(
            "{what} would leave {live_after} live, caught-up voter(s) of {after}, fewer than \
             the quorum of {}; live now: {live:?} of voters {voters:?}; bring the others back \
             first",
            quorum(after)
        )));
    }
    Ok(())
}

/// Keeps Raft's membership following the config while this node leads; stops this node's Raft
/// for the channel if the config removes it. Ends when Raft stops.
pub async fn run(channel: Arc<ChannelRuntime>, me: NodeId) {
    let mut config = channel.config.clone();
    // (when this node saw the config drop it, that config's sequence)
    let mut removed: Option<(Instant, u64)> = None;
    // A node joins before the config names it; it is removed only once a config that named
    // it is replaced by one that does not.
    let mut named = false;
    loop {
        let metrics = channel.raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let wanted = desired(&channel);
        named |= wanted.contains_key(&me);
        if named && !wanted.contains_key(&me) {
            let (since, sequence) =
                *removed.get_or_insert_with(|| (Instant::now(), channel.config().sequence()));
            // A leader the config removed stops at once: removing itself from Raft's membership
            // (openraft 0.9 has no leadership transfer) left clusters stuck in a joint config
            // and electing for minutes (grow_3_to_5..., under load). The others elect a new
            // leader, which removes this voter like any other.
            if metrics.current_leader == Some(me) || removal_final(&metrics, me, since) {
                stop_removed(&channel, me, sequence).await;
                return;
            }
        } else {
            removed = None;
        }
        if metrics.current_leader == Some(me) {
            reconcile(&channel, me, &metrics, &wanted).await;
        }
        tokio::select! {
            changed = config.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

/// Whether a node the config in force no longer names is out for good. A node replaying the
/// chain passes through old configs (one may have removed it before a later one added it
/// back): while a leader still replicates to it, or its log holds entries it has not applied,
/// it is a member and keeps going. It is out once Raft's membership (the newest it has, which
/// takes effect when appended) no longer has it, or once it has had no leader for
/// [`LEADERLESS`] since the config dropped it (the leader no longer replicates to it; the
/// others refuse its votes, its certificate no longer being pinned).
fn removal_final(
    metrics: &openraft::RaftMetrics<NodeId, BasicNode>,
    me: NodeId,
    since: Instant,
) -> bool {
    let membership = metrics.membership_config.membership();
    let member = membership.voter_ids().any(|v| v == me) || membership.get_node(&me).is_some();
    let leaderless = metrics.current_leader.is_none() && since.elapsed() >= LEADERLESS;
    !member || leaderless
}

async fn stop_removed(channel: &ChannelRuntime, me: NodeId, sequence: u64) {
    tracing::warn!(
        channel = %channel.id,
        node_id = me,
        config_sequence = sequence,
        "this node is no longer a consenter of the channel (removed by a config update); \
         stopping its Raft for the channel; it keeps its blocks and does not rejoin (to take \
         part again, have a config update name it and restart it)"
    );
    channel.mark_removed(sequence);
    if tokio::time::timeout(CHANGE_TIMEOUT, channel.raft.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(channel = %channel.id, "raft shutdown after removal timed out");
    }
}

/// One step towards the config's membership: at most one change per call.
async fn reconcile(
    channel: &ChannelRuntime,
    me: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, BasicNode>,
    wanted: &BTreeMap<NodeId, String>,
) {
    let membership = metrics.membership_config.membership();
    let joint = membership.get_joint_config();
    if joint.len() > 1 {
        // A leader that started this change lost leadership before the joint config's second
        // step (found stuck: 5 voters at the config that removed one). Finish it: the last
        // set of the joint config is where the change was going.
        if let Some(target) = joint.last().cloned() {
            let change = ChangeMembers::ReplaceAllVoters(target);
            tracing::info!(channel = %channel.id, ?change, "membership: finish a joint config");
            if let Ok(Err(e)) = tokio::time::timeout(
                CHANGE_TIMEOUT,
                channel.raft.change_membership(change, false),
            )
            .await
            {
                tracing::debug!(channel = %channel.id, error = %e, "membership: finish joint");
            }
        }
        return;
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let replication = metrics.replication.clone().unwrap_or_default();
    let node = |addr: &String| BasicNode::new(addr.clone());
    let change: Option<(&str, ChangeMembers<NodeId, BasicNode>)> = if let Some((id, addr)) = wanted
        .iter()
        .find(|(id, _)| membership.get_node(id).is_none())
    {
        Some((
            "add learner",
            ChangeMembers::AddNodes(BTreeMap::from([(*id, node(addr))])),
        ))
    } else if let Some((id, addr)) = wanted
        .iter()
        .find(|(id, addr)| membership.get_node(id).is_some_and(|n| &n.addr != *addr))
    {
        Some((
            "update address",
            ChangeMembers::SetNodes(BTreeMap::from([(*id, node(addr))])),
        ))
    } else if let Some(id) = learners.iter().find(|id| {
        wanted.contains_key(id)
            && replication
                .get(id)
                .and_then(|m| m.map(|l| l.index))
                .is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last)
    }) {
        Some((
            "promote caught-up learner",
            ChangeMembers::AddVoterIds(BTreeSet::from([*id])),
        ))
    } else if let Some(id) = voters
        .iter()
        .find(|id| !wanted.contains_key(id) && **id != me)
    {
        Some((
            "remove voter",
            ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
        ))
    } else {
        learners
            .iter()
            .find(|id| !wanted.contains_key(id))
            .map(|id| {
                (
                    "remove learner",
                    ChangeMembers::RemoveNodes(BTreeSet::from([*id])),
                )
            })
    };
    let Some((what, change)) = change else {
        return;
    };
    tracing::info!(channel = %channel.id, ?change, "membership: {what}");
    match tokio::time::timeout(
        CHANGE_TIMEOUT,
        channel.raft.change_membership(change, false),
    )
    .await
    {
        Ok(Ok(_)) => tracing::info!(channel = %channel.id, "membership: {what}: committed"),
        Ok(Err(e)) => tracing::warn!(channel = %channel.id, error = %e, "membership: {what}"),
        Err(_) => tracing::warn!(channel = %channel.id, "membership: {what}: timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_counts_this_node_and_voters_heard_within_the_bound() {
        let heard = Liveness::default();
        let bound = Duration::from_secs(1);
        heard.heard(2);
        heard.heard(4); // not a voter
        let now = Instant::now();
        assert_eq!(heard.active([1, 2, 3].into_iter(), 1, now, bound), 2);
        assert_eq!(heard.active([2, 3].into_iter(), 1, now, bound), 1);
        let later = now + Duration::from_secs(2);
        assert_eq!(heard.active([1, 2, 3].into_iter(), 1, later, bound), 1);
        heard.heard(3);
        assert_eq!(
            heard.active([1, 2, 3].into_iter(), 1, Instant::now(), bound),
            3
        );
        assert!(heard.recent(3, bound));
        assert!(!heard.recent(1, bound));
    }
}
