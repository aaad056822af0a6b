//! Proposing: verified envelopes become Raft entries (the batch timeout's `TimeToCut`
//! entries are proposed by [`super::batch_timer`]).
//!
//! Envelopes queue per channel (bounded in count here and in bytes by the node-wide budget in
//! [`crate::broadcast`]). One loop drains whatever is queued into one entry (up to
//! [`BATCH_ENVELOPES_MAX`] / [`BATCH_BYTES_MAX`], or one larger envelope alone) and proposes
//! it, keeping up to [`IN_FLIGHT_MAX`] entries in flight (few: what arrives meanwhile forms the
//! next entry, so the entries grow with the load and the leader's fsyncs do not). On a
//! follower the batch is forwarded once to the leader it knows over `Cluster.Forward` (the
//! leader proposes it and answers after commit); the leader moves the envelopes into the entry
//! without keeping a copy. The answer for an envelope is given only after the entry holding it
//! is committed and applied.
//!
//! Every proposal ends within [`PROPOSAL_TIMEOUT`], and at once when this node stops leading
//! while it waits: openraft may never answer a write whose entry was replaced (a former
//! leader that installs a snapshot past its own log), and an in-flight slot held forever would
//! stop the channel taking writes. Such an envelope may still be ordered by the new leader;
//! the answer says so, and a retry is safe (the retry filter and the tx index drop copies).
//!
//! | outcome of one proposal                     | answer per envelope                      |
//! |---------------------------------------------|------------------------------------------|
//! | committed and applied                       | Ok, or `Refused` for an envelope the cutter refused |
//! | this node is a follower, leader known       | forwarded; the leader's answer           |
//! | no leader known                             | `NoLeader` (retryable)                   |
//! | leadership lost while waiting               | `LeadershipLost` (retryable, may be ordered) |
//! | leader without a quorum's ack for [`super::quorum_silence_max`] | `NoQuorum` at once, nothing proposed |
//! | no answer within [`PROPOSAL_TIMEOUT`]       | `Timeout` (retryable, may be ordered)    |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::raft::ClientWriteResponse;
use openraft::BasicNode;
use openraft::RaftMetrics;
use serde_bytes::ByteBuf;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::ForwardRequest;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::network::ClusterClients;
use super::NodeId;
use super::Raft;
use super::Request;
use super::TypeConfig;

/// Envelopes waiting to be proposed, per channel (their bytes are bounded node-wide by
/// [`crate::broadcast::InFlightBytes`]).
pub const QUEUE_MAX: usize = 20_000;
/// Envelopes in one Raft entry.
pub const BATCH_ENVELOPES_MAX: usize = 2_000;
/// Bytes of envelopes in one Raft entry (a single larger envelope travels alone).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Entries proposed and not yet committed. Small on purpose: openraft 0.9's core appends
/// each `client_write` on its own and waits for that append's fsync before it reads the next
/// message, so every entry costs the leader one fsync in series. With few entries in flight,
/// envelopes that arrive meanwhile wait here and go out together in the next entry (group
/// commit by entry size: 35 envelopes per entry instead of 6 at 256 in flight). Measured with
/// `bench ordering` (docs/performance.md): 2 in flight ordered 35–45 % more than 32.
pub const IN_FLIGHT_MAX: usize = 2;
/// How long one proposal may wait for commit before its envelopes get a retryable answer.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded batch may take at the leader (its own proposal timeout plus travel).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);

/// Why an envelope was not ordered. Every variant but `Refused` is worth a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no Raft leader is known for channel {channel}; retry shortly")]
    NoLeader { channel: String },
    #[error("forwarding to leader {leader} failed: {message}; retry")]
    Forward { leader: NodeId, message: String },
    #[error("leader refused the envelope: {message}")]
    Refused { status: Status, message: String },
    #[error("leadership lost while the envelope was being ordered (it may still be ordered; a retry is safe)")]
    LeadershipLost,
    #[error("not committed within {} ms (it may still be ordered; a retry is safe)", .after.as_millis())]
    Timeout { after: Duration },
    #[error("this node leads but has not heard from a quorum for {silent_ms} ms (cut off from the other consenters?); retry another orderer")]
    NoQuorum { silent_ms: u64 },
    #[error("raft: {0}")]
    Raft(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// What the proposer needs from Raft; [`Raft`] in the node, a scripted double in tests.
pub trait Consensus: Clone + Send + Sync + 'static {
    fn write(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<ClientWriteResponse<TypeConfig>, WriteError>> + Send;
    fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>>;
    /// How long a leader may go without a quorum's acknowledgement and still propose.
    fn quorum_silence_max(&self) -> Duration;
}

pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

impl Consensus for Raft {
    fn write(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<ClientWriteResponse<TypeConfig>, WriteError>> + Send {
        self.client_write(request)
    }

    fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        Raft::metrics(self)
    }

    fn quorum_silence_max(&self) -> Duration {
        super::quorum_silence_max(self.config())
    }
}

struct Submission {
    envelope: Vec<u8>,
    forwardable: bool,
    /// When this node's proposer took it.
    received: Instant,
    done: oneshot::Sender<Result<(), ProposeError>>,
}

/// The earliest moment this node received an envelope still pending for a block, as learnt
/// from the answers to the entries it proposed: (block number, received). The batch timer
/// counts the block's timeout from it ([`super::batch_timer`]).
pub type PendingSince = watch::Sender<Option<(u64, Instant)>>;

/// Notes that an envelope received at `received` is pending for block `block`.
fn note_pending(since: &PendingSince, block: u64, received: Instant) {
    since.send_if_modified(|current| match *current {
        Some((b, at)) if b == block && at <= received => false,
        Some((b, _)) if b > block => false,
        _ => {
            *current = Some((block, received));
            true
        }
    });
}

/// Envelopes this node's proposer has taken and not yet answered (queued, in an entry being
/// proposed, or being forwarded). Receivers hear only of its moves to and from zero: at zero,
/// everything this node received is applied, so the batch timer may cut the pending block.
type Outstanding = watch::Sender<usize>;

/// Counts one submission in [`Outstanding`] until dropped (answered, or its caller gone).
struct OutstandingGuard(Arc<Outstanding>);

impl OutstandingGuard {
    fn new(outstanding: &Arc<Outstanding>) -> Self {
        outstanding.send_if_modified(|n| {
            *n += 1;
            *n == 1
        });
        OutstandingGuard(outstanding.clone())
    }
}

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.send_if_modified(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// How long this leader's entries take now, from the receipt of an entry's first envelope
/// to the entry applied (queueing for an in-flight slot, the Raft round, the apply): a moving
/// average (weight 1/8 per entry), in µs; 0 before the first entry.
#[derive(Debug, Default)]
pub struct RoundTime(std::sync::atomic::AtomicU64);

impl RoundTime {
    pub fn observe(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // One writer at a time in practice (entries are answered in turn); a lost update
        // only delays the average by one sample.
        let old = self.0.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new.max(1), Relaxed);
    }

    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// What the batch timer learns from this node's proposer ([`super::batch_timer`]).
#[derive(Debug, Clone)]
pub struct Activity {
    /// See [`PendingSince`].
    pub pending_since: watch::Receiver<Option<(u64, Instant)>>,
    /// Envelopes taken and not yet answered; 0: nothing more is on its way into the log from
    /// this node.
    pub outstanding: watch::Receiver<usize>,
    /// How long an entry of this leader takes now.
    pub round: Arc<RoundTime>,
}

/// Hands envelopes to Raft for one channel.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Submission>,
    pending_since: Arc<PendingSince>,
    outstanding: Arc<Outstanding>,
    round: Arc<RoundTime>,
}

impl Proposer {
    pub fn spawn(channel_id: String, raft: impl Consensus, clients: ClusterClients) -> Self {
        Self::spawn_with(channel_id, raft, clients, QUEUE_MAX)
    }

    fn spawn_with(
        channel_id: String,
        raft: impl Consensus,
        clients: ClusterClients,
        queue_max: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_max);
        let pending_since = Arc::new(PendingSince::new(None));
        let round = Arc::new(RoundTime::default());
        tokio::spawn(batch_loop(
            channel_id,
            raft,
            clients,
            rx,
            (pending_since.clone(), round.clone()),
        ));
        Proposer {
            tx,
            pending_since,
            outstanding: Arc::new(Outstanding::new(0)),
            round,
        }
    }

    /// What the batch timer watches: since when envelopes this node proposed wait in the
    /// pending block, and whether any it took are not yet answered.
    pub fn activity(&self) -> Activity {
        Activity {
            pending_since: self.pending_since.subscribe(),
            outstanding: self.outstanding.subscribe(),
            round: self.round.clone(),
        }
    }

    /// Orders `envelope`; returns once it is committed. `forwardable`: a follower may forward
    /// it to the leader (false for envelopes that were themselves forwarded).
    pub async fn submit(&self, envelope: Vec<u8>, forwardable: bool) -> Result<(), ProposeError> {
        let _outstanding = OutstandingGuard::new(&self.outstanding);
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                envelope,
                forwardable,
                received: Instant::now(),
                done,
            })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        if shared_proto::mutants::active(shared_proto::mutants::Mutant::AckBeforeCommit) {
            // Planted bug: queued is not committed.
            return Ok(());
        }
        rx.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

async fn batch_loop(
    channel_id: String,
    raft: impl Consensus,
    clients: ClusterClients,
    mut rx: mpsc::Receiver<Submission>,
    learnt: (Arc<PendingSince>, Arc<RoundTime>),
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
        let learnt = learnt.clone();
        tokio::spawn(async move {
            propose(&channel_id, &raft, &clients, batch, &learnt).await;
            drop(permit);
        });
    }
}

/// Resolves when `me` no longer leads in `term`.
async fn leadership_lost(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    me: NodeId,
    term: u64,
) {
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.current_term != term || m.current_leader != Some(me) {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// `client_write`, ended by [`PROPOSAL_TIMEOUT`] or by this node losing the leadership it had
/// when the write started.
async fn write_bounded(
    raft: &impl Consensus,
    request: Request,
) -> Result<Result<ClientWriteResponse<TypeConfig>, WriteError>, ProposeError> {
    let metrics = raft.metrics();
    let (me, term, leading) = {
        let m = metrics.borrow();
        (m.id, m.current_term, m.current_leader == Some(m.id))
    };
    let lost = async {
        if leading {
            leadership_lost(metrics, me, term).await
        } else {
            // A follower's write fails at once with ForwardToLeader; the deadline still holds.
            std::future::pending().await
        }
    };
    tokio::select! {
        r = raft.write(request) => Ok(r),
        () = lost => Err(ProposeError::LeadershipLost),
        () = tokio::time::sleep(PROPOSAL_TIMEOUT) => Err(ProposeError::Timeout { after: PROPOSAL_TIMEOUT }),
    }
}

async fn propose(
    channel_id: &str,
    raft: &impl Consensus,
    clients: &ClusterClients,
    batch: Vec<Submission>,
    learnt: &(Arc<PendingSince>, Arc<RoundTime>),
) {
    let (me, leader, quorum_silent_ms) = {
        let m = raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.map(|id| {
            let node = m.membership_config.membership().get_node(&id).cloned();
            (id, node)
        });
        (m.id, leader, m.millis_since_quorum_ack)
    };
    match leader {
        // A leader cut off from its quorum cannot commit: appending more only grows its log
        // and its replication traffic. Refuse at once; the client tries another orderer.
        Some((id, _))
            if id == me
                && quorum_silent_ms
                    .is_some_and(|ms| Duration::from_millis(ms) > raft.quorum_silence_max()) =>
        {
            answer_all(
                batch.into_iter().map(|s| s.done),
                &ProposeError::NoQuorum {
                    silent_ms: quorum_silent_ms.unwrap_or_default(),
                },
            )
        }
        Some((id, _)) if id == me => write_as_leader(raft, batch, learnt).await,
        Some((id, Some(node))) => forward_batch(channel_id, clients, id, &node.addr, batch).await,
        _ => answer_all(
            batch.into_iter().map(|s| s.done),
            &ProposeError::NoLeader {
                channel: channel_id.to_owned(),
            },
        ),
    }
}

fn answer_all(done: impl IntoIterator<Item = Done>, err: &ProposeError) {
    for d in done {
        let _ = d.send(Err(err.clone()));
    }
}

/// Proposes the batch as one entry. The envelopes move into the entry (no copy is kept: a
/// follower forwards before proposing, so nothing here needs them again).
async fn write_as_leader(
    raft: &impl Consensus,
    batch: Vec<Submission>,
    (pending_since, round): &(Arc<PendingSince>, Arc<RoundTime>),
) {
    // The first envelope is the one that waited longest.
    let received = batch.first().map(|s| s.received);
    let (envelopes, done): (Vec<ByteBuf>, Vec<Done>) = batch
        .into_iter()
        .map(|s| (ByteBuf::from(s.envelope), s.done))
        .unzip();
    let response = match write_bounded(raft, Request::Envelopes(envelopes)).await {
        Ok(Ok(response)) => response,
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            // Leadership moved between the check and the write: nothing was appended.
            return answer_all(done, &ProposeError::LeadershipLost);
        }
        Ok(Err(e)) => return answer_all(done, &ProposeError::Raft(e.to_string())),
        Err(err) => return answer_all(done, &err),
    };
    if let Some(received) = received {
        round.observe(received.elapsed());
        if let Some(block) = response.data.pending_in {
            note_pending(pending_since, block, received);
        }
    }
    let refused = &response.data.refused_at;
    let config_refused = &response.data.config_refused;
    for (i, d) in done.into_iter().enumerate() {
        let result = if let Some((_, why)) = config_refused.iter().find(|(p, _)| *p == i as u32) {
            Err(ProposeError::Refused {
                status: Status::PreconditionFailed,
                message: format!("config update refused when applied: {why}"),
            })
        } else if refused.contains(&(i as u32)) {
            Err(ProposeError::Refused {
                status: Status::RequestEntityTooLarge,
                message: "the envelope exceeds the channel's bytes_absolute_max".into(),
            })
        } else {
            Ok(())
        };
        let _ = d.send(result);
    }
}

/// A follower's batch: forwarded once to the leader, whose answers are relayed. Envelopes that
/// were themselves forwarded here are not forwarded again (`NoLeader`: the sender retries).
async fn forward_batch(
    channel_id: &str,
    clients: &ClusterClients,
    leader: NodeId,
    addr: &str,
    batch: Vec<Submission>,
) {
    let no_leader = || ProposeError::NoLeader {
        channel: channel_id.to_owned(),
    };
    let (forwardable, local): (Vec<Submission>, Vec<Submission>) =
        batch.into_iter().partition(|s| s.forwardable);
    answer_all(local.into_iter().map(|s| s.done), &no_leader());
    if forwardable.is_empty() {
        return;
    }
    let (envelopes, done): (Vec<Vec<u8>>, Vec<Done>) = forwardable
        .into_iter()
        .map(|s| (s.envelope, s.done))
        .unzip();
    let expected = done.len();
    match forward(channel_id, clients, leader, addr, envelopes).await {
        Ok(results) if results.len() == expected => {
            for (d, r) in done.into_iter().zip(results) {
                let _ = d.send(r);
            }
        }
        Ok(results) => answer_all(
            done,
            &ProposeError::Forward {
                leader,
                message: format!("{} answers for {expected} envelopes", results.len()),
            },
        ),
        Err(err) => answer_all(done, &err),
    }
}

type Done = oneshot::Sender<Result<(), ProposeError>>;

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

#[cfg(test)]
#[path = "proposer_tests.rs"]
mod tests;
