//! Phase 2: the checks that depend on earlier transactions of the block, in block order —
//! duplicate tx ids, MVCC point reads, range-query phantoms — and the block overlay (the
//! writes of the valid transactions so far), which every later check reads through.
//!
//! Range queries are re-executed over committed state overlaid with the block's earlier valid
//! writes and must give exactly the recorded keys and versions. For an exhausted iterator the
//! range is `[start_key, end_key)`; for one the simulation stopped early, it is `[start_key,
//! last key read]` (as Fabric), and a query that read nothing is not checked. Storage reads per
//! query are bounded by its recorded results plus the overlay's deletes in its range.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::ops::Bound;

use shared_proto::pb::tx::NsReadWriteSet;
use shared_proto::pb::tx::RangeQueryInfo;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::pb::tx::TxValidationCode as Code;

use super::tx::CheckedTx;
use super::ValidatedBlock;
use crate::ledger::LedgerError;
use crate::ledger::StateReader;
use crate::ledger::StateWrite;
use crate::ledger::Version;

/// A key as the block's earlier valid transactions left it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    version: Version,
    deleted: bool,
}

/// Writes of the valid transactions so far: namespace -> key -> state.
#[derive(Debug, Default)]
struct Overlay {
    namespaces: BTreeMap<String, BTreeMap<String, Pending>>,
}

impl Overlay {
    /// The key's current version: the overlay's if the block wrote it (`None` if deleted),
    /// else the committed one.
    fn version(
        &self,
        state: &dyn StateReader,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Version>, LedgerError> {
        if let Some(p) = self.namespaces.get(namespace).and_then(|m| m.get(key)) {
            return Ok((!p.deleted).then_some(p.version));
        }
        Ok(state.get(namespace, key)?.map(|v| v.version))
    }

    /// Adds a valid transaction's writes, and appends them to `out`.
    fn apply(&mut self, rwset: &TxReadWriteSet, version: Version, out: &mut Vec<StateWrite>) {
        for ns in &rwset.ns_rwset {
            if ns.writes.is_empty() {
                continue;
            }
            let keys = self.namespaces.entry(ns.namespace.clone()).or_default();
            for w in &ns.writes {
                let deleted = w.is_delete;
                keys.insert(w.key.clone(), Pending { version, deleted });
                out.push(StateWrite {
                    namespace: ns.namespace.clone(),
                    key: w.key.clone(),
                    value: (!deleted).then(|| w.value.clone()),
                    version,
                });
            }
        }
    }
}

/// Phase 2 over the phase-1 results, in block order.
pub(super) fn validate_in_order(
    state: &dyn StateReader,
    block_num: u64,
    checked: Vec<CheckedTx>,
) -> Result<ValidatedBlock, LedgerError> {
    let mut out = ValidatedBlock {
        codes: Vec::with_capacity(checked.len()),
        writes: Vec::new(),
        tx_ids: Vec::with_capacity(checked.len()),
    };
    let mut overlay = Overlay::default();
    let mut seen: HashSet<String> = HashSet::with_capacity(checked.len());
    for (index, tx) in checked.into_iter().enumerate() {
        let duplicate = match &tx.tx_id {
            Some(id) => {
                // Looked up here, not in phase 1: phase 1 of this block may run while the
                // previous block is committing (`commit::pipeline`).
                let first_in_block = seen.insert(id.clone());
                !first_in_block || state.has_tx(id)?
            }
            None => false,
        };
        let code = match &tx.outcome {
            _ if duplicate => Code::DuplicateTxid,
            Err(code) => *code,
            Ok(rwset) => {
                let code = check_reads(state, &overlay, rwset)?;
                if code == Code::Valid {
                    let version = Version {
                        block_num,
                        tx_num: index as u64,
                    };
                    overlay.apply(rwset, version, &mut out.writes);
                }
                code
            }
        };
        out.codes.push(code);
        out.tx_ids.push(tx.tx_id);
    }
    Ok(out)
}

/// Point reads then range queries, namespace by namespace (as Fabric).
fn check_reads(
    state: &dyn StateReader,
    overlay: &Overlay,
    rwset: &TxReadWriteSet,
) -> Result<Code, LedgerError> {
    if shared_proto::mutants::active(shared_proto::mutants::Mutant::MvccCheckSkipped) {
        // Planted bug: stale reads pass.
        return Ok(Code::Valid);
    }
    for ns in &rwset.ns_rwset {
        if !point_reads_current(state, overlay, ns)? {
            return Ok(Code::MvccReadConflict);
        }
        for query in &ns.range_queries_info {
            if !range_unchanged(state, overlay, &ns.namespace, query)? {
                return Ok(Code::PhantomReadConflict);
            }
        }
    }
    Ok(Code::Valid)
}

fn point_reads_current(
    state: &dyn StateReader,
    overlay: &Overlay,
    ns: &NsReadWriteSet,
) -> Result<bool, LedgerError> {
    for read in &ns.reads {
        let recorded = read.version.as_ref().map(Version::from_pb);
        if overlay.version(state, &ns.namespace, &read.key)? != recorded {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether re-executing `query` now gives exactly its recorded keys and versions.
fn range_unchanged(
    state: &dyn StateReader,
    overlay: &Overlay,
    namespace: &str,
    query: &RangeQueryInfo,
) -> Result<bool, LedgerError> {
    let recorded = &query.raw_reads;
    let end: Cow<'_, str> = if query.itr_exhausted {
        Cow::Borrowed(&query.end_key)
    } else {
        match recorded.last() {
            // Keys hold no NUL, so `[start, last + "\0")` is `[start, last]`.
            Some(last) => Cow::Owned(format!("{}\0", last.key)),
            None => return Ok(true),
        }
    };
    let start = query.start_key.as_str();
    if !end.is_empty() && start >= end.as_ref() {
        return Ok(recorded.is_empty());
    }
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.as_ref())
    };
    let pending: Vec<(&String, &Pending)> = overlay
        .namespaces
        .get(namespace)
        .map(|keys| {
            keys.range::<str, _>((Bound::Included(start), upper))
                .collect()
        })
        .unwrap_or_default();
    let deletes = pending.iter().filter(|(_, p)| p.deleted).count();
    // Enough committed keys that, after the overlay removes up to `deletes` of them, one more
    // than recorded remains if it exists. If the answer is cut at `limit`, at least
    // `recorded + 1` merged keys precede the cut, so the merge below stops (a phantom) before
    // reaching keys the answer left out.
    let limit = recorded.len().saturating_add(1).saturating_add(deletes);
    let committed = state.range(namespace, start, &end, limit)?;

    let mut now: Vec<(&str, Version)> = Vec::with_capacity(recorded.len() + 1);
    let mut committed = committed.iter().peekable();
    let mut pending = pending.into_iter().peekable();
    while now.len() <= recorded.len() {
        let next = match (committed.peek(), pending.peek()) {
            (None, None) => break,
            (Some((ck, cv)), None) => {
                let item = (ck.as_str(), Some(cv.version));
                committed.next();
                item
            }
            (None, Some((pk, p))) => {
                let item = (pk.as_str(), (!p.deleted).then_some(p.version));
                pending.next();
                item
            }
            (Some((ck, cv)), Some((pk, p))) => {
                if ck.as_str() < pk.as_str() {
                    let item = (ck.as_str(), Some(cv.version));
                    committed.next();
                    item
                } else {
                    // The overlay shadows the committed key of the same name.
                    if ck == *pk {
                        committed.next();
                    }
                    let item = (pk.as_str(), (!p.deleted).then_some(p.version));
                    pending.next();
                    item
                }
            }
        };
        if let (key, Some(version)) = next {
            now.push((key, version));
        }
    }
    Ok(now.len() == recorded.len()
        && now.iter().zip(recorded).all(|((key, version), read)| {
            *key == read.key && read.version.as_ref().map(Version::from_pb) == Some(*version)
        }))
}
