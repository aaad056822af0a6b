//! Address overrides (issue 11, "Addresses"): where an orderer listens, what it advertises
//! and what the others dial are separate. Here every consenter advertises
//! `orderer{n}.weft.invalid` (a name no resolver answers) in the genesis config, and each node's
//! `address_overrides` send every link, cluster and client port, through a TCP forwarder of its
//! own that counts bytes. TLS still verifies each certificate for the advertised name.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Submits `count` envelopes, each to the next node in turn (so followers forward to the
/// leader over their own links); returns their tx ids.
async fn submit_round_robin(cluster: &TestCluster, tag: &str, count: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for k in 0..count {
        let env = cluster.envelope(format!("{tag}-{k}").as_bytes());
        ids.insert(cluster.submit_until_ordered(&[k % 3], &env).await);
    }
    ids
}

/// Every node serves the same verified chain holding each of `acked` exactly once.
async fn assert_same_chain(cluster: &TestCluster, acked: &BTreeSet<String>) -> u64 {
    let height = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let mut chains = Vec::new();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        chains.push(verify_chain(&cluster.channel, &blocks).unwrap());
        let counts = tx_counts(&blocks);
        for id in acked {
            assert_eq!(counts.get(id), Some(&1), "node {i}: tx {id}");
        }
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "chains differ");
    height
}

#[test]
fn consenters_advertising_unresolvable_names_order_through_overridden_links() {
    let mut cluster = TestCluster::start(ClusterOptions {
        links: Links::Forwarded,
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 5,
        message_count_max: 10,
        ..ClusterOptions::default()
    })
    .unwrap();
    let rt = runtime();
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    let mut acked = rt.block_on(submit_round_robin(&cluster, "first", 30));
    rt.block_on(assert_same_chain(&cluster, &acked));
    let links = cluster.links.as_ref().unwrap();
    let mut carried = Vec::new();
    for from in 0..3 {
        for to in (0..3).filter(|to| *to != from) {
            carried.push(format!("{from}->{to}: {} B", links.cluster_bytes(from, to)));
        }
    }
    println!("leader {leader}; cluster links: {}", carried.join(", "));
    for other in (0..3).filter(|i| *i != leader) {
        assert!(
            links.cluster_bytes(leader, other) > 0,
            "leader {leader} reached {other} without its forwarder"
        );
        assert!(
            links.cluster_bytes(other, leader) > 0,
            "{other} forwarded to leader {leader} without its forwarder"
        );
    }

    // A follower behind a snapshot catches up by pulling blocks from the others' client
    // ports (catch-up's Deliver), which it can reach only through its overrides too.
    let follower = (leader + 1) % 3;
    cluster.stop_node(follower).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    rt.block_on(async {
        for k in 0..150 {
            let env = cluster.envelope(format!("behind-{k}").as_bytes());
            acked.insert(cluster.submit_until_ordered(&[others[k % 2]], &env).await);
        }
    });
    let links = cluster.links.as_ref().unwrap();
    let pulled_before: u64 = others
        .iter()
        .map(|to| links.client_bytes(follower, *to))
        .sum();
    cluster.start_node(follower).unwrap();
    rt.block_on(assert_same_chain(&cluster, &acked));
    let links = cluster.links.as_ref().unwrap();
    let pulled = cluster
        .node(follower)
        .registry
        .metrics
        .blocks_pulled
        .get_or_create(&orderer::metrics::Metrics::channel(CHANNEL))
        .get();
    let pulled_bytes: u64 = others
        .iter()
        .map(|to| links.client_bytes(follower, *to))
        .sum();
    println!("follower {follower} pulled {pulled} blocks, {pulled_bytes} B through client links (before restart {pulled_before} B)");
    assert!(pulled > 0, "the follower caught up without pulling blocks");
    assert!(
        pulled_bytes > pulled_before,
        "catch-up pulled blocks without going through the forwarders"
    );
}

#[test]
fn consenters_advertising_unresolvable_names_without_overrides_elect_no_leader() {
    // The control: the same names with nothing mapping them leave every node unable to reach
    // another. Several election timeouts (400-800 ms here) pass without a leader.
    let cluster = TestCluster::start(ClusterOptions {
        links: Links::NamesOnly,
        ..ClusterOptions::default()
    })
    .unwrap();
    let rt = runtime();
    let waited = rt.block_on(cluster.wait_for_leader(Duration::from_secs(3)));
    assert!(
        waited.is_err(),
        "a leader was elected with no way to dial: {waited:?}"
    );
}
