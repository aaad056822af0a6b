//! Deliver client (peer flow: [deliver_client] -> verify -> validate -> commit -> events).
//!
//! Follows the channel's chain from one orderer at a time, starting at the ledger height, so
//! a restart or a switch of orderer resumes without gaps or repeats. Every block goes through
//! [`Committer::process`]; a block that fails verification (bad signature, broken chain) is
//! refused and the client moves to the next orderer. An orderer that is down, ends the stream
//! or sends nothing for [`IDLE_SWITCH`] while we wait is left for the next one. Retries back off
//! up to [`BACKOFF_MAX`]. Orderer endpoints are the channel config's, dialled through the
//! peer's [`Dialer`] (`address_overrides`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::dial::Dialer;
use shared_proto::envelope;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::seek;

use crate::commit::CommitError;
use crate::commit::Committer;

/// With no block for this long, try another orderer (it may be partitioned or lagging).
pub const IDLE_SWITCH: Duration = Duration::from_secs(20);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why one session with an orderer ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("connect {0}: {1}")]
    Connect(String, String),
    #[error("deliver from {0}: {1}")]
    Rpc(String, tonic::Status),
    #[error("{0} ended the stream")]
    Ended(String),
    #[error("{0} sent nothing for {1:?}")]
    Idle(String, Duration),
    #[error("block from {0} refused: {1}")]
    Refused(String, CommitError),
    #[error("ledger failed: {0}")]
    Fatal(CommitError),
}

/// Follows the orderers until the ledger fails (returned) or the task is dropped.
pub async fn run(
    committer: Arc<Committer>,
    identity: Arc<SigningIdentity>,
    dialer: Arc<Dialer>,
    clock: fn() -> i64,
) -> CommitError {
    let endpoints = committer.channel.orderer_endpoints().to_vec();
    let mut next = 0usize;
    let mut backoff = BACKOFF_MIN;
    loop {
        if endpoints.is_empty() {
            tokio::time::sleep(BACKOFF_MAX).await;
            continue;
        }
        let endpoint = &endpoints[next % endpoints.len()];
        next += 1;
        let before = committer.ledger.height();
        match session(&committer, &identity, &dialer, endpoint, clock).await {
            SessionEnd::Fatal(e) => return e,
            SessionEnd::Refused(from, e) => {
                committer.metrics.blocks_refused.inc();
                tracing::warn!(orderer = %from, error = %e, "refused a block; switching orderer");
            }
            other => tracing::debug!(error = %other, "deliver session ended"),
        }
        if committer.ledger.height() > before {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

async fn session(
    committer: &Arc<Committer>,
    identity: &SigningIdentity,
    dialer: &Dialer,
    endpoint: &str,
    clock: fn() -> i64,
) -> SessionEnd {
    let ep = match dialer.endpoint(endpoint) {
        Ok(ep) => ep.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true),
        Err(e) => return SessionEnd::Connect(endpoint.to_owned(), e.to_string()),
    };
    let conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Connect(endpoint.to_owned(), e.to_string()),
    };
    let mut client = AtomicBroadcastClient::new(conn)
        .max_decoding_message_size(committer.channel.block_bytes_max());
    let request = SeekInfo {
        start: Some(seek::specified(committer.ledger.height())),
        stop: Some(seek::follow()),
        behavior: SeekBehavior::BlockUntilReady as i32,
    };
    let envelope = envelope::create_signed_envelope(
        identity,
        HeaderType::DeliverSeekInfo,
        committer.channel.id(),
        request.encode_to_vec(),
        envelope::new_nonce(),
        (clock().max(0) as u64) * 1000,
    );
    let mut stream = match client.deliver(futures::stream::iter([envelope])).await {
        Ok(r) => r.into_inner(),
        Err(s) => return SessionEnd::Rpc(endpoint.to_owned(), s),
    };
    loop {
        let msg = match tokio::time::timeout(IDLE_SWITCH, stream.next()).await {
            Err(_) => return SessionEnd::Idle(endpoint.to_owned(), IDLE_SWITCH),
            Ok(None) => return SessionEnd::Ended(endpoint.to_owned()),
            Ok(Some(Err(s))) => return SessionEnd::Rpc(endpoint.to_owned(), s),
            Ok(Some(Ok(m))) => m,
        };
        let block = match msg.r#type {
            Some(Type::Block(b)) => b,
            _ => return SessionEnd::Ended(endpoint.to_owned()),
        };
        // A block this peer already has (e.g. pushed by gossip meanwhile) is skipped.
        let number = block.header.as_ref().map_or(0, |h| h.number);
        committer.saw_block(number);
        if number < committer.ledger.height() {
            continue;
        }
        let c = committer.clone();
        let result = tokio::task::spawn_blocking(move || c.process(block)).await;
        match result {
            Ok(Ok(_)) | Ok(Err(CommitError::AlreadyCommitted { .. })) => {}
            Ok(Err(e @ CommitError::Refused(_))) => {
                return SessionEnd::Refused(endpoint.to_owned(), e)
            }
            Ok(Err(e)) => return SessionEnd::Fatal(e),
            Err(join) => {
                return SessionEnd::Fatal(CommitError::Ledger(
                    crate::ledger::LedgerError::Corrupt {
                        what: "commit task".into(),
                        reason: join.to_string(),
                    },
                ))
            }
        }
    }
}
