//! Proxies of a test network, from the chaos harness ([`chaos_tests::net`]): one link per
//! directed peer → peer gossip connection (a test cuts a peer off from its org and heals it),
//! and forwarders that count the bytes they carry (for `address_overrides` entries and moved
//! orderer endpoints). Links run on a runtime of their own, so they outlive the test's.

use std::sync::Arc;

use chaos_tests::net::Link;
use chaos_tests::net::LinkSpec;
use chaos_tests::net::Net;
use chaos_tests::net::Purpose;
use shared_proto::node_config::AddressOverride;

/// A network of links on its own runtime. Dropping it closes every link.
pub struct Links {
    pub net: Net,
    rt: Option<tokio::runtime::Runtime>,
}

impl Links {
    pub fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("links")
            .build()?;
        Ok(Links {
            net: Net::new(1, rt.handle().clone()),
            rt: Some(rt),
        })
    }

    /// A link from `from` to `to` at `target`, which `from` knows as `advertised`.
    pub fn add(
        &mut self,
        from: &str,
        to: &str,
        purpose: Purpose,
        advertised: &str,
        target: &str,
    ) -> anyhow::Result<Arc<Link>> {
        self.net.add(LinkSpec {
            from: from.to_owned(),
            to: to.to_owned(),
            purpose,
            advertised: advertised.to_owned(),
            target: target.to_owned(),
        })
    }

    /// `node`'s `address_overrides`: every address it dials through one of its links.
    pub fn overrides(&self, node: &str) -> Vec<AddressOverride> {
        self.net.overrides(node)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.net.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A forwarder: a link a test names in a node's config.
#[derive(Clone)]
pub struct Forwarder {
    /// Where it listens (`127.0.0.1:port`).
    pub listen: String,
    link: Arc<Link>,
}

impl Forwarder {
    /// Bytes carried so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.link.stats().bytes()
    }
}

/// Forwarders to the targets of a test, in order.
pub struct Forwarders {
    pub list: Vec<Forwarder>,
    _links: Links,
}

/// A forwarder to each of `targets` (`host:port`), each on a 127.0.0.1 port bound on port 0.
pub fn forwarders(targets: &[String]) -> anyhow::Result<Forwarders> {
    let mut links = Links::new()?;
    let mut list = Vec::new();
    for (k, target) in targets.iter().enumerate() {
        let link = links.add(
            "test",
            &format!("{k}:{target}"),
            Purpose::Client,
            target,
            target,
        )?;
        list.push(Forwarder {
            listen: link.listen.to_string(),
            link,
        });
    }
    Ok(Forwarders {
        list,
        _links: links,
    })
}
