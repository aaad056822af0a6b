//! Wiring: starts gossip and, through the channel runtime, every channel the peer has (the
//! config file's and those joined at run time: ledger, committer, gossip tasks, which run the
//! deliver client while this peer leads its org), then the gRPC services (Endorser, Deliver,
//! Query and ChannelParticipation on the service port), the gossip listener (mutual TLS) and
//! the ops endpoint; shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjall::Database;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::peer::channel_participation_server::ChannelParticipationServer;
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
use tonic::transport::Server;

use crate::chaincode::ChaincodeRegistry;
use crate::channels::Registry;
use crate::gossip::Gossip;
use crate::metrics::Metrics;
use crate::ops;
use crate::participation::ParticipationService;
use crate::runtime;
use crate::runtime::ChannelContext;
use crate::services::PeerService;

/// Largest message a client of the service port (SDK, CLI) accepts from it. The node itself
/// decodes at most [`service_message_bytes_max`] from any caller.
pub const MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Floor of [`service_message_bytes_max`] (a proposal carries the chaincode arguments).
pub const SERVICE_MESSAGE_BYTES_MIN: usize = 4 * 1024 * 1024;

/// Largest message the service port decodes or sends: the largest block of the channels this
/// peer serves (a proposal cannot be larger than the envelope it becomes). A larger request is
/// refused by the transport (`OUT_OF_RANGE`) before anything reads it. Read from the configs
/// in force when the peer starts: a config block that raises the block size, or a channel
/// joined with larger blocks, takes effect here at the next start.
pub fn service_message_bytes_max(registry: &Registry) -> usize {
    registry
        .channels()
        .iter()
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
    #[error(transparent)]
    Channel(#[from] crate::runtime::RuntimeError),
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
    /// Starts and stops channels (the join service uses it too).
    pub channels: ChannelContext,
    db: Database,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), NodeError>>>,
    /// Gossip's heartbeat (each channel owns its own tasks).
    heartbeat: JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("service_addr", &self.service_addr)
            .finish_non_exhaustive()
    }
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
            .max_journaling_size(crate::ledger::JOURNAL_BYTES)
            .open()
            .map_err(|e| storage(e.to_string()))?;
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
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(
            identity.clone(),
            Arc::new(chaincodes),
            metrics.clone(),
        ));
        let (gossip, heartbeat) = Gossip::start(
            config,
            identity,
            metrics,
            registry.clock,
            dialer,
            registry.fatal.clone(),
        );
        let trust = shared_proto::tls_server::Trust::new(tls.ca_roots_der().to_vec())?;
        let ctx = ChannelContext::new(
            config.data_dir.clone(),
            db.clone(),
            registry.clone(),
            gossip.clone(),
            trust,
        );
        let bootstrap: Vec<std::path::PathBuf> = config
            .channels
            .iter()
            .map(|c| c.genesis_block.clone())
            .collect();
        let started = runtime::channels_to_start(&config.data_dir, &bootstrap).and_then(|all| {
            all.iter().try_for_each(|(path, genesis)| {
                runtime::start(&ctx, genesis, &path.display().to_string()).map(drop)
            })
        });
        let (stop, _) = watch::channel(false);
        let servers = started
            .map_err(NodeError::from)
            .and_then(|()| spawn_servers(&ctx, &tls, listeners, &stop));
        let servers = match servers {
            Ok(servers) => servers,
            Err(e) => {
                // Whatever started stops: a failed start leaves no task behind.
                runtime::stop_all(&ctx);
                heartbeat.abort();
                gossip.stop();
                return Err(e);
            }
        };
        tracing::info!(peer = %config.name, msp = %config.msp_id, %service_addr, %gossip_addr, %ops_addr, "peer started");
        Ok(Node {
            registry,
            gossip,
            service_addr,
            gossip_addr,
            ops_addr,
            channels: ctx,
            db,
            stop,
            servers,
            heartbeat,
        })
    }

    /// Completes when a channel's commit path failed (storage): the peer must stop.
    pub async fn fatal(&self) -> String {
        self.registry.fatal.reported().await
    }

    /// Graceful stop, bounded by [`STOP_DRAIN`]: servers stop accepting and end every open
    /// call with `UNAVAILABLE` "node is stopping", background tasks stop, storage is fsynced.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        shared_proto::stopping::drain_servers(self.servers, STOP_DRAIN).await;
        runtime::stop_all(&self.channels);
        self.heartbeat.abort();
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
    ctx: &ChannelContext,
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
    let (registry, gossip) = (&ctx.registry, &ctx.gossip);
    let serve_err = |e: tonic::transport::Error| NodeError::Serve(e.to_string());
    let svc = PeerService::new(registry.clone());
    let message_max = service_message_bytes_max(registry);
    let (_, health) = tonic_health::server::health_reporter();
    // Client certificates required: every query is also signed and checked against Readers
    // (query.rs), but nothing is decoded for a caller without a certificate of the network.
    let tls_config = || {
        shared_proto::tls_server::server_config(tls, &ctx.trust, true)
            .map_err(|e| NodeError::Serve(e.to_string()))
    };
    let server = Server::builder()
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
        // Operators: joining a channel (a genesis block, so the same bound).
        .add_service(Stopping::new(
            ChannelParticipationServer::new(ParticipationService::new(ctx.clone()))
                .max_decoding_message_size(message_max),
            calls.clone(),
        ))
        .serve_with_incoming_shutdown(
            shared_proto::tls_server::incoming(listeners.service, tls_config()?),
            signal(stop),
        );
    let gossip_server = Server::builder()
        .add_service(Stopping::new(gossip.service(), calls))
        .serve_with_incoming_shutdown(
            shared_proto::tls_server::incoming(listeners.gossip, tls_config()?),
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
    let node = Node::start(&config, listeners, chaincodes).await?;
    let fatal = tokio::select! {
        () = shutdown => None,
        reason = node.fatal() => Some(reason),
    };
    let stopped = node.shutdown().await;
    match (fatal, stopped) {
        (None, stopped) => stopped,
        (Some(reason), Ok(())) => Err(NodeError::Fatal(reason)),
        // The failure that stopped the node usually breaks its shutdown too (a full disk
        // leaves the store poisoned): report the cause, not that follow-on error (as the
        // orderer does since follower_disk_full, seed 1).
        (Some(reason), Err(e)) => Err(NodeError::Fatal(format!(
            "{reason} (and stopping then failed: {e})"
        ))),
    }
}
