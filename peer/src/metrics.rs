//! Prometheus metrics of the peer: height, validation and commit time per block, transactions
//! by validation code.

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

/// Every metric the peer exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub height: Family<ChannelLabel, Gauge>,
    pub transactions: Family<CodeLabel, Counter>,
    pub validation_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub blocks_refused: Counter,
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
        Metrics {
            registry,
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

    pub fn channel(channel: &str) -> ChannelLabel {
        ChannelLabel {
            channel: channel.to_owned(),
        }
    }
}
