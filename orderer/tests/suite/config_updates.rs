//! Live configuration: config updates ordered into config blocks, applied alike on every node;
//! consenters added (learner, then promoted) and removed under load; refused updates change
//! nothing.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use prost::Message as _;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;

const ADMINS: &[&str] = &["OrdererMSP", "Org1MSP"];

fn header_type(envelope: &[u8]) -> i32 {
    let env = Envelope::decode(envelope).unwrap();
    let payload = Payload::decode(env.payload.as_slice()).unwrap();
    payload.header.unwrap().channel_header.unwrap().r#type
}

fn blocks_of(cluster: &TestCluster, i: usize) -> Vec<shared_proto::pb::common::Block> {
    let ch = cluster.node(i).registry.get(CHANNEL).unwrap();
    (0..ch.store.height())
        .map(|n| ch.store.get(n).unwrap().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_update_by_a_majority_of_admins_becomes_a_config_block_and_every_node_switches_batch_size(
) {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    for k in 0..3 {
        let env = cluster.envelope(format!("before {k}").as_bytes());
        cluster.submit_until_ordered(&[leader], &env).await;
    }
    let update = cluster.config_update(leader, ADMINS, |c| {
        let batch = c.orderer.as_mut().unwrap().batch_size.as_mut().unwrap();
        batch.message_count_max = 2;
    });
    cluster.submit_until_ordered(&[leader], &update).await;
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(cluster.config_sequence(i), 1, "node {i}");
        assert_eq!(cluster.config_of(i).batch_size().message_count_max, 2);
    }
    // Eight envelopes at once: with message_count_max 2 no block holds more than two.
    let envs: Vec<Envelope> = (0..8)
        .map(|k| cluster.envelope(format!("after {k}").as_bytes()))
        .collect();
    let to = [leader];
    futures::future::join_all(envs.iter().map(|e| cluster.submit_until_ordered(&to, e))).await;
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let reference = blocks_of(&cluster, 0);
    let config_blocks: Vec<u64> = reference
        .iter()
        .filter(|b| {
            let data = &b.data.as_ref().unwrap().data;
            data.len() == 1 && header_type(&data[0]) == HeaderType::ConfigUpdate as i32
        })
        .map(|b| b.header.as_ref().unwrap().number)
        .collect();
    assert_eq!(
        config_blocks.len(),
        1,
        "one config block: {config_blocks:?}"
    );
    let config_block = config_blocks[0];
    for b in &reference {
        let number = b.header.as_ref().unwrap().number;
        let last_config = b.metadata.as_ref().unwrap().last_config_index;
        let expected = if number >= config_block {
            config_block
        } else {
            0
        };
        assert_eq!(last_config, expected, "block {number}");
        if number > config_block {
            assert!(b.data.as_ref().unwrap().data.len() <= 2, "block {number}");
        }
    }
    let hashes = verify_chain(&cluster.channel, &reference).unwrap();
    for i in 1..3 {
        let theirs = verify_chain(&cluster.channel, &blocks_of(&cluster, i)).unwrap();
        assert!(theirs == hashes, "node {i}'s chain differs");
    }
    // A restarted node reads its config from its chain and state, not from a file.
    cluster.stop_node(1).unwrap();
    cluster.start_node(1).unwrap();
    assert_eq!(cluster.config_sequence(1), 1);
    assert_eq!(cluster.config_of(1).batch_size().message_count_max, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_config_updates_name_why_and_change_neither_config_nor_membership() {
    let cluster = TestCluster::start(ClusterOptions {
        spare_orderers: 1,
        ..Default::default()
    })
    .unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    cluster
        .wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30))
        .await
        .unwrap();
    let client_signed = {
        let mut next = cluster.config_of(leader).config().clone();
        next.sequence += 1;
        shared_proto::config_update::build_update(
            &next,
            &[&cluster.client],
            &cluster.client,
            now_unix() as u64 * 1000,
        )
    };
    let cases: Vec<(&str, Envelope, tonic::Code, &str)> = vec![
        (
            "signed by one org admin of three (MAJORITY Admins)",
            cluster.config_update(leader, &["Org1MSP"], |_| {}),
            tonic::Code::PermissionDenied,
            "Admins policy",
        ),
        (
            "signed by a client, not an admin",
            client_signed,
            tonic::Code::PermissionDenied,
            "Admins policy",
        ),
        (
            "stale sequence",
            cluster.config_update(leader, ADMINS, |c| c.sequence = 0),
            tonic::Code::FailedPrecondition,
            "channel is at sequence 0",
        ),
        (
            "two consenters removed at once",
            cluster.config_update(leader, ADMINS, |c| {
                c.orderer.as_mut().unwrap().consenters.truncate(1);
            }),
            tonic::Code::FailedPrecondition,
            "one at a time",
        ),
        (
            "the last consenter removed",
            cluster.config_update(leader, ADMINS, |c| {
                c.orderer.as_mut().unwrap().consenters.clear();
            }),
            tonic::Code::FailedPrecondition,
            "last consenter",
        ),
        (
            "a consenter whose TLS certificate no trusted CA issued",
            cluster.config_update(leader, ADMINS, |c| {
                let mut stranger = cluster.spare_consenters[0].clone();
                let ca = shared_proto::msp::TlsCertificateAuthority::generate(
                    "tlsca.stranger",
                    "OrdererMSP",
                    shared_proto::msp::TlsKeyAlgorithm::EcdsaP256,
                    shared_proto::msp::Validity::days_from(now_unix(), 30),
                )
                .unwrap();
                let cert = ca
                    .issue(
                        "orderer4",
                        &["127.0.0.1".into()],
                        shared_proto::msp::Validity::days_from(now_unix(), 30),
                    )
                    .unwrap();
                stranger.client_tls_cert = cert.cert_der.clone();
                stranger.server_tls_cert = cert.cert_der;
                c.orderer.as_mut().unwrap().consenters.push(stranger);
            }),
            tonic::Code::FailedPrecondition,
            "was not issued by a TLS CA",
        ),
    ];
    for (name, env, code, says) in cases {
        for node in [leader, (leader + 1) % 3] {
            let mut request = tonic::Request::new(env.clone());
            request.set_timeout(Duration::from_secs(15));
            let err = cluster.client(node).submit(request).await.unwrap_err();
            // The same code from the leader and from a follower that forwarded it.
            assert_eq!(err.code(), code, "{name} (to node {node}): {err:?}");
            assert!(err.message().contains(says), "{name}: {}", err.message());
        }
    }
    // Nothing changed: every node at sequence 0 with the genesis voters, and still ordering.
    let env = cluster.envelope(b"after the refusals");
    cluster.submit_until_ordered(&[leader], &env).await;
    cluster
        .wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30))
        .await
        .unwrap();

    // A second change while one is in flight: orderer4 is added but never started, so it
    // stays a learner that cannot catch up, and the change is not done.
    let add = cluster.config_update(leader, ADMINS, |c| {
        let spare = cluster.spare_consenters[0].clone();
        c.orderer.as_mut().unwrap().consenters.push(spare);
    });
    cluster.submit_until_ordered(&[leader], &add).await;
    cluster
        .wait_membership(&[0, 1, 2], &[1, 2, 3], 1, Duration::from_secs(30))
        .await
        .unwrap();
    let second = cluster.config_update(leader, ADMINS, |c| {
        c.orderer.as_mut().unwrap().consenters.retain(|x| x.id != 3);
    });
    let mut request = tonic::Request::new(second);
    request.set_timeout(Duration::from_secs(15));
    let err = cluster.client(leader).submit(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("still in progress"),
        "{}",
        err.message()
    );
    cluster
        .wait_membership(&[0, 1, 2], &[1, 2, 3], 1, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_3_to_5_and_shrink_back_to_3_removing_the_original_leader_under_load() {
    let mut cluster = TestCluster::start(ClusterOptions {
        spare_orderers: 2,
        ..Default::default()
    })
    .unwrap();
    let first_leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let targets = Arc::new(Mutex::new(vec![0, 1, 2]));
    let (stop, acked, load) = common::config::start_load(&cluster, targets.clone());
    let spares = cluster.spare_consenters.clone();

    // 3 -> 4 -> 5: each new node starts from the genesis block as a non-consenter, is added
    // by a config update, replicates as a learner and is promoted.
    for (k, spare) in spares.iter().enumerate() {
        let index = 3 + k;
        cluster.start_node(index).unwrap();
        let leader = cluster.leader().unwrap_or(first_leader);
        let update = cluster.config_update(leader, ADMINS, |c| {
            c.orderer.as_mut().unwrap().consenters.push(spare.clone());
        });
        cluster.submit_until_ordered(&[leader], &update).await;
        let members: Vec<usize> = (0..=index).collect();
        let voters: Vec<u64> = (1..=index as u64 + 1).collect();
        cluster
            .wait_membership(&members, &voters, k as u64 + 1, Duration::from_secs(90))
            .await
            .unwrap();
        targets.lock().unwrap().push(index);
    }

    // A change that would leave fewer live voters than a quorum is refused: two of five are
    // stopped, and removing a third (live) one would leave 2 live of 4.
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let others: Vec<usize> = (0..5).filter(|i| *i != leader).collect();
    let (down, victim) = (&others[..2], others[2]);
    *targets.lock().unwrap() = (0..5).filter(|i| !down.contains(i)).collect();
    for &i in down {
        cluster.stop_node(i).unwrap();
    }
    let victim_id = victim as u64 + 1;
    let update = cluster.config_update(leader, ADMINS, |c| {
        c.orderer
            .as_mut()
            .unwrap()
            .consenters
            .retain(|x| x.id != victim_id);
    });
    // Once the leader has noticed the two are gone (no answer within the quorum-silence
    // bound), the change is refused.
    {
        let ch = cluster.node(leader).registry.get(CHANNEL).unwrap().clone();
        let bound = orderer::consensus::quorum_silence_max(ch.raft.config());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while down
            .iter()
            .any(|&i| ch.liveness.recent(i as u64 + 1, bound))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "leader still hears {down:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut request = tonic::Request::new(update.clone());
    request.set_timeout(Duration::from_secs(15));
    let refusal = cluster.client(leader).submit(request).await.unwrap_err();
    assert_eq!(
        refusal.code(),
        tonic::Code::FailedPrecondition,
        "{refusal:?}"
    );
    assert!(
        refusal.message().contains("quorum"),
        "{}",
        refusal.message()
    );
    assert_eq!(cluster.config_sequence(leader), 2);
    for &i in down {
        cluster.start_node(i).unwrap();
    }
    *targets.lock().unwrap() = (0..5).collect();

    // 5 -> 4: the original leader is removed (if it still leads it stops, the others elect a
    // leader that removes it).
    let removed = [first_leader];
    let mut voters: Vec<u64> = (1..=5).collect();
    for (step, &gone) in removed.iter().chain([3usize].iter()).enumerate() {
        let gone_id = gone as u64 + 1;
        voters.retain(|v| *v != gone_id);
        let members: Vec<usize> = voters.iter().map(|v| *v as usize - 1).collect();
        *targets.lock().unwrap() = members.clone();
        let leader = cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        let update = cluster.config_update(leader, ADMINS, |c| {
            c.orderer
                .as_mut()
                .unwrap()
                .consenters
                .retain(|x| x.id != gone_id);
        });
        cluster.submit_until_ordered(&members, &update).await;
        cluster
            .wait_membership(&members, &voters, 3 + step as u64, Duration::from_secs(90))
            .await
            .unwrap();
        // The removed node stops its Raft for the channel and says so per channel.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while cluster
            .node(gone)
            .registry
            .get(CHANNEL)
            .unwrap()
            .removed_at()
            .is_none()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "node {gone} never stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (code, body) = cluster.ops_get(gone, "/status").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("\"removed\""), "{body}");
        let (code, body) = cluster
            .ops_get(gone, &format!("/readyz?channel={CHANNEL}"))
            .await
            .unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("removed"), "{body}");
        cluster.stop_node(gone).unwrap();
    }

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let members: Vec<usize> = voters.iter().map(|v| *v as usize - 1).collect();
    let reference = blocks_of(&cluster, members[0]);
    let hashes = verify_chain(&cluster.channel, &reference).unwrap();
    for &i in &members[1..] {
        let theirs = verify_chain(&cluster.channel, &blocks_of(&cluster, i)).unwrap();
        assert!(theirs == hashes, "node {i}'s chain differs");
    }
    let counts = tx_counts(&reference);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} acked", acked.len());
    for tx in &acked {
        assert_eq!(counts.get(tx), Some(&1), "acked tx {tx} in the chain once");
    }
    assert!(counts.values().all(|n| *n == 1), "a tx appears twice");
}
