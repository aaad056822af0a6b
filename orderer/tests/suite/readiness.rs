//! `/readyz` of a Raft leader cut off from its quorum: it must stop reporting ready (a load
//! balancer would keep sending it Broadcasts that cannot be ordered) and say why, and become
//! ready again once a quorum is back. Real nodes over TLS (see `common`).

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::ClusterOptions;
use common::TestCluster;
use common::CHANNEL;
use openraft::ServerState;

async fn wait_readyz(
    cluster: &TestCluster,
    i: usize,
    code: u16,
    timeout: Duration,
) -> anyhow::Result<(String, Duration)> {
    wait_ready_at(cluster, i, "/readyz", code, timeout).await
}

async fn wait_ready_at(
    cluster: &TestCluster,
    i: usize,
    path: &str,
    code: u16,
    timeout: Duration,
) -> anyhow::Result<(String, Duration)> {
    let start = Instant::now();
    loop {
        let last = match cluster.ops_get(i, path).await {
            Ok((c, body)) if c == code => return Ok((body, start.elapsed())),
            other => other,
        };
        anyhow::ensure!(
            start.elapsed() < timeout,
            "node {i} /readyz never answered {code} within {timeout:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node every running node follows, once one leads with a committed vote.
async fn settled_leader(cluster: &TestCluster) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<_> = cluster
            .running()
            .into_iter()
            .map(|i| {
                let m = cluster
                    .node(i)
                    .registry
                    .get(CHANNEL)
                    .unwrap()
                    .raft
                    .metrics();
                let m = m.borrow();
                (m.current_leader, m.state)
            })
            .collect();
        if let Some((Some(l), _)) = views.first() {
            let i = *l as usize - 1;
            if views.iter().all(|(v, _)| *v == Some(*l))
                && views.get(i).is_some_and(|(_, s)| *s == ServerState::Leader)
            {
                return Ok(i);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no settled leader: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_its_quorum_reports_not_ready_naming_why() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let leader = settled_leader(&cluster).await?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    for i in 0..3 {
        wait_readyz(&cluster, i, 200, Duration::from_secs(30)).await?;
    }

    // Both followers stop: the leader is alone, a minority of one.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for f in &followers {
        cluster.stop_node(*f)?;
    }
    let (body, took) = wait_readyz(&cluster, leader, 503, Duration::from_secs(20)).await?;
    println!(
        "isolated leader /readyz 503 after {took:?}: {}",
        body.trim()
    );
    anyhow::ensure!(body.contains("quorum"), "body does not say why: {body}");

    // The followers come back: ready again.
    for f in &followers {
        cluster.start_node(*f)?;
    }
    let (body, took) = wait_readyz(&cluster, leader, 200, Duration::from_secs(30)).await?;
    println!(
        "old leader /readyz 200 {took:?} after the others returned: {}",
        body.trim()
    );
    Ok(())
}

/// A node restarted while the other consenters are down has no leader: not ready, naming why;
/// once they are back it is not ready until it has caught up: when `/readyz` first answers 200
/// it holds every block the cluster had cut while it was down (the leader's commit index it
/// first heard is its target, `CatchUp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_is_not_ready_without_a_leader_nor_before_it_holds_the_blocks_it_missed(
) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions {
        snapshot_interval_entries: 20,
        entries_kept_after_snapshot: 5,
        ..Default::default()
    })?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let lagging = (leader + 1) % 3;
    cluster.stop_node(lagging)?;
    let others: Vec<usize> = (0..3).filter(|i| *i != lagging).collect();
    for k in 0..60 {
        let env = cluster.envelope(format!("while it is down {k}").as_bytes());
        cluster.submit_until_ordered(&others, &env).await;
    }
    let chain_height = cluster
        .node(others[0])
        .registry
        .get(CHANNEL)
        .unwrap()
        .store
        .height();
    for &i in &others {
        cluster.stop_node(i)?;
    }
    cluster.start_node(lagging)?;
    // Not ready from the start (it has heard no leader's commit index); once its election
    // timeout passes it knows it has no leader either, and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = cluster.ops_get(lagging, "/readyz").await?;
        anyhow::ensure!(code == 503, "ready with the others down: {body}");
        if body.contains("no Raft leader") {
            break;
        }
        anyhow::ensure!(
            body.contains("leader's commit index"),
            "not ready without saying why: {body}"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "never said 'no Raft leader': {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = cluster
        .ops_get(lagging, &format!("/readyz?channel={CHANNEL}"))
        .await?;
    anyhow::ensure!(code == 503, "per-channel readiness {code}");
    let lagging_height = |c: &TestCluster| {
        c.node(lagging)
            .registry
            .get(CHANNEL)
            .unwrap()
            .store
            .height()
    };
    anyhow::ensure!(
        lagging_height(&cluster) < chain_height,
        "it missed nothing?"
    );
    for &i in &others {
        cluster.start_node(i)?;
    }
    // Polled tightly: the height is read right after each answer and only grows, so a 200 that
    // came before the blocks shows as a height short of the chain's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_ready = Vec::new();
    loop {
        let (code, body) = cluster.ops_get(lagging, "/readyz").await?;
        let height = lagging_height(&cluster);
        if code == 200 {
            anyhow::ensure!(
                height >= chain_height,
                "ready at height {height}, the chain had {chain_height}; said before: {not_ready:?}"
            );
            println!("ready at height {height} (chain {chain_height}); before: {not_ready:?}");
            break;
        }
        if not_ready.last() != Some(&body) {
            not_ready.push(body);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not ready within 60 s: {not_ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.wait_converged(Duration::from_secs(60)).await?;
    Ok(())
}

/// One channel without a leader does not make the node unready by default; per-channel
/// readiness names it; with `ready_requires_every_channel` the node is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leaderless_channel_leaves_the_node_ready_unless_every_channel_is_required(
) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions {
        extra_channels: vec![("alone".into(), 10, false)],
        ..Default::default()
    })?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    wait_readyz(&cluster, 0, 200, Duration::from_secs(30)).await?;
    // Only node 0 joins "alone": its three consenters never reach a quorum.
    let join = shared_proto::pb::orderer::JoinChannelRequest {
        block: std::fs::read(cluster.genesis_path("alone"))?,
    };
    cluster
        .orderer_admin_client(0)
        .join_channel(cluster.orderer_admin_request("alone", &join))
        .await?;
    let (body, _) = wait_ready_at(
        &cluster,
        0,
        "/readyz?channel=alone",
        503,
        Duration::from_secs(30),
    )
    .await?;
    anyhow::ensure!(body.contains("channel alone"), "{body}");
    let (code, body) = cluster.ops_get(0, "/readyz").await?;
    anyhow::ensure!(code == 200, "node unready for one channel: {code} {body}");
    let (code, _) = cluster.ops_get(0, "/readyz?channel=nothing-here").await?;
    anyhow::ensure!(code == 404, "unknown channel: {code}");
    cluster.stop_node(0)?;
    cluster.nodes[0].config.ready_requires_every_channel = true;
    cluster.start_node(0)?;
    let (body, _) = wait_readyz(&cluster, 0, 503, Duration::from_secs(30)).await?;
    anyhow::ensure!(body.contains("channel alone"), "{body}");
    Ok(())
}
