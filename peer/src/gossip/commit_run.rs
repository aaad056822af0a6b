//! Gossip's commit step (peer flow: gossip reorder buffer -> [commit run] -> ledger): the
//! consecutive blocks buffered go to [`Committer::process_run`] as one run, so validating one
//! overlaps committing the one before (`commit::pipeline`). A refused block strikes its
//! sender; the blocks after it go back to the buffer.
//!
//! [`Committer::process_run`]: crate::commit::Committer::process_run

use prost::Message as _;
use shared_proto::hash::Hash;
use shared_proto::pb::common::Block;

use super::channel::ChannelGossip;
use super::reorder::Incoming;
use super::reorder::ReorderBuffer;
use super::reorder::Source;
use super::Shared;
use crate::commit::CommitError;
use crate::commit::RUN_BLOCKS_MAX;
use crate::commit::RUN_BYTES_MAX;
use crate::ledger::LedgerError;

impl ChannelGossip {
    /// Commits the buffered blocks that follow the ledger, run by run, until the next one is
    /// missing. `Err` only when storage failed.
    pub(super) async fn commit_buffered(
        &self,
        shared: &Shared,
        buffer: &mut ReorderBuffer,
    ) -> Result<(), CommitError> {
        loop {
            // The consecutive blocks buffered go to the committer as one run, whose stages
            // overlap (`commit::pipeline`).
            let height = self.committer.ledger.height();
            let mut run: Vec<Block> = Vec::new();
            let mut origins: Vec<(Hash, Source)> = Vec::new();
            let mut run_bytes = 0;
            while run.len() < RUN_BLOCKS_MAX && run_bytes < RUN_BYTES_MAX {
                let Some(next) = buffer.take_next(height + run.len() as u64) else {
                    break;
                };
                if shared.is_banned(&next.sender) {
                    // Dropped: the run ends before the gap it leaves.
                    shared.metrics.gossip_drop("banned_sender_buffered");
                    break;
                }
                run_bytes += next.block.encoded_len();
                origins.push((next.sender, next.source));
                run.push(next.block);
            }
            if run.is_empty() {
                return Ok(());
            }
            let committer = self.committer.clone();
            let outcome =
                match tokio::task::spawn_blocking(move || committer.process_run(run)).await {
                    Ok(outcome) => outcome,
                    Err(join) => {
                        return Err(CommitError::Ledger(LedgerError::Corrupt {
                            what: "commit task".into(),
                            reason: join.to_string(),
                        }))
                    }
                };
            let mut processed = origins.into_iter();
            for (i, (result, (sender, source))) in
                outcome.results.into_iter().zip(&mut processed).enumerate()
            {
                match result {
                    Ok(_) => shared.metrics.gossip_received(source.as_str()),
                    Err(CommitError::AlreadyCommitted { .. }) => {}
                    Err(e) if e.is_refusal() => {
                        let number = height + i as u64;
                        self.metrics().blocks_refused.inc();
                        tracing::warn!(channel = %self.id(), number, error = %e, "refused a gossiped block");
                        shared.strike(&sender);
                        if shared.is_banned(&sender) {
                            // Whatever else it sent waits for nothing (and holds the numbers
                            // honest blocks need).
                            for _ in 0..buffer.remove_sender(&sender) {
                                shared.metrics.gossip_drop("banned_sender_buffered");
                            }
                        }
                        self.pull_wake.notify_one();
                    }
                    Err(e) => return Err(e),
                }
            }
            // Blocks after a refused one go back to the buffer (their senders are not to
            // blame), unless their sender was cut off meanwhile.
            let height = self.committer.ledger.height();
            for (block, (sender, source)) in outcome.leftover.into_iter().zip(processed) {
                if shared.is_banned(&sender) {
                    shared.metrics.gossip_drop("banned_sender_buffered");
                } else if let Err(r) = buffer.insert(
                    Incoming {
                        block,
                        source,
                        sender,
                    },
                    height,
                ) {
                    shared.metrics.gossip_drop(r.as_str());
                }
            }
        }
    }
}
