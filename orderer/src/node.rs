//! Wiring: builds every channel's pipeline, starts the client, cluster and ops listeners, and
//! shuts them down in order (servers stop accepting, Raft stops, storage is fsynced).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjall::Database;
use fjall::PersistMode;
use openraft::storage::RaftStateMachine as _;
use openraft::BasicNode;
use openraft::SnapshotPolicy;
use prost::Message as _;
use shared_proto::block;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::pb::common::Block;
use shared_proto::pb::orderer::admin_server::AdminServer;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcastServer;
use shared_proto::pb::orderer::cluster_server::ClusterServer;
use shared_proto::stopping::StopFuture;
use shared_proto::stopping::StopSignal;
use shared_proto::stopping::Stopping;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::block_store::BlockStore;
use crate::catchup;
use crate::channels::system_clock;
use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::consensus::log_store::LogStore;
use crate::consensus::log_store::Reconciled;
use crate::consensus::network::ClusterClients;
use crate::consensus::network::Network;
use crate::consensus::network::RAFT_MESSAGE_BYTES_MAX;
use crate::consensus::proposer;
use crate::consensus::proposer::Proposer;
use crate::consensus::rejoin;
use crate::consensus::rejoin::RaftStart;
use crate::consensus::state_machine::StateMachine;
use crate::consensus::Raft;
use crate::cutter::BatchLimits;
use crate::metrics::Metrics;
use crate::ops;
use crate::services::AdminService;
use crate::services::AtomicBroadcastService;
use crate::services::ClusterService;
use shared_proto::tls::TlsMaterial;

/// Entries per AppendEntries: an entry holds at most `BATCH_BYTES_MAX`, so this bounds one
/// Raft message below [`RAFT_MESSAGE_BYTES_MAX`].
const APPEND_ENTRIES_MAX: u64 = 12;

/// Longest the servers may take to close their connections once every call has been ended;
/// connections still open then are dropped.
pub const STOP_DRAIN: Duration = Duration::from_secs(2);
/// Longest one channel's Raft may take to stop.
pub const STOP_RAFT: Duration = Duration::from_secs(1);

/// Why the node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {field} = {addr}: {source} (is the port taken?)")]
    Bind {
        field: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] shared_proto::msp::MspError),
    #[error("TLS: {0}")]
    Tls(#[from] shared_proto::tls::TlsError),
    #[error("storage at {path}: {reason}")]
    Storage { path: String, reason: String },
    #[error("genesis block {path}: {reason}")]
    Genesis { path: String, reason: String },
    #[error("node {node_id} is not a consenter of channel {channel}")]
    NotConsenter { channel: String, node_id: u64 },
    #[error("raft for channel {channel}: {reason}")]
    Raft { channel: String, reason: String },
    #[error("server: {0}")]
    Serve(String),
    #[error("stopped after a fatal error: {0}")]
    Fatal(String),
}

/// The node's three listeners, bound before start (tests bind port 0 and read the ports).
#[derive(Debug)]
pub struct Listeners {
    pub client: TcpListener,
    pub cluster: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &OrdererConfig) -> Result<Self, NodeError> {
        async fn one(field: &'static str, addr: &str) -> Result<TcpListener, NodeError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind {
                    field,
                    addr: addr.to_owned(),
                    source,
                })
        }
        Ok(Listeners {
            client: one("listen_address", &config.listen_address).await?,
            cluster: one("cluster_listen_address", &config.cluster_listen_address).await?,
            ops: one("ops_listen_address", &config.ops_listen_address).await?,
        })
    }
}

/// A running orderer.
pub struct Node {
    pub registry: Arc<Registry>,
    pub client_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    db: Database,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), NodeError>>>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.registry.node_id)
            .field("client_addr", &self.client_addr)
            .finish_non_exhaustive()
    }
}

fn storage_err(path: &std::path::Path) -> impl Fn(String) -> NodeError + '_ {
    move |reason| NodeError::Storage {
        path: path.display().to_string(),
        reason,
    }
}

impl Node {
    /// Opens storage, starts every channel's Raft group and the servers.
    pub async fn start(config: &OrdererConfig, listeners: Listeners) -> Result<Self, NodeError> {
        // Only ring is compiled in; installing it explicitly avoids rustls' ambiguity check.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = Arc::new(SigningIdentity::from_pem_files(
            &config.msp_id,
            &config.identity.cert,
            &config.identity.key,
        )?);
        let tls = Arc::new(TlsMaterial::load(&config.tls)?);
        let book = shared_proto::dial::AddressBook::new(&config.address_overrides);
        let dialer = Arc::new(shared_proto::dial::Dialer::new(tls.clone(), book));
        let err = storage_err(&config.data_dir);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| err(e.to_string()))?;
        let db = Database::builder(config.data_dir.join("ledger"))
            .cache_size(crate::block_store::CACHE_BYTES)
            .open()
            .map_err(|e| err(e.to_string()))?;
        let clients = ClusterClients::new(dialer.clone());
        let metrics = Arc::new(Metrics::default());
        let mut channels = BTreeMap::new();
        let mut background = Vec::new();
        for bootstrap in &config.channels {
            let runtime = start_channel(
                config,
                &db,
                &bootstrap.genesis_block,
                identity.clone(),
                &clients,
            )
            .await?;
            background.push(tokio::spawn(
                metrics.count_leader_changes(&runtime.id, runtime.raft.metrics()),
            ));
            background.push(tokio::spawn(proposer::batch_timer(
                runtime.raft.clone(),
                config.node_id,
                runtime.status.clone(),
                runtime.config.clone(),
            )));
            channels.insert(runtime.id.clone(), Arc::new(runtime));
        }
        let registry = Arc::new(Registry {
            node_id: config.node_id,
            channels,
            metrics,
            clock: system_clock,
            in_flight: Default::default(),
            clock_skew_secs: 0.into(),
        });
        for channel in registry.channels.values() {
            background.push(tokio::spawn(crate::membership::run(
                channel.clone(),
                config.node_id,
            )));
            background.push(tokio::spawn(catchup::run(
                registry.clone(),
                channel.clone(),
                identity.clone(),
                dialer.clone(),
            )));
        }
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| NodeError::Serve(e.to_string()));
        let (client_addr, cluster_addr, ops_addr) = (
            addr(&listeners.client)?,
            addr(&listeners.cluster)?,
            addr(&listeners.ops)?,
        );
        let (stop, _) = watch::channel(false);
        let servers = spawn_servers(&registry, &tls, listeners, &stop)?;
        for channel in registry.channels.values() {
            if channel.rejoin.start() == RaftStart::Deciding {
                background.push(tokio::spawn(rejoin::run(
                    channel.clone(),
                    config.node_id,
                    clients.clone(),
                )));
            }
        }
        tracing::info!(node_id = config.node_id, %client_addr, %cluster_addr, %ops_addr, "orderer started");
        Ok(Node {
            registry,
            client_addr,
            cluster_addr,
            ops_addr,
            db,
            stop,
            servers,
            background,
        })
    }

    /// Completes when a channel's Raft stops on its own: a storage failure (fsync, write) is
    /// fatal to openraft, and the node must then stop rather than keep answering.
    pub async fn fatal(&self) -> String {
        let waits = self.registry.channels.values().map(|ch| {
            let mut metrics = ch.raft.metrics();
            let id = ch.id.clone();
            let ch = ch.clone();
            Box::pin(async move {
                loop {
                    if let Err(fatal) = &metrics.borrow_and_update().running_state {
                        if ch.removed_at().is_none() {
                            return format!("channel {id}: raft stopped: {fatal}");
                        }
                    }
                    if metrics.changed().await.is_err() {
                        if ch.removed_at().is_some() {
                            // Stopped on purpose: this node was removed from the channel.
                            return std::future::pending().await;
                        }
                        return format!("channel {id}: raft stopped");
                    }
                }
            })
        });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(waits).await.0
    }

    /// Graceful stop, bounded by [`STOP_DRAIN`] and [`STOP_RAFT`]: servers stop accepting
    /// and end every open call with `UNAVAILABLE` "node is stopping", Raft stops (membership
    /// unchanged), storage is fsynced.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        shared_proto::stopping::drain_servers(self.servers, STOP_DRAIN).await;
        for task in &self.background {
            task.abort();
        }
        for channel in self.registry.channels.values() {
            match tokio::time::timeout(STOP_RAFT, channel.raft.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(channel = %channel.id, error = %e, "raft shutdown"),
                Err(_) => {
                    tracing::warn!(channel = %channel.id, after = ?STOP_RAFT, "raft shutdown timed out")
                }
            }
        }
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| NodeError::Storage {
                path: "ledger".into(),
                reason: e.to_string(),
            })?;
        tracing::info!("orderer stopped");
        Ok(())
    }
}

fn read_genesis(path: &std::path::Path) -> Result<Block, NodeError> {
    let genesis_err = |reason: String| NodeError::Genesis {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| genesis_err(e.to_string()))?;
    Block::decode(bytes.as_slice()).map_err(|e| genesis_err(e.to_string()))
}

async fn start_channel(
    config: &OrdererConfig,
    db: &Database,
    genesis_path: &std::path::Path,
    identity: Arc<SigningIdentity>,
    clients: &ClusterClients,
) -> Result<ChannelRuntime, NodeError> {
    let genesis = read_genesis(genesis_path)?;
    let (channel, _) = block::verify_genesis(&genesis).map_err(|e| NodeError::Genesis {
        path: genesis_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let id = channel.id().to_owned();
    let members: BTreeMap<u64, BasicNode> = channel
        .consenters()
        .iter()
        .map(|c| (c.id, BasicNode::new(format!("{}:{}", c.host, c.port))))
        .collect();
    if !members.contains_key(&config.node_id) {
        tracing::info!(
            channel = %id,
            node_id = config.node_id,
            "not a consenter in the config this node starts from: it waits for the leader to \
             add it as a learner (a config update naming it as a consenter)"
        );
    }
    let raft_err = |reason: String| NodeError::Raft {
        channel: id.clone(),
        reason,
    };
    let storage = |e: String| NodeError::Storage {
        path: config.data_dir.display().to_string(),
        reason: e,
    };
    let limits = BatchLimits::from_config(&channel.batch_size());
    let store = BlockStore::open(db, &id).map_err(|e| storage(e.to_string()))?;
    let mut sm = StateMachine::open(store.clone(), &id, &genesis, identity, limits)
        .map_err(|e| storage(e.to_string()))?;
    let status = sm.subscribe();
    let live_config = sm.config_watch();
    let mut log = LogStore::open(db, &id).map_err(|e| storage(e.to_string()))?;
    // A crash during a snapshot install can leave the log purged past the state machine.
    let (applied, _) = sm
        .applied_state()
        .await
        .map_err(|e| storage(e.to_string()))?;
    match log
        .reconcile(applied)
        .await
        .map_err(|e| storage(e.to_string()))?
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
    let start = if log
        .is_pristine()
        .await
        .map_err(|e| storage(e.to_string()))?
    {
        RaftStart::Deciding
    } else {
        RaftStart::Resumed
    };
    let r = &config.raft;
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
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        Network::new(&id, clients.clone(), liveness.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| raft_err(e.to_string()))?;
    let proposer = Proposer::spawn(id.clone(), raft.clone(), clients.clone());
    Ok(ChannelRuntime::new(
        id,
        live_config,
        raft,
        store,
        proposer,
        status,
        rejoin::Rejoin::new(start),
        liveness,
    ))
}

fn spawn_servers(
    registry: &Arc<Registry>,
    tls: &TlsMaterial,
    listeners: Listeners,
    stop: &watch::Sender<bool>,
) -> Result<Vec<JoinHandle<Result<(), NodeError>>>, NodeError> {
    let signal = |stop: &watch::Sender<bool>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // Every call ends when the node stops: tonic's graceful shutdown would otherwise wait for
    // every open Deliver or Broadcast stream, i.e. for clients that never hang up.
    let calls: StopSignal = {
        let stop = stop.clone();
        Arc::new(move || -> StopFuture { Box::pin(signal(&stop)) })
    };
    let serve_err = |e: tonic::transport::Error| NodeError::Serve(e.to_string());
    // Twice the largest limit any channel config may set, so an envelope somewhat over its
    // channel's limit still reaches Broadcast and gets its typed refusal, whatever a config
    // update does to the limit; beyond this the transport answers OUT_OF_RANGE.
    let message_max = 2 * shared_proto::channel::BYTES_ABSOLUTE_MAX_CEILING as usize + 64 * 1024;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    drop(health_reporter);
    let broadcast = AtomicBroadcastServer::new(AtomicBroadcastService {
        registry: registry.clone(),
    })
    .max_decoding_message_size(message_max)
    .max_encoding_message_size(catchup::BLOCK_BYTES_MAX);
    let client = Server::builder()
        .tls_config(tls.server(false))
        .map_err(serve_err)?
        .add_service(health)
        .add_service(Stopping::new(broadcast, calls.clone()))
        .add_service(Stopping::new(
            AdminServer::new(AdminService {
                registry: registry.clone(),
            }),
            calls.clone(),
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.client).with_nodelay(Some(true)),
            signal(stop),
        );
    let cluster = Server::builder()
        .tls_config(tls.server(true))
        .map_err(serve_err)?
        .add_service(Stopping::new(
            ClusterServer::new(ClusterService {
                registry: registry.clone(),
            })
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX),
            calls,
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.cluster).with_nodelay(Some(true)),
            signal(stop),
        );
    let ops = ops::serve(listeners.ops, registry.clone(), signal(stop));
    Ok(vec![
        tokio::spawn(async move { client.await.map_err(serve_err) }),
        tokio::spawn(async move { cluster.await.map_err(serve_err) }),
        tokio::spawn(async move { ops.await.map_err(|e| NodeError::Serve(e.to_string())) }),
    ])
}

/// Runs a node until `shutdown` completes, then stops it gracefully.
pub async fn run(
    config: OrdererConfig,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = Node::start(&config, listeners).await?;
    let fatal = tokio::select! {
        () = shutdown => None,
        reason = node.fatal() => Some(reason),
    };
    node.shutdown().await?;
    match fatal {
        None => Ok(()),
        Some(reason) => Err(NodeError::Fatal(reason)),
    }
}
