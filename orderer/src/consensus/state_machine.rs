//! The replicated state machine: applies committed entries through the block cutter and writes
//! the blocks it cuts.
//!
//! State = chain tip (next block number, previous hash), pending envelopes, the retry window
//! ([`super::dedup`]), the channel config in force and the number of the block that set it,
//! last applied log id and membership.
//!
//! Config updates: a `CONFIG_UPDATE` envelope is checked again when applied, against the config
//! in force then and at [`ANY_TIME`] (every node reaches the same verdict; two updates built on
//! the same sequence race, and the second is refused here). An accepted one cuts whatever is
//! pending into a block, then a block of its own (the config block); from then on the new
//! config governs batch limits, the retry window and every block's `last_config_index`, and
//! the node's readers see it through [`StateMachine::config_watch`]. One apply writes the blocks it cut
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
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use prost::Message as _;
use serde::Deserialize;
use serde::Serialize;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update;
use shared_proto::config_update::ANY_TIME;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::config::ChannelConfig;
use tokio::sync::watch;

use super::decode;
use super::dedup::RecentTxIds;
use super::snapshot::store_unless_older;
use super::snapshot::SnapshotBuilder;
use super::snapshot::StoredSnapshot;
use super::snapshot::SNAPSHOT;
use super::Entry;
use super::LogId;
use super::NodeId;
use super::Request;
use super::Response;
use super::StoredMembership;
use super::TypeConfig;
use crate::block_store::header_of;
use crate::block_store::BlockStore;
use crate::block_store::BlockStoreError;
use crate::cutter::BatchLimits;
use crate::cutter::BlockCutter;
use crate::cutter::CutReason;
use crate::failpoints::failpoint;

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
    /// The encoded config in force; empty while it is the genesis block's.
    pub config: serde_bytes::ByteBuf,
    /// Number of the block that set the config in force (0: genesis).
    pub last_config_block: u64,
}

/// What other tasks (time-to-cut timer, catch-up, readiness) watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmStatus {
    pub next_block: u64,
    pub tip_hash: Vec<u8>,
    pub pending: usize,
    pub last_applied_index: Option<u64>,
    pub config_sequence: u64,
    pub last_config_block: u64,
    /// Blocks this node cut since it started, per [`crate::cutter::CutReason`].
    pub blocks_cut: crate::cutter::CutCounts,
    /// Blocks cut (or re-applied) since the last snapshot was built or installed here.
    pub since_snapshot: SinceSnapshot,
}

/// What a restart would re-apply if it came now: the blocks cut since the latest snapshot
/// and their envelope bytes (see [`super::snapshot::trigger_when_grown`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinceSnapshot {
    pub blocks: u64,
    pub bytes: u64,
}

impl SmState {
    fn status(&self) -> SmStatus {
        SmStatus {
            next_block: self.next_block,
            tip_hash: self.tip_hash.clone(),
            pending: self.cutter.pending_count(),
            last_applied_index: self.last_applied.map(|l| l.index),
            config_sequence: 0,
            last_config_block: self.last_config_block,
            blocks_cut: Default::default(),
            since_snapshot: SinceSnapshot::default(),
        }
    }
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
    /// The genesis config and its batch limits (tests may give others).
    genesis: (Arc<Channel>, BatchLimits),
    /// Batch limits of the config in force.
    limits: BatchLimits,
    /// The `retry_window_txs` of the config in force.
    retry_window: usize,
    state: SmState,
    status: watch::Sender<SmStatus>,
    /// The config in force, for every reader on this node.
    config: watch::Sender<Arc<Channel>>,
    /// When this node's clock first saw envelopes pending (planted bug `cut_by_local_clock`
    /// only; a correct node never reads its clock here).
    pending_since: Option<std::time::Instant>,
    /// Blocks cut since this node started, per reason (not replicated: a count for metrics).
    blocks_cut: crate::cutter::CutCounts,
    since_snapshot: SinceSnapshot,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("channel_id", &self.channel_id)
            .field("next_block", &self.state.next_block)
            .finish_non_exhaustive()
    }
}

pub(super) fn sm_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

pub(super) fn sm_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the channel's state machine. On a pristine node, stores `genesis` as block 0 and
    /// starts the chain after it. `limits` are the genesis config's batch limits (tests may
    /// give others); a later config's come from that config.
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
            Some(stored) => {
                tracing::info!(
                    channel = %channel_id,
                    snapshot = ?stored.meta.last_log_id,
                    "state machine opened from its stored snapshot"
                );
                decode(&stored.data).map_err(|e| BlockStoreError::Corrupt {
                    number: 0,
                    reason: format!("state machine snapshot data: {e}"),
                })?
            }
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
        let genesis_channel = Arc::new(Channel::from_config_block(genesis).map_err(|e| {
            BlockStoreError::Corrupt {
                number: 0,
                reason: format!("genesis config: {e}"),
            }
        })?);
        let mut sm = StateMachine {
            retry_window: 0,
            snapshot_lock: Arc::default(),
            channel_id: channel_id.to_owned(),
            db,
            meta,
            store,
            signer,
            limits,
            config: watch::Sender::new(genesis_channel.clone()),
            genesis: (genesis_channel, limits),
            status: watch::Sender::new(state.status()),
            state,
            pending_since: None,
            blocks_cut: Default::default(),
            since_snapshot: SinceSnapshot::default(),
        };
        sm.load_config().map_err(|e| BlockStoreError::Corrupt {
            number: sm.state.last_config_block,
            reason: format!("config in the state machine snapshot: {e}"),
        })?;
        sm.status.send_replace(sm.status());
        Ok(sm)
    }

    /// The keyspace a channel's state machine uses (deleted when the channel is removed).
    pub fn keyspace_names(channel_id: &str) -> Vec<String> {
        vec![format!("sm.{channel_id}")]
    }

    /// The config in force, as it changes (a config block applied, a snapshot installed).
    pub fn config_watch(&self) -> watch::Receiver<Arc<Channel>> {
        self.config.subscribe()
    }

    /// Makes the config recorded in the state the one in force.
    fn load_config(&mut self) -> std::result::Result<(), shared_proto::channel::ChannelError> {
        let (channel, limits) = if self.state.config.is_empty() {
            self.genesis.clone()
        } else {
            let config = ChannelConfig::decode(self.state.config.as_slice()).map_err(|e| {
                shared_proto::channel::ChannelError::Decode {
                    what: "channel config",
                    reason: e.to_string(),
                }
            })?;
            let channel = Arc::new(Channel::from_config(config)?);
            let limits = BatchLimits::from_config(&channel.batch_size());
            (channel, limits)
        };
        self.set_config(channel, limits);
        Ok(())
    }

    fn set_config(&mut self, channel: Arc<Channel>, limits: BatchLimits) {
        self.limits = limits;
        self.retry_window = channel.retry_window_txs() as usize;
        self.config.send_replace(channel);
    }

    fn status(&self) -> SmStatus {
        SmStatus {
            config_sequence: self.config.borrow().sequence(),
            blocks_cut: self.blocks_cut,
            since_snapshot: self.since_snapshot,
            ..self.state.status()
        }
    }

    /// Applies one `CONFIG_UPDATE` envelope: checked against the config in force at
    /// [`ANY_TIME`]; if it passes, the pending envelopes are cut, then the config block.
    fn apply_config_update(
        &mut self,
        wb: &mut fjall::OwnedWriteBatch,
        envelope: Vec<u8>,
        response: &mut Response,
    ) -> std::result::Result<(), String> {
        let data = shared_proto::envelope::decode_envelope(&envelope)
            .ok()
            .and_then(|e| shared_proto::pb::common::Payload::decode(e.payload.as_slice()).ok())
            .map(|p| p.data)
            .unwrap_or_default();
        let current = self.config.borrow().clone();
        let checked =
            config_update::check_update(&current, &data, ANY_TIME).map_err(|e| e.to_string())?;
        if self.state.cutter.pending_count() > 0 {
            let batch = self.state.cutter.cut();
            self.cut_block(wb, batch, CutReason::Config);
            response.blocks_cut += 1;
        }
        self.state.last_config_block = self.state.next_block;
        self.cut_block(wb, vec![envelope], CutReason::Config);
        response.blocks_cut += 1;
        self.state.config = serde_bytes::ByteBuf::from(checked.channel.config().encode_to_vec());
        let limits = BatchLimits::from_config(&checked.channel.batch_size());
        tracing::info!(
            channel = %self.channel_id,
            sequence = checked.channel.sequence(),
            block = self.state.last_config_block,
            consenters = %checked.consenters.summary(),
            "config block applied"
        );
        self.set_config(Arc::new(checked.channel), limits);
        Ok(())
    }

    pub fn subscribe(&self) -> watch::Receiver<SmStatus> {
        self.status.subscribe()
    }

    /// Cuts `batch` into the next block, signs it and stages it into `wb`.
    /// Planted bug `cut_by_local_clock`: cuts what is pending once this node's own clock says
    /// the batch timeout passed. Nodes apply at different moments, so their blocks differ.
    fn cut_by_local_clock(&mut self, wb: &mut fjall::OwnedWriteBatch, response: &mut Response) {
        if self.state.cutter.pending_count() == 0 {
            self.pending_since = None;
            return;
        }
        let since = *self
            .pending_since
            .get_or_insert_with(std::time::Instant::now);
        let timeout = std::time::Duration::from_millis(self.config.borrow().batch_timeout_ms());
        if since.elapsed() >= timeout / 2 {
            let batch = self.state.cutter.cut();
            self.cut_block(wb, batch, CutReason::Timeout);
            response.blocks_cut += 1;
            self.pending_since = None;
        }
    }

    fn cut_block(
        &mut self,
        wb: &mut fjall::OwnedWriteBatch,
        batch: Vec<Vec<u8>>,
        reason: CutReason,
    ) {
        self.blocks_cut[reason.index()] += 1;
        self.since_snapshot.blocks += 1;
        self.since_snapshot.bytes += batch.iter().map(|e| e.len() as u64).sum::<u64>();
        let number = self.state.next_block;
        let mut b = block::new_block(
            number,
            self.state.tip_hash.clone(),
            batch,
            self.state.last_config_block,
        );
        if let Some(hash) = self.already_stored(&b) {
            self.state.next_block += 1;
            self.state.tip_hash = hash;
            return;
        }
        block::sign_block(&mut b, &self.channel_id, &self.signer);
        // A block built here always has a header: new_block sets it.
        let hash = block::header_hash(&b)
            .map(|h| h.to_vec())
            .unwrap_or_default();
        self.store.stage(wb, number, &b);
        let envelopes = b.data.as_ref().map_or(0, |d| d.data.len());
        tracing::debug!(block = number, envelopes, reason = ?reason, "block cut");
        self.state.next_block += 1;
        self.state.tip_hash = hash;
    }
}

impl StateMachine {
    /// The header hash of the stored block numbered as `cut`, if it has `cut`'s header and
    /// config index: Raft re-applying the entries since the latest snapshot after a restart.
    /// Signing and writing it again took seconds of an orderer's start at 10 000 blocks.
    fn already_stored(&self, cut: &Block) -> Option<Vec<u8>> {
        let number = cut.header.as_ref()?.number;
        if number >= self.store.height() {
            return None;
        }
        let stored = self.store.get(number).ok().flatten()?;
        let same = stored.header == cut.header
            && block::last_config_index(&stored) == block::last_config_index(cut);
        same.then(|| block::header_hash(&stored).ok().map(|h| h.to_vec()))?
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
        failpoint!("orderer::sm_apply::before", sm_write);
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
                        let header = header_of(&env);
                        let key = header.as_ref().map(|(id, _)| RecentTxIds::key(id));
                        let retry_window_off = shared_proto::mutants::active(
                            shared_proto::mutants::Mutant::RetryWindowOff,
                        );
                        if key.is_some_and(|k| self.state.recent.contains(&k)) && !retry_window_off
                        {
                            response.duplicates_dropped += 1;
                            continue;
                        }
                        if header.is_some_and(|(_, t)| t == HeaderType::ConfigUpdate as i32) {
                            match self.apply_config_update(&mut wb, env.into_vec(), &mut response) {
                                Ok(()) => {
                                    if let Some(k) = key {
                                        self.state.recent.insert(k, self.retry_window);
                                    }
                                }
                                Err(reason) => {
                                    response.refused_at.push(position as u32);
                                    response.config_refused.push((position as u32, reason));
                                }
                            }
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
                        for (batch, reason) in ordered.batches.into_iter().zip(ordered.reasons) {
                            self.cut_block(&mut wb, batch, reason);
                            response.blocks_cut += 1;
                        }
                    }
                    if self.state.cutter.pending_count() > 0 {
                        response.pending_in = Some(self.state.next_block);
                    }
                }
                EntryPayload::Normal(
                    ref cut @ (Request::TimeToCut { block_number }
                    | Request::QuietCut { block_number }),
                ) => {
                    if block_number == self.state.next_block
                        && self.state.cutter.pending_count() > 0
                    {
                        let reason = match cut {
                            Request::QuietCut { .. } => CutReason::Quiet,
                            _ => CutReason::Timeout,
                        };
                        let batch = self.state.cutter.cut();
                        self.cut_block(&mut wb, batch, reason);
                        response.blocks_cut += 1;
                    }
                }
            }
            if shared_proto::mutants::active(shared_proto::mutants::Mutant::CutByLocalClock) {
                self.cut_by_local_clock(&mut wb, &mut response);
            }
            responses.push(response);
        }
        if !wb.is_empty() {
            failpoint!("orderer::block_store_write::before", sm_write);
            wb.commit().map_err(sm_write)?;
            failpoint!("orderer::block_store_write::after", sm_write);
            self.store.advance().map_err(sm_write)?;
        }
        failpoint!("orderer::sm_apply::after", sm_write);
        self.status.send_replace(self.status());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.since_snapshot = SinceSnapshot::default();
        self.status.send_replace(self.status());
        SnapshotBuilder::new(
            self.db.clone(),
            self.meta.clone(),
            self.snapshot_lock.clone(),
            self.state.clone(),
        )
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
        failpoint!("orderer::snapshot_install::before", sm_write);
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
        self.since_snapshot = SinceSnapshot::default();
        self.load_config().map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        self.db.persist(PersistMode::SyncAll).map_err(sm_write)?;
        failpoint!("orderer::snapshot_install::after", sm_write);
        tracing::info!(
            channel = %self.channel_id,
            next_block = self.state.next_block,
            have = self.store.height(),
            "installed snapshot; missing blocks will be pulled from other orderers"
        );
        self.status.send_replace(self.status());
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

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
