//! The links of a harness cluster ([`crate::topology::NodeView`]s): which node dials which
//! listener of which other node. Nodes advertise `127.0.0.1:port`, so the advertised address
//! and the target are the same; each node's overrides send it through its own link instead.

use std::collections::BTreeMap;

use shared_proto::node_config::AddressOverride;
use tokio::runtime::Handle;

use super::LinkSpec;
use super::Net;
use super::Purpose;
use crate::launcher::Kind;
use crate::topology::NodeView;

/// What `view` listens on that other nodes dial: (port, purpose, kinds of nodes that dial it).
fn dialled(view: &NodeView) -> Vec<(u16, Purpose, &'static [Kind])> {
    let port = |i: usize| view.ports.get(i).copied().unwrap_or_default();
    match view.kind {
        // ports: client, cluster, ops
        Kind::Orderer => vec![
            (port(0), Purpose::Client, &[Kind::Orderer, Kind::Peer][..]),
            (port(1), Purpose::Cluster, &[Kind::Orderer][..]),
        ],
        // ports: service, ops, gossip
        Kind::Peer => vec![(port(2), Purpose::Gossip, &[Kind::Peer][..])],
    }
}

/// Every directed link between `nodes`: orderer → orderer (client, cluster), peer → orderer
/// (client), peer → peer (gossip).
pub fn link_specs(nodes: &[NodeView]) -> Vec<LinkSpec> {
    let mut specs = Vec::new();
    for to in nodes {
        for (port, purpose, dialled_by) in dialled(to) {
            let address = format!("127.0.0.1:{port}");
            for from in nodes
                .iter()
                .filter(|f| f.name != to.name && dialled_by.contains(&f.kind))
            {
                specs.push(LinkSpec {
                    from: from.name.clone(),
                    to: to.name.clone(),
                    purpose,
                    advertised: address.clone(),
                    target: address.clone(),
                });
            }
        }
    }
    specs
}

impl Net {
    /// A link for every directed link between `nodes`, on `runtime`.
    pub fn for_nodes(nodes: &[NodeView], seed: u64, runtime: Handle) -> anyhow::Result<Net> {
        let mut net = Net::new(seed, runtime);
        for spec in link_specs(nodes) {
            net.add(spec)?;
        }
        Ok(net)
    }

    /// [`Net::for_nodes`] on the current runtime, with every node's `address_overrides`.
    pub async fn start(
        nodes: &[NodeView],
        seed: u64,
    ) -> anyhow::Result<(Net, BTreeMap<String, Vec<AddressOverride>>)> {
        let net = Net::for_nodes(nodes, seed, Handle::current())?;
        let overrides = net.all_overrides();
        Ok((net, overrides))
    }
}
