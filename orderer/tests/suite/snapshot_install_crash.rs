//! A follower killed while it installs a snapshot must restart. openraft 0.9 purges the log up
//! to an installed snapshot as soon as the snapshot arrives, on the Raft core, while the state
//! machine worker is still writing the snapshot: a kill in between leaves a log purged (and a
//! commit index saved) past what the state machine holds, with the entries in between gone.
//! openraft's startup then re-applies those entries and stops with a storage error, so the node
//! could never start again (seen with real processes in `process_kill.rs`:
//! `last_purged=39 last_applied=19 committed=35` → "Failed to get log entries [20, 36)").
//!
//! This test writes that crash state into a stopped follower's storage exactly as the install
//! left it (the purge point and commit index of the leader's snapshot, the state machine still
//! at its older snapshot), then restarts it.

use crate::common;

use std::time::Duration;

use common::*;
use openraft::storage::RaftLogStorage as _;
use orderer::consensus::log_store::LogStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_killed_between_the_install_purge_and_the_snapshot_write_restarts_and_converges() {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 2,
        message_count_max: 10,
        ..ClusterOptions::default()
    })
    .unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut acked = std::collections::BTreeSet::new();
    for k in 0..30u32 {
        let env = cluster.envelope(format!("before {k}").as_bytes());
        acked.insert(cluster.submit_until_ordered(&[leader], &env).await);
    }
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let applied = cluster.last_applied_index(follower);
    cluster.stop_node(follower).unwrap();

    // The others move on and snapshot past the follower.
    let snapshot = loop {
        for k in 0..10u32 {
            let env = cluster.envelope(format!("while stopped {} {k}", acked.len()).as_bytes());
            acked.insert(cluster.submit_until_ordered(&[leader, other], &env).await);
        }
        let metrics = cluster
            .node(leader)
            .registry
            .get(CHANNEL)
            .unwrap()
            .raft
            .metrics()
            .borrow()
            .clone();
        if let Some(s) = metrics.snapshot.filter(|s| s.index > applied + 5) {
            break s;
        }
        assert!(
            acked.len() < 2_000,
            "the leader never snapshotted past the follower"
        );
    };

    // The crash state of an install of that snapshot: the log purged up to it and the commit
    // index saved, the state machine's snapshot not yet written.
    {
        let db = fjall::Database::builder(data_dir(&cluster, follower).join("ledger"))
            .open()
            .unwrap();
        let mut log = LogStore::open(&db, CHANNEL).unwrap();
        log.purge(snapshot).await.unwrap();
        log.save_committed(Some(snapshot)).await.unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    cluster.start_node(follower).unwrap();
    for k in 0..10u32 {
        let env = cluster.envelope(format!("after restart {k}").as_bytes());
        acked.insert(cluster.submit_until_ordered(&[leader], &env).await);
    }
    let height = cluster
        .wait_converged(Duration::from_secs(90))
        .await
        .unwrap();
    let mut chains = Vec::new();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        chains.push(verify_chain(&cluster.channel, &blocks).unwrap());
        let counts = tx_counts(&blocks);
        for tx in &acked {
            assert_eq!(counts.get(tx), Some(&1), "node {i}: acked tx {tx} not once");
        }
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "chains differ");
}
