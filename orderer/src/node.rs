//! Wiring: builds every channel's pipeline, starts the client, cluster and ops listeners, and
//! shuts them down in order (servers stop accepting, Raft stops, storage is fsynced).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjall::Database;
use fjall::PersistMode;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::pb::orderer::admin_server::AdminServer;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcastServer;
use shared_proto::pb::orderer::cluster_server::ClusterServer;
use shared_proto::stopping::StopFuture;
use shared_proto::stopping::StopSignal;
use shared_proto::stopping::Stopping;
use shared_proto::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::admin::AdminService;
use crate::catchup;
use crate::channels::Registry;
use crate::consensus::network::ClusterClients;
use crate::consensus::network::RAFT_MESSAGE_BYTES_MAX;
use crate::metrics::Metrics;
use crate::ops;
use crate::runtime;
use crate::runtime::ChannelContext;
use crate::services::AtomicBroadcastService;
use crate::services::ClusterService;

/// Longest the servers may take to close their connections once every call has been ended;
/// connections still open then are dropped.
pub const STOP_DRAIN: Duration = Duration::from_secs(2);
pub use crate::runtime::STOP_RAFT;

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
    #[error(transparent)]
    Channel(#[from] crate::runtime::RuntimeError),
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
        let trust = shared_proto::tls_server::Trust::new(tls.ca_roots_der().to_vec())?;
        let book = shared_proto::dial::AddressBook::new(&config.address_overrides);
        let dialer = Arc::new(shared_proto::dial::Dialer::new(tls.clone(), book));
        let err = storage_err(&config.data_dir);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| err(e.to_string()))?;
        let t0 = std::time::Instant::now();
        let db = Database::builder(config.data_dir.join("ledger"))
            .cache_size(crate::block_store::CACHE_BYTES)
            .max_journaling_size(crate::block_store::JOURNAL_BYTES)
            .open()
            .map_err(|e| err(e.to_string()))?;
        // Opening replays the journals not yet flushed into tables.
        tracing::info!(ms = t0.elapsed().as_millis(), "database opened");
        let clients = ClusterClients::new(dialer.clone());
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::new(config.node_id, metrics);
        registry.ready_requires_every_channel = config.ready_requires_every_channel;
        registry.own_tls_cert = tls.cert_der.clone();
        let registry = Arc::new(registry);
        let ctx = Arc::new(ChannelContext {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            db: db.clone(),
            identity,
            clients,
            dialer,
            raft: config.raft.clone(),
            trust,
        });
        let bootstrap: Vec<std::path::PathBuf> = config
            .channels
            .iter()
            .map(|c| c.genesis_block.clone())
            .collect();
        for genesis in runtime::channels_to_start(&ctx, &bootstrap)? {
            runtime::start(&ctx, &registry, &genesis).await?;
        }
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| NodeError::Serve(e.to_string()));
        let (client_addr, cluster_addr, ops_addr) = (
            addr(&listeners.client)?,
            addr(&listeners.cluster)?,
            addr(&listeners.ops)?,
        );
        let (stop, _) = watch::channel(false);
        let servers = spawn_servers(&registry, &ctx, &tls, listeners, &stop)?;
        tracing::info!(node_id = config.node_id, %client_addr, %cluster_addr, %ops_addr, "orderer started");
        Ok(Node {
            registry,
            client_addr,
            cluster_addr,
            ops_addr,
            db,
            stop,
            servers,
        })
    }

    /// Names of the storage keyspaces the node holds (each channel has its own; removing a
    /// channel deletes them).
    pub fn keyspace_names(&self) -> Vec<String> {
        self.db
            .list_keyspace_names()
            .into_iter()
            .map(|k| k.to_string())
            .collect()
    }

    /// Completes when a channel's Raft stops on its own: a storage failure (fsync, write) is
    /// fatal to openraft, and the node must then stop rather than keep answering.
    pub async fn fatal(&self) -> String {
        self.registry.fatal().await
    }

    /// Graceful stop, bounded by [`STOP_DRAIN`] and [`STOP_RAFT`]: servers stop accepting
    /// and end every open call with `UNAVAILABLE` "node is stopping", Raft stops (membership
    /// unchanged), storage is fsynced.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        shared_proto::stopping::drain_servers(self.servers, STOP_DRAIN).await;
        for channel in self.registry.channels() {
            runtime::stop(&channel).await;
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

fn spawn_servers(
    registry: &Arc<Registry>,
    ctx: &Arc<ChannelContext>,
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
    let tls_config = |mutual: bool| {
        shared_proto::tls_server::server_config(tls, &ctx.trust, mutual)
            .map_err(|e| NodeError::Serve(e.to_string()))
    };
    let client = Server::builder()
        .add_service(health)
        .add_service(Stopping::new(broadcast, calls.clone()))
        .add_service(Stopping::new(
            AdminServer::new(AdminService {
                registry: registry.clone(),
                ctx: ctx.clone(),
            }),
            calls.clone(),
        ))
        .serve_with_incoming_shutdown(
            shared_proto::tls_server::incoming(listeners.client, tls_config(false)?),
            signal(stop),
        );
    let cluster = Server::builder()
        .add_service(Stopping::new(
            ClusterServer::new(ClusterService {
                registry: registry.clone(),
            })
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX),
            calls,
        ))
        .serve_with_incoming_shutdown(
            shared_proto::tls_server::incoming(listeners.cluster, tls_config(true)?),
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
    let stopped = node.shutdown().await;
    match (fatal, stopped) {
        (None, stopped) => stopped,
        (Some(reason), Ok(())) => Err(NodeError::Fatal(reason)),
        // The failure that stopped the node usually breaks its shutdown too (a full disk
        // leaves the store poisoned): report the cause, not that follow-on error
        // (follower_disk_full, seed 1).
        (Some(reason), Err(e)) => Err(NodeError::Fatal(format!(
            "{reason} (and stopping then failed: {e})"
        ))),
    }
}
