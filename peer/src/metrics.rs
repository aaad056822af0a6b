//! Prometheus metrics of the peer: height, validation and commit time per block, transactions
//! by validation code, and gossip (members alive, blocks by push and pull, leader, lag, drops).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared_proto::pb::tx::TxValidationCode;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

/// How a block reached this peer by gossip (`push` or `pull`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// Why a gossip message was dropped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every metric the peer exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub height: Family<ChannelLabel, Gauge>,
    pub transactions: Family<CodeLabel, Counter>,
    pub validation_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub blocks_refused: Counter,
    pub gossip_members_alive: Family<ChannelLabel, Gauge>,
    pub gossip_blocks_received: Family<SourceLabel, Counter>,
    pub gossip_leader: Family<ChannelLabel, Gauge>,
    pub gossip_height_lag: Family<ChannelLabel, Gauge>,
    pub gossip_dropped: Family<ReasonLabel, Counter>,
    pub gossip_pull_requests: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_peer");
        let height = Family::default();
        let transactions = Family::default();
        let validation_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let blocks_refused = Counter::default();
        registry.register("height", "Committed block height", height.clone());
        registry.register(
            "transactions",
            "Committed transactions by validation code",
            transactions.clone(),
        );
        registry.register(
            "validation_seconds",
            "Validation time per block",
            validation_seconds.clone(),
        );
        registry.register(
            "commit_seconds",
            "Ledger commit time per block",
            commit_seconds.clone(),
        );
        registry.register(
            "blocks_refused",
            "Blocks refused (bad signature, broken chain)",
            blocks_refused.clone(),
        );
        let gossip_members_alive = Family::default();
        let gossip_blocks_received = Family::default();
        let gossip_leader = Family::default();
        let gossip_height_lag = Family::default();
        let gossip_dropped = Family::default();
        let gossip_pull_requests = Counter::default();
        registry.register(
            "gossip_pull_requests",
            "State requests sent to fellow peers",
            gossip_pull_requests.clone(),
        );
        registry.register(
            "gossip_members_alive",
            "Org peers heard from within the alive expiry",
            gossip_members_alive.clone(),
        );
        registry.register(
            "gossip_blocks_received",
            "Blocks committed after arriving by gossip, by push or pull",
            gossip_blocks_received.clone(),
        );
        registry.register(
            "gossip_leader",
            "1 while this peer pulls the channel from the orderers",
            gossip_leader.clone(),
        );
        registry.register(
            "gossip_height_lag",
            "Blocks this peer is behind the highest org peer it hears from",
            gossip_height_lag.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossip messages dropped, by reason",
            gossip_dropped.clone(),
        );
        Metrics {
            registry,
            gossip_members_alive,
            gossip_blocks_received,
            gossip_leader,
            gossip_height_lag,
            gossip_dropped,
            gossip_pull_requests,
            height,
            transactions,
            validation_seconds,
            commit_seconds,
            blocks_refused,
        }
    }
}

impl Metrics {
    pub fn observe_block(
        &self,
        codes: &[TxValidationCode],
        validation: Duration,
        commit: Duration,
    ) {
        for code in codes {
            self.transactions
                .get_or_create(&CodeLabel {
                    code: code.as_str_name().to_owned(),
                })
                .inc();
        }
        self.validation_seconds.observe(validation.as_secs_f64());
        self.commit_seconds.observe(commit.as_secs_f64());
    }

    /// Counts a dropped gossip message.
    pub fn gossip_drop(&self, reason: &str) {
        self.gossip_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Gossip counter value by reason (tests and status).
    pub fn gossip_dropped_count(&self, reason: &str) -> u64 {
        self.gossip_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .get()
    }

    /// Counts a block committed after arriving by gossip.
    pub fn gossip_received(&self, source: &str) {
        self.gossip_blocks_received
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// Blocks committed after arriving by `source` (`push` or `pull`).
    pub fn gossip_received_count(&self, source: &str) -> u64 {
        self.gossip_blocks_received
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .get()
    }

    pub fn channel(channel: &str) -> ChannelLabel {
        ChannelLabel {
            channel: channel.to_owned(),
        }
    }
}
