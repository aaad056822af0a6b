//! Block store (orderer flow: ... -> state machine -> [block_store] -> deliver).
//!
//! Blocks of one channel in fjall, keyed by big-endian number, plus a tx-id index (tx id ->
//! block number) so Broadcast can answer `ALREADY_EXISTS` for a tx that is already ordered.
//! Blocks cut by the state machine are staged into the state machine's own write batch, so a
//! block, its index entries and the state that produced it land atomically. After a snapshot
//! install the store can have a gap (blocks pulled by catch-up fill it): `height` is the
//! contiguous prefix, and only that prefix is served.

use std::sync::Arc;

use fjall::Database;
use fjall::Keyspace;
use fjall::KeyspaceCreateOptions;
use prost::Message as _;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Payload;
use tokio::sync::watch;

use crate::failpoints::failpoint;

/// A storage failure; the node stops when it sees one on the write path.
#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    #[error("block storage: {0}")]
    Storage(#[from] fjall::Error),
    #[error("stored block {number} is corrupt: {reason}")]
    Corrupt { number: u64, reason: String },
}

/// A channel's blocks. Cheap to clone.
#[derive(Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    blocks: Keyspace,
    txids: Keyspace,
    height: watch::Sender<u64>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("height", &self.height())
            .finish_non_exhaustive()
    }
}

/// Largest memtable of one keyspace before it is flushed. fjall's default (64 MiB per
/// keyspace) made an orderer's resident set grow by hundreds of MiB under load; 16 MiB still
/// reached 195 MiB in 10 minutes. 8 MiB holds it near 140 MiB at the price of more flush work
/// (lower ordering throughput and a higher Deliver p99; see docs/performance.md).
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// fjall's block cache for the whole node database.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Journal kept before fjall flushes the keyspaces that pin it (the small ones: snapshot,
/// vote, tx ids fill their memtables slowly). A start replays the journal not yet flushed;
/// fjall's default (512 MiB) made an orderer's first start after a long run spend 1.1–1.4 s
/// there at 100,000 blocks (`bench recovery`). 64 MiB is fjall's smallest.
pub const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Options of every keyspace of the orderer (memory bounds).
pub fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

/// Options of the keyspaces that hold envelopes (blocks, Raft entries): values of at least
/// [`BLOB_THRESHOLD_BYTES`] live in blob files outside the LSM tree (fjall's key-value
/// separation), so after the journal they are written once, at flush, and compaction moves
/// only their small pointers. A keyspace keeps the layout it was created with.
pub fn blob_keyspace_options() -> KeyspaceCreateOptions {
    keyspace_options().with_kv_separation(Some(
        fjall::KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD_BYTES),
    ))
}

/// Smallest value [`blob_keyspace_options`] moves out of the tree.
pub const BLOB_THRESHOLD_BYTES: u32 = 1024;

impl BlockStore {
    pub fn open(db: &Database, channel_id: &str) -> Result<Self, BlockStoreError> {
        let blocks = db.keyspace(&format!("blocks.{channel_id}"), blob_keyspace_options)?;
        let txids = db.keyspace(&format!("txids.{channel_id}"), keyspace_options)?;
        let store = BlockStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                blocks,
                txids,
                height: watch::Sender::new(0),
            }),
        };
        store.advance()?;
        Ok(store)
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Number of blocks held without a gap: blocks `0..height` can be read.
    pub fn height(&self) -> u64 {
        *self.inner.height.borrow()
    }

    /// Follows `height`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.height.subscribe()
    }

    /// The encoded block `number`, if stored.
    pub fn get_encoded(&self, number: u64) -> Result<Option<Vec<u8>>, BlockStoreError> {
        Ok(self
            .inner
            .blocks
            .get(number.to_be_bytes())?
            .map(|v| v.to_vec()))
    }

    pub fn get(&self, number: u64) -> Result<Option<Block>, BlockStoreError> {
        match self.get_encoded(number)? {
            None => Ok(None),
            Some(bytes) => {
                Block::decode(bytes.as_slice())
                    .map(Some)
                    .map_err(|e| BlockStoreError::Corrupt {
                        number,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Whether a tx with this id is in a stored block.
    pub fn contains_tx(&self, tx_id: &str) -> Result<bool, BlockStoreError> {
        Ok(self.inner.txids.contains_key(tx_id.as_bytes())?)
    }

    /// Adds `block` (and its tx ids) to `batch`; call [`BlockStore::advance`] after commit.
    pub fn stage(&self, batch: &mut fjall::OwnedWriteBatch, number: u64, block: &Block) {
        batch.insert(
            &self.inner.blocks,
            number.to_be_bytes(),
            block.encode_to_vec(),
        );
        let data = block
            .data
            .as_ref()
            .map(|d| d.data.as_slice())
            .unwrap_or_default();
        for env in data {
            if let Some(tx_id) = tx_id_of(env) {
                batch.insert(&self.inner.txids, tx_id.into_bytes(), number.to_be_bytes());
            }
        }
    }

    /// Stores one block on its own (catch-up, genesis).
    pub fn put(&self, number: u64, block: &Block) -> Result<(), BlockStoreError> {
        let mut batch = self.inner.db.batch();
        self.stage(&mut batch, number, block);
        failpoint!("orderer::block_store_put::before", fjall::Error::from);
        batch.commit()?;
        failpoint!("orderer::block_store_put::after", fjall::Error::from);
        self.advance()
    }

    /// Recomputes the contiguous height after blocks were committed. Blocks are never
    /// removed, so the height only grows: a writer that computed a lower height than another
    /// one already published (catch-up and the state machine race here) changes nothing.
    pub fn advance(&self) -> Result<(), BlockStoreError> {
        let mut h = self.height();
        // One ordered scan of the keys from `h` (a key read does not fetch the block from its
        // blob file): at open, 100,000 point lookups took 0.2–0.5 s.
        for key in self.inner.blocks.range(h.to_be_bytes()..) {
            if *key.key()? != h.to_be_bytes() {
                break;
            }
            h += 1;
        }
        self.inner.height.send_if_modified(|cur| {
            let raised = h > *cur;
            if raised {
                *cur = h;
            }
            raised
        });
        Ok(())
    }
}

/// The tx id in an encoded envelope's channel header, if it decodes and has one.
pub fn tx_id_of(envelope: &[u8]) -> Option<String> {
    header_of(envelope).map(|(tx_id, _)| tx_id)
}

/// The keyspaces a channel's block store uses (deleted when the channel is removed).
pub fn keyspace_names(channel_id: &str) -> Vec<String> {
    vec![
        format!("blocks.{channel_id}"),
        format!("txids.{channel_id}"),
    ]
}

/// The tx id and header type of an encoded envelope (`None` if it has no tx id).
pub fn header_of(envelope: &[u8]) -> Option<(String, i32)> {
    let env = Envelope::decode(envelope).ok()?;
    let payload = Payload::decode(env.payload.as_slice()).ok()?;
    let header = payload.header?.channel_header?;
    (!header.tx_id.is_empty()).then_some((header.tx_id, header.r#type))
}
