//! Test cluster: real orderer nodes in this process, each on its own tokio runtime (so a node
//! can be killed abruptly by dropping its runtime), over real TLS sockets bound on port 0, with
//! material from the generator in a temp dir. Clients speak gRPC over TLS like any client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod chain;
pub mod config;
pub mod links;
pub mod members;
pub mod processes;

pub use chain::tx_counts;
pub use chain::verify_chain;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
pub use links::Links;
use orderer::Listeners;
use orderer::Node;
use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope;
use shared_proto::material;
use shared_proto::material::ChannelSpec;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::material::OrdererOrgSpec;
use shared_proto::material::OrdererSpec;
use shared_proto::material::PeerOrgSpec;
use shared_proto::material::PeerSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Certificate;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

pub const CHANNEL: &str = "testchannel";

/// Node logs go to the test's captured output (threads inherit the capture), so a failing
/// test shows what its nodes said: membership changes and warnings (`RUST_LOG` overrides).
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,orderer::membership=info,openraft=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Settings a test may change before the cluster starts.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub orderers: usize,
    pub message_count_max: u32,
    pub batch_timeout_ms: u64,
    pub snapshot_interval_entries: u64,
    pub entries_kept_after_snapshot: u64,
    /// The channel's retry window (0: the default).
    pub retry_window_txs: u32,
    /// When set, every certificate expires this many seconds after the cluster starts
    /// (material issued almost a day ago, valid for one day); otherwise valid for 30 days.
    pub certificates_expire_in_secs: Option<i64>,
    /// More channels: (id, message_count_max, bootstrap). A bootstrap channel is in every
    /// node's config; the others only have a genesis block (`TestCluster::genesis_path`), to
    /// join at run time.
    pub extra_channels: Vec<(String, u32, bool)>,
    /// Generate the material and configs but start no node.
    pub no_start: bool,
    /// Orderers generated (material, configs) but neither started nor in the genesis
    /// consenters: nodes to add by config update. Their indexes follow the others'.
    pub spare_orderers: usize,
    /// What the orderers advertise and how they dial each other.
    pub links: Links,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            orderers: 3,
            message_count_max: 100,
            batch_timeout_ms: 50,
            snapshot_interval_entries: 5000,
            entries_kept_after_snapshot: 500,
            retry_window_txs: 0,
            certificates_expire_in_secs: None,
            spare_orderers: 0,
            extra_channels: Vec::new(),
            no_start: false,
            links: Links::Direct,
        }
    }
}

struct Ports {
    client: u16,
    cluster: u16,
    ops: u16,
}

fn free_listener() -> StdListener {
    StdListener::bind("127.0.0.1:0").unwrap()
}

/// Listeners bound while the cluster was planned, kept until their node first starts, so
/// parallel tests can never be handed the same port.
static RESERVED: std::sync::Mutex<BTreeMap<u16, StdListener>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The reserved listener for `port`, or a fresh bind (restarts).
async fn listen(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let reserved = RESERVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&port);
    match reserved {
        Some(l) => {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }
        None => tokio::net::TcpListener::bind(("127.0.0.1", port)).await,
    }
}

/// One orderer: its config, listeners kept bound while stopped, and its runtime while running.
pub struct TestNode {
    pub config: OrdererConfig,
    pub node: Option<Node>,
    runtime: Option<tokio::runtime::Runtime>,
    ports: (u16, u16, u16),
}

/// A cluster of orderers plus the material a client needs.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub generated: Generated,
    pub nodes: Vec<TestNode>,
    pub channel: Arc<Channel>,
    pub client: SigningIdentity,
    tls_ca: Vec<u8>,
    client_tls: Identity,
    /// The consenter entries of the spare orderers (`ClusterOptions::spare_orderers`).
    pub spare_consenters: Vec<shared_proto::pb::config::Consenter>,
    /// With [`Links::Forwarded`]: the forwarder of every directed link.
    pub links: Option<links::LinkForwarders>,
}

impl TestCluster {
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        init_test_logs();
        let dir = tempfile::tempdir()?;
        // Bind every port first so the genesis block can name them; keep them until start.
        let held: Vec<(StdListener, StdListener, StdListener)> = (0..opts.orderers
            + opts.spare_orderers)
            .map(|_| (free_listener(), free_listener(), free_listener()))
            .collect();
        let ports: Vec<Ports> = held
            .iter()
            .map(|(a, b, c)| Ports {
                client: a.local_addr().unwrap().port(),
                cluster: b.local_addr().unwrap().port(),
                ops: c.local_addr().unwrap().port(),
            })
            .collect();
        let spec = NetworkSpec {
            name: "test".into(),
            validity_days: if opts.certificates_expire_in_secs.is_some() {
                1
            } else {
                30
            },
            tls_key_algorithm: Default::default(),
            orderer_orgs: vec![OrdererOrgSpec {
                msp_id: "OrdererMSP".into(),
                orderers: ports
                    .iter()
                    .enumerate()
                    .map(|(i, p)| OrdererSpec {
                        name: format!("orderer{}", i + 1),
                        id: None,
                        host: opts.links.host(i),
                        port: p.client,
                        cluster_port: p.cluster,
                        ops_port: p.ops,
                    })
                    .collect(),
            }],
            peer_orgs: ["Org1MSP", "Org2MSP"]
                .iter()
                .map(|m| PeerOrgSpec {
                    msp_id: (*m).into(),
                    peers: vec![PeerSpec {
                        name: "peer0".into(),
                        host: "127.0.0.1".into(),
                        port: 1,
                        gossip_port: 2,
                        ops_port: 3,
                        orderer_connected: true,
                    }],
                    users: vec!["User1".into()],
                })
                .collect(),
            channels: std::iter::once((CHANNEL.to_owned(), opts.message_count_max))
                .chain(
                    opts.extra_channels
                        .iter()
                        .map(|(id, n, _)| (id.clone(), *n)),
                )
                .map(|(id, message_count_max)| ChannelSpec {
                    id,
                    orgs: None,
                    batch: material::BatchSpec {
                        message_count_max,
                        timeout_ms: opts.batch_timeout_ms,
                        retry_window_txs: opts.retry_window_txs,
                        ..Default::default()
                    },
                    policies: Default::default(),
                    chaincodes: vec![],
                })
                .collect(),
        };
        let issued = match opts.certificates_expire_in_secs {
            Some(secs) => now_unix() - 86_400 + secs,
            None => now_unix(),
        };
        let generated = material::generate(&spec, &dir.path().join("net"), issued)?;
        let spare_consenters = config::set_aside_spares(&generated, opts.orderers)?;
        let genesis = Block::decode(std::fs::read(&generated.channels[0].1)?.as_slice())?;
        let channel = Arc::new(Channel::from_config_block(&genesis)?);
        let user = generated.user("Org1MSP", "User1").context("user")?;
        let client = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key)?;
        let mut tls_ca = Vec::new();
        for ca in &generated.tls_ca_certs {
            tls_ca.extend(std::fs::read(ca)?);
        }
        let client_tls = Identity::from_pem(
            std::fs::read(&user.tls_cert)?,
            std::fs::read(&user.tls_key)?,
        );
        let mut nodes = Vec::new();
        for (node, p) in generated.orderers.iter().zip(&ports) {
            let mut config = OrdererConfig::load(&node.config)?;
            config.raft.heartbeat_interval_ms = 50;
            config.raft.election_timeout_min_ms = 400;
            config.raft.election_timeout_max_ms = 800;
            config.raft.snapshot_interval_entries = opts.snapshot_interval_entries;
            config.raft.entries_kept_after_snapshot = opts.entries_kept_after_snapshot;
            config.log.level = "warn".into();
            // Channels to join at run time are not in the node's config.
            for (id, _, bootstrap) in &opts.extra_channels {
                if !bootstrap {
                    let tail = std::path::Path::new(id).join("genesis.block");
                    config
                        .channels
                        .retain(|c| !c.genesis_block.ends_with(&tail));
                }
            }
            nodes.push(TestNode {
                config,
                node: None,
                runtime: None,
                ports: (p.client, p.cluster, p.ops),
            });
        }
        let links = match opts.links {
            Links::Forwarded => {
                let mut configs: Vec<OrdererConfig> =
                    nodes.iter().map(|n| n.config.clone()).collect();
                let hosts: Vec<String> = (0..nodes.len()).map(|i| opts.links.host(i)).collect();
                let ports: Vec<(u16, u16)> = ports.iter().map(|p| (p.client, p.cluster)).collect();
                let wired = links::LinkForwarders::wire(&mut configs, &hosts, &ports)?;
                for (n, c) in nodes.iter_mut().zip(configs) {
                    n.config = c;
                }
                Some(wired)
            }
            Links::Direct | Links::NamesOnly => None,
        };
        for n in &nodes {
            n.config.validate()?;
        }
        {
            let mut reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
            for (a, b, c) in held {
                for l in [a, b, c] {
                    reserved.insert(l.local_addr()?.port(), l);
                }
            }
        }
        let mut cluster = TestCluster {
            dir,
            generated,
            nodes,
            channel,
            client,
            tls_ca,
            client_tls,
            spare_consenters,
            links,
        };
        for i in 0..opts.orderers {
            if !opts.no_start {
                cluster.start_node(i)?;
            }
        }
        Ok(cluster)
    }

    /// Starts (or restarts) node `i` on its ports, retrying while its old storage lock or
    /// ports are still being released.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        // Runs on a plain thread: tests call this from inside their own async runtime.
        let n = &mut self.nodes[i];
        std::thread::scope(|s| s.spawn(|| start_on_thread(n, i)).join())
            .map_err(|_| anyhow::anyhow!("start thread panicked"))?
    }

    /// Kills node `i` abruptly: every task of its runtime is dropped mid-flight.
    pub fn kill_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        if let Some(rt) = n.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops node `i` gracefully.
    pub fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        if let (Some(node), Some(rt)) = (n.node.take(), n.runtime.take()) {
            std::thread::scope(|s| {
                s.spawn(move || {
                    let result = rt.block_on(node.shutdown());
                    rt.shutdown_timeout(Duration::from_secs(5));
                    result
                })
                .join()
            })
            .map_err(|_| anyhow::anyhow!("stop thread panicked"))??;
        }
        Ok(())
    }
}

fn start_on_thread(n: &mut TestNode, i: usize) -> anyhow::Result<()> {
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name(format!("orderer{}", i + 1))
                .build()?;
            let (c, k, o) = n.ports;
            let config = n.config.clone();
            let result = runtime.block_on(async move {
                let listeners = Listeners {
                    client: listen(c).await?,
                    cluster: listen(k).await?,
                    ops: listen(o).await?,
                };
                Node::start(&config, listeners)
                    .await
                    .map_err(anyhow::Error::from)
            });
            match result {
                Ok(node) => {
                    n.node = Some(node);
                    n.runtime = Some(runtime);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    runtime.shutdown_background();
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context(format!("starting orderer{}", i + 1))),
            }
        }
    }
}

impl TestCluster {
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].node.as_ref().expect("node running")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .collect()
    }

    /// Index of the node that currently leads, if any running node knows one.
    pub fn leader(&self) -> Option<usize> {
        for i in self.running() {
            let ch = self.node(i).registry.get(CHANNEL)?;
            if let Some(leader) = ch.leader() {
                let idx = leader as usize - 1;
                if self.nodes[idx].node.is_some() {
                    return Some(idx);
                }
            }
        }
        None
    }

    /// The index of the last Raft entry node `i` applied.
    pub fn last_applied_index(&self, i: usize) -> u64 {
        let ch = self.node(i).registry.get(CHANNEL).unwrap();
        let index = ch.status.borrow().last_applied_index;
        index.unwrap()
    }

    pub fn height(&self, i: usize) -> u64 {
        self.node(i).registry.get(CHANNEL).unwrap().store.height()
    }

    /// Waits until every running node holds every block it has cut and nothing is pending,
    /// all at the same height.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut heights = Vec::new();
            let mut quiet = true;
            for i in self.running() {
                let ch = self.node(i).registry.get(CHANNEL).unwrap();
                let st = ch.status.borrow().clone();
                quiet &= st.pending == 0 && ch.store.height() == st.next_block;
                heights.push(ch.store.height());
            }
            if quiet && heights.windows(2).all(|w| w[0] == w[1]) {
                return Ok(heights[0]);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not converged: heights {heights:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].ports.0)
    }

    pub fn cluster_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].ports.1)
    }

    pub fn ops_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].ports.2)
    }

    pub fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.tls_ca.clone()))
            .identity(self.client_tls.clone())
            .domain_name("127.0.0.1")
    }

    pub fn tls_ca(&self) -> Vec<u8> {
        self.tls_ca.clone()
    }

    /// A gRPC client for node `i` (connects lazily, so it survives the node restarting).
    pub fn client(&self, i: usize) -> AtomicBroadcastClient<GrpcChannel> {
        let channel = Endpoint::from_shared(format!("https://{}", self.client_addr(i)))
            .unwrap()
            .tls_config(self.tls())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        AtomicBroadcastClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A signed transaction envelope with a recognisable body.
    pub fn envelope(&self, body: &[u8]) -> Envelope {
        envelope::create_signed_envelope(
            &self.client,
            HeaderType::EndorserTransaction,
            CHANNEL,
            body.to_vec(),
            envelope::new_nonce(),
            now_unix() as u64 * 1000,
        )
    }

    /// Submits `env` until it is ordered, to the nodes of `to` in turn, as a client retries a
    /// retryable refusal (ALREADY_EXISTS on a retry means an earlier attempt was ordered).
    /// Returns its tx id; panics if it is not ordered within 90 s.
    pub async fn submit_until_ordered(&self, to: &[usize], env: &Envelope) -> String {
        let tx_id = orderer::block_store::tx_id_of(&env.encode_to_vec()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        for k in 0.. {
            let mut request = tonic::Request::new(env.clone());
            request.set_timeout(Duration::from_secs(15));
            match self.client(to[k % to.len()]).submit(request).await {
                Ok(_) => return tx_id,
                Err(s) if s.code() == tonic::Code::AlreadyExists => return tx_id,
                Err(s) => assert!(Instant::now() < deadline, "never ordered: {s}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

pub fn data_dir(cluster: &TestCluster, i: usize) -> PathBuf {
    cluster.nodes[i].config.data_dir.clone()
}
