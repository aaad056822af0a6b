//! Envelopes forwarded between consenters: the leader re-checks what a forwarder cannot vouch
//! for, and an envelope the state machine refuses is never answered SUCCESS.

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use prost::Message as _;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::ForwardRequest;

/// Forwards `env` to node `to` with node `from`'s cluster certificate, as a follower does.
async fn forward_as(
    cluster: &TestCluster,
    from: usize,
    to: usize,
    env: &Envelope,
) -> (Status, String) {
    let tls = cluster.generated.orderers[from].dir.join("tls");
    let mut c = cluster.cluster_client_as(to, Some(&tls));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = tonic::Request::new(ForwardRequest {
            channel_id: CHANNEL.into(),
            envelopes: vec![env.encode_to_vec()],
        });
        request.set_timeout(Duration::from_secs(30));
        let r = c.forward(request).await.unwrap().into_inner();
        assert_eq!(r.results.len(), 1);
        let r = &r.results[0];
        let status = Status::try_from(r.status).unwrap();
        // A leader that has just been elected may not take writes yet: retry that alone.
        if status != Status::ServiceUnavailable || Instant::now() > deadline {
            return (status, r.info.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Before the fix the leader proposed forwarded envelopes without looking at its tx index; an
/// envelope older than the retry window (forwarded by a follower whose blocks have a gap, so its
/// own index check passes) was ordered a second time and answered SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_older_than_the_retry_window_forwarded_by_a_lagging_follower_is_refused_and_ordered_once(
) {
    let cluster = TestCluster::start(ClusterOptions {
        retry_window_txs: 10,
        ..ClusterOptions::default()
    })
    .unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let follower = (leader + 1) % 3;
    let old = cluster.envelope(b"ordered long ago");
    cluster.submit_until_ordered(&[leader], &old).await;
    for k in 0..30u32 {
        cluster
            .submit_until_ordered(&[leader], &cluster.envelope(&k.to_be_bytes()))
            .await;
    }
    let height = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();

    let (status, info) = forward_as(&cluster, follower, leader, &old).await;
    assert_eq!(status, Status::Conflict, "{info}");

    // One more envelope cuts a block after anything the forward might have proposed.
    cluster
        .submit_until_ordered(&[leader], &cluster.envelope(b"last"))
        .await;
    let height = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap()
        .max(height);
    let blocks = cluster.deliver_all(leader, height - 1).await.unwrap();
    let old_id = orderer::block_store::tx_id_of(&old.encode_to_vec()).unwrap();
    assert_eq!(tx_counts(&blocks).get(&old_id), Some(&1), "ordered twice");
}

/// Before the fix every envelope of a committed entry was answered SUCCESS, including one the
/// cutter refused for exceeding `bytes_absolute_max` (it is in no block).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_over_the_limit_in_a_committed_entry_is_never_answered_success() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let limit = cluster.channel.batch_size().bytes_absolute_max as usize;
    let oversized = cluster.envelope(&vec![7u8; limit + 1024]);
    // A consenter's forward is proposed as it is (the forwarder checked it, with a limit that a
    // config change may have lowered since): the state machine is the last line.
    let (status, info) = forward_as(&cluster, (leader + 1) % 3, leader, &oversized).await;
    assert_eq!(status, Status::RequestEntityTooLarge, "{info}");
    cluster
        .submit_until_ordered(&[leader], &cluster.envelope(b"after"))
        .await;
    let height = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let blocks = cluster.deliver_all(leader, height - 1).await.unwrap();
    let id = orderer::block_store::tx_id_of(&oversized.encode_to_vec()).unwrap();
    assert_eq!(tx_counts(&blocks).get(&id), None);
}

/// The same through a real follower: it is paused while the envelope is ordered and pushed out
/// of the retry window (and past the others' snapshots), then resumed and sent the envelope at
/// once, while its own blocks still lack it. Whichever node answers, the answer is
/// ALREADY_EXISTS and the envelope is in the chain once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_older_than_the_retry_window_resubmitted_to_a_follower_catching_up_is_refused() {
    let mut cluster = TestCluster::start(ClusterOptions {
        retry_window_txs: 10,
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 2,
        ..ClusterOptions::default()
    })
    .unwrap();
    let procs = common::processes::OrdererProcesses::take_over(&mut cluster).unwrap();
    let leader = common::processes::OrdererProcesses::wait_for_leader(
        &cluster,
        &[0, 1, 2],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let follower = (leader + 1) % 3;
    procs.signal(follower, "STOP").unwrap();
    let old = cluster.envelope(b"ordered while the follower was paused");
    cluster.submit_until_ordered(&[leader], &old).await;
    for k in 0..60u32 {
        cluster
            .submit_until_ordered(&[leader], &cluster.envelope(&k.to_be_bytes()))
            .await;
    }
    procs.signal(follower, "CONT").unwrap();
    let mut request = tonic::Request::new(old.clone());
    request.set_timeout(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        match cluster.client(follower).submit(request).await {
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                request = tonic::Request::new(old.clone());
                request.set_timeout(Duration::from_secs(30));
            }
            other => break other,
        }
    };
    let status = answer.expect_err("a resubmitted old envelope was accepted");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");

    cluster
        .submit_until_ordered(&[leader], &cluster.envelope(b"last"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let height = loop {
        let mut heights = Vec::new();
        for i in 0..3 {
            let st = common::processes::OrdererProcesses::status(&cluster, i)
                .await
                .unwrap();
            heights.push((st["height"].as_u64().unwrap(), st["pending"].as_u64()));
        }
        if heights.iter().all(|h| *h == (heights[0].0, Some(0))) {
            break heights[0].0;
        }
        assert!(Instant::now() < deadline, "{heights:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old_id = orderer::block_store::tx_id_of(&old.encode_to_vec()).unwrap();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        assert_eq!(tx_counts(&blocks).get(&old_id), Some(&1), "node {i}");
    }
}
