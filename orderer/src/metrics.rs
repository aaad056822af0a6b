//! Prometheus metrics of the orderer. Counters are updated on the hot path (lock-free atomics);
//! gauges that mirror state (height, Raft view, pending) are refreshed when scraped
//! ([`Metrics::refresh`]); the leader-change counter is kept by a per-channel watcher of
//! openraft's metrics ([`Metrics::count_leader_changes`]). Every metric is described, with the
//! queries operators alert on, in `docs/metrics.md`.

use std::future::Future;
use std::time::Instant;

use openraft::BasicNode;
use openraft::RaftMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared_proto::pb::common::Status;
use tokio::sync::watch;

use crate::channels::ChannelRuntime;
use crate::consensus::NodeId;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CutLabel {
    pub channel: String,
    pub reason: String,
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
    pub leader_changes: Family<ChannelLabel, Counter>,
    pub cluster_size: Family<ChannelLabel, Gauge>,
    pub active_nodes: Family<ChannelLabel, Gauge>,
    pub committed_block_number: Family<ChannelLabel, Gauge>,
    pub snapshot_index: Family<ChannelLabel, Gauge>,
    pub raft_log_entries: Family<ChannelLabel, Gauge>,
    pub config_sequence: Family<ChannelLabel, Gauge>,
    pub blocks_cut: Family<CutLabel, Counter>,
    pub broadcast_signatures: Counter,
    pub broadcast_signature_batches: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_orderer");
        let broadcast = Family::default();
        registry.register(
            "broadcast",
            "Envelopes answered, by status",
            broadcast.clone(),
        );
        let r = &mut registry;
        let height = per_channel(r, "height", "Contiguous block height");
        let is_leader = per_channel(r, "is_leader", "1 if this node leads the channel");
        let pending_envelopes = per_channel(
            r,
            "pending_envelopes",
            "Ordered envelopes waiting for their block",
        );
        let raft_term = per_channel(r, "raft_term", "Current Raft term");
        let blocks_pulled = per_channel(
            r,
            "blocks_pulled",
            "Blocks fetched from other orderers after a snapshot",
        );
        let leader_changes = per_channel(
            r,
            "leader_changes",
            "Times this node saw the channel's Raft leader change (to another node, to none, \
             or re-elected in a later term), its own elections included",
        );
        let cluster_size =
            per_channel(r, "cluster_size", "Voters in the channel's Raft membership");
        let active_nodes = per_channel(
            r,
            "active_nodes",
            "On the leader: voters it heard from within the quorum-silence bound, itself \
             included; 0 on a node that does not lead",
        );
        let committed_block_number = per_channel(
            r,
            "committed_block_number",
            "Number of the last block in this node's block store (height - 1)",
        );
        let snapshot_index = per_channel(
            r,
            "snapshot_index",
            "Raft log index of the last snapshot (0 before the first)",
        );
        let raft_log_entries = per_channel(
            r,
            "raft_log_entries",
            "Raft log entries held: last log index minus the last purged index",
        );
        let config_sequence = per_channel(
            r,
            "config_sequence",
            "Sequence of the channel config in force",
        );
        let blocks_cut = Family::default();
        registry.register(
            "blocks_cut",
            "Blocks this node cut since it started, by reason: count (message_count_max), \
             bytes (bytes_preferred_max), large (one envelope over it, alone), timeout (the \
             batch timeout), config (a config block and the envelopes cut ahead of it)",
            blocks_cut.clone(),
        );
        let broadcast_signatures = Counter::default();
        registry.register(
            "broadcast_signatures_verified",
            "Creator signatures of Broadcast envelopes verified (in batches across streams)",
            broadcast_signatures.clone(),
        );
        let broadcast_signature_batches = Counter::default();
        registry.register(
            "broadcast_signature_batches",
            "Batches those signatures were verified in (signatures / batches = mean batch)",
            broadcast_signature_batches.clone(),
        );
        Metrics {
            registry,
            blocks_cut,
            broadcast_signatures,
            broadcast_signature_batches,
            broadcast,
            height,
            is_leader,
            pending_envelopes,
            raft_term,
            blocks_pulled,
            leader_changes,
            cluster_size,
            active_nodes,
            committed_block_number,
            snapshot_index,
            raft_log_entries,
            config_sequence,
        }
    }
}

/// Registers a metric labelled by channel.
fn per_channel<M>(registry: &mut Registry, name: &str, help: &str) -> Family<ChannelLabel, M>
where
    M: Default,
    Family<ChannelLabel, M>: prometheus_client::registry::Metric + Clone,
{
    let family = Family::default();
    registry.register(name, help, family.clone());
    family
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

    /// Sets every gauge of channel `ch` from its current state (called on each scrape).
    pub fn refresh(&self, node_id: NodeId, ch: &ChannelRuntime) {
        let label = Metrics::channel(&ch.id);
        let set = |family: &Family<ChannelLabel, Gauge>, value: u64| {
            family
                .get_or_create(&label)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        let raft = ch.raft.metrics().borrow().clone();
        let leads = raft.current_leader == Some(node_id);
        let height = ch.store.height();
        set(&self.height, height);
        // -1 for an empty store (not seen in practice: the genesis block is stored at start).
        self.committed_block_number
            .get_or_create(&label)
            .set(i64::try_from(height).unwrap_or(i64::MAX) - 1);
        set(&self.is_leader, u64::from(leads));
        set(&self.raft_term, raft.current_term);
        set(&self.pending_envelopes, ch.status.borrow().pending as u64);
        let voters = || raft.membership_config.membership().voter_ids();
        set(&self.cluster_size, voters().count() as u64);
        let active = if leads {
            let bound = crate::consensus::quorum_silence_max(ch.raft.config());
            ch.liveness.active(voters(), node_id, Instant::now(), bound)
        } else {
            0
        };
        set(&self.active_nodes, active as u64);
        set(&self.snapshot_index, raft.snapshot.map_or(0, |l| l.index));
        set(&self.raft_log_entries, log_entries(&raft));
        set(&self.config_sequence, config_sequence(ch));
        let cut = ch.status.borrow().blocks_cut;
        for reason in crate::cutter::CutReason::ALL {
            let label = CutLabel {
                channel: ch.id.clone(),
                reason: reason.as_str().to_owned(),
            };
            // The state machine keeps the totals; scrapes only move the counter up to them.
            self.blocks_cut
                .get_or_create(&label)
                .inner()
                .fetch_max(cut[reason.index()], std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts, for `channel`, every change of the Raft leader openraft's metrics show: to
    /// another node, to none, or the same node in a later term (it was re-elected: the leader
    /// was none in between even if this watch did not see it). Changes between two updates of
    /// the watch coalesce, so this is a lower bound. The future ends when the Raft stops (the
    /// watch closes); the node also aborts it on shutdown.
    pub fn count_leader_changes(
        &self,
        channel: &str,
        mut raft: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let counter = self
            .leader_changes
            .get_or_create(&Metrics::channel(channel))
            .clone();
        async move {
            let mut seen: Option<(NodeId, u64)> = None;
            loop {
                let now = {
                    let m = raft.borrow_and_update();
                    m.current_leader.map(|l| (l, m.current_term))
                };
                if now != seen {
                    counter.inc();
                    seen = now;
                }
                if raft.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The sequence of the channel config in force: the one place it is read for metrics.
fn config_sequence(ch: &ChannelRuntime) -> u64 {
    ch.config().sequence()
}

/// Entries between the last purged index (inclusive, gone) and the last log index. openraft's
/// first entry has index 0, so an unpurged log holds `last + 1`.
fn log_entries(raft: &RaftMetrics<NodeId, BasicNode>) -> u64 {
    match (raft.last_log_index, raft.purged) {
        (None, _) => 0,
        (Some(last), None) => last.saturating_add(1),
        (Some(last), Some(purged)) => last.saturating_sub(purged.index),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::CommittedLeaderId;
    use openraft::LogId;

    use super::*;

    /// Waits (bounded) until `counter` reads `n`.
    async fn reaches(counter: &Counter, n: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while counter.get() != n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "counter {} never reached {n}",
            counter.get()
        );
    }

    #[tokio::test]
    async fn leader_changes_count_new_leader_none_and_re_election_and_stop_with_raft() {
        let metrics = Metrics::default();
        let (tx, rx) = watch::channel(RaftMetrics::<NodeId, BasicNode>::new_initial(1));
        let task = tokio::spawn(metrics.count_leader_changes("ch", rx));
        let counter = metrics
            .leader_changes
            .get_or_create(&Metrics::channel("ch"))
            .clone();
        let lead = |leader: Option<NodeId>, term: u64| {
            tx.send_modify(|m| {
                m.current_leader = leader;
                m.current_term = term;
            })
        };
        reaches(&counter, 0).await;
        lead(Some(2), 1);
        reaches(&counter, 1).await;
        lead(Some(2), 1); // same leader, same term: no change
        lead(None, 2);
        reaches(&counter, 2).await;
        lead(Some(1), 2); // this node won
        reaches(&counter, 3).await;
        lead(Some(1), 3); // re-elected in a later term
        reaches(&counter, 4).await;
        drop(tx);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(ended.is_ok(), "watcher did not end when the Raft stopped");
        assert_eq!(counter.get(), 4);
    }

    #[test]
    fn log_entries_run_from_the_purge_point_to_the_last_index() {
        let mut m = RaftMetrics::<NodeId, BasicNode>::new_initial(1);
        assert_eq!(log_entries(&m), 0);
        m.last_log_index = Some(9);
        assert_eq!(log_entries(&m), 10);
        m.purged = Some(LogId::new(CommittedLeaderId::new(1, 1), 6));
        assert_eq!(log_entries(&m), 3);
    }
}
