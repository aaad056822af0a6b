//! The in-process backend: orderers and peers started in this process through the library's
//! startup (`orderer::Node::start`, `peer::Node::start`, what the binaries' `run` calls), each
//! on a tokio runtime of its own (2 worker threads, as a 2-core node would have), over real TLS
//! sockets.
//!
//! ```text
//! spec with port 0 ──▶ Ports::assign (each port bound on port 0 and held) ──▶ material
//!      ──▶ configs loaded, edited by the caller ──▶ InProcessNode per node
//!      start: takes its held listeners (a restart binds its addresses again)
//!      kill:  drops its runtime where it stands (a crash: no shutdown path runs)
//!      stop:  Node::shutdown (servers drained, storage fsynced)
//! ```
//!
//! A node can be started from inside a runtime: its runtime is built on a plain thread.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::node_config::PeerConfig;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;

use super::handle::Addresses;
use super::handle::NodeHandle;
use super::State;
use crate::launcher::Kind;

/// How long a start retries while a killed predecessor still holds the node's storage lock or
/// ports (its runtime's tasks are dropped in the background).
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a graceful stop waits for the runtime's tasks after `Node::shutdown`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Addresses bound on port 0 and held until a node (or a proxy) takes them, keyed `ip:port`.
#[derive(Debug, Default)]
pub struct Ports {
    held: BTreeMap<String, StdListener>,
}

impl Ports {
    /// Binds a free port on `ip` and holds it.
    pub fn take(&mut self, ip: &str) -> anyhow::Result<u16> {
        let l = StdListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let port = l.local_addr()?.port();
        self.held.insert(format!("{ip}:{port}"), l);
        Ok(port)
    }

    /// The listener held for `addr`, handed over (it is no longer held here).
    pub fn remove(&mut self, addr: &str) -> Option<StdListener> {
        self.held.remove(addr)
    }

    /// Gives every node of `spec` whose port is 0 a held port on its host.
    pub fn assign(&mut self, spec: &mut NetworkSpec) -> anyhow::Result<()> {
        for o in spec.orderer_orgs.iter_mut().flat_map(|g| &mut g.orderers) {
            for port in [&mut o.port, &mut o.cluster_port, &mut o.ops_port] {
                if *port == 0 {
                    *port = self.take(&o.host)?;
                }
            }
        }
        for p in spec.peer_orgs.iter_mut().flat_map(|g| &mut g.peers) {
            for port in [&mut p.port, &mut p.gossip_port, &mut p.ops_port] {
                if *port == 0 {
                    *port = self.take(&p.host)?;
                }
            }
        }
        Ok(())
    }
}

/// Raft timings for clusters on one box in tests: a 50 ms heartbeat, elections after
/// 400-800 ms (a leader's loss is noticed in under a second; the defaults take 500-1000 ms).
pub fn test_raft_timings(config: &mut OrdererConfig) {
    config.raft.heartbeat_interval_ms = 50;
    config.raft.election_timeout_min_ms = 400;
    config.raft.election_timeout_max_ms = 800;
}

/// A node's config, which says its kind.
#[derive(Debug, Clone)]
pub enum Config {
    Orderer(Box<OrdererConfig>),
    Peer(Box<PeerConfig>),
}

impl Config {
    fn listen_addresses(&self) -> [&str; 3] {
        match self {
            Config::Orderer(c) => [
                &c.listen_address,
                &c.cluster_listen_address,
                &c.ops_listen_address,
            ],
            Config::Peer(c) => [
                &c.listen_address,
                &c.gossip_listen_address,
                &c.ops_listen_address,
            ],
        }
    }
}

/// A started node of either kind.
pub enum Running {
    Orderer(orderer::Node),
    Peer(peer::Node),
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Running::Orderer(_) => "Running::Orderer",
            Running::Peer(_) => "Running::Peer",
        })
    }
}

/// One orderer or peer in this process.
pub struct InProcessNode {
    name: String,
    /// Its config; edits take effect at its next start.
    pub config: Config,
    /// Listeners held for its addresses until its first start.
    held: BTreeMap<String, StdListener>,
    node: Option<Running>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Builds a peer's chaincodes at every start.
    chaincodes: fn() -> peer::chaincode::ChaincodeRegistry,
}

impl std::fmt::Debug for InProcessNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessNode")
            .field("name", &self.name)
            .field("running", &self.node.is_some())
            .finish_non_exhaustive()
    }
}

impl InProcessNode {
    /// A stopped node; the listeners for its addresses held in `ports` move into it.
    pub fn new(name: &str, config: Config, ports: &mut Ports) -> Self {
        let held = config
            .listen_addresses()
            .iter()
            .filter_map(|a| Some(((*a).to_owned(), ports.remove(a)?)))
            .collect();
        InProcessNode {
            name: name.to_owned(),
            config,
            held,
            node: None,
            runtime: None,
            chaincodes: peer::chaincode::ChaincodeRegistry::with_samples,
        }
    }

    /// The peer's chaincodes at its next starts (the samples by default).
    pub fn set_chaincodes(&mut self, chaincodes: fn() -> peer::chaincode::ChaincodeRegistry) {
        self.chaincodes = chaincodes;
    }

    /// The running node.
    pub fn running(&self) -> Option<&Running> {
        self.node.as_ref()
    }

    /// The running orderer.
    pub fn orderer(&self) -> Option<&orderer::Node> {
        match self.node.as_ref()? {
            Running::Orderer(n) => Some(n),
            Running::Peer(_) => None,
        }
    }

    /// The running peer.
    pub fn peer(&self) -> Option<&peer::Node> {
        match self.node.as_ref()? {
            Running::Peer(n) => Some(n),
            Running::Orderer(_) => None,
        }
    }

    /// Stops the node gracefully: `Node::shutdown` (on a plain thread: the caller may be
    /// inside a runtime), then the runtime's tasks get [`STOP_GRACE`] to end. Fails with what
    /// the shutdown reported.
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        let (Some(node), Some(rt)) = (self.node.take(), self.runtime.take()) else {
            return Ok(());
        };
        let name = &self.name;
        std::thread::scope(|s| {
            s.spawn(move || {
                let stopped = match node {
                    Running::Orderer(n) => rt.block_on(n.shutdown()).map_err(anyhow::Error::from),
                    Running::Peer(n) => rt.block_on(n.shutdown()).map_err(anyhow::Error::from),
                };
                rt.shutdown_timeout(STOP_GRACE);
                stopped.with_context(|| format!("{name}: stopping"))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread stopping {name} panicked"))?
        })
    }

    fn listener(&mut self, addr: &str) -> Option<StdListener> {
        self.held.remove(addr)
    }

    /// Starts the node on a fresh runtime built on a plain thread, retrying until
    /// [`START_DEADLINE`] while a killed predecessor still holds its storage or ports.
    fn start_on_thread(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node.is_none(), "{} is already running", self.name);
        let config = self.config.clone();
        let chaincodes = self.chaincodes;
        let mut held: Vec<Option<StdListener>> = config
            .listen_addresses()
            .iter()
            .map(|a| self.listener(a))
            .collect();
        let name = self.name.clone();
        let (runtime, node) = std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = Instant::now() + START_DEADLINE;
                loop {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .thread_name(name.replace('/', "-"))
                        .build()?;
                    let taken: Vec<Option<StdListener>> =
                        held.iter_mut().map(Option::take).collect();
                    match rt.block_on(start_node(&config, taken, chaincodes)) {
                        Ok(node) => return Ok((rt, node)),
                        Err(e) if Instant::now() < deadline => {
                            rt.shutdown_background();
                            drop(e);
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => {
                            rt.shutdown_background();
                            return Err(e.context(format!("starting {name}")));
                        }
                    }
                }
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread starting {name} panicked"))?
        })?;
        self.node = Some(node);
        self.runtime = Some(runtime);
        Ok(())
    }
}

/// A tokio listener from the held one, or a fresh bind of `addr` (a restart).
async fn listen(addr: &str, held: Option<StdListener>) -> anyhow::Result<tokio::net::TcpListener> {
    match held {
        Some(l) => {
            l.set_nonblocking(true)?;
            Ok(tokio::net::TcpListener::from_std(l)?)
        }
        None => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}")),
    }
}

async fn start_node(
    config: &Config,
    held: Vec<Option<StdListener>>,
    chaincodes: fn() -> peer::chaincode::ChaincodeRegistry,
) -> anyhow::Result<Running> {
    let [a, b, c] = config.listen_addresses();
    let mut held = held.into_iter();
    let a = listen(a, held.next().flatten()).await?;
    let b = listen(b, held.next().flatten()).await?;
    let c = listen(c, held.next().flatten()).await?;
    Ok(match config {
        Config::Orderer(config) => {
            let listeners = orderer::Listeners {
                client: a,
                cluster: b,
                ops: c,
            };
            Running::Orderer(orderer::Node::start(config, listeners).await?)
        }
        Config::Peer(config) => {
            let listeners = peer::Listeners {
                service: a,
                gossip: b,
                ops: c,
            };
            Running::Peer(peer::Node::start(config, listeners, chaincodes()).await?)
        }
    })
}

impl NodeHandle for InProcessNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        match self.config {
            Config::Orderer(_) => Kind::Orderer,
            Config::Peer(_) => Kind::Peer,
        }
    }

    fn state(&mut self) -> State {
        if self.node.is_some() {
            State::Running
        } else {
            State::Stopped
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.start_on_thread()
    }

    /// Drops every task of the node mid-flight.
    fn kill(&mut self) {
        self.node = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// [`InProcessNode::shutdown`]; a failure is printed.
    fn stop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("{e:#}");
        }
    }

    fn pause(&mut self) -> anyhow::Result<()> {
        anyhow::bail!(
            "{}: the in-process backend cannot pause a node (use the process backend)",
            self.name
        )
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        anyhow::bail!("{}: the in-process backend cannot pause a node", self.name)
    }

    fn addresses(&self) -> Addresses {
        let [service, internal, ops] = self.config.listen_addresses().map(str::to_owned);
        Addresses {
            service,
            internal,
            ops,
        }
    }

    fn data_dir(&self) -> &Path {
        match &self.config {
            Config::Orderer(c) => &c.data_dir,
            Config::Peer(c) => &c.data_dir,
        }
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network of in-process nodes: orderers first, then peers org by org (the generator's
/// order).
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub generated: Generated,
    pub nodes: Vec<InProcessNode>,
    /// Addresses held but taken by no node (e.g. for proxies in front of a node).
    pub ports: Ports,
}

impl Cluster {
    /// Generates `spec` in `dir/net`, every port 0 of it given a port held from the OS
    /// (`ports` may already hold addresses `edit` gives nodes), lets `edit` change each loaded
    /// config, and creates the nodes. Nothing runs yet: [`Cluster::start_all`].
    pub fn create(
        spec: NetworkSpec,
        dir: &Path,
        ports: Ports,
        edit: impl FnMut(&mut Config) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        Self::create_at(spec, dir, ports, now_unix(), edit)
    }

    /// [`Cluster::create`] with the material issued at `issued` (Unix seconds), e.g. in the
    /// past for certificates about to expire.
    pub fn create_at(
        mut spec: NetworkSpec,
        dir: &Path,
        mut ports: Ports,
        issued: i64,
        mut edit: impl FnMut(&mut Config) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        ports.assign(&mut spec)?;
        let generated = shared_proto::material::generate(&spec, &dir.join("net"), issued)
            .context("generating the cluster's material")?;
        let mut nodes = Vec::new();
        for o in &generated.orderers {
            let config = OrdererConfig::load(&o.config)
                .with_context(|| format!("loading {}", o.config.display()))?;
            let mut config = Config::Orderer(Box::new(config));
            edit(&mut config)?;
            nodes.push(InProcessNode::new(&o.name, config, &mut ports));
        }
        let peer_names = spec.peer_orgs.iter().flat_map(|o| {
            o.peers
                .iter()
                .map(move |p| format!("{}/{}", o.msp_id, p.name))
        });
        for (p, name) in generated.peers.iter().zip(peer_names) {
            let config = PeerConfig::load(&p.config)
                .with_context(|| format!("loading {}", p.config.display()))?;
            let mut config = Config::Peer(Box::new(config));
            edit(&mut config)?;
            nodes.push(InProcessNode::new(&name, config, &mut ports));
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            generated,
            nodes,
            ports,
        })
    }

    /// Starts every stopped node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            if n.node.is_none() {
                n.start()?;
            }
        }
        Ok(())
    }

    /// The node named `name` (`orderer1`, `Org1MSP/peer0`).
    pub fn node(&mut self, name: &str) -> anyhow::Result<&mut InProcessNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    /// The orderers, in order.
    pub fn orderers(&self) -> impl Iterator<Item = &InProcessNode> {
        self.nodes.iter().filter(|n| n.kind() == Kind::Orderer)
    }

    /// The orderer leading `channel` as the running orderers agree on it, if they do.
    pub fn leader(&self, channel: &str) -> Option<String> {
        let mut seen = None;
        for n in self.orderers() {
            let Some(id) = n
                .orderer()
                .and_then(|o| o.registry.get(channel))
                .and_then(|ch| ch.leader())
            else {
                continue;
            };
            match seen {
                None => seen = Some(id),
                Some(prev) if prev == id => {}
                Some(_) => return None,
            }
        }
        let index = usize::try_from(seen?).ok()?.checked_sub(1)?;
        self.orderers()
            .nth(index)
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
    }

    /// Waits for a running leader of `channel` the running orderers agree on.
    pub async fn wait_leader(&self, channel: &str, deadline: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(l) = self.leader(channel) {
                return Ok(l);
            }
            anyhow::ensure!(
                Instant::now() < end,
                "no agreed leader of {channel} within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The signing identity of user `user` of `msp`.
    pub fn identity(&self, msp: &str, user: &str) -> anyhow::Result<SigningIdentity> {
        let u = self
            .generated
            .user(msp, user)
            .with_context(|| format!("no user {msp} {user}"))?;
        Ok(SigningIdentity::from_pem_files(msp, &u.cert, &u.key)?)
    }

    /// The client TLS config of user `user` of `msp`, trusting every org's TLS CA.
    pub fn client_tls(&self, msp: &str, user: &str) -> anyhow::Result<ClientTlsConfig> {
        let u = self
            .generated
            .user(msp, user)
            .with_context(|| format!("no user {msp} {user}"))?;
        let mut ca = Vec::new();
        for path in &self.generated.tls_ca_certs {
            ca.extend(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
        }
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(
                std::fs::read(&u.tls_cert)?,
                std::fs::read(&u.tls_key)?,
            ))
            .domain_name("127.0.0.1"))
    }

    /// Stops every node gracefully, peers first.
    pub fn stop_all(&mut self) {
        for n in self.nodes.iter_mut().rev() {
            n.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().rev() {
            n.kill();
        }
    }
}

fn now_unix() -> i64 {
    super::now_unix()
}

#[cfg(test)]
#[path = "inprocess_tests.rs"]
mod tests;
