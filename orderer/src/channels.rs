//! The channels this node serves: per channel its checked config, Raft group, block store,
//! proposer and state-machine status. Services look channels up here.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shared_proto::channel::Channel;
use tokio::sync::watch;

use crate::block_store::BlockStore;
use crate::broadcast::InFlightBytes;
use crate::consensus::heard::HeardFrom;
use crate::consensus::proposer::Proposer;
use crate::consensus::rejoin::Rejoin;
use crate::consensus::state_machine::SmStatus;
use crate::consensus::NodeId;
use crate::consensus::Raft;
use crate::cutter::BatchLimits;
use crate::metrics::Metrics;

/// One channel as this node runs it.
pub struct ChannelRuntime {
    pub id: String,
    pub config: Arc<Channel>,
    pub raft: Raft,
    pub store: BlockStore,
    pub proposer: Proposer,
    pub status: watch::Receiver<SmStatus>,
    pub limits: BatchLimits,
    /// How this node's Raft for the channel started, and whether it may vote yet.
    pub rejoin: Rejoin,
    /// When each other consenter's Raft last answered this node (the `active_nodes` metric).
    pub heard: Arc<HeardFrom>,
}

impl std::fmt::Debug for ChannelRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRuntime")
            .field("id", &self.id)
            .field("height", &self.store.height())
            .finish_non_exhaustive()
    }
}

impl ChannelRuntime {
    /// Whether `cert_der` is the client TLS certificate of a consenter of this channel.
    pub fn is_pinned_consenter(&self, cert_der: &[u8]) -> bool {
        self.config
            .consenters()
            .iter()
            .any(|c| c.client_tls_cert == cert_der)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

/// Every channel of the node, plus what services share.
#[derive(Debug)]
pub struct Registry {
    pub node_id: NodeId,
    pub channels: BTreeMap<String, Arc<ChannelRuntime>>,
    pub metrics: Arc<Metrics>,
    /// Current time in Unix seconds (injected so tests can move it).
    pub clock: fn() -> i64,
    /// Bytes of envelopes in progress on this node (every channel).
    pub in_flight: InFlightBytes,
    /// Seconds added to `clock`: 0 in production; tests move one node's time with it (e.g.
    /// past a client certificate's expiry).
    pub clock_skew_secs: AtomicI64,
}

impl Registry {
    pub fn get(&self, channel_id: &str) -> Option<&Arc<ChannelRuntime>> {
        self.channels.get(channel_id)
    }

    pub fn now_unix(&self) -> i64 {
        (self.clock)().saturating_add(self.clock_skew_secs.load(Ordering::Relaxed))
    }
}

pub use shared_proto::system_clock;
