//! Crash points and write errors at the nodes' durable steps, in real node processes (the
//! `failpoints` feature: `cargo test -p chaos-tests --features failpoints --test suite
//! crash_points::`). A `crash` failpoint ends the process right there (exit code 86); an
//! `error` failpoint fails the write through the step's normal error path. After a crash the
//! node restarts without the failpoint and must converge with the others with nothing acked
//! lost; after a write error it must stop cleanly (nonzero exit, the failure named in its log,
//! no panic). The disk-corruption cases are in [`corrupt`].

mod corrupt;
mod load;
mod net;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::topology::Topology;
use load::Load;
use load::MintLoad;
use net::raft_env;
use net::tail;
use net::Net;
use net::CRASH_EXIT_CODE;

/// Entries, applies or commits a node goes through before an armed failpoint fires
/// (`N*off->ACTION`): more than a node's start takes, so the fault lands under load.
const PASSES_BEFORE_FIRING: u32 = 20;

fn topology(name: &str, orderers: usize, peers: usize) -> Topology {
    Topology {
        name: name.into(),
        orderers,
        orgs: 1,
        peers_per_org: peers,
        connected_peers_per_org: peers,
        batch_size: 10,
        batch_timeout_ms: 30,
        base_port: chaos_tests::launcher::free_port_range(25).unwrap(),
    }
}

/// `NAME=N*off->ACTION`: fires on pass N+1.
fn armed(name: &str, action: &str) -> String {
    format!("{name}={PASSES_BEFORE_FIRING}*off->{action}")
}

/// Three orderers, the first made to win elections (the tests' victims are chosen by role),
/// `armed` (index among them, FAILPOINTS) started with its failpoint, every one with
/// `extra_env`; waits until all are ready and the first leads.
pub(crate) async fn three_orderers(
    name: &str,
    armed: Option<(usize, &str)>,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Net> {
    let mut net = Net::generate(topology(name, 3, 1))?;
    let orderers = net.orderers();
    let leader = 0;
    for &i in &orderers {
        net.env[i] = raft_env(i == orderers[leader]);
        net.env[i].extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    for (n, &i) in orderers.iter().enumerate() {
        let fp = armed.filter(|a| a.0 == n).map(|a| a.1);
        net.start(i, fp)?;
    }
    net.wait_ready(&orderers, Duration::from_secs(120)).await?;
    // The first leader is whichever node initialized the cluster first. Stopping another
    // leader until `leader` has taken over (its election timer fires long before the others')
    // hands leadership to it; a leader restarted at once would simply resume.
    let want = orderers[leader];
    let (want_id, _) = net.raft_view(want).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for &i in &orderers {
            views.push((i, net.raft_view(i).await.and_then(|v| v.1)));
        }
        if views.iter().all(|v| v.1 == Some(want_id)) {
            return Ok(net);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not become the leader: {views:?}",
            net.layout[want].name
        );
        let other = views.iter().find_map(|v| v.1.filter(|l| *l != want_id));
        let mut stopped = None;
        for &i in &orderers {
            if net.raft_view(i).await.map(|v| v.0) == other {
                net.proc(i).stop().await?;
                stopped = Some(i);
            }
        }
        while net.raft_view(want).await.and_then(|v| v.1) != Some(want_id) {
            anyhow::ensure!(Instant::now() < deadline, "no hand-over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(i) = stopped {
            net.restart(i)?;
        }
        net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    }
}

/// Asserts node `i` died at failpoint `name` (exit code 86, the failpoint's line in its log).
async fn assert_crashed_at(net: &mut Net, i: usize, name: &str) -> anyhow::Result<()> {
    let status = net.proc(i).wait_exit(Duration::from_secs(90)).await?;
    let log = net.log_text(i);
    anyhow::ensure!(
        status.code() == Some(CRASH_EXIT_CODE),
        "{} exited with {status}, not the crash code; log:\n{}",
        net.layout[i].name,
        tail(&log, 30)
    );
    anyhow::ensure!(
        log.contains(&format!("failpoint {name}: crash")),
        "no crash line"
    );
    println!("{} crashed at {name}", net.layout[i].name);
    Ok(())
}

/// Asserts node `i` stopped on its own after the write error of failpoint `name`: a nonzero
/// exit that is neither the crash code nor a panic, the failure named in its log.
async fn assert_stopped_cleanly_at(net: &mut Net, i: usize, name: &str) -> anyhow::Result<()> {
    let waited = net.proc(i).wait_exit(Duration::from_secs(90)).await;
    let log = net.log_text(i);
    let injected = log
        .lines()
        .filter(|l| l.contains("injected I/O error"))
        .count();
    let status = waited.with_context(|| {
        format!(
            "{} did not stop after {injected} injected errors at {name}; log:\n{}",
            net.layout[i].name,
            tail(&log, 10)
        )
    })?;
    let who = &net.layout[i].name;
    println!(
        "{who} stopped ({status}) after the error at {name}; log tail:\n{}",
        tail(&log, 6)
    );
    anyhow::ensure!(
        status.code() == Some(1),
        "{who} exited with {status}, expected 1; log:\n{}",
        tail(&log, 30)
    );
    anyhow::ensure!(
        !log.contains("panicked"),
        "{who} panicked:\n{}",
        tail(&log, 30)
    );
    let named = format!("injected I/O error at failpoint {name}");
    let last_error = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    anyhow::ensure!(
        last_error.contains(&named) && last_error.contains("fatal"),
        "{who}'s exit line does not name the failure: {last_error:?}"
    );
    Ok(())
}

/// A follower dies between writing Raft entries and fsyncing them; restarted without the
/// failpoint, it rejoins, and every orderer's chain is the same verified chain holding every
/// acked envelope once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_follower_crashed_after_log_write_before_fsync_rejoins_with_every_acked_envelope(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::raft_log_append::before_fsync";
    let mut net = three_orderers("cpfsync", Some((1, &armed(point, "crash"))), &[]).await?;
    let orderers = net.orderers();
    let victim = orderers[1];
    let load = Load::start(&net, 4, 200);
    assert_crashed_at(&mut net, victim, point).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    println!("{} acked; chains at height {height}", acked.len());
    net.check_orderer_chains(height, &acked).await
}

/// The leader dies as it starts applying a batch of committed entries; the others elect a new
/// leader and go on, and the old leader, restarted, re-applies and cuts the same blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_leader_crashed_at_state_machine_apply_restarts_and_the_chains_stay_identical(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::sm_apply::before";
    let mut net = three_orderers("cpapply", Some((0, &armed(point, "crash"))), &[]).await?;
    let orderers = net.orderers();
    let victim = orderers[0];
    let load = Load::start(&net, 4, 200);
    assert_crashed_at(&mut net, victim, point).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    println!("{} acked; chains at height {height}", acked.len());
    net.check_orderer_chains(height, &acked).await
}

/// Writing cut blocks fails on a follower: its Raft stops (a storage error is fatal) and the
/// process exits 1 naming the failpoint, no panic. Restarted, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_block_store_write_error_stops_the_node_cleanly_and_it_restarts_intact(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::block_store_write::before";
    let mut net = three_orderers("cpbserr", Some((2, &armed(point, "error"))), &[]).await?;
    let orderers = net.orderers();
    let victim = orderers[2];
    let load = Load::start(&net, 4, 200);
    assert_stopped_cleanly_at(&mut net, victim, point).await?;
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    net.check_orderer_chains(height, &acked).await
}

/// A follower restarted with a crash armed after it saves a vote; the leader stops, and the
/// follower dies as the election's vote (its own or the one it grants) is fsynced. The last
/// orderer cannot win alone; the follower, restarted without the failpoint, completes an
/// election with it, and the old leader rejoins: one verified chain with every acked envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_follower_crashed_after_saving_its_vote_restarts_and_an_election_completes(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::raft_vote_save::after";
    let mut net = three_orderers("cpvote", None, &[]).await?;
    let orderers = net.orderers();
    let (leader, victim) = (orderers[0], orderers[1]);
    net.proc(victim).stop().await?;
    net.start(victim, Some(&format!("{point}=crash")))?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    let load = Load::start(&net, 4, 200);
    load.wait_more(30, Duration::from_secs(60)).await?;
    net.proc(leader).stop().await?;
    assert_crashed_at(&mut net, victim, point).await?;
    net.start(victim, None)?;
    net.wait_ready(&[victim, orderers[2]], Duration::from_secs(60))
        .await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    net.start(leader, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(30, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    println!("{} acked; chains at height {height}", acked.len());
    net.check_orderer_chains(height, &acked).await
}

/// Raft snapshots every 30 entries, 10 kept after one: snapshots are built, and a follower
/// that was away is sent one, within seconds of load.
pub(crate) const FREQUENT_SNAPSHOTS: &[(&str, &str)] = &[
    ("WEFT_ORDERER_RAFT__SNAPSHOT_INTERVAL_ENTRIES", "30"),
    ("WEFT_ORDERER_RAFT__ENTRIES_KEPT_AFTER_SNAPSHOT", "10"),
];

/// A follower dies right after its first snapshot is stored and fsynced, before Raft purges
/// its log below it; restarted, it resumes from that snapshot, re-applies the entries after
/// it and cuts the same blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_crashed_after_snapshot_build_resumes_from_it_and_the_chains_stay_identical(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::snapshot_build::after";
    let armed = format!("{point}=crash");
    let mut net = three_orderers("cpsnapbuild", Some((1, &armed)), FREQUENT_SNAPSHOTS).await?;
    let orderers = net.orderers();
    let victim = orderers[1];
    let load = Load::start(&net, 4, 200);
    assert_crashed_at(&mut net, victim, point).await?;
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(100, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    println!("{} acked; chains at height {height}", acked.len());
    net.check_orderer_chains(height, &acked).await
}

/// Three orderers whose third (a follower) was stopped while the others went on until the
/// leader purged its log past it: restarted, it is sent a snapshot and must pull the blocks
/// before it from the others. Returns the network, that follower (stopped) and the load.
async fn lagging_follower(name: &str) -> anyhow::Result<(Net, usize, Load)> {
    let mut net = three_orderers(name, None, FREQUENT_SNAPSHOTS).await?;
    let orderers = net.orderers();
    let (leader, victim) = (orderers[0], orderers[2]);
    let status = net.status(victim).await.unwrap();
    let victim_last = status["raft"]["last_log_index"].as_u64().unwrap_or(0);
    net.proc(victim).stop().await?;
    let load = Load::start(&net, 4, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let purged = net
            .status(leader)
            .await
            .and_then(|s| s["raft"]["purged_index"].as_u64());
        if purged.is_some_and(|p| p > victim_last + 1) {
            return Ok((net, victim, load));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "leader never purged past {victim_last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts `victim` without failpoints and checks the cluster converges on one verified chain
/// holding every acked envelope.
async fn restart_and_check(net: &mut Net, victim: usize, load: Load) -> anyhow::Result<()> {
    let orderers = net.orderers();
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    load.wait_more(50, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    println!("{} acked; chains at height {height}", acked.len());
    net.check_orderer_chains(height, &acked).await
}

/// The lagging follower dies at `point` of installing the snapshot it is sent; restarted
/// without the failpoint, it gets the snapshot again, pulls the blocks it lacks from the
/// others, and serves the same verified chain.
async fn follower_crashed_installing_a_snapshot(name: &str, point: &str) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let (mut net, victim, load) = lagging_follower(name).await?;
    net.start(victim, Some(&format!("{point}=crash")))?;
    assert_crashed_at(&mut net, victim, point).await?;
    restart_and_check(&mut net, victim, load).await
}

/// Dies before the received snapshot is stored, after openraft may already have purged the
/// log up to it (the case `LogStore::reconcile` repairs at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_follower_crashed_before_snapshot_install_restarts_and_catches_up(
) -> anyhow::Result<()> {
    follower_crashed_installing_a_snapshot("cpsnapinst0", "orderer::snapshot_install::before").await
}

/// Dies after the received snapshot is stored and fsynced, with the blocks before it missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_follower_crashed_after_snapshot_install_restarts_and_catches_up(
) -> anyhow::Result<()> {
    follower_crashed_installing_a_snapshot("cpsnapinst1", "orderer::snapshot_install::after").await
}

/// The lagging follower cannot write the first block catch-up pulls: it stops (exit 1, the
/// failure named, no panic) as a storage failure anywhere else stops it, instead of retrying
/// the write forever while serving a chain with a gap. Restarted, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_catch_up_block_write_error_stops_the_node_cleanly_and_it_restarts_intact(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "orderer::block_store_put::before";
    let (mut net, victim, load) = lagging_follower("cpputerr").await?;
    net.start(victim, Some(&format!("{point}=error")))?;
    assert_stopped_cleanly_at(&mut net, victim, point).await?;
    restart_and_check(&mut net, victim, load).await
}

/// One orderer, Org1's peer0 (endorser, the twin) and peer1 (the victim, started with
/// `failpoints`); waits until all are ready.
pub(crate) async fn two_peers(
    name: &str,
    failpoints: Option<&str>,
) -> anyhow::Result<(Net, usize, usize)> {
    let mut net = Net::generate(topology(name, 1, 2))?;
    let (twin, victim) = (net.index("Org1MSP/peer0"), net.index("Org1MSP/peer1"));
    net.start(net.orderers()[0], None)?;
    net.start(twin, None)?;
    net.start(victim, failpoints)?;
    let all: Vec<usize> = (0..net.layout.len()).collect();
    net.wait_ready(&all, Duration::from_secs(120)).await?;
    Ok((net, twin, victim))
}

/// A peer dies right after a block's commit batch (block, codes, state, index, savepoint) is
/// durable, before its height moves; restarted, it resumes at that savepoint, and reaches
/// the twin's height, last block hash and state hash, every tx committed VALID in it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_crashed_after_commit_batch_resumes_at_its_savepoint_with_the_twins_state_hash(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "peer::commit_batch::after";
    let (mut net, twin, victim) = two_peers("cppeercrash", Some(&armed(point, "crash"))).await?;
    let load = MintLoad::start(&net, 4);
    assert_crashed_at(&mut net, victim, point).await?;
    load.wait_more(20, Duration::from_secs(60)).await?;
    net.start(victim, None)?;
    // Commit passes: genesis is the first, block n the (n+1)th; the crash came right after
    // block PASSES_BEFORE_FIRING was durable, so the savepoint is one past it.
    let savepoint = u64::from(PASSES_BEFORE_FIRING) + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed_at = loop {
        let log = net.log_text(victim);
        let resumed = log
            .lines()
            .find(|l| l.contains("config in force read from the ledger"))
            .and_then(|l| l.split("height=").nth(1))
            .and_then(|h| h.split_whitespace().next())
            .and_then(|h| h.parse::<u64>().ok());
        if let Some(h) = resumed {
            break h;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no restart line:\n{}",
            tail(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    anyhow::ensure!(
        resumed_at == savepoint,
        "restarted at height {resumed_at}, the savepoint is {savepoint}"
    );
    load.wait_more(20, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, hash, state) = net.peers_converged(twin, victim).await?;
    println!(
        "{} committed; converged at height {height}, last block {hash}, state {state}",
        acked.len()
    );
    net.check_peer_chain(victim, height, &acked).await
}

/// A peer's commit batch fails to write: the peer stops (exit 1, the failure named, no panic)
/// rather than going on past a block it does not hold; restarted, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_commit_write_error_stops_the_peer_cleanly_and_it_restarts_intact(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let point = "peer::commit_batch::before";
    let (mut net, twin, victim) = two_peers("cppeererr", Some(&armed(point, "error"))).await?;
    let load = MintLoad::start(&net, 4);
    assert_stopped_cleanly_at(&mut net, victim, point).await?;
    net.start(victim, None)?;
    load.wait_more(20, Duration::from_secs(60)).await?;
    let acked = load.stop().await;
    let (height, _, _) = net.peers_converged(twin, victim).await?;
    net.check_peer_chain(victim, height, &acked).await
}
