//! Starting a channel's Raft on a node with no Raft state (orderer flow: node start ->
//! [consensus::rejoin] -> Raft).
//!
//! An empty log store means either the cluster's first boot or a consenter whose data dir was
//! lost (or that starts for the first time after the others). Only the first may call
//! `initialize`; the second must join the existing cluster, and it must not vote again in a
//! term it may already have voted in before its data was lost. So such a node abstains from
//! every vote (the cluster service answers UNAVAILABLE), and once its servers run it asks the
//! other consenters what they hold (`Cluster.RaftState`, no side effect) before deciding:
//!
//! | answers from the others                    | start                                        |
//! |--------------------------------------------|----------------------------------------------|
//! | this node has Raft state                   | `Resumed` (no probe)                         |
//! | any other holds Raft state, or refuses this node (it is no longer pinned there) | `Joined`: no `initialize`; abstains from votes until its own term passes the highest term seen; the leader replicates (or sends a snapshot) |
//! | none holds state, at least a quorum minus this node answered | `FirstBoot`: `initialize` with the genesis membership |
//! | too few answered within [`PROBE_ROUNDS`]   | `FirstBoot`, with a warning (nobody reachable holds state) |

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::BasicNode;
use shared_proto::pb::orderer::RaftStateRequest;

use super::network::ClusterClients;
use super::NodeId;
use crate::channels::ChannelRuntime;

/// Probe rounds before a node that hears too few consenters starts as on a first boot.
pub const PROBE_ROUNDS: u32 = 5;
/// Deadline of one probe call.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const ROUND_PAUSE: Duration = Duration::from_secs(1);

/// How a channel's Raft was started on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftStart {
    /// The node had Raft state and resumed from it.
    Resumed,
    /// No Raft state here; asking the other consenters (no votes meanwhile).
    Deciding,
    /// No consenter held Raft state: the cluster's first boot; `initialize` was called.
    FirstBoot,
    /// Others hold Raft state: joined without `initialize`, vote seeded at `term`.
    Joined { term: u64, seen_from: NodeId },
}

impl RaftStart {
    pub fn as_str(&self) -> &'static str {
        match self {
            RaftStart::Resumed => "resumed",
            RaftStart::Deciding => "deciding",
            RaftStart::FirstBoot => "first_boot",
            RaftStart::Joined { .. } => "joined",
        }
    }
}

/// Asks the other consenters what they hold for `channel_id` and decides how a node with no
/// Raft state starts (see the module table).
pub async fn decide(
    channel_id: &str,
    me: NodeId,
    members: &BTreeMap<NodeId, BasicNode>,
    clients: &ClusterClients,
) -> RaftStart {
    let others: Vec<(NodeId, &BasicNode)> = members
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| (*id, n))
        .collect();
    // A quorum of the members, this node included.
    let needed = (members.len() / 2 + 1).saturating_sub(1);
    for round in 1..=PROBE_ROUNDS {
        let answers = futures::future::join_all(others.iter().map(|(id, node)| async move {
            let mut client = clients.client(&node.addr).ok()?;
            let mut request = tonic::Request::new(RaftStateRequest {
                channel_id: channel_id.to_owned(),
            });
            request.set_timeout(PROBE_TIMEOUT);
            match client.raft_state(request).await {
                Ok(state) => Some((*id, state.into_inner())),
                // A consenter that refuses this node serves the channel with a config that no
                // longer pins it: the cluster exists (this node must never initialize it).
                Err(status) if status.code() == tonic::Code::PermissionDenied => Some((
                    *id,
                    shared_proto::pb::orderer::RaftStateResponse {
                        has_log: true,
                        ..Default::default()
                    },
                )),
                Err(_) => None,
            }
        }))
        .await;
        let answered: Vec<_> = answers.into_iter().flatten().collect();
        if let Some((id, state)) = answered
            .iter()
            .filter(|(_, s)| s.has_log)
            .max_by_key(|(_, s)| s.term)
        {
            return RaftStart::Joined {
                term: state.term,
                seen_from: *id,
            };
        }
        if answered.len() >= needed {
            return RaftStart::FirstBoot;
        }
        tracing::info!(
            channel = %channel_id,
            round,
            answered = answered.len(),
            needed,
            "no Raft state here; waiting to hear from the other consenters before initializing"
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    tracing::warn!(
        channel = %channel_id,
        "no other consenter answered; starting as the cluster's first boot"
    );
    RaftStart::FirstBoot
}

/// A channel's start and the lowest term in which this node may vote.
#[derive(Debug)]
pub struct Rejoin {
    start: Mutex<RaftStart>,
    vote_floor: AtomicU64,
}

impl Rejoin {
    pub fn new(start: RaftStart) -> Self {
        let floor = match start {
            RaftStart::Deciding => u64::MAX,
            _ => 0,
        };
        Rejoin {
            start: Mutex::new(start),
            vote_floor: AtomicU64::new(floor),
        }
    }

    pub fn start(&self) -> RaftStart {
        *self.start.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node may answer a request for its vote in `term`: not while deciding, and
    /// after joining only in terms past every term the cluster had reached when it asked (it
    /// may have voted in those before its data was lost).
    pub fn may_vote(&self, term: u64) -> bool {
        let floor = self.vote_floor.load(Ordering::SeqCst);
        floor == 0 || (floor != u64::MAX && term > floor)
    }

    fn decided(&self, start: RaftStart) {
        let floor = match start {
            RaftStart::Joined { term, .. } => term.max(1),
            RaftStart::Deciding => u64::MAX,
            _ => 0,
        };
        self.vote_floor.store(floor, Ordering::SeqCst);
        *self.start.lock().unwrap_or_else(|p| p.into_inner()) = start;
    }
}

/// Decides how `channel` starts on a node with no Raft state, then initializes (first boot) or
/// leaves the leader to bring it in (joined). Runs once, after the node's servers are up.
pub async fn run(channel: Arc<ChannelRuntime>, me: NodeId, clients: ClusterClients) {
    let members: BTreeMap<NodeId, BasicNode> = channel
        .config()
        .consenters()
        .iter()
        .map(|c| (c.id, BasicNode::new(format!("{}:{}", c.host, c.port))))
        .collect();
    // A node the config does not name as a consenter (it is being added) must never
    // initialize: it waits until a consenter holding Raft state answers, then the leader adds
    // it as a learner.
    let member = members.contains_key(&me);
    let start = loop {
        let start = decide(&channel.id, me, &members, &clients).await;
        if member || matches!(start, RaftStart::Joined { .. }) {
            break start;
        }
        tracing::info!(
            channel = %channel.id,
            "not a consenter of the config this node started from, and no consenter with Raft \
             state answered yet; asking again"
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    };
    match start {
        RaftStart::FirstBoot => {
            // Every consenter initialises with the same membership from the genesis block;
            // openraft accepts the identical initial membership on every node.
            if let Err(e) = channel.raft.initialize(members).await {
                tracing::debug!(channel = %channel.id, error = %e, "initialize");
            }
        }
        RaftStart::Joined { term, seen_from } => tracing::warn!(
            channel = %channel.id,
            term,
            seen_from,
            "no Raft state on this node, but the cluster exists: joining it without \
             initializing; no votes until past term {term}; the leader will replicate the log \
             or send a snapshot"
        ),
        RaftStart::Resumed | RaftStart::Deciding => {}
    }
    channel.rejoin.decided(start);
}
