//! `devnet create-channel`: a second (third, …) channel on the running network, joined by
//! every orderer through its Admin API.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use orderer::admin_client::Network;
use orderer::admin_client::StatusView;
use peer::participation::client::AdminClient;
use shared_proto::material;
use shared_proto::material::BatchSpec;
use shared_proto::material::ChannelSpec;
use shared_proto::material::Generated;

use super::now_unix;
use super::DataDir;
use super::POLL_EVERY;

/// How long the new channel's consenters may take to elect a leader.
const LEADER_DEADLINE: Duration = Duration::from_secs(60);

/// Creates channel `id`: genesis block from the network's orgs, the consenters and orderer
/// endpoints in force on the first channel, and its batch settings and policies; then every
/// orderer joins it (a consenter as a voter, any other orderer as a follower), this waits
/// until the channel has a leader, and every peer of an org on the channel joins it
/// (`ChannelParticipation.JoinChannel`, signed by its org's Admin, as `peer channel join`).
/// A peer added later by `add-peer` or `add-org` has the channel in its config.
pub async fn create_channel(data: &DataDir, id: &str) -> anyhow::Result<()> {
    let g = data.running().await?;
    let first = g
        .spec
        .channels
        .first()
        .context("the network has no channel")?
        .clone();
    let net = Network::load(&data.net())?;
    let current = net.current_config(&first.id).await?;
    let template = &current.channel;
    let batch = template.batch_size();
    let spec = ChannelSpec {
        id: id.to_owned(),
        orgs: first.orgs.clone(),
        batch: BatchSpec {
            message_count_max: batch.message_count_max,
            bytes_absolute_max: batch.bytes_absolute_max,
            bytes_preferred_max: batch.bytes_preferred_max,
            timeout_ms: template.batch_timeout_ms(),
            retry_window_txs: first.batch.retry_window_txs,
        },
        policies: first.policies.clone(),
        chaincodes: first.chaincodes.clone(),
    };
    let g = material::add_channel(
        &data.net(),
        spec,
        template.consenters(),
        template.orderer_endpoints(),
        now_unix(),
    )?;
    let Some((_, genesis)) = g.channels.iter().find(|(c, _)| c == id) else {
        anyhow::bail!("channel {id} is not in the material after adding it");
    };
    let consenters: Vec<String> = template
        .consenters()
        .iter()
        .map(|c| net.name_of(c.id))
        .collect();
    println!(
        "channel {id}: genesis block {} (orgs {}; consenters {} as on {}; batch {} envelopes / {} ms)",
        genesis.display(),
        template
            .application_orgs()
            .iter()
            .chain(template.orderer_orgs())
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        consenters.join(", "),
        first.id,
        batch.message_count_max,
        template.batch_timeout_ms()
    );

    // The material now lists the channel, so the client asks for it by name.
    let net = Network::load(&data.net())?;
    let block = std::fs::read(genesis).with_context(|| format!("reading {}", genesis.display()))?;
    let mut failed = Vec::new();
    for node in &net.orderers {
        match net.join_channel(node, id, block.clone()).await {
            Ok(info) => println!(
                "  {}: joined, role {}, status {}, height {}",
                node.name, info.role, info.status, info.height
            ),
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                println!("  {}: already serves {id}", node.name)
            }
            Err(e) => {
                println!("  {}: NOT joined: {e}", node.name);
                failed.push(node.name.clone());
            }
        }
    }
    let status = wait_leader(&net, id).await?;
    println!(
        "{id}: leader {}, voters [{}], height {}, config sequence {}",
        status.leader.as_deref().unwrap_or("none"),
        status.voters.join(", "),
        status.height,
        status.config_sequence
    );
    anyhow::ensure!(
        failed.is_empty(),
        "{} did not join {id}; join by hand: orderer admin --network {} --node NAME channel join --block {}",
        failed.join(", "),
        data.net().display(),
        genesis.display()
    );
    let failed = join_peers(&g, id, &block).await;
    anyhow::ensure!(
        failed.is_empty(),
        "{} did not join {id}; join by hand: peer channel join --network {} --org ORG --peer NAME --block {}",
        failed.join(", "),
        data.net().display(),
        genesis.display()
    );
    Ok(())
}

/// Joins every peer of `g` whose org is on channel `id` with its genesis `block`; the names
/// of those that did not.
async fn join_peers(g: &Generated, id: &str, block: &[u8]) -> Vec<String> {
    let on_channel: Vec<String> = g
        .spec
        .channels
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.orgs.clone())
        .unwrap_or_else(|| g.spec.peer_orgs.iter().map(|o| o.msp_id.clone()).collect());
    let peers = g
        .spec
        .peer_orgs
        .iter()
        .filter(|o| on_channel.contains(&o.msp_id))
        .flat_map(|o| o.peers.iter().map(move |p| (o, p)));
    let mut failed = Vec::new();
    for (org, p) in peers {
        let name = format!("{}/{}", org.msp_id, p.name);
        let address = format!("{}:{}", p.host, p.port);
        let joined = match AdminClient::from_network(g, &org.msp_id, "Admin", &address) {
            Ok(admin) => admin.join(block.to_vec()).await.map_err(|s| {
                let code = orderer::admin_client::rpc::code_name(s.code());
                format!("{code}: {}", s.message())
            }),
            Err(e) => Err(e.to_string()),
        };
        match joined {
            Ok(info) => println!(
                "  {name}: joined, height {}, config sequence {}",
                info.height, info.config_sequence
            ),
            Err(e) if e.starts_with("ALREADY_EXISTS") => println!("  {name}: already has {id}"),
            Err(e) => {
                println!("  {name}: NOT joined: {e}");
                failed.push(name);
            }
        }
    }
    failed
}

/// Waits until some orderer reports a leader of `channel`.
async fn wait_leader(net: &Network, channel: &str) -> anyhow::Result<StatusView> {
    let deadline = Instant::now() + LEADER_DEADLINE;
    loop {
        let mut seen = Vec::new();
        for node in &net.orderers {
            match net.cluster_status(node, channel).await {
                Ok(s) if s.leader_id != 0 => return Ok(StatusView::new(net, &s)),
                Ok(s) => seen.push(format!("{}: no leader (role {})", node.name, s.role)),
                Err(e) => seen.push(format!("{}: {e}", node.name)),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "channel {channel} has no leader after {} s:\n  {}",
            LEADER_DEADLINE.as_secs(),
            seen.join("\n  ")
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
