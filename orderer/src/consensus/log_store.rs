//! The Raft log on fjall: one keyspace of entries (key = big-endian index) and one of metadata
//! (vote, committed, last purged) per channel.
//!
//! Promises: `append` reports an entry durable (`log_io_completed`) only after fdatasync of the
//! journal; a vote is fsynced before `save_vote` returns; `last_purged` is written before the
//! entries below it are removed, so the log never has a hole.

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;

use crate::block_store::blob_keyspace_options;
use crate::block_store::keyspace_options;
use crate::failpoints::failpoint;
use fjall::Database;
use fjall::Keyspace;
use fjall::PersistMode;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;

use super::decode;
use super::encode;
use super::network::APPEND_ENTRIES_BYTES_MAX;
use super::Entry;
use super::LogId;
use super::NodeId;
use super::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// A channel's Raft log. Cheap to clone (handles to the same keyspaces).
#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn write_vote_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_vote(&e).into()
}

impl LogStore {
    /// The keyspaces a channel's Raft log uses (deleted when the channel is removed).
    pub fn keyspace_names(channel_id: &str) -> Vec<String> {
        vec![format!("rlog.{channel_id}"), format!("rmeta.{channel_id}")]
    }

    pub fn open(db: &Database, channel_id: &str) -> std::result::Result<Self, fjall::Error> {
        Ok(LogStore {
            db: db.clone(),
            log: db.keyspace(&format!("rlog.{channel_id}"), blob_keyspace_options)?,
            meta: db.keyspace(&format!("rmeta.{channel_id}"), keyspace_options)?,
        })
    }

    fn get_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(read_err),
        }
    }

    /// Whether this store holds no Raft state at all: no vote, no entry, nothing purged (a
    /// first boot, or a data dir that was lost; see [`super::rejoin`]).
    pub async fn is_pristine(&mut self) -> Result<bool> {
        let state = self.get_log_state().await?;
        Ok(state.last_log_id.is_none()
            && state.last_purged_log_id.is_none()
            && self.read_vote().await?.is_none())
    }

    /// Writes `entries` in one batch and returns once they are durable (fdatasync of the
    /// journal). `append` reports entries to openraft only after this returns.
    pub async fn append_durable<I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = Entry>,
    {
        failpoint!("orderer::raft_log_append::before", write_err);
        let mut batch = self.db.batch();
        for entry in entries {
            let value = encode(&entry).map_err(write_err)?;
            batch.insert(&self.log, entry.log_id.index.to_be_bytes(), value);
        }
        let db = self.db.clone();
        blocking(move || {
            batch.commit()?;
            failpoint!("orderer::raft_log_append::before_fsync", fjall::Error::from);
            if shared_proto::mutants::active(shared_proto::mutants::Mutant::NoFsyncOnAppend) {
                // Planted bug: handed to the OS is not on disk.
                return db.persist(PersistMode::Buffer);
            }
            db.persist(PersistMode::SyncData)
        })
        .await
        .map_err(write_err)?;
        failpoint!("orderer::raft_log_append::after", write_err);
        Ok(())
    }

    /// Makes the log consistent with the state machine's durable state (`applied`) before Raft
    /// starts on it.
    ///
    /// openraft 0.9 purges the log up to an installed snapshot on its core while the state
    /// machine worker is still writing that snapshot (`PurgeLog` waits on nothing). A crash in
    /// between leaves the log purged, and the commit index saved, past the state machine, with
    /// the entries in between gone; openraft's startup would re-apply them and stop, so the
    /// node could never start again. The purge point is rewound to what the state machine holds
    /// (no entry past it is usable: the log has a hole) and the commit index lowered to an entry
    /// the log holds; the leader then sends the snapshot again. Entries past the purge point
    /// cannot have been acknowledged: openraft appends after a snapshot only once it is
    /// installed, and then the state machine is not behind.
    pub async fn reconcile(&mut self, applied: Option<LogId>) -> Result<Reconciled> {
        let applied_index = applied.map(|a| a.index);
        let purged = self.last_purged()?;
        if purged.map(|p| p.index) > applied_index {
            let entries = self.log.iter().count();
            let mut batch = self.db.batch();
            for kv in self.log.iter() {
                batch.remove(&self.log, kv.key().map_err(write_err)?);
            }
            match applied {
                Some(a) => batch.insert(&self.meta, LAST_PURGED, encode(&a).map_err(write_err)?),
                None => batch.remove(&self.meta, LAST_PURGED),
            }
            batch.insert(&self.meta, COMMITTED, encode(&applied).map_err(write_err)?);
            let db = self.db.clone();
            blocking(move || {
                batch.commit()?;
                db.persist(PersistMode::SyncAll)
            })
            .await
            .map_err(write_err)?;
            return Ok(Reconciled::PurgeRewound {
                purged,
                applied,
                entries_removed: entries as u64,
            });
        }
        let committed = self.read_committed().await?;
        let last = self.get_log_state().await?.last_log_id;
        let committed_index = committed.map(|c| c.index);
        if committed_index > last.map(|l| l.index) && committed_index > applied_index {
            let to = if last.map(|l| l.index) > applied_index {
                last
            } else {
                applied
            };
            self.save_committed(to).await?;
            return Ok(Reconciled::CommittedLowered {
                from: committed,
                to,
            });
        }
        Ok(Reconciled::Consistent)
    }

    fn last_purged(&self) -> Result<Option<LogId>> {
        self.get_meta(LAST_PURGED)
    }

    /// Removes the keys of `range` in one batch.
    fn remove_range(&self, start: u64, end_inclusive: Option<u64>) -> Result<()> {
        let mut batch = self.db.batch();
        let iter = match end_inclusive {
            Some(end) => self.log.range(start.to_be_bytes()..=end.to_be_bytes()),
            None => self.log.range(start.to_be_bytes()..),
        };
        for kv in iter {
            let key = kv.key().map_err(write_err)?;
            batch.remove(&self.log, key);
        }
        batch.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let iter = match range.end_bound() {
            Bound::Included(e) => self.log.range(start.to_be_bytes()..=e.to_be_bytes()),
            Bound::Excluded(e) => self.log.range(start.to_be_bytes()..e.to_be_bytes()),
            Bound::Unbounded => self.log.range(start.to_be_bytes()..),
        };
        let mut entries = Vec::new();
        for kv in iter {
            let value = kv.value().map_err(read_err)?;
            entries.push(decode(&value).map_err(read_err)?);
        }
        Ok(entries)
    }

    /// What replication reads for one AppendEntries: entries from `start`, stopping once they
    /// hold [`APPEND_ENTRIES_BYTES_MAX`] (at least one entry), so a leader never reads
    /// `max_payload_entries` large entries per follower at once.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for kv in self.log.range(start.to_be_bytes()..end.to_be_bytes()) {
            let value = kv.value().map_err(read_err)?;
            if !entries.is_empty() && bytes + value.len() > APPEND_ENTRIES_BYTES_MAX {
                break;
            }
            bytes += value.len();
            entries.push(decode(&value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.log.last_key_value() {
            Some(kv) => {
                let value = kv.value().map_err(read_err)?;
                let entry: Entry = decode(&value).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let value = encode(vote).map_err(write_vote_err)?;
        failpoint!("orderer::raft_vote_save::before", write_vote_err);
        let this = self.clone();
        blocking(move || {
            this.meta.insert(VOTE, value)?;
            this.db.persist(PersistMode::SyncAll)
        })
        .await
        .map_err(write_vote_err)?;
        failpoint!("orderer::raft_vote_save::after", write_vote_err);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        let value = encode(&committed).map_err(write_err)?;
        // Not fsynced: losing it only means re-learning the commit index from the leader.
        self.meta.insert(COMMITTED, value).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.append_durable(entries).await;
        let io = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        callback.log_io_completed(io);
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        self.remove_range(log_id.index, None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        // Start after the previous purge: scanning from 0 would walk every old tombstone.
        let start = self.last_purged()?.map_or(0, |p| p.index.saturating_add(1));
        let value = encode(&log_id).map_err(write_err)?;
        self.meta.insert(LAST_PURGED, value).map_err(write_err)?;
        self.remove_range(start, Some(log_id.index))
    }
}

/// What [`LogStore::reconcile`] found and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The log and the state machine agree.
    Consistent,
    /// The log was purged past the state machine: the purge point is back at `applied` and
    /// the entries past the hole are removed.
    PurgeRewound {
        purged: Option<LogId>,
        applied: Option<LogId>,
        entries_removed: u64,
    },
    /// The saved commit index named entries the log does not hold.
    CommittedLowered {
        from: Option<LogId>,
        to: Option<LogId>,
    },
}

/// Runs blocking fjall I/O off the async runtime.
async fn blocking<F>(f: F) -> std::result::Result<(), BlockingError>
where
    F: FnOnce() -> std::result::Result<(), fjall::Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(BlockingError::Fjall),
        Err(join) => Err(BlockingError::Join(join.to_string())),
    }
}

/// A blocking storage task failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error(transparent)]
    Fjall(fjall::Error),
    #[error("storage task panicked or was cancelled: {0}")]
    Join(String),
}
