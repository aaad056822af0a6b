//! Cluster tests over real TLS sockets: ordering under load, follower catch-up through
//! snapshot and block pull. Each ends by comparing every node's chain through Deliver and
//! checking every acknowledged envelope is in it once. The leader killed under load and every
//! node restarted are chaos scenarios (`leader_kill`, `all_orderers_kill`, `rolling_restart`:
//! docs/chaos.md), run on real processes with every invariant checked.

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use prost::Message as _;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tokio::sync::Mutex;
use tonic::transport::Channel as GrpcChannel;
use tonic::Code;

type Client = AtomicBroadcastClient<GrpcChannel>;

const CONVERGE: Duration = Duration::from_secs(60);

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
    )
}

/// Submits until ordered, moving to the next node on a retryable failure. ALREADY_EXISTS on a
/// retry means an earlier attempt was ordered (its answer was lost).
async fn submit_until_ordered(
    clients: &[Client],
    first: usize,
    env: Envelope,
    deadline: Instant,
) -> anyhow::Result<String> {
    let mut i = first;
    loop {
        let mut client = clients[i % clients.len()].clone();
        let mut request = tonic::Request::new(env.clone());
        request.set_timeout(Duration::from_secs(10));
        match client.submit(request).await {
            Ok(r) => return Ok(r.into_inner().tx_id),
            Err(s) if s.code() == Code::AlreadyExists => {
                return orderer::block_store::tx_id_of(&env.encode_to_vec())
                    .ok_or_else(|| anyhow::anyhow!("envelope without tx id"));
            }
            Err(s) if retryable(s.code()) => {
                anyhow::ensure!(Instant::now() < deadline, "gave up retrying: {s}");
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => anyhow::bail!("refused: {s}"),
        }
    }
}

/// Sends `count` envelopes from `workers` concurrent clients spread over all nodes; returns
/// the acknowledged tx ids.
async fn load(
    cluster: &TestCluster,
    count: usize,
    workers: usize,
) -> anyhow::Result<BTreeSet<String>> {
    let (clients, envelopes) = workload(cluster, count);
    send(clients, envelopes, workers, Arc::default()).await
}

fn workload(cluster: &TestCluster, count: usize) -> (Vec<Client>, Vec<Envelope>) {
    let clients: Vec<Client> = (0..cluster.nodes.len())
        .map(|i| cluster.client(i))
        .collect();
    let envelopes: Vec<Envelope> = (0..count)
        .map(|n| cluster.envelope(format!("envelope {n:06} {}", "x".repeat(200)).as_bytes()))
        .collect();
    (clients, envelopes)
}

/// `acked` counts progress for tests that inject faults mid-load.
async fn send(
    clients: Vec<Client>,
    envelopes: Vec<Envelope>,
    workers: usize,
    acked: Arc<AtomicUsize>,
) -> anyhow::Result<BTreeSet<String>> {
    let count = envelopes.len();
    let queue = Arc::new(Mutex::new(envelopes));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (queue, clients, acked) = (queue.clone(), clients.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let Some(env) = queue.lock().await.pop() else {
                    break;
                };
                mine.push(submit_until_ordered(&clients, w, env, deadline).await?);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(mine)
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await??);
    }
    anyhow::ensure!(
        all.len() == count,
        "{} distinct acks for {count} envelopes",
        all.len()
    );
    Ok(all)
}

/// Every running node delivers the same chain up to its converged height; it verifies, and
/// every acked tx is in it exactly once. Returns the height.
async fn assert_identical_chains(cluster: &TestCluster, acked: &BTreeSet<String>) -> u64 {
    let height = cluster.wait_converged(CONVERGE).await.unwrap();
    let mut reference: Option<Vec<[u8; 32]>> = None;
    for i in cluster.running() {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        assert_eq!(
            blocks.len() as u64,
            height,
            "node {i} delivered a short chain"
        );
        let hashes = verify_chain(&cluster.channel, &blocks).unwrap();
        match &reference {
            None => reference = Some(hashes),
            Some(r) => assert_eq!(r, &hashes, "node {i} has a different chain"),
        }
        let counts = tx_counts(&blocks);
        for id in acked {
            assert_eq!(counts.get(id), Some(&1), "acked tx {id} on node {i}");
        }
        assert!(counts.values().all(|c| *c == 1), "duplicate tx on node {i}");
    }
    height
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn three_nodes_order_10000_envelopes_into_identical_chains() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    runtime().block_on(async {
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        let acked = load(&cluster, 10_000, 48).await.unwrap();
        let height = assert_identical_chains(&cluster, &acked).await;
        let total: usize = tx_counts(&cluster.deliver_all(0, height - 1).await.unwrap())
            .values()
            .sum();
        assert_eq!(total, 10_000, "exactly the acked envelopes are ordered");
    });
}

#[test]
fn follower_restart_catches_up_from_snapshot_and_block_pull() {
    let mut cluster = TestCluster::start(ClusterOptions {
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
    let follower = (leader + 1) % 3;
    let mut acked = rt.block_on(load(&cluster, 100, 4)).unwrap();
    rt.block_on(cluster.wait_converged(CONVERGE)).unwrap();
    let follower_index = cluster.last_applied_index(follower);
    cluster.stop_node(follower).unwrap();
    // Small batches, few writers: many Raft entries, so several snapshots and purges.
    acked.extend(rt.block_on(load(&cluster, 600, 2)).unwrap());
    let leader_metrics = cluster
        .node(leader)
        .registry
        .get(CHANNEL)
        .unwrap()
        .raft
        .metrics()
        .borrow()
        .clone();
    let purged = leader_metrics.purged.map(|p| p.index).unwrap_or(0);
    assert!(
        purged > follower_index,
        "leader purged its log up to {purged}, not past the follower's {follower_index}"
    );
    assert!(leader_metrics.snapshot.is_some());
    cluster.start_node(follower).unwrap();
    rt.block_on(async {
        assert_identical_chains(&cluster, &acked).await;
    });
    let pulled = cluster
        .node(follower)
        .registry
        .metrics
        .blocks_pulled
        .get_or_create(&orderer::metrics::Metrics::channel(CHANNEL))
        .get();
    assert!(pulled > 0, "the follower caught up without pulling blocks");
}
