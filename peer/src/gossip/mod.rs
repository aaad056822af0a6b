//! Gossip (peer flow: orderers -> leader's deliver_client -> commit -> [gossip] -> org peers).
//!
//! A peer with no orderer connection still gets every block, from the peers of its org:
//!
//! - **membership**: signed alive messages every heartbeat carry endpoint, height and
//!   leadership; silent members expire and come back when they speak ([`membership`]);
//! - **election**: among orderer-connected members, the highest height leads, the incumbent is
//!   kept, a far-behind peer never wins ([`election`]); only the leader runs the deliver client;
//! - **push**: each committed block goes to `fanout` random members that may lack it, so a
//!   block is forwarded once by every peer that commits it;
//! - **pull**: every interval (or at once on a gap) a member that is ahead is asked for the next
//!   batch; one request in flight per channel; out-of-order blocks wait in a bounded
//!   [`reorder`] buffer.
//!
//! Promises: a gossiped block goes through [`crate::commit::Committer::process`], the very
//! checks an orderer's block passes; only members of this peer's org, authenticated by a
//! signed alive message bound to their TLS certificate, are heard; a sender of refused blocks
//! is cut off for [`BAN_DURATION`]; every queue is bounded.

pub mod alive;
mod channel;
mod claims;
mod commit_run;
pub mod election;
pub mod membership;
pub mod reorder;
mod serve;
pub mod transport;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use shared_proto::dial::Dialer;
use shared_proto::hash::sha256;
use shared_proto::hash::Hash;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::GossipSettings;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::peer::gossip_server::GossipServer;
use tokio::task::JoinHandle;

pub use channel::ChannelGossip;

use crate::channels::Fatal;
use crate::commit::Committer;
use crate::metrics::Metrics;

/// Refused blocks from one sender before it is cut off.
pub const STRIKES_MAX: u32 = 3;
/// How long a cut-off sender is ignored.
pub const BAN_DURATION: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Strikes {
    count: u32,
    banned_until: Option<Instant>,
}

/// What every gossip task of the peer shares.
#[derive(Debug)]
pub struct Shared {
    pub settings: GossipSettings,
    pub endpoint: String,
    pub msp_id: String,
    pub identity: Arc<SigningIdentity>,
    pub tls_cert_hash: Hash,
    pub metrics: Arc<Metrics>,
    /// The channels gossiped now (they come and go with the peer's channels).
    channels: RwLock<BTreeMap<String, Arc<ChannelGossip>>>,
    pub outbound: transport::Outbound,
    /// Dials orderers for the leader's deliver client.
    dialer: Arc<Dialer>,
    /// Where a channel's commit path reports a storage failure.
    fatal: Fatal,
    clock: fn() -> i64,
    strikes: Mutex<HashMap<Hash, Strikes>>,
}

impl Shared {
    pub fn now_unix(&self) -> i64 {
        (self.clock)()
    }

    /// The gossip of `channel_id`, if this peer runs that channel.
    pub fn channel(&self, channel_id: &str) -> Option<Arc<ChannelGossip>> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel_id)
            .cloned()
    }

    /// Every channel gossiped now.
    pub fn channels(&self) -> Vec<Arc<ChannelGossip>> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.settings.heartbeat_ms)
    }

    /// Records a refused block from `sender`; cuts it off at [`STRIKES_MAX`].
    pub fn strike(&self, sender: &Hash) {
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        if strikes.len() > 4096 {
            strikes.clear();
        }
        let s = strikes.entry(*sender).or_default();
        s.count += 1;
        if s.count >= STRIKES_MAX {
            s.count = 0;
            s.banned_until = Some(Instant::now() + BAN_DURATION);
            tracing::warn!(sender = %hex::encode(&sender[..8]), "gossip sender cut off after refused blocks");
        }
    }

    pub fn is_banned(&self, sender: &Hash) -> bool {
        let strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        strikes
            .get(sender)
            .and_then(|s| s.banned_until)
            .is_some_and(|until| Instant::now() < until)
    }
}

/// The running gossip layer of a peer.
#[derive(Debug, Clone)]
pub struct Gossip {
    shared: Arc<Shared>,
}

impl Gossip {
    /// Starts gossip with no channel yet (the heartbeat task, returned);
    /// [`Gossip::add_channel`] adds each. A channel's storage failure is reported on `fatal`.
    /// Every outbound connection (gossip, the leader's Deliver) goes through `dialer`.
    pub fn start(
        config: &PeerConfig,
        identity: Arc<SigningIdentity>,
        metrics: Arc<Metrics>,
        clock: fn() -> i64,
        dialer: Arc<Dialer>,
        fatal: Fatal,
    ) -> (Self, JoinHandle<()>) {
        let settings = config.gossip.clone();
        let local_ip = config
            .gossip_listen_address
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip: &IpAddr| !ip.is_unspecified());
        let shared = Arc::new(Shared {
            endpoint: settings.external_endpoint.clone(),
            outbound: transport::Outbound::new(
                settings.external_endpoint.clone(),
                dialer.clone(),
                local_ip,
                &settings.bootstrap,
            ),
            settings,
            msp_id: config.msp_id.clone(),
            identity,
            tls_cert_hash: sha256(&dialer.tls().cert_der),
            metrics,
            channels: RwLock::default(),
            dialer,
            fatal,
            clock,
            strikes: Mutex::new(HashMap::new()),
        });
        for endpoint in &shared.settings.bootstrap {
            shared.outbound.ensure(endpoint);
        }
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
        (Gossip { shared }, heartbeat)
    }

    /// Gossips the channel `committer` commits to from now on and starts its tasks (commit,
    /// pull, push, leadership), returned for the channel to own. A channel already gossiped
    /// keeps its tasks (none are returned).
    pub fn add_channel(&self, committer: Arc<Committer>) -> Vec<JoinHandle<()>> {
        let shared = &self.shared;
        let id = committer.channel_id().to_owned();
        let channel = Arc::new(ChannelGossip::new(committer, &shared.settings));
        {
            let mut channels = shared.channels.write().unwrap_or_else(|p| p.into_inner());
            if channels.contains_key(&id) {
                return Vec::new();
            }
            channels.insert(id, channel.clone());
        }
        channel.spawn_tasks(
            shared,
            shared.identity.clone(),
            shared.dialer.clone(),
            &shared.fatal,
        )
    }

    /// Stops gossiping `channel_id` (its tasks are ended by their owner, the channel).
    pub fn remove_channel(&self, channel_id: &str) {
        self.shared
            .channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel_id);
    }

    /// The gRPC service to serve on the gossip listener (mutual TLS).
    pub fn service(&self) -> GossipServer<transport::GossipService> {
        GossipServer::new(transport::GossipService {
            shared: self.shared.clone(),
        })
        .max_decoding_message_size(transport::MESSAGE_BYTES_MAX)
        .max_encoding_message_size(transport::MESSAGE_BYTES_MAX)
    }

    /// Whether this peer currently pulls `channel` from the orderers.
    pub fn is_leader(&self, channel: &str) -> bool {
        self.shared.channel(channel).is_some_and(|c| c.is_leader())
    }

    /// Endpoints of the org members alive on `channel`.
    pub fn members_alive(&self, channel: &str) -> Vec<String> {
        self.shared
            .channel(channel)
            .map(|c| c.alive_endpoints(Instant::now()))
            .unwrap_or_default()
    }

    /// Outbound streams open or being (re)connected.
    pub fn links(&self) -> usize {
        self.shared.outbound.len()
    }

    /// Stops the outbound streams (the tasks are aborted by the node).
    pub fn stop(&self) {
        self.shared.outbound.abort_all();
    }
}

/// Every heartbeat: expire members, check claims, decide leadership, send alive messages,
/// close links no alive member vouches for.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An endpoint heard of second hand gets this long to turn out to be a member's.
    let grace = Duration::from_millis(shared.settings.alive_expiry_ms) * 3;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut keep = std::collections::HashSet::new();
        for ch in shared.channels() {
            ch.tick(&shared, now);
            keep.extend(ch.alive_endpoints(now));
            let message = ch.alive_message(&shared, now);
            shared.outbound.send_all(&message);
        }
        let closed = shared.outbound.prune(&keep, grace);
        if closed > 0 {
            tracing::debug!(
                closed,
                "gossip links to endpoints no member vouches for closed"
            );
        }
    }
}
