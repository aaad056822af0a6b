//! Raft transport: openraft RPCs over the tonic `Cluster` service with mutual TLS.
//!
//! One lazily connected channel per peer address, shared by every Raft group (channel) and
//! every replication stream. Addresses are the consenters' as the channel config advertises
//! them; the node's [`Dialer`] connects to their `address_overrides` instead. Transport failures map to `Unreachable` (openraft backs off);
//! a remote Raft error comes back as `RemoteError`. Every call carries openraft's deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
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
use openraft::LogId;
use openraft::Vote;
use shared_proto::channel::BYTES_ABSOLUTE_MAX_CEILING;
use shared_proto::dial::Dialer;
use shared_proto::pb::orderer::cluster_client::ClusterClient;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::RaftRequest;
use shared_proto::pb::orderer::RaftResponse;
use tonic::transport::Channel;

use super::decode;
use super::encode;
use super::Entry;
use super::NodeId;
use super::Request;
use super::TypeConfig;

/// Largest Raft message accepted or sent. One entry is at most one proposer batch
/// ([`super::proposer::BATCH_BYTES_MAX`]) or a single envelope (at most
/// [`BYTES_ABSOLUTE_MAX_CEILING`]), so one entry always fits with room for framing.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of entries one AppendEntries carries when it carries more than one entry. openraft
/// gives an AppendEntries one heartbeat to complete and resends the same range after a
/// failure, so a message must stay small enough to cross in that time on a loaded node.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(
    BYTES_ABSOLUTE_MAX_CEILING as usize + super::proposer::BATCH_BYTES_MAX + 1024 * 1024
        <= RAFT_MESSAGE_BYTES_MAX
);

/// Connections to the other orderers' cluster listeners, shared across channels.
#[derive(Debug, Clone)]
pub struct ClusterClients {
    dialer: Arc<Dialer>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// The address could not be turned into an endpoint.
#[derive(Debug, thiserror::Error)]
#[error("bad cluster address {addr}: {reason}")]
pub struct AddressError {
    pub addr: String,
    pub reason: String,
}

impl ClusterClients {
    pub fn new(dialer: Arc<Dialer>) -> Self {
        ClusterClients {
            dialer,
            channels: Arc::default(),
        }
    }

    /// A client for the orderer advertised at `addr` (host:port); connects on first use.
    pub fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, AddressError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = self
                    .dialer
                    .endpoint(addr)
                    .map_err(|e| AddressError {
                        addr: addr.to_owned(),
                        reason: e.to_string(),
                    })?
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_timeout(std::time::Duration::from_secs(2));
                let c = endpoint.connect_lazy();
                map.insert(addr.to_owned(), c.clone());
                c
            }
        };
        Ok(ClusterClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX))
    }
}

/// openraft's network factory for one channel's Raft group.
#[derive(Debug, Clone)]
pub struct Network {
    channel_id: String,
    clients: ClusterClients,
    /// Per peer: what outlives one openraft connection to it.
    links: Arc<Mutex<HashMap<NodeId, Arc<PeerLink>>>>,
    /// When each peer last answered (for the membership checks).
    liveness: Arc<crate::membership::Liveness>,
}

impl Network {
    pub fn new(
        channel_id: &str,
        clients: ClusterClients,
        liveness: Arc<crate::membership::Liveness>,
    ) -> Self {
        Network {
            channel_id: channel_id.to_owned(),
            clients,
            links: Arc::default(),
            liveness,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            channel_id: self.channel_id.clone(),
            target,
            client: self.clients.client(&node.addr).map_err(Arc::new),
            liveness: self.liveness.clone(),
            link: self
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(target)
                .or_default()
                .clone(),
        }
    }
}

/// What one channel's Raft group keeps per peer across the connections openraft opens to it.
#[derive(Debug, Default)]
struct PeerLink {
    /// Held by an AppendEntries that carries entries while it crosses: one at a time.
    crossing: Arc<tokio::sync::Mutex<()>>,
    /// The last entry the peer acknowledged to a crossing, with the leader vote it was sent
    /// under. openraft stops waiting after one heartbeat, so it may not have seen that answer.
    acked: Mutex<Option<(Vote<NodeId>, LogId<NodeId>)>>,
}

impl PeerLink {
    fn record_ack(&self, vote: Vote<NodeId>, last: LogId<NodeId>) {
        let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        match &*acked {
            Some((v, l)) if *v == vote && *l >= last => {}
            _ => *acked = Some((vote, last)),
        }
    }

    fn forget_ack(&self) {
        *self.acked.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The entry of `rpc` the peer already holds by an earlier acknowledgement under the same
    /// leader vote, when that is past `rpc.prev_log_id`. By Raft's log matching (same index
    /// and term, same prefix) the peer then holds every entry of `rpc` up to it.
    fn acked_within(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> Option<LogId<NodeId>> {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        let (vote, acked) = acked.as_ref()?;
        if *vote != rpc.vote || rpc.prev_log_id.is_some_and(|p| p.index >= acked.index) {
            return None;
        }
        let last = rpc.entries.last()?.log_id;
        if acked.index >= last.index {
            // The leader's log is not truncated within its own term: `last` precedes `acked`.
            return (acked.index > last.index || *acked == last).then_some(last);
        }
        rpc.entries
            .iter()
            .find(|e| e.log_id.index == acked.index)
            .filter(|e| e.log_id == *acked)
            .map(|e| e.log_id)
    }
}

/// How long a detached AppendEntries may take to cross (see [`Connection::append_entries`]).
pub const APPEND_ENTRIES_CROSSING_MAX: Duration = Duration::from_secs(10);

/// RPCs to one peer for one channel.
#[derive(Debug)]
pub struct Connection {
    channel_id: String,
    target: NodeId,
    client: Result<ClusterClient<Channel>, Arc<AddressError>>,
    /// Shared by every connection openraft opens to this peer for this channel.
    link: Arc<PeerLink>,
    liveness: Arc<crate::membership::Liveness>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn transport_error<E: std::error::Error>(status: &tonic::Status) -> RpcErr<E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl Connection {
    fn request<Req: serde::Serialize, E: std::error::Error>(
        &self,
        kind: Kind,
        req: &Req,
        deadline: Duration,
    ) -> Result<(ClusterClient<Channel>, tonic::Request<RaftRequest>), RpcErr<E>> {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e.as_ref()))),
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            channel_id: self.channel_id.clone(),
            kind: kind as i32,
            payload,
        });
        request.set_timeout(deadline);
        Ok((client, request))
    }

    fn answer<Resp, E>(
        &self,
        response: Result<RaftResponse, tonic::Status>,
    ) -> Result<Resp, RpcErr<E>>
    where
        Resp: for<'de> serde::Deserialize<'de>,
        E: std::error::Error + for<'de> serde::Deserialize<'de>,
    {
        let response = response.map_err(|s| transport_error(&s))?;
        self.liveness.heard(self.target);
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&response.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: serde::Serialize,
        Resp: for<'de> serde::Deserialize<'de>,
        E: std::error::Error + for<'de> serde::Deserialize<'de>,
    {
        let (mut client, request) = self.request(kind, req, option.hard_ttl())?;
        let response = client.raft(request).await.map(tonic::Response::into_inner);
        self.answer(response)
    }

    /// Sends one AppendEntries on its own task, so that openraft giving up after one heartbeat
    /// does not cut it off mid-transfer: a large entry still reaches the follower (which then
    /// appends it and resets its election timer) instead of being resent from scratch every
    /// heartbeat while the follower hears nothing and elects a new leader. The peer's answer
    /// is kept ([`PeerLink::acked`]) for openraft's next call. One crossing at a time per
    /// peer: a new call first waits for the previous one (within openraft's timeout).
    async fn send_append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let slot = self.link.crossing.clone().lock_owned().await;
        let (mut client, request) =
            self.request(Kind::AppendEntries, rpc, APPEND_ENTRIES_CROSSING_MAX)?;
        let link = self.link.clone();
        let liveness = self.liveness.clone();
        let (target, vote, last) = (self.target, rpc.vote, rpc.entries.last().map(|e| e.log_id));
        let crossing = tokio::spawn(async move {
            let response = client.raft(request).await.map(tonic::Response::into_inner);
            if let Ok(r) = &response {
                liveness.heard(target);
                let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                    decode(&r.payload).unwrap_or(Ok(AppendEntriesResponse::Conflict));
                if let (Ok(AppendEntriesResponse::Success), Some(last)) = (answer, last) {
                    link.record_ack(vote, last);
                }
            }
            drop(slot);
            response
        });
        let response = crossing
            .await
            .unwrap_or_else(|e| Err(tonic::Status::cancelled(e.to_string())));
        self.answer(response)
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    /// Sends the longest prefix of `rpc.entries` within [`APPEND_ENTRIES_BYTES_MAX`] (at least
    /// one entry). When entries were left out, a success is reported to openraft as a partial
    /// success up to the last entry sent, and openraft sends the rest next. openraft's
    /// deadline (`_option`) bounds how long it waits here, not the crossing (see
    /// [`Connection::send_append`]).
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        if rpc.entries.is_empty() {
            // A heartbeat (from the last entry the peer matched) does not queue behind a
            // crossing: the peer's election timer and the quorum check depend on it.
            return self.call(Kind::AppendEntries, &rpc, &option).await;
        }
        if let Some(held) = self.link.acked_within(&rpc) {
            // An earlier crossing delivered entries up to `held` after openraft stopped
            // waiting. Confirm it with a heartbeat from there, and report the peer matched up
            // to it so that openraft sends on from there instead of the same range again.
            let sent_last = rpc.entries.last().map(|e| e.log_id);
            rpc.prev_log_id = Some(held);
            rpc.entries.clear();
            let response = self.call(Kind::AppendEntries, &rpc, &option).await?;
            return match response {
                AppendEntriesResponse::Success if sent_last == Some(held) => Ok(response),
                AppendEntriesResponse::Success => {
                    Ok(AppendEntriesResponse::PartialSuccess(Some(held)))
                }
                AppendEntriesResponse::Conflict => {
                    // Not expected within one leader's term; forget and resend the range.
                    self.link.forget_ack();
                    Err(RPCError::Network(NetworkError::new(&AckGone(held))))
                }
                other => Ok(other),
            };
        }
        let keep = entries_within(&rpc.entries, APPEND_ENTRIES_BYTES_MAX);
        if keep == rpc.entries.len() {
            return self.send_append(&rpc).await;
        }
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|e| e.log_id);
        let response = self.send_append(&rpc).await?;
        Ok(match response {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Kind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

/// The peer no longer holds an entry it acknowledged under the current leader.
#[derive(Debug, thiserror::Error)]
#[error("peer no longer holds entry {0} it acknowledged under this leader")]
struct AckGone(LogId<NodeId>);

/// Approximate encoded size of one entry: its envelopes plus framing.
pub fn entry_bytes(entry: &Entry) -> usize {
    const FRAMING: usize = 64;
    match &entry.payload {
        openraft::EntryPayload::Normal(Request::Envelopes(envelopes)) => {
            envelopes.iter().map(|e| e.len() + 8).sum::<usize>() + FRAMING
        }
        _ => FRAMING,
    }
}

/// How many leading entries fit in `bytes_max` (at least one, so a large entry still moves).
fn entries_within(entries: &[Entry], bytes_max: usize) -> usize {
    let mut total = 0;
    for (i, e) in entries.iter().enumerate() {
        total += entry_bytes(e);
        if total > bytes_max {
            return i.max(1);
        }
    }
    entries.len()
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::EntryPayload;
    use openraft::LogId;

    use super::*;

    fn entry(index: u64, envelope_bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::Envelopes(vec![serde_bytes::ByteBuf::from(
                vec![0u8; envelope_bytes],
            )])),
        }
    }

    #[test]
    fn append_entries_are_cut_by_bytes_and_a_large_entry_travels_alone() {
        let mib = 1024 * 1024;
        let small: Vec<Entry> = (1..=12).map(|i| entry(i, mib / 2)).collect();
        assert_eq!(entries_within(&small, APPEND_ENTRIES_BYTES_MAX), 12);
        let large: Vec<Entry> = (1..=12).map(|i| entry(i, 9 * mib)).collect();
        assert_eq!(entries_within(&large, APPEND_ENTRIES_BYTES_MAX), 1);
        let mixed = vec![entry(1, 3 * mib), entry(2, 3 * mib), entry(3, 3 * mib)];
        assert_eq!(entries_within(&mixed, APPEND_ENTRIES_BYTES_MAX), 2);
        assert_eq!(entries_within(&[], APPEND_ENTRIES_BYTES_MAX), 0);
    }

    fn append(vote: Vote<NodeId>, prev: u64, last: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote,
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), prev)),
            leader_commit: None,
            entries: (prev + 1..=last).map(|i| entry(i, 16)).collect(),
        }
    }

    #[test]
    fn an_ack_openraft_stopped_waiting_for_advances_only_the_same_leaders_range() {
        let vote = Vote::new_committed(1, 1);
        let link = PeerLink::default();
        assert_eq!(link.acked_within(&append(vote, 3, 8)), None);
        link.record_ack(vote, LogId::new(CommittedLeaderId::new(1, 1), 5));
        // Acked up to 5: a resend from 3 is answered from 5; one from 5 on goes out as is.
        assert_eq!(
            link.acked_within(&append(vote, 3, 8)).map(|l| l.index),
            Some(5)
        );
        assert_eq!(link.acked_within(&append(vote, 5, 8)), None);
        // A shorter resend is covered entirely.
        assert_eq!(
            link.acked_within(&append(vote, 2, 4)).map(|l| l.index),
            Some(4)
        );
        // An older ack does not move it back; another leader's vote does not use it.
        link.record_ack(vote, LogId::new(CommittedLeaderId::new(1, 1), 4));
        assert_eq!(
            link.acked_within(&append(vote, 3, 8)).map(|l| l.index),
            Some(5)
        );
        assert_eq!(
            link.acked_within(&append(Vote::new_committed(2, 2), 3, 8)),
            None
        );
        link.forget_ack();
        assert_eq!(link.acked_within(&append(vote, 3, 8)), None);
    }
}
