//! Channel runtime (peer flow: node -> [runtime] -> one channel's ledger, committer and
//! gossip tasks, which run the deliver client while this peer leads its org).
//!
//! A channel starts while the peer runs: at node start for every channel it has, and when an
//! operator joins one ([`join`]); it stops when the node stops. Each channel owns its tasks;
//! stopping it ends them. Services find channels in the [`Registry`] per request, so a joined
//! channel is served as soon as it is registered. This module knows neither the node's error
//! type nor its servers.
//!
//! Which channels a peer has survives restarts: the node config's channels, plus every genesis
//! block joined at run time, recorded durably as `DATA_DIR/channels/ID.block` before the
//! channel starts ([`channels_to_start`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use fjall::Database;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;

use crate::channel_config::ConfigError;
use crate::channels::PeerChannel;
use crate::channels::Registry;
use crate::commit::Committer;
use crate::gossip::Gossip;
use crate::ledger::Ledger;

/// Why a channel could not start or be joined.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("genesis block {path}: {reason}")]
    Genesis { path: String, reason: String },
    #[error("storage of channel {channel}: {reason}")]
    Storage { channel: String, reason: String },
    #[error("channel {0:?} is already joined by this peer")]
    AlreadyJoined(String),
    #[error("the block is not a genesis block (number {0}); join with the channel's block 0")]
    NotGenesis(u64),
    #[error("channel {channel:?} does not include this peer's org {msp_id} (its orgs: {orgs}): a block of another network?")]
    OrgNotInChannel {
        channel: String,
        msp_id: String,
        orgs: String,
    },
    #[error("channel {channel:?} does not accept this peer's identity of {msp_id}: {reason} (a block of another network?)")]
    ForeignNetwork {
        channel: String,
        msp_id: String,
        reason: String,
    },
}

/// What every channel of the peer shares.
#[derive(Clone)]
pub struct ChannelContext {
    pub data_dir: PathBuf,
    pub db: Database,
    pub registry: Arc<Registry>,
    pub gossip: Gossip,
    /// Client certificates the servers accept: the node's CA files and every channel's orgs.
    pub trust: Arc<shared_proto::tls_server::Trust>,
    /// One join at a time: checking that a channel is new, recording and starting it is one
    /// step.
    joining: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ChannelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl ChannelContext {
    pub fn new(
        data_dir: PathBuf,
        db: Database,
        registry: Arc<Registry>,
        gossip: Gossip,
        trust: Arc<shared_proto::tls_server::Trust>,
    ) -> Self {
        ChannelContext {
            data_dir,
            db,
            registry,
            gossip,
            trust,
            joining: Arc::default(),
        }
    }

    fn joined_dir(&self) -> PathBuf {
        self.data_dir.join("channels")
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

/// The channels this peer has, each with the file its genesis block came from: `bootstrap`
/// (the node config's) and those joined at run time (`DATA_DIR/channels/*.block`). Sorted by
/// channel id; a channel named twice starts from the first file naming it.
pub fn channels_to_start(
    data_dir: &Path,
    bootstrap: &[PathBuf],
) -> Result<Vec<(PathBuf, Block)>, RuntimeError> {
    let mut joined: Vec<PathBuf> = match std::fs::read_dir(data_dir.join("channels")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "block"))
            .collect(),
        Err(_) => Vec::new(),
    };
    joined.sort();
    let mut blocks = BTreeMap::new();
    for path in bootstrap.iter().chain(&joined) {
        let genesis = read_genesis(path)?;
        let (channel, _) = block::verify_genesis(&genesis).map_err(|e| RuntimeError::Genesis {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        blocks
            .entry(channel.id().to_owned())
            .or_insert((path.clone(), genesis));
    }
    Ok(blocks.into_values().collect())
}

/// Opens a channel's ledger and committer: commits `genesis` on a pristine ledger, else reads
/// the config in force from the ledger. Blocking (storage). `source` names where the block
/// came from, for errors.
fn open(ctx: &ChannelContext, genesis: &Block, source: &str) -> Result<PeerChannel, RuntimeError> {
    let genesis_err = |reason: String| RuntimeError::Genesis {
        path: source.to_owned(),
        reason,
    };
    let (channel, _) = block::verify_genesis(genesis).map_err(|e| genesis_err(e.to_string()))?;
    let id = channel.id().to_owned();
    let storage = |reason: String| RuntimeError::Storage {
        channel: id.clone(),
        reason,
    };
    let ledger = Ledger::open(&ctx.db, &id).map_err(|e| storage(e.to_string()))?;
    let committer = Committer::open(genesis, ledger.clone(), ctx.registry.metrics.clone())
        .map_err(|e| match e {
            ConfigError::Genesis(_) | ConfigError::GenesisMismatch { .. } => {
                genesis_err(e.to_string())
            }
            ConfigError::Ledger(_) | ConfigError::BadConfigBlock { .. } => storage(e.to_string()),
        })?;
    Ok(PeerChannel::new(ledger, Arc::new(committer)))
}

/// Registers an opened channel and starts its tasks.
fn launch(ctx: &ChannelContext, channel: PeerChannel) -> Result<Arc<PeerChannel>, RuntimeError> {
    let channel = Arc::new(channel);
    if !ctx.registry.insert(channel.clone()) {
        return Err(RuntimeError::AlreadyJoined(channel.id.clone()));
    }
    channel.own_tasks(ctx.gossip.add_channel(channel.committer.clone()));
    channel.own_tasks(vec![tokio::spawn(shared_proto::tls_server::follow(
        ctx.trust.clone(),
        channel.id.clone(),
        channel.committer.live_config().subscribe(),
    ))]);
    tracing::info!(channel = %channel.id, height = channel.ledger.height(), "channel started");
    Ok(channel)
}

/// Opens a channel, registers it and starts its tasks (node start). Blocking (storage).
pub fn start(
    ctx: &ChannelContext,
    genesis: &Block,
    source: &str,
) -> Result<Arc<PeerChannel>, RuntimeError> {
    let channel = open(ctx, genesis, source)?;
    launch(ctx, channel)
}

/// Stops a channel: it is no longer served or gossiped and its tasks end. Its ledger stays.
pub fn stop(ctx: &ChannelContext, channel_id: &str) {
    if let Some(channel) = ctx.registry.remove(channel_id) {
        ctx.gossip.remove_channel(channel_id);
        channel.abort_tasks();
        ctx.trust.remove_channel(channel_id);
    }
}

/// Stops every channel (node stop).
pub fn stop_all(ctx: &ChannelContext) {
    for id in ctx.registry.ids() {
        stop(ctx, &id);
    }
}

/// Whether `channel` includes `identity`'s org among its application orgs and accepts its
/// certificate at `now_unix`. A peer can commit only the blocks of such a channel.
pub fn check_member(
    channel: &Channel,
    identity: &SigningIdentity,
    now_unix: i64,
) -> Result<(), RuntimeError> {
    let msp_id = identity.msp_id();
    let orgs = channel.application_orgs();
    if !orgs.iter().any(|o| o == msp_id) {
        return Err(RuntimeError::OrgNotInChannel {
            channel: channel.id().to_owned(),
            msp_id: msp_id.to_owned(),
            orgs: orgs.join(", "),
        });
    }
    channel
        .msps()
        .validate(msp_id, identity.cert_der(), now_unix)
        .map_err(|e| RuntimeError::ForeignNetwork {
            channel: channel.id().to_owned(),
            msp_id: msp_id.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Checks `genesis` as a block to join: block 0, a valid genesis block, of a channel that has
/// this peer as a member ([`check_member`]). Returns its channel (genesis config).
pub fn check_joinable(registry: &Registry, genesis: &Block) -> Result<Channel, RuntimeError> {
    let number = genesis.header.as_ref().map_or(0, |h| h.number);
    if number != 0 {
        return Err(RuntimeError::NotGenesis(number));
    }
    let (channel, _) = block::verify_genesis(genesis).map_err(|e| RuntimeError::Genesis {
        path: "(joined block)".into(),
        reason: e.to_string(),
    })?;
    check_member(&channel, &registry.identity, registry.now_unix())?;
    Ok(channel)
}

/// Joins a channel with its genesis block: checked ([`check_joinable`]), recorded durably so a
/// restart starts it again, committed, then started. Nothing is recorded for a block refused.
pub async fn join(ctx: &ChannelContext, genesis: &Block) -> Result<Arc<PeerChannel>, RuntimeError> {
    let channel = check_joinable(&ctx.registry, genesis)?;
    let id = channel.id().to_owned();
    let _one_at_a_time = ctx.joining.lock().await;
    if ctx.registry.get(&id).is_some() {
        return Err(RuntimeError::AlreadyJoined(id));
    }
    let record = ctx.joined_dir().join(format!("{id}.block"));
    let opened = {
        let (ctx, genesis, record) = (ctx.clone(), genesis.clone(), record.clone());
        tokio::task::spawn_blocking(move || record_and_open(&ctx, &genesis, &record))
            .await
            .map_err(|e| RuntimeError::Storage {
                channel: id.clone(),
                reason: e.to_string(),
            })??
    };
    let channel = launch(ctx, opened)?;
    tracing::info!(channel = %id, record = %record.display(), "joined channel");
    Ok(channel)
}

/// Records `genesis` at `record`, then opens its channel; a channel that does not open is not
/// recorded (it would not start at the next start either). Blocking.
fn record_and_open(
    ctx: &ChannelContext,
    genesis: &Block,
    record: &Path,
) -> Result<PeerChannel, RuntimeError> {
    let storage = |e: std::io::Error| RuntimeError::Storage {
        channel: record
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        reason: format!("{}: {e}", record.display()),
    };
    std::fs::create_dir_all(ctx.joined_dir()).map_err(storage)?;
    shared_proto::process::write_durably(record, &genesis.encode_to_vec()).map_err(storage)?;
    open(ctx, genesis, "(joined block)").inspect_err(|_| {
        let _ = std::fs::remove_file(record);
    })
}
