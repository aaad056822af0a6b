//! `devnet add-orderer` and `devnet add-peer`: one more node of an existing org, started as a
//! process beside the running network.

use anyhow::Context as _;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::OrdererSpec;
use shared_proto::material::PeerSpec;

use super::describe_channels;
use super::free_ports;
use super::now_unix;
use super::start_node;
use super::view_of;
use super::wait_status;
use super::DataDir;
use super::Started;
use super::CATCH_UP_DEADLINE;
use crate::launcher;
use crate::topology::nodes;

/// Adds orderer `name` to the (first) orderer org and starts it. Not a consenter of any
/// channel yet, it follows each; the output names the command that makes it one.
pub async fn add_orderer(data: &DataDir, name: &str) -> anyhow::Result<()> {
    let g = data.running().await?;
    let msp_id = g
        .spec
        .orderer_orgs
        .first()
        .map(|o| o.msp_id.clone())
        .context("the network has no orderer org")?;
    let ports = free_ports(&g, 3)?;
    let orderer = OrdererSpec {
        name: name.to_owned(),
        id: None,
        host: "127.0.0.1".into(),
        port: ports[0],
        cluster_port: ports[1],
        ops_port: ports[2],
    };
    let g = material::add_orderer(&data.net(), &msp_id, orderer, now_unix())?;
    let view = view_of(&g, name)?;
    let node = g
        .orderers
        .iter()
        .find(|n| n.name == name)
        .context("the new orderer is not in the material")?;
    let node_id = shared_proto::node_config::OrdererConfig::load(&node.config)
        .map(|c| c.node_id)
        .with_context(|| format!("reading {}", node.config.display()))?;
    println!(
        "{name} ({msp_id}, node id {node_id}): material in {}",
        node.dir.display()
    );
    let started = start_node(data, &view).await?;
    print_started(&started);
    // Its channels open right after it serves: wait until each reports a role.
    let channels: Vec<String> = g.channels.iter().map(|(id, _)| id.clone()).collect();
    let status = wait_status(&view, "a role on every channel", CATCH_UP_DEADLINE, |s| {
        channels
            .iter()
            .all(|id| s["channels"][id.as_str()]["role"].is_string())
    })
    .await?;
    for line in describe_channels(&status) {
        println!("  {line}");
    }
    println!("\nit follows every channel; to make it a consenter of one:");
    for id in &channels {
        println!(
            "  orderer admin --network {} consenter add --channel {id} --node {name}",
            data.net().display()
        );
    }
    Ok(())
}

/// Adds peer `name` to application org `org` and starts it; it gets its org's channels from
/// its org's peers (gossip) and the orderers, and this waits until it has caught up.
pub async fn add_peer(data: &DataDir, org: &str, name: &str) -> anyhow::Result<()> {
    let g = data.running().await?;
    let ports = free_ports(&g, 3)?;
    let peer = PeerSpec {
        name: name.to_owned(),
        host: "127.0.0.1".into(),
        port: ports[0],
        gossip_port: ports[1],
        ops_port: ports[2],
        orderer_connected: true,
    };
    let g = material::add_peer(&data.net(), org, peer, now_unix())?;
    let view = view_of(&g, &format!("{org}/{name}"))?;
    println!(
        "{org}/{name}: material in {}",
        view.config.parent().unwrap_or(&data.net()).display()
    );
    let started = start_node(data, &view).await?;
    print_started(&started);
    let status = wait_caught_up(&g, &started).await?;
    for line in describe_channels(&status) {
        println!("  {line}");
    }
    Ok(())
}

pub(super) fn print_started(s: &Started) {
    println!(
        "started {} (pid {}): service 127.0.0.1:{}, ops http://{}/status, log {}",
        s.view.name,
        s.pid,
        s.view.ports[0],
        s.view.ops,
        s.log.display()
    );
}

/// Waits until the peer `started` holds, on every channel its config names, at least the
/// height an orderer of `g` reports for that channel now.
pub(super) async fn wait_caught_up(
    g: &Generated,
    started: &Started,
) -> anyhow::Result<serde_json::Value> {
    let view = &started.view;
    let config = shared_proto::node_config::PeerConfig::load(&view.config)
        .with_context(|| format!("reading {}", view.config.display()))?;
    let mut targets = Vec::new();
    for bootstrap in &config.channels {
        let channel = channel_of(&bootstrap.genesis_block)?;
        targets.push((channel.clone(), orderer_height(g, &channel).await));
    }
    let what = targets
        .iter()
        .map(|(c, h)| format!("{c} at height {h}"))
        .collect::<Vec<_>>()
        .join(", ");
    wait_status(view, &what, CATCH_UP_DEADLINE, |s| {
        targets.iter().all(|(c, h)| {
            s["channels"][c.as_str()]["height"]
                .as_u64()
                .is_some_and(|have| have >= *h)
        })
    })
    .await
    .with_context(|| format!("see its log {}", started.log.display()))
}

/// The channel id a genesis block configures.
fn channel_of(genesis: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(genesis).with_context(|| format!("reading {}", genesis.display()))?;
    let block: shared_proto::pb::common::Block = prost::Message::decode(bytes.as_slice())?;
    Ok(shared_proto::channel::Channel::from_config_block(&block)?
        .id()
        .to_owned())
}

/// The highest height any orderer of `g` reports for `channel` (0 if none answers).
async fn orderer_height(g: &Generated, channel: &str) -> u64 {
    let mut best = 0;
    for v in nodes(g)
        .iter()
        .filter(|v| v.kind == launcher::Kind::Orderer)
    {
        if let Ok(s) = launcher::status(&v.ops).await {
            best = best.max(s["channels"][channel]["height"].as_u64().unwrap_or(0));
        }
    }
    best
}
