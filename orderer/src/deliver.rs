//! Deliver (orderer flow: broadcast -> consensus -> state machine -> block_store -> [deliver]).
//!
//! Each request is a signed envelope carrying a `SeekInfo`; the signer must satisfy the
//! channel's Readers policy. Blocks stream through one bounded buffer per subscriber, so a slow
//! subscriber slows only itself. After the last requested block, or on a refusal, a final
//! status message is sent and the stream reads the next request (Fabric's behaviour).
//!
//! Positions resolve as [`shared_proto::seek`] documents.
//!
//! BLOCK_UNTIL_READY waits for blocks not yet cut; FAIL_IF_NOT_READY answers NOT_FOUND when it
//! reaches a block that does not exist yet.
//!
//! Beyond the envelope's signature and Readers: its channel-header timestamp must be within
//! [`TIMESTAMP_WINDOW`] of the node's clock (BAD_REQUEST otherwise: a replayed request), and a
//! stream ends with FORBIDDEN once the node's clock passes its reader's certificate expiry
//! (checked before each block and every [`READER_RECHECK`] while waiting).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::channel::READERS;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::Refusal;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::DeliverResponse;
use shared_proto::pb::orderer::SeekInfo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::channels::ChannelRuntime;
use crate::channels::Registry;

/// Blocks buffered per subscriber.
pub const SUBSCRIBER_BUFFER: usize = 16;
/// How far a seek envelope's timestamp may be from the node's clock, either way.
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How often an idle stream re-checks that its reader's certificate has not expired (a stream
/// sending blocks checks before each one).
pub const READER_RECHECK: Duration = Duration::from_secs(1);

pub type DeliverStream = Pin<Box<dyn Stream<Item = Result<DeliverResponse, tonic::Status>> + Send>>;

/// Serves one Deliver stream.
pub fn serve_stream(
    registry: Arc<Registry>,
    mut requests: tonic::Streaming<Envelope>,
) -> DeliverStream {
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        loop {
            let envelope = tokio::select! {
                next = requests.next() => match next {
                    Some(Ok(e)) => e,
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    None => return,
                },
                () = tx.closed() => return,
            };
            let status = match serve_request(&registry, &envelope, &tx).await {
                Ok(status) => status,
                Err(Gone) => return,
            };
            if tx.send(Ok(status_response(status))).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The subscriber went away.
struct Gone;

fn status_response(status: Status) -> DeliverResponse {
    DeliverResponse {
        r#type: Some(Type::Status(status as i32)),
    }
}

type Tx = mpsc::Sender<Result<DeliverResponse, tonic::Status>>;

/// Serves one SeekInfo request; returns the final status to send.
async fn serve_request(registry: &Registry, envelope: &Envelope, tx: &Tx) -> Result<Status, Gone> {
    let channel_id = match peek_channel(envelope) {
        Some(id) => id,
        None => return Ok(Status::BadRequest),
    };
    let Some(channel) = registry.get(&channel_id) else {
        return Ok(Status::NotFound);
    };
    let verified = match verify_envelope(&channel.config(), envelope, registry.now_unix()) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "deliver request refused");
            return Ok(match e.refusal() {
                Refusal::InvalidArgument => Status::BadRequest,
                Refusal::NotFound => Status::NotFound,
                Refusal::PermissionDenied => Status::Forbidden,
            });
        }
    };
    if verified.header_type != HeaderType::DeliverSeekInfo {
        return Ok(Status::BadRequest);
    }
    if !matches!(
        channel.config().evaluate(READERS, &[verified.signer()]),
        Ok(true)
    ) {
        return Ok(Status::Forbidden);
    }
    let now_ms = registry.now_unix().saturating_mul(1000);
    if let Err(e) = check_timestamp(verified.channel_header.timestamp_unix_ms, now_ms) {
        tracing::debug!(error = %e, "deliver request refused");
        return Ok(Status::BadRequest);
    }
    let Ok(seek) = SeekInfo::decode(verified.data.as_slice()) else {
        return Ok(Status::BadRequest);
    };
    let reader = Reader {
        registry,
        not_after_unix: verified.creator.not_after_unix,
    };
    stream_blocks(&channel, &seek, &reader, tx, registry.node_id).await
}

/// Why a seek request was refused beyond what [`verify_envelope`] checks.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(
        "seek envelope timestamp {timestamp_ms} ms is {skew_ms} ms from this node's clock \
         ({now_ms} ms); the window is ±{window_ms} ms (a replayed request, or a skewed clock)"
    )]
    TimestampOutsideWindow {
        timestamp_ms: u64,
        now_ms: i64,
        skew_ms: i64,
        window_ms: i64,
    },
}

/// A seek envelope's channel-header timestamp must be within [`TIMESTAMP_WINDOW`] of the
/// node's clock (Fabric's 15 minutes): a captured request cannot be replayed later.
pub fn check_timestamp(timestamp_ms: u64, now_ms: i64) -> Result<(), DeliverError> {
    let window_ms = TIMESTAMP_WINDOW.as_millis() as i64;
    let skew_ms = i64::try_from(timestamp_ms)
        .unwrap_or(i64::MAX)
        .saturating_sub(now_ms);
    if skew_ms.saturating_abs() > window_ms {
        return Err(DeliverError::TimestampOutsideWindow {
            timestamp_ms,
            now_ms,
            skew_ms,
            window_ms,
        });
    }
    Ok(())
}

/// Who a stream serves: its Readers standing is re-checked while it runs. The channel's
/// config (and so the Readers policy) cannot change while the node runs; what can change is
/// the clock passing the reader's certificate expiry.
struct Reader<'a> {
    registry: &'a Registry,
    not_after_unix: i64,
}

impl Reader<'_> {
    fn still_reader(&self) -> bool {
        self.registry.now_unix() <= self.not_after_unix
    }
}

fn peek_channel(envelope: &Envelope) -> Option<String> {
    let payload = shared_proto::pb::common::Payload::decode(envelope.payload.as_slice()).ok()?;
    Some(payload.header?.channel_header?.channel_id)
}

async fn stream_blocks(
    channel: &ChannelRuntime,
    seek: &SeekInfo,
    reader: &Reader<'_>,
    tx: &Tx,
    node_id: u64,
) -> Result<Status, Gone> {
    // Waiting on a node that cannot get new blocks (no leader, a leader without a quorum, a
    // follower still catching up: each already allows for its own bound) for two checks in a
    // row ends the stream with
    // SERVICE_UNAVAILABLE, so the reader goes to another orderer instead of waiting in
    // silence (chaos scenario minority_split, seed 1: peers reading from the cut-off leader
    // committed nothing until the partition healed).
    let cut_off_grace = READER_RECHECK;
    let mut not_ready_since: Option<tokio::time::Instant> = None;
    let mut heights = channel.store.subscribe();
    let height = *heights.borrow_and_update();
    let Some((start, stop)) = shared_proto::seek::resolve(seek, height) else {
        return Ok(Status::BadRequest);
    };
    let fail_if_not_ready = seek.behavior == SeekBehavior::FailIfNotReady as i32;
    let mut next = start;
    loop {
        let available = *heights.borrow_and_update();
        while next < available {
            if !reader.still_reader() {
                return Ok(Status::Forbidden);
            }
            let block = match channel.store.get(next) {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => return Ok(Status::InternalServerError),
            };
            send_block(tx, block).await?;
            if next == stop {
                return Ok(Status::Success);
            }
            next += 1;
        }
        if fail_if_not_ready {
            return Ok(Status::NotFound);
        }
        tokio::select! {
            changed = heights.changed() => {
                if changed.is_err() {
                    return Ok(Status::ServiceUnavailable);
                }
            }
            () = tx.closed() => return Err(Gone),
            () = tokio::time::sleep(READER_RECHECK) => {
                if !reader.still_reader() {
                    return Ok(Status::Forbidden);
                }
                match crate::ops::raft_not_ready(node_id, channel) {
                    None => not_ready_since = None,
                    Some(why) => {
                        let since = *not_ready_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= cut_off_grace {
                            tracing::info!(
                                channel = %channel.id,
                                reason = %why,
                                "ending a Deliver stream waiting for blocks: this node cannot get new ones now"
                            );
                            return Ok(Status::ServiceUnavailable);
                        }
                    }
                }
            }
        }
    }
}

async fn send_block(tx: &Tx, block: Block) -> Result<(), Gone> {
    tx.send(Ok(DeliverResponse {
        r#type: Some(Type::Block(block)),
    }))
    .await
    .map_err(|_| Gone)
}
