//! Where an e2e transaction's time goes: the client-side stages the SDK reports (endorse,
//! order, ack → commit status) and the peer-side per-block histograms (`validation_seconds`,
//! `commit_seconds`) diffed between the start and the end of the timed phase.
//!
//! The peer histograms are per block, not per transaction, and the peer does not stamp when a
//! block arrived, so "wait for block + event" is what remains of ack → commit status after
//! the first endorser's mean validate and commit times: an estimate, said so in the notes.

use std::collections::BTreeMap;

use serde_json::json;
use serde_json::Value;

use super::Percentiles;
use crate::workload::Stages;

/// A histogram's totals in one `/metrics` scrape.
#[derive(Debug, Default, Clone)]
pub struct Histo {
    pub sum: f64,
    pub count: f64,
    /// Cumulative counts by upper bound (seconds), as exported.
    pub buckets: Vec<(f64, f64)>,
}

impl Histo {
    /// `name` (e.g. `weft_peer_validation_seconds`) parsed from Prometheus text; None if absent.
    pub fn parse(text: &str, name: &str) -> Option<Histo> {
        let mut h = Histo::default();
        let mut found = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if key == format!("{name}_sum") {
                h.sum = value;
                found = true;
            } else if key == format!("{name}_count") {
                h.count = value;
            } else if let Some(le) = key
                .strip_prefix(&format!("{name}_bucket{{le=\""))
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((le, value));
            }
        }
        found.then_some(h)
    }

    /// `self - before`: the observations made in between.
    pub fn since(&self, before: &Histo) -> Histo {
        Histo {
            sum: self.sum - before.sum,
            count: self.count - before.count,
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (*le, c - b)
                })
                .collect(),
        }
    }

    /// Mean in ms (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count * 1e3
        } else {
            0.0
        }
    }

    /// Upper bound (ms) of the bucket holding quantile `q`: an over-estimate by at most 2×.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let target = q * self.count;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= target && *c > 0.0)
            .map_or(0.0, |(le, _)| le * 1e3)
    }
}

/// Peer name → (validation, commit) histograms over the timed phase.
pub fn peer_histograms(
    start: &[(String, String)],
    end: &[(String, String)],
) -> BTreeMap<String, (Histo, Histo)> {
    let mut out = BTreeMap::new();
    for (name, text) in end {
        let Some((_, before)) = start.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let pick = |t: &str, m: &str| Histo::parse(t, m).unwrap_or_default();
        let v = "weft_peer_validation_seconds";
        let c = "weft_peer_commit_seconds";
        out.insert(
            name.clone(),
            (
                pick(text, v).since(&pick(before, v)),
                pick(text, c).since(&pick(before, c)),
            ),
        );
    }
    out
}

/// The breakdown as JSON, plus the notes line. `first_endorser` names the peer the SDK waits on.
pub fn breakdown(
    stages: &Stages,
    total: &Percentiles,
    peers: &BTreeMap<String, (Histo, Histo)>,
    first_endorser: &str,
) -> (Value, String) {
    let mean = |v: &[std::time::Duration]| -> f64 {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64 * 1e3
        }
    };
    let (endorse, order, rest) = (
        Percentiles::of(&stages.endorse),
        Percentiles::of(&stages.order),
        Percentiles::of(&stages.ack_to_commit),
    );
    let (validate, commit) = peers.get(first_endorser).cloned().unwrap_or_default();
    let rest_mean = mean(&stages.ack_to_commit);
    let wait_and_event = (rest_mean - validate.mean_ms() - commit.mean_ms()).max(0.0);
    let per_peer: serde_json::Map<String, Value> = peers
        .iter()
        .map(|(name, (v, c))| {
            (
                name.clone(),
                json!({
                    "blocks": v.count,
                    "validate_mean_ms": v.mean_ms(),
                    "validate_p50_ms_bucket": v.quantile_ms(0.5),
                    "validate_p99_ms_bucket": v.quantile_ms(0.99),
                    "commit_mean_ms": c.mean_ms(),
                    "commit_p50_ms_bucket": c.quantile_ms(0.5),
                    "commit_p99_ms_bucket": c.quantile_ms(0.99),
                }),
            )
        })
        .collect();
    let value = json!({
        "total": {"p50_ms": total.p50, "p99_ms": total.p99},
        "endorse": {"p50_ms": endorse.p50, "p99_ms": endorse.p99, "mean_ms": mean(&stages.endorse)},
        "order": {"p50_ms": order.p50, "p99_ms": order.p99, "mean_ms": mean(&stages.order)},
        "ack_to_commit_status": {"p50_ms": rest.p50, "p99_ms": rest.p99, "mean_ms": rest_mean},
        "first_endorser": first_endorser,
        "validate_mean_ms": validate.mean_ms(),
        "commit_mean_ms": commit.mean_ms(),
        "wait_for_block_and_event_mean_ms_estimate": wait_and_event,
        "peers": per_peer,
        "samples": stages.endorse.len(),
    });
    let note = format!(
        "where the time goes (p50 / mean ms): endorse {:.1} / {:.1}, order (Broadcast → ack) {:.1} / {:.1}, ack → commit status {:.1} / {:.1}; on {first_endorser}, per block: validate {:.1}, commit {:.1} mean over {:.0} blocks; so wait for block + event ≈ {:.1} ms mean (the remainder)",
        endorse.p50,
        mean(&stages.endorse),
        order.p50,
        mean(&stages.order),
        rest.p50,
        rest_mean,
        validate.mean_ms(),
        commit.mean_ms(),
        validate.count,
        wait_and_event,
    );
    (value, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\nweft_peer_validation_seconds_sum 0.5\nweft_peer_validation_seconds_count 10\nweft_peer_validation_seconds_bucket{le=\"0.01\"} 4\nweft_peer_validation_seconds_bucket{le=\"0.1\"} 10\nweft_peer_validation_seconds_bucket{le=\"+Inf\"} 10\n";

    #[test]
    fn histogram_parsed_and_diffed() {
        let h = Histo::parse(TEXT, "weft_peer_validation_seconds").unwrap_or_default();
        assert_eq!(h.count, 10.0);
        assert_eq!(h.buckets.len(), 3);
        let zero = Histo::default();
        let d = h.since(&zero);
        assert!((d.mean_ms() - 50.0).abs() < 1e-9);
        assert!((d.quantile_ms(0.5) - 100.0).abs() < 1e-9);
        assert!((d.quantile_ms(0.3) - 10.0).abs() < 1e-9);
        assert!(Histo::parse(TEXT, "weft_peer_commit_seconds").is_none());
    }
}
