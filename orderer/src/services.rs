//! gRPC services: client-facing `AtomicBroadcast`, orderer-to-orderer `Cluster` (`Admin`:
//! [`crate::admin`]).
//! Handlers only translate; the work happens in broadcast, deliver and consensus.

use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcast;
use shared_proto::pb::orderer::cluster_server::Cluster;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::ForwardRequest;
use shared_proto::pb::orderer::ForwardResponse;
use shared_proto::pb::orderer::RaftRequest;
use shared_proto::pb::orderer::RaftResponse;
use shared_proto::pb::orderer::RaftStateRequest;
use shared_proto::pb::orderer::RaftStateResponse;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::broadcast;
use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::consensus::decode;
use crate::consensus::encode;
use crate::consensus::NodeId;
use crate::consensus::TypeConfig;
use crate::deliver;

/// Broadcast, Submit and Deliver.
#[derive(Debug, Clone)]
pub struct AtomicBroadcastService {
    pub registry: Arc<Registry>,
}

#[tonic::async_trait]
impl AtomicBroadcast for AtomicBroadcastService {
    type BroadcastStream = broadcast::BroadcastStream;

    async fn broadcast(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        Ok(Response::new(broadcast::serve_stream(
            self.registry.clone(),
            request.into_inner(),
        )))
    }

    type DeliverStream = deliver::DeliverStream;

    async fn deliver(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        Ok(Response::new(deliver::serve_stream(
            self.registry.clone(),
            request.into_inner(),
        )))
    }

    async fn submit(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        let result = broadcast::order(&self.registry, request.into_inner()).await;
        match result {
            Ok(tx_id) => Ok(Response::new(broadcast::response(
                &self.registry,
                Ok(tx_id),
            ))),
            Err(e) => {
                self.registry.metrics.broadcast(e.codes().1);
                Err(e.into_status())
            }
        }
    }
}

/// Raft traffic and forwarded envelopes; callers must be pinned consenters.
#[derive(Debug, Clone)]
pub struct ClusterService {
    pub registry: Arc<Registry>,
}

impl ClusterService {
    /// The channel, if the caller's TLS certificate is a pinned consenter of it. A caller that
    /// is no consenter of any channel learns nothing (not even which channels exist).
    fn channel_for<T>(
        &self,
        request: &Request<T>,
        channel_id: &str,
    ) -> Result<Arc<ChannelRuntime>, Status> {
        let cert = caller_cert(request);
        let denied = || {
            Status::permission_denied(format!(
                "caller's TLS certificate is not a pinned consenter of channel {channel_id:?}"
            ))
        };
        let channels = self.registry.channels();
        if !channels.iter().any(|c| c.is_pinned_consenter(&cert)) {
            return Err(denied());
        }
        let channel = self.registry.get(channel_id).ok_or_else(|| {
            Status::not_found(format!("channel {channel_id:?} is not served here"))
        })?;
        if !channel.is_pinned_consenter(&cert) {
            return Err(denied());
        }
        Ok(channel.clone())
    }

    /// The channel and the Raft node id pinned with the caller's TLS certificate: the only
    /// node the caller may speak as.
    fn consenter_for<T>(
        &self,
        request: &Request<T>,
        channel_id: &str,
    ) -> Result<(Arc<ChannelRuntime>, NodeId), Status> {
        let channel = self.channel_for(request, channel_id)?;
        let cert = caller_cert(request);
        let id = channel
            .config()
            .consenters()
            .iter()
            .find(|c| c.client_tls_cert == cert)
            .map(|c| c.id)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "caller's TLS certificate is not a pinned consenter of channel {channel_id:?}"
                ))
            })?;
        Ok((channel, id))
    }
}

/// DER of the caller's TLS client certificate (empty without one).
fn caller_cert<T>(request: &Request<T>) -> Vec<u8> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
        .unwrap_or_default()
}

/// Refuses a Raft message whose sender (`claimed`: the candidate of a vote, the leader of
/// append-entries and install-snapshot) is not the node pinned with the caller's certificate:
/// one consenter must not depose, vote or lead in another's name.
fn speaks_as_itself(pinned: NodeId, claimed: Option<NodeId>, what: &str) -> Result<(), Status> {
    match claimed {
        Some(id) if id == pinned => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "{what} names node {id} as sender, but the caller's TLS certificate is pinned to node {pinned}"
        ))),
        None => Err(Status::permission_denied(format!(
            "{what} names no sender; the caller's TLS certificate is pinned to node {pinned}"
        ))),
    }
}

fn bad_payload(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("cannot decode raft message: {e}"))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Response<RaftResponse>, Status> {
    encode(value)
        .map(|payload| Response::new(RaftResponse { payload }))
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let (channel, pinned) = self.consenter_for(&request, &request.get_ref().channel_id)?;
        let req = request.into_inner();
        let raft = &channel.raft;
        match Kind::try_from(req.kind) {
            Ok(Kind::AppendEntries) => {
                let rpc: AppendEntriesRequest<TypeConfig> =
                    decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "append-entries")?;
                let leader_commit = rpc.leader_commit.map(|l| l.index);
                let answer = raft.append_entries(rpc).await;
                if answer.as_ref().is_ok_and(|r| r.is_success()) {
                    channel.catch_up.observe_leader_commit(leader_commit);
                }
                encoded(&answer)
            }
            Ok(Kind::Vote) => {
                let rpc: VoteRequest<NodeId> = decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "vote request")?;
                if !channel.rejoin.may_vote(rpc.vote.leader_id().term) {
                    return Err(Status::unavailable(format!(
                        "this node lost or never had its Raft state for channel {:?} and does \
                         not vote until it has caught up with the cluster's terms",
                        channel.id
                    )));
                }
                encoded(&raft.vote(rpc).await)
            }
            Ok(Kind::InstallSnapshot) => {
                let rpc: InstallSnapshotRequest<TypeConfig> =
                    decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "install-snapshot")?;
                encoded(&raft.install_snapshot(rpc).await)
            }
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown raft message kind {}",
                req.kind
            ))),
        }
    }

    async fn raft_state(
        &self,
        request: Request<RaftStateRequest>,
    ) -> Result<Response<RaftStateResponse>, Status> {
        let channel = self.channel_for(&request, &request.get_ref().channel_id)?;
        let m = channel.raft.metrics().borrow().clone();
        let has_log = m.last_log_index.is_some()
            || m.snapshot.is_some()
            || m.vote != openraft::Vote::default();
        Ok(Response::new(RaftStateResponse {
            term: m.current_term,
            has_log,
            last_log_index: m.last_log_index.unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
        }))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let channel = self.channel_for(&request, &request.get_ref().channel_id)?;
        let req = request.into_inner();
        // The forwarding orderer is a pinned consenter that already verified each envelope
        // (signature, Writers, size, replay): propose them as they are, concurrently, instead
        // of verifying every signature a second time on the leader.
        let results = futures::future::join_all(req.envelopes.into_iter().map(|bytes| {
            let channel = channel.clone();
            async move {
                let result = broadcast::order_forwarded(&self.registry, &channel, bytes).await;
                broadcast::response(&self.registry, result)
            }
        }))
        .await;
        Ok(Response::new(ForwardResponse { results }))
    }
}
