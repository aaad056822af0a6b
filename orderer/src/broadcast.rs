//! Broadcast (orderer flow: [broadcast] -> consensus -> state machine -> block_store -> deliver).
//!
//! Checks, in order: envelope decodes and names a channel this node serves; size within the
//! channel's `bytes_absolute_max`; `verify_envelope` (headers, tx id rule, creator certificate,
//! signature); header type is a transaction; the Writers policy; the tx id is not already
//! ordered. Then the envelope is proposed and the answer comes once it is committed.
//!
//! | refusal                                   | gRPC (Submit)        | in-band (Broadcast)        |
//! |-------------------------------------------|----------------------|----------------------------|
//! | malformed, bad tx id, empty payload       | INVALID_ARGUMENT     | BAD_REQUEST                |
//! | larger than `bytes_absolute_max`          | INVALID_ARGUMENT     | REQUEST_ENTITY_TOO_LARGE   |
//! | larger than 2 × `bytes_absolute_max` (transport cap) | OUT_OF_RANGE | stream ends with OUT_OF_RANGE |
//! | channel not served here                   | NOT_FOUND            | NOT_FOUND                  |
//! | unknown org, expired/foreign cert, bad signature, not a Writer | PERMISSION_DENIED | FORBIDDEN |
//! | header type not accepted (config update)  | FAILED_PRECONDITION  | BAD_REQUEST                |
//! | tx id already in a block                  | ALREADY_EXISTS       | CONFLICT                   |
//! | repeat while the first copy is not yet in a block | SUCCESS (ordered once: the state machine drops the copy) | SUCCESS |
//! | no leader, leader unreachable, shutting down | UNAVAILABLE       | SERVICE_UNAVAILABLE        |

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::channel::WRITERS;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::BroadcastResponse;
use tonic::Code;

use crate::channels::Registry;
use crate::consensus::proposer::ProposeError;

/// Envelopes of one Broadcast stream being checked or ordered at once; answers keep order.
pub const STREAM_IN_FLIGHT_MAX: usize = 512;

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
    #[error("header type {0:?} cannot be broadcast (only transactions are ordered)")]
    WrongType(HeaderType),
    #[error("creator {subject:?} of {msp_id} does not satisfy the channel's Writers policy")]
    NotWriter { subject: String, msp_id: String },
    #[error("tx {0} is already ordered")]
    AlreadyOrdered(String),
    #[error("{0}")]
    NotOrdered(#[from] ProposeError),
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
            BroadcastError::NotWriter { .. } => (Code::PermissionDenied, Status::Forbidden),
            BroadcastError::AlreadyOrdered(_) => (Code::AlreadyExists, Status::Conflict),
            BroadcastError::NotOrdered(ProposeError::Refused { status, .. }) => {
                (code_of_status(*status), *status)
            }
            BroadcastError::NotOrdered(_) => (Code::Unavailable, Status::ServiceUnavailable),
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
        Status::ServiceUnavailable => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Peeks the channel id before full verification (which needs the channel).
fn channel_of(envelope: &Envelope) -> Result<String, BroadcastError> {
    if envelope.payload.is_empty() {
        return Err(EnvelopeError::EmptyPayload.into());
    }
    let payload = Payload::decode(envelope.payload.as_slice()).map_err(|e| {
        EnvelopeError::MalformedPayload {
            reason: e.to_string(),
        }
    })?;
    let header = payload.header.ok_or(EnvelopeError::MissingHeader)?;
    let ch = header
        .channel_header
        .ok_or(EnvelopeError::MissingChannelHeader)?;
    Ok(ch.channel_id)
}

/// Checks and orders one envelope. `forwardable`: false for envelopes forwarded by another
/// orderer (they were checked there and must not bounce again).
pub async fn order(
    registry: &Registry,
    envelope: Envelope,
    forwardable: bool,
) -> Result<String, BroadcastError> {
    let channel_id = channel_of(&envelope)?;
    let channel = registry
        .get(&channel_id)
        .ok_or_else(|| BroadcastError::UnknownChannel(channel_id.clone()))?;
    let size = envelope.encoded_len();
    if size > channel.limits.bytes_absolute_max as usize {
        return Err(BroadcastError::TooLarge {
            size_bytes: size,
            size_bytes_max: channel.limits.bytes_absolute_max,
        });
    }
    let verified = verify_envelope(&channel.config, &envelope, registry.now_unix())?;
    match verified.header_type {
        HeaderType::EndorserTransaction | HeaderType::Message => {}
        other => return Err(BroadcastError::WrongType(other)),
    }
    let writers = channel
        .config
        .evaluate(WRITERS, &[verified.signer()])
        .map_err(|e| BroadcastError::Storage(e.to_string()))?;
    if !writers {
        return Err(BroadcastError::NotWriter {
            subject: verified.creator.common_name.clone(),
            msp_id: verified.creator.msp_id.clone(),
        });
    }
    let tx_id = verified.tx_id;
    if channel
        .store
        .contains_tx(&tx_id)
        .map_err(|e| BroadcastError::Storage(e.to_string()))?
    {
        return Err(BroadcastError::AlreadyOrdered(tx_id));
    }
    channel
        .proposer
        .submit(envelope.encode_to_vec(), forwardable)
        .await?;
    Ok(tx_id)
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
/// [`STREAM_IN_FLIGHT_MAX`] envelopes in progress.
pub fn serve_stream(
    registry: Arc<Registry>,
    requests: tonic::Streaming<Envelope>,
) -> BroadcastStream {
    let responses = requests
        .map(move |item| {
            let registry = registry.clone();
            async move {
                match item {
                    Ok(envelope) => {
                        let result = order(&registry, envelope, true).await;
                        Ok(response(&registry, result))
                    }
                    Err(status) => Err(status),
                }
            }
        })
        .buffered(STREAM_IN_FLIGHT_MAX);
    Box::pin(responses)
}
