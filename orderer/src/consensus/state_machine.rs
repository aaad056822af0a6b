//! The replicated state machine: applies committed entries through the block cutter and writes
//! the blocks it cuts.
//!
//! State = chain tip (next block number, previous hash), pending envelopes, the retry window
//! ([`super::dedup`]), last applied log id and membership. One apply writes the blocks it cut
//! and their tx-id index entries in one atomic fjall batch; the state itself is persisted only
//! as snapshots (it holds up to 2 MiB of pending envelopes and the retry window, too much to
//! rewrite on every apply). On restart the state machine resumes from its latest snapshot and
//! Raft re-applies the entries after it: Raft purges its log only below a snapshot that is
//! durable (fsync), so the entries are always there, and re-applying cuts byte-identical
//! blocks (Ed25519 signatures are deterministic).

use std::io::Cursor;
use std::sync::Arc;

use fjall::Database;
use fjall::Keyspace;
use fjall::PersistMode;
use openraft::storage::RaftStateMachine;
use openraft::storage::Snapshot;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use serde::Deserialize;
use serde::Serialize;
use shared_proto::block;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use tokio::sync::watch;

use super::decode;
use super::dedup::RecentTxIds;
use super::encode;
use super::Entry;
use super::LogId;
use super::NodeId;
use super::Request;
use super::Response;
use super::StoredMembership;
use super::TypeConfig;
use crate::block_store::tx_id_of;
use crate::block_store::BlockStore;
use crate::block_store::BlockStoreError;
use crate::cutter::BatchLimits;
use crate::cutter::BlockCutter;

const SNAPSHOT: &[u8] = b"snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Everything the state machine replicates. Small: it is also the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Number of the next block to cut.
    pub next_block: u64,
    /// Header hash of block `next_block - 1`.
    pub tip_hash: Vec<u8>,
    pub cutter: BlockCutter,
    /// Tx ids accepted recently, to drop retried envelopes deterministically.
    pub recent: RecentTxIds,
}

/// What other tasks (time-to-cut timer, catch-up, readiness) watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmStatus {
    pub next_block: u64,
    pub tip_hash: Vec<u8>,
    pub pending: usize,
    pub last_applied_index: Option<u64>,
}

impl SmState {
    fn status(&self) -> SmStatus {
        SmStatus {
            next_block: self.next_block,
            tip_hash: self.tip_hash.clone(),
            pending: self.cutter.pending_count(),
            last_applied_index: self.last_applied.map(|l| l.index),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine of one channel.
pub struct StateMachine {
    channel_id: String,
    db: Database,
    meta: Keyspace,
    store: BlockStore,
    /// Serializes writes of the stored snapshot: a build runs beside later commands (an
    /// install among them), and the stored snapshot must only ever move forward.
    snapshot_lock: Arc<std::sync::Mutex<()>>,
    signer: Arc<SigningIdentity>,
    limits: BatchLimits,
    /// The channel's `retry_window_txs`.
    retry_window: usize,
    state: SmState,
    status: watch::Sender<SmStatus>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("channel_id", &self.channel_id)
            .field("next_block", &self.state.next_block)
            .finish_non_exhaustive()
    }
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the channel's state machine. On a pristine node, stores `genesis` as block 0 and
    /// starts the chain after it.
    pub fn open(
        store: BlockStore,
        channel_id: &str,
        genesis: &Block,
        signer: Arc<SigningIdentity>,
        limits: BatchLimits,
    ) -> std::result::Result<Self, BlockStoreError> {
        let db = store.database().clone();
        let meta = db.keyspace(
            &format!("sm.{channel_id}"),
            crate::block_store::keyspace_options,
        )?;
        // The durable state is the latest snapshot; Raft re-applies the entries after it (they
        // are never purged before a snapshot covers them), re-cutting byte-identical blocks.
        let stored: Option<StoredSnapshot> = match meta.get(SNAPSHOT)? {
            Some(bytes) => Some(decode(&bytes).map_err(|e| BlockStoreError::Corrupt {
                number: 0,
                reason: format!("state machine snapshot: {e}"),
            })?),
            None => None,
        };
        let state = match stored {
            Some(stored) => decode(&stored.data).map_err(|e| BlockStoreError::Corrupt {
                number: 0,
                reason: format!("state machine snapshot data: {e}"),
            })?,
            None => {
                let tip = block::header_hash(genesis).map_err(|e| BlockStoreError::Corrupt {
                    number: 0,
                    reason: e.to_string(),
                })?;
                if store.height() == 0 {
                    store.put(0, genesis)?;
                }
                SmState {
                    next_block: 1,
                    tip_hash: tip.to_vec(),
                    ..SmState::default()
                }
            }
        };
        let retry_window = shared_proto::channel::Channel::from_config_block(genesis)
            .map(|c| c.retry_window_txs() as usize)
            .map_err(|e| BlockStoreError::Corrupt {
                number: 0,
                reason: format!("genesis config: {e}"),
            })?;
        let status = watch::Sender::new(state.status());
        Ok(StateMachine {
            retry_window,
            snapshot_lock: Arc::default(),
            channel_id: channel_id.to_owned(),
            db,
            meta,
            store,
            signer,
            limits,
            state,
            status,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<SmStatus> {
        self.status.subscribe()
    }

    /// Cuts `batch` into the next block, signs it and stages it into `wb`.
    fn cut_block(&mut self, wb: &mut fjall::OwnedWriteBatch, batch: Vec<Vec<u8>>) {
        let number = self.state.next_block;
        let mut b = block::new_block(number, self.state.tip_hash.clone(), batch, 0);
        block::sign_block(&mut b, &self.channel_id, &self.signer);
        // A block built here always has a header: new_block sets it.
        let hash = block::header_hash(&b)
            .map(|h| h.to_vec())
            .unwrap_or_default();
        self.store.stage(wb, number, &b);
        self.state.next_block += 1;
        self.state.tip_hash = hash;
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut wb = self.db.batch();
        let mut responses = Vec::new();
        for entry in entries {
            let mut response = Response::default();
            self.state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), m);
                }
                EntryPayload::Normal(Request::Envelopes(envelopes)) => {
                    for (position, env) in envelopes.into_iter().enumerate() {
                        let key = tx_id_of(&env).map(|id| RecentTxIds::key(&id));
                        if key.is_some_and(|k| self.state.recent.contains(&k)) {
                            response.duplicates_dropped += 1;
                            continue;
                        }
                        let ordered = self.state.cutter.ordered(&self.limits, env.into_vec());
                        if let (Some(k), false) = (key, ordered.refused) {
                            self.state.recent.insert(k, self.retry_window);
                        }
                        if ordered.refused {
                            response.envelopes_refused += 1;
                            response.refused_at.push(position as u32);
                        }
                        for batch in ordered.batches {
                            self.cut_block(&mut wb, batch);
                            response.blocks_cut += 1;
                        }
                    }
                }
                EntryPayload::Normal(Request::TimeToCut { block_number }) => {
                    if block_number == self.state.next_block
                        && self.state.cutter.pending_count() > 0
                    {
                        let batch = self.state.cutter.cut();
                        self.cut_block(&mut wb, batch);
                        response.blocks_cut += 1;
                    }
                }
            }
            responses.push(response);
        }
        if !wb.is_empty() {
            wb.commit().map_err(sm_write)?;
            self.store.advance().map_err(sm_write)?;
        }
        self.status.send_replace(self.state.status());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            meta: self.meta.clone(),
            lock: self.snapshot_lock.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let state: SmState = decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        if let Some(newer) = store_unless_older(&self.meta, &self.snapshot_lock, &stored)? {
            // openraft installs only snapshots newer than its own; this cannot happen unless
            // a build raced ahead, and then the stored state is already the newer one.
            tracing::warn!(
                channel = %self.channel_id,
                installing = ?meta.last_log_id,
                stored = ?newer.meta.last_log_id,
                "not installing a snapshot older than the stored one"
            );
            return Ok(());
        }
        self.state = state;
        self.db.persist(PersistMode::SyncAll).map_err(sm_write)?;
        tracing::info!(
            channel = %self.channel_id,
            next_block = self.state.next_block,
            have = self.store.height(),
            "installed snapshot; missing blocks will be pulled from other orderers"
        );
        self.status.send_replace(self.state.status());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        match self.meta.get(SNAPSHOT).map_err(sm_read)? {
            None => Ok(None),
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes).map_err(sm_read)?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: Box::new(Cursor::new(stored.data)),
                }))
            }
        }
    }
}

/// Stores `snapshot` as the durable state unless the stored one is as new or newer (then that
/// one is returned and nothing is written). The comparison and the write are one step.
fn store_unless_older(
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

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
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
        Ok(Snapshot {
            meta: kept.meta,
            snapshot: Box::new(Cursor::new(kept.data)),
        })
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
