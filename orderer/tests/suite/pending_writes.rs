//! Every write a node accepted ends: ordered, or a retryable status within a bound, even when
//! the node was the leader, was paused (SIGSTOP) until the others purged their logs past it,
//! and installs a snapshot on resuming.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use common::processes::OrdererProcesses;
use common::*;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Channel as GrpcChannel;
use tonic::Code;

type Client = AtomicBroadcastClient<GrpcChannel>;

/// One Submit with a client deadline: Ok(tx id), or the status.
async fn submit_once(
    mut client: Client,
    env: Envelope,
    deadline: Duration,
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(env);
    request.set_timeout(deadline);
    client.submit(request).await.map(|r| r.into_inner().tx_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_purged_past_answers_every_pending_write_within_the_deadline_and_serves_after(
) {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 2,
        ..ClusterOptions::default()
    })
    .unwrap();
    let procs = OrdererProcesses::take_over(&mut cluster).unwrap();
    let all = [0, 1, 2];
    let leader = OrdererProcesses::wait_for_leader(&cluster, &all, Duration::from_secs(60))
        .await
        .unwrap();
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
    let mut acked = BTreeSet::new();
    for k in 0..5u32 {
        acked.insert(
            cluster
                .submit_until_ordered(&[leader], &cluster.envelope(&k.to_be_bytes()))
                .await,
        );
    }

    // 64 writers keep the leader busy; it is paused with their writes in progress (proposed,
    // not yet committed), and each writer's next write goes to it while it is paused.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pending = Vec::new();
    for w in 0..64u32 {
        let (client, stop) = (cluster.client(leader), stop.clone());
        let envs: Vec<Envelope> = (0..400u32)
            .map(|k| cluster.envelope(format!("writer {w} write {k}").as_bytes()))
            .collect();
        pending.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for env in envs {
                let last = stop.load(std::sync::atomic::Ordering::SeqCst);
                answers.push(submit_once(client.clone(), env, Duration::from_secs(120)).await);
                if last {
                    break;
                }
            }
            answers
        }));
    }
    let load_start = Instant::now();
    loop {
        let st = OrdererProcesses::status(&cluster, leader).await.unwrap();
        if st["raft"]["last_log_index"].as_u64().unwrap_or(0) > 40
            || load_start.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    procs.signal(leader, "STOP").unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let paused_at = OrdererProcesses::status(&cluster, others[0]).await.unwrap()["raft"]
        ["last_log_index"]
        .as_u64()
        .unwrap();

    // The others elect a leader and move their snapshots and purge points past the paused node.
    OrdererProcesses::wait_for_leader(&cluster, &others, Duration::from_secs(60))
        .await
        .unwrap();
    let mut k = 0u32;
    loop {
        for _ in 0..20 {
            let env = cluster.envelope(format!("while paused {k}").as_bytes());
            acked.insert(cluster.submit_until_ordered(&others, &env).await);
            k += 1;
        }
        let mut purged_past = true;
        for &i in &others {
            let st = OrdererProcesses::status(&cluster, i).await.unwrap();
            purged_past &= st["raft"]["purged_index"].as_u64().unwrap_or(0) > paused_at + 20;
        }
        if purged_past {
            break;
        }
        assert!(k < 2_000, "the others never purged past the paused leader");
    }

    procs.signal(leader, "CONT").unwrap();
    let resumed = Instant::now();
    let mut answers = Vec::new();
    for p in pending {
        let remaining = Duration::from_secs(10).saturating_sub(resumed.elapsed());
        match tokio::time::timeout(remaining, p).await {
            Ok(writer) => answers.extend(writer.unwrap()),
            Err(_) => panic!(
                "a write pending at the paused leader had no answer 10 s after it resumed ({} writes answered so far)",
                answers.len()
            ),
        }
    }
    eprintln!(
        "answers after resume: {} ok, {} unavailable; took {:?}",
        answers.iter().filter(|a| a.is_ok()).count(),
        answers.iter().filter(|a| a.is_err()).count(),
        resumed.elapsed()
    );
    for a in &answers {
        match a {
            Ok(tx) => {
                acked.insert(tx.clone());
            }
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "not a retryable answer: {s}"),
        }
    }
    // A fresh Submit to the resumed node answers within a 10 s deadline, and the node then
    // orders (it forwards to the new leader) like any other.
    let fresh = submit_once(
        cluster.client(leader),
        cluster.envelope(b"after resume"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        fresh.is_ok() || fresh.as_ref().is_err_and(|s| s.code() == Code::Unavailable),
        "{fresh:?}"
    );
    for k in 0..10u32 {
        let env = cluster.envelope(format!("served after {k}").as_bytes());
        acked.insert(cluster.submit_until_ordered(&[leader], &env).await);
    }

    // Every node converges on one chain holding every acknowledged envelope once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let chains = loop {
        let mut chains = Vec::new();
        let mut quiet = true;
        for i in all {
            let st = OrdererProcesses::status(&cluster, i).await.unwrap();
            chains.push(st["height"].as_u64().unwrap());
            quiet &= st["pending"].as_u64() == Some(0);
        }
        if quiet && chains.windows(2).all(|w| w[0] == w[1]) {
            break chains;
        }
        assert!(
            Instant::now() < deadline,
            "heights never converged: {chains:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let height = chains[0];
    eprintln!("converged at height {height}; {} acked", acked.len());
    let mut hashes = Vec::new();
    for i in all {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        hashes.push(verify_chain(&cluster.channel, &blocks).unwrap());
        let counts = tx_counts(&blocks);
        for tx in &acked {
            assert_eq!(
                counts.get(tx),
                Some(&1),
                "node {i}: acked tx {tx} not in the chain once"
            );
        }
        assert!(
            counts.values().all(|c| *c == 1),
            "node {i}: a tx is in the chain twice"
        );
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "chains differ");
    drop(procs);
}
