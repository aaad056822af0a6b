//! How the test orderers reach each other ([`Links`]). With [`Links::Forwarded`], every
//! directed link has its own proxy (`chaos_tests::net`) that counts the bytes it carries, and
//! each node's `address_overrides` send its connections through its own links, so a test can
//! tell which links carried traffic.

use chaos_tests::net::LinkSpec;
use chaos_tests::net::Net;
use chaos_tests::net::Purpose;
use shared_proto::node_config::OrdererConfig;

/// What orderers advertise in the genesis config and how they dial it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Links {
    /// Advertise 127.0.0.1:port and dial it.
    #[default]
    Direct,
    /// Advertise `orderer{n}.weft.invalid:port` (`.invalid` never resolves, RFC 6761) and
    /// dial every advertised address, cluster and client ports, through a forwarder per
    /// directed link named in `address_overrides`.
    Forwarded,
    /// Advertise the same unresolvable names, with no overrides.
    NamesOnly,
}

impl Links {
    /// The host orderer `i` (0-based) advertises; its TLS certificate names it.
    pub fn host(self, i: usize) -> String {
        match self {
            Links::Direct => "127.0.0.1".into(),
            Links::Forwarded | Links::NamesOnly => format!("orderer{}.weft.invalid", i + 1),
        }
    }
}

/// The links of [`Links::Forwarded`] (`chaos_tests::net`): one per (from, to) node pair and
/// port, on a runtime of their own (they outlive the nodes a test kills).
pub struct LinkForwarders {
    net: Net,
    rt: Option<tokio::runtime::Runtime>,
}

/// Node `i`'s (0-based) name on the links.
fn name(i: usize) -> String {
    format!("orderer{}", i + 1)
}

impl LinkForwarders {
    /// Starts a link for every directed link to each node's `(client, cluster)` port and sets
    /// every node's `address_overrides` through its own links.
    pub fn wire(
        configs: &mut [OrdererConfig],
        hosts: &[String],
        ports: &[(u16, u16)],
    ) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("links")
            .build()?;
        let mut net = Net::new(1, rt.handle().clone());
        for (from, config) in configs.iter_mut().enumerate() {
            for (to, (host, (client_port, cluster_port))) in hosts.iter().zip(ports).enumerate() {
                for (port, purpose) in [
                    (cluster_port, Purpose::Cluster),
                    (client_port, Purpose::Client),
                ] {
                    net.add(LinkSpec {
                        from: name(from),
                        to: name(to),
                        purpose,
                        advertised: format!("{host}:{port}"),
                        target: format!("127.0.0.1:{port}"),
                    })?;
                }
            }
            config.address_overrides = net.overrides(&name(from));
        }
        Ok(LinkForwarders { net, rt: Some(rt) })
    }

    fn bytes(&self, from: usize, to: usize, purpose: Purpose) -> u64 {
        self.net
            .link(&name(from), &name(to), purpose)
            .map_or(0, |l| l.stats().bytes())
    }

    /// Bytes node `from` exchanged with node `to`'s cluster port.
    pub fn cluster_bytes(&self, from: usize, to: usize) -> u64 {
        self.bytes(from, to, Purpose::Cluster)
    }

    /// Bytes node `from` exchanged with node `to`'s client port (catch-up's Deliver).
    pub fn client_bytes(&self, from: usize, to: usize) -> u64 {
        self.bytes(from, to, Purpose::Client)
    }
}

impl Drop for LinkForwarders {
    fn drop(&mut self) {
        self.net.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
