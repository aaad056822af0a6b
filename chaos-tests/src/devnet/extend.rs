//! Material-only verbs on a generated network (`devnet generate --out DIR`), for deployments
//! that start the nodes themselves (compose, Kubernetes): nothing is started or contacted.
//!
//! - `devnet extend --network DIR --add-orderer NAME --host H`: a new orderer's identity, TLS
//!   pair and `orderer.toml` from its org's CAs ([`material::add_orderer`]); the operator
//!   starts it, then makes it a consenter with `orderer admin consenter add`.
//! - `devnet renew-tls --network DIR --node NAME`: a new TLS key and certificate for one node
//!   from its org's TLS CA ([`material::renew_tls`]); for an orderer, then `orderer admin
//!   consenter replace` and a restart.

use std::path::Path;

use anyhow::Context as _;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::OrdererSpec;

use super::now_unix;

/// A new orderer as `devnet extend --add-orderer` describes it.
#[derive(Debug, Clone)]
pub struct NewOrderer {
    pub name: String,
    /// The name others reach it by (service name, DNS name or IP): its certificate's SAN and
    /// its consenter entry's host.
    pub host: String,
    /// Orderer org; default: the network's first.
    pub org: Option<String>,
    pub port: u16,
    pub cluster_port: u16,
    pub ops_port: u16,
    /// Raft node id; default: one more than the highest.
    pub id: Option<u64>,
}

/// Adds `o` to the material in `net` and says what to do next.
pub fn extend_orderer(net: &Path, o: NewOrderer) -> anyhow::Result<()> {
    let g = Generated::load(net)
        .with_context(|| format!("{} holds no generated network", net.display()))?;
    let msp_id = match &o.org {
        Some(org) => org.clone(),
        None => g
            .spec
            .orderer_orgs
            .first()
            .map(|org| org.msp_id.clone())
            .context("the network has no orderer org")?,
    };
    let spec = OrdererSpec {
        name: o.name.clone(),
        id: o.id,
        host: o.host.clone(),
        port: o.port,
        cluster_port: o.cluster_port,
        ops_port: o.ops_port,
    };
    let g = material::add_orderer(net, &msp_id, spec, now_unix())?;
    let node = g
        .orderers
        .iter()
        .find(|n| n.name == o.name && n.msp_id == msp_id)
        .context("the new orderer is not in the material after adding it")?;
    let config = shared_proto::node_config::OrdererConfig::load(&node.config)
        .with_context(|| format!("reading {}", node.config.display()))?;
    println!(
        "{} ({msp_id}, node id {}): host {}, ports {}/{}/{} (service/cluster/ops)",
        o.name, config.node_id, o.host, o.port, o.cluster_port, o.ops_port
    );
    println!("  config   {}", node.config.display());
    println!("  identity {}", node.dir.join("msp/cert.pem").display());
    println!("  tls      {}", node.dir.join("tls/cert.pem").display());
    println!("it follows every channel once started; then, one member at a time:");
    for (channel, _) in &g.channels {
        println!(
            "  orderer admin --network {} consenter add --channel {channel} --node {}",
            net.display(),
            o.name
        );
    }
    Ok(())
}

/// `orderer2` (an orderer, by name) or `Org1MSP/peer0` (a peer, or an orderer, of an org).
fn resolve(g: &Generated, node: &str) -> anyhow::Result<(String, String)> {
    if let Some((msp, name)) = node.split_once('/') {
        return Ok((msp.to_owned(), name.to_owned()));
    }
    let found: Vec<_> = g.orderers.iter().filter(|n| n.name == node).collect();
    match found.as_slice() {
        [one] => Ok((one.msp_id.clone(), one.name.clone())),
        [] => anyhow::bail!(
            "no orderer {node:?} in {} (a peer is named MSP/NAME, e.g. Org1MSP/peer0)",
            g.dir.display()
        ),
        _ => anyhow::bail!("more than one orderer org has an orderer {node:?}: name it MSP/{node}"),
    }
}

/// Renews the TLS certificate of `node` in the material in `net` and says what to do next.
pub fn renew_tls(net: &Path, node: &str) -> anyhow::Result<()> {
    let g = Generated::load(net)
        .with_context(|| format!("{} holds no generated network", net.display()))?;
    let (msp_id, name) = resolve(&g, node)?;
    let r = material::renew_tls(net, &msp_id, &name, now_unix())?;
    println!(
        "renewed the TLS certificate of {kind} {msp_id}/{name}",
        kind = r.kind
    );
    println!("  {}", r.cert.display());
    println!("  previous sha256 {}", r.previous_sha256);
    println!("  new      sha256 {}", r.sha256);
    println!("  valid until     {} (unix)", r.not_after_unix);
    println!("  the previous pair is kept as cert.pem.prev / key.pem.prev");
    if r.kind == "orderer" {
        println!("its consenter entries pin the previous certificate; for each channel:");
        for (channel, _) in &g.channels {
            println!(
                "  orderer admin --network {} consenter replace --channel {channel} --node {name}",
                net.display()
            );
        }
        println!("then restart {name} so that it presents the new certificate");
    } else {
        println!("restart it so that it presents the new certificate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::topology::Topology;

    fn network(dir: &Path) -> Generated {
        let topology = Topology {
            name: "extend-test".into(),
            orderers: 3,
            orgs: 2,
            peers_per_org: 1,
            connected_peers_per_org: 1,
            batch_size: 10,
            batch_timeout_ms: 100,
            base_port: 20_000,
        };
        material::generate(&topology.spec().unwrap(), dir, now_unix()).unwrap()
    }

    #[test]
    fn extend_adds_an_orderer_with_the_next_id_and_the_admin_client_builds_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        network(&net);
        extend_orderer(
            &net,
            NewOrderer {
                name: "orderer4".into(),
                host: "orderer4".into(),
                org: None,
                port: 7050,
                cluster_port: 7150,
                ops_port: 8450,
                id: None,
            },
        )
        .unwrap();
        let admin = orderer::admin_client::Network::load(&net).unwrap();
        let node = admin.orderer("orderer4").unwrap();
        assert_eq!(node.node_id, 4);
        assert_eq!(node.address, "orderer4:7050");
        let entry = admin.consenter_entry(node).unwrap();
        assert_eq!((entry.host.as_str(), entry.port), ("orderer4", 7150));
        assert_eq!(entry.msp_id, "OrdererMSP");
        let config = shared_proto::node_config::OrdererConfig::load(&node.config).unwrap();
        assert_eq!(config.listen_address, "0.0.0.0:7050");
        // The same name twice is refused; the first stays.
        let again = extend_orderer(
            &net,
            NewOrderer {
                name: "orderer4".into(),
                host: "other".into(),
                org: None,
                port: 7051,
                cluster_port: 7151,
                ops_port: 8451,
                id: None,
            },
        );
        assert!(again.is_err());
        let admin = orderer::admin_client::Network::load(&net).unwrap();
        assert_eq!(admin.orderer("orderer4").unwrap().address, "orderer4:7050");
    }

    #[test]
    fn extend_to_an_unknown_org_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        network(&net);
        let err = extend_orderer(
            &net,
            NewOrderer {
                name: "orderer4".into(),
                host: "orderer4".into(),
                org: Some("NopeMSP".into()),
                port: 7050,
                cluster_port: 7150,
                ops_port: 8450,
                id: None,
            },
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("NopeMSP"), "{err:#}");
    }

    #[test]
    fn renew_changes_the_entry_consenter_replace_builds_and_resolves_names() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        let g = network(&net);
        let admin = orderer::admin_client::Network::load(&net).unwrap();
        let before = admin
            .consenter_entry(admin.orderer("orderer2").unwrap())
            .unwrap();
        renew_tls(&net, "orderer2").unwrap();
        let after = admin
            .consenter_entry(admin.orderer("orderer2").unwrap())
            .unwrap();
        assert_ne!(before.server_tls_cert, after.server_tls_cert);
        assert_eq!(before.identity, after.identity);
        assert_eq!((before.id, &before.host), (after.id, &after.host));
        // `consenter replace` finds the entry changed (it refuses an unchanged one).
        let channel = shared_proto::channel::Channel::from_config_block(
            &prost::Message::decode(std::fs::read(&g.channels[0].1).unwrap().as_slice()).unwrap(),
        )
        .unwrap();
        let next = admin
            .consenter_change(
                &channel,
                orderer::admin_client::ConsenterOp::Replace,
                "orderer2",
            )
            .unwrap();
        let replaced = next
            .orderer
            .unwrap()
            .consenters
            .into_iter()
            .find(|c| c.id == after.id)
            .unwrap();
        assert_eq!(replaced, after);

        let peer = &g.peers[0];
        renew_tls(&net, &format!("{}/{}", peer.msp_id, peer.name)).unwrap();
        assert!(peer.dir.join("tls/cert.pem.prev").is_file());
        let err = renew_tls(&net, "nobody").unwrap_err();
        assert!(format!("{err:#}").contains("Org1MSP/peer0"), "{err:#}");
    }
}
