//! Who may call what, over real mutual TLS against a 3-node in-process cluster:
//!
//! - Cluster.Raft: a pinned consenter speaks only as itself. Orderer 2's cluster certificate
//!   sending a vote, append-entries or install-snapshot that names node 1 as its sender gets
//!   PERMISSION_DENIED, and no node's term moves.
//! - Admin: every call needs a client TLS certificate and an admin signing identity (see
//!   `admin_*` below).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use common::*;
use orderer::consensus::TypeConfig;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::RaftRequest;
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The orderer's wire encoding of a Raft message (version byte 1, postcard).
fn wire<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut payload = vec![1u8];
    payload.extend(postcard::to_stdvec(value).unwrap());
    payload
}

fn raft_request(kind: Kind, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        channel_id: CHANNEL.into(),
        kind: kind as i32,
        payload,
    }
}

/// A vote request from `candidate` for `term`, claiming a log far ahead of everyone's.
fn vote_from(candidate: u64, term: u64) -> RaftRequest {
    let last = openraft::LogId::new(openraft::CommittedLeaderId::new(term, candidate), 1 << 40);
    let vote =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term, candidate), Some(last));
    raft_request(Kind::Vote, wire(&vote))
}

/// A heartbeat (empty append-entries) from `leader` as the committed leader of `term`.
fn append_from(leader: u64, term: u64) -> RaftRequest {
    let rpc = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    raft_request(Kind::AppendEntries, wire(&rpc))
}

/// The first chunk of a snapshot from `leader` as the committed leader of `term`.
fn snapshot_from(leader: u64, term: u64) -> RaftRequest {
    let rpc = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(term, leader),
        meta: openraft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "forged".into(),
        },
        offset: 0,
        data: Vec::new(),
        done: false,
    };
    raft_request(Kind::InstallSnapshot, wire(&rpc))
}

fn terms(cluster: &TestCluster) -> Vec<u64> {
    (0..3)
        .map(|i| {
            let channel = cluster.node(i).registry.get(CHANNEL).unwrap();
            let term = channel.raft.metrics().borrow().current_term;
            term
        })
        .collect()
}

async fn wait_leader(cluster: &TestCluster) -> anyhow::Result<usize> {
    cluster.wait_for_leader(Duration::from_secs(30)).await
}

/// Orderer 2 (node id 2) is a pinned consenter, so its certificate passes the channel check;
/// every Raft message it sends naming node 1 as sender must still be refused.
#[test]
fn consenter_certificate_speaking_as_another_node_id_is_permission_denied() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    rt.block_on(async {
        wait_leader(&cluster).await.unwrap();
        let orderer2_tls = cluster.generated.orderers[1].dir.join("tls");
        let huge_term = terms(&cluster).into_iter().max().unwrap_or(0) + 1_000;
        let forged = [
            ("vote", vote_from(1, huge_term)),
            ("append-entries", append_from(1, huge_term)),
            ("install-snapshot", snapshot_from(1, huge_term)),
        ];
        let mut failures = Vec::new();
        for node in 0..3 {
            for (what, request) in &forged {
                let mut c = cluster.cluster_client_as(node, Some(&orderer2_tls));
                let result = tokio::time::timeout(Duration::from_secs(20), c.raft(request.clone()))
                    .await
                    .context("no answer")
                    .unwrap();
                match result {
                    Err(s) if s.code() == Code::PermissionDenied => {
                        eprintln!("node {node}, {what} as node 1: {}", s.message());
                        assert!(
                            s.message().contains("node 2") && s.message().contains("node 1"),
                            "message names neither id: {}",
                            s.message()
                        );
                    }
                    Err(s) => failures.push(format!(
                        "node {node}, {what} as node 1: {:?} {}",
                        s.code(),
                        s.message()
                    )),
                    Ok(r) => failures.push(format!(
                        "node {node}, {what} as node 1: accepted ({} byte answer)",
                        r.get_ref().payload.len()
                    )),
                }
            }
        }
        let now = terms(&cluster);
        if now.iter().any(|t| *t >= huge_term) {
            failures.push(format!("terms {now:?} reached the forged {huge_term}"));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // Control: the same certificate speaking as itself (a stale vote) is heard.
        let leader = wait_leader(&cluster).await.unwrap();
        let mut c = cluster.cluster_client_as(leader, Some(&orderer2_tls));
        let r = c.raft(vote_from(2, 0)).await;
        assert!(r.is_ok(), "orderer 2 as itself: {r:?}");

        // And the cluster still orders.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = cluster.client(leader);
        loop {
            let env = cluster.envelope(b"after the impersonation");
            match client.submit(env).await {
                Ok(_) => break,
                Err(s) if Instant::now() < deadline && s.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("not ordered after the impersonation: {s:?}"),
            }
        }
    });
}
