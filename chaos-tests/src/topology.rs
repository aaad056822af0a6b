//! The dev network's topology (also the e2e benchmark's): orderers, orgs of peers of which
//! the first `connected_peers_per_org` may pull from the orderers and the rest are
//! gossip-only, one channel with the `token` (AND of every org's peer) and `kv` chaincodes.

use std::path::PathBuf;

use anyhow::Context as _;

use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;

use crate::launcher::Kind;

/// The channel every dev network has.
pub const CHANNEL: &str = "mychannel";

/// Sizes and ports of a dev network.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub orderers: usize,
    pub orgs: usize,
    pub peers_per_org: usize,
    pub connected_peers_per_org: usize,
    pub batch_size: u32,
    pub batch_timeout_ms: u64,
    /// First port; nodes use consecutive ports from here.
    pub base_port: u16,
}

impl Topology {
    /// The network spec: ports consecutive from `base_port`.
    pub fn spec(&self) -> anyhow::Result<NetworkSpec> {
        let mut port = self.base_port;
        self.spec_from(move || {
            let p = port;
            port = port.checked_add(1).unwrap_or(port);
            Ok(p)
        })
    }

    /// The network spec with the nodes' ports taken in order from `ports` (three per node:
    /// orderers first, then peers org by org), e.g. ports held from the OS.
    pub fn spec_with_ports(&self, ports: &[u16]) -> anyhow::Result<NetworkSpec> {
        let mut it = ports.iter().copied();
        self.spec_from(move || it.next().context("fewer ports than the topology needs"))
    }

    fn spec_from(
        &self,
        mut next: impl FnMut() -> anyhow::Result<u16>,
    ) -> anyhow::Result<NetworkSpec> {
        anyhow::ensure!(
            (1..=self.peers_per_org).contains(&self.connected_peers_per_org),
            "--connected-peers-per-org must be within 1..=--peers-per-org ({}), got {}",
            self.peers_per_org,
            self.connected_peers_per_org
        );
        let mut text = format!(
            "name = \"{}\"\n[[orderer_orgs]]\nmsp_id = \"OrdererMSP\"\n",
            self.name
        );
        for i in 1..=self.orderers {
            text += &format!(
                "[[orderer_orgs.orderers]]\nname = \"orderer{i}\"\nport = {}\ncluster_port = {}\nops_port = {}\n",
                next()?,
                next()?,
                next()?
            );
        }
        let mut orgs = Vec::new();
        for org in 1..=self.orgs {
            orgs.push(format!("'Org{org}MSP.peer'"));
            text += &format!("[[peer_orgs]]\nmsp_id = \"Org{org}MSP\"\nusers = [\"User1\"]\n");
            for p in 0..self.peers_per_org {
                text += &format!(
                    "[[peer_orgs.peers]]\nname = \"peer{p}\"\nport = {}\ngossip_port = {}\nops_port = {}\norderer_connected = {}\n",
                    next()?,
                    next()?,
                    next()?,
                    p < self.connected_peers_per_org
                );
            }
        }
        text += &format!(
            "[[channels]]\nid = \"{CHANNEL}\"\n[channels.batch]\nmessage_count_max = {}\ntimeout_ms = {}\n\
             [[channels.chaincodes]]\nname = \"token\"\nendorsement_policy = \"AND({})\"\n\
             [[channels.chaincodes]]\nname = \"kv\"\n",
            self.batch_size,
            self.batch_timeout_ms,
            orgs.join(", ")
        );
        Ok(NetworkSpec::from_toml(&text)?)
    }
}

/// One node of a generated network as the launcher sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub kind: Kind,
    pub config: PathBuf,
    /// host:port of the ops endpoint.
    pub ops: String,
    /// Every port the node binds; the first is its service port.
    pub ports: Vec<u16>,
}

/// Every node of `g`: orderers first, then peers org by org.
pub fn nodes(g: &Generated) -> Vec<NodeView> {
    let mut out = Vec::new();
    for (n, s) in g
        .orderers
        .iter()
        .zip(g.spec.orderer_orgs.iter().flat_map(|o| &o.orderers))
    {
        out.push(NodeView {
            name: n.name.clone(),
            kind: Kind::Orderer,
            config: n.config.clone(),
            ops: format!("{}:{}", s.host, s.ops_port),
            ports: vec![s.port, s.cluster_port, s.ops_port],
        });
    }
    let peers = g
        .spec
        .peer_orgs
        .iter()
        .flat_map(|o| o.peers.iter().map(move |p| (o, p)));
    for (n, (o, s)) in g.peers.iter().zip(peers) {
        out.push(NodeView {
            name: format!("{}/{}", o.msp_id, n.name),
            kind: Kind::Peer,
            config: n.config.clone(),
            ops: format!("{}:{}", s.host, s.ops_port),
            ports: vec![s.port, s.ops_port, s.gossip_port],
        });
    }
    out
}
