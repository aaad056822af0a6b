//! Many channels per node and channel participation: two channels with different batch
//! settings order independently on the same three orderers, a third is joined at run time,
//! removing one deletes its data while the others keep ordering, and every bad join or
//! remove is refused with its own status and changes nothing.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use common::*;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::JoinChannelRequest;
use shared_proto::pb::orderer::ListChannelsRequest;
use shared_proto::pb::orderer::RemoveChannelRequest;

const SMALL: &str = "small-blocks";
const LATER: &str = "joined-later";

fn tx(cluster: &TestCluster, channel: &str, body: String) -> Envelope {
    envelope::create_signed_envelope(
        &cluster.client,
        HeaderType::EndorserTransaction,
        channel,
        body.into_bytes(),
        envelope::new_nonce(),
        now_unix() as u64 * 1000,
    )
}

/// Submits `env` to node 0, 1, 2 in turn until it is ordered (90 s).
async fn order(cluster: &TestCluster, env: &Envelope) {
    cluster.submit_until_ordered(&[0, 1, 2], env).await;
}

fn blocks(cluster: &TestCluster, i: usize, channel: &str) -> Vec<Block> {
    let ch = cluster.node(i).registry.get(channel).unwrap();
    (0..ch.store.height())
        .map(|n| ch.store.get(n).unwrap().unwrap())
        .collect()
}

async fn wait_height(cluster: &TestCluster, channel: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let heights: Vec<u64> = (0..3)
            .map(|i| {
                cluster
                    .node(i)
                    .registry
                    .get(channel)
                    .map_or(0, |c| c.store.height())
            })
            .collect();
        if heights.iter().all(|h| *h >= at_least) && heights.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(Instant::now() < deadline, "{channel}: heights {heights:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn listed(cluster: &TestCluster, i: usize) -> BTreeSet<String> {
    let list = cluster
        .orderer_admin_client(i)
        .list_channels(cluster.orderer_admin_request("", &ListChannelsRequest {}))
        .await
        .unwrap()
        .into_inner();
    list.channels.into_iter().map(|c| c.channel_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_order_independently_one_joins_at_run_time_and_a_removed_one_leaves_no_data() {
    let mut cluster = TestCluster::start(ClusterOptions {
        extra_channels: vec![(SMALL.into(), 2, true), (LATER.into(), 100, false)],
        ..Default::default()
    })
    .unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(listed(&cluster, 0).await, set(&[CHANNEL, SMALL]));

    // Two channels, one node set, different batch settings: 12 envelopes each, at once.
    let envs: Vec<Envelope> = (0..12)
        .flat_map(|k| {
            [
                tx(&cluster, CHANNEL, format!("big {k}")),
                tx(&cluster, SMALL, format!("small {k}")),
            ]
        })
        .collect();
    futures::future::join_all(envs.iter().map(|e| order(&cluster, e))).await;
    // Node 0 may still be applying what the leader committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    for channel in [CHANNEL, SMALL] {
        while tx_counts(&blocks(&cluster, 0, channel)).len() < 12 {
            assert!(
                Instant::now() < deadline,
                "{channel}: node 0 never held all 12"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let small = blocks(&cluster, 0, SMALL);
    assert!(
        small
            .iter()
            .skip(1)
            .all(|b| b.data.as_ref().unwrap().data.len() <= 2),
        "{SMALL} holds blocks over its message_count_max of 2"
    );
    assert!(small.len() >= 7, "{SMALL}: {} blocks", small.len());
    for channel in [CHANNEL, SMALL] {
        let counts = tx_counts(&blocks(&cluster, 0, channel));
        assert_eq!(counts.len(), 12, "{channel}: {counts:?}");
    }

    // A third channel, joined at run time on every orderer with its genesis block.
    let genesis = std::fs::read(cluster.genesis_path(LATER)).unwrap();
    for i in 0..3 {
        let join = JoinChannelRequest {
            block: genesis.clone(),
        };
        let info = cluster
            .orderer_admin_client(i)
            .join_channel(cluster.orderer_admin_request(LATER, &join))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.channel_id, LATER);
        assert_eq!(info.height, 1);
    }
    for k in 0..5 {
        order(&cluster, &tx(&cluster, LATER, format!("later {k}"))).await;
    }
    wait_height(&cluster, LATER, 2).await;
    assert_eq!(listed(&cluster, 1).await, set(&[CHANNEL, SMALL, LATER]));

    // Bad participation requests: each refused with its own status, nothing changes.
    let mut admin = cluster.orderer_admin_client(0);
    let again = admin
        .join_channel(cluster.orderer_admin_request(
            LATER,
            &JoinChannelRequest {
                block: genesis.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let garbage = admin
        .join_channel(cluster.orderer_admin_request(
            LATER,
            &JoinChannelRequest {
                block: b"\xff\xfe not a block".to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");
    let not_genesis = admin
        .join_channel(cluster.orderer_admin_request(
            CHANNEL,
            &JoinChannelRequest {
                block: blocks(&cluster, 0, CHANNEL)[1].encode_to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        not_genesis.code(),
        tonic::Code::FailedPrecondition,
        "{not_genesis:?}"
    );
    // A genesis block of another network: its orgs' CAs are not this network's.
    let other = TestCluster::generate_only(ClusterOptions::default()).unwrap();
    let foreign =
        other.join_request_as_its_admin(&std::fs::read(other.genesis_path(CHANNEL)).unwrap());
    let foreign_join = cluster
        .orderer_admin_client(0)
        .join_channel(foreign)
        .await
        .unwrap_err();
    assert!(
        matches!(
            foreign_join.code(),
            tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied
        ),
        "{foreign_join:?}"
    );
    let unknown = admin
        .remove_channel(cluster.orderer_admin_request(
            "no-such-channel",
            &RemoveChannelRequest {
                channel_id: "no-such-channel".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert_eq!(listed(&cluster, 0).await, set(&[CHANNEL, SMALL, LATER]));

    // Remove SMALL everywhere: its keyspaces go, the other channels keep ordering.
    for i in 0..3 {
        let info = cluster
            .orderer_admin_client(i)
            .remove_channel(cluster.orderer_admin_request(
                SMALL,
                &RemoveChannelRequest {
                    channel_id: SMALL.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.role, "removed");
        let left: Vec<String> = cluster
            .node(i)
            .keyspace_names()
            .into_iter()
            .filter(|k| k.ends_with(SMALL))
            .collect();
        assert!(left.is_empty(), "node {i} still holds {left:?}");
    }
    for k in 0..5 {
        order(
            &cluster,
            &tx(&cluster, CHANNEL, format!("after removal {k}")),
        )
        .await;
        order(&cluster, &tx(&cluster, LATER, format!("after removal {k}"))).await;
    }
    let refused = cluster
        .client(0)
        .submit(tx(&cluster, SMALL, "gone".into()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // A restart keeps the joined channel and does not bring the removed one back.
    cluster.stop_node(2).unwrap();
    cluster.start_node(2).unwrap();
    assert_eq!(listed(&cluster, 2).await, set(&[CHANNEL, LATER]));
    order(&cluster, &tx(&cluster, LATER, "after restart".into())).await;
    for channel in [CHANNEL, LATER] {
        let reference = blocks(&cluster, 0, channel);
        let hashes = verify_chain(&cluster.channel_of(channel), &reference).unwrap();
        wait_height(&cluster, channel, reference.len() as u64).await;
        for i in 1..3 {
            let theirs =
                verify_chain(&cluster.channel_of(channel), &blocks(&cluster, i, channel)).unwrap();
            assert!(
                theirs[..hashes.len()] == hashes[..],
                "node {i} {channel} differs"
            );
        }
    }
}
