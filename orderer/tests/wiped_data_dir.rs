//! A consenter whose data dir was wiped must not re-initialize Raft for a cluster that exists:
//! it joins (no initialize, no vote in a term it may have voted in before) and catches up from
//! the others; a cluster's first boot still initializes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use orderer::consensus::rejoin::RaftStart;
use tonic::Code;

async fn submit_until_ordered(cluster: &TestCluster, node: usize, body: &[u8]) {
    let env = cluster.envelope(body);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = tonic::Request::new(env.clone());
        request.set_timeout(Duration::from_secs(15));
        match cluster.client(node).submit(request).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::AlreadyExists => return,
            Err(s) => assert!(Instant::now() < deadline, "never ordered: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while start_of(&cluster, i) == RaftStart::Deciding {
            assert!(Instant::now() < deadline, "node {i} never decided");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(start_of(&cluster, i), RaftStart::FirstBoot, "node {i}");
    }
    let victim = (leader + 1) % 3;
    for k in 0..60u32 {
        submit_until_ordered(&cluster, leader, &k.to_be_bytes()).await;
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
        submit_until_ordered(&cluster, victim, format!("after wipe {k}").as_bytes()).await;
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
