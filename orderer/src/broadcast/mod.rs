//! Broadcast (orderer flow: [broadcast] -> consensus -> state machine -> block_store -> deliver).
//!
//! Checks, in order: envelope decodes and names a channel this node serves; size within the
//! channel's `bytes_absolute_max`; `verify_envelope` (headers, tx id rule, creator certificate,
//! signature: verified in batches across streams by [`signatures`], each answered as alone); header type is a transaction (Writers policy) or a config update
//! ([`shared_proto::config_update::check_update`] against the config in force); the tx id is
//! not already ordered. Then the envelope is proposed and the answer comes once it is committed.
//!
//! | refusal                                   | gRPC (Submit)        | in-band (Broadcast)        |
//! |-------------------------------------------|----------------------|----------------------------|
//! | malformed, bad tx id, empty payload       | INVALID_ARGUMENT     | BAD_REQUEST                |
//! | larger than `bytes_absolute_max`          | INVALID_ARGUMENT     | REQUEST_ENTITY_TOO_LARGE   |
//! | larger than 2 × `bytes_absolute_max` (transport cap) | OUT_OF_RANGE | stream ends with OUT_OF_RANGE |
//! | channel not served here                   | NOT_FOUND            | NOT_FOUND                  |
//! | unknown org, expired/foreign cert, bad signature, not a Writer | PERMISSION_DENIED | FORBIDDEN |
//! | header type not accepted (CONFIG, SEEK_INFO, ADMIN) | FAILED_PRECONDITION | BAD_REQUEST     |
//! | config update: malformed / other channel   | INVALID_ARGUMENT     | BAD_REQUEST                |
//! | config update: bad signature, too few admins | PERMISSION_DENIED  | FORBIDDEN                  |
//! | config update: stale sequence, two consenter changes, last consenter, untrusted consenter certificate, invalid new config, a change in flight, a quorum-losing change | FAILED_PRECONDITION | PRECONDITION_FAILED |
//! | tx id already in a block                  | ALREADY_EXISTS       | CONFLICT                   |
//! | repeat while the first copy is not yet in a block | SUCCESS (ordered once: the state machine drops the copy) | SUCCESS |
//! | no leader, leader unreachable, shutting down | UNAVAILABLE       | SERVICE_UNAVAILABLE        |
//! | leadership lost, not ordered within [`ORDER_TIMEOUT`] | UNAVAILABLE | SERVICE_UNAVAILABLE      |
//! | node's in-flight byte budget full for [`BUDGET_WAIT`] | UNAVAILABLE | SERVICE_UNAVAILABLE      |
//! | leader catching up (cannot rule out an old copy) | UNAVAILABLE      | SERVICE_UNAVAILABLE        |
//!
//! Memory: every envelope holds its size from the node-wide [`InFlightBytes`] budget from the
//! moment it is read until it is answered, so the queue, the Raft entries in flight and the
//! streams together stay within [`IN_FLIGHT_BYTES_MAX`]; one Broadcast stream reads no further
//! while its envelopes in progress hold [`STREAM_BYTES_MAX`] or [`STREAM_IN_FLIGHT_MAX`]
//! (HTTP/2 flow control then slows that client alone).

pub mod signatures;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::channel::WRITERS;
use shared_proto::envelope::open_payload;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::verify_opened_deferred;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::BroadcastResponse;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::consensus::proposer::ProposeError;
use signatures::SignatureCheckError;

/// Envelopes of one Broadcast stream being checked or ordered at once; answers keep order.
pub const STREAM_IN_FLIGHT_MAX: usize = 512;
/// Bytes of one Broadcast stream's envelopes in progress.
pub const STREAM_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Bytes of envelopes read and not yet answered, node-wide (every channel, stream and
/// forwarded batch): with 9 MiB envelopes, 14 at a time.
pub const IN_FLIGHT_BYTES_MAX: usize = 128 * 1024 * 1024;
/// How long an envelope waits for room in [`IN_FLIGHT_BYTES_MAX`] before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Server-side bound on ordering one envelope: queue, proposal and forwarding included.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(8);

/// The node-wide byte budget of envelopes in progress.
#[derive(Debug)]
pub struct InFlightBytes {
    room: Arc<Semaphore>,
    bytes_max: usize,
}

impl InFlightBytes {
    pub fn new(bytes_max: usize) -> Self {
        InFlightBytes {
            room: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Holds `bytes` of the budget until the permit drops; refuses after [`BUDGET_WAIT`].
    pub async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BroadcastError> {
        let n = u32::try_from(bytes.min(self.bytes_max)).unwrap_or(u32::MAX);
        match tokio::time::timeout(BUDGET_WAIT, self.room.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ProposeError::ShuttingDown.into()),
            Err(_) => Err(BroadcastError::Busy {
                bytes_max: self.bytes_max,
            }),
        }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.bytes_max - self.room.available_permits()
    }
}

impl Default for InFlightBytes {
    fn default() -> Self {
        InFlightBytes::new(IN_FLIGHT_BYTES_MAX)
    }
}

/// Why Broadcast refused an envelope. [`BroadcastError::codes`] is the only mapping to wire
/// codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BroadcastError {
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    #[error("channel {0:?} is not served by this orderer")]
    UnknownChannel(String),
    #[error("envelope is {size_bytes} bytes; channel limit is {size_bytes_max}")]
    TooLarge {
        size_bytes: usize,
        size_bytes_max: u32,
    },
    #[error(
        "header type {0:?} cannot be broadcast (only transactions and config updates are ordered)"
    )]
    WrongType(HeaderType),
    #[error("config update refused: {message}")]
    ConfigUpdate {
        refusal: Option<Refusal>,
        message: String,
    },
    #[error("creator {subject:?} of {msp_id} does not satisfy the channel's Writers policy")]
    NotWriter { subject: String, msp_id: String },
    #[error("tx {0} is already ordered")]
    AlreadyOrdered(String),
    #[error("{0}")]
    NotOrdered(#[from] ProposeError),
    #[error(
        "the orderer holds its limit of {bytes_max} bytes of envelopes in progress; retry shortly"
    )]
    Busy { bytes_max: usize },
    #[error("not ordered within {} ms (it may still be ordered; a retry is safe)", .after.as_millis())]
    Timeout { after: Duration },
    #[error("this node leads but is still pulling blocks, so it cannot tell whether tx {0} was ordered before; retry shortly")]
    CatchingUp(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl BroadcastError {
    /// The gRPC code (for Submit) and Fabric status (for Broadcast) of this refusal.
    pub fn codes(&self) -> (Code, Status) {
        match self {
            BroadcastError::Envelope(e) => match e.refusal() {
                Refusal::InvalidArgument => (Code::InvalidArgument, Status::BadRequest),
                Refusal::NotFound => (Code::NotFound, Status::NotFound),
                Refusal::PermissionDenied => (Code::PermissionDenied, Status::Forbidden),
            },
            BroadcastError::UnknownChannel(_) => (Code::NotFound, Status::NotFound),
            BroadcastError::TooLarge { .. } => {
                (Code::InvalidArgument, Status::RequestEntityTooLarge)
            }
            BroadcastError::WrongType(_) => (Code::FailedPrecondition, Status::BadRequest),
            BroadcastError::ConfigUpdate { refusal, .. } => match refusal {
                Some(Refusal::InvalidArgument) => (Code::InvalidArgument, Status::BadRequest),
                Some(Refusal::NotFound) => (Code::NotFound, Status::NotFound),
                Some(Refusal::PermissionDenied) => (Code::PermissionDenied, Status::Forbidden),
                None => (Code::FailedPrecondition, Status::PreconditionFailed),
            },
            BroadcastError::NotWriter { .. } => (Code::PermissionDenied, Status::Forbidden),
            BroadcastError::AlreadyOrdered(_) => (Code::AlreadyExists, Status::Conflict),
            BroadcastError::NotOrdered(ProposeError::Refused { status, .. }) => {
                (code_of_status(*status), *status)
            }
            BroadcastError::NotOrdered(_)
            | BroadcastError::Busy { .. }
            | BroadcastError::Timeout { .. }
            | BroadcastError::CatchingUp(_) => (Code::Unavailable, Status::ServiceUnavailable),
            BroadcastError::Storage(_) => (Code::Internal, Status::InternalServerError),
        }
    }

    pub fn into_status(self) -> tonic::Status {
        tonic::Status::new(self.codes().0, self.to_string())
    }
}

fn code_of_status(status: Status) -> Code {
    match status {
        Status::BadRequest | Status::RequestEntityTooLarge => Code::InvalidArgument,
        Status::Forbidden => Code::PermissionDenied,
        Status::NotFound => Code::NotFound,
        Status::Conflict => Code::AlreadyExists,
        Status::PreconditionFailed => Code::FailedPrecondition,
        Status::ServiceUnavailable => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Checks and orders one envelope from a client, within [`ORDER_TIMEOUT`].
pub async fn order(registry: &Registry, envelope: Envelope) -> Result<String, BroadcastError> {
    bounded(order_checked(registry, envelope)).await
}

async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, BroadcastError>>,
) -> Result<T, BroadcastError> {
    tokio::time::timeout(ORDER_TIMEOUT, work)
        .await
        .unwrap_or(Err(BroadcastError::Timeout {
            after: ORDER_TIMEOUT,
        }))
}

async fn order_checked(registry: &Registry, envelope: Envelope) -> Result<String, BroadcastError> {
    let opened = open_payload(&envelope)?;
    let channel_id = &opened.channel_header.channel_id;
    let channel = registry
        .get(channel_id)
        .ok_or_else(|| BroadcastError::UnknownChannel(channel_id.clone()))?;
    let size = envelope.encoded_len();
    if size > channel.limits().bytes_absolute_max as usize {
        return Err(BroadcastError::TooLarge {
            size_bytes: size,
            size_bytes_max: channel.limits().bytes_absolute_max,
        });
    }
    let _held = registry.in_flight.reserve(size).await?;
    let config = channel.config();
    let now = registry.now_unix();
    let (verified, signature) = verify_opened_deferred(&config, opened, now)?;
    registry
        .signatures
        .verify(signature)
        .await
        .map_err(|e| match e {
            SignatureCheckError::Refused(e) => BroadcastError::Envelope(e),
            SignatureCheckError::Stopped => ProposeError::ShuttingDown.into(),
        })?;
    match verified.header_type {
        HeaderType::EndorserTransaction | HeaderType::Message => {
            let writers = config
                .evaluate(WRITERS, &[verified.signer()])
                .map_err(|e| BroadcastError::Storage(e.to_string()))?;
            if !writers {
                return Err(BroadcastError::NotWriter {
                    subject: verified.creator.common_name.clone(),
                    msp_id: verified.creator.msp_id.clone(),
                });
            }
        }
        // Admins' signatures, not the sender's role, authorise a config update.
        HeaderType::ConfigUpdate => {
            // A retry of an update already ordered is answered as one (its sequence is stale
            // now, and a client whose first answer was lost must learn it was ordered).
            ensure_not_ordered(&channel, &verified.tx_id, false)?;
            let checked = shared_proto::config_update::check_update(&config, &verified.data, now)
                .map_err(|e| BroadcastError::ConfigUpdate {
                refusal: e.refusal(),
                message: e.to_string(),
            })?;
            crate::membership::check_change(registry.node_id, &channel, &checked.consenters)?;
        }
        other => return Err(BroadcastError::WrongType(other)),
    }
    drop(config);
    let tx_id = verified.tx_id;
    // A follower forwards: the leader checks its own index again (this node's may have a gap).
    let leading = channel.leader() == Some(registry.node_id);
    ensure_not_ordered(&channel, &tx_id, leading)?;
    // Only the encoded copy waits for the answer.
    let encoded = envelope.encode_to_vec();
    drop(envelope);
    channel.proposer.submit(encoded, true).await?;
    Ok(tx_id)
}

/// Orders an envelope another consenter checked and forwarded, within [`ORDER_TIMEOUT`]. The
/// forwarder's tx index may have a gap (a follower catching up), so this node checks its own:
/// an envelope older than the retry window would otherwise be ordered twice.
pub async fn order_forwarded(
    registry: &Registry,
    channel: &ChannelRuntime,
    envelope: Vec<u8>,
) -> Result<String, BroadcastError> {
    let (tx_id, header_type) = crate::block_store::header_of(&envelope).unwrap_or_default();
    bounded(async {
        let _held = registry.in_flight.reserve(envelope.len()).await?;
        ensure_not_ordered(channel, &tx_id, true)?;
        if header_type == HeaderType::ConfigUpdate as i32 {
            // The follower could not tell who is live; this node can (see membership).
            check_forwarded_config_update(registry, channel, &envelope)?;
        }
        channel.proposer.submit(envelope, false).await?;
        Ok(tx_id.clone())
    })
    .await
}

fn check_forwarded_config_update(
    registry: &Registry,
    channel: &ChannelRuntime,
    envelope: &[u8],
) -> Result<(), BroadcastError> {
    let config = channel.config();
    let envelope = shared_proto::envelope::decode_envelope(envelope)?;
    let verified = verify_envelope(&config, &envelope, registry.now_unix())?;
    let checked =
        shared_proto::config_update::check_update(&config, &verified.data, registry.now_unix())
            .map_err(|e| BroadcastError::ConfigUpdate {
                refusal: e.refusal(),
                message: e.to_string(),
            })?;
    crate::membership::check_change(registry.node_id, channel, &checked.consenters)
}

/// `AlreadyOrdered` if the tx is in this node's blocks. `vouch`: this node would propose the
/// envelope itself, so a gap in its blocks (catch-up not finished) is a retryable refusal.
fn ensure_not_ordered(
    channel: &ChannelRuntime,
    tx_id: &str,
    vouch: bool,
) -> Result<(), BroadcastError> {
    if channel
        .store
        .contains_tx(tx_id)
        .map_err(|e| BroadcastError::Storage(e.to_string()))?
    {
        return Err(BroadcastError::AlreadyOrdered(tx_id.to_owned()));
    }
    if vouch && channel.store.height() < channel.status.borrow().next_block {
        return Err(BroadcastError::CatchingUp(tx_id.to_owned()));
    }
    Ok(())
}

/// The Broadcast/Submit answer for one envelope, counted in metrics.
pub fn response(registry: &Registry, result: Result<String, BroadcastError>) -> BroadcastResponse {
    match result {
        Ok(tx_id) => {
            registry.metrics.broadcast(Status::Success);
            BroadcastResponse {
                status: Status::Success as i32,
                info: String::new(),
                tx_id,
            }
        }
        Err(e) => {
            let (_, status) = e.codes();
            registry.metrics.broadcast(status);
            BroadcastResponse {
                status: status as i32,
                info: e.to_string(),
                tx_id: String::new(),
            }
        }
    }
}

pub type BroadcastStream =
    Pin<Box<dyn Stream<Item = Result<BroadcastResponse, tonic::Status>> + Send>>;

/// Serves one Broadcast stream: one response per envelope, in order, with up to
/// [`STREAM_IN_FLIGHT_MAX`] envelopes and [`STREAM_BYTES_MAX`] bytes in progress.
pub fn serve_stream(
    registry: Arc<Registry>,
    mut requests: tonic::Streaming<Envelope>,
) -> BroadcastStream {
    let (answers, out) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
    tokio::spawn(async move {
        let room = Arc::new(Semaphore::new(STREAM_BYTES_MAX));
        // Each envelope is ordered on its own task; this queue keeps the answers in order.
        let (queue, mut queued) = mpsc::channel::<
            Result<JoinHandle<BroadcastResponse>, tonic::Status>,
        >(STREAM_IN_FLIGHT_MAX);
        let relay = tokio::spawn(async move {
            while let Some(next) = queued.recv().await {
                let answer = match next {
                    Ok(task) => task.await.map_err(|e| {
                        tonic::Status::internal(format!("broadcast task failed: {e}"))
                    }),
                    Err(status) => Err(status),
                };
                let end = answer.is_err();
                if answers.send(answer).await.is_err() || end {
                    return;
                }
            }
        });
        while let Some(item) = requests.next().await {
            let next = match item {
                Ok(envelope) => {
                    let size = envelope.encoded_len().min(STREAM_BYTES_MAX);
                    let n = u32::try_from(size).unwrap_or(u32::MAX);
                    let Ok(held) = room.clone().acquire_many_owned(n).await else {
                        break;
                    };
                    let registry = registry.clone();
                    Ok(tokio::spawn(async move {
                        let result = order(&registry, envelope).await;
                        drop(held);
                        response(&registry, result)
                    }))
                }
                Err(status) => Err(status),
            };
            let end = next.is_err();
            if queue.send(next).await.is_err() || end {
                break;
            }
        }
        drop(queue);
        let _ = relay.await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}
