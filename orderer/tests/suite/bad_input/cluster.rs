//! Cluster service: only pinned consenters are heard; other TLS clients get PERMISSION_DENIED.

use anyhow::Context as _;
use prost::Message as _;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::ForwardRequest;
use shared_proto::pb::orderer::RaftRequest;
use tonic::Code;

use super::common::*;
use super::{
    assert_chains, every_node_orders, runtime, wait_all_follow_leader, Catalogue, Client, Ledger,
    STEP,
};

/// A well-formed Raft vote request in the orderer's wire encoding (version byte 1, postcard).
fn vote_payload(term: u64, candidate: u64, last_index: u64) -> Vec<u8> {
    let last_log_id = (last_index > 0).then(|| {
        openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, candidate),
            last_index,
        )
    });
    let vote =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term, candidate), last_log_id);
    let mut payload = vec![1u8];
    payload.extend(postcard::to_stdvec(&vote).unwrap());
    payload
}

fn raft_request(kind: Kind, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        channel_id: CHANNEL.into(),
        kind: kind as i32,
        payload,
    }
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

fn expect_denied<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<()> {
    match result {
        Ok(r) => anyhow::bail!("accepted: {:?}", r.into_inner()),
        Err(s) => {
            anyhow::ensure!(
                s.code() == Code::PermissionDenied,
                "{:?} {}",
                s.code(),
                s.message()
            );
            anyhow::ensure!(
                s.message().contains("not a pinned consenter"),
                "message {:?}",
                s.message()
            );
            Ok(())
        }
    }
}

/// A vote for a term far ahead, from a peer's TLS certificate (valid, from a trusted TLS CA,
/// but not pinned), to every node: PERMISSION_DENIED. Accepted, it would depose the leader.
async fn peer_vote_is_denied(
    cluster: &TestCluster,
    tls: &std::path::Path,
    term: u64,
) -> anyhow::Result<()> {
    for node in 0..3 {
        let mut c = cluster.cluster_client_as(node, Some(tls));
        let request = raft_request(Kind::Vote, vote_payload(term, 99, 1 << 40));
        expect_denied(c.raft(request).await).with_context(|| format!("node {node}"))?;
    }
    Ok(())
}

/// A valid client envelope forwarded by a peer's TLS certificate: PERMISSION_DENIED on every
/// node, and it is never ordered.
async fn peer_forward_is_denied(
    cluster: &TestCluster,
    tls: &std::path::Path,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    for node in 0..3 {
        let env = cluster.envelope(format!("smuggled via node {node}").as_bytes());
        ledger.refuse(&env);
        let mut c = cluster.cluster_client_as(node, Some(tls));
        let request = ForwardRequest {
            channel_id: CHANNEL.into(),
            envelopes: vec![env.encode_to_vec()],
        };
        expect_denied(c.forward(request).await).with_context(|| format!("node {node}"))?;
    }
    Ok(())
}

/// Without a client certificate the mutual-TLS handshake fails: no answer from the service.
async fn no_client_certificate_is_refused(
    cluster: &TestCluster,
    node: usize,
    term: u64,
) -> anyhow::Result<()> {
    let mut c = cluster.cluster_client_as(node, None);
    let request = raft_request(Kind::Vote, vote_payload(term, 99, 1 << 40));
    match tokio::time::timeout(STEP, c.raft(request))
        .await
        .context("no answer")?
    {
        Ok(r) => anyhow::bail!(
            "answered without a client certificate: {:?}",
            r.into_inner()
        ),
        Err(s) => {
            eprintln!("        {:?}: {}", s.code(), s.message());
            anyhow::ensure!(
                !s.message().contains("not a pinned consenter"),
                "reached the service: {s:?}"
            )
        }
    }
    Ok(())
}

/// Control: with a pinned consenter's certificate the service answers (a stale vote is
/// rejected in its response, which changes nothing), and garbage is INVALID_ARGUMENT; so the
/// refusals above are about who calls, not what they send.
async fn pinned_consenter_is_heard(
    cluster: &TestCluster,
    node: usize,
    tls: &std::path::Path,
) -> anyhow::Result<()> {
    let mut c = cluster.cluster_client_as(node, Some(tls));
    // The certificate is node `node`'s own, so the vote names it (id = index + 1): a consenter
    // may speak only as itself (tests/authorization.rs).
    let r = c
        .raft(raft_request(
            Kind::Vote,
            vote_payload(0, node as u64 + 1, 0),
        ))
        .await
        .map_err(|s| anyhow::anyhow!("stale vote: {:?} {}", s.code(), s.message()))?;
    anyhow::ensure!(!r.get_ref().payload.is_empty(), "empty vote response");
    let s = c
        .raft(raft_request(Kind::Vote, b"\x01garbage".to_vec()))
        .await
        .err()
        .context("garbage accepted")?;
    anyhow::ensure!(
        s.code() == Code::InvalidArgument && s.message().contains("cannot decode raft message"),
        "{:?} {}",
        s.code(),
        s.message()
    );
    Ok(())
}

#[test]
fn cluster_service_refuses_tls_clients_that_are_not_pinned_consenters() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let mut catalogue = Catalogue::default();
    rt.block_on(async {
        let leader = wait_all_follow_leader(&cluster).await.unwrap();
        let peer_tls = cluster.generated.peers[0].dir.join("tls");
        let user = cluster.generated.user("Org1MSP", "User1").unwrap();
        let user_tls = user.tls_cert.parent().unwrap().to_path_buf();
        let orderer_tls = cluster.generated.orderers[leader].dir.join("tls");
        let mut ledger = Ledger::default();
        let huge_term = terms(&cluster).into_iter().max().unwrap_or(0) + 1_000;
        catalogue
            .check(
                "Cluster.Raft vote from a peer's TLS cert -> PERMISSION_DENIED",
                peer_vote_is_denied(&cluster, &peer_tls, huge_term),
            )
            .await;
        catalogue
            .check(
                "Cluster.Raft vote from a client user's TLS cert -> PERMISSION_DENIED",
                peer_vote_is_denied(&cluster, &user_tls, huge_term),
            )
            .await;
        catalogue
            .check(
                "Cluster.Raft append-entries from a peer's TLS cert -> PERMISSION_DENIED",
                async {
                    let mut c = cluster.cluster_client_as(leader, Some(&peer_tls));
                    let request = raft_request(Kind::AppendEntries, b"anything".to_vec());
                    expect_denied(c.raft(request).await)
                },
            )
            .await;
        catalogue
            .check(
                "Cluster.Forward from a peer's TLS cert -> PERMISSION_DENIED, not ordered",
                peer_forward_is_denied(&cluster, &peer_tls, &mut ledger),
            )
            .await;
        catalogue
            .check(
                "Cluster port without a client certificate -> refused by TLS",
                no_client_certificate_is_refused(&cluster, leader, huge_term),
            )
            .await;
        catalogue
            .check(
                "control: a pinned consenter is heard (stale vote answered, garbage refused)",
                pinned_consenter_is_heard(&cluster, leader, &orderer_tls),
            )
            .await;
        catalogue
            .check(
                "after the intruders: no term jump, every node orders, chains identical",
                async {
                    let now = terms(&cluster);
                    anyhow::ensure!(
                        now.iter().all(|t| *t < huge_term),
                        "terms {now:?} reached the intruder's {huge_term}"
                    );
                    wait_all_follow_leader(&cluster).await?;
                    let mut clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
                    every_node_orders(&cluster, &mut clients, &mut ledger, b"after").await?;
                    assert_chains(&cluster, &ledger.acked, &ledger.refused).await?;
                    Ok(())
                },
            )
            .await;
    });
    catalogue.finish();
}
