//! `devnet verify`: on a quiet network (the workload paused), every transaction an orderer
//! acknowledged is in the chain of every listed orderer and every peer, and the nodes agree.
//!
//! Waits (bounded) until every node reports the same height, then reads every node's whole
//! chain ([`crate::check::collect`]) and decides, with the chaos checkers:
//!
//! - per node: every acked tx id is in its chain ([`check::acked_not_lost`] on that chain);
//! - `no_fork` with [`Lag::Fails`]: the same height and the same header hash at every height;
//! - `chain_valid`, `no_duplicates`, `peers_agree` (codes and state hash), `config_agree`
//!   (same config sequence and consenters on orderers and peers).
//!
//! A failed round is read again until the deadline (a raw envelope acked just before the pause
//! may still be cut into a block); then the failures are printed and the verb fails.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use shared_proto::material::Generated;

use super::load;
use crate::check;
use crate::check::collect;
use crate::check::collect::Reader;
use crate::check::ChainIndex;
use crate::check::Check;
use crate::check::Lag;
use crate::history::History;
use crate::launcher;
use crate::launcher::Kind;
use crate::topology::nodes;
use crate::topology::NodeView;

const ROUND_PAUSE: Duration = Duration::from_secs(2);
/// How long one read of all chains may take.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// `devnet verify` options.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub network: PathBuf,
    /// The `acked` file `devnet load` wrote (and any `devnet broadcast --out` files).
    pub acked: Vec<PathBuf>,
    /// The orderers that serve the channel now (the material may name removed ones).
    pub orderers: Vec<String>,
    pub timeout: Duration,
}

/// One round's outcome: the checks, and each node's height and acked count.
struct Round {
    checks: Vec<Check>,
    nodes: Vec<(String, u64, usize)>,
}

impl Round {
    fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The listed orderers and every peer of the material.
fn selected(g: &Generated, orderers: &[String]) -> anyhow::Result<Vec<NodeView>> {
    let all = nodes(g);
    for name in orderers {
        anyhow::ensure!(
            all.iter()
                .any(|v| v.kind == Kind::Orderer && &v.name == name),
            "no orderer {name:?} in {}",
            g.dir.display()
        );
    }
    Ok(all
        .into_iter()
        .filter(|v| v.kind == Kind::Peer || orderers.contains(&v.name))
        .collect())
}

/// Heights of `CHANNEL` the nodes report (`None`: did not answer).
async fn heights(views: &[NodeView]) -> Vec<Option<u64>> {
    let reads = views.iter().map(|v| async move {
        let s = launcher::status(&v.ops).await.ok()?;
        s["channels"][crate::topology::CHANNEL]["height"].as_u64()
    });
    futures::future::join_all(reads).await
}

async fn round(reader: &Reader, views: &[NodeView], history: &History) -> Round {
    let collected = collect::collect(reader, views, READ_DEADLINE).await;
    let mut checks = collected.checks(history, &Lag::Fails, false);
    let acked = history.acked_ids().len();
    let mut per_node = Vec::new();
    for chain in collected.orderers.iter().chain(&collected.peers) {
        let on_node = check::acked_not_lost(history, &ChainIndex::from_chain(chain, Some(chain)));
        let missing = if on_node.passed {
            0
        } else {
            // The detail starts with "N of M acked txs are not in ...".
            on_node
                .detail
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(acked)
        };
        per_node.push((
            chain.member.clone(),
            chain.height(),
            acked - missing.min(acked),
        ));
        if !on_node.passed {
            checks.push(Check {
                name: "acked_on_every_node",
                passed: false,
                detail: on_node.detail,
            });
        }
    }
    for (name, why) in &collected.unreachable {
        per_node.push((format!("{name} (unreadable: {why})"), 0, 0));
    }
    Round {
        checks,
        nodes: per_node,
    }
}

/// Runs the check; fails (after printing why) unless every check holds before the deadline.
pub async fn run(o: VerifyOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + o.timeout;
    let g = Generated::load(&o.network)
        .with_context(|| format!("{} holds no generated network", o.network.display()))?;
    let views = selected(&g, &o.orderers)?;
    let org = &g
        .spec
        .peer_orgs
        .first()
        .context("the network has no peer org")?
        .msp_id;
    let reader = Reader::from_network(&g, org, "User1", crate::topology::CHANNEL)?;
    let history = History::new();
    for file in &o.acked {
        for (id, orderer) in load::read_acked(file)? {
            history.acked(&id, &orderer, 0.0);
        }
    }
    let acked = history.acked_ids().len();
    anyhow::ensure!(
        acked > 0,
        "no acked transaction to look for in {:?}",
        o.acked
    );
    // Same height everywhere first (cheap), then the full read.
    let mut last_heights;
    loop {
        let hs = heights(&views).await;
        last_heights = views
            .iter()
            .zip(&hs)
            .map(|(v, h)| format!("{} {}", v.name, h.map_or("-".into(), |h| h.to_string())))
            .collect::<Vec<_>>()
            .join(", ");
        let first = hs.first().copied().flatten();
        if first.is_some() && hs.iter().all(|h| *h == first) {
            break;
        }
        if Instant::now() + ROUND_PAUSE >= deadline {
            anyhow::bail!(
                "FAIL heights never agreed within {} s: {last_heights}",
                o.timeout.as_secs()
            );
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        let r = round(&reader, &views, &history).await;
        let last = Instant::now() + ROUND_PAUSE >= deadline;
        if r.passed() || last {
            for (name, height, found) in &r.nodes {
                println!("  {name:<16} height {height:>6}  acked txs present {found}/{acked}");
            }
            for c in &r.checks {
                let verdict = if c.passed { "ok  " } else { "FAIL" };
                println!("  {verdict} {:<20} {}", c.name, c.detail);
            }
            let secs = started.elapsed().as_secs_f64();
            if r.passed() {
                println!(
                    "verify: {} nodes agree; all {acked} acked txs on every node ({rounds} read(s), {secs:.1} s)",
                    r.nodes.len()
                );
                return Ok(());
            }
            anyhow::bail!(
                "FAIL after {rounds} read(s) in {secs:.1} s (heights at the start: {last_heights})"
            );
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}
