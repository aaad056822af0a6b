//! Deliver client (peer flow: [deliver_client] -> verify -> validate -> commit -> events).
//!
//! Follows the channel's chain from one orderer at a time, starting at the ledger height, so
//! a restart or a switch of orderer resumes without gaps or repeats. Every block goes through
//! [`Committer::process_run`], with the blocks already received behind it (at most
//! [`RUN_BLOCKS_MAX`] / [`RUN_BYTES_MAX`]), so validating one overlaps committing the one
//! before; a block that fails verification (bad signature, broken chain) is
//! refused and the client moves to the next orderer. An orderer that is down, ends the stream
//! (an orderer that cannot get new blocks ends it with SERVICE_UNAVAILABLE), stops answering
//! HTTP/2 pings, or sends nothing for [`IDLE_SWITCH`] while we wait is left for the next one. Retries back off
//! up to [`BACKOFF_MAX`]. Orderer endpoints are dialled through the peer's [`Dialer`]
//! (`address_overrides`).
//!
//! The orderers are the `orderer_endpoints` of the config in force, read again at every
//! (re)connect, so a config block that changes them takes effect without a restart
//! ([`next_endpoint`]); when a config block drops the orderer of the open session, the session
//! ends and the client switches at once.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::dial::Dialer;
use shared_proto::envelope;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::DeliverResponse;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::seek;

use crate::commit::CommitError;
use crate::commit::Committer;
use crate::commit::RUN_BLOCKS_MAX;
use crate::commit::RUN_BYTES_MAX;

/// With no block for this long, try another orderer (it may be partitioned or lagging).
pub const IDLE_SWITCH: Duration = Duration::from_secs(20);
/// HTTP/2 ping interval on the Deliver connection, and how long an answer may take.
const KEEPALIVE: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
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
    #[error("{0} is no longer an orderer endpoint of the channel (config block)")]
    Removed(String),
}

/// Follows the orderers until the ledger fails (returned) or the task is dropped.
pub async fn run(
    committer: Arc<Committer>,
    identity: Arc<SigningIdentity>,
    dialer: Arc<Dialer>,
    clock: fn() -> i64,
) -> CommitError {
    let mut last: Option<String> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let config = committer.config();
        let Some(endpoint) = next_endpoint(config.orderer_endpoints(), last.as_deref()) else {
            tokio::time::sleep(BACKOFF_MAX).await;
            continue;
        };
        let endpoint = endpoint.to_owned();
        let before = committer.ledger.height();
        match session(&committer, &identity, &dialer, &endpoint, clock).await {
            SessionEnd::Fatal(e) => return e,
            SessionEnd::Refused(from, e) => {
                committer.metrics.blocks_refused.inc();
                tracing::warn!(orderer = %from, error = %e, "refused a block; switching orderer");
            }
            e @ SessionEnd::Removed(_) => {
                tracing::info!(error = %e, "switching orderer");
                last = Some(endpoint);
                backoff = BACKOFF_MIN;
                continue;
            }
            other => tracing::debug!(error = %other, "deliver session ended"),
        }
        last = Some(endpoint);
        if committer.ledger.height() > before {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// The orderer to try after `last` among `endpoints` (the list of the config in force): the
/// one after it in the list, wrapping around; the first when `last` is `None` or no longer in
/// the list. `None` when the list is empty.
pub fn next_endpoint<'a>(endpoints: &'a [String], last: Option<&str>) -> Option<&'a str> {
    let after = last
        .and_then(|l| endpoints.iter().position(|e| e == l))
        .map_or(0, |i| i + 1);
    endpoints
        .get(after % endpoints.len().max(1))
        .map(String::as_str)
}

async fn session(
    committer: &Arc<Committer>,
    identity: &SigningIdentity,
    dialer: &Dialer,
    endpoint: &str,
    clock: fn() -> i64,
) -> SessionEnd {
    let ep = match dialer.endpoint(endpoint) {
        // HTTP/2 pings find an orderer that went silent (a partition holding the
        // connection open) within KEEPALIVE + KEEPALIVE_TIMEOUT, not IDLE_SWITCH.
        Ok(ep) => ep
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true),
        Err(e) => return SessionEnd::Connect(endpoint.to_owned(), e.to_string()),
    };
    let conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Connect(endpoint.to_owned(), e.to_string()),
    };
    let mut config_rx = committer.live_config().subscribe();
    let config = config_rx.borrow_and_update().clone();
    if !config.orderer_endpoints().iter().any(|e| e == endpoint) {
        // A config block dropped it while we were connecting.
        return SessionEnd::Removed(endpoint.to_owned());
    }
    let mut client =
        AtomicBroadcastClient::new(conn).max_decoding_message_size(config.block_bytes_max());
    let request = SeekInfo {
        start: Some(seek::specified(committer.ledger.height())),
        stop: Some(seek::follow()),
        behavior: SeekBehavior::BlockUntilReady as i32,
    };
    let envelope = envelope::create_signed_envelope(
        identity,
        HeaderType::DeliverSeekInfo,
        committer.channel_id(),
        request.encode_to_vec(),
        envelope::new_nonce(),
        (clock().max(0) as u64) * 1000,
    );
    let mut stream = match client.deliver(futures::stream::iter([envelope])).await {
        Ok(r) => r.into_inner(),
        Err(s) => return SessionEnd::Rpc(endpoint.to_owned(), s),
    };
    let idle = tokio::time::sleep(IDLE_SWITCH);
    tokio::pin!(idle);
    // A message read while gathering a run that is not a block: handled next turn.
    let mut stashed: Option<Option<Result<DeliverResponse, tonic::Status>>> = None;
    loop {
        let next = match stashed.take() {
            Some(next) => next,
            None => tokio::select! {
                () = &mut idle => return SessionEnd::Idle(endpoint.to_owned(), IDLE_SWITCH),
                changed = config_rx.changed() => {
                    // The committer owns the sender and outlives this session.
                    if changed.is_err() {
                        return SessionEnd::Ended(endpoint.to_owned());
                    }
                    let listed = config_rx
                        .borrow_and_update()
                        .orderer_endpoints()
                        .iter()
                        .any(|e| e == endpoint);
                    if !listed {
                        return SessionEnd::Removed(endpoint.to_owned());
                    }
                    continue;
                }
                next = stream.next() => next,
            },
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + IDLE_SWITCH);
        let block = match block_of(next, endpoint) {
            Ok(b) => b,
            Err(end) => return *end,
        };
        // The blocks already received go to the committer as one run, whose stages overlap
        // (`commit::pipeline`); a run never waits for a block that has not arrived.
        let mut run = Vec::new();
        let mut run_bytes = 0;
        let offer = |block: Block, run: &mut Vec<Block>, run_bytes: &mut usize| {
            // A block this peer already has (e.g. pushed by gossip meanwhile) is skipped.
            let number = block.header.as_ref().map_or(0, |h| h.number);
            committer.saw_block(number);
            if number >= committer.ledger.height() {
                *run_bytes += block.encoded_len();
                run.push(block);
            }
        };
        offer(block, &mut run, &mut run_bytes);
        while run.len() < RUN_BLOCKS_MAX && run_bytes < RUN_BYTES_MAX {
            let Some(next) = stream.next().now_or_never() else {
                break;
            };
            match next {
                Some(Ok(DeliverResponse {
                    r#type: Some(Type::Block(b)),
                })) => offer(b, &mut run, &mut run_bytes),
                other => {
                    stashed = Some(other);
                    break;
                }
            }
        }
        if run.is_empty() {
            continue;
        }
        let c = committer.clone();
        let outcome = match tokio::task::spawn_blocking(move || c.process_run(run)).await {
            Ok(outcome) => outcome,
            Err(join) => {
                return SessionEnd::Fatal(CommitError::Ledger(
                    crate::ledger::LedgerError::Corrupt {
                        what: "commit task".into(),
                        reason: join.to_string(),
                    },
                ))
            }
        };
        // Blocks after a failure are not committed: the next session asks for them again.
        for result in outcome.results {
            match result {
                Ok(_) | Err(CommitError::AlreadyCommitted { .. }) => {}
                Err(e) if e.is_refusal() => return SessionEnd::Refused(endpoint.to_owned(), e),
                Err(e) => return SessionEnd::Fatal(e),
            }
        }
        if !outcome.leftover.is_empty() {
            // Unreachable: only an error ends a run early, and every error but
            // `AlreadyCommitted` (which does not end it) returned above.
            return SessionEnd::Ended(endpoint.to_owned());
        }
    }
}

/// The block in a Deliver stream item; otherwise how the session ends.
fn block_of(
    next: Option<Result<DeliverResponse, tonic::Status>>,
    endpoint: &str,
) -> Result<Block, Box<SessionEnd>> {
    match next {
        None => Err(Box::new(SessionEnd::Ended(endpoint.to_owned()))),
        Some(Err(s)) => Err(Box::new(SessionEnd::Rpc(endpoint.to_owned(), s))),
        Some(Ok(m)) => match m.r#type {
            Some(Type::Block(b)) => Ok(b),
            _ => Err(Box::new(SessionEnd::Ended(endpoint.to_owned()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::next_endpoint;

    fn list(endpoints: &[&str]) -> Vec<String> {
        endpoints.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn orderers_are_tried_in_turn_from_the_first() {
        let l = list(&["o1:7050", "o2:7050", "o3:7050"]);
        assert_eq!(next_endpoint(&l, None), Some("o1:7050"));
        assert_eq!(next_endpoint(&l, Some("o1:7050")), Some("o2:7050"));
        assert_eq!(next_endpoint(&l, Some("o3:7050")), Some("o1:7050"));
    }

    #[test]
    fn changed_list_is_followed_at_the_next_reconnect() {
        // o2 stays: the turn goes on after it in the new list.
        let new = list(&["o2:7050", "o4:7050"]);
        assert_eq!(next_endpoint(&new, Some("o2:7050")), Some("o4:7050"));
        // o1 was removed: start over at the new list's first.
        assert_eq!(next_endpoint(&new, Some("o1:7050")), Some("o2:7050"));
        // An endpoint that is the only one left is tried again.
        let one = list(&["o4:7050"]);
        assert_eq!(next_endpoint(&one, Some("o4:7050")), Some("o4:7050"));
    }

    #[test]
    fn empty_list_names_no_orderer() {
        assert_eq!(next_endpoint(&[], Some("o1:7050")), None);
        assert_eq!(next_endpoint(&[], None), None);
    }
}
