//! `devnet add-org`: a new application org with one peer, added to the running network's
//! channels by config update.

use std::time::Duration;

use anyhow::Context as _;
use orderer::admin_client::Network;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::PeerOrgSpec;
use shared_proto::material::PeerSpec;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;

use super::describe_channels;
use super::free_ports;
use super::nodes::print_started;
use super::nodes::wait_caught_up;
use super::now_unix;
use super::start_node;
use super::view_of;
use super::DataDir;
use super::CONFIG_UPDATE_DEADLINE;
use crate::topology::NodeView;

/// Adds org `msp_id` (new CA and TLS CA, `Admin`, `User1`, `peer0`) to the material, then to
/// every channel the material puts it on (each by one config update approved by every org
/// admin the channel knows, waited for until the leader applies it), then starts its peer,
/// which replays each channel from the genesis block up to the config that names its org.
pub async fn add_org(data: &DataDir, msp_id: &str) -> anyhow::Result<()> {
    let g = data.running().await?;
    let ports = free_ports(&g, 3)?;
    let org = PeerOrgSpec {
        msp_id: msp_id.to_owned(),
        peers: vec![PeerSpec {
            name: "peer0".into(),
            host: "127.0.0.1".into(),
            port: ports[0],
            gossip_port: ports[1],
            ops_port: ports[2],
            orderer_connected: true,
        }],
        users: vec!["User1".into()],
    };
    let (g, entry) = material::add_peer_org(&data.net(), org, now_unix())?;
    println!(
        "{msp_id}: CA, TLS CA, Admin, User1 and peer0 in {}",
        data.net().join("orgs").join(msp_id).display()
    );

    let net = Network::load(&data.net())?;
    let on = |c: &material::ChannelSpec| {
        c.orgs
            .as_ref()
            .is_none_or(|o| o.iter().any(|m| m == msp_id))
    };
    for ch in g.spec.channels.iter().filter(|c| on(c)) {
        let current = net.current_config(&ch.id).await?;
        if current
            .channel
            .application_orgs()
            .iter()
            .any(|m| m == msp_id)
        {
            println!("{}: {msp_id} is already a member", ch.id);
            continue;
        }
        let mut next = current.channel.config().clone();
        next.sequence += 1;
        next.application_orgs.push(entry.clone());
        let applied = net
            .apply(&current, &next, None, CONFIG_UPDATE_DEADLINE)
            .await?;
        let signers: Vec<&str> = current
            .channel
            .application_orgs()
            .iter()
            .chain(current.channel.orderer_orgs())
            .map(String::as_str)
            .collect();
        println!(
            "{}: config update adding {msp_id} applied (config sequence {} -> {}, tx {}, \
             ordered by {}, approved by the Admins of {}, {} ms; leader {})",
            ch.id,
            applied.previous_sequence,
            applied.config_sequence,
            applied.tx_id,
            applied.submitted_to,
            signers.join(", "),
            applied.elapsed_ms,
            applied.status.leader.as_deref().unwrap_or("none")
        );
    }

    let view = view_of(&g, &format!("{msp_id}/peer0"))?;
    let started = start_node(data, &view).await?;
    print_started(&started);
    if let Some(refusal) = orderers_refuse_tls(&g, &view).await? {
        anyhow::bail!(
            "{name} runs but cannot pull blocks: {refusal}. The orderers trust the TLS CAs of \
             their config files (tls.ca_roots, read when they start), not those of the channel \
             config, so a running orderer does not know {msp_id}'s new TLS CA. {msp_id} is on \
             the channel; {name} stays at its genesis block until the orderers trust its TLS CA \
             (its log: {log})",
            name = view.name,
            log = started.log.display()
        );
    }
    let status = wait_caught_up(&g, &started).await?;
    for line in describe_channels(&status) {
        println!("  {line}");
    }
    Ok(())
}

/// Whether the orderers refuse the TLS client certificate of peer `view` (what its deliver
/// client presents): `Some(why)` from the first orderer that answers at all.
async fn orderers_refuse_tls(g: &Generated, view: &NodeView) -> anyhow::Result<Option<String>> {
    let config = shared_proto::node_config::PeerConfig::load(&view.config)
        .with_context(|| format!("reading {}", view.config.display()))?;
    let tls = std::sync::Arc::new(shared_proto::tls::TlsMaterial::load(&config.tls)?);
    let dialer = shared_proto::dial::Dialer::direct(tls);
    for o in g.spec.orderer_orgs.iter().flat_map(|o| &o.orderers) {
        let address = format!("{}:{}", o.host, o.port);
        let Ok(endpoint) = dialer.endpoint(&address) else {
            continue;
        };
        let Ok(channel) = endpoint
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
        else {
            continue;
        };
        // An empty Deliver: any gRPC answer means the handshake passed.
        let answer = AtomicBroadcastClient::new(channel)
            .deliver(futures::stream::empty())
            .await;
        return Ok(match answer {
            Err(status) => {
                let why = root_cause(&status);
                why.to_lowercase()
                    .contains("unknownca")
                    .then(|| format!("{} refuses its TLS client certificate ({why})", o.name))
            }
            _ => None,
        });
    }
    Ok(None)
}

/// The innermost cause of `e` (for a TLS refusal: the alert).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    cause.to_string()
}
