//! The fjall-backed ledger of one channel.

use std::sync::Arc;

use fjall::Database;
use fjall::Keyspace;
use fjall::KeyspaceCreateOptions;
use prost::Message as _;
use sha2::Digest as _;
use sha2::Sha256;
use shared_proto::block;
use shared_proto::hash::Hash;
use shared_proto::pb::common::Block;
use tokio::sync::watch;

use super::tx_waits::TxWaiters;
use super::LedgerError;
use super::StateReader;
use super::StateWrite;
use super::TxRecord;
use super::TxWait;
use super::Version;
use super::VersionedValue;
use crate::failpoints::failpoint;

const SAVEPOINT: &[u8] = b"savepoint";

/// A channel's ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    channel_id: String,
    blocks: Keyspace,
    state: Keyspace,
    txids: Keyspace,
    meta: Keyspace,
    height: watch::Sender<u64>,
    tx_waiters: Arc<TxWaiters>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("channel_id", &self.inner.channel_id)
            .field("height", &self.height())
            .finish_non_exhaustive()
    }
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> LedgerError {
    LedgerError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// State key: namespace, NUL, key (keys and namespaces never contain NUL).
fn state_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// State value: block number, tx number (big-endian), then the value bytes.
fn encode_value(version: Version, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&version.block_num.to_be_bytes());
    v.extend_from_slice(&version.tx_num.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_value(bytes: &[u8]) -> Result<VersionedValue, LedgerError> {
    if bytes.len() < 16 {
        return Err(corrupt("state value", "shorter than its version"));
    }
    let (b, rest) = bytes.split_at(8);
    let (t, value) = rest.split_at(8);
    let n = |s: &[u8]| u64::from_be_bytes(s.try_into().unwrap_or([0; 8]));
    Ok(VersionedValue {
        value: value.to_vec(),
        version: Version {
            block_num: n(b),
            tx_num: n(t),
        },
    })
}

fn encode_tx(r: &TxRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&r.block_num.to_be_bytes());
    v.extend_from_slice(&r.tx_num.to_be_bytes());
    v.extend_from_slice(&r.code.to_be_bytes());
    v
}

fn decode_tx(bytes: &[u8]) -> Result<TxRecord, LedgerError> {
    if bytes.len() != 20 {
        return Err(corrupt("tx index", "entry is not 20 bytes"));
    }
    let u = |s: &[u8]| u64::from_be_bytes(s.try_into().unwrap_or([0; 8]));
    Ok(TxRecord {
        block_num: u(&bytes[0..8]),
        tx_num: u(&bytes[8..16]),
        code: i32::from_be_bytes(bytes[16..20].try_into().unwrap_or([0; 4])),
    })
}

/// Largest memtable of one keyspace before it is flushed (fjall's default, 64 MiB per
/// keyspace, made a peer's resident set grow by hundreds of MiB under load).
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// fjall's block cache for the whole ledger database.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Journal kept before fjall flushes the keyspaces that pin it. A start replays the journal
/// not yet flushed; fjall's default (512 MiB) made a peer's first start after a long run take
/// 1.8 s at 100,000 blocks (`bench recovery`). 64 MiB is fjall's smallest.
pub const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Options of every ledger keyspace (memory bounds).
pub fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

impl Ledger {
    /// Opens (or creates) the ledger of `channel_id` in `db`; resumes at the savepoint.
    pub fn open(db: &Database, channel_id: &str) -> Result<Self, LedgerError> {
        let ks = |prefix: &str| db.keyspace(&format!("{prefix}.{channel_id}"), keyspace_options);
        let meta = ks("meta")?;
        let height = match meta.get(SAVEPOINT)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("savepoint", "not 8 bytes"))?,
            ),
            None => 0,
        };
        Ok(Ledger {
            inner: Arc::new(Inner {
                db: db.clone(),
                channel_id: channel_id.to_owned(),
                blocks: ks("blocks")?,
                state: ks("state")?,
                txids: ks("txids")?,
                meta,
                height: watch::Sender::new(height),
                tx_waiters: Arc::default(),
            }),
        })
    }

    pub fn channel_id(&self) -> &str {
        &self.inner.channel_id
    }

    /// Number of committed blocks (the savepoint): blocks `0..height` are stored.
    pub fn height(&self) -> u64 {
        *self.inner.height.borrow()
    }

    pub fn subscribe_height(&self) -> watch::Receiver<u64> {
        self.inner.height.subscribe()
    }

    /// Committed block `number`, with this peer's validation codes in its metadata.
    pub fn block(&self, number: u64) -> Result<Option<Block>, LedgerError> {
        match self.inner.blocks.get(number.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => Block::decode(bytes.as_ref())
                .map(Some)
                .map_err(|e| corrupt(format!("block {number}"), e)),
        }
    }

    /// Header hash of the last committed block.
    pub fn last_block_hash(&self) -> Result<Option<Hash>, LedgerError> {
        let Some(last) = self.height().checked_sub(1) else {
            return Ok(None);
        };
        let block = self
            .block(last)?
            .ok_or_else(|| corrupt(format!("block {last}"), "missing below the savepoint"))?;
        block::header_hash(&block)
            .map(Some)
            .map_err(|e| corrupt(format!("block {last}"), e))
    }

    /// A wait for `tx_id`'s commit, registered now: take it before looking the tx id up with
    /// [`Ledger::tx`], so a commit in between is not missed.
    pub fn wait_tx(&self, tx_id: &str) -> TxWait {
        self.inner.tx_waiters.register(tx_id)
    }

    /// Where the transaction `tx_id` was committed and its validation code.
    pub fn tx(&self, tx_id: &str) -> Result<Option<TxRecord>, LedgerError> {
        match self.inner.txids.get(tx_id.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_tx(&v).map(Some),
        }
    }

    /// Commits `block` (its metadata already carrying `codes`) in one atomic batch: block,
    /// tx index, state writes of valid transactions, savepoint.
    pub fn commit(
        &self,
        block: &Block,
        tx_ids: &[Option<String>],
        codes: &[i32],
        writes: &[StateWrite],
    ) -> Result<(), LedgerError> {
        let number = block.header.as_ref().map_or(u64::MAX, |h| h.number);
        let height = self.height();
        if number != height {
            return Err(LedgerError::OutOfOrder { number, height });
        }
        let inner = &self.inner;
        // Atomic and durable: fdatasync with the commit (a few hundred µs per block), so an
        // acknowledged commit event is never lost by a power failure.
        let mut batch = inner
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        batch.insert(&inner.blocks, number.to_be_bytes(), block.encode_to_vec());
        let mut seen = std::collections::HashSet::new();
        for (tx_num, (id, code)) in tx_ids.iter().zip(codes).enumerate() {
            let Some(id) = id else { continue };
            // The first occurrence owns the id; later duplicates (DUPLICATE_TXID) don't
            // overwrite it, nor does a repeat of an id committed in an earlier block.
            if !seen.insert(id.as_str()) || inner.txids.contains_key(id.as_bytes())? {
                continue;
            }
            let record = TxRecord {
                block_num: number,
                tx_num: tx_num as u64,
                code: *code,
            };
            batch.insert(&inner.txids, id.as_bytes(), encode_tx(&record));
        }
        for w in writes {
            let key = state_key(&w.namespace, &w.key);
            match &w.value {
                Some(value) => batch.insert(&inner.state, key, encode_value(w.version, value)),
                None => batch.remove(&inner.state, key),
            }
        }
        batch.insert(&inner.meta, SAVEPOINT, (number + 1).to_be_bytes());
        failpoint!("peer::commit_batch::before", fjall::Error::from);
        batch.commit()?;
        failpoint!("peer::commit_batch::after", fjall::Error::from);
        inner.height.send_replace(number + 1);
        inner
            .tx_waiters
            .committed(tx_ids.iter().filter_map(|id| id.as_deref()));
        Ok(())
    }

    /// SHA-256 over every (namespace, key, value, version) in key order, each field
    /// length-prefixed: two peers with the same state have the same hash.
    pub fn state_hash(&self) -> Result<Hash, LedgerError> {
        let mut h = Sha256::new();
        for kv in self.inner.state.iter() {
            let (k, v) = kv.into_inner()?;
            h.update((k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(&v);
        }
        Ok(h.finalize().into())
    }

    /// Makes everything committed so far durable (fsync).
    pub fn sync(&self) -> Result<(), LedgerError> {
        Ok(self.inner.db.persist(fjall::PersistMode::SyncAll)?)
    }
}

impl StateReader for Ledger {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError> {
        match self.inner.state.get(state_key(namespace, key))? {
            None => Ok(None),
            Some(v) => decode_value(&v).map(Some),
        }
    }

    fn range(
        &self,
        namespace: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        let lo = state_key(namespace, start);
        let hi = if end.is_empty() {
            // Everything in the namespace: up to (namespace, 0x01).
            let mut k = namespace.as_bytes().to_vec();
            k.push(1);
            k
        } else {
            state_key(namespace, end)
        };
        let prefix = namespace.len() + 1;
        let mut out = Vec::new();
        for kv in self.inner.state.range(lo..hi) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.into_inner()?;
            let key = String::from_utf8(k.get(prefix..).unwrap_or_default().to_vec())
                .map_err(|e| corrupt("state key", e))?;
            out.push((key, decode_value(&v)?));
        }
        Ok(out)
    }

    fn has_tx(&self, tx_id: &str) -> Result<bool, LedgerError> {
        Ok(self.inner.txids.contains_key(tx_id.as_bytes())?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path().join("db")).open().unwrap();
        (dir, Ledger::open(&db, "ch").unwrap())
    }

    fn block(n: u64, prev: Vec<u8>) -> Block {
        block::new_block(n, prev, vec![vec![n as u8]], 0)
    }

    fn write(key: &str, value: Option<&[u8]>, b: u64, t: u64) -> StateWrite {
        StateWrite {
            namespace: "cc".into(),
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
            version: Version {
                block_num: b,
                tx_num: t,
            },
        }
    }

    #[test]
    fn commit_is_in_order_and_updates_state_index_and_savepoint() {
        let (_d, l) = ledger();
        let b0 = block(0, vec![]);
        l.commit(
            &b0,
            &[Some("t0".into())],
            &[0],
            &[write("a", Some(b"1"), 0, 0)],
        )
        .unwrap();
        assert_eq!(l.height(), 1);
        let err = l.commit(&block(2, vec![]), &[], &[], &[]).unwrap_err();
        assert!(matches!(
            err,
            LedgerError::OutOfOrder {
                number: 2,
                height: 1
            }
        ));
        let b1 = block(1, l.last_block_hash().unwrap().unwrap().to_vec());
        l.commit(
            &b1,
            &[Some("t1".into()), Some("t1".into())],
            &[0, 9],
            &[write("a", None, 1, 0), write("b", Some(b"2"), 1, 0)],
        )
        .unwrap();
        assert_eq!(l.get("cc", "a").unwrap(), None);
        assert_eq!(
            l.get("cc", "b").unwrap().unwrap().version,
            Version {
                block_num: 1,
                tx_num: 0
            }
        );
        // The first occurrence of a duplicated id owns the index entry.
        assert_eq!(
            l.tx("t1").unwrap().unwrap(),
            TxRecord {
                block_num: 1,
                tx_num: 0,
                code: 0
            }
        );
        assert!(l.has_tx("t0").unwrap());
        assert!(!l.has_tx("t9").unwrap());
        assert_eq!(l.block(1).unwrap().unwrap(), b1);
    }

    /// A block's commit wakes the waits of its own tx ids and no other; a wait dropped before
    /// its commit (timed out, caller gone) leaves nothing registered.
    #[tokio::test]
    async fn commit_wakes_only_the_waits_of_its_own_transactions() {
        use futures::FutureExt as _;
        let (_d, l) = ledger();
        let mut a = l.wait_tx("ta");
        let mut a_again = l.wait_tx("ta");
        let mut b = l.wait_tx("tb");
        let dropped = l.wait_tx("tc");
        drop(dropped);
        assert_eq!(l.inner.tx_waiters.registered(), 3);
        l.commit(&block(0, vec![]), &[Some("ta".into()), None], &[0, 0], &[])
            .unwrap();
        assert_eq!(a.committed().now_or_never(), Some(true));
        assert_eq!(a_again.committed().now_or_never(), Some(true));
        assert_eq!(b.committed().now_or_never(), None, "tb is not committed");
        assert_eq!(l.inner.tx_waiters.registered(), 1);
        drop(b);
        assert_eq!(l.inner.tx_waiters.registered(), 0);
    }

    #[test]
    fn range_is_bounded_by_namespace_end_and_limit() {
        let (_d, l) = ledger();
        let mut writes: Vec<StateWrite> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| write(k, Some(k.as_bytes()), 0, 0))
            .collect();
        writes.push(StateWrite {
            namespace: "cc2".into(),
            ..write("a", Some(b"x"), 0, 0)
        });
        l.commit(&block(0, vec![]), &[], &[], &writes).unwrap();
        let keys =
            |r: Vec<(String, VersionedValue)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(l.range("cc", "b", "d", 100).unwrap()), ["b", "c"]);
        assert_eq!(
            keys(l.range("cc", "", "", 100).unwrap()),
            ["a", "b", "c", "d"]
        );
        assert_eq!(keys(l.range("cc", "a", "", 2).unwrap()), ["a", "b"]);
        assert_eq!(keys(l.range("cc2", "", "", 100).unwrap()), ["a"]);
    }

    #[test]
    fn reopen_resumes_at_savepoint_with_same_state_hash() {
        let dir = tempfile::tempdir().unwrap();
        let hash = {
            let db = Database::builder(dir.path().join("db")).open().unwrap();
            let l = Ledger::open(&db, "ch").unwrap();
            l.commit(&block(0, vec![]), &[], &[], &[write("k", Some(b"v"), 0, 0)])
                .unwrap();
            l.sync().unwrap();
            l.state_hash().unwrap()
        };
        let db = Database::builder(dir.path().join("db")).open().unwrap();
        let l = Ledger::open(&db, "ch").unwrap();
        assert_eq!(l.height(), 1);
        assert_eq!(l.state_hash().unwrap(), hash);
    }

    #[test]
    fn state_hash_covers_values_and_versions() {
        let (_d1, a) = ledger();
        let (_d2, b) = ledger();
        a.commit(&block(0, vec![]), &[], &[], &[write("k", Some(b"v"), 0, 0)])
            .unwrap();
        b.commit(&block(0, vec![]), &[], &[], &[write("k", Some(b"v"), 0, 1)])
            .unwrap();
        assert_ne!(a.state_hash().unwrap(), b.state_hash().unwrap());
    }
}
