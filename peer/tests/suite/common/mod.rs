//! Test network: 3 orderers and peers of two orgs, each node in this process on its own tokio
//! runtime (so it can be killed abruptly), over real TLS sockets bound on port 0, with material
//! from the generator. Applications use the SDK like any client.
//!
//! With [`Topology::gossip_proxies`], every peer gets its own loopback address (127.0.0.x) and
//! its gossip endpoint is a [`proxy::Proxy`] in front of its gossip listener, so a test can cut
//! a peer off from its org (inbound refused, its outbound connections refused by the others'
//! proxies by source address) and heal it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;
pub mod workload;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::time::Duration;
use std::time::Instant;

use peer::chaincode::ChaincodeRegistry;
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

/// Addresses bound by this process and kept bound until their node takes them over, so
/// parallel tests can never be handed the same port. Keyed by `ip:port` (tests with gossip
/// proxies give each peer its own loopback address, where port numbers repeat).
static RESERVED: std::sync::Mutex<BTreeMap<String, StdListener>> =
    std::sync::Mutex::new(BTreeMap::new());

/// A free port on 127.0.0.1, kept bound by this process until a node takes it.
pub fn port() -> u16 {
    port_on("127.0.0.1")
}

fn port_on(ip: &str) -> u16 {
    let l = StdListener::bind(format!("{ip}:0")).unwrap();
    let p = l.local_addr().unwrap().port();
    RESERVED.lock().unwrap().insert(format!("{ip}:{p}"), l);
    p
}

fn take_reserved(addr: &str) -> Option<StdListener> {
    RESERVED.lock().unwrap().remove(addr)
}

/// Byte-counting forwarders ([`proxy::Proxy`]) to `targets`, each on a fresh 127.0.0.1 port
/// (`Proxy::listen`), for a node's `address_overrides` to name.
pub fn forwarders(targets: &[String]) -> anyhow::Result<proxy::Proxies> {
    let list = targets
        .iter()
        .map(|t| proxy::Proxy::new(&format!("127.0.0.1:{}", port()), t))
        .collect();
    proxy::Proxies::start(list, take_reserved)
}

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

/// A node of either kind running on its own runtime.
pub struct Running<N> {
    pub node: Option<N>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl<N> Running<N> {
    fn stopped() -> Self {
        Running {
            node: None,
            runtime: None,
        }
    }

    /// Drops every task of the node mid-flight (a crash).
    pub fn kill(&mut self) {
        self.node = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts a node on a fresh runtime on a plain thread (callers may be inside a runtime),
/// retrying while a killed predecessor still holds its storage lock or ports.
fn start_on_thread<N: Send + 'static, F, Fut>(
    slot: &mut Running<N>,
    name: String,
    start: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = anyhow::Result<N>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .thread_name(name.clone())
                    .build()?;
                match rt.block_on(start()) {
                    Ok(node) => {
                        slot.node = Some(node);
                        slot.runtime = Some(rt);
                        return Ok(());
                    }
                    Err(e) if Instant::now() < deadline => {
                        rt.shutdown_background();
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e.context(format!("starting {name}"))),
                }
            }
        })
        .join()
        .map_err(|_| anyhow::anyhow!("start thread panicked"))?
    })
}

pub struct TestNet {
    pub proxies: proxy::Proxies,
    pub dir: tempfile::TempDir,
    pub generated: Generated,
    pub orderer_configs: Vec<OrdererConfig>,
    pub peer_configs: Vec<PeerConfig>,
    pub orderers: Vec<Running<orderer::Node>>,
    pub peers: Vec<Running<peer::Node>>,
}

/// Which peers each org has: `true` for a peer configured to connect to the orderers, `false`
/// for a gossip-only peer.
#[derive(Debug, Clone)]
pub struct Topology {
    pub org1: Vec<bool>,
    pub org2: Vec<bool>,
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
        let orderers = (1..=3)
            .map(|i| OrdererSpec {
                name: format!("orderer{i}"),
                id: None,
                host: "127.0.0.1".into(),
                port: port(),
                cluster_port: port(),
                ops_port: port(),
            })
            .collect();
        let mut next_host = 20u8;
        let mut peer_org = |msp: &str, peers: &[bool]| PeerOrgSpec {
            msp_id: msp.into(),
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, connected)| {
                    let host = if topology.gossip_proxies {
                        next_host += 1;
                        format!("127.0.0.{next_host}")
                    } else {
                        "127.0.0.1".to_owned()
                    };
                    PeerSpec {
                        name: format!("peer{i}"),
                        port: port_on(&host),
                        gossip_port: port_on(&host),
                        ops_port: port_on(&host),
                        host,
                        orderer_connected: *connected,
                    }
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
        let generated = material::generate(&spec, &dir.path().join("net"), now_unix())?;
        let mut orderer_configs = Vec::new();
        for o in &generated.orderers {
            let mut c = OrdererConfig::load(&o.config)?;
            c.raft.heartbeat_interval_ms = 50;
            c.raft.election_timeout_min_ms = 400;
            c.raft.election_timeout_max_ms = 800;
            c.log.level = "warn".into();
            orderer_configs.push(c);
        }
        let mut peer_configs = Vec::new();
        let mut proxies = Vec::new();
        for p in &generated.peers {
            let mut c = PeerConfig::load(&p.config)?;
            c.gossip.heartbeat_ms = 200;
            c.gossip.alive_expiry_ms = 1000;
            c.gossip.pull_interval_ms = 200;
            c.log.level = "warn".into();
            c.channels.retain(|b| {
                b.genesis_block.parent().and_then(|d| d.file_name()) != Some(JOINABLE.as_ref())
            });
            if topology.gossip_proxies {
                // Peers reach this one through its proxy (the endpoint); it listens behind it.
                let ip = shared_proto::tls::host_of(&c.gossip.external_endpoint).to_owned();
                let real = format!("{ip}:{}", port_on(&ip));
                proxies.push(proxy::Proxy::new(&c.gossip.external_endpoint, &real));
                c.gossip_listen_address = real;
            }
            peer_configs.push(c);
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
        let proxy_rt = proxy::Proxies::start(proxies, take_reserved)?;
        let mut net = TestNet {
            proxies: proxy_rt,
            dir,
            generated,
            orderers: orderer_configs.iter().map(|_| Running::stopped()).collect(),
            peers: peer_configs.iter().map(|_| Running::stopped()).collect(),
            orderer_configs,
            peer_configs,
        };
        for i in 0..net.orderers.len() {
            net.start_orderer(i)?;
        }
        for i in 0..net.peers.len() {
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

    pub fn start_orderer(&mut self, i: usize) -> anyhow::Result<()> {
        let config = self.orderer_configs[i].clone();
        start_on_thread(&mut self.orderers[i], format!("orderer{i}"), || {
            let config = config.clone();
            async move {
                let listeners = orderer::Listeners {
                    client: listen(&config.listen_address).await?,
                    cluster: listen(&config.cluster_listen_address).await?,
                    ops: listen(&config.ops_listen_address).await?,
                };
                Ok(orderer::Node::start(&config, listeners).await?)
            }
        })
    }

    pub fn start_peer(&mut self, i: usize) -> anyhow::Result<()> {
        let config = self.peer_configs[i].clone();
        start_on_thread(&mut self.peers[i], format!("peer{i}"), || {
            let config = config.clone();
            async move {
                let listeners = peer::Listeners {
                    service: listen(&config.listen_address).await?,
                    gossip: listen(&config.gossip_listen_address).await?,
                    ops: listen(&config.ops_listen_address).await?,
                };
                Ok(
                    peer::Node::start(&config, listeners, ChaincodeRegistry::with_samples())
                        .await?,
                )
            }
        })
    }

    pub fn peer(&self, i: usize) -> &peer::Node {
        self.peers[i].node.as_ref().expect("peer running")
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
        (0..self.peers.len())
            .filter(|i| self.peers[*i].node.is_some())
            .collect()
    }

    /// Cuts peer `i` off from gossip: its proxy refuses everyone, and every other proxy
    /// refuses connections from its address.
    pub fn partition_peer(&self, i: usize) {
        let ip = self.peer_ip(i);
        for (j, p) in self.proxies.list.iter().enumerate() {
            if j == i {
                p.isolate(true);
            } else {
                p.block(ip, true);
            }
        }
    }

    pub fn heal_peer(&self, i: usize) {
        let ip = self.peer_ip(i);
        for (j, p) in self.proxies.list.iter().enumerate() {
            if j == i {
                p.isolate(false);
            } else {
                p.block(ip, false);
            }
        }
    }

    fn peer_ip(&self, i: usize) -> std::net::IpAddr {
        shared_proto::tls::host_of(&self.peer_configs[i].gossip.external_endpoint)
            .parse()
            .unwrap()
    }

    /// Waits until every running peer is at `height` at least.
    pub async fn wait_peers_at(&self, height: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let heights: Vec<u64> = (0..self.peers.len())
                .filter(|i| self.peers[*i].node.is_some())
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
        self.orderers
            .iter()
            .filter_map(|o| o.node.as_ref())
            .map(|n| n.registry.get(CHANNEL).unwrap().store.height())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for p in &mut self.peers {
            p.kill();
        }
        for o in &mut self.orderers {
            o.kill();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
