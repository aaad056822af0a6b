//! Events (peer flow: ... -> commit -> ledger -> [events]): committed blocks, or filtered blocks
//! (tx id, type and validation code of each transaction), streamed to applications from any
//! block number, so a client resumes exactly where it stopped. Requests are signed SeekInfo
//! envelopes checked against the channel's Readers policy; each subscriber has one bounded
//! buffer, so a slow reader slows only itself.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::READERS;
use shared_proto::envelope::verify_envelope;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::peer::deliver_response::Type;
use shared_proto::pb::peer::DeliverResponse;
use shared_proto::pb::peer::FilteredBlock;
use shared_proto::pb::peer::FilteredTransaction;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::channels::PeerChannel;
use crate::channels::Registry;

/// Events buffered per subscriber.
pub const SUBSCRIBER_BUFFER: usize = 16;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<DeliverResponse, tonic::Status>> + Send>>;

type Tx = mpsc::Sender<Result<DeliverResponse, tonic::Status>>;

struct Gone;

/// Serves one Deliver (`filtered: false`) or DeliverFiltered stream.
pub fn serve_stream(
    registry: Arc<Registry>,
    mut requests: tonic::Streaming<Envelope>,
    filtered: bool,
) -> EventStream {
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
            let status = match serve_request(&registry, &envelope, filtered, &tx).await {
                Ok(s) => s,
                Err(Gone) => return,
            };
            let done = DeliverResponse {
                r#type: Some(Type::Status(status as i32)),
            };
            if tx.send(Ok(done)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn serve_request(
    registry: &Registry,
    envelope: &Envelope,
    filtered: bool,
    tx: &Tx,
) -> Result<Status, Gone> {
    let Some(channel_id) = Payload::decode(envelope.payload.as_slice())
        .ok()
        .and_then(|p| p.header?.channel_header)
        .map(|h| h.channel_id)
    else {
        return Ok(Status::BadRequest);
    };
    let Some(channel) = registry.get(&channel_id) else {
        return Ok(Status::NotFound);
    };
    let config = channel.config();
    let verified = match verify_envelope(&config, envelope, registry.now_unix()) {
        Ok(v) => v,
        Err(e) => return Ok(e.refusal().status()),
    };
    if verified.header_type != HeaderType::DeliverSeekInfo {
        return Ok(Status::BadRequest);
    }
    if !matches!(config.evaluate(READERS, &[verified.signer()]), Ok(true)) {
        return Ok(Status::Forbidden);
    }
    let Ok(seek) = SeekInfo::decode(verified.data.as_slice()) else {
        return Ok(Status::BadRequest);
    };
    stream(&channel, &seek, filtered, tx).await
}

async fn stream(
    channel: &PeerChannel,
    seek: &SeekInfo,
    filtered: bool,
    tx: &Tx,
) -> Result<Status, Gone> {
    let mut heights = channel.ledger.subscribe_height();
    let height = *heights.borrow_and_update();
    let Some((start, stop)) = shared_proto::seek::resolve(seek, height) else {
        return Ok(Status::BadRequest);
    };
    let fail_if_not_ready = seek.behavior == SeekBehavior::FailIfNotReady as i32;
    let mut next = start;
    loop {
        let available = *heights.borrow_and_update();
        while next < available {
            let Ok(Some(block)) = channel.ledger.block(next) else {
                return Ok(Status::InternalServerError);
            };
            let event = if filtered {
                Type::FilteredBlock(filter(&channel.id, &block))
            } else {
                Type::Block(block)
            };
            tx.send(Ok(DeliverResponse {
                r#type: Some(event),
            }))
            .await
            .map_err(|_| Gone)?;
            if next == stop {
                return Ok(Status::Success);
            }
            next += 1;
        }
        if fail_if_not_ready {
            return Ok(Status::NotFound);
        }
        tokio::select! {
            changed = heights.changed() => if changed.is_err() { return Ok(Status::ServiceUnavailable) },
            () = tx.closed() => return Err(Gone),
        }
    }
}

/// The filtered form of a committed block: tx id, type and validation code of each tx.
pub fn filter(channel_id: &str, block: &Block) -> FilteredBlock {
    let codes = block::validation_codes(block);
    let filtered_transactions = block::tx_envelopes(block)
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let header = Envelope::decode(env.as_slice())
                .ok()
                .and_then(|e| Payload::decode(e.payload.as_slice()).ok())
                .and_then(|p| p.header?.channel_header);
            FilteredTransaction {
                tx_id: header.as_ref().map(|h| h.tx_id.clone()).unwrap_or_default(),
                r#type: header.map_or(0, |h| h.r#type),
                tx_validation_code: codes.get(i).map_or(254, |c| i32::from(*c)),
            }
        })
        .collect();
    FilteredBlock {
        channel_id: channel_id.to_owned(),
        number: block.header.as_ref().map_or(0, |h| h.number),
        filtered_transactions,
    }
}
