//! Test network: 3 orderers and peers of two orgs on the chaos harness's in-process backend
//! ([`chaos_tests::harness::inprocess`]): each node in this process on its own tokio runtime
//! (so it can be killed abruptly), over real TLS sockets on ports bound on port 0 and held until
//! the node takes them, with material from the generator. Applications use the SDK like any
//! client.
//!
//! With [`Topology::gossip_proxies`], every peer dials every other peer's gossip endpoint
//! through a link of its own ([`links::Links`], `chaos_tests::net`, named in its
//! `address_overrides`), so a test can cut a peer off from its org (every link to or from it
//! resets its connections and refuses new ones) and heal it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod links;
pub mod workload;

use std::net::TcpListener as StdListener;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::harness::inprocess::Cluster;
use chaos_tests::harness::inprocess::Config;
use chaos_tests::harness::inprocess::Ports;
use chaos_tests::harness::NodeHandle as _;
use chaos_tests::net::Purpose;
use peer::sdk::Gateway;
use shared_proto::material;
use shared_proto::material::ChaincodeSpec;
use shared_proto::material::ChannelSpec;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::material::OrdererOrgSpec;
use shared_proto::material::OrdererSpec;
use shared_proto::material::PeerOrgSpec;
use shared_proto::material::PeerSpec;
use shared_proto::node_config::OrdererConfig;
use shared_proto::node_config::PeerConfig;

pub const CHANNEL: &str = "e2echannel";
/// The channel of [`Topology::joinable_channel`].
pub const JOINABLE: &str = "joinchannel";

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Addresses bound on port 0 by this process and kept bound until their node takes them over,
/// so parallel tests can never be handed the same port (for tests that build networks of their
/// own; [`TestNet`]'s ports are its harness cluster's).
static RESERVED: std::sync::LazyLock<std::sync::Mutex<Ports>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(Ports::default()));

/// A free port on 127.0.0.1, kept bound by this process until a node takes it.
pub fn port() -> u16 {
    port_on("127.0.0.1")
}

fn port_on(ip: &str) -> u16 {
    RESERVED.lock().unwrap().take(ip).unwrap()
}

fn take_reserved(addr: &str) -> Option<StdListener> {
    RESERVED.lock().unwrap().remove(addr)
}

pub use links::forwarders;

/// The reserved listener for `addr` as a tokio listener, or a fresh bind (restarts).
pub async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    match take_reserved(addr) {
        Some(l) => {
            l.set_nonblocking(true)?;
            Ok(tokio::net::TcpListener::from_std(l)?)
        }
        None => Ok(tokio::net::TcpListener::bind(addr).await?),
    }
}

pub struct TestNet {
    /// Every peer → peer gossip link ([`Topology::gossip_proxies`]); closed first on drop.
    pub links: Option<links::Links>,
    /// The nodes: orderers, then peers in `peer_configs` order.
    pub cluster: Cluster,
    pub generated: Generated,
    /// The configs of the nodes' next starts.
    pub orderer_configs: Vec<OrdererConfig>,
    pub peer_configs: Vec<PeerConfig>,
    pub dir: tempfile::TempDir,
}

/// Which peers each org has: `true` for a peer configured to connect to the orderers, `false`
/// for a gossip-only peer.
#[derive(Debug, Clone)]
pub struct Topology {
    pub org1: Vec<bool>,
    pub org2: Vec<bool>,
    /// Every peer dials every other's gossip through a link the test can cut
    /// ([`TestNet::partition_peer`]).
    pub gossip_proxies: bool,
    /// Peers (msp, name) not started with the network (tests start them later).
    pub hold_back: Vec<(&'static str, &'static str)>,
    /// Adds [`OUTSIDER_MSP`]: an org with a user and no peers, in the network (its TLS CA is
    /// trusted by every node) but not in the channel.
    pub outsider_org: bool,
    /// The outsider org's peers (`true`: orderer-connected); its material and configs exist,
    /// list them in `hold_back` to start them later.
    pub outsider_peers: Vec<bool>,
    /// Peers (msp, name) in no other peer's `gossip.bootstrap` list: they join by dialling
    /// the others (a peer added to a running org).
    pub newcomers: Vec<(&'static str, &'static str)>,
    /// Adds [`JOINABLE`], a second channel like [`CHANNEL`] (same orgs and chaincodes), which
    /// the orderers serve from their start but no peer's config names: peers join it at run
    /// time.
    pub joinable_channel: bool,
}

/// The org of [`Topology::outsider_org`].
pub const OUTSIDER_MSP: &str = "Org3MSP";

impl Default for Topology {
    fn default() -> Self {
        Topology {
            org1: vec![true],
            org2: vec![true],
            gossip_proxies: false,
            hold_back: Vec::new(),
            outsider_org: false,
            outsider_peers: Vec::new(),
            newcomers: Vec::new(),
            joinable_channel: false,
        }
    }
}

impl TestNet {
    /// 3 orderers; one peer in each of Org1MSP and Org2MSP; channel with `token`
    /// (AND of both orgs' peers) and `kv` (MAJORITY Endorsement).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Topology::default())
    }

    pub fn start_with(topology: Topology) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // Port 0: the harness binds each and holds it until its node takes it.
        let orderers = (1..=3)
            .map(|i| OrdererSpec {
                name: format!("orderer{i}"),
                id: None,
                host: "127.0.0.1".into(),
                port: 0,
                cluster_port: 0,
                ops_port: 0,
            })
            .collect();
        let peer_org = |msp: &str, peers: &[bool]| PeerOrgSpec {
            msp_id: msp.into(),
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, connected)| PeerSpec {
                    name: format!("peer{i}"),
                    port: 0,
                    gossip_port: 0,
                    ops_port: 0,
                    host: "127.0.0.1".into(),
                    orderer_connected: *connected,
                })
                .collect(),
            users: vec!["User1".into()],
        };
        let mut peer_orgs = vec![
            peer_org("Org1MSP", &topology.org1),
            peer_org("Org2MSP", &topology.org2),
        ];
        if topology.outsider_org {
            peer_orgs.push(peer_org(OUTSIDER_MSP, &topology.outsider_peers));
        }
        let spec = NetworkSpec {
            name: "e2e".into(),
            validity_days: 30,
            tls_key_algorithm: Default::default(),
            orderer_orgs: vec![OrdererOrgSpec {
                msp_id: "OrdererMSP".into(),
                orderers,
            }],
            peer_orgs,
            channels: vec![ChannelSpec {
                id: CHANNEL.into(),
                orgs: Some(vec!["Org1MSP".into(), "Org2MSP".into()]),
                batch: material::BatchSpec {
                    message_count_max: 100,
                    timeout_ms: 50,
                    ..Default::default()
                },
                policies: Default::default(),
                chaincodes: vec![
                    ChaincodeSpec {
                        name: "token".into(),
                        version: "1.0".into(),
                        endorsement_policy: "AND('Org1MSP.peer', 'Org2MSP.peer')".into(),
                    },
                    ChaincodeSpec {
                        name: "kv".into(),
                        version: "1.0".into(),
                        endorsement_policy: "MAJORITY Endorsement".into(),
                    },
                ],
            }],
        };
        let mut spec = spec;
        if topology.joinable_channel {
            let mut joinable = spec.channels[0].clone();
            joinable.id = JOINABLE.into();
            spec.channels.push(joinable);
        }
        let mut cluster = Cluster::create(spec, dir.path(), Ports::default(), |config| {
            match config {
                Config::Orderer(c) => {
                    chaos_tests::harness::inprocess::test_raft_timings(c);
                    c.log.level = "warn".into();
                }
                Config::Peer(c) => {
                    c.gossip.heartbeat_ms = 200;
                    c.gossip.alive_expiry_ms = 1000;
                    c.gossip.pull_interval_ms = 200;
                    c.log.level = "warn".into();
                    c.channels.retain(|b| {
                        b.genesis_block.parent().and_then(|d| d.file_name())
                            != Some(JOINABLE.as_ref())
                    });
                }
            }
            Ok(())
        })?;
        let mut orderer_configs = Vec::new();
        let mut peer_configs = Vec::new();
        let mut names = Vec::new();
        for n in &mut cluster.nodes {
            match &n.config {
                Config::Orderer(c) => orderer_configs.push((**c).clone()),
                Config::Peer(c) => {
                    peer_configs.push((**c).clone());
                    names.push(n.name().to_owned());
                }
            }
        }
        let newcomer_endpoints: Vec<String> = peer_configs
            .iter()
            .filter(|c| {
                topology
                    .newcomers
                    .iter()
                    .any(|(msp, name)| c.msp_id == *msp && c.name == *name)
            })
            .map(|c| c.gossip.external_endpoint.clone())
            .collect();
        for c in &mut peer_configs {
            c.gossip
                .bootstrap
                .retain(|b| !newcomer_endpoints.contains(b));
        }
        let links = if topology.gossip_proxies {
            // Each peer dials every other's gossip endpoint through a link of its own.
            let mut links = links::Links::new()?;
            for (i, from) in names.iter().enumerate() {
                for (j, to) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                    let c = &peer_configs[j];
                    links.add(
                        from,
                        to,
                        Purpose::Gossip,
                        &c.gossip.external_endpoint,
                        &c.gossip_listen_address,
                    )?;
                }
            }
            for (c, name) in peer_configs.iter_mut().zip(&names) {
                c.address_overrides.extend(links.overrides(name));
            }
            Some(links)
        } else {
            None
        };
        let generated = cluster.generated.clone();
        let mut net = TestNet {
            links,
            cluster,
            generated,
            orderer_configs,
            peer_configs,
            dir,
        };
        for i in 0..net.orderer_configs.len() {
            net.start_orderer(i)?;
        }
        for i in 0..net.peer_configs.len() {
            let c = &net.peer_configs[i];
            if !topology
                .hold_back
                .iter()
                .any(|(msp, name)| c.msp_id == *msp && c.name == *name)
            {
                net.start_peer(i)?;
            }
        }
        Ok(net)
    }

    /// Starts orderer `i` with `orderer_configs[i]`.
    pub fn start_orderer(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.cluster.nodes[i];
        node.config = Config::Orderer(Box::new(self.orderer_configs[i].clone()));
        node.start()
    }

    /// Starts peer `i` with `peer_configs[i]`.
    pub fn start_peer(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.cluster.nodes[self.orderer_configs.len() + i];
        node.config = Config::Peer(Box::new(self.peer_configs[i].clone()));
        node.start()
    }

    /// Kills peer `i`: its runtime is dropped mid-flight (a crash).
    pub fn kill_peer(&mut self, i: usize) {
        self.cluster.nodes[self.orderer_configs.len() + i].kill();
    }

    pub fn peer_running(&self, i: usize) -> bool {
        self.cluster.nodes[self.orderer_configs.len() + i]
            .peer()
            .is_some()
    }

    /// Running orderer `i`.
    pub fn orderer(&self, i: usize) -> &orderer::Node {
        self.cluster.nodes[i].orderer().expect("orderer running")
    }

    pub fn orderers_running(&self) -> bool {
        (0..self.orderer_configs.len()).all(|i| self.cluster.nodes[i].orderer().is_some())
    }

    pub fn peer(&self, i: usize) -> &peer::Node {
        self.cluster.nodes[self.orderer_configs.len() + i]
            .peer()
            .expect("peer running")
    }

    pub fn ledger(&self, i: usize) -> peer::ledger::Ledger {
        self.ledger_of(i, CHANNEL)
    }

    /// Peer `i`'s ledger of `channel` (which it must have).
    pub fn ledger_of(&self, i: usize, channel: &str) -> peer::ledger::Ledger {
        self.peer(i).registry.get(channel).unwrap().ledger.clone()
    }

    pub fn gateway(&self, msp: &str) -> Gateway {
        Gateway::from_network(&self.generated, msp, "User1", CHANNEL).unwrap()
    }

    /// A gateway for peer `i`'s org User1 that endorses and evaluates on peer `i` alone.
    pub fn gateway_of_peer(&self, i: usize) -> Gateway {
        Gateway::from_network_with_endorsers(
            &self.generated,
            &self.peer_configs[i].msp_id,
            "User1",
            CHANNEL,
            &[self.peer(i).service_addr.to_string()],
        )
        .unwrap()
    }

    /// Index of peer `name` of org `msp` in `peers`.
    pub fn peer_index(&self, msp: &str, name: &str) -> usize {
        self.peer_configs
            .iter()
            .position(|c| c.msp_id == msp && c.name == name)
            .expect("peer exists")
    }

    /// Running peers' indices.
    pub fn running_peers(&self) -> Vec<usize> {
        (0..self.peer_configs.len())
            .filter(|i| self.peer_running(*i))
            .collect()
    }

    /// Cuts peer `i` off from gossip: every link to or from it resets its connections and
    /// refuses new ones.
    pub fn partition_peer(&self, i: usize) {
        let links = self.links.as_ref().expect("a network with gossip links");
        links.net.reset(self.peer_name(i));
    }

    pub fn heal_peer(&self, i: usize) {
        let links = self.links.as_ref().expect("a network with gossip links");
        links.net.allow(self.peer_name(i));
    }

    /// Peer `i`'s node name (`Org1MSP/peer0`).
    fn peer_name(&self, i: usize) -> &str {
        self.cluster.nodes[self.orderer_configs.len() + i].name()
    }

    /// Waits until every running peer is at `height` at least.
    pub async fn wait_peers_at(&self, height: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let heights: Vec<u64> = (0..self.peer_configs.len())
                .filter(|i| self.peer_running(*i))
                .map(|i| self.ledger(i).height())
                .collect();
            if heights.iter().all(|h| *h >= height) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "peers at {heights:?}, want {height}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The orderers' chain height (from the first running orderer).
    pub fn orderer_height(&self) -> u64 {
        self.cluster
            .orderers()
            .filter_map(|o| o.orderer())
            .map(|n| n.registry.get(CHANNEL).unwrap().store.height())
            .max()
            .unwrap_or(0)
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
