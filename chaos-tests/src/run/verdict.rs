//! After the faults: wait until the cluster settles (every node ready, every member at one
//! height), then collect what every member holds and run every checker.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use super::load;
use crate::check;
use crate::harness::Cluster;
use crate::harness::State;
use crate::history::History;
use crate::report::Checks;
use crate::report::RunReport;
use crate::report::TxCounts;
use crate::topology::CHANNEL;

/// A new block must be committed within this long after the last fault heals.
pub const LIVENESS_BOUND_S: f64 = 30.0;

/// No check ran (the harness failed before the checkers).
pub const NOT_CHECKED: Checks = Checks {
    no_fork: false,
    chain_valid: false,
    acked_not_lost: false,
    no_duplicates: false,
    peers_agree: false,
    config_agree: false,
    live_after_heal: false,
    balances_conserved: false,
    forged_contained: false,
};

/// What the checkers found.
#[derive(Debug)]
pub struct Verdict {
    pub checks: Checks,
    pub details: BTreeMap<String, String>,
    pub txs: TxCounts,
    pub liveness_after_heal_s: f64,
    pub final_heights: BTreeMap<String, u64>,
}

impl Verdict {
    pub fn fill(self, r: &mut RunReport) {
        r.passed = self.checks.all_hold();
        r.checks = self.checks;
        r.check_details.extend(self.details);
        r.txs = self.txs;
        r.liveness_after_heal_s = self.liveness_after_heal_s;
        r.final_heights = self.final_heights;
    }
}

/// Every member's height on the channel (from `/status`), by name.
pub async fn heights(c: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for n in &c.nodes {
        if let Ok(s) = n.status().await {
            if let Some(h) = s["channels"][CHANNEL]["height"].as_u64() {
                out.insert(n.name().to_owned(), h);
            }
        }
    }
    out
}

/// Waits until every node runs, answers `/readyz` and reports the same height; `Err` says
/// what was still different at the deadline (the checks then judge what there is).
pub async fn settle(c: &mut Cluster, deadline: Duration) -> Result<(), String> {
    let end = Instant::now() + deadline;
    loop {
        let mut why = Vec::new();
        for n in &mut c.nodes {
            if n.state() != State::Running {
                why.push(format!("{} is not running", n.name()));
            } else if !n.ready().await {
                why.push(format!("{} is not ready", n.name()));
            }
        }
        let h = heights(c).await;
        let distinct: std::collections::BTreeSet<u64> = h.values().copied().collect();
        if h.len() < c.nodes.len() || distinct.len() > 1 {
            why.push(format!("heights {h:?}"));
        }
        // Envelopes ordered (acknowledged) but not yet cut into a block: the chain is not
        // final yet (crash_at_apply, seed 1: a transaction acked 30 ms before the settle
        // was missing from the chains read at equal heights).
        for n in c
            .nodes
            .iter()
            .filter(|n| n.kind() == crate::launcher::Kind::Orderer)
        {
            if let Ok(s) = n.status().await {
                let pending = s["channels"][CHANNEL]["pending"].as_u64().unwrap_or(0);
                if pending > 0 {
                    why.push(format!("{} has {pending} envelopes not yet cut", n.name()));
                }
            }
        }
        if why.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(why.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long reading every member's chain may take.
const COLLECT_DEADLINE: Duration = Duration::from_secs(120);

/// Reads every member's chain, state and config and runs every checker. `run_end_s` is when
/// the workload stopped (commits are observed until then).
pub async fn judge(
    c: &Cluster,
    history: &History,
    last_heal_s: f64,
    run_end_s: f64,
    settled: Result<(), String>,
    forged_targets: &[String],
) -> anyhow::Result<Verdict> {
    let reader = check::collect::Reader::devnet(&c.generated)?;
    let views = c.views();
    let collected = check::collect::collect(&reader, &views, COLLECT_DEADLINE).await;
    let balances = check::probe::balances(
        &c.generated,
        &views,
        &load::ACCOUNTS,
        Duration::from_secs(30),
    )
    .await;
    let conserved = check::balances_conserved(
        &balances,
        &load::ACCOUNTS,
        load::MINT_EACH * load::ACCOUNTS.len() as u64,
    );
    let conserved = check::Check {
        detail: format!(
            "{}; {} transactions failed the MVCC check",
            conserved.detail,
            mvcc_conflicts(&collected)
        ),
        ..conserved
    };
    let contained =
        check::forged_contained(&check::probe::refused_blocks(&views).await, forged_targets);
    let mut checks = Checks::ALL_HOLD;
    let mut details = BTreeMap::new();
    if let Err(e) = settled {
        details.insert("settle".into(), e);
    }
    let found = collected.checks(history, &check::Lag::Fails, false);
    let live = check::live_after_heal(
        last_heal_s,
        &history.commit_times(),
        LIVENESS_BOUND_S,
        run_end_s,
    );
    let state = [live.check.clone(), conserved, contained];
    for ch in found.iter().chain(&state) {
        match ch.name {
            "no_fork" => checks.no_fork = ch.passed,
            "chain_valid" => checks.chain_valid = ch.passed,
            "acked_not_lost" => checks.acked_not_lost = ch.passed,
            "no_duplicates" => checks.no_duplicates = ch.passed,
            "peers_agree" => checks.peers_agree = ch.passed,
            "config_agree" => checks.config_agree = ch.passed,
            "live_after_heal" => checks.live_after_heal = ch.passed,
            "balances_conserved" => checks.balances_conserved = ch.passed,
            "forged_contained" => checks.forged_contained = ch.passed,
            other => anyhow::bail!("unknown check {other}"),
        }
        details.insert(ch.name.to_owned(), ch.detail.clone());
    }
    Ok(Verdict {
        checks,
        details,
        txs: history.summary(&collected.index()),
        liveness_after_heal_s: live.seconds,
        final_heights: collected.heights(),
    })
}

/// How many transactions the first peer read marked `MVCC_READ_CONFLICT` (how hard the
/// workload tested the check: a run without conflicts proves nothing about it).
fn mvcc_conflicts(collected: &check::collect::Collected) -> usize {
    let conflict = shared_proto::pb::tx::TxValidationCode::MvccReadConflict as i32;
    collected.peer_states.first().map_or(0, |p| {
        p.codes.iter().flatten().filter(|c| **c == conflict).count()
    })
}
