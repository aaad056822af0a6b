//! Network faults without root: every node-to-node link goes through a harness-owned TCP proxy
//! per directed link ([`link::Link`]), and each node's `address_overrides` sends its
//! connections through its own proxies. Links: orderer → orderer (cluster and client ports),
//! peer → orderer (client port), peer → peer (gossip port). Clients of the workload dial the
//! nodes directly.
//!
//! Fault shapes act on node names: [`Net::isolate`], [`Net::split`], [`Net::bridge`],
//! [`Net::one_way`], [`Net::delay`], [`Net::reset`], [`Net::cut_between`]; [`Net::heal`]
//! passes everything again.

pub mod link;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;

use shared_proto::node_config::AddressOverride;

pub use link::Fault;
pub use link::Link;

use crate::launcher::Kind;
use crate::topology::NodeView;

/// The proxies of a cluster.
#[derive(Debug, Default)]
pub struct Net {
    links: Vec<Arc<Link>>,
}

/// What a node listens on that another may dial: (address, kinds of nodes that dial it).
fn dialled(view: &NodeView) -> Vec<(String, &'static [Kind])> {
    let at = |port: u16| format!("127.0.0.1:{port}");
    match view.kind {
        // ports: client, cluster, ops
        Kind::Orderer => vec![
            (at(view.ports[0]), &[Kind::Orderer, Kind::Peer][..]),
            (at(view.ports[1]), &[Kind::Orderer][..]),
        ],
        // ports: service, ops, gossip
        Kind::Peer => vec![(at(view.ports[2]), &[Kind::Peer][..])],
    }
}

impl Net {
    /// Starts a proxy for every directed link between `nodes` and returns each node's
    /// `address_overrides`.
    pub async fn start(
        nodes: &[NodeView],
        seed: u64,
    ) -> anyhow::Result<(Net, BTreeMap<String, Vec<AddressOverride>>)> {
        let mut net = Net::default();
        let mut overrides: BTreeMap<String, Vec<AddressOverride>> = BTreeMap::new();
        let mut n = 0u64;
        for target in nodes {
            for (address, dialled_by) in dialled(target) {
                for from in nodes
                    .iter()
                    .filter(|f| f.name != target.name && dialled_by.contains(&f.kind))
                {
                    n += 1;
                    let link =
                        Link::start(&from.name, &target.name, &address, seed ^ (n << 32)).await?;
                    overrides
                        .entry(from.name.clone())
                        .or_default()
                        .push(AddressOverride {
                            from: address.clone(),
                            to: link.listen.to_string(),
                        });
                    net.links.push(link);
                }
            }
        }
        Ok((net, overrides))
    }

    pub fn links(&self) -> &[Arc<Link>] {
        &self.links
    }

    fn set_where(&self, fault: Fault, pick: impl Fn(&Link) -> bool) {
        for l in self.links.iter().filter(|l| pick(l)) {
            l.set(fault);
        }
    }

    /// Nothing passes to or from `node`.
    pub fn isolate(&self, node: &str) {
        self.set_where(Fault::HOLD, |l| l.from == node || l.to == node);
    }

    /// Nothing passes between nodes of different groups (nodes in no group are untouched).
    pub fn split(&self, groups: &[Vec<String>]) {
        let group_of = |name: &str| groups.iter().position(|g| g.iter().any(|n| n == name));
        self.set_where(
            Fault::HOLD,
            |l| matches!((group_of(&l.from), group_of(&l.to)), (Some(a), Some(b)) if a != b),
        );
    }

    /// `a` and `b` cannot talk; `bridge` (in neither) talks to both.
    pub fn bridge(&self, a: &[String], b: &[String]) {
        self.split(&[a.to_vec(), b.to_vec()]);
    }

    /// Bytes from `from` to `to` are held, on connections either of them opened; the other
    /// direction passes.
    pub fn one_way(&self, from: &str, to: &str) {
        self.set_where(
            Fault {
                hold_forward: true,
                ..Fault::PASS
            },
            |l| l.from == from && l.to == to,
        );
        self.set_where(
            Fault {
                hold_backward: true,
                ..Fault::PASS
            },
            |l| l.from == to && l.to == from,
        );
    }

    /// Every link touching `node` delays each chunk by `latency_ms` plus up to `jitter_ms`.
    pub fn delay(&self, node: &str, latency_ms: u64, jitter_ms: u64) {
        self.set_where(
            Fault {
                delay_ms: latency_ms,
                jitter_ms,
                ..Fault::PASS
            },
            |l| l.from == node || l.to == node,
        );
    }

    /// Closes every connection touching `node` and refuses new ones until [`Net::heal`] (or
    /// [`Net::allow`] for just these links).
    pub fn reset(&self, node: &str) {
        self.set_where(
            Fault {
                refuse: true,
                ..Fault::PASS
            },
            |l| l.from == node || l.to == node,
        );
    }

    /// Lets traffic touching `node` pass again.
    pub fn allow(&self, node: &str) {
        self.set_where(Fault::PASS, |l| l.from == node || l.to == node);
    }

    /// Nothing passes between `node` and any of `others`.
    pub fn cut_between(&self, node: &str, others: &BTreeSet<String>) {
        self.set_where(Fault::HOLD, |l| {
            (l.from == node && others.contains(&l.to)) || (l.to == node && others.contains(&l.from))
        });
    }

    /// Every link passes everything again.
    pub fn heal(&self) {
        self.set_where(Fault::PASS, |_| true);
    }

    /// Bytes carried from `from` to `to` on links `from` opened (forward) and `to` opened
    /// (backward).
    pub fn bytes_between(&self, from: &str, to: &str) -> u64 {
        self.links
            .iter()
            .map(|l| {
                let (fwd, back) = l.bytes();
                if l.from == from && l.to == to {
                    fwd
                } else if l.from == to && l.to == from {
                    back
                } else {
                    0
                }
            })
            .sum()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for l in &self.links {
            l.close();
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
