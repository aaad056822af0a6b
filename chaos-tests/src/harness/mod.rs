//! The cluster harness: a network of real node processes in a directory of its own, for the
//! chaos scenarios.
//!
//! ```text
//! Options ──▶ material (shared_proto::material, ports held from the OS: ports.rs)
//!         ──▶ node configs edited: Raft snapshot settings; address_overrides when the caller
//!             sets them (each node dials every other through its own proxy per directed link,
//!             crate::net)
//!         ──▶ Node (node.rs): `chaos node KIND --config FILE` per node; kill, pause, resume,
//!             stop, restart, wipe; restarted with a skewed clock (clock.rs, libfaketime) or
//!             with its data dir on a small tmpfs (disk.rs)
//! ```
//!
//! In-process nodes (inprocess.rs, [`inprocess::Cluster`]): each orderer or peer started by
//! the library's `Node::start` on a tokio runtime of its own, killed by dropping that runtime;
//! for crate tests and the ordering benchmark. Both kinds of node answer to [`NodeHandle`].
//!
//! With [`Backend::Docker`] each node is a container of the image instead (docker.rs), at an
//! address of its own on a Docker network of the cluster's, the same ports on every node.
//!
//! Promises: every wait has a deadline; dropping the cluster stops every process it started
//! (SIGTERM, then SIGKILL); a node's log is `DIR/logs/NAME.log`.

pub mod clock;
pub mod disk;
pub mod docker;
pub mod handle;
pub mod inprocess;
pub mod node;
pub mod ports;

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use shared_proto::material::Generated;
use shared_proto::node_config::AddressOverride;

pub use handle::Addresses;
pub use handle::NodeHandle;
pub use inprocess::InProcessNode;
pub use node::Node;
pub use node::State;
use ports::Reservation;

use crate::launcher::Kind;
use crate::topology::NodeView;
use crate::topology::Topology;

/// The shape of a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub orderers: usize,
    pub orgs: usize,
    pub peers_per_org: usize,
    pub connected_peers_per_org: usize,
    pub batch_size: u32,
    pub batch_timeout_ms: u64,
    /// Raft log entries between snapshots, and kept after one (small values let a node held
    /// away long enough need a snapshot to come back).
    pub snapshot_interval_entries: u64,
    pub entries_kept_after_snapshot: u64,
    pub backend: Backend,
}

/// What a node runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `chaos node KIND --config FILE`, a child process of the harness.
    Process,
    /// A container of `image` (`deploy/build-image.sh`) on a Docker network of the cluster's.
    Docker { image: String },
}

impl Default for Options {
    fn default() -> Self {
        Options {
            orderers: 3,
            orgs: 2,
            peers_per_org: 2,
            connected_peers_per_org: 1,
            batch_size: 100,
            batch_timeout_ms: 100,
            snapshot_interval_entries: 200,
            entries_kept_after_snapshot: 20,
            backend: Backend::Process,
        }
    }
}

/// A network of node processes.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub generated: Generated,
    pub nodes: Vec<Node>,
    exe: PathBuf,
    /// The docker backend's network (removed after the nodes' containers: declared last).
    docker_net: Option<docker::DockerNet>,
}

/// Ports per node: service, cluster or gossip, ops.
const PORTS_PER_NODE: usize = 3;

impl Cluster {
    /// Writes the material of `o` in `dir/net` (ports held from the OS) and sets the Raft
    /// snapshot settings in the orderers' configs. Nothing runs yet: [`Cluster::start_all`].
    pub fn create(o: &Options, dir: &Path, exe: &Path) -> anyhow::Result<Self> {
        let topology = Topology {
            name: "chaos".into(),
            orderers: o.orderers,
            orgs: o.orgs,
            peers_per_org: o.peers_per_org,
            connected_peers_per_org: o.connected_peers_per_org,
            batch_size: o.batch_size,
            batch_timeout_ms: o.batch_timeout_ms,
            base_port: 0,
        };
        let count = o.orderers + o.orgs * o.peers_per_org;
        std::fs::create_dir_all(dir)?;
        // A container mounts the run's directory at the same path: configs name absolute paths.
        let canonical;
        let dir = if matches!(o.backend, Backend::Docker { .. }) {
            canonical = dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?;
            canonical.as_path()
        } else {
            dir
        };
        let (mut held, docker_net, mut spec) = match &o.backend {
            Backend::Process => {
                let held = Reservation::take(count * PORTS_PER_NODE)?;
                let spec = topology.spec_with_ports(&held.ports())?;
                (held, None, spec)
            }
            Backend::Docker { .. } => {
                // Every node has an address of its own, so every node uses the same ports.
                let ports: Vec<u16> = (0..count).flat_map(|_| [7050, 7051, 7052]).collect();
                let net = docker::DockerNet::create(&docker_name(dir, "net"))?;
                (
                    Reservation::default(),
                    Some(net),
                    topology.spec_with_ports(&ports)?,
                )
            }
        };
        if let Some(net) = &docker_net {
            let hosts = spec
                .orderer_orgs
                .iter_mut()
                .flat_map(|o| o.orderers.iter_mut().map(|n| &mut n.host))
                .chain(
                    spec.peer_orgs
                        .iter_mut()
                        .flat_map(|o| o.peers.iter_mut().map(|n| &mut n.host)),
                );
            for (i, host) in hosts.enumerate() {
                *host = net.address(i);
            }
        }
        let generated = shared_proto::material::generate(&spec, &dir.join("net"), now_unix())
            .context("generating the cluster's material")?;
        let mut nodes = Vec::new();
        for (i, view) in crate::topology::nodes(&generated).into_iter().enumerate() {
            let data_dir = edit_config(&view, |table| {
                if view.kind == Kind::Orderer {
                    set_raft(table, o)?;
                }
                Ok(())
            })?;
            let log = dir
                .join("logs")
                .join(format!("{}.log", view.name.replace('/', "-")));
            let reserved = held.split_off_front(PORTS_PER_NODE);
            let mut node = Node::new(view, data_dir, log, reserved);
            node.set_exe(exe);
            if let (Some(net), Backend::Docker { image }) = (&docker_net, &o.backend) {
                let name = docker_name(dir, &node.view.name.replace('/', "-"));
                let container = docker::Container::create(
                    &name,
                    image,
                    net,
                    &net.address(i),
                    node.kind(),
                    &node.view.config,
                    dir,
                    &node.log,
                )?;
                node.set_container(container);
            }
            nodes.push(node);
        }
        if docker_net.is_some() {
            docker::give_to_image_user(dir)?;
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            generated,
            nodes,
            exe: exe.to_path_buf(),
            docker_net,
        })
    }

    /// Every node as the launcher sees it.
    pub fn views(&self) -> Vec<NodeView> {
        self.nodes.iter().map(|n| n.view.clone()).collect()
    }

    /// Writes each named node's `address_overrides` into its config (before it starts).
    pub fn set_address_overrides(
        &self,
        overrides: &BTreeMap<String, Vec<AddressOverride>>,
    ) -> anyhow::Result<()> {
        for n in &self.nodes {
            if let Some(list) = overrides.get(n.name()) {
                edit_config(&n.view, |table| {
                    let entries = list
                        .iter()
                        .map(|a| {
                            let mut t = toml::Table::new();
                            t.insert("from".into(), toml::Value::String(a.from.clone()));
                            t.insert("to".into(), toml::Value::String(a.to.clone()));
                            toml::Value::Table(t)
                        })
                        .collect();
                    table.insert("address_overrides".into(), toml::Value::Array(entries));
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Starts every node and waits until each answers `/readyz`.
    pub async fn start_all(&mut self, deadline: Duration) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.start(&self.exe)?;
        }
        self.wait_ready(deadline).await
    }

    /// The node named `name` (`orderer1`, `Org1MSP/peer0`).
    pub fn node(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .with_context(|| format!("no node {name}"))
    }

    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.kind() == kind)
            .map(|n| n.name().to_owned())
            .collect()
    }

    /// (Re)starts a stopped node.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let exe = self.exe.clone();
        self.node(name)?.start(&exe)
    }

    /// Waits until every running node answers `/readyz` with 200; fails naming the nodes that
    /// did not, or a node whose process exited on its own.
    pub async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        loop {
            let mut waiting = Vec::new();
            for n in &mut self.nodes {
                if let Some(status) = n.exited() {
                    anyhow::bail!(
                        "{} exited ({status}); see {}{}",
                        n.name(),
                        n.log.display(),
                        n.port_conflicts()
                    );
                }
                if n.state() == State::Running && !n.ready().await {
                    waiting.push(n.name().to_owned());
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < end,
                "not ready within {} s: {}",
                deadline.as_secs(),
                waiting.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The orderer leading `channel` as the running orderers agree on it, if they do.
    pub async fn leader(&self, channel: &str) -> Option<String> {
        let mut seen = None;
        for n in self.nodes.iter().filter(|n| n.kind() == Kind::Orderer) {
            let Ok(s) = n.status().await else { continue };
            let Some(id) = s["channels"][channel]["leader"].as_u64() else {
                continue;
            };
            match seen {
                None => seen = Some(id),
                Some(prev) if prev == id => {}
                Some(_) => return None,
            }
        }
        let id = seen?;
        self.generated
            .spec
            .orderer_orgs
            .iter()
            .flat_map(|o| &o.orderers)
            .nth(usize::try_from(id).ok()?.checked_sub(1)?)
            .map(|o| o.name.clone())
    }

    /// Waits for a leader the running orderers agree on.
    pub async fn wait_leader(&self, channel: &str, deadline: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(l) = self.leader(channel).await {
                return Ok(l);
            }
            anyhow::ensure!(
                Instant::now() < end,
                "no agreed leader of {channel} within {} s",
                deadline.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node (SIGCONT first for a paused one, then SIGTERM, SIGKILL after a grace).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        // Containers (with the nodes) go before their network.
        self.nodes.clear();
        drop(self.docker_net.take());
    }
}

/// A Docker object name of this cluster: unique per run directory and process.
fn docker_name(dir: &Path, what: &str) -> String {
    let run = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let run: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("weft-chaos-{}-{run}-{what}", std::process::id())
}

/// Edits a generated node config in place with `edit`; returns the node's data dir.
fn edit_config(
    view: &NodeView,
    edit: impl FnOnce(&mut toml::Table) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let path = &view.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    edit(&mut table)?;
    std::fs::write(path, toml::to_string(&table)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let data_dir = table
        .get("data_dir")
        .and_then(toml::Value::as_str)
        .context("node config without data_dir")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(dir.join(data_dir))
}

/// The orderer's Raft snapshot settings from `o`.
fn set_raft(table: &mut toml::Table, o: &Options) -> anyhow::Result<()> {
    let raft = table
        .entry("raft")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(raft) = raft.as_table_mut() {
        raft.insert(
            "snapshot_interval_entries".into(),
            toml::Value::Integer(i64::try_from(o.snapshot_interval_entries)?),
        );
        raft.insert(
            "entries_kept_after_snapshot".into(),
            toml::Value::Integer(i64::try_from(o.entries_kept_after_snapshot)?),
        );
    }
    Ok(())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
