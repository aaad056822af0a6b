//! A real `orderer` process killed with SIGKILL while it installs a snapshot. After restart
//! every node holds one identical verified chain with every acknowledged envelope exactly once.
//! (The leader SIGKILLed under load is the chaos scenario `leader_kill`, docs/chaos.md.)

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::processes::OrdererProcesses;
use common::*;

/// Waits until every node reports the same height with nothing pending, then checks one
/// identical verified chain holding every acked tx exactly once.
async fn assert_one_chain(cluster: &TestCluster, acked: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let height = loop {
        let mut heights = Vec::new();
        let mut quiet = true;
        for i in 0..3 {
            match OrdererProcesses::status(cluster, i).await {
                Ok(st) => {
                    heights.push(st["height"].as_u64().unwrap_or(0));
                    quiet &= st["pending"].as_u64() == Some(0);
                }
                Err(_) => quiet = false,
            }
        }
        if quiet && heights.len() == 3 && heights.windows(2).all(|w| w[0] == w[1]) {
            break heights[0];
        }
        assert!(Instant::now() < deadline, "never converged: {heights:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut chains = Vec::new();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        chains.push(verify_chain(&cluster.channel, &blocks).unwrap());
        let counts = tx_counts(&blocks);
        for tx in acked {
            assert_eq!(counts.get(tx), Some(&1), "node {i}: acked tx {tx} not once");
        }
        assert!(counts.values().all(|c| *c == 1), "node {i}: a tx twice");
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "chains differ");
    println!("one chain of {height} blocks on every node");
}

/// openraft's info lines around a snapshot install on the receiving node: the first chunk
/// arrives, then the install completes (after the state machine made it durable).
const SNAPSHOT_BEGIN: &str = "BeginReceivingSnapshot";
const SNAPSHOT_DONE: &str = "Done install complete snapshot";

/// What node's log holds past `offset` bytes (what one incarnation wrote since then).
fn log_since(path: &std::path::Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_process_sigkilled_while_installing_a_snapshot_restarts_and_converges() {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 2,
        ..ClusterOptions::default()
    })
    .unwrap();
    let mut procs = OrdererProcesses::take_over(&mut cluster).unwrap();
    let cluster = Arc::new(cluster);
    let leader = OrdererProcesses::wait_for_leader(&cluster, &[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    let follower = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    let log = procs.log(follower);
    let mut acked = BTreeSet::new();
    let mut killed_mid_install = 0;
    // The leader's purge point in the last round: the follower can only get past it by a
    // snapshot (its own log ends before it).
    let mut last_purged = 0;
    // Each round: the follower falls behind the others' purge point, is resumed so the leader
    // sends it a snapshot, and is SIGKILLed as soon as its log shows the snapshot arriving.
    // A kill lands mid-install when the install had not completed by then; rounds repeat
    // until that happened (the install takes a few ms: fsync).
    for round in 0..10 {
        if killed_mid_install > 0 && round >= 3 {
            break;
        }
        procs.signal(follower, "STOP").unwrap();
        let behind = OrdererProcesses::status(&cluster, leader).await.unwrap()["raft"]
            ["last_log_index"]
            .as_u64()
            .unwrap();
        let mut k = 0u32;
        loop {
            for _ in 0..10 {
                let env = cluster.envelope(format!("round {round} tx {k}").as_bytes());
                k += 1;
                acked.insert(
                    cluster
                        .submit_until_ordered(&[others[k as usize % 2]], &env)
                        .await,
                );
            }
            let purged = OrdererProcesses::status(&cluster, leader).await.unwrap()["raft"]
                ["purged_index"]
                .as_u64()
                .unwrap_or(0);
            if purged > behind + 5 {
                last_purged = purged;
                break;
            }
            assert!(
                k < 2_000,
                "the leader never purged past the stopped follower"
            );
        }
        let offset = std::fs::metadata(&log).unwrap().len();
        procs.signal(follower, "CONT").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !log_since(&log, offset).contains(SNAPSHOT_BEGIN) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the resumed follower was never sent a snapshot"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        procs.kill(follower);
        let text = log_since(&log, offset);
        let after_begin = &text[text.find(SNAPSHOT_BEGIN).unwrap()..];
        let mid_install = !after_begin.contains(SNAPSHOT_DONE);
        killed_mid_install += usize::from(mid_install);
        println!(
            "round {round}: follower SIGKILLed as the snapshot arrived; install {}",
            if mid_install {
                "not completed"
            } else {
                "already completed"
            }
        );
        procs.start(&cluster, follower).unwrap();
    }
    assert!(
        killed_mid_install > 0,
        "no kill landed between a snapshot's arrival and its completed install"
    );
    assert_one_chain(&cluster, &acked).await;
    // After the kills the restarted follower holds a snapshot past the leader's last purge
    // point: installed to completion after a restart, or made durable by an install the kill
    // interrupted after its write (then the restart opened it; the log says which).
    let text = log_since(&log, 0);
    let installs = text.matches("installed snapshot").count();
    let reopened = text.matches("opened from its stored snapshot").count();
    let snapshot = OrdererProcesses::status(&cluster, follower).await.unwrap()["raft"]
        ["snapshot_index"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "follower installed {installs} snapshots to completion, opened {reopened} times from a \
         stored one, killed mid-install {killed_mid_install} times; its snapshot is at index \
         {snapshot}, the leader had purged to {last_purged}"
    );
    assert!(
        snapshot >= last_purged,
        "the follower holds no snapshot past the leader's purge point {last_purged} (has {snapshot})"
    );
}
