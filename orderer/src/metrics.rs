//! Prometheus metrics of the orderer. Counters are updated on the hot path (lock-free atomics);
//! gauges that mirror state (height, leader, pending) are refreshed when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared_proto::pb::common::Status;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

/// Every metric the orderer exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub broadcast: Family<StatusLabel, Counter>,
    pub height: Family<ChannelLabel, Gauge>,
    pub is_leader: Family<ChannelLabel, Gauge>,
    pub pending_envelopes: Family<ChannelLabel, Gauge>,
    pub raft_term: Family<ChannelLabel, Gauge>,
    pub blocks_pulled: Family<ChannelLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_orderer");
        let broadcast = Family::default();
        let height = Family::default();
        let is_leader = Family::default();
        let pending_envelopes = Family::default();
        let raft_term = Family::default();
        let blocks_pulled = Family::default();
        registry.register(
            "broadcast",
            "Envelopes answered, by status",
            broadcast.clone(),
        );
        registry.register("height", "Contiguous block height", height.clone());
        registry.register(
            "is_leader",
            "1 if this node leads the channel",
            is_leader.clone(),
        );
        registry.register(
            "pending_envelopes",
            "Ordered envelopes waiting for their block",
            pending_envelopes.clone(),
        );
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        registry.register(
            "blocks_pulled",
            "Blocks fetched from other orderers after a snapshot",
            blocks_pulled.clone(),
        );
        Metrics {
            registry,
            broadcast,
            height,
            is_leader,
            pending_envelopes,
            raft_term,
            blocks_pulled,
        }
    }
}

impl Metrics {
    pub fn broadcast(&self, status: Status) {
        self.broadcast
            .get_or_create(&StatusLabel {
                status: status.as_str_name().to_owned(),
            })
            .inc();
    }

    pub fn channel(channel: &str) -> ChannelLabel {
        ChannelLabel {
            channel: channel.to_owned(),
        }
    }
}
