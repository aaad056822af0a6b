//! Chaos reports (last stage of a chaos run: workload → faults → history → checks → [report]).
//!
//! What a run and a suite leave on disk, for a person and for a script:
//!
//! ```text
//! SUITE/
//!   summary.json        every run: scenario, seed, passed, failed checks, rerun; totals  (suite)
//!   index.html          one self-contained page: the runs table, each run's checks and plot (html)
//!   mutants.json        optional: which planted bug was caught, by what, how fast        (suite)
//!   RUN/report.json     one run: faults, tx counts, checks, liveness, rerun command        (run)
//!   RUN/timeline.svg    committed tx/s and submit→commit p50/p99 per second, faults shaded (timeline)
//! ```
//!
//! Promises: `report.json` always carries every key of the issue's shape (extra keys are
//! additions, never renames); each file is written whole (temp, fsync, rename) so a reader never
//! sees half a report; the writers refuse non-finite numbers, which JSON cannot carry. `passed` in
//! a report is whatever the caller decided; [`Checks::failed`] is the list of checks that do not
//! hold. The plot is SVG only, no PNG: rasterising its labels needs a font file (plotters'
//! bitmap backend finds one through fontconfig, or takes one embedded), and the harness should
//! not depend on the box's fonts nor carry one; any browser shows the SVG.

mod html;
mod run;
mod suite;
mod timeline;

pub use html::render_index;
pub use html::write_index;
pub use html::IndexRun;
pub use html::INDEX_HTML;
pub use run::Backend;
pub use run::Checks;
pub use run::FaultWindow;
pub use run::RunReport;
pub use run::TxCounts;
pub use run::REPORT_JSON;
pub use suite::collect_runs;
pub use suite::write_suite;
pub use suite::MutantOutcome;
pub use suite::MutantsReport;
pub use suite::SuiteRun;
pub use suite::SuiteSummary;
pub use suite::SuiteTotals;
pub use suite::MUTANTS_JSON;
pub use suite::SUMMARY_JSON;
pub use timeline::Second;
pub use timeline::Timeline;
pub use timeline::TIMELINE_SVG;

/// Writes `run`'s `DIR/report.json` and its plot `DIR/timeline.svg` (creating `dir`).
pub fn write_run(
    dir: &std::path::Path,
    run: &RunReport,
    timeline: &Timeline,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    run.write(dir)?;
    timeline.write_svg(&dir.join(TIMELINE_SVG), &run.plot_title())?;
    Ok(())
}

/// `value` pretty-printed as JSON, written whole to `path` (temp, fsync, rename).
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = serde_json::to_string_pretty(value)?;
    shared_proto::process::write_durably(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Refuses a non-finite number: serde_json writes NaN and ±inf as `null`, which the reader
/// (and the issue's shape, "float") would then reject, so the report would be lost later and
/// silently instead of now and loudly.
fn ensure_finite(name: &str, value: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        value.is_finite(),
        "{name} is {value}: JSON has no such number"
    );
    Ok(())
}

/// Reads and parses a JSON file written by this module.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests;
