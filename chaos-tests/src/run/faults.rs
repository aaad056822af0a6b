//! Carrying out one step of a schedule on a running cluster: resolve its target, start the
//! fault, hold it (a reset repeats during the hold), heal it. Every wait has a deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;

use orderer::admin_client::ConsenterOp;
use orderer::admin_client::Network;

use crate::harness::clock;
use crate::harness::clock::Skew;
use crate::harness::Cluster;
use crate::harness::State;
use crate::launcher::Kind;
use crate::net::Net;
use crate::scenario::Action;
use crate::scenario::Step;
use crate::scenario::Target;
use crate::topology::CHANNEL;

/// How long a fault waits for the cluster to agree on a leader before it picks orderer1.
const LEADER_WAIT: Duration = Duration::from_secs(20);
/// How long one orderer of a rolling restart may take to be ready again.
const RESTART_READY: Duration = Duration::from_secs(60);

/// A fault in force, and what heals it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: String,
    /// The nodes it hit, comma-separated (the report's `target`).
    pub target: String,
    heal: Heal,
}

#[derive(Debug, Clone)]
enum Heal {
    /// Stop, wipe and start the orderer, then add it back to the consenters.
    AddBack(String),
    /// Restart on the real clock.
    Unskew(String),
    /// Judge how the node met its full disk, stop it, move its data back onto the normal disk,
    /// restart it. `log_from`: the log's length when the fault started.
    GiveRoom {
        node: String,
        log_from: u64,
    },
    Start(Vec<String>),
    Resume(String),
    /// Put the container back on its network.
    Reconnect(String),
    /// Stop the forger.
    Forger(tokio::task::AbortHandle),
    Net,
    Nothing,
}

fn orderers(c: &Cluster) -> Vec<String> {
    c.names(Kind::Orderer)
}

/// Peers in name order, split into (orderer-connected, gossip-only).
fn peers(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let connected: BTreeSet<String> = c
        .generated
        .spec
        .peer_orgs
        .iter()
        .flat_map(|o| {
            o.peers
                .iter()
                .filter(|p| p.orderer_connected)
                .map(move |p| format!("{}/{}", o.msp_id, p.name))
        })
        .collect();
    c.names(Kind::Peer)
        .into_iter()
        .partition(|n| connected.contains(n))
}

fn nth(list: &[String], n: usize) -> anyhow::Result<String> {
    anyhow::ensure!(!list.is_empty(), "no node of that kind");
    Ok(list[n % list.len()].clone())
}

/// The nodes `target` names now.
async fn resolve(c: &Cluster, target: Target) -> anyhow::Result<Vec<String>> {
    let all = orderers(c);
    let leader = match target {
        Target::Leader | Target::Follower(_) => Some(
            c.wait_leader(CHANNEL, LEADER_WAIT)
                .await
                .unwrap_or_else(|_| all[0].clone()),
        ),
        _ => None,
    };
    Ok(match target {
        Target::Leader => vec![leader.context("no leader")?],
        Target::Follower(n) => {
            let followers: Vec<String> = all
                .iter()
                .filter(|o| Some(*o) != leader.as_ref())
                .cloned()
                .collect();
            vec![nth(&followers, n)?]
        }
        Target::AllOrderers => all,
        Target::Orderer(n) => vec![nth(&all, n)?],
        Target::ConnectedPeer(n) => vec![nth(&peers(c).0, n)?],
        Target::GossipPeer(n) => vec![nth(&peers(c).1, n)?],
    })
}

fn net_of(net: Option<&Net>) -> anyhow::Result<&Net> {
    net.context("this fault needs the link proxies (a proxied scenario)")
}

/// Starts `step`'s fault.
pub async fn apply(c: &mut Cluster, net: Option<&Net>, step: &Step) -> anyhow::Result<Applied> {
    let targets = resolve(c, step.target).await?;
    let first = targets[0].clone();
    let others = |c: &Cluster| -> Vec<String> {
        orderers(c)
            .into_iter()
            .filter(|o| !targets.contains(o))
            .collect()
    };
    let heal = match &step.action {
        Action::Kill | Action::KillAndWipe => {
            for t in &targets {
                let node = c.node(t)?;
                node.kill();
                if step.action == Action::KillAndWipe {
                    node.wipe()?;
                }
            }
            Heal::Start(targets.clone())
        }
        Action::Pause => {
            c.node(&first)?.pause()?;
            Heal::Resume(first.clone())
        }
        Action::ClockSkew {
            offset_s,
            rate_permille,
        } => {
            let skew = Skew {
                offset_s: *offset_s,
                rate_permille: *rate_permille,
            };
            skew_clock(c, &first, skew).await?;
            Heal::Unskew(first.clone())
        }
        Action::DiskFull { headroom_kib } => {
            let node = c.node(&first)?;
            node.stop();
            let size = node.move_to_small_disk(headroom_kib * 1024)?;
            let log_from = std::fs::metadata(&node.log).map_or(0, |m| m.len());
            c.start(&first)?;
            println!(
                "    disk full {first}: data dir on a {} KiB tmpfs, {headroom_kib} KiB of it free",
                size / 1024
            );
            Heal::GiveRoom {
                node: first.clone(),
                log_from,
            }
        }
        Action::RollingRestart => {
            for t in &targets {
                c.node(t)?.stop();
                c.start(t)?;
                c.wait_ready(RESTART_READY)
                    .await
                    .with_context(|| format!("after restarting {t}"))?;
            }
            Heal::Nothing
        }
        Action::Isolate => {
            net_of(net)?.isolate(&first);
            Heal::Net
        }
        Action::SplitMinority => {
            net_of(net)?.split(&[vec![first.clone()], others(c)]);
            Heal::Net
        }
        Action::Bridge => {
            // The target bridges; the other orderers are split into two sides.
            let rest = others(c);
            let (a, b) = rest.split_at(rest.len() / 2);
            net_of(net)?.bridge(a, b);
            Heal::Net
        }
        Action::OneWayLoss => {
            let to = nth(&others(c), 0)?;
            net_of(net)?.one_way(&first, &to);
            Heal::Net
        }
        Action::Delay {
            latency_ms,
            jitter_ms,
        } => {
            net_of(net)?.delay(&first, *latency_ms, *jitter_ms);
            Heal::Net
        }
        Action::Reset => {
            net_of(net)?.reset(&first);
            Heal::Net
        }
        Action::CutFromOrg => {
            let org = first.split('/').next().unwrap_or_default().to_owned();
            let mates: BTreeSet<String> = c
                .names(Kind::Peer)
                .into_iter()
                .filter(|p| p.starts_with(&format!("{org}/")) && *p != first)
                .collect();
            net_of(net)?.cut_between(&first, &mates);
            Heal::Net
        }
        Action::ConsenterRemoveAdd => {
            consenter_change(c, ConsenterOp::Remove, &first, None).await?;
            Heal::AddBack(first.clone())
        }
        Action::ForgeGossip => Heal::Forger(super::forge::start(c, &first).await?),
        Action::Disconnect => {
            c.node(&first)?.disconnect()?;
            Heal::Reconnect(first.clone())
        }
        Action::PowerCut => {
            for t in &targets {
                let node = c.node(t)?;
                node.kill();
                let dropped = super::powercut::cut(&node.data_dir)
                    .with_context(|| format!("cutting the power of {t}"))?;
                println!(
                    "    power cut {t}: {} bytes past the last fsync dropped from {} files (preallocated space included)",
                    dropped.bytes, dropped.files
                );
            }
            Heal::Start(targets.clone())
        }
        Action::CrashAt(point) => {
            let node = c.node(&first)?;
            node.kill();
            node.set_env("FAILPOINTS", &format!("{point}=return(crash)"));
            c.start(&first)?;
            Heal::Start(vec![first.clone()])
        }
    };
    Ok(Applied {
        kind: step.action.kind(),
        target: targets.join(","),
        heal,
    })
}

/// How far (s) the clock a skewed node's log shows may be from the skew asked for (startup
/// time at the skewed rate, the harness's own reading).
const SKEW_TOLERANCE_S: f64 = 10.0;

/// Restarts `name` with its wall clock skewed and waits until it is ready; fails unless its
/// log's timestamps show the skew (the preload took).
async fn skew_clock(c: &mut Cluster, name: &str, skew: Skew) -> anyhow::Result<()> {
    let lib = clock::libfaketime().map_err(anyhow::Error::msg)?;
    let node = c.node(name)?;
    node.stop();
    node.set_clock_skew(&lib, skew);
    c.start(name)?;
    c.wait_ready(RESTART_READY)
        .await
        .with_context(|| format!("after restarting {name} with FAKETIME={}", skew.faketime()))?;
    let log = std::fs::read_to_string(&c.node(name)?.log)?;
    let seen = clock::log_clock_offset_s(&log).context("no timestamped line in its log")?;
    anyhow::ensure!(
        (seen - f64::from(skew.offset_s)).abs() <= SKEW_TOLERANCE_S,
        "{name} restarted with FAKETIME={} but its log's clock is {seen:+.1} s off",
        skew.faketime()
    );
    println!(
        "    clock skew {name}: FAKETIME=\"{}\", its log's clock {seen:+.1} s off",
        skew.faketime()
    );
    Ok(())
}

/// What a node did when its small disk filled, judged from its process and its log since
/// `log_from`: it must stop cleanly (exit 1, the storage failure named, no panic) or refuse
/// the writes and keep running; a disk that never filled means the fault did not happen.
fn judge_full_disk(c: &mut Cluster, name: &str, log_from: u64) -> anyhow::Result<String> {
    let node = c.node(name)?;
    let usage = node.small_disk_usage().transpose()?;
    let exited = node.exited();
    let text = std::fs::read(&node.log)?;
    let from = usize::try_from(log_from).unwrap_or(0).min(text.len());
    let log = String::from_utf8_lossy(&text[from..]);
    let full_line = log
        .lines()
        .find(|l| l.contains("No space left on device") || l.contains("os error 28"));
    if let Some(l) = log.lines().find(|l| l.contains("panicked")) {
        anyhow::bail!("{name} panicked when its disk filled: {l}");
    }
    let last_error = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    let free = usage.map_or(String::new(), |(_, free)| format!(", {free} B free"));
    let names_it =
        last_error.contains("No space left on device") || last_error.contains("os error 28");
    match (exited, full_line) {
        // A clean stop: an error exit (not a signal, a panic's 101 or a crash point's 86)
        // whose last line names the full disk.
        (Some(status), Some(_))
            if names_it && status.code().is_some_and(|c| c != 0 && c != 101 && c != 86) =>
        {
            Ok(format!("{name} stopped ({status}){free}: {last_error}"))
        }
        (Some(status), _) => anyhow::bail!(
            "{name} exited ({status}) on a full disk without a clean error naming it: \
             {last_error:?}"
        ),
        (None, Some(l)) => Ok(format!("{name} runs on, refusing writes{free}: {l}")),
        (None, None) => {
            anyhow::bail!("{name}'s disk never filled{free}: the fault did not happen")
        }
    }
}

/// How long a consenter change may take to be ordered and carried out.
const CHANGE_DEADLINE: Duration = Duration::from_secs(60);

/// Removes or adds orderer `name` as a consenter of the channel by a config update signed by
/// the orgs' admins (as `orderer admin consenter add|remove` does).
async fn consenter_change(
    c: &Cluster,
    op: ConsenterOp,
    name: &str,
    joining: Option<&str>,
) -> anyhow::Result<()> {
    let network = Network::load(&c.dir.join("net"))?;
    let current = network.current_config(CHANNEL).await?;
    let next = network.consenter_change(&current.channel, op, name)?;
    network
        .apply(&current, &next, joining, CHANGE_DEADLINE)
        .await
        .with_context(|| format!("consenter {} {name}", op.as_str()))?;
    Ok(())
}

/// Adds a removed orderer back as docs/operations.md says for a node that still runs: the
/// update adding it is ordered, then the node is restarted (it keeps its data; a removed node
/// does not restart its Raft by itself), catches up and is promoted.
async fn add_back(c: &mut Cluster, name: &str) -> anyhow::Result<()> {
    let network = Network::load(&c.dir.join("net"))?;
    let current = network.current_config(CHANNEL).await?;
    let next = network.consenter_change(&current.channel, ConsenterOp::Add, name)?;
    let sequence = next.sequence;
    let others: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.kind() == Kind::Orderer && n.name() != name)
        .map(|n| n.view.ops.clone())
        .collect();
    // Not `joining`: that fails at once while the node still reports itself removed, which it
    // does until the restart below.
    let apply = network.apply(&current, &next, None, CHANGE_DEADLINE);
    let restart = async {
        let end = tokio::time::Instant::now() + CHANGE_DEADLINE;
        'ordered: loop {
            for ops in &others {
                if let Ok(s) = crate::launcher::status(ops).await {
                    if s["channels"][CHANNEL]["config_sequence"].as_u64() >= Some(sequence) {
                        break 'ordered;
                    }
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < end,
                "config sequence {sequence} not applied within {CHANGE_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.node(name)?.stop();
        c.start(name)?;
        anyhow::Ok(())
    };
    let (applied, restarted) = tokio::join!(apply, restart);
    restarted?;
    applied.with_context(|| format!("consenter add {name}"))?;
    wait_role(c, name, "consenter", CHANGE_DEADLINE).await
}

/// Waits until orderer `name` reports `role` on the channel.
async fn wait_role(c: &Cluster, name: &str, role: &str, deadline: Duration) -> anyhow::Result<()> {
    let node = c
        .nodes
        .iter()
        .find(|n| n.name() == name)
        .with_context(|| format!("no node {name}"))?;
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let last = match node.status().await {
            Ok(s) if s["channels"][CHANNEL]["role"] == role => return Ok(()),
            Ok(s) => s["channels"][CHANNEL]["role"].to_string(),
            Err(e) => e.to_string(),
        };
        anyhow::ensure!(
            tokio::time::Instant::now() < end,
            "{name} not {role} within {deadline:?} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Holds a fault for `hold`; a reset is repeated (connections closed, a moment to reconnect)
/// every second of it.
pub async fn hold(net: Option<&Net>, applied: &Applied, hold: Duration) {
    if applied.kind != "reset" {
        tokio::time::sleep(hold).await;
        return;
    }
    let end = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < end {
        if let Some(net) = net {
            net.reset(&applied.target);
            tokio::time::sleep(Duration::from_millis(300)).await;
            net.allow(&applied.target);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Ends a fault: restarts what it killed (a crash-point node without its failpoint), resumes
/// what it paused, heals the links.
pub async fn heal(c: &mut Cluster, net: Option<&Net>, applied: &Applied) -> anyhow::Result<()> {
    match &applied.heal {
        Heal::AddBack(name) => add_back(c, name).await?,
        Heal::Unskew(name) => {
            let node = c.node(name)?;
            node.stop();
            node.clear_clock_skew();
            c.start(name)?;
        }
        Heal::GiveRoom {
            node: name,
            log_from,
        } => {
            let judged = judge_full_disk(c, name, *log_from);
            let node = c.node(name)?;
            node.stop();
            node.give_disk_room()?;
            c.start(name)?;
            println!(
                "    disk full {name}: {}; moved back to the normal disk",
                judged?
            );
        }
        Heal::Start(names) => {
            for n in names {
                let node = c.node(n)?;
                node.remove_env("FAILPOINTS");
                // A crash point may have ended it already; a node still running is killed
                // first so it restarts without the failpoint.
                if node.state() != State::Stopped {
                    node.kill();
                }
                c.start(n)?;
            }
        }
        Heal::Resume(n) => c.node(n)?.resume()?,
        Heal::Reconnect(n) => c.node(n)?.reconnect()?,
        Heal::Forger(task) => task.abort(),
        Heal::Net => {
            if let Some(net) = net {
                net.heal();
            }
        }
        Heal::Nothing => {}
    }
    Ok(())
}
