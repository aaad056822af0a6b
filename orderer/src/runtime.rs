//! Channel runtime (orderer flow: node -> [runtime] -> one channel's Raft, proposer, batch
//! timer, membership, catch-up).
//!
//! A channel starts and stops while the node runs: at node start for every channel it had,
//! when an operator joins one ([`join`]), and it stops when the node stops or the operator
//! removes it ([`remove`]: its Raft state and blocks are deleted, other channels untouched).
//! Each channel owns its tasks; stopping it ends them. This module knows neither the node's
//! error type nor its servers.
//!
//! Which channels a node has survives restarts: the node config's bootstrap channels, plus
//! every genesis block joined at run time (`DATA_DIR/channels/ID.block`), minus every channel
//! removed (`DATA_DIR/channels/ID.removed`).

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fjall::Database;
use openraft::storage::RaftStateMachine as _;
use openraft::BasicNode;
use openraft::SnapshotPolicy;
use prost::Message as _;
use shared_proto::block;
use shared_proto::dial::Dialer;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::RaftSettings;
use shared_proto::pb::common::Block;

use crate::block_store::BlockStore;
use crate::catchup;
use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::consensus::log_store::LogStore;
use crate::consensus::log_store::Reconciled;
use crate::consensus::network::ClusterClients;
use crate::consensus::network::Network;
use crate::consensus::proposer::Proposer;
use crate::consensus::rejoin;
use crate::consensus::rejoin::RaftStart;
use crate::consensus::state_machine::StateMachine;
use crate::consensus::NodeId;
use crate::consensus::Raft;
use crate::cutter::BatchLimits;

/// Entries per AppendEntries: an entry holds at most `BATCH_BYTES_MAX`, so this bounds one
/// Raft message below [`crate::consensus::network::RAFT_MESSAGE_BYTES_MAX`].
const APPEND_ENTRIES_MAX: u64 = 12;
/// Longest one channel's Raft may take to stop.
pub const STOP_RAFT: Duration = Duration::from_secs(1);

/// Why a channel could not start, join or be removed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("genesis block {path}: {reason}")]
    Genesis { path: String, reason: String },
    #[error("storage of channel {channel}: {reason}")]
    Storage { channel: String, reason: String },
    #[error("raft for channel {channel}: {reason}")]
    Raft { channel: String, reason: String },
    #[error("channel {0:?} is already served by this orderer")]
    AlreadyJoined(String),
    #[error("channel {0:?} is not served by this orderer")]
    Unknown(String),
    #[error("the block is not a genesis block (number {0}); join with the channel's block 0")]
    NotGenesis(u64),
    #[error("the block's channel does not accept this orderer's identity ({msp_id}): {reason} (a block of another network?)")]
    ForeignNetwork { msp_id: String, reason: String },
}

/// What every channel of the node shares.
#[derive(Clone)]
pub struct ChannelContext {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub db: Database,
    pub identity: Arc<SigningIdentity>,
    pub clients: ClusterClients,
    pub dialer: Arc<Dialer>,
    pub raft: RaftSettings,
    /// Client certificates the servers accept: the node's CA files and every channel's orgs.
    pub trust: Arc<shared_proto::tls_server::Trust>,
}

impl std::fmt::Debug for ChannelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn storage(channel: &str) -> impl Fn(String) -> RuntimeError + '_ {
    move |reason| RuntimeError::Storage {
        channel: channel.to_owned(),
        reason,
    }
}

/// Reads a genesis block file.
pub fn read_genesis(path: &Path) -> Result<Block, RuntimeError> {
    let genesis_err = |reason: String| RuntimeError::Genesis {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| genesis_err(e.to_string()))?;
    Block::decode(bytes.as_slice()).map_err(|e| genesis_err(e.to_string()))
}

fn joined_dir(ctx: &ChannelContext) -> PathBuf {
    ctx.data_dir.join("channels")
}

/// The genesis blocks of the channels this node has: `bootstrap` (from the node config) and
/// those joined at run time, minus those removed. Sorted by channel id.
pub fn channels_to_start(
    ctx: &ChannelContext,
    bootstrap: &[PathBuf],
) -> Result<Vec<Block>, RuntimeError> {
    let mut blocks = BTreeMap::new();
    let dir = joined_dir(ctx);
    let mut joined: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "block"))
            .collect(),
        Err(_) => Vec::new(),
    };
    joined.sort();
    for path in bootstrap.iter().chain(&joined) {
        let genesis = read_genesis(path)?;
        let (channel, _) = block::verify_genesis(&genesis).map_err(|e| RuntimeError::Genesis {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let id = channel.id().to_owned();
        if dir.join(format!("{id}.removed")).exists() {
            continue;
        }
        blocks.entry(id).or_insert(genesis);
    }
    Ok(blocks.into_values().collect())
}

/// Opens a channel's storage and Raft (not yet registered, no tasks running).
async fn open(ctx: &ChannelContext, genesis: &Block) -> Result<ChannelRuntime, RuntimeError> {
    let (channel, _) = block::verify_genesis(genesis).map_err(|e| RuntimeError::Genesis {
        path: "(genesis block)".into(),
        reason: e.to_string(),
    })?;
    let id = channel.id().to_owned();
    let members: BTreeMap<u64, BasicNode> = channel
        .consenters()
        .iter()
        .map(|c| (c.id, BasicNode::new(format!("{}:{}", c.host, c.port))))
        .collect();
    if !members.contains_key(&ctx.node_id) {
        tracing::info!(
            channel = %id,
            node_id = ctx.node_id,
            "not a consenter in the config this node starts from: it waits for the leader to \
             add it as a learner (a config update naming it as a consenter)"
        );
    }
    let raft_err = |reason: String| RuntimeError::Raft {
        channel: id.clone(),
        reason,
    };
    let err = storage(&id);
    let limits = BatchLimits::from_config(&channel.batch_size());
    let t0 = std::time::Instant::now();
    let store = BlockStore::open(&ctx.db, &id).map_err(|e| err(e.to_string()))?;
    let block_store_ms = t0.elapsed().as_millis();
    let mut sm = StateMachine::open(store.clone(), &id, genesis, ctx.identity.clone(), limits)
        .map_err(|e| err(e.to_string()))?;
    let status = sm.subscribe();
    let live_config = sm.config_watch();
    let state_machine_ms = t0.elapsed().as_millis() - block_store_ms;
    let mut log = LogStore::open(&ctx.db, &id).map_err(|e| err(e.to_string()))?;
    // A crash during a snapshot install can leave the log purged past the state machine.
    let (applied, _) = sm.applied_state().await.map_err(|e| err(e.to_string()))?;
    match log
        .reconcile(applied)
        .await
        .map_err(|e| err(e.to_string()))?
    {
        Reconciled::Consistent => {}
        repaired => tracing::warn!(
            channel = %id,
            ?repaired,
            "the Raft log was ahead of the state machine (a crash during a snapshot install); \
             rewound to the state machine, the leader sends the snapshot again"
        ),
    }
    // With no Raft state the node abstains from voting and decides, once its servers run,
    // whether this is the cluster's first boot (rejoin.rs).
    let start = if log.is_pristine().await.map_err(|e| err(e.to_string()))? {
        RaftStart::Deciding
    } else {
        RaftStart::Resumed
    };
    let r = &ctx.raft;
    let raft_config = openraft::Config {
        cluster_name: id.clone(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_interval_entries),
        max_in_snapshot_log_to_keep: r.entries_kept_after_snapshot,
        max_payload_entries: APPEND_ENTRIES_MAX,
        install_snapshot_timeout: 2000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| raft_err(e.to_string()))?;
    let liveness = Arc::new(crate::membership::Liveness::default());
    let before_raft_ms = t0.elapsed().as_millis();
    let raft = Raft::new(
        ctx.node_id,
        Arc::new(raft_config),
        Network::new(&id, ctx.clients.clone(), liveness.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| raft_err(e.to_string()))?;
    tracing::info!(
        channel = %id,
        height = store.height(),
        block_store_ms,
        state_machine_ms,
        raft_log_ms = before_raft_ms - block_store_ms - state_machine_ms,
        // openraft re-applies the committed entries after the state machine's snapshot here.
        raft_start_ms = t0.elapsed().as_millis() - before_raft_ms,
        "channel storage opened"
    );
    let proposer = Proposer::spawn(id.clone(), raft.clone(), ctx.clients.clone());
    Ok(ChannelRuntime::new(
        id.clone(),
        live_config,
        raft,
        store,
        proposer,
        status,
        rejoin::Rejoin::new(start),
        liveness,
    ))
}

/// Opens a channel, registers it and starts its tasks.
pub async fn start(
    ctx: &ChannelContext,
    registry: &Arc<Registry>,
    genesis: &Block,
) -> Result<Arc<ChannelRuntime>, RuntimeError> {
    let channel = Arc::new(open(ctx, genesis).await?);
    let me = ctx.node_id;
    let mut tasks = vec![
        tokio::spawn(
            registry
                .metrics
                .count_leader_changes(&channel.id, channel.raft.metrics()),
        ),
        tokio::spawn(crate::consensus::batch_timer::run(
            channel.raft.clone(),
            channel.status.clone(),
            channel.config.clone(),
            channel.proposer.activity(),
        )),
        tokio::spawn(crate::membership::run(channel.clone(), me)),
        tokio::spawn(crate::consensus::snapshot::trigger_when_grown(
            channel.raft.clone(),
            channel.status.clone(),
            crate::consensus::snapshot::SnapshotDue::DEFAULT,
        )),
        tokio::spawn(catchup::run(
            registry.clone(),
            channel.clone(),
            ctx.identity.clone(),
            ctx.dialer.clone(),
        )),
        tokio::spawn(watch_fatal(registry.clone(), channel.clone())),
        tokio::spawn(shared_proto::tls_server::follow(
            ctx.trust.clone(),
            channel.id.clone(),
            channel.config.clone(),
        )),
    ];
    if channel.rejoin.start() == RaftStart::Deciding {
        tasks.push(tokio::spawn(rejoin::run(
            channel.clone(),
            me,
            ctx.clients.clone(),
        )));
    }
    channel.own_tasks(tasks);
    registry.insert(channel.clone());
    Ok(channel)
}

/// Reports a channel's Raft stopping on its own (a storage failure is fatal to openraft) to
/// the node, which must then stop rather than keep answering. A channel stopped on purpose
/// (removed, node stopping) is not reported.
async fn watch_fatal(registry: Arc<Registry>, channel: Arc<ChannelRuntime>) {
    let mut metrics = channel.raft.metrics();
    let reason = loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            break format!("channel {}: raft stopped: {fatal}", channel.id);
        }
        if metrics.changed().await.is_err() {
            break format!("channel {}: raft stopped", channel.id);
        }
    };
    if !channel.is_stopping() && channel.removed_at().is_none() {
        registry.report_fatal(reason);
    }
}

/// Stops a channel's tasks and its Raft, within [`STOP_RAFT`].
pub async fn stop(channel: &ChannelRuntime) {
    channel.begin_stopping();
    match tokio::time::timeout(STOP_RAFT, channel.raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(channel = %channel.id, error = %e, "raft shutdown"),
        Err(_) => {
            tracing::warn!(channel = %channel.id, after = ?STOP_RAFT, "raft shutdown timed out")
        }
    }
    channel.abort_tasks();
}

/// Joins a channel with its genesis block: recorded so a restart starts it again, then
/// started. A node that is not one of the block's consenters waits to be added (follower).
pub async fn join(
    ctx: &ChannelContext,
    registry: &Arc<Registry>,
    genesis: &Block,
) -> Result<Arc<ChannelRuntime>, RuntimeError> {
    let number = genesis.header.as_ref().map_or(0, |h| h.number);
    if number != 0 {
        return Err(RuntimeError::NotGenesis(number));
    }
    let (channel, _) = block::verify_genesis(genesis).map_err(|e| RuntimeError::Genesis {
        path: "(joined block)".into(),
        reason: e.to_string(),
    })?;
    let id = channel.id().to_owned();
    if registry.get(&id).is_some() {
        return Err(RuntimeError::AlreadyJoined(id));
    }
    channel
        .msps()
        .validate(
            ctx.identity.msp_id(),
            ctx.identity.cert_der(),
            registry.now_unix(),
        )
        .map_err(|e| RuntimeError::ForeignNetwork {
            msp_id: ctx.identity.msp_id().to_owned(),
            reason: e.to_string(),
        })?;
    let err = storage(&id);
    let dir = joined_dir(ctx);
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    let _ = std::fs::remove_file(dir.join(format!("{id}.removed")));
    shared_proto::process::write_durably(
        &dir.join(format!("{id}.block")),
        &genesis.encode_to_vec(),
    )
    .map_err(|e| err(e.to_string()))?;
    tracing::info!(channel = %id, "joined channel");
    start(ctx, registry, genesis).await
}

/// Removes a channel from this node: stops it, records the removal, deletes its Raft state,
/// state machine and blocks. Other channels are untouched.
pub async fn remove(
    ctx: &ChannelContext,
    registry: &Arc<Registry>,
    id: &str,
) -> Result<Arc<ChannelRuntime>, RuntimeError> {
    let channel = registry
        .remove(id)
        .ok_or_else(|| RuntimeError::Unknown(id.to_owned()))?;
    stop(&channel).await;
    ctx.trust.remove_channel(id);
    let err = storage(id);
    let dir = joined_dir(ctx);
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    shared_proto::process::write_durably(&dir.join(format!("{id}.removed")), b"removed\n")
        .map_err(|e| err(e.to_string()))?;
    let _ = std::fs::remove_file(dir.join(format!("{id}.block")));
    for name in crate::block_store::keyspace_names(id)
        .into_iter()
        .chain(LogStore::keyspace_names(id))
        .chain(StateMachine::keyspace_names(id))
    {
        if ctx.db.keyspace_exists(&name) {
            let ks = ctx
                .db
                .keyspace(&name, crate::block_store::keyspace_options)
                .map_err(|e| err(e.to_string()))?;
            ctx.db.delete_keyspace(ks).map_err(|e| err(e.to_string()))?;
        }
    }
    tracing::info!(channel = %id, "removed channel: its Raft state and blocks are deleted");
    Ok(channel)
}
