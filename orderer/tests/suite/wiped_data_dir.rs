//! A consenter whose data dir was wiped must not re-initialize Raft for a cluster that exists:
//! it joins (no initialize, no vote in a term it may have voted in before) and catches up from
//! the others; a cluster's first boot still initializes.

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use orderer::consensus::rejoin::RaftStart;

fn start_of(cluster: &TestCluster, i: usize) -> RaftStart {
    cluster
        .node(i)
        .registry
        .get(CHANNEL)
        .unwrap()
        .rejoin
        .start()
}

/// Before the fix the wiped node called `initialize` with the genesis membership and forgot
/// its vote (it started as a first boot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consenter_with_a_wiped_data_dir_joins_without_initializing_and_catches_up() {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 2,
        ..ClusterOptions::default()
    })
    .unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    // A first boot: some node initializes; one that hears of it first may join it instead.
    let mut starts = Vec::new();
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while start_of(&cluster, i) == RaftStart::Deciding {
            assert!(Instant::now() < deadline, "node {i} never decided");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        starts.push(start_of(&cluster, i));
    }
    assert!(starts.contains(&RaftStart::FirstBoot), "{starts:?}");
    assert!(
        starts
            .iter()
            .all(|s| matches!(s, RaftStart::FirstBoot | RaftStart::Joined { .. })),
        "{starts:?}"
    );
    let victim = (leader + 1) % 3;
    for k in 0..60u32 {
        cluster
            .submit_until_ordered(&[leader], &cluster.envelope(&k.to_be_bytes()))
            .await;
    }
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();

    cluster.stop_node(victim).unwrap();
    std::fs::remove_dir_all(data_dir(&cluster, victim)).unwrap();
    cluster.start_node(victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while start_of(&cluster, victim) == RaftStart::Deciding {
        assert!(Instant::now() < deadline, "wiped node never decided");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = start_of(&cluster, victim);
    assert!(
        matches!(start, RaftStart::Joined { term, .. } if term >= 1),
        "wiped node started as {start:?}"
    );
    // The cluster keeps ordering, and the wiped node catches up to an identical chain.
    for k in 0..20u32 {
        cluster
            .submit_until_ordered(
                &[victim],
                &cluster.envelope(format!("after wipe {k}").as_bytes()),
            )
            .await;
    }
    let height = cluster
        .wait_converged(Duration::from_secs(90))
        .await
        .unwrap();
    let mut chains = Vec::new();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        chains.push(verify_chain(&cluster.channel, &blocks).unwrap());
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "chains differ");
}
