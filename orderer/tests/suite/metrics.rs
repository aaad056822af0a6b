//! `/metrics` of a 3-node cluster, scraped over HTTP on each node's ops port: the Raft view an
//! operator alerts on (one leader, cluster size, quorum, leader churn) and the block store
//! height, through a leader being stopped and started again. Real nodes over TLS (see `common`).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use common::ClusterOptions;
use common::TestCluster;
use common::CHANNEL;

/// Every sample of node `i`'s `/metrics` whose labels are exactly this test's channel, by
/// metric name (without labels).
async fn scrape(cluster: &TestCluster, i: usize) -> anyhow::Result<BTreeMap<String, f64>> {
    let (code, body) = cluster.ops_get(i, "/metrics").await?;
    anyhow::ensure!(code == 200, "node {i} /metrics {code}: {body}");
    let labels = format!("{{channel=\"{CHANNEL}\"}} ");
    Ok(body
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(&labels)?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// Node `i`'s value of `weft_orderer_<name>{channel=...}`.
async fn value(cluster: &TestCluster, i: usize, name: &str) -> anyhow::Result<f64> {
    let samples = scrape(cluster, i).await?;
    samples
        .get(&format!("weft_orderer_{name}"))
        .copied()
        .with_context(|| format!("node {i}: no weft_orderer_{name} in {samples:?}"))
}

/// Waits until `check` holds for the scrapes of the running nodes; returns them.
async fn wait_scrapes(
    cluster: &TestCluster,
    what: &str,
    timeout: Duration,
    check: impl Fn(&BTreeMap<usize, BTreeMap<String, f64>>) -> bool,
) -> anyhow::Result<BTreeMap<usize, BTreeMap<String, f64>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut scrapes = BTreeMap::new();
        for i in cluster.running() {
            scrapes.insert(i, scrape(cluster, i).await?);
        }
        if check(&scrapes) {
            return Ok(scrapes);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last scrapes {scrapes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get(scrape: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
    scrape.get(&format!("weft_orderer_{name}")).copied()
}

/// The one node reporting `is_leader 1` while every other running node reports 0.
fn sole_leader(scrapes: &BTreeMap<usize, BTreeMap<String, f64>>) -> Option<usize> {
    let leaders: Vec<usize> = scrapes
        .iter()
        .filter(|(_, s)| get(s, "is_leader") == Some(1.0))
        .map(|(i, _)| *i)
        .collect();
    let all_reported = scrapes.values().all(|s| get(s, "is_leader").is_some());
    match leaders.as_slice() {
        [one] if all_reported => Some(*one),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stopped_and_restarted_is_reported_by_every_nodes_raft_metrics() -> anyhow::Result<()>
{
    let wait = Duration::from_secs(30);
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.wait_for_leader(wait).await?;

    // One leader; every node knows the three voters and the channel config's sequence. The
    // leader-change counter is kept by a task watching openraft's metrics, so a node may
    // report the leader a moment before it has counted it: wait for both.
    let scrapes = wait_scrapes(
        &cluster,
        "exactly one is_leader 1, every node counted its first leader",
        wait,
        |s| {
            sole_leader(s).is_some()
                && s.values()
                    .all(|m| get(m, "leader_changes_total").is_some_and(|n| n >= 1.0))
        },
    )
    .await?;
    let leader = sole_leader(&scrapes).unwrap();
    println!("leader: node {leader}");
    let sequence = cluster.channel.config().sequence as f64;
    for (i, s) in &scrapes {
        anyhow::ensure!(get(s, "cluster_size") == Some(3.0), "node {i}: {s:?}");
        anyhow::ensure!(
            get(s, "config_sequence") == Some(sequence),
            "node {i}: {s:?}"
        );
        anyhow::ensure!(get(s, "snapshot_index").is_some(), "node {i}: {s:?}");
        anyhow::ensure!(
            get(s, "raft_log_entries").is_some_and(|n| n >= 1.0),
            "node {i}: {s:?}"
        );
        anyhow::ensure!(
            get(s, "leader_changes_total").is_some_and(|n| n >= 1.0),
            "node {i} saw its first leader: {s:?}"
        );
    }

    // A few envelopes ordered, each cut into its own block (the idle cut) before the
    // next is sent: the committed block number is the store's last block.
    let mut height = 0;
    for k in 0..4 {
        let env = cluster.envelope(format!("metrics {k}").as_bytes());
        cluster.submit_until_ordered(&[0, 1, 2], &env).await;
        height = cluster.wait_converged(wait).await?;
    }
    anyhow::ensure!(
        height >= 5,
        "expected 4 blocks after genesis: height {height}"
    );
    // Each of those blocks was cut by the quiet cut (the leader had nothing more on its way),
    // on every node (the count is each node's own: they apply the same entries).
    for i in 0..3 {
        let (_, body) = cluster.ops_get(i, "/metrics").await?;
        let quiet_cuts: f64 = body
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "weft_orderer_blocks_cut_total{{channel=\"{CHANNEL}\",reason=\"quiet\"}} "
                ))
            })
            .with_context(|| format!("node {i}: no quiet cut count in {body}"))?
            .trim()
            .parse()?;
        anyhow::ensure!(
            quiet_cuts >= 4.0,
            "node {i}: {quiet_cuts} blocks cut by the quiet cut"
        );
    }
    for i in 0..3 {
        let committed = value(&cluster, i, "committed_block_number").await?;
        println!("node {i}: committed_block_number {committed}, store height {height}");
        anyhow::ensure!(
            committed == (cluster.height(i) - 1) as f64,
            "node {i}: committed_block_number {committed}, store height {}",
            cluster.height(i)
        );
    }
    wait_scrapes(&cluster, "leader hears from all 3", wait, |s| {
        get(&s[&leader], "active_nodes") == Some(3.0)
    })
    .await?;

    // The leader stops: a survivor wins, counts the change and leads; it hears from 2 voters.
    let before: BTreeMap<usize, f64> = {
        let mut m = BTreeMap::new();
        for i in 0..3 {
            m.insert(i, value(&cluster, i, "leader_changes_total").await?);
        }
        m
    };
    cluster.stop_node(leader)?;
    let scrapes = wait_scrapes(&cluster, "a new sole leader", wait, |s| {
        sole_leader(s).is_some()
    })
    .await?;
    let new_leader = sole_leader(&scrapes).unwrap();
    let changes = get(&scrapes[&new_leader], "leader_changes_total").unwrap_or(0.0);
    println!(
        "node {leader} stopped; node {new_leader} leads, leader_changes_total {} -> {changes}",
        before[&new_leader]
    );
    anyhow::ensure!(
        changes > before[&new_leader],
        "new leader {new_leader}: leader_changes_total {} -> {changes}",
        before[&new_leader]
    );
    let scrapes = wait_scrapes(&cluster, "new leader hears from 2", wait, |s| {
        get(&s[&new_leader], "active_nodes") == Some(2.0)
    })
    .await?;
    println!(
        "node {new_leader} active_nodes {:?} while node {leader} is stopped",
        get(&scrapes[&new_leader], "active_nodes")
    );
    for (i, s) in &scrapes {
        anyhow::ensure!(get(s, "cluster_size") == Some(3.0), "node {i}: {s:?}");
    }

    // It comes back: whoever leads hears from all three again.
    cluster.start_node(leader)?;
    let scrapes = wait_scrapes(&cluster, "leader hears from 3 again", wait, |s| {
        sole_leader(s).is_some_and(|l| get(&s[&l], "active_nodes") == Some(3.0))
    })
    .await?;
    println!(
        "node {leader} restarted; node {:?} leads with active_nodes 3",
        sole_leader(&scrapes)
    );
    Ok(())
}
