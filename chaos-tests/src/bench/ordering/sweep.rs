//! Peak finding for `bench ordering`: closed-loop steps at rising in-flight (64, 128, 256, …),
//! each a short phase of its own, until throughput stops rising, latency passes a bound or the
//! CPU saturates. The curve goes into the report (`sweep`); the peak's in-flight drives the
//! full-rate phase (the headline) and so the half-rate phase.
//!
//! | after a step                                        | then                          |
//! |-----------------------------------------------------|-------------------------------|
//! | delivered p99 > `p99_max_ms`                        | stop; peak = best step within the bound (the first step if none is) |
//! | `PATIENCE` steps in a row not beating the best by `GAIN_MIN` | stop; peak = best step |
//! | CPU busy ≥ `CPU_SATURATED` × cores                  | stop; peak = best step        |
//! | `steps_max` steps run                               | stop; peak = best step        |
//! | otherwise                                           | next step at twice the in-flight |

use serde_json::json;
use serde_json::Value;

use crate::bench::Percentiles;

/// First in-flight level of a sweep.
pub(super) const IN_FLIGHT_FIRST: usize = 64;
/// A step must deliver this much more than the best before it to count as still rising.
pub(super) const GAIN_MIN: f64 = 0.05;
/// Steps in a row that may fail to beat the best by [`GAIN_MIN`] before the sweep stops: one
/// noisy step (a shared box, a flush) must not end it.
pub(super) const PATIENCE: usize = 2;
/// CPU busy (all processes under test and the clients) at this share of the cores is saturated.
pub(super) const CPU_SATURATED: f64 = 0.95;
/// Delivered p99 above this ends the sweep: more in-flight only queues.
pub(super) const P99_MAX_MS: f64 = 1000.0;

/// What one closed-loop step measured.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) in_flight: usize,
    pub(super) seconds: f64,
    pub(super) delivered_per_s: f64,
    pub(super) ordered_per_s: f64,
    pub(super) ack: Percentiles,
    pub(super) delivered: Percentiles,
    /// CPU seconds per second over every process taking part.
    pub(super) cores_busy: f64,
    /// (process, CPU seconds per second, storage bytes written).
    pub(super) processes: Vec<(String, f64, u64)>,
    /// Storage bytes written (all nodes) per KiB of encoded envelope.
    pub(super) storage_kib_per_kib: f64,
}

/// Why a sweep stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Latency,
    NoGain,
    Cpu,
    Steps,
}

impl Stop {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Stop::Latency => "delivered p99 passed the bound",
            Stop::NoGain => "throughput stopped rising",
            Stop::Cpu => "CPU saturated",
            Stop::Steps => "step limit reached",
        }
    }
}

/// Whether the sweep stops after `steps` (the last one just run), and why.
pub(super) fn verdict(steps: &[Step], cores: usize, steps_max: usize) -> Option<Stop> {
    let last = steps.last()?;
    // The last step that beat the best before it by GAIN_MIN.
    let mut rising = 0;
    let mut best = 0.0;
    for (i, s) in steps.iter().enumerate() {
        if i == 0 || s.delivered_per_s >= (1.0 + GAIN_MIN) * best {
            rising = i;
        }
        best = f64::max(best, s.delivered_per_s);
    }
    if last.delivered.p99 > P99_MAX_MS {
        Some(Stop::Latency)
    } else if steps.len() - 1 - rising >= PATIENCE {
        Some(Stop::NoGain)
    } else if last.cores_busy >= CPU_SATURATED * cores as f64 {
        Some(Stop::Cpu)
    } else if steps.len() >= steps_max {
        Some(Stop::Steps)
    } else {
        None
    }
}

/// The peak: the step delivering most among those within the latency bound (the first step
/// when none is).
pub(super) fn peak(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.delivered.p99 <= P99_MAX_MS)
        .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
        .or(steps.first())
}

/// The in-flight level after `in_flight`.
pub(super) fn next(in_flight: usize) -> usize {
    in_flight.saturating_mul(2)
}

/// The curve as JSON (the report's `sweep`).
pub(super) fn json(steps: &[Step], stop: Option<Stop>, peak_in_flight: usize) -> Value {
    let r = |v: f64| (v * 1e3).round() / 1e3;
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "in_flight": s.in_flight,
                "seconds": r(s.seconds),
                "delivered_tx_per_s": r(s.delivered_per_s),
                "ordered_tx_per_s": r(s.ordered_per_s),
                "ack_ms": s.ack.json(),
                "delivered_ms": s.delivered.json(),
                "cores_busy": r(s.cores_busy),
                "processes": s.processes.iter().map(|(name, busy, bytes)| json!({
                    "name": name, "cores_busy": r(*busy), "storage_write_bytes": bytes,
                })).collect::<Vec<_>>(),
                "storage_kib_per_envelope_kib": r(s.storage_kib_per_kib),
            })
        })
        .collect();
    json!({
        "steps": steps,
        "stopped_because": stop.map(Stop::as_str),
        "peak_in_flight": peak_in_flight,
        "rules": format!(
            "in-flight doubles from {IN_FLIGHT_FIRST}; stop when delivered p99 > {P99_MAX_MS} ms, \
             {PATIENCE} steps in a row gain < {:.0} %, CPU ≥ {:.0} % of the cores, or the step limit",
            GAIN_MIN * 100.0,
            CPU_SATURATED * 100.0
        ),
    })
}

/// One line per step, for the notes.
pub(super) fn line(s: &Step) -> String {
    let procs: Vec<String> = s
        .processes
        .iter()
        .map(|(n, busy, _)| format!("{n} {busy:.2}"))
        .collect();
    format!(
        "sweep in-flight {:>5}: {:>8.0} tx/s delivered ({:.0} ordered), ack p50/p99 {:.1}/{:.1} ms, \
         delivered p50/p99 {:.1}/{:.1} ms, CPU {:.2} cores ({}), storage {:.1} KiB per KiB",
        s.in_flight,
        s.delivered_per_s,
        s.ordered_per_s,
        s.ack.p50,
        s.ack.p99,
        s.delivered.p50,
        s.delivered.p99,
        s.cores_busy,
        procs.join(", "),
        s.storage_kib_per_kib,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(in_flight: usize, tx: f64, p99: f64, cpu: f64) -> Step {
        let p = |p99| Percentiles {
            p50: p99 / 2.0,
            p99,
            samples: 100,
        };
        Step {
            in_flight,
            seconds: 1.0,
            delivered_per_s: tx,
            ordered_per_s: tx,
            ack: p(p99),
            delivered: p(p99),
            cores_busy: cpu,
            processes: Vec::new(),
            storage_kib_per_kib: 5.0,
        }
    }

    #[test]
    fn sweep_stops_on_no_gain_latency_cpu_or_steps() {
        let mut steps = vec![step(64, 1000.0, 100.0, 1.0)];
        assert_eq!(verdict(&steps, 2, 8), None);
        steps.push(step(128, 2000.0, 150.0, 1.2));
        assert_eq!(verdict(&steps, 2, 8), None);
        steps.push(step(256, 2050.0, 200.0, 1.3));
        assert_eq!(
            verdict(&steps, 2, 8),
            None,
            "one step without gain is noise"
        );
        steps.push(step(512, 1900.0, 250.0, 1.3));
        assert_eq!(verdict(&steps, 2, 8), Some(Stop::NoGain));
        assert_eq!(peak(&steps).map(|s| s.in_flight), Some(256));
        steps.truncate(2);
        steps.push(step(256, 4000.0, 1500.0, 1.3));
        assert_eq!(verdict(&steps, 2, 8), Some(Stop::Latency));
        assert_eq!(peak(&steps).map(|s| s.in_flight), Some(128));
        steps.pop();
        steps.push(step(256, 4000.0, 300.0, 1.95));
        assert_eq!(verdict(&steps, 2, 8), Some(Stop::Cpu));
        assert_eq!(verdict(&steps[..2], 2, 2), Some(Stop::Steps));
        assert_eq!(next(64), 128);
    }
}
