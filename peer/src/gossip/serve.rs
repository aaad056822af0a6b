//! Serving pull requests (gossip of one channel): a member asks for a range of blocks; the
//! answer is clipped to what the ledger holds and to the response bounds, read on a blocking
//! thread, and sent on the outbound stream to the asker. At most [`SERVING_MAX`] are served at
//! once; more are dropped (the asker times out and asks someone else).

use std::sync::Arc;

use shared_proto::pb::common::Block;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::GossipMessage;
use shared_proto::pb::peer::StateRequest;
use shared_proto::pb::peer::StateResponse;

use super::channel::ChannelGossip;
use super::channel::RESPONSE_BLOCKS_MAX;
use super::channel::RESPONSE_BYTES_MAX;
#[cfg(doc)]
use super::channel::SERVING_MAX;
use super::Shared;
use crate::ledger::LedgerError;

impl ChannelGossip {
    pub fn on_state_request(&self, shared: &Arc<Shared>, from: &str, request: StateRequest) {
        let Ok(permit) = self.serving.clone().try_acquire_owned() else {
            shared.metrics.gossip_drop("busy");
            return;
        };
        if request.end < request.start {
            shared.metrics.gossip_drop("bad_request");
            return;
        }
        let ledger = self.committer.ledger.clone();
        let (shared, from, channel_id) = (shared.clone(), from.to_owned(), self.id().to_owned());
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || read_range(&ledger, &request)).await;
            let blocks = match read {
                Ok(Ok(blocks)) => blocks,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read blocks for a gossip pull");
                    return;
                }
                Err(_) => return,
            };
            let message = GossipMessage {
                channel_id,
                content: Some(Content::StateResponse(StateResponse { blocks })),
            };
            if !shared.outbound.send(&from, message) {
                shared.metrics.gossip_drop("queue_full");
            }
            drop(permit);
        });
    }
}

/// Blocks `[start, end]` of the ledger, clipped to what it holds and to the response bounds.
fn read_range(
    ledger: &crate::ledger::Ledger,
    request: &StateRequest,
) -> Result<Vec<Block>, LedgerError> {
    use prost::Message as _;
    let end = request
        .end
        .min(request.start.saturating_add(RESPONSE_BLOCKS_MAX - 1))
        .min(ledger.height().saturating_sub(1));
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    for number in request.start..=end {
        let Some(block) = ledger.block(number)? else {
            break;
        };
        bytes += block.encoded_len();
        if bytes > RESPONSE_BYTES_MAX && !blocks.is_empty() {
            break;
        }
        blocks.push(block);
    }
    Ok(blocks)
}
