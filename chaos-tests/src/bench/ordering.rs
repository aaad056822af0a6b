//! `ordering`: three orderers under Broadcast load: in this process (the harness's in-process
//! backend, `harness::inprocess`), or with `--processes` as three orderer processes, as they
//! are deployed (the harness's process backend; [`cluster`]).
//!
//! Clients (one tokio runtime with one worker per core, in the same process, so they share
//! the box with the orderers) submit pre-signed ENDORSER_TRANSACTION envelopes with a 1 KiB
//! pseudo-random body (Org1MSP User1) over Broadcast streams spread evenly over the three orderers. A Deliver subscriber on
//! orderer1 records when the block holding each envelope arrives; an envelope's nonce carries
//! its index, so sent and delivered times match without maps. Phases, each after the previous
//! one has fully drained (every acknowledged envelope delivered):
//!
//! 1. **warm-up** (untimed, ~1.5 s closed loop): estimates the rate, to pre-sign enough
//!    envelopes for the next phase;
//! 2. **sweep** (unless `--in-flight` pins the level): short closed-loop steps at rising
//!    in-flight until throughput stops rising, latency passes a bound or the CPU saturates
//!    ([`sweep`]); the curve is reported and its peak's in-flight used next;
//! 3. **full rate**, closed loop: the peak's (or `--in-flight`) envelopes outstanding at all times, for
//!    `--seconds`. Reported: ordered (acknowledged) and delivered tx/s over the steady window
//!    (the first 10 % of the phase, at most 1 s, is ramp-up and not counted), broadcast →
//!    delivered latency of envelopes sent in that window;
//! 4. **half rate**, open loop: envelopes sent on a fixed schedule at half the delivered rate
//!    of phase 3, for `--seconds`; latency counts from the *scheduled* send time, so a client
//!    that falls behind cannot hide queueing (no coordinated omission);
//! 5. **low rate**, open loop at [`LOW_RATE`] tx/s (a light load: where a block cut only by
//!    the batch timeout would show), for `--seconds` (at least 2 s).
//!
//! Cost per phase and step: CPU busy of every process taking part, storage bytes written
//! (`/proc/<pid>/io`, all three nodes) per envelope and per KiB of encoded envelope (write
//! amplification), blocks cut per reason (in process from the channel's state, of a process
//! from its ops `/metrics`).
//!
//! Bound: the receiving orderer verifies one signature (the creator's) per envelope, so
//! `bound = cores × ed25519 verify/s/core`. It ignores everything else an orderer does (TLS,
//! Raft replication, fsync, block cutting and signing, Deliver) and the clients' own CPU.

mod cluster;
mod report;
mod sweep;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use prost::Message as _;
use serde_json::json;
use shared_proto::material::BatchSpec;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Channel as GrpcChannel;

pub(super) use cluster::Cluster;

use super::load::drain;
use super::load::presign;
use super::load::probe;
use super::load::send_phase;
use super::load::stats;
use super::load::subscribe;
use super::load::Pace;
use super::load::PhaseStats;
use super::load::Tracker;
use super::procfs;
use super::RawLimits;
use super::Report;
use report::report;
use report::Measured;

/// The orderer the Deliver subscriber reads from (its cut counts are reported).
const SUBSCRIBER: usize = 0;
const WARMUP: Duration = Duration::from_millis(1500);
/// In-flight of the warm-up when the sweep picks the level.
const WARMUP_IN_FLIGHT: usize = 256;
/// The low-rate phase's offered load, tx/s (issue 14: delivered p50 ≤ 15 ms there).
pub const LOW_RATE: f64 = 100.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    /// Envelopes outstanding at once in the full-rate phase, over all streams; `None`: found
    /// by the sweep.
    pub in_flight: Option<usize>,
    /// Broadcast streams per orderer.
    pub streams_per_node: usize,
    /// Envelope body size (the `data` of the payload).
    pub body_bytes: usize,
    /// The orderers as processes of their own started from this executable (`EXE node orderer
    /// --config FILE`); `None`: in this process.
    pub processes: Option<std::path::PathBuf>,
    /// The channel's batch timeout (the sample network's: 100 ms).
    pub batch_timeout_ms: u64,
}

impl Options {
    /// The channel's batch settings: 500 envelopes / 2 MiB preferred / 10 MiB absolute / the
    /// batch timeout (100 ms unless `--batch-timeout-ms`).
    fn batch(&self) -> BatchSpec {
        BatchSpec {
            message_count_max: 500,
            bytes_preferred_max: 2 * 1024 * 1024,
            bytes_absolute_max: 10 * 1024 * 1024,
            timeout_ms: self.batch_timeout_ms,
            retry_window_txs: 0,
        }
    }
}

/// What a phase cost (the orderers and the clients).
#[derive(Debug)]
struct Cost {
    /// CPU seconds per second while sending, every process taking part.
    cores_busy: f64,
    /// (process, CPU seconds per second while sending, storage bytes written until drained).
    processes: Vec<(String, f64, u64)>,
    /// CPU seconds per thread name of this process while sending.
    threads: Vec<(String, f64)>,
    /// Raft log entries appended (envelope batches and time-to-cut markers).
    raft_entries: u64,
    /// Bytes written to storage from the start of sending until drained, every process.
    storage_bytes: u64,
    /// Envelopes ordered.
    envelopes: usize,
    /// Mean encoded size of the phase's envelopes, bytes.
    envelope_bytes: f64,
    /// Each orderer's block height when sending stopped.
    heights: Vec<u64>,
    /// Blocks the Deliver subscriber had received by then.
    delivered_height: u64,
    /// Blocks the subscriber's orderer cut during the phase (until drained), per reason.
    blocks_cut: orderer::cutter::CutCounts,
    /// Broadcast signatures verified and the batches they took, every orderer.
    signatures: (u64, u64),
}

impl Cost {
    fn storage_per_envelope(&self) -> f64 {
        self.storage_bytes as f64 / self.envelopes.max(1) as f64
    }

    /// Mean Broadcast signature batch (0 when none was verified).
    fn signatures_per_batch(&self) -> f64 {
        self.signatures.0 as f64 / self.signatures.1.max(1) as f64
    }

    /// Storage KiB written (all nodes) per KiB of encoded envelope.
    fn storage_per_envelope_kib(&self) -> f64 {
        self.storage_per_envelope() / self.envelope_bytes.max(1.0)
    }
}

/// The steady window of a phase that started at `start` and lasted `length`.
fn steady(start: Instant, length: Duration) -> (Instant, Instant) {
    let ramp = (length / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    (start + ramp, start + length)
}

/// Runs the benchmark in `dir` (material, node storage).
pub fn run(opts: &Options, raw: RawLimits, dir: &std::path::Path) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(
        opts.streams_per_node > 0,
        "--streams-per-node must be at least 1"
    );
    anyhow::ensure!(opts.in_flight != Some(0), "--in-flight must be at least 1");
    anyhow::ensure!(
        opts.batch_timeout_ms > 0,
        "--batch-timeout-ms must be at least 1"
    );
    let mut cluster = match &opts.processes {
        Some(exe) => Cluster::start_processes(dir, exe, &opts.batch())?,
        None => Cluster::start_in_process(dir, opts.batch())?,
    };
    let rt = super::client_runtime(raw.cores)?;
    let result = drive(&mut cluster, &rt, opts, raw);
    rt.shutdown_timeout(Duration::from_secs(2));
    cluster.stop();
    result
}

fn drive(
    cluster: &mut Cluster,
    rt: &tokio::runtime::Runtime,
    opts: &Options,
    raw: RawLimits,
) -> anyhow::Result<Report> {
    let leader = rt.block_on(cluster.wait_for_leader(Duration::from_secs(30)))?;
    let tracker = Arc::new(Tracker {
        epoch: Instant::now(),
        phases: Mutex::new(Vec::new()),
        blocks: Mutex::new(Vec::new()),
        foreign: AtomicU64::new(0),
        last_block: AtomicU64::new(0),
    });
    let deliver = rt.block_on(subscribe(
        cluster,
        SUBSCRIBER,
        cluster.height(SUBSCRIBER),
        tracker.clone(),
    ))?;
    let lanes: Vec<AtomicBroadcastClient<GrpcChannel>> = rt.block_on(async {
        let mut lanes = Vec::new();
        for node in 0..cluster.len() {
            let client = cluster.client(node).await?;
            lanes.extend(std::iter::repeat_n(client, opts.streams_per_node));
        }
        anyhow::Ok(lanes)
    })?;
    let ready = rt.block_on(probe(&tracker, cluster, opts.body_bytes))?;
    rt.block_on(drain(&ready)).context("readiness probe")?;
    let closed = |in_flight: usize, duration: Duration| Pace::Closed {
        in_flight,
        duration,
    };
    let run_phase = |cluster: &mut Cluster, name: &str, count: usize, pace: Pace| {
        let phase = tracker.add_phase(count);
        let envelopes = presign(cluster, phase.base, count, opts.body_bytes);
        let envelope_bytes = envelopes
            .iter()
            .map(|e| e.encoded_len() as f64)
            .sum::<f64>()
            / count.max(1) as f64;
        eprintln!("ordering: {name}: {count} envelopes pre-signed; sending ({pace:?})");
        let before = (
            cluster.usage(),
            procfs::cpu_by_thread_name(),
            cluster.last_log_index(),
            cluster.blocks_cut(SUBSCRIBER),
            cluster.signature_batches(),
        );
        let start = rt.block_on(send_phase(&tracker, &phase, &lanes, envelopes, pace))?;
        let sent_until = Instant::now();
        let cpu_after = (cluster.usage(), procfs::cpu_by_thread_name());
        let heights: Vec<u64> = (0..cluster.len()).map(|i| cluster.height(i)).collect();
        let delivered_height = tracker.last_block.load(Ordering::Relaxed) + 1;
        rt.block_on(drain(&phase))
            .with_context(|| format!("{name} phase"))?;
        anyhow::ensure!(!deliver.is_finished(), "the Deliver subscriber stopped");
        cluster.check_alive()?;
        let usage_drained = cluster.usage();
        let sending = sent_until.duration_since(start).as_secs_f64().max(1e-3);
        let processes: Vec<(String, f64, u64)> = before
            .0
            .iter()
            .zip(&cpu_after.0)
            .zip(&usage_drained)
            .map(|((b, a), d)| {
                (
                    b.name.clone(),
                    (a.cpu_seconds - b.cpu_seconds) / sending,
                    d.write_bytes.saturating_sub(b.write_bytes),
                )
            })
            .collect();
        let cost = Cost {
            cores_busy: processes.iter().map(|p| p.1).sum(),
            storage_bytes: processes.iter().map(|p| p.2).sum(),
            processes,
            threads: procfs::cpu_delta(&before.1, &cpu_after.1),
            raft_entries: cluster.last_log_index().saturating_sub(before.2),
            blocks_cut: {
                let after = cluster.blocks_cut(SUBSCRIBER);
                std::array::from_fn(|k| after[k].saturating_sub(before.3[k]))
            },
            heights,
            delivered_height,
            envelopes: phase
                .acked
                .iter()
                .filter(|a| a.load(Ordering::Relaxed) != 0)
                .count(),
            envelope_bytes,
            signatures: {
                let after = cluster.signature_batches();
                (
                    after.0.saturating_sub(before.4 .0),
                    after.1.saturating_sub(before.4 .1),
                )
            },
        };
        anyhow::Ok((phase, start, cost))
    };

    // 1. Warm-up: sizes the next phases.
    let warm_count = 20_000;
    let warm_in_flight = opts.in_flight.unwrap_or(WARMUP_IN_FLIGHT);
    let (warm, warm_start, _) = run_phase(
        cluster,
        "warm-up",
        warm_count,
        closed(warm_in_flight, WARMUP),
    )?;
    let warm_acked = warm.acked.iter().filter(|a| a.load(Ordering::Relaxed) != 0);
    let (warm_count_acked, last_ack) = warm_acked.fold((0usize, 0u64), |(n, last), a| {
        (n + 1, last.max(a.load(Ordering::Relaxed)))
    });
    let warm_secs = tracker
        .instant(last_ack.max(1))
        .saturating_duration_since(warm_start)
        .as_secs_f64()
        .max(0.1);
    let warm_rate = warm_count_acked as f64 / warm_secs;
    let closed_stats = |phase: &super::load::Phase, start: Instant, length: Duration| {
        let (from, to) = steady(start, length.min(start.elapsed()));
        stats(&tracker, phase, from, to)
    };

    // 2. Sweep: in-flight doubles until the peak (skipped when --in-flight pins the level).
    let mut steps: Vec<sweep::Step> = Vec::new();
    let mut stop = None;
    let step_length = Duration::from_secs_f64((opts.seconds / 3.0).clamp(1.0, 3.0));
    let steps_max = if opts.seconds < 5.0 { 3 } else { 8 };
    if opts.in_flight.is_none() {
        let mut in_flight = sweep::IN_FLIGHT_FIRST;
        while stop.is_none() {
            let best = steps
                .iter()
                .map(|s| s.delivered_per_s)
                .fold(warm_rate, f64::max);
            let count =
                (best.max(1000.0) * step_length.as_secs_f64() * 2.5) as usize + 4 * in_flight;
            let name = format!("sweep, in-flight {in_flight}");
            let (phase, start, cost) =
                run_phase(cluster, &name, count, closed(in_flight, step_length))?;
            let s = closed_stats(&phase, start, step_length);
            steps.push(sweep::Step {
                in_flight,
                seconds: step_length.as_secs_f64(),
                delivered_per_s: s.delivered_per_s,
                ordered_per_s: s.ordered_per_s,
                ack: s.ack_latency,
                delivered: s.delivered_latency,
                cores_busy: cost.cores_busy,
                processes: cost.processes.clone(),
                storage_kib_per_kib: cost.storage_per_envelope_kib(),
            });
            eprintln!("ordering: {}", sweep::line(&steps[steps.len() - 1]));
            stop = sweep::verdict(&steps, raw.cores, steps_max);
            in_flight = sweep::next(in_flight);
        }
    }
    let in_flight = match (opts.in_flight, sweep::peak(&steps)) {
        (Some(pinned), _) => pinned,
        (None, Some(peak)) => peak.in_flight,
        (None, None) => WARMUP_IN_FLIGHT,
    };

    // 3. Full rate, closed loop, at the peak.
    let length = Duration::from_secs_f64(opts.seconds);
    let best = steps
        .iter()
        .map(|s| s.delivered_per_s)
        .fold(warm_rate, f64::max);
    let full_count = (best.max(1000.0) * opts.seconds * 1.6) as usize + 4 * in_flight;
    let (full, full_start, full_cost) =
        run_phase(cluster, "full rate", full_count, closed(in_flight, length))?;
    let exhausted = full.sent.iter().all(|s| s.load(Ordering::Relaxed) != 0);
    let full_stats = closed_stats(&full, full_start, length);

    // 4. Half rate, open loop.
    let half_rate = (full_stats.delivered_per_s / 2.0).max(1.0);
    let half_count = (half_rate * opts.seconds).ceil() as usize;
    let (half, half_start, half_cost) = run_phase(
        cluster,
        "half rate",
        half_count,
        Pace::Open { rate: half_rate },
    )?;
    let half_length = Duration::from_secs_f64(half_count as f64 / half_rate);
    let (from, to) = steady(half_start, half_length);
    let half_stats = stats(&tracker, &half, from, to);

    // 5. Low rate, open loop.
    let low_count = (LOW_RATE * opts.seconds.max(2.0)).ceil() as usize;
    let (low, low_start, low_cost) = run_phase(
        cluster,
        "low rate",
        low_count,
        Pace::Open { rate: LOW_RATE },
    )?;
    let (from, to) = steady(
        low_start,
        Duration::from_secs_f64(low_count as f64 / LOW_RATE),
    );
    let low_stats = stats(&tracker, &low, from, to);
    deliver.abort();
    let foreign = tracker.foreign.load(Ordering::Relaxed);
    let lanes = lanes.len();
    report(Measured {
        cluster,
        raw,
        opts,
        leader,
        lanes,
        warm_rate,
        in_flight,
        steps,
        stop,
        full: (full_count, exhausted, full_stats, full_cost),
        half: (half_rate, half_stats, half_cost),
        low: (low_stats, low_cost),
        foreign,
    })
}
