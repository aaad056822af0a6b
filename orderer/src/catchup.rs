//! Catch-up: after installing a snapshot, a node's state machine is ahead of its block store.
//! This task pulls the missing blocks from the other orderers through Deliver, verifies each
//! (number, hash chain from the last block held, data hash, orderer signatures against
//! BlockValidation) and stores it. Until the gap is closed the node serves only the blocks it
//! holds contiguously, and `/readyz` says it is catching up. The others' client endpoints are
//! dialled through the node's [`Dialer`] (`address_overrides`). A block this node cannot read
//! back or write is a storage failure: the node stops, as it does when Raft's storage fails.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::block;
use shared_proto::block::Expected;
use shared_proto::envelope;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;

use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::metrics::Metrics;
use shared_proto::dial::Dialer;

/// Largest block accepted from another orderer.
pub const BLOCK_BYTES_MAX: usize = 128 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why one pull attempt stopped.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("connect {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("deliver from {endpoint}: {status}")]
    Rpc {
        endpoint: String,
        status: tonic::Status,
    },
    #[error("block from {endpoint} refused: {source}")]
    Verify {
        endpoint: String,
        #[source]
        source: block::BlockError,
    },
    /// Fatal: the node stops.
    #[error("storage: {0}")]
    Storage(String),
}

/// Keeps the channel's block store caught up with its state machine. Runs until the node stops.
pub async fn run(
    registry: Arc<Registry>,
    channel: Arc<ChannelRuntime>,
    identity: Arc<SigningIdentity>,
    dialer: Arc<Dialer>,
) {
    let mut status = channel.status.clone();
    let mut heights = channel.store.subscribe();
    let mut backoff = BACKOFF_MIN;
    let endpoints = channel.config().orderer_endpoints().to_vec();
    let mut start_at = 0usize;
    loop {
        let target = status.borrow_and_update().next_block;
        let have = *heights.borrow_and_update();
        if have >= target {
            tokio::select! {
                r = status.changed() => if r.is_err() { return },
                r = heights.changed() => if r.is_err() { return },
            }
            continue;
        }
        let mut progressed = false;
        for i in 0..endpoints.len() {
            let endpoint = &endpoints[(start_at + i) % endpoints.len()];
            match pull(&registry, &channel, &identity, &dialer, endpoint, target).await {
                Ok(n) if n > 0 => {
                    registry
                        .metrics
                        .blocks_pulled
                        .get_or_create(&Metrics::channel(&channel.id))
                        .inc_by(n);
                    progressed = true;
                    start_at = (start_at + i) % endpoints.len();
                    break;
                }
                Ok(_) => {}
                // A block this node cannot read or write is a storage failure: the node stops
                // (as when Raft's storage fails) rather than retry it forever with a gap.
                Err(PullError::Storage(reason)) => {
                    if !channel.is_stopping() {
                        registry.report_fatal(format!(
                            "channel {}: catch-up: storage: {reason}",
                            channel.id
                        ));
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(channel = %channel.id, error = %e, "catch-up attempt failed")
                }
            }
        }
        if progressed {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Verifies a block pulled from another orderer as a peer verifies a block it commits:
/// number, hash chain, data hash, and orderer signatures against BlockValidation, with no
/// certificate validity window. A block stays valid after the certificate that signed it
/// expires; checking the window against the wall clock would leave an orderer that lags behind
/// an expired (since renewed) certificate unable ever to close its gap.
pub fn verify_pulled(
    channel: &shared_proto::channel::Channel,
    block: &shared_proto::pb::common::Block,
    expected: Expected,
) -> Result<shared_proto::hash::Hash, block::BlockError> {
    block::verify_block(channel, block, expected, shared_proto::msp::ANY_TIME)
}

/// Pulls blocks `[height, target)` from one orderer; returns how many were stored.
async fn pull(
    registry: &Registry,
    channel: &ChannelRuntime,
    identity: &SigningIdentity,
    dialer: &Dialer,
    endpoint: &str,
    target: u64,
) -> Result<u64, PullError> {
    let connect_err = |reason: String| PullError::Connect {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let ep = dialer
        .endpoint(endpoint)
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(2));
    let conn = ep.connect().await.map_err(|e| connect_err(e.to_string()))?;
    let mut client = AtomicBroadcastClient::new(conn).max_decoding_message_size(BLOCK_BYTES_MAX);
    let start = channel.store.height();
    let seek = SeekInfo {
        start: Some(shared_proto::seek::specified(start)),
        stop: Some(shared_proto::seek::specified(target - 1)),
        behavior: SeekBehavior::FailIfNotReady as i32,
    };
    let request = envelope::create_signed_envelope(
        identity,
        HeaderType::DeliverSeekInfo,
        &channel.id,
        seek.encode_to_vec(),
        envelope::new_nonce(),
        (registry.now_unix().max(0) as u64) * 1000,
    );
    let rpc_err = |status| PullError::Rpc {
        endpoint: endpoint.to_owned(),
        status,
    };
    let mut stream = client
        .deliver(futures::stream::iter([request]))
        .await
        .map_err(rpc_err)?
        .into_inner();
    let mut stored = 0;
    while let Some(msg) = stream.next().await {
        let block = match msg.map_err(rpc_err)?.r#type {
            Some(Type::Block(b)) => b,
            Some(Type::Status(_)) | None => break,
        };
        let number = channel.store.height();
        let previous = channel
            .store
            .get(number.saturating_sub(1))
            .map_err(|e| PullError::Storage(e.to_string()))?
            .and_then(|b| block::header_hash(&b).ok());
        let expected = Expected {
            number,
            previous_hash: previous,
        };
        verify_pulled(&channel.config(), &block, expected).map_err(|source| PullError::Verify {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        channel
            .store
            .put(number, &block)
            .map_err(|e| PullError::Storage(e.to_string()))?;
        stored += 1;
        if channel.store.height() >= target {
            break;
        }
    }
    Ok(stored)
}
