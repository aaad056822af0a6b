//! When this node last heard each other consenter's Raft answer, per channel: the transport
//! ([`super::network::Network`]) wrapped so every answered RPC is stamped. openraft 0.9 keeps
//! per-follower acknowledgement times to itself (it exports only the quorum's,
//! `millis_since_quorum_ack`), and an operator needs the count of live voters, not just whether
//! a quorum is live: a 3-node channel with one node down still has a quorum and is one failure
//! from stopping. Read by the `active_nodes` metric ([`crate::metrics`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use openraft::error::InstallSnapshotError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;

use super::network::Connection;
use super::network::Network;
use super::NodeId;
use super::TypeConfig;

/// Last time each consenter's Raft answered this node (one entry per consenter this node has
/// sent to: bounded by the membership).
#[derive(Debug, Default)]
pub struct HeardFrom {
    last: Mutex<HashMap<NodeId, Instant>>,
}

impl HeardFrom {
    fn record(&self, node: NodeId) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(node, Instant::now());
    }

    /// How many of `voters` answered within `bound` before `now`, counting `this_node` (which
    /// hears itself) when it is a voter.
    pub fn active(
        &self,
        voters: impl Iterator<Item = NodeId>,
        this_node: NodeId,
        now: Instant,
        bound: Duration,
    ) -> usize {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
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

/// [`Network`] whose connections stamp [`HeardFrom`] on every answer.
#[derive(Debug, Clone)]
pub struct HeardNetwork {
    inner: Network,
    heard: Arc<HeardFrom>,
}

impl HeardNetwork {
    pub fn new(inner: Network, heard: Arc<HeardFrom>) -> Self {
        HeardNetwork { inner, heard }
    }
}

impl RaftNetworkFactory<TypeConfig> for HeardNetwork {
    type Network = HeardConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HeardConnection {
            inner: self.inner.new_client(target, node).await,
            target,
            heard: self.heard.clone(),
        }
    }
}

/// A [`Connection`] that records when `target` answered. Only a decoded answer counts (any
/// `Ok`, including a refusal such as a conflict or a higher vote): a transport failure or a
/// remote Raft error (stopping, fatal) does not.
#[derive(Debug)]
pub struct HeardConnection {
    inner: Connection,
    target: NodeId,
    heard: Arc<HeardFrom>,
}

impl HeardConnection {
    fn stamp<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_ok() {
            self.heard.record(self.target);
        }
        result
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl RaftNetwork<TypeConfig> for HeardConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let result = self.inner.append_entries(rpc, option).await;
        self.stamp(result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let result = self.inner.install_snapshot(rpc, option).await;
        self.stamp(result)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let result = self.inner.vote(rpc, option).await;
        self.stamp(result)
    }

    fn backoff(&self) -> Backoff {
        self.inner.backoff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_counts_this_node_and_voters_heard_within_the_bound() {
        let heard = HeardFrom::default();
        let bound = Duration::from_secs(1);
        heard.record(2);
        heard.record(4); // not a voter
        let now = Instant::now();
        assert_eq!(heard.active([1, 2, 3].into_iter(), 1, now, bound), 2);
        assert_eq!(heard.active([2, 3].into_iter(), 1, now, bound), 1);
        let later = now + Duration::from_secs(2);
        assert_eq!(heard.active([1, 2, 3].into_iter(), 1, later, bound), 1);
        heard.record(3);
        assert_eq!(
            heard.active([1, 2, 3].into_iter(), 1, Instant::now(), bound),
            3
        );
    }
}
