//! The batch timeout: the leader proposes `TimeToCut{b}` once the envelopes pending for block
//! `b` have waited the channel's `timeout_ms`. The cut itself is an entry in the log, so every
//! node cuts the same blocks whatever its own clock says.
//!
//! The wait counts from when the leader received the oldest envelope pending for the block
//! (Fabric's block cutter starts its timer when the first envelope of a block enters it), not
//! from when the leader saw it applied: counting from the apply added one Raft round (the ack,
//! 20–40 ms under load) to every block cut by the timer. The proposer learns the receipt from
//! the answer to its own entry ([`super::proposer::PendingSince`]); envelopes this node did
//! not propose (a previous leader's) count from when this node sees them pending.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::proposer::Consensus;
use super::state_machine::SmStatus;
use super::Request;

/// The timer of the block being filled.
#[derive(Debug, Clone, Copy)]
struct Track {
    block: u64,
    deadline: Instant,
    /// A cut was proposed; the deadline is now the retry's, no longer the receipt's.
    fired: bool,
}

/// Proposes `TimeToCut{b}` when this node leads and the envelopes pending for block `b` have
/// waited the batch timeout. A stale or duplicate marker is harmless: the state machine ignores
/// it, so a new leader simply starts its own timer for whatever is pending.
pub async fn run(
    raft: impl Consensus,
    mut status: watch::Receiver<SmStatus>,
    config: watch::Receiver<Arc<shared_proto::channel::Channel>>,
    mut pending_since: watch::Receiver<Option<(u64, Instant)>>,
) {
    let mut tracking: Option<Track> = None;
    loop {
        let st = status.borrow_and_update().clone();
        let noted = *pending_since.borrow_and_update();
        // The config in force sets the timeout (a config block may change it).
        let timeout = Duration::from_millis(config.borrow().batch_timeout_ms());
        if st.pending == 0 {
            tracking = None;
            if status.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut track = match tracking {
            Some(t) if t.block == st.next_block => t,
            _ => Track {
                block: st.next_block,
                deadline: Instant::now() + timeout,
                fired: false,
            },
        };
        if let (false, Some((block, received))) = (track.fired, noted) {
            if block == track.block {
                track.deadline = track.deadline.min(received + timeout);
            }
        }
        tracking = Some(track);
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = pending_since.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(track.deadline) => {
                let leading = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.current_leader == Some(m.id)
                };
                if leading {
                    let raft = raft.clone();
                    let block_number = track.block;
                    tokio::spawn(async move {
                        if let Err(e) = raft.write(Request::TimeToCut { block_number }).await {
                            tracing::debug!(error = %e, block_number, "time-to-cut not proposed");
                        }
                    });
                }
                // Act again after another timeout if the block is still not cut (lost
                // proposal, or leadership moved here later).
                tracking = Some(Track {
                    deadline: Instant::now() + timeout,
                    fired: true,
                    ..track
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_timer_tests.rs"]
mod tests;
