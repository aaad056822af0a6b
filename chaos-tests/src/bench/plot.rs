//! `bench plot`: a throughput/latency chart (SVG) from benchmark JSON reports.
//!
//! Each `ordering` report gives two points (full rate, half rate: delivered tx/s against
//! broadcast → delivered latency); each `e2e` report one (tx/s committed at every peer against
//! submit → commit latency). An `ordering` report with a `sweep` adds its closed-loop steps as
//! a curve of their own (`ordering sweep`, or `ordering sweep (processes)`: delivered tx/s
//! against broadcast → delivered latency per in-flight level). p50 and p99 are drawn per kind,
//! points joined in order of throughput. `validation` reports have no offered load and are
//! skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::Value;

/// One measured operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub tx_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The operating points in one report, under its kind.
pub fn points(report: &Value) -> Option<(String, Vec<Point>)> {
    let kind = report["kind"].as_str()?.to_owned();
    let point = |tx: &Value, lat: &Value| {
        Some(Point {
            tx_per_s: tx.as_f64()?,
            p50_ms: lat["p50"].as_f64()?,
            p99_ms: lat["p99"].as_f64()?,
        })
    };
    let pts = match kind.as_str() {
        "ordering" => vec![
            point(&report["tx_per_s"], &report["latency_ms"])?,
            point(
                &report["half_rate_delivered_tx_per_s"],
                &report["latency_half_rate_ms"],
            )?,
        ],
        "e2e" => vec![point(&report["tx_per_s"], &report["latency_ms"])?],
        _ => return None,
    };
    Some((kind, pts))
}

/// The sweep curve of an `ordering` report, under its kind, if it has one.
pub fn sweep_points(report: &Value) -> Option<(String, Vec<Point>)> {
    let steps = report["sweep"]["steps"].as_array()?;
    let pts: Option<Vec<Point>> = steps
        .iter()
        .map(|s| {
            Some(Point {
                tx_per_s: s["delivered_tx_per_s"].as_f64()?,
                p50_ms: s["delivered_ms"]["p50"].as_f64()?,
                p99_ms: s["delivered_ms"]["p99"].as_f64()?,
            })
        })
        .collect();
    let kind = match report["config"]["orderers_as"].as_str() {
        Some("processes") => "ordering sweep (processes)",
        _ => "ordering sweep",
    };
    Some((kind.to_owned(), pts?))
}

/// Reads `inputs` and draws the chart into `out` (SVG).
pub fn plot(inputs: &[PathBuf], out: &Path, title: &str) -> anyhow::Result<()> {
    let mut by_kind: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        match points(&report) {
            Some((kind, pts)) => by_kind.entry(kind).or_default().extend(pts),
            None => eprintln!(
                "plot: {} has no throughput/latency point; skipped",
                path.display()
            ),
        }
        if let Some((kind, pts)) = sweep_points(&report) {
            by_kind.entry(kind).or_default().extend(pts);
        }
    }
    anyhow::ensure!(
        !by_kind.is_empty(),
        "no ordering or e2e report among the inputs"
    );
    for pts in by_kind.values_mut() {
        pts.sort_by(|a, b| a.tx_per_s.total_cmp(&b.tx_per_s));
    }
    let all = by_kind.values().flatten();
    let max_x = all.clone().map(|p| p.tx_per_s).fold(1.0, f64::max) * 1.1;
    let max_y = all.map(|p| p.p99_ms).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(out, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("throughput (tx/s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(draw_err)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (kind, pts)) in by_kind.iter().enumerate() {
        let color = colors[i % colors.len()];
        for (which, pick, filled) in [
            ("p50", (|p: &Point| p.p50_ms) as fn(&Point) -> f64, true),
            ("p99", |p: &Point| p.p99_ms, false),
        ] {
            let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.tx_per_s, pick(p))).collect();
            let style = if filled {
                color.stroke_width(2)
            } else {
                color.stroke_width(1)
            };
            chart
                .draw_series(LineSeries::new(line.clone(), style))
                .map_err(draw_err)?
                .label(format!("{kind} {which}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(line.into_iter().map(|(x, y)| {
                    let s = if filled {
                        color.filled()
                    } else {
                        color.stroke_width(1)
                    };
                    Circle::new((x, y), 4, s)
                }))
                .map_err(draw_err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

fn draw_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_report_gives_two_points_and_validation_none() {
        let ordering = serde_json::json!({
            "kind": "ordering", "tx_per_s": 5000.0, "latency_ms": {"p50": 80.0, "p99": 200.0},
            "half_rate_delivered_tx_per_s": 2500.0,
            "latency_half_rate_ms": {"p50": 40.0, "p99": 90.0},
        });
        let (kind, pts) = points(&ordering).unwrap_or_default();
        assert_eq!(kind, "ordering");
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[1].p99_ms, 90.0);
        assert!(sweep_points(&ordering).is_none());
        let swept = serde_json::json!({
            "kind": "ordering", "config": {"orderers_as": "processes"},
            "sweep": {"steps": [
                {"delivered_tx_per_s": 900.0, "delivered_ms": {"p50": 50.0, "p99": 80.0}},
                {"delivered_tx_per_s": 1800.0, "delivered_ms": {"p50": 60.0, "p99": 95.0}},
            ]},
        });
        let (kind, pts) = sweep_points(&swept).unwrap_or_default();
        assert_eq!(
            (kind.as_str(), pts.len()),
            ("ordering sweep (processes)", 2)
        );
        let validation = serde_json::json!({"kind": "validation", "tx_per_s": 1.0});
        assert!(points(&validation).is_none());
    }
}
