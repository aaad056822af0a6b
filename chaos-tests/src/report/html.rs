//! A suite's `index.html`: one self-contained page (inline CSS, no script, no remote asset)
//! with the runs table, the mutation results, and per run its checks, faults, final heights
//! and timeline plot. Every link is relative, so the suite directory can be copied or served
//! as it is.

use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

use super::run::RunReport;
use super::suite::relative;
use super::suite::MutantsReport;
use super::suite::SuiteTotals;
use super::timeline::TIMELINE_SVG;

/// File name of the page inside the suite directory.
pub const INDEX_HTML: &str = "index.html";

/// One run as the page shows it.
#[derive(Debug, Clone, Copy)]
pub struct IndexRun<'a> {
    /// The run's `report.json`, relative to the page.
    pub report_rel: &'a str,
    /// The run's plot, relative to the page, when the file exists.
    pub plot_rel: Option<&'a str>,
    pub run: &'a RunReport,
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; }
h3 { font-size: 16px; margin: 0 0 8px 0; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad, span.bad { color: #b00; font-weight: 600; }
span.good { color: #070; font-weight: 600; }
tr.fail td:first-child { border-left: 4px solid #b00; }
tr.pass td:first-child { border-left: 4px solid #070; }
code { font-family: monospace; font-size: 12px; background: #f6f6f6; padding: 1px 3px;
  overflow-wrap: break-word; }
td.rerun { max-width: 420px; }
section.run { border-top: 1px solid #ccc; padding-top: 12px; margin-top: 20px; }
div.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
p.meta { margin: 4px 0 8px 0; }
img.plot { max-width: 100%; border: 1px solid #ddd; margin-top: 8px; }
p.noplot { color: #777; font-style: italic; }
";

/// The page for `runs` (pure: the caller decides which plots exist).
pub fn render_index(
    title: &str,
    runs: &[IndexRun<'_>],
    totals: &SuiteTotals,
    mutants: Option<&MutantsReport>,
) -> String {
    let mut h = String::new();
    let t = esc(title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n\
         <title>Chaos suite {t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Chaos suite <code>{t}</code></h1>\n"
    );
    let tx = &totals.txs;
    let verdict = if totals.failed == 0 {
        "<span class=\"good\">all passed</span>".to_owned()
    } else {
        format!("<span class=\"bad\">{} failed</span>", totals.failed)
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} runs, {} passed, {verdict}; {:.0} s run in all. \
         Transactions: {} submitted, {} acked, {} committed valid, {} committed invalid, \
         {} acked but lost, {} duplicates, {} unknown.</p>",
        totals.runs,
        totals.passed,
        totals.duration_s,
        tx.submitted,
        tx.acked,
        tx.committed_valid,
        tx.committed_invalid,
        tx.lost_acked,
        tx.duplicates,
        tx.unknown
    );
    runs_table(&mut h, runs);
    if let Some(m) = mutants {
        mutants_table(&mut h, m);
    }
    h.push_str("<h2>Runs</h2>\n");
    for (i, r) in runs.iter().enumerate() {
        run_section(&mut h, i + 1, r);
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Writes `suite_dir/index.html` for `runs` (each its `report.json` path and report), linking
/// each run's `timeline.svg` when it exists beside the report. Returns the page's path.
pub fn write_index(
    suite_dir: &Path,
    runs: &[(PathBuf, RunReport)],
    totals: &SuiteTotals,
    mutants: Option<&MutantsReport>,
) -> anyhow::Result<PathBuf> {
    let links: Vec<(String, Option<String>)> = runs
        .iter()
        .map(|(report, _)| {
            let plot = report.parent().map(|dir| dir.join(TIMELINE_SVG));
            let plot = plot
                .filter(|p| p.is_file())
                .map(|p| relative(suite_dir, &p));
            (relative(suite_dir, report), plot)
        })
        .collect();
    let index_runs: Vec<IndexRun<'_>> = runs
        .iter()
        .zip(&links)
        .map(|((_, run), (report_rel, plot_rel))| IndexRun {
            report_rel,
            plot_rel: plot_rel.as_deref(),
            run,
        })
        .collect();
    let title = suite_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| suite_dir.display().to_string());
    let page = render_index(&title, &index_runs, totals, mutants);
    let path = suite_dir.join(INDEX_HTML);
    shared_proto::process::write_durably(&path, page.as_bytes())?;
    Ok(path)
}

fn runs_table(h: &mut String, runs: &[IndexRun<'_>]) {
    h.push_str(
        "<table class=\"runs\">\n<thead><tr><th>#</th><th>scenario</th><th>seed</th>\
         <th>result</th><th>submitted</th><th>acked</th><th>valid</th><th>invalid</th>\
         <th>lost acked</th><th>dup</th><th>unknown</th><th>live after heal</th>\
         <th>report</th><th>rerun</th></tr></thead>\n<tbody>\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let run = r.run;
        let n = i + 1;
        let class = if run.passed { "pass" } else { "fail" };
        let mutant = run
            .mutant
            .as_ref()
            .map(|m| format!("<br />mutant <code>{}</code>", esc(m)))
            .unwrap_or_default();
        let tx = &run.txs;
        let bad_if = |v: u64| if v > 0 { "num bad" } else { "num" };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\"><td><a href=\"#run-{n}\">{n}</a></td><td>{}{mutant}</td>\
             <td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"{}\">{}</td>\
             <td><a href=\"{}\">report.json</a></td><td class=\"rerun\"><code>{}</code></td></tr>",
            esc(&run.scenario),
            run.seed,
            verdict(run),
            tx.submitted,
            tx.acked,
            tx.committed_valid,
            tx.committed_invalid,
            bad_if(tx.lost_acked),
            tx.lost_acked,
            bad_if(tx.duplicates),
            tx.duplicates,
            tx.unknown,
            if run.checks.live_after_heal {
                "num"
            } else {
                "num bad"
            },
            liveness(run),
            href(r.report_rel),
            esc(&run.rerun),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn mutants_table(h: &mut String, m: &MutantsReport) {
    let caught = m.mutants.iter().filter(|m| m.caught).count();
    let _ = writeln!(
        h,
        "<h2>Mutants</h2>\n<p class=\"meta\">{caught} of {} planted bugs caught.</p>\n\
         <table>\n<thead><tr><th>mutant</th><th>caught</th><th>by</th><th>after</th></tr></thead>\n<tbody>",
        m.mutants.len()
    );
    for mutant in &m.mutants {
        let (class, word) = if mutant.caught {
            ("good", "caught")
        } else {
            ("bad", "missed")
        };
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><span class=\"{class}\">{word}</span></td>\
             <td>{}</td><td class=\"num\">{:.1} s</td></tr>",
            esc(&mutant.name),
            if mutant.by.is_empty() {
                "—".to_owned()
            } else {
                esc(&mutant.by)
            },
            mutant.seconds
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn run_section(h: &mut String, n: usize, r: &IndexRun<'_>) {
    let run = r.run;
    let backend = match run.backend {
        super::run::Backend::Process => "process",
        super::run::Backend::Docker => "docker",
    };
    let _ = writeln!(
        h,
        "<section class=\"run\" id=\"run-{n}\">\n<h3>{n}. {}</h3>\n\
         <p class=\"meta\">{} · backend {backend} · {:.1} s · live after heal {} · \
         <a href=\"{}\">report.json</a><br />rerun: <code>{}</code></p>\n<div class=\"cols\">",
        esc(&run.plot_title()),
        verdict(run),
        run.duration_s,
        liveness(run),
        href(r.report_rel),
        esc(&run.rerun),
    );
    h.push_str(
        "<table>\n<thead><tr><th>check</th><th></th><th>detail</th></tr></thead>\n<tbody>\n",
    );
    for (name, holds) in run.checks.named() {
        let mark = if holds {
            "<span class=\"good\">✓ holds</span>"
        } else {
            "<span class=\"bad\">✗ fails</span>"
        };
        let detail = run
            .check_details
            .get(name)
            .map(|d| esc(d))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{mark}</td><td>{detail}</td></tr>"
        );
    }
    h.push_str("</tbody>\n</table>\n");
    h.push_str("<table>\n<thead><tr><th>fault</th><th>target</th><th>from</th><th>to</th></tr></thead>\n<tbody>\n");
    if run.faults.is_empty() {
        h.push_str("<tr><td colspan=\"4\">none</td></tr>\n");
    }
    for f in &run.faults {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.1} s</td><td class=\"num\">{:.1} s</td></tr>",
            esc(&f.kind),
            esc(&f.target),
            f.start_s,
            f.end_s
        );
    }
    h.push_str("</tbody>\n</table>\n");
    if !run.final_heights.is_empty() {
        h.push_str(
            "<table>\n<thead><tr><th>node</th><th>final height</th></tr></thead>\n<tbody>\n",
        );
        for (node, height) in &run.final_heights {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{height}</td></tr>",
                esc(node)
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</div>\n");
    match r.plot_rel {
        Some(plot) => {
            let _ = writeln!(
                h,
                "<img class=\"plot\" src=\"{}\" alt=\"timeline of {}\" />",
                href(plot),
                esc(&run.plot_title())
            );
        }
        None => h.push_str("<p class=\"noplot\">no timeline plot for this run</p>\n"),
    }
    h.push_str("</section>\n");
}

/// `PASS`, or `FAIL` with the failed checks.
fn verdict(run: &RunReport) -> String {
    if run.passed {
        return "<span class=\"good\">PASS</span>".to_owned();
    }
    let failed = run.failed_checks();
    if failed.is_empty() {
        "<span class=\"bad\">FAIL</span>".to_owned()
    } else {
        format!("<span class=\"bad\">FAIL</span>: {}", failed.join(", "))
    }
}

fn liveness(run: &RunReport) -> String {
    if run.checks.live_after_heal {
        format!("{:.1} s", run.liveness_after_heal_s)
    } else {
        format!("never ({:.1} s waited)", run.liveness_after_heal_s)
    }
}

/// Text or attribute value, escaped for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative path as a link: each byte outside the URL-safe set percent-encoded (`/` kept),
/// so a directory named `pause & resume` or `a#b` still links to itself.
fn href(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
