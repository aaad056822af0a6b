//! Wiring: opens the ledger of every joined channel, commits its genesis block, starts gossip
//! (which runs the deliver client while this peer leads its org), the gRPC services, the
//! gossip listener (mutual TLS) and the ops endpoint; shuts them down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjall::Database;
use prost::Message as _;
use shared_proto::block;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::common::Block;
use shared_proto::pb::peer::deliver_server::DeliverServer;
use shared_proto::pb::peer::endorser_server::EndorserServer;
use shared_proto::pb::peer::query_server::QueryServer;
use shared_proto::stopping::StopFuture;
use shared_proto::stopping::StopSignal;
use shared_proto::stopping::Stopping;
use shared_proto::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::chaincode::ChaincodeRegistry;
use crate::channel_config::ConfigError;
use crate::channels::system_clock;
use crate::channels::PeerChannel;
use crate::channels::Registry;
use crate::commit::Committer;
use crate::gossip::Gossip;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::ops;
use crate::services::PeerService;

/// Largest message a client of the service port (SDK, CLI) accepts from it. The node itself
/// decodes at most [`service_message_bytes_max`] from any caller.
pub const MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Floor of [`service_message_bytes_max`] (a proposal carries the chaincode arguments).
pub const SERVICE_MESSAGE_BYTES_MIN: usize = 4 * 1024 * 1024;

/// Largest message the service port decodes or sends: the largest block of the channels this
/// peer serves (a proposal cannot be larger than the envelope it becomes). A larger request is
/// refused by the transport (`OUT_OF_RANGE`) before anything reads it. Read from the configs
/// in force when the peer starts: a config block that raises the block size takes effect here
/// at the next start.
pub fn service_message_bytes_max(registry: &Registry) -> usize {
    registry
        .channels
        .values()
        .map(|c| c.config().block_bytes_max())
        .max()
        .unwrap_or(0)
        .max(SERVICE_MESSAGE_BYTES_MIN)
}

/// Longest the servers may take to close their connections once every call has been ended;
/// connections still open then are dropped.
pub const STOP_DRAIN: Duration = Duration::from_secs(2);

/// Why the peer could not start or stopped.
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
    #[error("server: {0}")]
    Serve(String),
    #[error("stopped after a fatal error: {0}")]
    Fatal(String),
}

/// The peer's listeners, bound before start (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub service: TcpListener,
    pub gossip: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &PeerConfig) -> Result<Self, NodeError> {
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
            service: one("listen_address", &config.listen_address).await?,
            gossip: one("gossip_listen_address", &config.gossip_listen_address).await?,
            ops: one("ops_listen_address", &config.ops_listen_address).await?,
        })
    }
}

/// A running peer.
pub struct Node {
    pub registry: Arc<Registry>,
    pub gossip: Gossip,
    pub service_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    db: Database,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), NodeError>>>,
    fatal: tokio::sync::mpsc::Receiver<String>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("service_addr", &self.service_addr)
            .finish_non_exhaustive()
    }
}

fn read_genesis(path: &std::path::Path) -> Result<Block, NodeError> {
    let err = |reason: String| NodeError::Genesis {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    Block::decode(bytes.as_slice()).map_err(|e| err(e.to_string()))
}

impl Node {
    /// Starts the peer with the given chaincodes installed.
    pub async fn start(
        config: &PeerConfig,
        listeners: Listeners,
        chaincodes: ChaincodeRegistry,
    ) -> Result<Self, NodeError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = Arc::new(SigningIdentity::from_pem_files(
            &config.msp_id,
            &config.identity.cert,
            &config.identity.key,
        )?);
        let tls = Arc::new(TlsMaterial::load(&config.tls)?);
        let book = shared_proto::dial::AddressBook::new(&config.address_overrides);
        let dialer = Arc::new(shared_proto::dial::Dialer::new(tls.clone(), book));
        let storage = |reason: String| NodeError::Storage {
            path: config.data_dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| storage(e.to_string()))?;
        let db = Database::builder(config.data_dir.join("ledger"))
            .cache_size(crate::ledger::CACHE_BYTES)
            .open()
            .map_err(|e| storage(e.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let mut channels = BTreeMap::new();
        for bootstrap in &config.channels {
            let genesis = read_genesis(&bootstrap.genesis_block)?;
            let genesis_err = |reason: String| NodeError::Genesis {
                path: bootstrap.genesis_block.display().to_string(),
                reason,
            };
            let (channel, _) =
                block::verify_genesis(&genesis).map_err(|e| genesis_err(e.to_string()))?;
            let id = channel.id().to_owned();
            let ledger = Ledger::open(&db, &id).map_err(|e| storage(e.to_string()))?;
            // The config in force comes from the ledger (its latest valid config block).
            let committer = Committer::open(&genesis, ledger.clone(), metrics.clone()).map_err(
                |e| match e {
                    ConfigError::Genesis(_) | ConfigError::GenesisMismatch { .. } => {
                        genesis_err(e.to_string())
                    }
                    ConfigError::Ledger(_) | ConfigError::BadConfigBlock { .. } => {
                        storage(e.to_string())
                    }
                },
            )?;
            channels.insert(
                id.clone(),
                Arc::new(PeerChannel {
                    id,
                    ledger,
                    committer: Arc::new(committer),
                }),
            );
        }
        let registry = Arc::new(Registry {
            channels,
            identity: identity.clone(),
            chaincodes: Arc::new(chaincodes),
            metrics,
            clock: system_clock,
        });
        // Each channel reports at most twice (gossip commit loop, deliver client).
        let (fatal_tx, fatal) = tokio::sync::mpsc::channel(2 * registry.channels.len().max(1));
        let (gossip, background) = Gossip::start(config, &registry, dialer, fatal_tx);
        let service_addr = listeners
            .service
            .local_addr()
            .map_err(|e| NodeError::Serve(e.to_string()))?;
        let gossip_addr = listeners
            .gossip
            .local_addr()
            .map_err(|e| NodeError::Serve(e.to_string()))?;
        let ops_addr = listeners
            .ops
            .local_addr()
            .map_err(|e| NodeError::Serve(e.to_string()))?;
        let (stop, _) = watch::channel(false);
        let servers = spawn_servers(&registry, &gossip, &tls, listeners, &stop)?;
        tracing::info!(peer = %config.name, msp = %config.msp_id, %service_addr, %gossip_addr, %ops_addr, "peer started");
        Ok(Node {
            registry,
            gossip,
            service_addr,
            gossip_addr,
            ops_addr,
            db,
            stop,
            servers,
            fatal,
            background,
        })
    }

    /// Completes when a channel's commit path failed (storage): the peer must stop.
    pub async fn fatal(&mut self) -> String {
        match self.fatal.recv().await {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Graceful stop, bounded by [`STOP_DRAIN`]: servers stop accepting and end every open
    /// call with `UNAVAILABLE` "node is stopping", background tasks stop, storage is fsynced.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        shared_proto::stopping::drain_servers(self.servers, STOP_DRAIN).await;
        for task in &self.background {
            task.abort();
        }
        self.gossip.stop();
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| NodeError::Storage {
                path: "ledger".into(),
                reason: e.to_string(),
            })?;
        tracing::info!("peer stopped");
        Ok(())
    }
}

fn spawn_servers(
    registry: &Arc<Registry>,
    gossip: &Gossip,
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
    // every open events or gossip stream, i.e. for clients and peers that never hang up.
    let calls: StopSignal = {
        let stop = stop.clone();
        Arc::new(move || -> StopFuture { Box::pin(signal(&stop)) })
    };
    let serve_err = |e: tonic::transport::Error| NodeError::Serve(e.to_string());
    let svc = PeerService::new(registry.clone());
    let message_max = service_message_bytes_max(registry);
    let (_, health) = tonic_health::server::health_reporter();
    // Client certificates required: every query is also signed and checked against Readers
    // (query.rs), but nothing is decoded for a caller without a certificate of the network.
    let server = Server::builder()
        .tls_config(tls.server(true))
        .map_err(serve_err)?
        .add_service(health)
        .add_service(Stopping::new(
            EndorserServer::new(svc.clone())
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(message_max),
            calls.clone(),
        ))
        .add_service(Stopping::new(
            DeliverServer::new(svc.clone())
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(message_max),
            calls.clone(),
        ))
        .add_service(Stopping::new(
            QueryServer::new(svc)
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(message_max),
            calls.clone(),
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.service).with_nodelay(Some(true)),
            signal(stop),
        );
    let gossip_server = Server::builder()
        .tls_config(tls.server(true))
        .map_err(serve_err)?
        .add_service(Stopping::new(gossip.service(), calls))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.gossip).with_nodelay(Some(true)),
            signal(stop),
        );
    let state = ops::OpsState {
        registry: registry.clone(),
        gossip: gossip.clone(),
    };
    let ops = ops::serve(listeners.ops, state, signal(stop));
    Ok(vec![
        tokio::spawn(async move { server.await.map_err(serve_err) }),
        tokio::spawn(async move { gossip_server.await.map_err(serve_err) }),
        tokio::spawn(async move { ops.await.map_err(|e| NodeError::Serve(e.to_string())) }),
    ])
}

/// Runs a peer until `shutdown` completes or its commit path fails, then stops it.
pub async fn run(
    config: PeerConfig,
    listeners: Listeners,
    chaincodes: ChaincodeRegistry,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut node = Node::start(&config, listeners, chaincodes).await?;
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
