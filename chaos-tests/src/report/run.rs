//! One run's `report.json`: what was faulted, what happened to the transactions, which checks
//! held, and the command that reruns it.
//!
//! The keys are fields here under the same names; the additions (`check_details`,
//! `final_heights`, `mutant`) default when absent, so a report written before them still reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// File name of a run's report inside its directory.
pub const REPORT_JSON: &str = "report.json";

/// How the nodes ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Process,
    Docker,
}

/// One fault, from injection to heal, in seconds since the run started. A fault never healed
/// ends at the run's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// What was done: `kill`, `pause`, `partition`, `delay`, ...
    pub kind: String,
    /// To whom: a node name, or both sides of a partition.
    pub target: String,
    pub start_s: f64,
    pub end_s: f64,
}

impl FaultWindow {
    /// `kind target`: how the plot and the page label the fault.
    pub fn label(&self) -> String {
        if self.target.is_empty() {
            self.kind.clone()
        } else {
            format!("{} {}", self.kind, self.target)
        }
    }
}

/// What happened to the workload's transactions, from the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCounts {
    pub submitted: u64,
    /// Broadcast answered success: each must be committed exactly once.
    pub acked: u64,
    pub committed_valid: u64,
    pub committed_invalid: u64,
    /// Acked but in no committed block after heal: a lost write.
    pub lost_acked: u64,
    /// Committed more than once (counted once per extra copy).
    pub duplicates: u64,
    /// Broadcast timed out or errored: may or may not be committed; never a failure alone.
    pub unknown: u64,
}

impl TxCounts {
    /// Field-wise sum, for a suite's totals.
    pub fn add(&mut self, other: &TxCounts) {
        self.submitted += other.submitted;
        self.acked += other.acked;
        self.committed_valid += other.committed_valid;
        self.committed_invalid += other.committed_invalid;
        self.lost_acked += other.lost_acked;
        self.duplicates += other.duplicates;
        self.unknown += other.unknown;
    }
}

/// Each property the checkers decide, `true` when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// Every orderer's chain is a prefix of one chain.
    pub no_fork: bool,
    /// Hash links, numbering and data hashes verify on every node.
    pub chain_valid: bool,
    /// Every acked transaction is committed.
    pub acked_not_lost: bool,
    /// No transaction is committed twice.
    pub no_duplicates: bool,
    /// Every peer has the same blocks and validation flags as the others, up to its height.
    pub peers_agree: bool,
    /// Every node ends with the same channel config (consenters, orgs).
    pub config_agree: bool,
    /// After the faults healed, a fresh write committed everywhere before the deadline.
    pub live_after_heal: bool,
    /// Every peer's token balances add up to what was minted (no lost update).
    pub balances_conserved: bool,
    /// Forged gossip blocks were refused by the peer they were sent to and reached no other.
    pub forged_contained: bool,
}

impl Checks {
    /// Every check: true. What a run with no checker result yet starts from.
    pub const ALL_HOLD: Checks = Checks {
        no_fork: true,
        chain_valid: true,
        acked_not_lost: true,
        no_duplicates: true,
        peers_agree: true,
        config_agree: true,
        live_after_heal: true,
        balances_conserved: true,
        forged_contained: true,
    };

    /// Each check under its JSON key, in the order.
    pub fn named(&self) -> [(&'static str, bool); 9] {
        [
            ("no_fork", self.no_fork),
            ("chain_valid", self.chain_valid),
            ("acked_not_lost", self.acked_not_lost),
            ("no_duplicates", self.no_duplicates),
            ("peers_agree", self.peers_agree),
            ("config_agree", self.config_agree),
            ("live_after_heal", self.live_after_heal),
            ("balances_conserved", self.balances_conserved),
            ("forged_contained", self.forged_contained),
        ]
    }

    /// The keys of the checks that do not hold, in the order.
    pub fn failed(&self) -> Vec<&'static str> {
        self.named()
            .into_iter()
            .filter(|(_, holds)| !holds)
            .map(|(name, _)| name)
            .collect()
    }

    pub fn all_hold(&self) -> bool {
        self.failed().is_empty()
    }
}

/// One run, as `DIR/report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub backend: Backend,
    pub duration_s: f64,
    pub faults: Vec<FaultWindow>,
    pub txs: TxCounts,
    pub checks: Checks,
    /// From the last heal to the first fresh write committed everywhere; when that never
    /// happened, the time waited (`checks.live_after_heal` is then false).
    pub liveness_after_heal_s: f64,
    /// The run's verdict, decided by the caller (normally `checks.all_hold()`; a mutant run
    /// "passes" when its bug went uncaught).
    pub passed: bool,
    /// The command that reruns this run, seed included.
    pub rerun: String,
    /// Why a check holds or not, by check key ("orderer2 stops at 41, orderer1 has 44"). A
    /// check without an entry has nothing more to say.
    #[serde(default)]
    pub check_details: BTreeMap<String, String>,
    /// Each node's final block height, by node name (orderers and peers).
    #[serde(default)]
    pub final_heights: BTreeMap<String, u64>,
    /// The planted bug this run ran against, when it is a mutation run.
    #[serde(default)]
    pub mutant: Option<String>,
}

impl RunReport {
    /// Writes `dir/report.json` whole; returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        self.ensure_finite()?;
        let path = dir.join(REPORT_JSON);
        super::write_json(&path, self)?;
        Ok(path)
    }

    /// Reads a report written by [`RunReport::write`] (a path to the file itself).
    pub fn read(path: &Path) -> anyhow::Result<RunReport> {
        super::read_json(path)
    }

    /// The keys of the checks that do not hold.
    pub fn failed_checks(&self) -> Vec<&'static str> {
        self.checks.failed()
    }

    /// `scenario, seed N: PASS`, the plot's and the page's heading for the run.
    pub fn plot_title(&self) -> String {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let mutant = self
            .mutant
            .as_ref()
            .map(|m| format!(", mutant {m}"))
            .unwrap_or_default();
        format!("{}, seed {}{mutant}: {verdict}", self.scenario, self.seed)
    }

    fn ensure_finite(&self) -> anyhow::Result<()> {
        use super::ensure_finite;
        ensure_finite("duration_s", self.duration_s)?;
        ensure_finite("liveness_after_heal_s", self.liveness_after_heal_s)?;
        for (i, f) in self.faults.iter().enumerate() {
            ensure_finite(&format!("faults[{i}].start_s"), f.start_s)?;
            ensure_finite(&format!("faults[{i}].end_s"), f.end_s)?;
        }
        Ok(())
    }
}
