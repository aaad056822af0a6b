//! Proposing: verified envelopes become Raft entries, and the batch timeout becomes
//! `TimeToCut` entries.
//!
//! Envelopes queue per channel (bounded: a full queue makes Broadcast wait, which slows clients
//! instead of growing memory). One loop drains whatever is queued into one entry (up to
//! [`BATCH_ENVELOPES_MAX`] / [`BATCH_BYTES_MAX`]) and proposes it, keeping up to
//! [`IN_FLIGHT_MAX`] entries in flight so the Raft pipeline stays full. A follower's
//! `client_write` fails with ForwardToLeader; the batch is then forwarded once to the leader
//! over `Cluster.Forward` (the leader proposes it and answers after commit). The answer for an
//! envelope is given only after the entry holding it is committed and applied.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use serde_bytes::ByteBuf;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::ForwardRequest;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::network::ClusterClients;
use super::state_machine::SmStatus;
use super::NodeId;
use super::Raft;
use super::Request;

/// Envelopes waiting to be proposed, per channel.
pub const QUEUE_MAX: usize = 20_000;
/// Envelopes in one Raft entry.
pub const BATCH_ENVELOPES_MAX: usize = 2_000;
/// Bytes of envelopes in one Raft entry.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Entries proposed and not yet committed.
pub const IN_FLIGHT_MAX: usize = 32;
/// How long a forwarded batch may take at the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an envelope was not ordered. Every variant but `Refused` is worth a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no Raft leader is known for channel {channel}; retry shortly")]
    NoLeader { channel: String },
    #[error("forwarding to leader {leader} failed: {message}; retry")]
    Forward { leader: NodeId, message: String },
    #[error("leader refused the envelope: {message}")]
    Refused { status: Status, message: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

struct Submission {
    envelope: Vec<u8>,
    forwardable: bool,
    done: oneshot::Sender<Result<(), ProposeError>>,
}

/// Hands envelopes to Raft for one channel.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Submission>,
}

impl Proposer {
    pub fn spawn(channel_id: String, raft: Raft, clients: ClusterClients) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(batch_loop(channel_id, raft, clients, rx));
        Proposer { tx }
    }

    /// Orders `envelope`; returns once it is committed. `forwardable`: a follower may forward
    /// it to the leader (false for envelopes that were themselves forwarded).
    pub async fn submit(&self, envelope: Vec<u8>, forwardable: bool) -> Result<(), ProposeError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                envelope,
                forwardable,
                done,
            })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

async fn batch_loop(
    channel_id: String,
    raft: Raft,
    clients: ClusterClients,
    mut rx: mpsc::Receiver<Submission>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    // A submission that did not fit the previous batch starts the next one.
    let mut carried: Option<Submission> = None;
    loop {
        let first = match carried.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
        };
        let mut bytes = first.envelope.len();
        let mut batch = vec![first];
        // An entry holds at most BATCH_BYTES_MAX, or one envelope that is larger on its own.
        while batch.len() < BATCH_ENVELOPES_MAX {
            match rx.try_recv() {
                Ok(s) if bytes + s.envelope.len() > BATCH_BYTES_MAX => {
                    carried = Some(s);
                    break;
                }
                Ok(s) => {
                    bytes += s.envelope.len();
                    batch.push(s);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (raft, clients, channel_id) = (raft.clone(), clients.clone(), channel_id.clone());
        tokio::spawn(async move {
            propose(&channel_id, &raft, &clients, batch).await;
            drop(permit);
        });
    }
}

async fn propose(channel_id: &str, raft: &Raft, clients: &ClusterClients, batch: Vec<Submission>) {
    let (envelopes, done): (Vec<ByteBuf>, Vec<(bool, oneshot::Sender<_>)>) = batch
        .into_iter()
        .map(|s| (ByteBuf::from(s.envelope), (s.forwardable, s.done)))
        .unzip();
    match raft
        .client_write(Request::Envelopes(envelopes.clone()))
        .await
    {
        Ok(_) => {
            for (_, d) in done {
                let _ = d.send(Ok(()));
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
            let (leader, node) = match (fwd.leader_id, fwd.leader_node) {
                (Some(id), Some(node)) => (id, node),
                _ => {
                    let err = ProposeError::NoLeader {
                        channel: channel_id.to_owned(),
                    };
                    for (_, d) in done {
                        let _ = d.send(Err(err.clone()));
                    }
                    return;
                }
            };
            let (fwd_env, fwd_done, local_done) = split_forwardable(envelopes, done);
            for d in local_done {
                let _ = d.send(Err(ProposeError::NoLeader {
                    channel: channel_id.to_owned(),
                }));
            }
            if fwd_done.is_empty() {
                return;
            }
            let results = forward(channel_id, clients, leader, &node.addr, fwd_env).await;
            match results {
                Ok(results) if results.len() == fwd_done.len() => {
                    for (d, r) in fwd_done.into_iter().zip(results) {
                        let _ = d.send(r);
                    }
                }
                Ok(results) => {
                    let err = ProposeError::Forward {
                        leader,
                        message: format!(
                            "{} answers for {} envelopes",
                            results.len(),
                            fwd_done.len()
                        ),
                    };
                    for d in fwd_done {
                        let _ = d.send(Err(err.clone()));
                    }
                }
                Err(err) => {
                    for d in fwd_done {
                        let _ = d.send(Err(err.clone()));
                    }
                }
            }
        }
        Err(e) => {
            let err = ProposeError::Raft(e.to_string());
            for (_, d) in done {
                let _ = d.send(Err(err.clone()));
            }
        }
    }
}

type Done = oneshot::Sender<Result<(), ProposeError>>;

fn split_forwardable(
    envelopes: Vec<ByteBuf>,
    done: Vec<(bool, Done)>,
) -> (Vec<Vec<u8>>, Vec<Done>, Vec<Done>) {
    let mut fwd_env = Vec::new();
    let mut fwd_done = Vec::new();
    let mut local = Vec::new();
    for (env, (forwardable, d)) in envelopes.into_iter().zip(done) {
        if forwardable {
            fwd_env.push(env.into_vec());
            fwd_done.push(d);
        } else {
            local.push(d);
        }
    }
    (fwd_env, fwd_done, local)
}

async fn forward(
    channel_id: &str,
    clients: &ClusterClients,
    leader: NodeId,
    addr: &str,
    envelopes: Vec<Vec<u8>>,
) -> Result<Vec<Result<(), ProposeError>>, ProposeError> {
    let fail = |message: String| ProposeError::Forward { leader, message };
    let mut client = clients.client(addr).map_err(|e| fail(e.to_string()))?;
    let mut request = tonic::Request::new(ForwardRequest {
        channel_id: channel_id.to_owned(),
        envelopes,
    });
    request.set_timeout(FORWARD_TIMEOUT);
    let response = client
        .forward(request)
        .await
        .map_err(|s| fail(format!("{}: {}", s.code(), s.message())))?;
    Ok(response
        .into_inner()
        .results
        .into_iter()
        .map(|r| {
            let status = Status::try_from(r.status).unwrap_or(Status::Unknown);
            match status {
                Status::Success => Ok(()),
                Status::ServiceUnavailable => Err(ProposeError::Forward {
                    leader,
                    message: r.info,
                }),
                _ => Err(ProposeError::Refused {
                    status,
                    message: r.info,
                }),
            }
        })
        .collect())
}

/// Proposes `TimeToCut{b}` when this node leads and the oldest envelope pending for block `b`
/// has waited `timeout`. A stale or duplicate marker is harmless: the state machine ignores
/// it, so a new leader simply starts its own timer for whatever is pending.
pub async fn batch_timer(
    raft: Raft,
    node_id: NodeId,
    mut status: watch::Receiver<SmStatus>,
    timeout: Duration,
) {
    // (block number, when we first saw envelopes pending for it, next time to act)
    let mut tracking: Option<(u64, Instant)> = None;
    loop {
        let st = status.borrow_and_update().clone();
        if st.pending == 0 {
            tracking = None;
            if status.changed().await.is_err() {
                return;
            }
            continue;
        }
        let deadline = match tracking {
            Some((b, at)) if b == st.next_block => at,
            _ => {
                let at = Instant::now() + timeout;
                tracking = Some((st.next_block, at));
                at
            }
        };
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let leader = raft.metrics().borrow().current_leader;
                if leader == Some(node_id) {
                    let raft = raft.clone();
                    let block_number = st.next_block;
                    tokio::spawn(async move {
                        if let Err(e) = raft.client_write(Request::TimeToCut { block_number }).await {
                            tracing::debug!(error = %e, block_number, "time-to-cut not proposed");
                        }
                    });
                }
                // Act again after another timeout if the block is still not cut (lost
                // proposal, or leadership moved here later).
                tracking = Some((st.next_block, Instant::now() + timeout));
            }
        }
    }
}
