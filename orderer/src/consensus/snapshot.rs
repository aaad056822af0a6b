//! Snapshots of a channel's state machine: built from a copy of the state, stored in the state
//! machine's keyspace (one record, replaced only by a newer one), made durable before Raft
//! purges the log below them.
//!
//! When: every `raft.snapshot_interval_entries` entries (openraft's policy), and also as soon
//! as [`SNAPSHOT_AFTER_BLOCKS`] blocks or [`SNAPSHOT_AFTER_BYTES`] of envelopes were cut since
//! the last one ([`trigger_when_grown`]). A start resumes from the latest snapshot and
//! re-applies the entries after it, re-cutting and comparing each block with the stored one;
//! counted in entries alone that work grew with the entries' size (5,000 entries of a busy
//! channel hold ~175,000 envelopes) and took 1.3–2.4 s of an orderer's start at 100,000
//! blocks (`bench recovery`).

use std::io::Cursor;
use std::sync::Arc;

use fjall::Database;
use fjall::Keyspace;
use fjall::PersistMode;
use openraft::storage::Snapshot;
use openraft::RaftSnapshotBuilder;
use openraft::SnapshotMeta;
use openraft::StorageError;
use serde::Deserialize;
use serde::Serialize;

use super::decode;
use super::encode;
use super::state_machine::sm_read;
use super::state_machine::sm_write;
use super::state_machine::SmState;
use super::state_machine::SmStatus;
use super::NodeId;
use super::Raft;
use super::TypeConfig;
use crate::failpoints::failpoint;

/// When a snapshot is due besides openraft's entry count: either bound passed since the last.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotDue {
    pub blocks: u64,
    pub bytes: u64,
}

impl SnapshotDue {
    /// 1,000 blocks or 64 MiB of envelopes (a snapshot writes at most ~2 MiB: pending
    /// envelopes and the retry window).
    pub const DEFAULT: SnapshotDue = SnapshotDue {
        blocks: SNAPSHOT_AFTER_BLOCKS,
        bytes: SNAPSHOT_AFTER_BYTES,
    };
}

/// Blocks cut since the last snapshot that make the next one due.
pub const SNAPSHOT_AFTER_BLOCKS: u64 = 1_000;
/// Envelope bytes in blocks cut since the last snapshot that make the next one due.
pub const SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;
/// Least time between two requests while a requested build has not started yet.
const RETRIGGER_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Asks Raft for a snapshot whenever the blocks cut since the last one pass `due`
/// ([`SnapshotDue::DEFAULT`] in the node), so a restart re-applies a bounded amount. Ends
/// when the state machine or Raft stops.
pub async fn trigger_when_grown(
    raft: Raft,
    mut status: tokio::sync::watch::Receiver<SmStatus>,
    due: SnapshotDue,
) {
    let mut last: Option<tokio::time::Instant> = None;
    while status.changed().await.is_ok() {
        let since = status.borrow_and_update().since_snapshot;
        let grown = since.blocks >= due.blocks || since.bytes >= due.bytes;
        if grown && last.is_none_or(|t| t.elapsed() >= RETRIGGER_AFTER) {
            last = Some(tokio::time::Instant::now());
            tracing::debug!(blocks = since.blocks, bytes = since.bytes, "snapshot due");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }
}

/// The key of the stored snapshot in the state machine's keyspace.
pub(super) const SNAPSHOT: &[u8] = b"snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// A snapshot as stored: Raft's metadata and the encoded [`SmState`].
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    pub(super) data: Vec<u8>,
}

/// Stores `snapshot` as the durable state unless the stored one is as new or newer (then that
/// one is returned and nothing is written). The comparison and the write are one step.
pub(super) fn store_unless_older(
    meta: &Keyspace,
    lock: &std::sync::Mutex<()>,
    snapshot: &StoredSnapshot,
) -> Result<Option<StoredSnapshot>> {
    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bytes) = meta.get(SNAPSHOT).map_err(sm_read)? {
        let current: StoredSnapshot = decode(&bytes).map_err(sm_read)?;
        if current.meta.last_log_id >= snapshot.meta.last_log_id {
            return Ok(Some(current));
        }
    }
    meta.insert(SNAPSHOT, encode(snapshot).map_err(sm_write)?)
        .map_err(sm_write)?;
    Ok(None)
}

/// Builds a snapshot from a copy of the state taken when Raft asked for it.
pub struct SnapshotBuilder {
    db: Database,
    meta: Keyspace,
    lock: Arc<std::sync::Mutex<()>>,
    state: SmState,
}

impl SnapshotBuilder {
    pub(super) fn new(
        db: Database,
        meta: Keyspace,
        lock: Arc<std::sync::Mutex<()>>,
        state: SmState,
    ) -> Self {
        SnapshotBuilder {
            db,
            meta,
            lock,
            state,
        }
    }
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        failpoint!("orderer::snapshot_build::before", sm_write);
        // The blocks this state describes become durable before the state does.
        self.db.persist(PersistMode::SyncAll).map_err(sm_write)?;
        let data = encode(&self.state).map_err(sm_write)?;
        let last = self.state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                self.state.next_block
            ),
        };
        let built = StoredSnapshot { meta, data };
        // A snapshot installed while this one was being built is newer: hand that one back.
        let kept = store_unless_older(&self.meta, &self.lock, &built)?.unwrap_or(built);
        // The snapshot is the durable state: it must be on disk before Raft purges below it.
        self.db.persist(PersistMode::SyncData).map_err(sm_write)?;
        failpoint!("orderer::snapshot_build::after", sm_write);
        Ok(Snapshot {
            meta: kept.meta,
            snapshot: Box::new(Cursor::new(kept.data)),
        })
    }
}
