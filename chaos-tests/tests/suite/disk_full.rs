//! A follower orderer whose disk fills under load, in real node processes on the chaos
//! harness's cluster: its data dir is moved onto a tmpfs with 256 KiB free
//! (`chaos_tests::harness::disk`, `mount -t tmpfs -o size=…`; root only, skipped with the reason
//! otherwise). It must stop on its own with an error exit whose last line names the full disk
//! (no panic, no signal); moved back onto the normal disk and restarted, it must catch up, and
//! every checker of the chaos runs (no fork, valid chain, nothing acked lost, no duplicates,
//! peers agree, configs agree) must hold over every node. Run it with
//! `cargo test -p chaos-tests --test suite disk_full::`.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::check::collect::collect;
use chaos_tests::check::collect::Reader;
use chaos_tests::check::Lag;
use chaos_tests::harness::Cluster;
use chaos_tests::harness::Options;
use chaos_tests::history::History;
use chaos_tests::launcher::Kind;
use chaos_tests::run::load;
use chaos_tests::topology::CHANNEL;

/// How long starting the cluster, a commit, a restart or the settle may take.
const DEADLINE: Duration = Duration::from_secs(120);
/// Free space on the follower's small disk: a few seconds of this load.
const HEADROOM: u64 = 256 * 1024;

async fn height(c: &Cluster, name: &str) -> Option<u64> {
    let n = c.nodes.iter().find(|n| n.name() == name)?;
    n.status().await.ok()?["channels"][CHANNEL]["height"].as_u64()
}

/// Waits until every node reports one height and no orderer holds envelopes not yet cut.
async fn settle(c: &Cluster) -> anyhow::Result<u64> {
    let end = Instant::now() + DEADLINE;
    loop {
        let mut heights = Vec::new();
        let mut pending = 0;
        for n in &c.nodes {
            let s = n.status().await.ok();
            let ch = s.as_ref().map(|s| &s["channels"][CHANNEL]);
            heights.push(ch.and_then(|c| c["height"].as_u64()));
            if n.kind() == Kind::Orderer {
                pending += ch.and_then(|c| c["pending"].as_u64()).unwrap_or(0);
            }
        }
        if let Some(Some(h)) = heights.first() {
            if pending == 0 && heights.iter().all(|x| *x == Some(*h)) {
                return Ok(*h);
            }
        }
        anyhow::ensure!(
            Instant::now() < end,
            "not settled: heights {heights:?}, {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_stops_with_a_clear_error_when_its_disk_fills_and_catches_up_after_room_is_given(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    if let Err(why) = chaos_tests::harness::disk::probe(&std::env::temp_dir()) {
        println!("skipped: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let options = Options {
        orgs: 1,
        peers_per_org: 1,
        ..Options::default()
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_chaos"));
    let mut cluster = Cluster::create(&options, dir.path(), exe)?;
    cluster.start_all(DEADLINE).await?;
    let leader = cluster.wait_leader(CHANNEL, DEADLINE).await?;
    load::warm_up(&cluster.generated, DEADLINE).await?;
    let history = History::new();
    let workload = load::start(
        &cluster.generated,
        load::Load::default(),
        &history,
        Instant::now(),
    )?;
    let victim = cluster
        .names(Kind::Orderer)
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();

    // The follower restarts on a disk with HEADROOM free and must stop by itself.
    let node = cluster.node(&victim)?;
    node.stop();
    let size = node.move_to_small_disk(HEADROOM)?;
    let log_from = std::fs::metadata(&node.log)?.len() as usize;
    cluster.start(&victim)?;
    println!("{victim} restarted on a {} KiB tmpfs", size / 1024);
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = cluster.node(&victim)?.exited() {
            break status;
        }
        anyhow::ensure!(Instant::now() < end, "{victim} still runs on a full disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node = cluster.node(&victim)?;
    let (_, free) = node.small_disk_usage().unwrap()?;
    let log = std::fs::read_to_string(&node.log)?;
    let log = &log[log_from.min(log.len())..];
    let last_error = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    println!("{victim} exited ({status}) with {free} B free: {last_error}");
    assert!(!log.contains("panicked"), "{victim} panicked:\n{log}");
    assert!(
        status.code().is_some_and(|c| c != 0 && c != 101),
        "{victim} exited with {status}, not an error exit"
    );
    assert!(
        last_error.contains("No space left on device") && last_error.contains("fatal"),
        "{victim}'s last line does not name the full disk: {last_error:?}"
    );
    let stopped_at = height(&cluster, &leader).await.unwrap_or(0);

    // Room: the data moves back onto the normal disk; restarted, the follower catches up
    // while the load goes on.
    let node = cluster.node(&victim)?;
    node.give_disk_room()?;
    cluster.start(&victim)?;
    cluster.wait_ready(DEADLINE).await?;
    let end = Instant::now() + DEADLINE;
    while height(&cluster, &victim).await.unwrap_or(0) <= stopped_at + 2 {
        anyhow::ensure!(Instant::now() < end, "{victim} did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workload.stop(Duration::from_secs(40)).await;
    let settled = settle(&cluster).await?;
    let reader = Reader::devnet(&cluster.generated)?;
    let collected = collect(&reader, &cluster.views(), DEADLINE).await;
    println!("settled at height {settled} (the leader was at {stopped_at} when {victim} stopped)");
    for check in collected.checks(&history, &Lag::Fails, false) {
        println!("{}: {} ({})", check.name, check.passed, check.detail);
        assert!(check.passed, "{}: {}", check.name, check.detail);
    }
    cluster.stop_all();
    Ok(())
}
