//! Network faults without root (chaos harness, issue 12): every node-to-node link goes through
//! a harness-owned TCP proxy per directed link ([`Link`]), and each node's
//! `address_overrides` send its connections through its own proxies.
//!
//! ```text
//! node A ──dials advertised B:port──▶ override ──▶ Link(A→B, purpose) 127.0.0.1:P ──▶ B:port
//!                                                   Mode: Pass | Blackhole | Reset |
//!                                                         OneWayLoss | Delay
//! ```
//!
//! Links: orderer → orderer (cluster and client ports), peer → orderer (client port),
//! peer → peer (gossip port); clients of the workload dial the nodes directly. [`Net`] keys the
//! links by (from, to, [`Purpose`]), hands out each node's overrides, and applies fault shapes
//! by node names (shapes.rs): [`Net::isolate`], [`Net::split`], [`Net::bridge`],
//! [`Net::one_way`], [`Net::delay`], [`Net::reset`], [`Net::cut_between`], and [`Net::heal`].
//! A blackhole "held until the others snapshot past the victim" is an isolate held longer: the
//! scenario decides when to heal.
//!
//! Deterministic: the only randomness (delay jitter) comes from the caller's seed, per link
//! from (seed, from, to, purpose) and per connection from its accept order.
//!
//! Only `nodes.rs` knows this crate's topology; the rest needs tokio, rand and shared-proto,
//! so it can replace the orderer's and the peer's test forwarders if moved to a crate they
//! can use.

mod conn;
pub mod link;
pub mod mode;
mod nodes;
mod shapes;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use shared_proto::node_config::AddressOverride;
use tokio::runtime::Handle;

pub use link::Link;
pub use link::LinkSpec;
pub use link::LinkStats;
pub use link::Purpose;
pub use mode::Direction;
pub use mode::Mode;
pub use nodes::link_specs;
pub use shapes::Nodes;

/// (from, to, purpose).
pub type LinkKey = (String, String, Purpose);

/// The proxies of a network. Dropping it closes every link.
#[derive(Debug)]
pub struct Net {
    seed: u64,
    runtime: Handle,
    links: BTreeMap<LinkKey, Arc<Link>>,
}

impl Net {
    /// An empty set of links whose tasks run on `runtime`.
    pub fn new(seed: u64, runtime: Handle) -> Self {
        Net {
            seed,
            runtime,
            links: BTreeMap::new(),
        }
    }

    /// Adds a link listening on 127.0.0.1 port 0.
    pub fn add(&mut self, spec: LinkSpec) -> anyhow::Result<Arc<Link>> {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a link's port")?;
        self.add_on(spec, listener)
    }

    /// Adds a link listening on `listener` (bound by the caller, e.g. held from the OS).
    pub fn add_on(
        &mut self,
        spec: LinkSpec,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<Arc<Link>> {
        let key = (spec.from.clone(), spec.to.clone(), spec.purpose);
        anyhow::ensure!(
            !self.links.contains_key(&key),
            "link {} → {} ({}) exists already",
            key.0,
            key.1,
            key.2.as_str()
        );
        let seed = link_seed(self.seed, &key);
        let link = Link::spawn(spec, listener, seed, &self.runtime)
            .with_context(|| format!("starting link {} → {}", key.0, key.1))?;
        self.links.insert(key, link.clone());
        Ok(link)
    }

    pub fn link(&self, from: &str, to: &str, purpose: Purpose) -> Option<&Arc<Link>> {
        self.links.get(&(from.to_owned(), to.to_owned(), purpose))
    }

    /// Every link, by (from, to, purpose).
    pub fn links(&self) -> impl Iterator<Item = &Arc<Link>> {
        self.links.values()
    }

    /// `node`'s `address_overrides`: each address it dials through a link, to that link.
    pub fn overrides(&self, node: &str) -> Vec<AddressOverride> {
        self.links()
            .filter(|l| l.spec.from == node)
            .map(|l| AddressOverride {
                from: l.spec.advertised.clone(),
                to: l.listen.to_string(),
            })
            .collect()
    }

    /// Every dialling node's `address_overrides`.
    pub fn all_overrides(&self) -> BTreeMap<String, Vec<AddressOverride>> {
        let mut all: BTreeMap<String, Vec<AddressOverride>> = BTreeMap::new();
        for l in self.links() {
            all.entry(l.spec.from.clone())
                .or_default()
                .push(AddressOverride {
                    from: l.spec.advertised.clone(),
                    to: l.listen.to_string(),
                });
        }
        all
    }

    /// Sets `mode` on every link `pick` chooses; returns how many.
    pub fn set_where(&self, mode: Mode, pick: impl Fn(&LinkSpec) -> bool) -> usize {
        let mut n = 0;
        for l in self.links().filter(|l| pick(&l.spec)) {
            l.set(mode);
            n += 1;
        }
        n
    }

    /// Bytes carried from `from` to `to`: forward on links `from` dialled, backward on links
    /// `to` dialled.
    pub fn bytes_between(&self, from: &str, to: &str) -> u64 {
        self.links()
            .map(|l| {
                let s = l.stats();
                if l.spec.from == from && l.spec.to == to {
                    s.bytes_forward
                } else if l.spec.from == to && l.spec.to == from {
                    s.bytes_backward
                } else {
                    0
                }
            })
            .sum()
    }

    /// Closes every link: ports closed, connections reset.
    pub fn close(&self) {
        for l in self.links() {
            l.close();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.close();
    }
}

/// A link's seed: from the network's seed and the link's key, not from the order links were
/// added in.
fn link_seed(seed: u64, (from, to, purpose): &LinkKey) -> u64 {
    let mut h = splitmix64(seed);
    for part in [from.as_str(), to.as_str(), purpose.as_str()] {
        h = splitmix64(h ^ fnv1a(part.as_bytes()));
    }
    h
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function: a well-mixed u64 from any u64.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
#[path = "link_tests.rs"]
mod link_tests;

#[cfg(test)]
#[path = "net_tests.rs"]
mod net_tests;
