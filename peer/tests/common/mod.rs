//! Test network: 3 orderers and peers of two orgs, each node in this process on its own tokio
//! runtime (so it can be killed abruptly), over real TLS sockets bound on port 0, with material
//! from the generator. Applications use the SDK like any client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Ports bound by this process and kept bound until their node takes them over, so parallel
/// tests can never be handed the same port.
static RESERVED: std::sync::Mutex<BTreeMap<u16, StdListener>> =
    std::sync::Mutex::new(BTreeMap::new());

fn port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    RESERVED.lock().unwrap().insert(p, l);
    p
}

/// The reserved listener for `addr`'s port as a tokio listener, or a fresh bind (restarts).
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0);
    let reserved = RESERVED.lock().unwrap().remove(&port);
    match reserved {
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
    pub dir: tempfile::TempDir,
    pub generated: Generated,
    pub orderer_configs: Vec<OrdererConfig>,
    pub peer_configs: Vec<PeerConfig>,
    pub orderers: Vec<Running<orderer::Node>>,
    pub peers: Vec<Running<peer::Node>>,
}

impl TestNet {
    /// 3 orderers; one peer in each of Org1MSP and Org2MSP; channel with `token`
    /// (AND of both orgs' peers) and `kv` (MAJORITY Endorsement).
    pub fn start() -> anyhow::Result<Self> {
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
        let peer_org = |msp: &str| PeerOrgSpec {
            msp_id: msp.into(),
            peers: vec![PeerSpec {
                name: "peer0".into(),
                host: "127.0.0.1".into(),
                port: port(),
                gossip_port: port(),
                ops_port: port(),
                orderer_connected: true,
            }],
            users: vec!["User1".into()],
        };
        let spec = NetworkSpec {
            name: "e2e".into(),
            validity_days: 30,
            orderer_orgs: vec![OrdererOrgSpec {
                msp_id: "OrdererMSP".into(),
                orderers,
            }],
            peer_orgs: vec![peer_org("Org1MSP"), peer_org("Org2MSP")],
            channels: vec![ChannelSpec {
                id: CHANNEL.into(),
                orgs: None,
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
        for p in &generated.peers {
            peer_configs.push(PeerConfig::load(&p.config)?);
        }
        let mut net = TestNet {
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
            net.start_peer(i)?;
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
        self.peer(i).registry.get(CHANNEL).unwrap().ledger.clone()
    }

    pub fn gateway(&self, msp: &str) -> Gateway {
        Gateway::from_network(&self.generated, msp, "User1", CHANNEL).unwrap()
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
