//! Query authorisation (applications -> [query] -> ledger): who may read blocks, transactions
//! and commit status, and how many CommitStatus waits a peer holds.
//!
//! A query carries a signed envelope (header type `MESSAGE`) whose payload data is a
//! `QueryRequest` naming the call and its arguments, built by [`sign`]. [`authorize`] checks,
//! in this order, stopping at the first failure:
//!
//! | check                                                   | refusal             |
//! |---------------------------------------------------------|---------------------|
//! | a signed envelope is present                            | `UNAUTHENTICATED`   |
//! | the channel is joined here                              | `NOT_FOUND`         |
//! | `verify_envelope` (shape, creator, signature)           | its [`Refusal`]     |
//! | header type `MESSAGE`                                   | `INVALID_ARGUMENT`  |
//! | timestamp within [`CLOCK_SKEW_MAX`] of the peer's clock | `INVALID_ARGUMENT`  |
//! | the signer satisfies the channel's Readers policy       | `PERMISSION_DENIED` |
//! | the signed `QueryRequest` is this call, same arguments  | `INVALID_ARGUMENT`  |
//!
//! The signature and the Readers check are the ones the peer's and the orderer's Deliver use
//! ([`verify_envelope`], [`Channel::evaluate`](shared_proto::channel::Channel::evaluate)); the
//! timestamp window limits how long a leaked signed request can be replayed. The service port
//! also requires a client TLS certificate from a CA of the network (see `node.rs`), so nothing
//! is decoded for a caller that holds none; the TLS certificate does not authorise anything by
//! itself (TLS certificates carry no role, and orgs outside the channel have them too).

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use shared_proto::channel::READERS;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::envelope::new_nonce;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::peer::query_request::Query;
use shared_proto::pb::peer::BlockByNumberRequest;
use shared_proto::pb::peer::QueryRequest;
use shared_proto::pb::peer::TransactionByIdRequest;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tonic::Code;

use crate::channels::PeerChannel;
use crate::channels::Registry;

/// Largest distance between a signed query's timestamp and the peer's clock (Fabric's
/// default for signed Deliver requests).
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(15 * 60);
/// Longest a CommitStatus call waits for its transaction (server side, whatever the client's
/// deadline).
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(60);
/// CommitStatus calls waiting at once on one peer; more are refused with
/// `RESOURCE_EXHAUSTED` (the SDK retries).
pub const COMMIT_WAITS_MAX: usize = 4096;

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the request is not signed: Query calls carry a signed QueryRequest envelope")]
    Unsigned,
    #[error("channel {0:?} is not joined by this peer")]
    UnknownChannel(String),
    #[error("signed request refused: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("signed request has header type {0:?}; queries are signed as MESSAGE")]
    HeaderType(HeaderType),
    #[error("signed request timestamp {timestamp_ms} ms is more than {CLOCK_SKEW_MAX:?} away from the peer's clock ({now_ms} ms)")]
    Timestamp { timestamp_ms: u64, now_ms: u64 },
    #[error("{subject} ({msp_id}) does not satisfy the Readers policy of channel {channel}")]
    NotReader {
        subject: String,
        msp_id: String,
        channel: String,
    },
    #[error("signed request data is not a QueryRequest: {0}")]
    Malformed(String),
    #[error("the signed request authorises {signed}, not {called}")]
    OtherCall {
        signed: &'static str,
        called: &'static str,
    },
    #[error("the request's fields differ from the signed ones")]
    Mismatch,
    #[error("{0} CommitStatus waits are open on this peer; retry later")]
    Busy(usize),
}

impl QueryError {
    pub fn code(&self) -> Code {
        match self {
            QueryError::Unsigned => Code::Unauthenticated,
            QueryError::UnknownChannel(_) => Code::NotFound,
            QueryError::Envelope(e) => match e.refusal() {
                Refusal::InvalidArgument => Code::InvalidArgument,
                Refusal::NotFound => Code::NotFound,
                Refusal::PermissionDenied => Code::PermissionDenied,
            },
            QueryError::HeaderType(_)
            | QueryError::Timestamp { .. }
            | QueryError::Malformed(_)
            | QueryError::OtherCall { .. }
            | QueryError::Mismatch => Code::InvalidArgument,
            QueryError::NotReader { .. } => Code::PermissionDenied,
            QueryError::Busy(_) => Code::ResourceExhausted,
        }
    }

    pub fn into_status(self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }
}

fn call_name(query: &Query) -> &'static str {
    match query {
        Query::BlockByNumber(_) => "GetBlockByNumber",
        Query::TransactionById(_) => "GetTransactionById",
        Query::CommitStatus(_) => "CommitStatus",
    }
}

/// What a GetBlockByNumber request asks, as its signed `QueryRequest` must say (the unsigned
/// fields, `signed` cleared).
pub fn block_by_number(request: &BlockByNumberRequest) -> Query {
    Query::BlockByNumber(BlockByNumberRequest {
        signed: None,
        ..request.clone()
    })
}

/// See [`block_by_number`].
pub fn transaction_by_id(request: &TransactionByIdRequest) -> Query {
    Query::TransactionById(TransactionByIdRequest {
        signed: None,
        ..request.clone()
    })
}

/// See [`block_by_number`].
pub fn commit_status(request: &TransactionByIdRequest) -> Query {
    Query::CommitStatus(TransactionByIdRequest {
        signed: None,
        ..request.clone()
    })
}

/// The signed envelope authorising `query` on `channel_id`, as [`authorize`] accepts it.
pub fn sign(
    identity: &SigningIdentity,
    channel_id: &str,
    query: Query,
    timestamp_unix_ms: u64,
) -> Envelope {
    let data = QueryRequest { query: Some(query) }.encode_to_vec();
    create_signed_envelope(
        identity,
        HeaderType::Message,
        channel_id,
        data,
        new_nonce(),
        timestamp_unix_ms,
    )
}

/// Checks that `signed` authorises `asked` on `channel_id` (see the module doc); returns the
/// channel to read.
pub fn authorize(
    registry: &Registry,
    channel_id: &str,
    signed: Option<&Envelope>,
    asked: &Query,
) -> Result<Arc<PeerChannel>, QueryError> {
    let signed = signed.ok_or(QueryError::Unsigned)?;
    let channel = registry
        .get(channel_id)
        .ok_or_else(|| QueryError::UnknownChannel(channel_id.to_owned()))?;
    let now = registry.now_unix();
    let config = channel.config();
    let verified = verify_envelope(&config, signed, now)?;
    if verified.header_type != HeaderType::Message {
        return Err(QueryError::HeaderType(verified.header_type));
    }
    let timestamp_ms = verified.channel_header.timestamp_unix_ms;
    let now_ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
    if timestamp_ms.abs_diff(now_ms) > CLOCK_SKEW_MAX.as_millis() as u64 {
        return Err(QueryError::Timestamp {
            timestamp_ms,
            now_ms,
        });
    }
    if !matches!(config.evaluate(READERS, &[verified.signer()]), Ok(true)) {
        return Err(QueryError::NotReader {
            subject: verified.creator.common_name.clone(),
            msp_id: verified.creator.msp_id.clone(),
            channel: channel.id.clone(),
        });
    }
    let request = QueryRequest::decode(verified.data.as_slice())
        .map_err(|e| QueryError::Malformed(e.to_string()))?;
    let query = request
        .query
        .ok_or_else(|| QueryError::Malformed("no query".into()))?;
    if std::mem::discriminant(&query) != std::mem::discriminant(asked) {
        return Err(QueryError::OtherCall {
            signed: call_name(&query),
            called: call_name(asked),
        });
    }
    if query != *asked {
        return Err(QueryError::Mismatch);
    }
    Ok(channel)
}

/// Bounds the CommitStatus calls waiting at once, in number ([`CommitWaits::enter`]) and in
/// time (`max_wait`).
#[derive(Debug, Clone)]
pub struct CommitWaits {
    permits: Arc<Semaphore>,
    limit: usize,
    pub max_wait: Duration,
}

impl Default for CommitWaits {
    fn default() -> Self {
        CommitWaits::new(COMMIT_WAITS_MAX, COMMIT_WAIT_MAX)
    }
}

impl CommitWaits {
    pub fn new(limit: usize, max_wait: Duration) -> Self {
        CommitWaits {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            max_wait,
        }
    }

    /// Calls waiting now.
    pub fn waiting(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// A place among the waiters, held until the call ends; `Busy` when all are taken.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, QueryError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| QueryError::Busy(self.limit))
    }
}

/// The current time in Unix milliseconds (what [`sign`] is given by clients).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
