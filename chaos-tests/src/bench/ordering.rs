//! `ordering`: three orderers in this process (the harness's in-process backend,
//! `harness::inprocess`) under Broadcast load.
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
//! 2. **full rate**, closed loop: `--in-flight` envelopes outstanding at all times, for
//!    `--seconds`. Reported: ordered (acknowledged) and delivered tx/s over the steady window
//!    (the first 10 % of the phase, at most 1 s, is ramp-up and not counted), broadcast →
//!    delivered latency of envelopes sent in that window;
//! 3. **half rate**, open loop: envelopes sent on a fixed schedule at half the delivered rate
//!    of phase 2, for `--seconds`; latency counts from the *scheduled* send time, so a client
//!    that falls behind cannot hide queueing (no coordinated omission).
//!
//! Bound: the receiving orderer verifies one signature (the creator's) per envelope, so
//! `bound = cores × ed25519 verify/s/core`. It ignores everything else an orderer does (TLS,
//! Raft replication, fsync, block cutting and signing, Deliver) and the clients' own CPU.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use shared_proto::material::BatchSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

use super::load::drain;
use super::load::presign;
use super::load::probe;
use super::load::send_phase;
use super::load::stats;
use super::load::subscribe;
use super::load::Pace;
use super::load::Tracker;
use super::procfs;
use super::RawLimits;
use super::Report;
use super::CHANNEL;
use crate::harness::inprocess;
use crate::harness::inprocess::Config;
use crate::harness::NodeHandle as _;

const WARMUP: Duration = Duration::from_millis(1500);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    /// Envelopes outstanding at once in the closed-loop phases, over all streams.
    pub in_flight: usize,
    /// Broadcast streams per orderer.
    pub streams_per_node: usize,
    /// Envelope body size (the `data` of the payload).
    pub body_bytes: usize,
}

/// The channel's batch settings: 500 envelopes / 2 MiB preferred / 10 MiB absolute / 100 ms.
fn batch() -> BatchSpec {
    BatchSpec {
        message_count_max: 500,
        bytes_preferred_max: 2 * 1024 * 1024,
        bytes_absolute_max: 10 * 1024 * 1024,
        timeout_ms: 100,
        retry_window_txs: 0,
    }
}

/// The sample network's orderers in this process (each on a runtime of its own with 2 worker
/// threads, storage fdatasync'ed), plus what a client needs to talk to them.
pub(super) struct Cluster {
    inner: inprocess::Cluster,
    addrs: Vec<String>,
    /// Org1MSP User1 (role client): signs envelopes and Deliver requests.
    pub(super) client: SigningIdentity,
    tls: ClientTlsConfig,
}

impl Cluster {
    /// Generates the sample network into `dir` with ports held from the OS and the given
    /// batch settings, and starts every orderer.
    pub(super) fn start(dir: &std::path::Path, batch: BatchSpec) -> anyhow::Result<Self> {
        let mut spec = super::sample_spec()?;
        for o in spec.orderer_orgs.iter_mut().flat_map(|o| &mut o.orderers) {
            o.host = "127.0.0.1".into();
            (o.port, o.cluster_port, o.ops_port) = (0, 0, 0);
        }
        for ch in &mut spec.channels {
            ch.batch = batch.clone();
        }
        let mut inner =
            inprocess::Cluster::create(spec, dir, inprocess::Ports::default(), |config| {
                if let Config::Orderer(c) = config {
                    c.log.level = "warn".into();
                    c.validate()?;
                }
                Ok(())
            })?;
        let client = inner.identity("Org1MSP", "User1")?;
        let tls = inner.client_tls("Org1MSP", "User1")?;
        let mut addrs = Vec::new();
        for node in inner
            .nodes
            .iter_mut()
            .filter(|n| n.kind() == crate::launcher::Kind::Orderer)
        {
            addrs.push(node.addresses().service);
            node.start()?;
        }
        Ok(Cluster {
            inner,
            addrs,
            client,
            tls,
        })
    }

    /// Number of orderers.
    pub(super) fn len(&self) -> usize {
        self.addrs.len()
    }

    fn channel(&self, i: usize) -> Option<std::sync::Arc<orderer::channels::ChannelRuntime>> {
        self.inner
            .orderers()
            .nth(i)?
            .orderer()?
            .registry
            .get(CHANNEL)
    }

    /// Waits until the running orderers agree on a leader of the channel; its Raft id.
    pub(super) async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let name = self.inner.wait_leader(CHANNEL, timeout).await?;
        let index = self
            .inner
            .orderers()
            .position(|n| n.name() == name)
            .context("the leader is no orderer")?;
        Ok(u64::try_from(index)? + 1)
    }

    /// A gRPC client of orderer `i` (one HTTP/2 connection per call of this function).
    pub(super) async fn client(
        &self,
        i: usize,
    ) -> anyhow::Result<AtomicBroadcastClient<GrpcChannel>> {
        let channel = Endpoint::from_shared(format!("https://{}", self.addrs[i]))?
            .tls_config(self.tls.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to orderer {} at {}", i + 1, self.addrs[i]))?;
        Ok(AtomicBroadcastClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The channel height of orderer `i`'s block store.
    pub(super) fn height(&self, i: usize) -> u64 {
        self.channel(i).map_or(0, |ch| ch.store.height())
    }

    /// Blocks orderer `i` cut since it started, per reason (`orderer::cutter::CutReason`).
    pub(super) fn blocks_cut(&self, i: usize) -> orderer::cutter::CutCounts {
        self.channel(i)
            .map_or_else(Default::default, |ch| ch.status.borrow().blocks_cut)
    }

    /// The highest Raft log index any node has (entries proposed so far, all kinds).
    pub(super) fn last_log_index(&self) -> u64 {
        (0..self.len())
            .filter_map(|i| self.channel(i))
            .filter_map(|ch| ch.raft.metrics().borrow().last_log_index)
            .max()
            .unwrap_or(0)
    }

    /// Stops every node gracefully (servers stop, storage is fsynced).
    pub(super) fn stop(&mut self) {
        self.inner.stop_all();
    }
}

/// What a phase cost the process (all three orderers and the clients).
#[derive(Debug)]
struct Cost {
    /// CPU seconds per second while sending.
    cores_busy: f64,
    /// CPU seconds per thread name while sending.
    threads: Vec<(String, f64)>,
    /// Raft log entries appended (envelope batches and time-to-cut markers).
    raft_entries: u64,
    /// Bytes written to storage from the start of sending until drained.
    storage_bytes: u64,
    /// Envelopes ordered.
    envelopes: usize,
    /// Each orderer's block height when sending stopped.
    heights: Vec<u64>,
    /// Blocks the Deliver subscriber had received by then.
    delivered_height: u64,
    /// Blocks the subscriber's orderer cut during the phase (until drained), per reason.
    blocks_cut: orderer::cutter::CutCounts,
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
    let mut cluster = Cluster::start(dir, batch())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(raw.cores)
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("client runtime")?;
    let result = drive(&cluster, &rt, opts, raw);
    rt.shutdown_timeout(Duration::from_secs(2));
    cluster.stop();
    result
}

fn drive(
    cluster: &Cluster,
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
    const SUBSCRIBER: usize = 0;
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
    let closed = |duration: Duration| Pace::Closed {
        in_flight: opts.in_flight,
        duration,
    };
    let run_phase = |name: &str, count: usize, pace: Pace| -> anyhow::Result<_> {
        let phase = tracker.add_phase(count);
        let envelopes = presign(cluster, phase.base, count, opts.body_bytes);
        eprintln!("ordering: {name}: {count} envelopes pre-signed; sending ({pace:?})");
        let before = (
            procfs::process_cpu_seconds(),
            procfs::cpu_by_thread_name(),
            cluster.last_log_index(),
            procfs::storage_write_bytes(),
            cluster.blocks_cut(SUBSCRIBER),
        );
        let start = rt.block_on(send_phase(&tracker, &phase, &lanes, envelopes, pace))?;
        let sent_until = Instant::now();
        let cpu_after = (procfs::process_cpu_seconds(), procfs::cpu_by_thread_name());
        let heights: Vec<u64> = (0..cluster.len()).map(|i| cluster.height(i)).collect();
        let delivered_height = tracker.last_block.load(Ordering::Relaxed) + 1;
        rt.block_on(drain(&phase))
            .with_context(|| format!("{name} phase"))?;
        anyhow::ensure!(!deliver.is_finished(), "the Deliver subscriber stopped");
        let cost = Cost {
            cores_busy: (cpu_after.0 - before.0) / sent_until.duration_since(start).as_secs_f64(),
            threads: procfs::cpu_delta(&before.1, &cpu_after.1),
            raft_entries: cluster.last_log_index().saturating_sub(before.2),
            storage_bytes: procfs::storage_write_bytes().saturating_sub(before.3),
            blocks_cut: {
                let after = cluster.blocks_cut(SUBSCRIBER);
                std::array::from_fn(|k| after[k].saturating_sub(before.4[k]))
            },
            heights,
            delivered_height,
            envelopes: phase
                .acked
                .iter()
                .filter(|a| a.load(Ordering::Relaxed) != 0)
                .count(),
        };
        Ok((phase, start, cost))
    };

    // 1. Warm-up: sizes phase 2.
    let warm_count = 20_000;
    let (warm, warm_start, _) = run_phase("warm-up", warm_count, closed(WARMUP))?;
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

    // 2. Full rate, closed loop.
    let length = Duration::from_secs_f64(opts.seconds);
    let full_count = (warm_rate.max(1000.0) * opts.seconds * 1.6) as usize + 4 * opts.in_flight;
    let (full, full_start, full_cost) = run_phase("full rate", full_count, closed(length))?;
    let exhausted = full.sent.iter().all(|s| s.load(Ordering::Relaxed) != 0);
    let (from, to) = steady(full_start, length.min(full_start.elapsed()));
    let full_stats = stats(&tracker, &full, from, to);

    // 3. Half rate, open loop.
    let half_rate = (full_stats.delivered_per_s / 2.0).max(1.0);
    let half_count = (half_rate * opts.seconds).ceil() as usize;
    let (half, half_start, half_cost) =
        run_phase("half rate", half_count, Pace::Open { rate: half_rate })?;
    let half_length = Duration::from_secs_f64(half_count as f64 / half_rate);
    let (from, to) = steady(half_start, half_length);
    let half_stats = stats(&tracker, &half, from, to);
    deliver.abort();

    let bound = raw.cores as f64 * raw.verify_per_s_per_core;
    let rss = super::peak_rss_mib()?;
    let cost_note = |name: &str, c: &Cost| {
        let top: Vec<String> = c
            .threads
            .iter()
            .take(6)
            .map(|(n, s)| format!("{n} {s:.2}s"))
            .collect();
        let per_env = |v: f64| v / c.envelopes.max(1) as f64;
        format!(
            "{name}: process CPU {:.2} of {} cores busy (by thread: {}); {} Raft entries \
             ({:.1} envelopes/entry); storage writes {:.1} MiB = {:.1} KiB/envelope (3 nodes); \
             when sending stopped: block heights {:?}, subscriber at {}",
            c.cores_busy,
            raw.cores,
            top.join(", "),
            c.raft_entries,
            c.envelopes as f64 / c.raft_entries.max(1) as f64,
            c.storage_bytes as f64 / (1024.0 * 1024.0),
            per_env(c.storage_bytes as f64) / 1024.0,
            c.heights,
            c.delivered_height,
        )
    };
    let cuts = |c: &Cost| -> String {
        orderer::cutter::CutReason::ALL
            .iter()
            .map(|r| format!("{} {}", r.as_str(), c.blocks_cut[r.index()]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cut_extra = |phase: &str, c: &Cost| -> Vec<(String, String, f64)> {
        orderer::cutter::CutReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{phase}_blocks_cut_{}", r.as_str()),
                    format!("blocks cut by {}, {}", r.as_str(), phase.replace('_', " ")),
                    c.blocks_cut[r.index()] as f64,
                )
            })
            .collect()
    };
    let mut notes = vec![
        format!("full rate: blocks cut by {}", cuts(&full_cost)),
        format!("half rate: blocks cut by {}", cuts(&half_cost)),
        format!(
            "full rate: {} blocks, {:.1} envelopes/block on average (cut at {} or after {} ms)",
            full_stats.blocks,
            full_stats.tx_per_block,
            batch().message_count_max,
            batch().timeout_ms
        ),
        format!(
            "half rate: {} blocks, {:.1} envelopes/block; target {half_rate:.0} tx/s",
            half_stats.blocks, half_stats.tx_per_block
        ),
        cost_note("full rate", &full_cost),
        cost_note("half rate", &half_cost),
    ];
    let little = opts.in_flight as f64 / (full_stats.ack_latency.p50 / 1e3).max(1e-6);
    let cpu_bound = full_cost.cores_busy >= 0.85 * raw.cores as f64;
    if cpu_bound {
        notes.push(format!(
            "full rate is CPU-bound: {:.2} of {} cores busy",
            full_cost.cores_busy, raw.cores
        ));
    } else if (0.7..1.3).contains(&(full_stats.ordered_per_s / little)) {
        notes.push(format!(
            "full rate is latency-bound, not CPU-bound: in-flight {} / ack p50 {:.1} ms = \
             {little:.0} tx/s ≈ the rate measured; a larger --in-flight orders more",
            opts.in_flight, full_stats.ack_latency.p50
        ));
    }
    if exhausted {
        notes.push("full rate: every pre-signed envelope was sent before --seconds ended; the phase was shorter".into());
    }
    let foreign = tracker.foreign.load(Ordering::Relaxed);
    if foreign > 0 {
        notes.push(format!(
            "{foreign} delivered envelopes were not the bench's"
        ));
    }
    Ok(Report {
        kind: "ordering",
        tx_per_s: full_stats.delivered_per_s,
        tx_per_s_label: "tx/s delivered (full rate)".into(),
        latency_ms: full_stats.delivered_latency,
        latency_label: "broadcast→delivered, full rate,".into(),
        extra_latencies: vec![
            (
                "latency_half_rate_ms".into(),
                format!("broadcast→delivered, half rate ({half_rate:.0}/s),"),
                half_stats.delivered_latency,
            ),
            (
                "latency_ack_ms".into(),
                "broadcast→SUCCESS answer, full rate,".into(),
                full_stats.ack_latency,
            ),
            (
                "latency_ack_half_rate_ms".into(),
                "broadcast→SUCCESS answer, half rate,".into(),
                half_stats.ack_latency,
            ),
        ],
        raw,
        bound_tx_per_s: bound,
        bound_formula: "cores × ed25519 verify/s/core (the receiving orderer verifies one \
                        creator signature per envelope; nothing else is counted)"
            .into(),
        peak_rss_mib: vec![("orderers+clients".into(), rss)],
        rss_note: "peak RSS of the whole process: 3 orderers + clients + pre-signed envelopes"
            .into(),
        extra: vec![
            (
                "ordered_tx_per_s".into(),
                "tx/s ordered (SUCCESS answers), full rate".into(),
                full_stats.ordered_per_s,
            ),
            (
                "half_rate_delivered_tx_per_s".into(),
                "tx/s delivered, half-rate phase".into(),
                half_stats.delivered_per_s,
            ),
        ]
        .into_iter()
        .chain(cut_extra("full_rate", &full_cost))
        .chain(cut_extra("half_rate", &half_cost))
        .collect(),
        series: Vec::new(),
        config: json!({
            "orderers": cluster.len(),
            "leader": leader,
            "deliver_subscriber": format!("orderer{}", SUBSCRIBER + 1),
            "batch": {
                "message_count_max": batch().message_count_max,
                "bytes_preferred_max": batch().bytes_preferred_max,
                "timeout_ms": batch().timeout_ms,
            },
            "envelope_body_bytes": opts.body_bytes,
            "in_flight": opts.in_flight,
            "broadcast_streams": lanes.len(),
            "cores": raw.cores,
            "seconds": opts.seconds,
            "warmup_tx_per_s": warm_rate,
            "full_rate_envelopes_presigned": full_count,
            "half_rate_target_tx_per_s": half_rate,
            "steady_window": "phase minus its first 10 % (0.1 to 1 s)",
        }),
        notes,
    })
}
