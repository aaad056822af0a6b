//! Who may call what, over real mutual TLS against a 3-node in-process cluster:
//!
//! - Cluster.Raft: a pinned consenter speaks only as itself. Orderer 2's cluster certificate
//!   sending a vote, append-entries or install-snapshot that names node 1 as its sender gets
//!   PERMISSION_DENIED, and no node's term moves.
//! - Admin: every call needs a client TLS certificate and an admin signing identity (see
//!   `admin_*` below).

use crate::common;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use common::admin::admin_client;
use common::*;
use orderer::consensus::TypeConfig;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::admin_client::AdminClient;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::ClusterStatusRequest;
use shared_proto::pb::orderer::ClusterStatusResponse;
use shared_proto::pb::orderer::RaftRequest;
use shared_proto::pb::orderer::RemoveChannelRequest;
use tonic::transport::Channel as GrpcChannel;
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

// ---------------------------------------------------------------------------------------------
// Admin: mutual TLS plus an ORDERER_ADMIN envelope signed by an orderer org's admin.
// ---------------------------------------------------------------------------------------------

/// A signed Admin request envelope.
fn admin_request(
    signer: &SigningIdentity,
    header_type: HeaderType,
    data: Vec<u8>,
    timestamp_unix_ms: u64,
) -> Envelope {
    common::admin::admin_request_for(signer, header_type, CHANNEL, data, timestamp_unix_ms)
}

fn status_request(signer: &SigningIdentity) -> Envelope {
    let data = prost::Message::encode_to_vec(&ClusterStatusRequest {
        channel_id: CHANNEL.into(),
    });
    admin_request(
        signer,
        HeaderType::OrdererAdmin,
        data,
        now_unix() as u64 * 1000,
    )
}

async fn status(
    client: &mut AdminClient<GrpcChannel>,
    request: Envelope,
) -> Result<ClusterStatusResponse, tonic::Status> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_secs(20));
    client.cluster_status(request).await.map(|r| r.into_inner())
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    says: &str,
) -> anyhow::Result<()> {
    match result {
        Ok(r) => anyhow::bail!("answered: {r:?}"),
        Err(s) => {
            eprintln!("        {:?}: {}", s.code(), s.message());
            anyhow::ensure!(s.code() == code, "{:?} {}", s.code(), s.message());
            anyhow::ensure!(s.message().contains(says), "message {:?}", s.message());
            Ok(())
        }
    }
}

/// Runs named checks in order and reports every failure at the end.
#[derive(Debug, Default)]
struct Catalogue {
    failures: Vec<String>,
}

impl Catalogue {
    async fn check(
        &mut self,
        name: &str,
        check: impl std::future::Future<Output = anyhow::Result<()>>,
    ) {
        match check.await {
            Ok(()) => eprintln!("ok    {name}"),
            Err(e) => {
                eprintln!("FAIL  {name}: {e:#}");
                self.failures.push(format!("{name}: {e:#}"));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

/// Every Admin call needs mutual TLS and an orderer org admin's signature:
///
/// | caller                                                    | answer            |
/// |-----------------------------------------------------------|-------------------|
/// | no client certificate (even with the admin's signature)   | UNAUTHENTICATED   |
/// | client (Org1 User1), peer, orderer node, Org1 admin       | PERMISSION_DENIED |
/// | orderer admin's signature over another org's TLS session  | PERMISSION_DENIED |
/// | orderer admin, request timestamp 1 h old                  | PERMISSION_DENIED |
/// | orderer admin, envelope of another header type            | INVALID_ARGUMENT  |
/// | orderer admin over its own TLS certificate                | the status        |
#[test]
fn admin_calls_need_mutual_tls_and_an_orderer_org_admin() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let g = &cluster.generated;
    let admin = g.user("OrdererMSP", "Admin").unwrap().clone();
    let admin_id = SigningIdentity::from_pem_files("OrdererMSP", &admin.cert, &admin.key).unwrap();
    let admin_tls = Some((admin.tls_cert.as_path(), admin.tls_key.as_path()));
    let user = g.user("Org1MSP", "User1").unwrap().clone();
    let user_tls = Some((user.tls_cert.as_path(), user.tls_key.as_path()));
    let org1_admin = g.user("Org1MSP", "Admin").unwrap().clone();
    let org1_admin_id =
        SigningIdentity::from_pem_files("Org1MSP", &org1_admin.cert, &org1_admin.key).unwrap();
    let peer_tls_dir = g.peers[0].dir.join("tls");
    let (peer_cert, peer_key) = (peer_tls_dir.join("cert.pem"), peer_tls_dir.join("key.pem"));
    let orderer_tls_dir = g.orderers[1].dir.join("tls");
    let (ord_cert, ord_key) = (
        orderer_tls_dir.join("cert.pem"),
        orderer_tls_dir.join("key.pem"),
    );
    let mut catalogue = Catalogue::default();
    rt.block_on(async {
        wait_leader(&cluster).await.unwrap();
        catalogue
            .check(
                "no client certificate, orderer admin's signature -> UNAUTHENTICATED",
                async {
                    let mut c = admin_client(&cluster, 0, None);
                    expect_code(
                        status(&mut c, status_request(&admin_id)).await,
                        Code::Unauthenticated,
                        "mutual TLS",
                    )
                },
            )
            .await;
        catalogue
            .check(
                "no client certificate, RemoveChannel -> UNAUTHENTICATED",
                async {
                    let mut c = admin_client(&cluster, 0, None);
                    let data = prost::Message::encode_to_vec(&RemoveChannelRequest {
                        channel_id: CHANNEL.into(),
                    });
                    let env = admin_request(
                        &admin_id,
                        HeaderType::OrdererAdmin,
                        data,
                        now_unix() as u64 * 1000,
                    );
                    let r = c.remove_channel(env).await.map(|r| r.into_inner());
                    expect_code(r, Code::Unauthenticated, "mutual TLS")
                },
            )
            .await;
        catalogue
            .check("client identity (Org1 User1) -> PERMISSION_DENIED", async {
                let mut c = admin_client(&cluster, 0, user_tls);
                expect_code(
                    status(&mut c, status_request(&cluster.client)).await,
                    Code::PermissionDenied,
                    "has role client",
                )
            })
            .await;
        catalogue
            .check("peer identity -> PERMISSION_DENIED", async {
                let mut c = admin_client(&cluster, 1, Some((&peer_cert, &peer_key)));
                expect_code(
                    status(&mut c, status_request(&cluster.peer_identity(0))).await,
                    Code::PermissionDenied,
                    "has role peer",
                )
            })
            .await;
        catalogue
            .check("orderer node identity -> PERMISSION_DENIED", async {
                let mut c = admin_client(&cluster, 2, Some((&ord_cert, &ord_key)));
                expect_code(
                    status(&mut c, status_request(&cluster.orderer_identity(1))).await,
                    Code::PermissionDenied,
                    "has role orderer",
                )
            })
            .await;
        catalogue
            .check(
                "admin of an application org (Org1MSP Admin) -> PERMISSION_DENIED",
                async {
                    let tls = Some((org1_admin.tls_cert.as_path(), org1_admin.tls_key.as_path()));
                    let mut c = admin_client(&cluster, 0, tls);
                    expect_code(
                        status(&mut c, status_request(&org1_admin_id)).await,
                        Code::PermissionDenied,
                        "need an admin of an orderer org",
                    )
                },
            )
            .await;
        catalogue
            .check(
                "orderer admin's signature over Org1 User1's TLS session -> PERMISSION_DENIED",
                async {
                    let mut c = admin_client(&cluster, 0, user_tls);
                    expect_code(
                        status(&mut c, status_request(&admin_id)).await,
                        Code::PermissionDenied,
                        "not issued by a TLS CA of OrdererMSP",
                    )
                },
            )
            .await;
        catalogue
            .check(
                "orderer admin, request 1 h old -> PERMISSION_DENIED",
                async {
                    let mut c = admin_client(&cluster, 0, admin_tls);
                    let data = prost::Message::encode_to_vec(&ClusterStatusRequest {
                        channel_id: CHANNEL.into(),
                    });
                    let old = (now_unix() - 3600) as u64 * 1000;
                    let env = admin_request(&admin_id, HeaderType::OrdererAdmin, data, old);
                    expect_code(
                        status(&mut c, env).await,
                        Code::PermissionDenied,
                        "from this orderer's clock",
                    )
                },
            )
            .await;
        catalogue
            .check(
                "orderer admin, DELIVER_SEEK_INFO envelope -> INVALID_ARGUMENT",
                async {
                    let mut c = admin_client(&cluster, 0, admin_tls);
                    let env = admin_request(
                        &admin_id,
                        HeaderType::DeliverSeekInfo,
                        Vec::new(),
                        now_unix() as u64 * 1000,
                    );
                    expect_code(
                        status(&mut c, env).await,
                        Code::InvalidArgument,
                        "ORDERER_ADMIN",
                    )
                },
            )
            .await;
        catalogue
            .check(
                "orderer admin over its own TLS certificate -> the status",
                async {
                    for node in 0..3 {
                        let mut c = admin_client(&cluster, node, admin_tls);
                        let r = status(&mut c, status_request(&admin_id))
                            .await
                            .map_err(|s| anyhow::anyhow!("{:?} {}", s.code(), s.message()))?;
                        eprintln!("        node {node}: {r:?}");
                        anyhow::ensure!(r.channel_id == CHANNEL && r.node_id == node as u64 + 1);
                        anyhow::ensure!(r.voters == vec![1, 2, 3] && r.height >= 1, "{r:?}");
                    }
                    Ok(())
                },
            )
            .await;
        catalogue
            .check(
                "client identity (Org1 User1), RemoveChannel -> PERMISSION_DENIED, channel kept",
                async {
                    let mut c = admin_client(&cluster, 0, user_tls);
                    let data = prost::Message::encode_to_vec(&RemoveChannelRequest {
                        channel_id: CHANNEL.into(),
                    });
                    let env = admin_request(
                        &cluster.client,
                        HeaderType::OrdererAdmin,
                        data,
                        now_unix() as u64 * 1000,
                    );
                    let r = c.remove_channel(env).await.map(|r| r.into_inner());
                    expect_code(r, Code::PermissionDenied, "has role client")?;
                    anyhow::ensure!(
                        cluster.node(0).registry.get(CHANNEL).is_some(),
                        "the channel was removed"
                    );
                    Ok(())
                },
            )
            .await;
        catalogue
            .check(
                "Submit refuses an ORDERER_ADMIN envelope (it is never ordered)",
                async {
                    let mut c = cluster.client(0);
                    match c.submit(status_request(&admin_id)).await {
                        Ok(r) => anyhow::bail!("ordered: {:?}", r.into_inner()),
                        Err(s) => {
                            eprintln!("        {:?}: {}", s.code(), s.message());
                            anyhow::ensure!(s.code() == Code::FailedPrecondition, "{s:?}");
                            Ok(())
                        }
                    }
                },
            )
            .await;
    });
    catalogue.finish();
}
