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
    let start = Instant::now();
    loop {
        let last = match cluster.ops_get(i, "/readyz").await {
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
