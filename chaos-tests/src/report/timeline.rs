//! A run's timeline plot (`timeline.svg`): what the faults did to the service, second by second.
//!
//! Three bands on one time axis (seconds since the run started):
//!
//! ```text
//! faults   [kill orderer1 ]    [partition orderer2<->orderer3  ]   one bar per fault, in lanes
//! tx/s     committed per second (a step per second)                fault windows shaded
//! latency  submit→commit p50 and p99 per second, in ms             gaps where nothing committed
//! ```
//!
//! The caller fills [`Timeline`] from its history; this module only buckets and draws.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;
use plotters::style::text_anchor::Pos;
use plotters::style::text_anchor::VPos;

use super::run::FaultWindow;
use crate::bench::Percentiles;

/// File name of a run's plot inside its directory.
pub const TIMELINE_SVG: &str = "timeline.svg";

/// What the plot is drawn from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// One entry per committed transaction: (commit time, submit → commit latency), seconds,
    /// times since the run started.
    pub commits: Vec<(f64, f64)>,
    pub faults: Vec<FaultWindow>,
    pub duration_s: f64,
}

/// One second of the run: `[start_s, start_s + 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub start_s: f64,
    pub commits: u64,
    /// `None` when nothing committed in this second.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

const WIDTH_PX: u32 = 1000;
const MARGIN_PX: u32 = 12;
const Y_LABEL_AREA_PX: u32 = 64;
const LANE_PX: u32 = 18;
/// When every lane is taken, a fault's bar goes in the lane that frees first and its label is
/// left out rather than drawn over another (the page lists every fault anyway).
const LANES_MAX: usize = 8;
/// Roughly the width of one character of a 13 px sans-serif label, to keep labels apart.
const LABEL_CHAR_PX: f64 = 7.2;
const FONT: &str = "sans-serif";

impl Timeline {
    /// The run cut into one-second buckets, from 0 to the later of `duration_s` and the last
    /// commit. Commits at non-finite times are dropped; a negative time counts in second 0;
    /// a non-finite latency counts the commit but not its latency.
    pub fn per_second(&self) -> Vec<Second> {
        let last_commit = self
            .commits
            .iter()
            .map(|c| c.0)
            .filter(|t| t.is_finite())
            .fold(-1.0, f64::max);
        let duration = if self.duration_s.is_finite() {
            self.duration_s.max(0.0)
        } else {
            0.0
        };
        let len = (duration.ceil() as usize).max(last_commit.floor() as usize + 1);
        let mut counts = vec![0u64; len];
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); len];
        for &(t, latency) in &self.commits {
            if !t.is_finite() || len == 0 {
                continue;
            }
            let i = (t.max(0.0).floor() as usize).min(len - 1);
            counts[i] += 1;
            if let Ok(d) = Duration::try_from_secs_f64(latency) {
                latencies[i].push(d);
            }
        }
        (0..len)
            .map(|i| {
                let p = (!latencies[i].is_empty()).then(|| Percentiles::of(&latencies[i]));
                Second {
                    start_s: i as f64,
                    commits: counts[i],
                    p50_ms: p.map(|p| p.p50),
                    p99_ms: p.map(|p| p.p99),
                }
            })
            .collect()
    }

    /// Draws the plot into `path` (SVG), under `title`.
    pub fn write_svg(&self, path: &Path, title: &str) -> anyhow::Result<()> {
        let seconds = self.per_second();
        let x_max = (seconds.len() as f64).max(1.0);
        let plot_width_px = f64::from(WIDTH_PX - 2 * MARGIN_PX - Y_LABEL_AREA_PX);
        let lanes = lanes(&self.faults, plot_width_px / x_max, plot_width_px);
        let lane_count = lanes.iter().map(|l| l.lane).max().map_or(1, |l| l + 1);
        let strip_px = 8 + LANE_PX * lane_count as u32;
        let height_px = 40 + strip_px + 500;

        let full = SVGBackend::new(path, (WIDTH_PX, height_px)).into_drawing_area();
        full.fill(&WHITE).map_err(draw_err)?;
        let body = full.titled(title, (FONT, 20)).map_err(draw_err)?;
        let (strip, charts) = body.split_vertically(strip_px);
        let (upper, lower) = charts.split_vertically(charts.dim_in_pixel().1 * 9 / 20);

        let colors = kind_colors(&self.faults);
        let windows: Vec<(f64, f64, RGBColor)> = self
            .faults
            .iter()
            .map(|f| {
                let (s, e) = clamp_window(f, x_max);
                (s, e, colors[f.kind.as_str()])
            })
            .collect();

        draw_fault_strip(&strip, &self.faults, &windows, &lanes, lane_count, x_max)?;
        draw_throughput(&upper, &seconds, &windows, x_max)?;
        draw_latency(&lower, &seconds, &windows, x_max)?;
        full.present().map_err(draw_err)?;
        Ok(())
    }
}

/// A chart over `area` with the same horizontal layout as the other bands, so their time axes
/// line up pixel for pixel.
fn band<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x_max: f64,
    y_max: f64,
    x_labels_px: u32,
) -> anyhow::Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    ChartBuilder::on(area)
        .margin_left(MARGIN_PX)
        .margin_right(MARGIN_PX)
        .margin_top(4)
        .x_label_area_size(x_labels_px)
        .y_label_area_size(Y_LABEL_AREA_PX)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(draw_err)
}

fn draw_fault_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    faults: &[FaultWindow],
    windows: &[(f64, f64, RGBColor)],
    lanes: &[Lane],
    lane_count: usize,
    x_max: f64,
) -> anyhow::Result<()> {
    let mut chart = band(area, x_max, lane_count as f64, 0)?;
    let (x0, y0) = chart.backend_coord(&(0.0, lane_count as f64));
    area.draw(&Text::new(
        if faults.is_empty() {
            "no faults"
        } else {
            "faults"
        },
        (
            x0 - Y_LABEL_AREA_PX as i32 + 4 - area.get_base_pixel().0,
            y0 - area.get_base_pixel().1 + 2,
        ),
        (FONT, 13).into_font().color(&BLACK.mix(0.7)),
    ))
    .map_err(draw_err)?;
    for ((fault, &(s, e, color)), lane) in faults.iter().zip(windows).zip(lanes) {
        let top = (lane_count - lane.lane) as f64 - 0.1;
        let bottom = top - 0.8;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(s, bottom), (e, top)],
                color.mix(0.35).filled(),
            )))
            .map_err(draw_err)?;
        if let Some(label_s) = lane.label_s {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((label_s, top))
                        + Text::new(fault.label(), (3, 2), (FONT, 13).into_font().color(&BLACK)),
                ))
                .map_err(draw_err)?;
        }
    }
    Ok(())
}

fn draw_throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    seconds: &[Second],
    windows: &[(f64, f64, RGBColor)],
    x_max: f64,
) -> anyhow::Result<()> {
    let peak = seconds.iter().map(|s| s.commits).max().unwrap_or(0) as f64;
    let y_max = (peak * 1.15).max(1.0);
    let mut chart = band(area, x_max, y_max, 8)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|_| String::new())
        .y_desc("committed tx/s")
        .y_label_formatter(&|y| tick(*y, y_max))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(draw_err)?;
    shade(&mut chart, windows, y_max)?;
    let steps = seconds.iter().flat_map(|s| {
        [
            (s.start_s, s.commits as f64),
            (s.start_s + 1.0, s.commits as f64),
        ]
    });
    chart
        .draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))
        .map_err(draw_err)?;
    Ok(())
}

fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    seconds: &[Second],
    windows: &[(f64, f64, RGBColor)],
    x_max: f64,
) -> anyhow::Result<()> {
    let peak = seconds.iter().filter_map(|s| s.p99_ms).fold(0.0, f64::max);
    let y_max = (peak * 1.15).max(1.0);
    let mut chart = band(area, x_max, y_max, 40)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .x_label_formatter(&|x| tick(*x, x_max))
        .y_desc("submit→commit latency (ms)")
        .y_label_formatter(&|y| tick(*y, y_max))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(draw_err)?;
    shade(&mut chart, windows, y_max)?;
    let p50 = RGBColor(20, 90, 200);
    let p99 = RGBColor(200, 30, 30);
    for (name, pick, color, width) in [
        (
            "p50",
            (|s: &Second| s.p50_ms) as fn(&Second) -> Option<f64>,
            p50,
            2,
        ),
        ("p99", |s: &Second| s.p99_ms, p99, 1),
    ] {
        let mut segments = Vec::new();
        let mut current: Vec<(f64, f64)> = Vec::new();
        for s in seconds {
            match pick(s) {
                Some(ms) => current.push((s.start_s + 0.5, ms)),
                None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
                None => {}
            }
        }
        if !current.is_empty() {
            segments.push(current);
        }
        let style = color.stroke_width(width);
        for (i, segment) in segments.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(segment.iter().copied(), style))
                .map_err(draw_err)?;
            if i == 0 {
                series
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .draw_series(segment.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(draw_err)?;
        }
    }
    if seconds.iter().any(|s| s.p50_ms.is_some()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(draw_err)?;
    } else {
        let style = (FONT, 16)
            .into_font()
            .color(&BLACK.mix(0.6))
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(std::iter::once(Text::new(
                "nothing committed",
                (x_max / 2.0, y_max / 2.0),
                style,
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Each fault window as a light band over the whole height of a chart.
fn shade<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    windows: &[(f64, f64, RGBColor)],
    y_max: f64,
) -> anyhow::Result<()> {
    chart
        .draw_series(
            windows.iter().map(|&(s, e, color)| {
                Rectangle::new([(s, 0.0), (e, y_max)], color.mix(0.15).filled())
            }),
        )
        .map_err(draw_err)?;
    Ok(())
}

/// The window inside the axis, at least a sliver wide so an instant fault still shows.
fn clamp_window(fault: &FaultWindow, x_max: f64) -> (f64, f64) {
    let finite = |v: f64, or: f64| if v.is_finite() { v } else { or };
    let s = finite(fault.start_s, 0.0).clamp(0.0, x_max);
    let e = finite(fault.end_s, x_max).clamp(s, x_max);
    let sliver = x_max / 400.0;
    if e - s < sliver {
        ((s - sliver / 2.0).max(0.0), (s + sliver / 2.0).min(x_max))
    } else {
        (s, e)
    }
}

/// Where a fault's bar and label go in the strip.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lane {
    lane: usize,
    /// Where the label starts, in seconds; `None` when no lane had room for it.
    label_s: Option<f64>,
}

/// Each fault's lane: the first whose previous bar and label end before this one starts, in
/// order of start time (a label may be wider than its bar; one that would run past the right
/// edge is pulled left to end there).
fn lanes(faults: &[FaultWindow], px_per_s: f64, width_px: f64) -> Vec<Lane> {
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by(|&a, &b| faults[a].start_s.total_cmp(&faults[b].start_s));
    let mut lane_end_px: Vec<f64> = Vec::new();
    let mut lanes = vec![
        Lane {
            lane: 0,
            label_s: None
        };
        faults.len()
    ];
    for i in order {
        let f = &faults[i];
        let start_px = f.start_s.max(0.0) * px_per_s;
        let label_px = f.label().chars().count() as f64 * LABEL_CHAR_PX + 6.0;
        let label_start_px = start_px.min((width_px - label_px).max(0.0));
        let end_px = (f.end_s * px_per_s).max(label_start_px + label_px) + 4.0;
        let free = lane_end_px.iter().position(|&end| end <= label_start_px);
        let lane = match free {
            Some(lane) => lane,
            None if lane_end_px.len() < LANES_MAX => {
                lane_end_px.push(0.0);
                lane_end_px.len() - 1
            }
            None => {
                let bar_end_px = (f.end_s * px_per_s).max(start_px);
                let lane = (0..lane_end_px.len())
                    .min_by(|&a, &b| lane_end_px[a].total_cmp(&lane_end_px[b]))
                    .unwrap_or(0);
                lane_end_px[lane] = lane_end_px[lane].max(bar_end_px);
                lanes[i] = Lane {
                    lane,
                    label_s: None,
                };
                continue;
            }
        };
        lane_end_px[lane] = end_px;
        lanes[i] = Lane {
            lane,
            label_s: Some(label_start_px / px_per_s),
        };
    }
    lanes
}

/// One color per fault kind, the same kind always the same color within a plot.
fn kind_colors(faults: &[FaultWindow]) -> BTreeMap<&str, RGBColor> {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(230, 120, 0),
        RGBColor(140, 60, 180),
        RGBColor(0, 140, 140),
        RGBColor(150, 90, 40),
        RGBColor(210, 60, 130),
        RGBColor(90, 110, 40),
    ];
    let mut colors = BTreeMap::new();
    for f in faults {
        let next = PALETTE[colors.len() % PALETTE.len()];
        colors.entry(f.kind.as_str()).or_insert(next);
    }
    colors
}

/// A tick label: whole numbers on an axis long enough for them to differ.
fn tick(value: f64, axis_max: f64) -> String {
    if axis_max >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn draw_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the timeline: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &str, start_s: f64, end_s: f64) -> FaultWindow {
        FaultWindow {
            kind: kind.into(),
            target: "orderer1".into(),
            start_s,
            end_s,
        }
    }

    #[test]
    fn fault_labels_in_one_lane_never_overlap_and_stay_inside_the_plot() {
        let px_per_s = 10.0;
        let width_px = 1000.0;
        // Twelve faults a second apart (more than LANES_MAX at once), and one at the right edge.
        let mut faults: Vec<FaultWindow> = (0..12)
            .map(|i| fault("kill", f64::from(i), f64::from(i) + 0.5))
            .collect();
        faults.push(fault("restart", 99.0, 100.0));
        let lanes = lanes(&faults, px_per_s, width_px);
        let extent = |i: usize| {
            let label_s = lanes[i].label_s?;
            let start = label_s * px_per_s;
            Some((
                start,
                start + faults[i].label().chars().count() as f64 * LABEL_CHAR_PX,
            ))
        };
        assert!(lanes.iter().all(|l| l.lane < LANES_MAX));
        assert!(
            lanes.iter().any(|l| l.label_s.is_none()),
            "twelve at once cannot all be labelled"
        );
        for i in 0..faults.len() {
            if let Some((start, end)) = extent(i) {
                assert!(
                    start >= 0.0 && end <= width_px,
                    "label {i} spills: {start}..{end}"
                );
            }
            for j in 0..i {
                if let (Some(a), Some(b), true) =
                    (extent(i), extent(j), lanes[i].lane == lanes[j].lane)
                {
                    assert!(
                        a.1 <= b.0 || b.1 <= a.0,
                        "labels {i} and {j} overlap in lane {}",
                        lanes[i].lane
                    );
                }
            }
        }
    }
}
