//! Issue 10 item 4 as a cluster scenario: a follower that lags behind the others' snapshot
//! catches up by pulling blocks, and its clock is past the expiry of the certificates that
//! signed those blocks. Peers verify blocks without a validity window; catch-up must too, or a
//! lagging orderer can never close its gap once an orderer certificate has expired.
//!
//! Only the follower's clock moves (`Registry::clock_skew_secs`), and only as far as the
//! certificates need: every certificate expires 10 minutes after the cluster starts, the
//! follower's clock runs 12 minutes ahead. The others still accept its catch-up requests: its
//! seek timestamps are inside their ±15-minute window and its own certificate is valid on
//! their clocks. (With every clock past expiry, the serving orderers would rightly refuse the
//! lagging orderer's expired certificate; that case needs certificate renewal.)

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ClusterOptions;
use common::TestCluster;
use common::CHANNEL;
use futures::StreamExt as _;
use shared_proto::block;
use shared_proto::block::BlockError;
use shared_proto::block::Expected;

const EXPIRE_IN_SECS: i64 = 600;
const FOLLOWER_AHEAD_SECS: i64 = 720;

/// Submits `count` envelopes, 4 at a time, to the nodes in `to`; returns the acked tx ids.
async fn load(cluster: &TestCluster, to: &[usize], count: usize, tag: &str) -> BTreeSet<String> {
    let envelopes: Vec<_> = (0..count)
        .map(|n| cluster.envelope(format!("{tag} {n:05} {}", "x".repeat(200)).as_bytes()))
        .collect();
    futures::stream::iter(envelopes.iter())
        .map(|env| cluster.submit_until_ordered(to, env))
        .buffer_unordered(4)
        .collect::<BTreeSet<String>>()
        .await
}

#[test]
fn follower_behind_a_snapshot_catches_up_with_its_clock_past_the_orderer_certificates_expiry() {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 5,
        message_count_max: 10,
        certificates_expire_in_secs: Some(EXPIRE_IN_SECS),
        ..ClusterOptions::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut acked = rt.block_on(load(&cluster, &[leader, other], 100, "before"));
    rt.block_on(cluster.wait_converged(Duration::from_secs(60)))
        .unwrap();
    let follower_index = cluster.last_applied_index(follower);
    cluster.stop_node(follower).unwrap();
    // Small batches: many Raft entries, so the others snapshot and purge past the follower.
    acked.extend(rt.block_on(load(&cluster, &[leader, other], 600, "while behind")));
    let purged = cluster
        .node(leader)
        .registry
        .get(CHANNEL)
        .unwrap()
        .raft
        .metrics()
        .borrow()
        .purged
        .map_or(0, |p| p.index);
    assert!(
        purged > follower_index,
        "leader purged its log up to {purged}, not past the follower's {follower_index}"
    );

    cluster.start_node(follower).unwrap();
    let registry = cluster.node(follower).registry.clone();
    registry
        .clock_skew_secs
        .store(FOLLOWER_AHEAD_SECS, Ordering::Relaxed);

    // On the follower's clock the orderer certificates have expired: verifying block 1 with a
    // validity window at that time fails, as catch-up did before the fix.
    let blocks = rt.block_on(cluster.deliver_all(leader, 1)).unwrap();
    let genesis_hash = block::header_hash(&blocks[0]).unwrap();
    let at_follower_clock = block::verify_block(
        &cluster.channel,
        &blocks[1],
        Expected {
            number: 1,
            previous_hash: Some(genesis_hash),
        },
        registry.now_unix(),
    );
    assert!(
        matches!(at_follower_clock, Err(BlockError::BadSignature { .. })),
        "orderer certificates not expired on the follower's clock: {at_follower_clock:?}"
    );

    let height = rt
        .block_on(cluster.wait_converged(Duration::from_secs(90)))
        .unwrap();
    let pulled = registry
        .metrics
        .blocks_pulled
        .get_or_create(&orderer::metrics::Metrics::channel(CHANNEL))
        .get();
    assert!(pulled > 0, "the follower caught up without pulling blocks");

    // Compare chains through Deliver; the client's certificate has expired on the follower's
    // clock too, so put it back first.
    registry.clock_skew_secs.store(0, Ordering::Relaxed);
    rt.block_on(async {
        let mut reference = None;
        for i in 0..3 {
            let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
            assert_eq!(
                blocks.len() as u64,
                height,
                "node {i} delivered a short chain"
            );
            let hashes = common::verify_chain(&cluster.channel, &blocks).unwrap();
            match &reference {
                None => reference = Some(hashes),
                Some(r) => assert_eq!(r, &hashes, "node {i} has a different chain"),
            }
            let counts = common::tx_counts(&blocks);
            for id in &acked {
                assert_eq!(counts.get(id), Some(&1), "acked tx {id} on node {i}");
            }
        }
    });
}
