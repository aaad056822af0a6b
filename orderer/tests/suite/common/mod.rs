//! Test cluster: real orderer nodes in this process on the chaos harness's in-process backend
//! ([`chaos_tests::harness::inprocess`]): each on its own tokio runtime (so a node can be killed
//! abruptly by dropping its runtime), over real TLS sockets on ports bound on port 0 and held
//! until the node takes them, with material from the generator in a temp dir. Clients speak
//! gRPC over TLS like any client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod chain;
pub mod config;
pub mod links;
pub mod members;
pub mod processes;

pub use chain::tx_counts;
pub use chain::verify_chain;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::harness::inprocess;
use chaos_tests::harness::inprocess::InProcessNode;
use chaos_tests::harness::NodeHandle as _;
pub use links::Links;
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

/// One orderer: the config of its next start, and the harness node that runs it.
pub struct TestNode {
    pub config: OrdererConfig,
    inner: InProcessNode,
    /// Client, cluster and ops ports (on 127.0.0.1).
    ports: (u16, u16, u16),
}

impl TestNode {
    /// The running node.
    pub fn node(&self) -> Option<&Node> {
        self.inner.orderer()
    }
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
        // Bind every port first (on 127.0.0.1, whatever host a node advertises) so the genesis
        // block can name them; the harness holds them until their node takes them.
        let mut held = inprocess::Ports::default();
        let mut ports: Vec<(u16, u16, u16)> = Vec::new();
        for _ in 0..opts.orderers + opts.spare_orderers {
            ports.push((
                held.take("127.0.0.1")?,
                held.take("127.0.0.1")?,
                held.take("127.0.0.1")?,
            ));
        }
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
                        port: p.0,
                        cluster_port: p.1,
                        ops_port: p.2,
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
        let mut configs = Vec::new();
        let mut harness =
            inprocess::Cluster::create_at(spec, dir.path(), held, issued, |config| {
                if let inprocess::Config::Orderer(c) = config {
                    configs.push(orderer_config(c, &opts));
                    **c = configs[configs.len() - 1].clone();
                }
                Ok(())
            })?;
        let generated = harness.generated.clone();
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
        let inner: Vec<InProcessNode> = harness.nodes.drain(..ports.len()).collect();
        let mut nodes: Vec<TestNode> = inner
            .into_iter()
            .zip(configs)
            .zip(&ports)
            .map(|((inner, config), p)| TestNode {
                config,
                inner,
                ports: *p,
            })
            .collect();
        let links = match opts.links {
            Links::Forwarded => {
                let mut configs: Vec<OrdererConfig> =
                    nodes.iter().map(|n| n.config.clone()).collect();
                let hosts: Vec<String> = (0..nodes.len()).map(|i| opts.links.host(i)).collect();
                let ports: Vec<(u16, u16)> = ports.iter().map(|p| (p.0, p.1)).collect();
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

    /// Starts (or restarts) node `i` with `nodes[i].config` on its ports, retrying while its
    /// old storage lock or ports are still being released.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        n.inner.config = inprocess::Config::Orderer(Box::new(n.config.clone()));
        n.inner.start()
    }

    /// Kills node `i` abruptly: every task of its runtime is dropped mid-flight.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].inner.kill();
    }

    /// Stops node `i` gracefully.
    pub fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].inner.shutdown()
    }
}

/// Node config with the tests' Raft timings and `opts`' snapshot settings; it listens on
/// 127.0.0.1 (where its ports are held) whatever host it advertises.
fn orderer_config(c: &OrdererConfig, opts: &ClusterOptions) -> OrdererConfig {
    let mut config = c.clone();
    chaos_tests::harness::inprocess::test_raft_timings(&mut config);
    config.raft.snapshot_interval_entries = opts.snapshot_interval_entries;
    config.raft.entries_kept_after_snapshot = opts.entries_kept_after_snapshot;
    config.log.level = "warn".into();
    for addr in [
        &mut config.listen_address,
        &mut config.cluster_listen_address,
        &mut config.ops_listen_address,
    ] {
        if let Some((_, port)) = addr.rsplit_once(':') {
            *addr = format!("127.0.0.1:{port}");
        }
    }
    // Channels to join at run time are not in the node's config.
    for (id, _, bootstrap) in &opts.extra_channels {
        if !bootstrap {
            let tail = std::path::Path::new(id).join("genesis.block");
            config
                .channels
                .retain(|c| !c.genesis_block.ends_with(&tail));
        }
    }
    config
}

impl TestCluster {
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].node().expect("node running")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node().is_some())
            .collect()
    }

    /// Index of the node that currently leads, if any running node knows one.
    pub fn leader(&self) -> Option<usize> {
        for i in self.running() {
            let ch = self.node(i).registry.get(CHANNEL)?;
            if let Some(leader) = ch.leader() {
                let idx = leader as usize - 1;
                if self.nodes[idx].node().is_some() {
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
    /// Nodes die before their temp dir goes.
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

pub fn data_dir(cluster: &TestCluster, i: usize) -> PathBuf {
    cluster.nodes[i].config.data_dir.clone()
}
