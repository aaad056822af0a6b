//! Transaction history (chaos run: workload → faults → [history] → checks → report).
//!
//! Every transaction the workload drives is recorded here by tx id (hex, as
//! `peer::commit::tx_id_of` gives it), with what its client learnt and when (seconds since the
//! scenario started):
//!
//! | event | meaning | definite? |
//! |---|---|---|
//! | [`History::submitted`] | the client built and sent it | no |
//! | [`History::acked`] | an orderer's Broadcast answered SUCCESS: it is ordered and must never be lost | yes |
//! | [`History::committed`] | the client learnt its block and validation code | yes |
//! | [`History::failed`] | it was refused (endorsement, orderer refusal): it should not be ordered | yes |
//! | [`History::timed_out`] | the client gave up waiting (timeout, connection lost) | no |
//!
//! A record with no definite event at the end is *unknown*: it may or may not be in the chain,
//! which alone is never a failure. What counts as committed, lost or duplicated is decided
//! against the final chain ([`History::summary`] with a [`ChainIndex`]), never the clients'
//! view. Promises: cheap to clone and safe to share across tasks (one mutex, held only to
//! update one record); each record's memory is bounded (a reason keeps at most
//! [`REASON_CHARS_MAX`] characters) and so is the number of records ([`History::with_records_max`]):
//! events for tx ids past that bound are counted in [`History::overflow`], not stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use shared_proto::pb::tx::TxValidationCode;

use crate::check::ChainIndex;
use crate::report::TxCounts;

/// Characters kept of a failure reason.
pub const REASON_CHARS_MAX: usize = 200;
/// Records kept by [`History::new`]: a chaos run of minutes at hundreds of tx/s stays far below
/// it, and at a few hundred bytes a record it bounds the history to about 100 MiB.
pub const RECORDS_MAX_DEFAULT: usize = 300_000;

/// What one client learnt of its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCommit {
    pub block: u64,
    /// A `TxValidationCode` as i32 (`TxValidationCode::Valid as i32` is 0).
    pub code: i32,
    pub t: f64,
}

/// Everything recorded of one transaction. Times are seconds since the scenario started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxRecord {
    pub tx_id: String,
    /// Which client drove it (the workload's index).
    pub client: Option<usize>,
    pub submitted_t: Option<f64>,
    /// The first orderer that answered SUCCESS, and when.
    pub acked: Option<(String, f64)>,
    pub committed: Option<ClientCommit>,
    /// A definite refusal, truncated to [`REASON_CHARS_MAX`] characters.
    pub failed: Option<(String, f64)>,
    /// The client gave up waiting: the fate stays unknown unless another event says more.
    pub timed_out: Option<(String, f64)>,
}

impl TxRecord {
    /// Whether the client learnt a definite answer (acked, committed or refused).
    pub fn definite(&self) -> bool {
        self.acked.is_some() || self.committed.is_some() || self.failed.is_some()
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, TxRecord>,
    overflow: u64,
}

/// The shared history of one scenario run. Clone it into every client task.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    records_max: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history keeping at most [`RECORDS_MAX_DEFAULT`] records.
    pub fn new() -> Self {
        Self::with_records_max(RECORDS_MAX_DEFAULT)
    }

    /// An empty history keeping at most `records_max` records.
    pub fn with_records_max(records_max: usize) -> Self {
        History {
            inner: Arc::new(Mutex::new(Inner::default())),
            records_max,
        }
    }

    /// Applies `update` to the record of `tx_id`, creating it if there is room.
    fn update(&self, tx_id: &str, update: impl FnOnce(&mut TxRecord)) {
        // A panicking holder leaves at worst one half-updated record: keep recording.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = inner.records.get_mut(tx_id) {
            update(r);
            return;
        }
        if inner.records.len() >= self.records_max {
            inner.overflow += 1;
            return;
        }
        let mut r = TxRecord {
            tx_id: tx_id.to_owned(),
            ..TxRecord::default()
        };
        update(&mut r);
        inner.records.insert(tx_id.to_owned(), r);
    }

    /// Client `client` sent `tx_id` at `t`.
    pub fn submitted(&self, tx_id: &str, client: usize, t: f64) {
        self.update(tx_id, |r| {
            r.client = Some(client);
            r.submitted_t.get_or_insert(t);
        });
    }

    /// Orderer `orderer` answered SUCCESS for `tx_id` at `t` (the first answer is kept).
    pub fn acked(&self, tx_id: &str, orderer: &str, t: f64) {
        self.update(tx_id, |r| {
            r.acked.get_or_insert_with(|| (orderer.to_owned(), t));
        });
    }

    /// The client learnt that `tx_id` is in block `block` with `code` (a `TxValidationCode` as
    /// i32) at `t` (the first answer is kept).
    pub fn committed(&self, tx_id: &str, block: u64, code: i32, t: f64) {
        self.update(tx_id, |r| {
            r.committed.get_or_insert(ClientCommit { block, code, t });
        });
    }

    /// `tx_id` was refused for `reason` at `t` (a definite answer).
    pub fn failed(&self, tx_id: &str, reason: &str, t: f64) {
        self.update(tx_id, |r| {
            r.failed.get_or_insert_with(|| (truncate(reason), t));
        });
    }

    /// The client gave up on `tx_id` at `t` for `reason`; its fate stays unknown.
    pub fn timed_out(&self, tx_id: &str, reason: &str, t: f64) {
        self.update(tx_id, |r| {
            r.timed_out.get_or_insert_with(|| (truncate(reason), t));
        });
    }

    /// Events for tx ids that found no room (see [`History::with_records_max`]).
    pub fn overflow(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflow
    }

    /// A copy of every record, sorted by submit time (records never submitted last), then tx id.
    pub fn records(&self) -> Vec<TxRecord> {
        let mut out: Vec<TxRecord> = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .values()
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            let t = |r: &TxRecord| r.submitted_t.unwrap_or(f64::INFINITY);
            t(a).total_cmp(&t(b)).then_with(|| a.tx_id.cmp(&b.tx_id))
        });
        out
    }

    /// The tx ids an orderer acked, sorted by ack time.
    pub fn acked_ids(&self) -> Vec<String> {
        let mut acked: Vec<(f64, String)> = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .values()
            .filter_map(|r| r.acked.as_ref().map(|(_, t)| (*t, r.tx_id.clone())))
            .collect();
        acked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        acked.into_iter().map(|(_, id)| id).collect()
    }

    /// (commit time, submit → commit latency), seconds, of every transaction whose client
    /// learnt it committed VALID, by commit time: the timeline plot's input.
    pub fn commit_times(&self) -> Vec<(f64, f64)> {
        let valid = TxValidationCode::Valid as i32;
        let mut out: Vec<(f64, f64)> = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .values()
            .filter_map(|r| {
                let c = r.committed.as_ref().filter(|c| c.code == valid)?;
                Some((c.t, c.t - r.submitted_t?))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// The run's transaction counts (report.json's `txs`), decided against the final chain:
    ///
    /// - `submitted`, `acked`: records with that event;
    /// - `committed_valid` / `committed_invalid`: recorded tx ids whose first copy in the chain
    ///   has a VALID / another validation code (a copy no peer has annotated counts in
    ///   neither);
    /// - `lost_acked`: acked tx ids in no block of the chain;
    /// - `duplicates`: extra copies of any tx id in the chain (the workload's or not);
    /// - `unknown`: records in no block of the chain whose client learnt no definite answer.
    pub fn summary(&self, chain: &ChainIndex) -> TxCounts {
        let valid = TxValidationCode::Valid as i32;
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut c = TxCounts {
            duplicates: chain.extra_copies(),
            ..TxCounts::default()
        };
        for r in inner.records.values() {
            c.submitted += u64::from(r.submitted_t.is_some());
            c.acked += u64::from(r.acked.is_some());
            match chain.first(&r.tx_id) {
                Some(place) => match place.code {
                    Some(code) if code == valid => c.committed_valid += 1,
                    Some(_) => c.committed_invalid += 1,
                    None => {}
                },
                None => {
                    c.lost_acked += u64::from(r.acked.is_some());
                    c.unknown += u64::from(!r.definite());
                }
            }
        }
        c
    }
}

fn truncate(reason: &str) -> String {
    match reason.char_indices().nth(REASON_CHARS_MAX) {
        Some((end, _)) => reason[..end].to_owned(),
        None => reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const VALID: i32 = TxValidationCode::Valid as i32;

    #[test]
    fn events_build_one_record_per_tx_keeping_the_first_answer() {
        let h = History::new();
        h.submitted("a", 3, 1.0);
        h.acked("a", "orderer2", 1.5);
        h.acked("a", "orderer1", 1.7);
        h.committed("a", 7, VALID, 2.0);
        h.committed("a", 8, 11, 2.5);
        let r = &h.records()[0];
        assert_eq!(r.client, Some(3));
        assert_eq!(r.acked, Some(("orderer2".into(), 1.5)));
        assert_eq!(
            r.committed,
            Some(ClientCommit {
                block: 7,
                code: VALID,
                t: 2.0
            })
        );
        assert!(r.definite());
    }

    #[test]
    fn an_event_before_submit_still_makes_a_record() {
        let h = History::new();
        h.acked("late", "orderer1", 4.0);
        h.submitted("late", 0, 3.9);
        let r = &h.records()[0];
        assert_eq!((r.submitted_t, r.acked.is_some()), (Some(3.9), true));
    }

    #[test]
    fn reasons_are_truncated_to_200_characters() {
        let h = History::new();
        h.failed("a", &"é".repeat(500), 1.0);
        h.timed_out("b", &"x".repeat(201), 1.0);
        let records = h.records();
        for r in &records {
            let reason = r.failed.as_ref().or(r.timed_out.as_ref()).unwrap();
            assert_eq!(reason.0.chars().count(), REASON_CHARS_MAX);
        }
        assert!(!records.iter().find(|r| r.tx_id == "b").unwrap().definite());
    }

    #[test]
    fn records_past_the_bound_are_counted_not_stored() {
        let h = History::with_records_max(2);
        for id in ["a", "b", "c", "d"] {
            h.submitted(id, 0, 0.0);
        }
        h.acked("a", "orderer1", 1.0);
        assert_eq!((h.records().len(), h.overflow()), (2, 2));
    }

    #[test]
    fn clones_share_one_history_across_threads() {
        let h = History::new();
        let threads: Vec<_> = (0..4)
            .map(|c| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for k in 0..100 {
                        h.submitted(&format!("{c}-{k}"), c, f64::from(k));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.records().len(), 400);
    }

    #[test]
    fn commit_times_are_valid_commits_with_their_latency_by_commit_time() {
        let h = History::new();
        h.submitted("late", 0, 5.0);
        h.committed("late", 2, VALID, 9.0);
        h.submitted("early", 0, 1.0);
        h.committed("early", 1, VALID, 1.25);
        h.submitted("invalid", 0, 1.0);
        h.committed("invalid", 1, 11, 1.5);
        h.committed("never-submitted", 1, VALID, 1.5);
        assert_eq!(h.commit_times(), vec![(1.25, 0.25), (9.0, 4.0)]);
        assert_eq!(h.acked_ids(), Vec::<String>::new());
    }
}
