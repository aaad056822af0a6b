//! Pipelined commit of a run of consecutive blocks (peer flow: deliver_client / gossip ->
//! [commit run] -> ledger -> events).
//!
//! Committing a block has a state-free stage (block verification and validation phase 1:
//! decode, signatures, endorsement policy; `Committer::stage`) and an in-order stage
//! (duplicate tx ids, MVCC, the atomic ledger commit with its fdatasync, the config switch;
//! `Committer::finish`). Over a run, the state-free stage of block N+1 runs while block N's
//! in-order stage does:
//!
//! ```text
//! thread A (caller):   finish(N-1) | finish(N)   | finish(N+1)
//! thread B + rayon:    stage(N)    | stage(N+1)  | stage(N+2)
//! ```
//!
//! Results are those of committing the blocks one by one:
//!
//! - Block N+1 is verified against block N's header hash and the config in force, which only a
//!   config block changes. A run therefore *drains* at a config block: the blocks before it are
//!   committed, then it is staged and finished alone, and the block after it is staged under
//!   the config it put in force.
//! - Phase 1 reads no state. Everything that does (committed tx ids, MVCC versions, range
//!   queries, a config update's checks) runs in `finish`, which for block N+1 starts only once
//!   block N's batch is durable, on the same thread.
//! - Blocks are committed, and their results returned, in order; a result is returned only after
//!   its block's commit returned, so nothing downstream (events, gossip push) sees a block that
//!   is not durable.
//! - A block already committed gets `AlreadyCommitted` and is skipped; any other failure ends
//!   the run, and the blocks after it are handed back unprocessed.
//!
//! The whole run holds the commit lock, so no other source commits in between.

use shared_proto::block::Expected;
use shared_proto::pb::common::Block;

use super::CommitError;
use super::Committed;
use super::Committer;
use super::Staged;

/// Most blocks a caller hands over in one run: with two stages, a run of 8 overlaps 7 of its
/// 8 state-free stages with the previous block's in-order stage, and a failure or a config
/// block sends back at most 7 blocks.
pub const RUN_BLOCKS_MAX: usize = 8;
/// Most bytes of blocks in one run (a run's blocks are all in memory at once): the orderers'
/// default `absolute_max_bytes` is 10 MiB, so at least 3 full blocks fit.
pub const RUN_BYTES_MAX: usize = 32 * 1024 * 1024;

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// One result per block processed, in order; only the last may be an error other than
    /// `AlreadyCommitted`.
    pub results: Vec<Result<Committed, CommitError>>,
    /// The blocks after a failure, not processed (the caller may offer them again).
    pub leftover: Vec<Block>,
}

impl Committer {
    /// Verifies, validates and commits `blocks`, consecutive blocks starting at the ledger's
    /// height, pipelined (see the module doc); results are the same as calling
    /// [`Committer::process`] on each in turn, skipping `AlreadyCommitted` and stopping at any
    /// other error. Blocking (CPU
    /// and storage): call it from a blocking thread. Callers bound a run by [`RUN_BLOCKS_MAX`]
    /// and [`RUN_BYTES_MAX`].
    pub fn process_run(&self, blocks: Vec<Block>) -> RunOutcome {
        self.process_run_at(blocks, shared_proto::msp::ANY_TIME)
    }

    /// As [`Committer::process_run`], with certificate validity checked at `now_unix` (tests).
    pub fn process_run_at(&self, blocks: Vec<Block>, now_unix: i64) -> RunOutcome {
        // Poisoning only means another commit panicked; the ledger batch is atomic either way.
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut results = Vec::with_capacity(blocks.len());
        let mut blocks = blocks.into_iter();
        // The block whose state-free stage is done and whose in-order stage is next.
        let mut staged: Option<Staged> = None;
        let failed = |mut results: Vec<_>, e: CommitError, leftover: Vec<Block>| {
            results.push(Err(e));
            RunOutcome { results, leftover }
        };
        loop {
            let Some(next) = blocks.next() else {
                if let Some(s) = staged.take() {
                    results.push(self.finish(s));
                }
                return RunOutcome {
                    results,
                    leftover: Vec::new(),
                };
            };
            let is_config = crate::channel_config::config_envelope(&next).is_some();
            // Drain at a config block, before and after it: the block after it is verified
            // under the config it puts in force.
            if let Some(s) = staged.take_if(|s| is_config || s.phase1.is_none()) {
                match self.finish(s) {
                    Ok(c) => results.push(Ok(c)),
                    Err(e) => {
                        return failed(results, e, std::iter::once(next).chain(blocks).collect())
                    }
                }
            }
            let staged_next = match staged.take() {
                None => self
                    .expected_from_ledger(&next)
                    .and_then(|expected| self.stage(next, expected, now_unix)),
                Some(s) => {
                    let expected = Expected {
                        number: s.number.saturating_add(1),
                        previous_hash: Some(s.header_hash),
                    };
                    let (done, staged_next) = std::thread::scope(|scope| {
                        // Waits only for this block's CPU work (no IO, no lock): no deadline.
                        let stage = scope.spawn(|| self.stage(next, expected, now_unix));
                        let done = self.finish(s);
                        (done, stage.join())
                    });
                    match done {
                        Ok(c) => results.push(Ok(c)),
                        Err(e) => {
                            // The staged block linked to one that is not committed: hand it back.
                            let mut rest: Vec<Block> = match staged_next {
                                Ok(Ok(st)) => vec![st.block],
                                _ => Vec::new(),
                            };
                            rest.extend(blocks);
                            return failed(results, e, rest);
                        }
                    }
                    staged_next.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                }
            };
            match staged_next {
                Ok(s) => staged = Some(s),
                // Another source committed it first: skip it, as `process` callers do.
                Err(e @ CommitError::AlreadyCommitted { .. }) => results.push(Err(e)),
                Err(e) => return failed(results, e, blocks.collect()),
            }
        }
    }
}
