//! Block cutting (orderer flow: broadcast -> consensus -> state machine [cutter] -> block_store
//! -> deliver).
//!
//! Pure: no clock, no IO. Every node runs it on the same committed entries, so every node cuts
//! the same blocks; the leader's timer only proposes a `TimeToCut` (or `QuietCut`) entry,
//! applied through [`BlockCutter::cut`].
//!
//! | envelope size `s`, pending bytes `p`, pending count `n` | result                                   |
//! |---------------------------------------------------------|------------------------------------------|
//! | `s > bytes_absolute_max`                                | refused; pending unchanged               |
//! | `s > bytes_preferred_max`                               | pending cut (if any), then `[envelope]` cut alone |
//! | `p + s > bytes_preferred_max`                           | pending cut, envelope starts the next batch |
//! | otherwise                                               | appended                                 |
//! | then `n + 1 == message_count_max`                       | pending cut                              |
//! | `TimeToCut`/`QuietCut` for the next block, `n > 0`      | pending cut                              |
//! | `TimeToCut`/`QuietCut` for the next block, `n == 0` or stale | nothing                             |

use serde::Deserialize;
use serde::Serialize;

/// The channel's batch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub message_count_max: u32,
    pub bytes_preferred_max: u32,
    pub bytes_absolute_max: u32,
}

impl BatchLimits {
    pub fn from_config(batch: &shared_proto::pb::config::BatchSize) -> Self {
        BatchLimits {
            message_count_max: batch.message_count_max.max(1),
            bytes_preferred_max: batch.bytes_preferred_max.max(1),
            bytes_absolute_max: batch.bytes_absolute_max.max(1),
        }
    }
}

/// Why a block was cut (node-local counts: `weft_orderer_blocks_cut_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// `message_count_max` envelopes pending.
    Count,
    /// The next envelope would pass `bytes_preferred_max`.
    Bytes,
    /// One envelope over `bytes_preferred_max`, in a block alone.
    Large,
    /// The batch timeout (a `TimeToCut` entry).
    Timeout,
    /// A config block, and the envelopes cut ahead of it.
    Config,
    /// The leader had nothing more on its way to the log (a `QuietCut` entry).
    Quiet,
}

impl CutReason {
    pub const ALL: [CutReason; 6] = [
        CutReason::Count,
        CutReason::Bytes,
        CutReason::Large,
        CutReason::Timeout,
        CutReason::Config,
        CutReason::Quiet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::Count => "count",
            CutReason::Bytes => "bytes",
            CutReason::Large => "large",
            CutReason::Timeout => "timeout",
            CutReason::Config => "config",
            CutReason::Quiet => "quiet",
        }
    }

    /// Its index in [`CutReason::ALL`] (and in [`CutCounts`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Blocks cut per [`CutReason`], in the order of [`CutReason::ALL`].
pub type CutCounts = [u64; CutReason::ALL.len()];

/// What one envelope did to the pending batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ordered {
    /// Batches cut, oldest first; each becomes one block.
    pub batches: Vec<Vec<Vec<u8>>>,
    /// Why each of `batches` was cut (same order).
    pub reasons: Vec<CutReason>,
    /// The envelope exceeded `bytes_absolute_max` and is in no batch.
    pub refused: bool,
}

impl Ordered {
    fn push(&mut self, batch: Vec<Vec<u8>>, reason: CutReason) {
        self.batches.push(batch);
        self.reasons.push(reason);
    }
}

/// Envelopes waiting for their block. Part of the replicated state (and of snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCutter {
    pending: Vec<serde_bytes::ByteBuf>,
    pending_bytes: u64,
}

impl BlockCutter {
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Adds one envelope; see the module truth table.
    pub fn ordered(&mut self, limits: &BatchLimits, envelope: Vec<u8>) -> Ordered {
        let size = envelope.len() as u64;
        let mut out = Ordered::default();
        if size > u64::from(limits.bytes_absolute_max) {
            out.refused = true;
            return out;
        }
        if size > u64::from(limits.bytes_preferred_max) {
            if !self.pending.is_empty() {
                out.push(self.cut(), CutReason::Bytes);
            }
            out.push(vec![envelope], CutReason::Large);
            return out;
        }
        if self.pending_bytes + size > u64::from(limits.bytes_preferred_max) {
            out.push(self.cut(), CutReason::Bytes);
        }
        self.pending.push(serde_bytes::ByteBuf::from(envelope));
        self.pending_bytes += size;
        if self.pending.len() >= limits.message_count_max as usize {
            out.push(self.cut(), CutReason::Count);
        }
        out
    }

    /// Takes everything pending as one batch (empty if nothing is pending).
    pub fn cut(&mut self) -> Vec<Vec<u8>> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(serde_bytes::ByteBuf::into_vec)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        message_count_max: 3,
        bytes_preferred_max: 100,
        bytes_absolute_max: 200,
    };

    fn env(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn count_limit_cuts_at_message_count_max() {
        let mut c = BlockCutter::default();
        assert_eq!(c.ordered(&LIMITS, env(1, 10)), Ordered::default());
        assert_eq!(c.ordered(&LIMITS, env(2, 10)), Ordered::default());
        let out = c.ordered(&LIMITS, env(3, 10));
        assert_eq!(out.batches, vec![vec![env(1, 10), env(2, 10), env(3, 10)]]);
        assert_eq!(out.reasons, vec![CutReason::Count]);
        assert_eq!(c.pending_count(), 0);
        assert_eq!(c.pending_bytes(), 0);
    }

    #[test]
    fn preferred_bytes_overflow_cuts_pending_and_starts_next_batch() {
        let mut c = BlockCutter::default();
        c.ordered(&LIMITS, env(1, 60));
        let out = c.ordered(&LIMITS, env(2, 60));
        assert_eq!(out.batches, vec![vec![env(1, 60)]]);
        assert_eq!(out.reasons, vec![CutReason::Bytes]);
        assert!(!out.refused);
        assert_eq!(c.pending_count(), 1);
        assert_eq!(c.pending_bytes(), 60);
    }

    #[test]
    fn exactly_preferred_bytes_is_not_an_overflow() {
        let mut c = BlockCutter::default();
        c.ordered(&LIMITS, env(1, 50));
        let out = c.ordered(&LIMITS, env(2, 50));
        assert!(out.batches.is_empty());
        assert_eq!(c.pending_bytes(), 100);
    }

    #[test]
    fn envelope_larger_than_preferred_is_isolated_after_pending() {
        let mut c = BlockCutter::default();
        c.ordered(&LIMITS, env(1, 10));
        let out = c.ordered(&LIMITS, env(2, 150));
        assert_eq!(out.batches, vec![vec![env(1, 10)], vec![env(2, 150)]]);
        assert_eq!(out.reasons, vec![CutReason::Bytes, CutReason::Large]);
        assert_eq!(c.pending_count(), 0);
        // With nothing pending it is cut alone.
        let out = c.ordered(&LIMITS, env(3, 150));
        assert_eq!(out.batches, vec![vec![env(3, 150)]]);
    }

    #[test]
    fn envelope_larger_than_absolute_max_is_refused_and_pending_kept() {
        let mut c = BlockCutter::default();
        c.ordered(&LIMITS, env(1, 10));
        let out = c.ordered(&LIMITS, env(2, 201));
        assert!(out.refused);
        assert!(out.batches.is_empty());
        assert_eq!(c.pending_count(), 1);
        // Exactly the absolute max is accepted (isolated, as it exceeds preferred).
        let out = c.ordered(&LIMITS, env(3, 200));
        assert!(!out.refused);
        assert_eq!(out.batches, vec![vec![env(1, 10)], vec![env(3, 200)]]);
    }

    #[test]
    fn timeout_cut_takes_everything_pending_and_empty_cut_is_empty() {
        let mut c = BlockCutter::default();
        assert!(c.cut().is_empty());
        c.ordered(&LIMITS, env(1, 10));
        c.ordered(&LIMITS, env(2, 10));
        assert_eq!(c.cut(), vec![env(1, 10), env(2, 10)]);
        assert_eq!(c.pending_count(), 0);
        assert!(c.cut().is_empty());
    }

    #[test]
    fn same_input_cuts_same_batches_on_every_node() {
        let inputs: Vec<Vec<u8>> = (0..50u8)
            .map(|i| env(i, (i as usize * 7) % 160 + 1))
            .collect();
        let run = || {
            let mut c = BlockCutter::default();
            let mut batches = Vec::new();
            for e in &inputs {
                batches.extend(c.ordered(&LIMITS, e.clone()).batches);
            }
            batches.push(c.cut());
            batches
        };
        assert_eq!(run(), run());
        let total: usize = run().iter().map(Vec::len).sum();
        assert_eq!(total, inputs.len());
    }
}
