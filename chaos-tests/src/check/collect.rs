//! Collecting the checkers' views from running nodes, once a scenario has settled.
//!
//! - every orderer's chain: Deliver from block 0 to its height (read from its ops `/status`);
//! - every peer's chain with its validation codes: the peer's own Deliver service (the blocks
//!   as it committed them, codes in the metadata), and its state hash from `/status`, read
//!   before and after the blocks until both reads agree, so the hash is that of the height;
//! - every node's config: the sequence its `/status` reports (`config_sequence` on an orderer,
//!   `config.sequence` on a peer) and the consenters of the latest config block of its chain.
//!
//! Reads use mutual TLS and a signed SeekInfo of one reader identity (a client of the network,
//! which the channel's `Readers` policy admits). Promises: every read has a deadline; a node
//! that cannot be read within it is reported in [`Collected::unreachable`], never waited on
//! for ever; memory is bounded by the heights the nodes report when the read starts.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::envelope;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::peer::deliver_client::DeliverClient;
use shared_proto::seek;
use tokio::time::Instant;

use super::agree::consenter_names;
use super::ChainIndex;
use super::ChainView;
use super::Check;
use super::ConfigView;
use super::Lag;
use super::PeerStateView;
use crate::history::History;
use crate::launcher;
use crate::launcher::Kind;
use crate::topology::NodeView;

/// Pause between two `/status` reads of a peer that was still committing.
const SETTLE_PAUSE: Duration = Duration::from_millis(100);

/// Who reads: identity, TLS material and channel.
#[derive(Debug, Clone)]
pub struct Reader {
    identity: SigningIdentity,
    tls: peer::sdk::ClientTls,
    channel: String,
}

impl Reader {
    /// Reads as user `user` of org `msp_id` of a generated network, on `channel`.
    pub fn from_network(
        g: &Generated,
        msp_id: &str,
        user: &str,
        channel: &str,
    ) -> anyhow::Result<Self> {
        let u = g
            .user(msp_id, user)
            .with_context(|| format!("no user {user} in {msp_id}"))?;
        Ok(Reader {
            identity: SigningIdentity::from_pem_files(msp_id, &u.cert, &u.key)?,
            tls: peer::sdk::ClientTls::from_network(g, msp_id, user)?,
            channel: channel.to_owned(),
        })
    }

    /// Org1MSP User1 on the dev network's channel.
    pub fn devnet(g: &Generated) -> anyhow::Result<Self> {
        Self::from_network(g, "Org1MSP", "User1", crate::topology::CHANNEL)
    }

    fn seek(&self, stop: u64) -> shared_proto::pb::common::Envelope {
        let info = SeekInfo {
            start: Some(seek::specified(0)),
            stop: Some(seek::specified(stop)),
            behavior: SeekBehavior::BlockUntilReady as i32,
        };
        envelope::create_signed_envelope(
            &self.identity,
            HeaderType::DeliverSeekInfo,
            &self.channel,
            info.encode_to_vec(),
            envelope::new_nonce(),
            now_unix_ms(),
        )
    }

    /// This channel's entry of a node's `/status`.
    async fn status(&self, node: &NodeView) -> anyhow::Result<serde_json::Value> {
        let s = launcher::status(&node.ops).await?;
        let ch = s["channels"][&self.channel].clone();
        anyhow::ensure!(
            !ch.is_null(),
            "{} reports no channel {}",
            node.name,
            self.channel
        );
        Ok(ch)
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// host:port of a node's service (client) port.
pub fn service_addr(node: &NodeView) -> anyhow::Result<String> {
    let host = node
        .ops
        .rsplit_once(':')
        .map(|(h, _)| h)
        .with_context(|| format!("{}: ops address {:?} has no port", node.name, node.ops))?;
    let port = node
        .ports
        .first()
        .with_context(|| format!("{} has no ports", node.name))?;
    Ok(format!("{host}:{port}"))
}

/// One Deliver response, orderer's or peer's, as far as collecting goes.
enum Delivered {
    Block(Box<Block>),
    Status(i32),
    Other,
}

/// Reads blocks from `stream` until its SUCCESS status; `expected` bounds the count.
async fn drain<S>(mut stream: S, expected: u64, who: &str) -> anyhow::Result<Vec<Block>>
where
    S: futures::Stream<Item = Result<Delivered, tonic::Status>> + Unpin,
{
    let mut blocks = Vec::with_capacity(expected as usize);
    while let Some(msg) = stream.next().await {
        match msg.with_context(|| format!("{who}: deliver"))? {
            Delivered::Block(b) => {
                anyhow::ensure!(
                    (blocks.len() as u64) < expected,
                    "{who}: deliver sent more than the {expected} blocks asked for"
                );
                blocks.push(*b);
            }
            Delivered::Status(s) if s == Status::Success as i32 => return Ok(blocks),
            Delivered::Status(s) => anyhow::bail!("{who}: deliver ended with status {s}"),
            Delivered::Other => anyhow::bail!("{who}: deliver sent a filtered or empty response"),
        }
    }
    anyhow::bail!("{who}: deliver stream ended without a status")
}

/// Blocks 0..height of an orderer, by its Deliver.
async fn orderer_blocks(
    reader: &Reader,
    node: &NodeView,
    height: u64,
) -> anyhow::Result<Vec<Block>> {
    if height == 0 {
        return Ok(Vec::new());
    }
    let channel = peer::sdk::channel_to(&service_addr(node)?, &reader.tls)?;
    let mut client = AtomicBroadcastClient::new(channel)
        .max_decoding_message_size(peer::node::MESSAGE_BYTES_MAX);
    let request = reader.seek(height - 1);
    let stream = client
        .deliver(futures::stream::iter([request]))
        .await
        .with_context(|| format!("{}: deliver", node.name))?
        .into_inner()
        .map(|r| {
            r.map(|r| {
                use shared_proto::pb::orderer::deliver_response::Type;
                match r.r#type {
                    Some(Type::Block(b)) => Delivered::Block(Box::new(b)),
                    Some(Type::Status(s)) => Delivered::Status(s),
                    None => Delivered::Other,
                }
            })
        });
    drain(stream, height, &node.name).await
}

/// Blocks 0..height of a peer, with its validation codes, by the peer's Deliver.
async fn peer_blocks(reader: &Reader, node: &NodeView, height: u64) -> anyhow::Result<Vec<Block>> {
    if height == 0 {
        return Ok(Vec::new());
    }
    let channel = peer::sdk::channel_to(&service_addr(node)?, &reader.tls)?;
    let mut client =
        DeliverClient::new(channel).max_decoding_message_size(peer::node::MESSAGE_BYTES_MAX);
    let request = reader.seek(height - 1);
    let stream = client
        .deliver(futures::stream::iter([request]))
        .await
        .with_context(|| format!("{}: deliver", node.name))?
        .into_inner()
        .map(|r| {
            r.map(|r| {
                use shared_proto::pb::peer::deliver_response::Type;
                match r.r#type {
                    Some(Type::Block(b)) => Delivered::Block(Box::new(b)),
                    Some(Type::Status(s)) => Delivered::Status(s),
                    _ => Delivered::Other,
                }
            })
        });
    drain(stream, height, &node.name).await
}

fn height_of(status: &serde_json::Value, who: &str) -> anyhow::Result<u64> {
    status["height"]
        .as_u64()
        .with_context(|| format!("{who}: /status has no height"))
}

async fn within<T>(
    timeout: Duration,
    who: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{who}: not read within {timeout:?}"))?
}

/// An orderer's whole chain (its height as its `/status` reports it when the read starts).
pub async fn orderer_chain(
    reader: &Reader,
    node: &NodeView,
    timeout: Duration,
) -> anyhow::Result<ChainView> {
    within(timeout, &node.name, async {
        let height = height_of(&reader.status(node).await?, &node.name)?;
        Ok(ChainView {
            member: node.name.clone(),
            blocks: orderer_blocks(reader, node, height).await?,
        })
    })
    .await
}

/// A peer's whole chain with its codes, and its state at that height. Reads `/status`, the
/// blocks up to its height, and `/status` again, until the two reads agree (the peer was not
/// committing meanwhile) or `timeout` passes.
pub async fn peer_chain(
    reader: &Reader,
    node: &NodeView,
    timeout: Duration,
) -> anyhow::Result<(ChainView, PeerStateView)> {
    let deadline = Instant::now() + timeout;
    within(timeout, &node.name, async {
        loop {
            let before = reader.status(node).await?;
            let height = height_of(&before, &node.name)?;
            let blocks = peer_blocks(reader, node, height).await?;
            let after = reader.status(node).await?;
            if after["height"] == before["height"] && after["state_hash"] == before["state_hash"] {
                let chain = ChainView {
                    member: node.name.clone(),
                    blocks,
                };
                let state_hash = after["state_hash"].as_str().unwrap_or_default();
                let state = PeerStateView::from_chain(&chain, state_hash);
                return Ok((chain, state));
            }
            anyhow::ensure!(
                Instant::now() + SETTLE_PAUSE < deadline,
                "{}: still committing (height {} then {})",
                node.name,
                before["height"],
                after["height"]
            );
            tokio::time::sleep(SETTLE_PAUSE).await;
        }
    })
    .await
}

/// The consenters of the latest config block of `chain` (the one its tip names), as
/// [`consenter_names`] writes them.
pub fn consenters_of_chain(chain: &ChainView) -> anyhow::Result<Vec<String>> {
    let tip = chain
        .blocks
        .last()
        .with_context(|| format!("{}: the chain holds no block", chain.member))?;
    let at = block::last_config_index(tip);
    let config_block = chain.blocks.get(at as usize).with_context(|| {
        format!(
            "{}: the tip names config block {at}, beyond height {}",
            chain.member,
            chain.height()
        )
    })?;
    let channel = Channel::from_config_block(config_block)
        .with_context(|| format!("{}: config block {at}", chain.member))?;
    Ok(consenter_names(&channel))
}

/// A node's config: the sequence its `/status` reports and the consenters of its chain's latest
/// config block.
pub async fn node_config(
    reader: &Reader,
    node: &NodeView,
    chain: &ChainView,
    timeout: Duration,
) -> anyhow::Result<ConfigView> {
    within(timeout, &node.name, async {
        let status = reader.status(node).await?;
        let sequence = match node.kind {
            Kind::Orderer => status["config_sequence"].as_u64(),
            Kind::Peer => status["config"]["sequence"].as_u64(),
        }
        .with_context(|| format!("{}: /status has no config sequence", node.name))?;
        Ok(ConfigView {
            member: node.name.clone(),
            sequence,
            consenters: consenters_of_chain(chain)?,
        })
    })
    .await
}

/// Everything the checkers need, from every node that could be read.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub orderers: Vec<ChainView>,
    pub peers: Vec<ChainView>,
    pub peer_states: Vec<PeerStateView>,
    /// Orderers first, then peers.
    pub configs: Vec<ConfigView>,
    /// (node, why) for each node that could not be read in time.
    pub unreachable: Vec<(String, String)>,
}

impl Collected {
    /// The final chain's tx index (see [`ChainIndex::new`]).
    pub fn index(&self) -> ChainIndex {
        ChainIndex::new(&self.orderers, &self.peers)
    }

    /// Each node's height, by name.
    pub fn heights(&self) -> std::collections::BTreeMap<String, u64> {
        self.orderers
            .iter()
            .chain(&self.peers)
            .map(|c| (c.member.clone(), c.height()))
            .collect()
    }

    /// The six checks decided from the collected state (all but `live_after_heal`), in
    /// report.json's order. `no_fork` compares orderers and peers, and also fails for a node
    /// that could not be read unless `lag` allows that node to be behind; `config_agree` is
    /// over the orderers' configs only when `orderers_only_config`.
    pub fn checks(&self, history: &History, lag: &Lag, orderers_only_config: bool) -> Vec<Check> {
        let all: Vec<&ChainView> = self.orderers.iter().chain(&self.peers).collect();
        let mut no_fork = super::no_fork(&all, lag);
        let missing: Vec<String> = self
            .unreachable
            .iter()
            .filter(|(node, _)| !lag.allows(node))
            .map(|(node, why)| format!("{node} could not be read ({why})"))
            .collect();
        if no_fork.passed && !missing.is_empty() {
            no_fork = Check::fail("no_fork", super::first_few(&missing, 3));
        }
        let configs: Vec<ConfigView> = if orderers_only_config {
            let names: Vec<&str> = self.orderers.iter().map(|c| c.member.as_str()).collect();
            self.configs
                .iter()
                .filter(|c| names.contains(&c.member.as_str()))
                .cloned()
                .collect()
        } else {
            self.configs.clone()
        };
        vec![
            no_fork,
            super::chain_valid(&all),
            super::acked_not_lost(history, &self.index()),
            super::no_duplicates(&all),
            super::peers_agree(&self.peer_states),
            super::config_agree(&configs),
        ]
    }
}

/// Collects every node of `nodes` (all at once), each read within `timeout`.
pub async fn collect(reader: &Reader, nodes: &[NodeView], timeout: Duration) -> Collected {
    let reads = nodes.iter().map(|node| async move {
        let read = async {
            match node.kind {
                Kind::Orderer => {
                    let chain = orderer_chain(reader, node, timeout).await?;
                    let config = node_config(reader, node, &chain, timeout).await?;
                    Ok::<_, anyhow::Error>((chain, None, config))
                }
                Kind::Peer => {
                    let (chain, state) = peer_chain(reader, node, timeout).await?;
                    let config = node_config(reader, node, &chain, timeout).await?;
                    Ok((chain, Some(state), config))
                }
            }
        };
        (node, read.await)
    });
    let mut out = Collected::default();
    let mut peer_configs = Vec::new();
    for (node, read) in futures::future::join_all(reads).await {
        match read {
            Ok((chain, None, config)) => {
                out.orderers.push(chain);
                out.configs.push(config);
            }
            Ok((chain, Some(state), config)) => {
                out.peers.push(chain);
                out.peer_states.push(state);
                peer_configs.push(config);
            }
            Err(e) => out.unreachable.push((node.name.clone(), format!("{e:#}"))),
        }
    }
    out.configs.extend(peer_configs);
    out
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
