//! Transaction simulator: runs one chaincode invocation against committed state and records
//! its read/write set (peer flow: endorser → [chaincode] on [simulator] → signed rwset).
//!
//! A [`TxSimulator`] covers one transaction and one namespace (the chaincode's name). It
//! implements [`Stub`]:
//!
//! - `get` reads committed state and records `(key, version)` (`None`: absent) the first time
//!   a key is read; later reads keep the first version. A transaction does **not** see its own
//!   writes (as in Fabric): `get` after `put` returns the committed value.
//! - `put` / `delete` buffer writes; the last write to a key wins.
//! - `range` reads committed keys in `[start, end)` and records a `RangeQueryInfo` with every
//!   key and version it returned (`itr_exhausted: true`: the whole range is always read), so
//!   validation can re-run it and catch phantoms.
//!
//! If committed state changes during a simulation, reads may see different blocks; the first
//! recorded version is then stale and the transaction fails MVCC validation, so no
//! inconsistent transaction commits.
//!
//! Promises: [`TxSimulator::into_rwset`] is deterministic: reads and writes sorted by key,
//! range queries sorted, so endorsers of different orgs produce byte-identical rwsets for the
//! same committed state and the same operations, whatever order keys were touched in. Keys are
//! checked with [`check_key`]; every per-transaction quantity is bounded (see the constants);
//! exceeding a bound is an error, never a truncated result.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use shared_proto::pb::tx::{KvRead, KvWrite, NsReadWriteSet, RangeQueryInfo, TxReadWriteSet};

use crate::chaincode::{ChaincodeError, Stub};
use crate::ledger::{check_key, LedgerError, StateReader, Version};

/// Largest value a transaction may write (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most distinct keys a transaction may read with `get`.
pub const MAX_READS_PER_TX: usize = 10_000;
/// Most distinct keys a transaction may write or delete.
pub const MAX_WRITES_PER_TX: usize = 10_000;
/// Total bytes of buffered write values (last write per key) in one transaction (16 MiB).
pub const MAX_WRITE_BYTES_PER_TX: usize = 16 << 20;
/// Most results one range query may return; a larger range is an error, not a truncation.
pub const MAX_RANGE_RESULTS: usize = 10_000;
/// Most range queries per transaction.
pub const MAX_RANGE_QUERIES_PER_TX: usize = 100;
/// Most keys recorded over all of a transaction's range queries.
pub const MAX_RANGE_READS_PER_TX: usize = 100_000;

/// Simulates one transaction in one namespace and records its read/write set.
pub struct TxSimulator {
    state: Arc<dyn StateReader>,
    channel_id: String,
    namespace: String,
    tx_id: String,
    creator_msp_id: String,
    /// Key → version at first read (`None`: the key was absent).
    reads: BTreeMap<String, Option<Version>>,
    /// Key → last write (`None`: delete).
    writes: BTreeMap<String, Option<Vec<u8>>>,
    write_bytes: usize,
    ranges: Vec<RangeQueryInfo>,
    range_reads: usize,
}

impl fmt::Debug for TxSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxSimulator")
            .field("channel_id", &self.channel_id)
            .field("namespace", &self.namespace)
            .field("tx_id", &self.tx_id)
            .field("creator_msp_id", &self.creator_msp_id)
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .field("ranges", &self.ranges.len())
            .finish_non_exhaustive()
    }
}

impl TxSimulator {
    pub fn new(
        state: Arc<dyn StateReader>,
        channel_id: impl Into<String>,
        namespace: impl Into<String>,
        tx_id: impl Into<String>,
        creator_msp_id: impl Into<String>,
    ) -> Self {
        TxSimulator {
            state,
            channel_id: channel_id.into(),
            namespace: namespace.into(),
            tx_id: tx_id.into(),
            creator_msp_id: creator_msp_id.into(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            write_bytes: 0,
            ranges: Vec::new(),
            range_reads: 0,
        }
    }

    /// An empty simulator for the same state, channel, namespace, tx and creator.
    pub fn fresh(&self) -> Self {
        TxSimulator::new(
            self.state.clone(),
            self.channel_id.clone(),
            self.namespace.clone(),
            self.tx_id.clone(),
            self.creator_msp_id.clone(),
        )
    }

    /// The namespace (chaincode name) this simulator reads and writes.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The read/write set: one `NsReadWriteSet` for the namespace (present even when empty),
    /// reads and writes sorted by key, range queries sorted by (start, end, results) with
    /// exact duplicates removed.
    pub fn into_rwset(self) -> TxReadWriteSet {
        let reads = self
            .reads
            .into_iter()
            .map(|(key, version)| KvRead {
                key,
                version: version.map(Version::to_pb),
            })
            .collect();
        let writes = self
            .writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => KvWrite {
                    key,
                    is_delete: false,
                    value,
                },
                None => KvWrite {
                    key,
                    is_delete: true,
                    value: Vec::new(),
                },
            })
            .collect();
        let mut ranges = self.ranges;
        ranges.sort_by(compare_ranges);
        ranges.dedup();
        TxReadWriteSet {
            ns_rwset: vec![NsReadWriteSet {
                namespace: self.namespace,
                reads,
                writes,
                range_queries_info: ranges,
            }],
        }
    }

    fn check_key(&self, key: &str) -> Result<(), ChaincodeError> {
        check_key(&self.namespace, key).map_err(ledger_error)
    }

    fn buffer_write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), ChaincodeError> {
        self.check_key(key)?;
        let new_len = value.as_ref().map_or(0, Vec::len);
        if new_len > MAX_VALUE_BYTES {
            return Err(ChaincodeError::bad_request(format!(
                "value for key {:?} is {new_len} bytes, more than {MAX_VALUE_BYTES}",
                short(key)
            )));
        }
        let old_len = match self.writes.get(key) {
            Some(old) => old.as_ref().map_or(0, Vec::len),
            None if self.writes.len() >= MAX_WRITES_PER_TX => {
                return Err(ChaincodeError::Limit(format!(
                    "more than {MAX_WRITES_PER_TX} keys written in one transaction"
                )))
            }
            None => 0,
        };
        let total = self.write_bytes - old_len + new_len;
        if total > MAX_WRITE_BYTES_PER_TX {
            return Err(ChaincodeError::Limit(format!(
                "more than {MAX_WRITE_BYTES_PER_TX} bytes written in one transaction"
            )));
        }
        self.write_bytes = total;
        self.writes.insert(key.to_owned(), value);
        Ok(())
    }
}

#[tonic::async_trait]
impl Stub for TxSimulator {
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ChaincodeError> {
        self.check_key(key)?;
        if !self.reads.contains_key(key) && self.reads.len() >= MAX_READS_PER_TX {
            return Err(ChaincodeError::Limit(format!(
                "more than {MAX_READS_PER_TX} keys read in one transaction"
            )));
        }
        let found = self.state.get(&self.namespace, key).map_err(ledger_error)?;
        let version = found.as_ref().map(|v| v.version);
        self.reads.entry(key.to_owned()).or_insert(version);
        Ok(found.map(|v| v.value))
    }

    async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ChaincodeError> {
        self.buffer_write(key, Some(value))
    }

    async fn delete(&mut self, key: &str) -> Result<(), ChaincodeError> {
        self.buffer_write(key, None)
    }

    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
        for bound in [start, end] {
            if !bound.is_empty() {
                self.check_key(bound)?;
            }
        }
        if !end.is_empty() && end < start {
            return Err(ChaincodeError::bad_request(format!(
                "range end {:?} is before start {:?}",
                short(end),
                short(start)
            )));
        }
        if self.ranges.len() >= MAX_RANGE_QUERIES_PER_TX {
            return Err(ChaincodeError::Limit(format!(
                "more than {MAX_RANGE_QUERIES_PER_TX} range queries in one transaction"
            )));
        }
        let found = self
            .state
            .range(&self.namespace, start, end, MAX_RANGE_RESULTS + 1)
            .map_err(ledger_error)?;
        if found.len() > MAX_RANGE_RESULTS {
            return Err(ChaincodeError::Limit(format!(
                "range [{:?}, {:?}) holds more than {MAX_RANGE_RESULTS} keys",
                short(start),
                short(end)
            )));
        }
        if self.range_reads + found.len() > MAX_RANGE_READS_PER_TX {
            return Err(ChaincodeError::Limit(format!(
                "more than {MAX_RANGE_READS_PER_TX} keys read by range queries in one transaction"
            )));
        }
        self.range_reads += found.len();
        let raw_reads = found
            .iter()
            .map(|(key, v)| KvRead {
                key: key.clone(),
                version: Some(v.version.to_pb()),
            })
            .collect();
        self.ranges.push(RangeQueryInfo {
            start_key: start.to_owned(),
            end_key: end.to_owned(),
            itr_exhausted: true,
            raw_reads,
        });
        Ok(found.into_iter().map(|(k, v)| (k, v.value)).collect())
    }

    fn tx_id(&self) -> &str {
        &self.tx_id
    }

    fn creator_msp_id(&self) -> &str {
        &self.creator_msp_id
    }

    fn channel_id(&self) -> &str {
        &self.channel_id
    }
}

/// A bad key is the request's fault (400); anything else is a storage failure (500).
fn ledger_error(e: LedgerError) -> ChaincodeError {
    match e {
        LedgerError::BadKey { .. } => ChaincodeError::bad_request(e.to_string()),
        other => ChaincodeError::State(other.to_string()),
    }
}

/// At most 64 characters of a key, for error messages.
fn short(key: &str) -> String {
    key.chars().take(64).collect()
}

/// Total order on range queries: start, end, then results (key, version).
fn compare_ranges(a: &RangeQueryInfo, b: &RangeQueryInfo) -> Ordering {
    let reads = |r: &RangeQueryInfo| {
        r.raw_reads
            .iter()
            .map(|kv| {
                let v = kv.version.as_ref().map(|v| (v.block_num, v.tx_num));
                (kv.key.clone(), v)
            })
            .collect::<Vec<_>>()
    };
    (a.start_key.as_str(), a.end_key.as_str(), a.itr_exhausted)
        .cmp(&(b.start_key.as_str(), b.end_key.as_str(), b.itr_exhausted))
        .then_with(|| reads(a).cmp(&reads(b)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::chaincode::mem_state::MemState;
    use shared_proto::pb::tx;

    const NS: &str = "cc";

    fn state() -> Arc<MemState> {
        let state = MemState::new();
        state.set(NS, "a", b"1", 1, 0);
        state.set(NS, "b", b"2", 2, 3);
        state.set(NS, "c", b"3", 4, 1);
        state.set("other", "b2", b"x", 9, 9);
        Arc::new(state)
    }

    fn sim(state: &Arc<MemState>) -> TxSimulator {
        TxSimulator::new(state.clone(), "ch", NS, "tx1", "Org1MSP")
    }

    fn v(block_num: u64, tx_num: u64) -> Option<tx::Version> {
        Some(tx::Version { block_num, tx_num })
    }

    fn ns(rwset: &TxReadWriteSet) -> &NsReadWriteSet {
        assert_eq!(rwset.ns_rwset.len(), 1);
        &rwset.ns_rwset[0]
    }

    #[tokio::test]
    async fn reads_record_versions_of_present_and_absent_keys() {
        let state = state();
        let mut s = sim(&state);
        assert_eq!(s.get("b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get("zz").await.unwrap(), None);
        let rwset = s.into_rwset();
        let ns = ns(&rwset);
        assert_eq!(ns.namespace, NS);
        assert_eq!(
            ns.reads,
            vec![
                KvRead {
                    key: "b".into(),
                    version: v(2, 3)
                },
                KvRead {
                    key: "zz".into(),
                    version: None
                },
            ]
        );
        assert!(ns.writes.is_empty());
    }

    #[tokio::test]
    async fn first_read_version_wins() {
        let state = state();
        let mut s = sim(&state);
        s.get("a").await.unwrap();
        state.set(NS, "a", b"new", 7, 0);
        assert_eq!(s.get("a").await.unwrap(), Some(b"new".to_vec()));
        assert_eq!(ns(&s.into_rwset()).reads[0].version, v(1, 0));
    }

    #[tokio::test]
    async fn tx_does_not_see_its_own_writes_and_last_write_wins() {
        let state = state();
        let mut s = sim(&state);
        s.put("a", b"first".to_vec()).await.unwrap();
        s.put("a", b"second".to_vec()).await.unwrap();
        s.put("new", b"n".to_vec()).await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get("new").await.unwrap(), None);
        s.delete("b").await.unwrap();
        s.put("c", b"x".to_vec()).await.unwrap();
        s.delete("c").await.unwrap();
        let rwset = s.into_rwset();
        let ns = ns(&rwset);
        let w = |key: &str, is_delete: bool, value: &[u8]| KvWrite {
            key: key.into(),
            is_delete,
            value: value.to_vec(),
        };
        assert_eq!(
            ns.writes,
            vec![
                w("a", false, b"second"),
                w("b", true, b""),
                w("c", true, b""),
                w("new", false, b"n")
            ]
        );
        assert_eq!(ns.reads.len(), 2);
    }

    #[tokio::test]
    async fn range_records_raw_reads_and_exhaustion() {
        let state = state();
        let mut s = sim(&state);
        let found = s.range("a", "c").await.unwrap();
        assert_eq!(
            found,
            vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())]
        );
        let all = s.range("b", "").await.unwrap();
        assert_eq!(all.len(), 2, "unbounded end stays in the namespace");
        let rwset = s.into_rwset();
        let ns = ns(&rwset);
        assert!(ns.reads.is_empty(), "range results are not point reads");
        assert_eq!(
            ns.range_queries_info[0],
            RangeQueryInfo {
                start_key: "a".into(),
                end_key: "c".into(),
                itr_exhausted: true,
                raw_reads: vec![
                    KvRead {
                        key: "a".into(),
                        version: v(1, 0)
                    },
                    KvRead {
                        key: "b".into(),
                        version: v(2, 3)
                    },
                ],
            }
        );
        assert_eq!(ns.range_queries_info[1].end_key, "");
        assert!(ns.range_queries_info[1].itr_exhausted);
    }

    #[tokio::test]
    async fn range_bounds_are_checked() {
        let state = state();
        let mut s = sim(&state);
        let err = s.range("c", "a").await.unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(s.range("a\0", "").await.is_err());
        for i in 0..=MAX_RANGE_RESULTS {
            state.set("big", &format!("k{i:06}"), b"", 1, 0);
        }
        let mut big = TxSimulator::new(state.clone(), "ch", "big", "tx", "Org1MSP");
        assert!(matches!(
            big.range("", "").await,
            Err(ChaincodeError::Limit(_))
        ));
        assert_eq!(big.range("", "k000010").await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn rwset_is_deterministic_whatever_the_key_order() {
        let state = state();
        let mut one = sim(&state);
        one.get("a").await.unwrap();
        one.get("c").await.unwrap();
        one.put("x", b"1".to_vec()).await.unwrap();
        one.delete("b").await.unwrap();
        one.range("a", "b").await.unwrap();
        one.range("b", "").await.unwrap();
        let mut two = sim(&state);
        two.range("b", "").await.unwrap();
        two.delete("b").await.unwrap();
        two.put("x", b"1".to_vec()).await.unwrap();
        two.get("c").await.unwrap();
        two.range("a", "b").await.unwrap();
        two.get("a").await.unwrap();
        let (one, two) = (one.into_rwset(), two.into_rwset());
        assert_eq!(one, two);
        assert_eq!(
            prost::Message::encode_to_vec(&one),
            prost::Message::encode_to_vec(&two)
        );
        let keys: Vec<_> = ns(&one).reads.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[tokio::test]
    async fn bad_keys_and_large_values_are_refused() {
        let state = state();
        let mut s = sim(&state);
        for key in ["", "a\0b", &"k".repeat(1025)] {
            assert_eq!(s.get(key).await.unwrap_err().status(), 400, "get {key:?}");
            assert_eq!(
                s.put(key, vec![]).await.unwrap_err().status(),
                400,
                "put {key:?}"
            );
            assert_eq!(
                s.delete(key).await.unwrap_err().status(),
                400,
                "delete {key:?}"
            );
        }
        let err = s.put("k", vec![0; MAX_VALUE_BYTES + 1]).await.unwrap_err();
        assert_eq!(err.status(), 400);
        s.put("k", vec![0; MAX_VALUE_BYTES]).await.unwrap();
        let rwset = s.into_rwset();
        assert!(ns(&rwset).reads.is_empty());
        assert_eq!(ns(&rwset).writes.len(), 1);
    }

    #[tokio::test]
    async fn per_tx_bounds_are_errors() {
        let state = state();
        let mut s = sim(&state);
        for i in 0..MAX_WRITES_PER_TX {
            s.put(&format!("w{i}"), vec![]).await.unwrap();
        }
        assert!(matches!(
            s.put("one-more", vec![]).await,
            Err(ChaincodeError::Limit(_))
        ));
        s.put("w0", b"rewrite is fine".to_vec()).await.unwrap();
        for i in 0..MAX_READS_PER_TX {
            s.get(&format!("r{i}")).await.unwrap();
        }
        assert!(matches!(
            s.get("one-more").await,
            Err(ChaincodeError::Limit(_))
        ));
        s.get("r0").await.unwrap();
        let mut bytes = sim(&state);
        for i in 0..MAX_WRITE_BYTES_PER_TX / MAX_VALUE_BYTES {
            bytes
                .put(&format!("b{i}"), vec![0; MAX_VALUE_BYTES])
                .await
                .unwrap();
        }
        assert!(matches!(
            bytes.put("b-more", vec![0]).await,
            Err(ChaincodeError::Limit(_))
        ));
        bytes.put("b0", vec![]).await.unwrap();
        bytes.put("b-more", vec![0]).await.unwrap();
    }

    #[tokio::test]
    async fn storage_failure_is_a_state_error() {
        let state = state();
        let mut s = sim(&state);
        state.fail_reads();
        assert!(matches!(s.get("a").await, Err(ChaincodeError::State(_))));
        assert!(matches!(
            s.range("a", "").await,
            Err(ChaincodeError::State(_))
        ));
        assert_eq!(s.get("a").await.unwrap_err().status(), 500);
        assert!(ns(&s.into_rwset()).reads.is_empty());
    }

    #[test]
    fn empty_simulation_has_the_namespace_and_context() {
        let state = state();
        let s = sim(&state);
        assert_eq!(
            (s.tx_id(), s.creator_msp_id(), s.channel_id()),
            ("tx1", "Org1MSP", "ch")
        );
        assert_eq!(s.namespace(), NS);
        let fresh = s.fresh();
        assert_eq!(fresh.tx_id(), "tx1");
        assert_eq!(
            ns(&s.into_rwset()),
            &NsReadWriteSet {
                namespace: NS.into(),
                ..Default::default()
            }
        );
    }
}
