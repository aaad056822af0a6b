//! A suite's `summary.json` (every run, its verdict and rerun command, totals) and
//! `mutants.json` (which planted bug the checks caught), built by reading back the runs'
//! `report.json` files, so a suite can be summarised again after the fact.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;
use serde::Serialize;

use super::run::RunReport;
use super::run::TxCounts;
use super::run::REPORT_JSON;

/// File name of a suite's summary inside the suite directory.
pub const SUMMARY_JSON: &str = "summary.json";
/// File name of the mutation results inside the suite directory.
pub const MUTANTS_JSON: &str = "mutants.json";

/// How deep under the suite directory `report.json` files are looked for: `SUITE/RUN/` and
/// `SUITE/SCENARIO/SEED/` layouts both fit, and a stray deep tree is not walked.
const RUN_DEPTH_MAX: usize = 3;

/// One run in the suite's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRun {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    /// The run's `report.json`, relative to the suite directory, with `/` separators.
    pub report: String,
    pub failed_checks: Vec<String>,
    pub rerun: String,
    #[serde(default)]
    pub mutant: Option<String>,
}

/// Counts over the suite's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuiteTotals {
    pub runs: u64,
    pub passed: u64,
    pub failed: u64,
    /// Every run's transaction counts, summed.
    pub txs: TxCounts,
    pub duration_s: f64,
}

/// A suite, as `SUITE/summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuiteSummary {
    pub runs: Vec<SuiteRun>,
    pub totals: SuiteTotals,
}

impl SuiteSummary {
    /// The summary of `runs` (each a report and the path of its file), in the order given.
    /// Paths under `suite_dir` are written relative to it.
    pub fn of(suite_dir: &Path, runs: &[(PathBuf, RunReport)]) -> SuiteSummary {
        let mut summary = SuiteSummary::default();
        for (path, run) in runs {
            summary.runs.push(SuiteRun {
                scenario: run.scenario.clone(),
                seed: run.seed,
                passed: run.passed,
                report: relative(suite_dir, path),
                failed_checks: run.failed_checks().into_iter().map(String::from).collect(),
                rerun: run.rerun.clone(),
                mutant: run.mutant.clone(),
            });
            let totals = &mut summary.totals;
            totals.runs += 1;
            if run.passed {
                totals.passed += 1;
            } else {
                totals.failed += 1;
            }
            totals.txs.add(&run.txs);
            totals.duration_s += run.duration_s;
        }
        summary
    }

    /// Writes `suite_dir/summary.json` whole; returns its path.
    pub fn write(&self, suite_dir: &Path) -> anyhow::Result<PathBuf> {
        super::ensure_finite("totals.duration_s", self.totals.duration_s)?;
        let path = suite_dir.join(SUMMARY_JSON);
        super::write_json(&path, self)?;
        Ok(path)
    }

    pub fn read(path: &Path) -> anyhow::Result<SuiteSummary> {
        super::read_json(path)
    }
}

/// One planted bug and whether the checks caught it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutantOutcome {
    pub name: String,
    pub caught: bool,
    /// What caught it (a check key, or `scenario/check`); empty when not caught.
    pub by: String,
    /// From the run's start to the catch, or the whole run when not caught.
    pub seconds: f64,
}

/// The mutation results, as `SUITE/mutants.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MutantsReport {
    pub mutants: Vec<MutantOutcome>,
}

impl MutantsReport {
    /// Writes `dir/mutants.json` whole; returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        for m in &self.mutants {
            super::ensure_finite(&format!("mutant {} seconds", m.name), m.seconds)?;
        }
        let path = dir.join(MUTANTS_JSON);
        super::write_json(&path, self)?;
        Ok(path)
    }

    pub fn read(path: &Path) -> anyhow::Result<MutantsReport> {
        super::read_json(path)
    }
}

/// Every `report.json` under `suite_dir` (up to [`RUN_DEPTH_MAX`] levels down), read back,
/// ordered by path. A report that does not parse is an error naming its file: a suite summary
/// that silently drops a run would hide exactly the run that went wrong.
pub fn collect_runs(suite_dir: &Path) -> anyhow::Result<Vec<(PathBuf, RunReport)>> {
    let mut paths = Vec::new();
    find_reports(suite_dir, 0, &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .map(|p| RunReport::read(&p).map(|r| (p, r)))
        .collect()
}

fn find_reports(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() && depth < RUN_DEPTH_MAX {
            find_reports(&path, depth + 1, out)?;
        } else if kind.is_file() && depth > 0 && entry.file_name() == REPORT_JSON {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every run under `suite_dir` and writes `summary.json` and `index.html` there
/// (`mutants.json`, when present, is shown on the page). Returns the summary.
pub fn write_suite(suite_dir: &Path) -> anyhow::Result<SuiteSummary> {
    let runs = collect_runs(suite_dir)?;
    let summary = SuiteSummary::of(suite_dir, &runs);
    summary.write(suite_dir)?;
    let mutants_path = suite_dir.join(MUTANTS_JSON);
    let mutants = if mutants_path.is_file() {
        Some(MutantsReport::read(&mutants_path)?)
    } else {
        None
    };
    super::html::write_index(suite_dir, &runs, &summary.totals, mutants.as_ref())?;
    Ok(summary)
}

/// `path` relative to `base` with `/` separators (a page link and a portable summary entry);
/// `path` as given when it is not under `base`.
pub(super) fn relative(base: &Path, path: &Path) -> String {
    let Ok(rel) = path.strip_prefix(base) else {
        return path.to_string_lossy().into_owned();
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
