//! Issue 10 item 8, the vote half: a consenter whose data dir was wiped has forgotten the votes
//! it cast. Until it knows the terms the cluster reached it must not vote, or it could grant a
//! second vote in a term it already voted in (two leaders for one term).
//!
//! The wiped node restarts while the other consenters are down (nobody can tell it the
//! cluster's terms), and another consenter asks for its vote in the term the cluster had
//! reached, claiming a log far ahead. Before the fix the node initialized at start (term 1)
//! and granted that vote.

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::RaftRequest;

/// The orderer's wire encoding of a Raft message (version byte 1, postcard).
fn wire<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut payload = vec![1u8];
    payload.extend(postcard::to_stdvec(value).unwrap());
    payload
}

fn term_of(cluster: &TestCluster, i: usize) -> u64 {
    let channel = cluster.node(i).registry.get(CHANNEL).unwrap();
    let term = channel.raft.metrics().borrow().current_term;
    term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_consenter_grants_no_vote_in_a_term_the_cluster_reached_before_it_hears_from_it() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    // Move the cluster's term past what a node that re-initializes reaches in its first
    // seconds (term 1, then one more per election timeout): stop the leader until a later
    // term has a leader. (A restarted leader can briefly report its old leadership, so each
    // round waits for a leader elected in a term after the stopped one's.)
    while (0..3).map(|i| term_of(&cluster, i)).max().unwrap() < 3 {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        let stopped_term = term_of(&cluster, leader);
        cluster.stop_node(leader).unwrap();
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !others.iter().any(|&i| {
            let m = cluster
                .node(i)
                .registry
                .get(CHANNEL)
                .unwrap()
                .raft
                .metrics();
            let m = m.borrow();
            m.current_leader == Some(i as u64 + 1) && m.current_term > stopped_term
        }) {
            assert!(
                Instant::now() < deadline,
                "no leader among {others:?} after term {stopped_term}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.start_node(leader).unwrap();
    }
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    for k in 0..10u32 {
        let env = cluster.envelope(format!("tx {k}").as_bytes());
        cluster.submit_until_ordered(&[leader], &env).await;
    }
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let term = (0..3).map(|i| term_of(&cluster, i)).max().unwrap();
    assert!(term >= 3, "cluster term {term}");
    let wiped = (leader + 1) % 3;
    let asker = (leader + 2) % 3;

    // Everyone stops; the wiped node comes back alone.
    for i in [wiped, asker, leader] {
        cluster.stop_node(i).unwrap();
    }
    std::fs::remove_dir_all(data_dir(&cluster, wiped)).unwrap();
    cluster.start_node(wiped).unwrap();

    // Another consenter (speaking as itself, with its pinned certificate) asks for a vote in
    // the cluster's term, claiming a log far ahead of anything the wiped node holds.
    let candidate = asker as u64 + 1;
    let last = openraft::LogId::new(openraft::CommittedLeaderId::new(term, candidate), 1 << 40);
    let vote =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term, candidate), Some(last));
    let request = RaftRequest {
        channel_id: CHANNEL.into(),
        kind: Kind::Vote as i32,
        payload: wire(&vote),
    };
    let tls = cluster.generated.orderers[asker].dir.join("tls");
    let mut client = cluster.cluster_client_as(wiped, Some(&tls));
    let answer = tokio::time::timeout(Duration::from_secs(10), client.raft(request))
        .await
        .expect("the wiped node did not answer a vote request within 10 s");
    match answer {
        Ok(response) => {
            let payload = response.into_inner().payload;
            let answer: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
                postcard::from_bytes(&payload[1..]).unwrap();
            let vote = answer.expect("the wiped node's Raft answered with an error");
            assert!(
                !vote.vote_granted,
                "the wiped node granted orderer{candidate} a vote in term {term}, a term the \
                 cluster had reached before its data was lost (its answer: {vote:?})"
            );
        }
        Err(status) => assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "unexpected refusal: {status}"
        ),
    }

    // The others come back: the wiped node joins and the three agree on one chain.
    cluster.start_node(asker).unwrap();
    cluster.start_node(leader).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .unwrap();
    let env = cluster.envelope(b"after the wipe");
    cluster.submit_until_ordered(&[leader], &env).await;
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
