//! When the leader cuts the pending block: the quiet cut and the batch timeout. Both are
//! decided by the leader alone and reach every node as an entry in the log (`QuietCut{b}`,
//! `TimeToCut{b}`), so every node cuts the same blocks whatever its own clock says.
//!
//! - **Quiet cut**: envelopes wait for block `b`, and every envelope this node's proposer took
//!   has been answered (applied, or refused) for as long as one of its entries takes now
//!   ([`super::proposer::RoundTime`]: receipt to apply): nothing more is on its way, and an
//!   envelope arriving now would wait about that long for its own entry anyway, so waiting
//!   longer would only add latency. At a low or bursty rate a block is cut about two Raft
//!   rounds after its last envelope arrived, not a timeout after its first. Under load the
//!   proposer always has envelopes queued or in flight, and its rounds lengthen, so blocks
//!   fill by count, size or the timeout as before. Fabric cuts only by count, size and
//!   timeout, so its users tune `BatchTimeout` down for latency and up for block size; here
//!   the timeout is a backstop. (Cutting as soon as the leader is idle, with no wait, made
//!   more and smaller blocks in bursts and cost the saturated end-to-end bench 7–10 % of its
//!   throughput: docs/performance.md, round 4.)
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
    /// The deadline passed once; it is now the retry's, no longer the receipt's.
    fired: bool,
    /// This node proposed a cut of the block (no quiet cut of it again: the timeout retries).
    proposed: bool,
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
    // Since when this node's proposer has had nothing outstanding (as seen here).
    let mut quiet_from: Option<Instant> = None;
    loop {
        let st = status.borrow_and_update().clone();
        let noted = *activity.pending_since.borrow_and_update();
        if *activity.outstanding.borrow_and_update() == 0 {
            quiet_from.get_or_insert_with(Instant::now);
        } else {
            quiet_from = None;
        }
        // The config in force sets the timeout (a config block may change it).
        let timeout = Duration::from_millis(config.borrow().batch_timeout_ms());
        if st.pending == 0 {
            tracking = None;
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                changed = activity.outstanding.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    quiet_from = None;
                }
            }
            continue;
        }
        let mut track = match tracking {
            Some(t) if t.block == st.next_block => t,
            _ => Track {
                block: st.next_block,
                deadline: Instant::now() + timeout,
                fired: false,
                proposed: false,
            },
        };
        if let (false, Some((block, received))) = (track.fired, noted) {
            if block == track.block {
                track.deadline = track.deadline.min(received + timeout);
            }
        }
        // Quiet for as long as an entry takes now: nothing more is expected soon. Only a leader
        // cuts quietly (a follower's proposer is always quiet); a follower that becomes leader
        // may cut quietly at its next wake-up, not only a timeout after its last one.
        let leads = leading(&raft);
        let quiet_at = quiet_from
            .filter(|_| leads && !track.proposed)
            .map(|from| from + activity.round.get().min(timeout / 2));
        tracking = Some(track);
        let wake = quiet_at.map_or(track.deadline, |q| q.min(track.deadline));
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
                // It moved (to or from zero, maybe both since last seen): quiet from now on
                // at the earliest.
                quiet_from = None;
            }
            () = tokio::time::sleep_until(wake) => {
                let proposing = leading(&raft);
                if proposing {
                    let block_number = track.block;
                    propose(&raft, if quiet_at.is_some_and(|q| q <= Instant::now()) {
                        Request::QuietCut { block_number }
                    } else {
                        Request::TimeToCut { block_number }
                    });
                }
                // Act again after another timeout if the block is still not cut (lost
                // proposal, or leadership moved here later).
                tracking = Some(Track {
                    deadline: Instant::now() + timeout,
                    fired: true,
                    proposed: track.proposed || proposing,
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
