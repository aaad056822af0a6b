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
/// once they are back it becomes ready and catches up. (A follower cannot tell how far behind
/// the cluster it is before the leader's entries arrive, so readiness can come a moment before
/// its height does: see the issue 11 note.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_without_a_leader_is_not_ready_naming_why_and_ready_once_the_others_return(
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
    for &i in &others {
        cluster.stop_node(i)?;
    }
    cluster.start_node(lagging)?;
    let (body, _) = wait_readyz(&cluster, lagging, 503, Duration::from_secs(30)).await?;
    anyhow::ensure!(body.contains("no Raft leader"), "{body}");
    let (code, _) = cluster
        .ops_get(lagging, &format!("/readyz?channel={CHANNEL}"))
        .await?;
    anyhow::ensure!(code == 503, "per-channel readiness {code}");
    for &i in &others {
        cluster.start_node(i)?;
    }
    wait_readyz(&cluster, lagging, 200, Duration::from_secs(60)).await?;
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
