//! When the leader cuts the pending block: the quiet cut and the batch timeout. Both are
//! decided by the leader alone and reach every node as an entry in the log (`QuietCut{b}`,
//! `TimeToCut{b}`), so every node cuts the same blocks whatever its own clock says.
//!
//! - **Quiet cut**: every envelope this node's proposer took has been answered (applied, or
//!   refused) and envelopes wait for block `b`: nothing more is on its way from this leader,
//!   so waiting longer would only add latency. Under load the proposer always has envelopes
//!   queued or in flight, so blocks fill by count, size or the timeout as before; at a low or
//!   bursty rate a block is cut one Raft round after its last envelope is applied, not a
//!   timeout after its first was received. Fabric cuts only by count, size and timeout, so
//!   its users tune `BatchTimeout` down for latency and up for block size; here the timeout
//!   is only a backstop.
//! - **Batch timeout**: the envelopes pending for `b` have waited the channel's `timeout_ms`,
//!   counted from when the leader received the oldest of them (Fabric's block cutter starts its
//!   timer when the first envelope of a block enters it), not from when the leader saw it
//!   applied: counting from the apply added one Raft round (the ack, 20–40 ms under load) to
//!   every block cut by the timer. The proposer learns the receipt from the answer to its own
//!   entry ([`super::proposer::PendingSince`]); envelopes this node did not propose (a
//!   previous leader's) count from when this node sees them pending.
//!
//! One cut is proposed per block; if it is lost (leader change) the timeout proposes again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::proposer::Activity;
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

/// Proposes `QuietCut{b}` or `TimeToCut{b}` when this node leads (see the module doc). A
/// stale or duplicate marker is harmless: the state machine ignores it, so a new leader simply
/// starts its own timer for whatever is pending.
pub async fn run(
    raft: impl Consensus,
    mut status: watch::Receiver<SmStatus>,
    config: watch::Receiver<Arc<shared_proto::channel::Channel>>,
    mut activity: Activity,
) {
    let mut tracking: Option<Track> = None;
    loop {
        let st = status.borrow_and_update().clone();
        let noted = *activity.pending_since.borrow_and_update();
        let quiet = *activity.outstanding.borrow_and_update() == 0;
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
        if quiet && !track.fired && leading(&raft) {
            propose(
                &raft,
                Request::QuietCut {
                    block_number: track.block,
                },
            );
            // Act again after a timeout if the block is still not cut (lost proposal).
            track = Track {
                deadline: Instant::now() + timeout,
                fired: true,
                ..track
            };
        }
        tracking = Some(track);
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = activity.pending_since.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = activity.outstanding.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(track.deadline) => {
                if leading(&raft) {
                    propose(&raft, Request::TimeToCut { block_number: track.block });
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

fn leading(raft: &impl Consensus) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader == Some(m.id)
}

/// Proposes a cut marker without waiting for it: the state machine's status says when (and
/// whether) it cut.
fn propose(raft: &impl Consensus, request: Request) {
    let raft = raft.clone();
    tokio::spawn(async move {
        if let Err(e) = raft.write(request.clone()).await {
            tracing::debug!(error = %e, ?request, "cut marker not proposed");
        }
    });
}

#[cfg(test)]
#[path = "batch_timer_tests.rs"]
mod tests;
