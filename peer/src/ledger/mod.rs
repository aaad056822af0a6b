//! Ledger (peer flow: deliver_client -> validate -> [commit -> ledger] -> events).
//!
//! One fjall database per peer; per channel: blocks (with this peer's validation codes),
//! world state (namespace, key) -> (value, version), a tx-id index (tx id -> block, position,
//! validation code) and a savepoint (height). A block commits in ONE atomic write batch: block +
//! codes + state writes + index + savepoint, so a crash leaves the whole block or none of it,
//! and restart resumes from the savepoint with no replay.

mod store;
mod tx_waits;

pub use store::Ledger;
pub use store::CACHE_BYTES;
pub use store::JOURNAL_BYTES;
pub use store::MEMTABLE_BYTES;
pub use tx_waits::TxWait;

/// A committed key's version: the block and position of the transaction that last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub block_num: u64,
    pub tx_num: u64,
}

impl Version {
    pub fn to_pb(self) -> shared_proto::pb::tx::Version {
        shared_proto::pb::tx::Version {
            block_num: self.block_num,
            tx_num: self.tx_num,
        }
    }

    pub fn from_pb(v: &shared_proto::pb::tx::Version) -> Self {
        Version {
            block_num: v.block_num,
            tx_num: v.tx_num,
        }
    }
}

/// A key with its committed value and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    pub value: Vec<u8>,
    pub version: Version,
}

/// Where a committed transaction is, and what validation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRecord {
    pub block_num: u64,
    pub tx_num: u64,
    /// A `TxValidationCode` value.
    pub code: i32,
}

/// One state change a valid transaction makes; `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    pub namespace: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub version: Version,
}

/// A ledger read or write failed. On the commit path this stops the peer.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage: {0}")]
    Storage(#[from] fjall::Error),
    #[error("ledger data corrupt at {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("block {number} does not follow height {height}")]
    OutOfOrder { number: u64, height: u64 },
    #[error("key {key:?} in namespace {namespace:?} is invalid: {reason}")]
    BadKey {
        namespace: String,
        key: String,
        reason: &'static str,
    },
}

/// What simulation and validation read: committed state and the tx index. The fjall
/// [`Ledger`] implements it; unit tests may use a map.
pub trait StateReader: Send + Sync {
    /// The committed value and version of `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError>;
    /// Committed keys in `[start, end)` of `namespace` in key order (`end` empty: unbounded),
    /// at most `limit` of them.
    fn range(
        &self,
        namespace: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError>;
    /// Whether a transaction with this id is already committed (valid or not).
    fn has_tx(&self, tx_id: &str) -> Result<bool, LedgerError>;
}

/// Keys must be non-empty, at most 1 KiB, and free of NUL (the namespace separator).
pub fn check_key(namespace: &str, key: &str) -> Result<(), LedgerError> {
    let bad = |reason| LedgerError::BadKey {
        namespace: namespace.to_owned(),
        key: key.chars().take(64).collect(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if key.contains('\0') || namespace.contains('\0') {
        return Err(bad("contains NUL"));
    }
    Ok(())
}
