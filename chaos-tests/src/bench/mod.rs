//! Benchmarks with the box's raw limits measured in the same run (`bench` binary).
//!
//! Every run first measures what the hardware allows ([`raw`]): Ed25519 single and batch
//! verifications per second on one core, and the fsync rate of the data directory. Then it
//! runs one benchmark of the real components, in process:
//!
//! - [`validation`]: one peer's commit path (`Committer::process`: verify block → validate →
//!   commit to the fjall ledger) over pre-built blocks of endorsed transactions;
//! - [`ordering`]: a 3-orderer Raft cluster under Broadcast load, with a Deliver subscriber
//!   measuring broadcast → delivered latency, at full rate and at half that rate;
//! - [`e2e`]: the dev network's topology, every node a process, SDK clients, committed at
//!   every peer, with each node's RSS over the run;
//! - [`recovery`]: 3 orderers and a peer with `--blocks` blocks on disk, stopped (cleanly, then
//!   killed) and started again: time until each is ready, against the 2 s target.
//!
//! [`plot`] draws the throughput/latency chart from the JSON reports.
//!
//! Each result is compared with a bound derived from the raw limits (`ratio_to_bound`), so a
//! number means something on any box. A benchmark reports; it never asserts on timing. It
//! refuses to report a run where the system under test failed (an invalid transaction, a
//! refused envelope), since that would measure failures.

pub mod e2e;
mod e2e_stages;
mod load;
pub mod ordering;
pub mod plot;
pub mod procfs;
pub mod raw;
pub mod recovery;
pub mod validation;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use serde_json::Value;
use shared_proto::material::NetworkSpec;

pub use raw::RawLimits;

/// The sample network spec (`deploy/sample-network.toml`): both benchmarks use its identities,
/// its channel `mychannel` (batch 500 envelopes / 2 MiB / 100 ms) and its `token` chaincode.
pub const SAMPLE_SPEC: &str = include_str!("../../../deploy/sample-network.toml");

/// The channel of the sample spec the benchmarks use.
pub const CHANNEL: &str = "mychannel";

/// Parses [`SAMPLE_SPEC`].
pub fn sample_spec() -> anyhow::Result<NetworkSpec> {
    NetworkSpec::from_toml(SAMPLE_SPEC).context("parsing deploy/sample-network.toml")
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The bench clients' runtime: one worker per core, threads named `bench-client` (so the
/// per-thread CPU notes tell clients from nodes).
pub fn client_runtime(cores: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("client runtime")
}

/// Logical cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 50th and 99th percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (0 when empty).
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
            ms[i.clamp(1, ms.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p99: rank(99.0),
            samples: ms.len(),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "p50": round3(self.p50), "p99": round3(self.p99) })
    }
}

/// One benchmark's result: what is printed and written as JSON.
#[derive(Debug, Clone)]
pub struct Report {
    pub kind: &'static str,
    pub tx_per_s: f64,
    /// What `tx_per_s` counts, for the table.
    pub tx_per_s_label: String,
    pub latency_ms: Percentiles,
    /// What `latency_ms` measures, for the table.
    pub latency_label: String,
    /// Further latency sets: (JSON key, table label, percentiles).
    pub extra_latencies: Vec<(String, String, Percentiles)>,
    pub raw: RawLimits,
    pub bound_tx_per_s: f64,
    /// How the bound is derived from the raw limits.
    pub bound_formula: String,
    /// Peak resident set per node (or process part), MiB.
    pub peak_rss_mib: Vec<(String, f64)>,
    /// What the peak RSS covers.
    pub rss_note: String,
    /// Further measurements: (JSON key, table label, value).
    pub extra: Vec<(String, String, f64)>,
    /// Further JSON-only data: (key, value), e.g. RSS samples.
    pub series: Vec<(String, Value)>,
    pub config: Value,
    /// Observations printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    pub fn ratio_to_bound(&self) -> f64 {
        if self.bound_tx_per_s > 0.0 {
            self.tx_per_s / self.bound_tx_per_s
        } else {
            0.0
        }
    }

    /// The JSON document `--out` receives.
    pub fn json(&self) -> Value {
        let mut doc = json!({
            "kind": self.kind,
            "tx_per_s": round3(self.tx_per_s),
            "latency_ms": self.latency_ms.json(),
            "raw": self.raw.json(),
            "bound_tx_per_s": round3(self.bound_tx_per_s),
            "bound": self.bound_formula,
            "ratio_to_bound": round4(self.ratio_to_bound()),
            "peak_rss_mib": self
                .peak_rss_mib
                .iter()
                .map(|(k, v)| (k.clone(), json!(round3(*v))))
                .collect::<serde_json::Map<_, _>>(),
            "peak_rss_note": self.rss_note,
            "config": self.config,
            "notes": self.notes,
        });
        if let Some(map) = doc.as_object_mut() {
            for (key, _, p) in &self.extra_latencies {
                map.insert(key.clone(), p.json());
            }
            for (key, _, v) in &self.extra {
                map.insert(key.clone(), json!(round3(*v)));
            }
            for (key, v) in &self.series {
                map.insert(key.clone(), v.clone());
            }
        }
        doc
    }

    /// The human table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<40} {value}");
        };
        row("kind", self.kind.to_owned());
        row(&self.tx_per_s_label, format!("{:.1}", self.tx_per_s));
        for (_, label, v) in &self.extra {
            row(label, format!("{v:.1}"));
        }
        let lat = |p: &Percentiles| format!("{:.2} / {:.2}  (n = {})", p.p50, p.p99, p.samples);
        row(
            &format!("{} p50 / p99 ms", self.latency_label),
            lat(&self.latency_ms),
        );
        for (_, label, p) in &self.extra_latencies {
            row(&format!("{label} p50 / p99 ms"), lat(p));
        }
        row("cores", format!("{}", self.raw.cores));
        row(
            "raw: ed25519 verify/s/core",
            format!("{:.0}", self.raw.verify_per_s_per_core),
        );
        row(
            "raw: ed25519 batch verify/s/core (64)",
            format!("{:.0}", self.raw.batch_verify_per_s_per_core),
        );
        row(
            "raw: ed25519 batch verify/s/core (2)",
            format!("{:.0}", self.raw.batch2_verify_per_s_per_core),
        );
        row(
            "raw: fsync/s (4 KiB write + fdatasync)",
            format!("{:.0}", self.raw.fsync_per_s),
        );
        row("bound tx/s", format!("{:.1}", self.bound_tx_per_s));
        row("  = ", self.bound_formula.clone());
        row("ratio to bound", format!("{:.3}", self.ratio_to_bound()));
        for (node, mib) in &self.peak_rss_mib {
            row(&format!("peak RSS MiB [{node}]"), format!("{mib:.1}"));
        }
        let mut text = out;
        let _ = writeln!(text, "  ({})", self.rss_note);
        for note in &self.notes {
            let _ = writeln!(text, "  note: {note}");
        }
        text
    }

    /// Prints the table and writes the JSON to `out`.
    pub fn emit(&self, out: &Path) -> anyhow::Result<()> {
        println!("{}", self.table());
        let text = serde_json::to_string_pretty(&self.json()).context("encoding the report")?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
        println!("  written to {}", out.display());
        Ok(())
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/<pid>/status`), MiB.
pub fn peak_rss_mib() -> anyhow::Result<f64> {
    crate::launcher::rss_mib(std::process::id())
        .map(|r| r.peak)
        .context("no VmHWM in this process's /proc status")
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&d);
        assert_eq!((p.p50, p.p99, p.samples), (50.0, 99.0, 100));
        let one = Percentiles::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(Percentiles::of(&[]).p50, 0.0);
    }
}
