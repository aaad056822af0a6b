//! Running one scenario with one seed, end to end:
//!
//! ```text
//! cluster (harness) ─▶ proxies (net, proxied scenarios) ─▶ ready, a leader
//!   ─▶ workload (load.rs) from t = 0 to the run's duration, into the History
//!   ─▶ the schedule's faults one by one (faults.rs): apply, hold, heal
//!   ─▶ heal everything, stop the workload, wait until every node is ready at one height
//!   ─▶ collect chains, peer states and configs; run every checker (verdict.rs)
//!   ─▶ DIR/report.json and DIR/timeline.svg (report), the command that reruns it
//! ```
//!
//! A failure of the harness itself (a node that never came back) fails the run with the
//! reason in the report, never silently.

pub mod faults;
mod forge;
pub mod load;
mod powercut;
mod verdict;

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;

use crate::harness::Cluster;
use crate::harness::Options;
use crate::history::History;
use crate::net::Net;
use crate::report::Backend;
use crate::report::FaultWindow;
use crate::report::RunReport;
use crate::report::Timeline;
use crate::scenario::Action;
use crate::scenario::Scenario;
use crate::topology::CHANNEL;

/// How long the cluster may take to start and elect a leader.
const START_DEADLINE: Duration = Duration::from_secs(180);
/// How long the workload's calls may take to end after it is told to stop.
const LOAD_STOP: Duration = Duration::from_secs(40);
/// How long every node may take to be ready at one height after the last heal.
const SETTLE_DEADLINE: Duration = Duration::from_secs(180);

/// One run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub seed: u64,
    pub duration_s: f64,
    /// The run's directory (report, plot, material, logs).
    pub dir: PathBuf,
    /// The executable that runs nodes (`EXE node orderer|peer --config FILE`).
    pub exe: PathBuf,
    pub load: load::Load,
    /// A planted bug the nodes were built with (reported; the run fails if a check fails).
    pub mutant: Option<String>,
    /// Processes, or containers of an image.
    pub backend: crate::harness::Backend,
}

impl RunOptions {
    /// The command that reruns this run.
    pub fn rerun(&self) -> String {
        let features = if self.mutant.is_some() {
            " --features mutants"
        } else if self.scenario.shape.failpoints {
            " --features failpoints"
        } else {
            ""
        };
        let backend = match &self.backend {
            crate::harness::Backend::Process => String::new(),
            crate::harness::Backend::Docker { image } => {
                format!(" --backend docker --image {image}")
            }
        };
        let env = self
            .mutant
            .as_ref()
            .map(|m| format!("{}={m} ", shared_proto::mutants::ENV))
            .unwrap_or_default();
        format!(
            "{env}cargo run --release -p chaos-tests{features} --bin chaos -- run --scenario {} \
             --seed {} --duration {} --out {}{backend}",
            self.scenario.name,
            self.seed,
            self.duration_s,
            self.dir.display()
        )
    }
}

/// Runs `o` and writes its report; the report says whether every check held.
pub async fn run(o: &RunOptions) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    let history = History::new();
    let mut faults = Vec::new();
    let outcome = drive(o, &history, &mut faults).await;
    let mut report = RunReport {
        scenario: o.scenario.name.to_owned(),
        seed: o.seed,
        backend: match o.backend {
            crate::harness::Backend::Process => Backend::Process,
            crate::harness::Backend::Docker { .. } => Backend::Docker,
        },
        duration_s: o.duration_s,
        faults: faults.clone(),
        txs: crate::report::TxCounts::default(),
        checks: verdict::NOT_CHECKED,
        liveness_after_heal_s: 0.0,
        passed: false,
        rerun: o.rerun(),
        check_details: std::collections::BTreeMap::new(),
        final_heights: std::collections::BTreeMap::new(),
        mutant: o.mutant.clone(),
    };
    match outcome {
        Ok(v) => v.fill(&mut report),
        Err(e) => {
            report
                .check_details
                .insert("harness".into(), format!("{e:#}"));
            report.passed = false;
        }
    }
    let timeline = Timeline {
        commits: history.commit_times(),
        faults,
        duration_s: o.duration_s,
    };
    crate::report::write_run(&o.dir, &report, &timeline)?;
    Ok(report)
}

/// Everything up to the verdict; the cluster is stopped when this returns.
async fn drive(
    o: &RunOptions,
    history: &History,
    faults: &mut Vec<FaultWindow>,
) -> anyhow::Result<verdict::Verdict> {
    let shape = o.scenario.shape;
    let options = Options {
        orderers: shape.orderers,
        orgs: shape.orgs,
        peers_per_org: shape.peers_per_org,
        backend: o.backend.clone(),
        ..Options::default()
    };
    let mut cluster = Cluster::create(&options, &o.dir, &o.exe)?;
    let net = if shape.proxied {
        let (net, overrides) = Net::start(&cluster.views(), o.seed).await?;
        cluster.set_address_overrides(&overrides)?;
        Some(net)
    } else {
        None
    };
    let schedule = o.scenario.schedule(o.seed, o.duration_s);
    if schedule.iter().any(|s| s.action == Action::PowerCut) {
        // Orderers log what they fsync from their first start, so a cut knows what to drop.
        let lib = powercut::build(&o.dir.join("powercut"))?;
        for node in cluster
            .nodes
            .iter_mut()
            .filter(|n| n.kind() == crate::launcher::Kind::Orderer)
        {
            for (k, v) in powercut::env(&lib, &node.data_dir)? {
                node.set_env(&k, &v);
            }
        }
    }
    cluster.start_all(START_DEADLINE).await?;
    cluster.wait_leader(CHANNEL, START_DEADLINE).await?;
    load::warm_up(&cluster.generated, START_DEADLINE).await?;
    // Time 0 of the run: the workload starts; faults and commits are timed from here.
    let t0 = Instant::now();
    let workload = load::start(&cluster.generated, o.load, history, t0)?;
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let mut step_error = None;
    for step in &schedule {
        tokio::time::sleep_until(at(step.at_s).into()).await;
        let start_s = t0.elapsed().as_secs_f64();
        let applied = match faults::apply(&mut cluster, net.as_ref(), step).await {
            Ok(a) => a,
            Err(e) => {
                step_error = Some(format!("applying {step:?}: {e:#}"));
                break;
            }
        };
        faults::hold(net.as_ref(), &applied, Duration::from_secs_f64(step.hold_s)).await;
        let healed = faults::heal(&mut cluster, net.as_ref(), &applied).await;
        faults.push(FaultWindow {
            kind: applied.kind.clone(),
            target: applied.target.clone(),
            start_s,
            end_s: t0.elapsed().as_secs_f64(),
        });
        if let Err(e) = healed {
            step_error = Some(format!("healing {}: {e:#}", applied.kind));
            break;
        }
    }
    if let Some(net) = &net {
        net.heal();
    }
    tokio::time::sleep_until(at(o.duration_s).into()).await;
    workload.stop(LOAD_STOP).await;
    let run_end_s = t0.elapsed().as_secs_f64();
    if let Some(e) = step_error {
        anyhow::bail!(e);
    }
    let last_heal_s = faults.last().map_or(0.0, |f| f.end_s);
    let settled = verdict::settle(&mut cluster, SETTLE_DEADLINE).await;
    let forged: Vec<String> = faults
        .iter()
        .filter(|f| f.kind == Action::ForgeGossip.kind())
        .map(|f| f.target.clone())
        .collect();
    let v = verdict::judge(&cluster, history, last_heal_s, run_end_s, settled, &forged).await;
    cluster.stop_all();
    drop(net);
    v
}

/// The directory of run (`scenario`, `seed`) under a suite's `out`.
pub fn run_dir(out: &Path, scenario: &str, seed: u64) -> PathBuf {
    out.join(format!("{scenario}-seed{seed}"))
}
