//! The ordering benchmark's report: what [`super::drive`] measured, turned into the JSON
//! figures (rates, latencies, cost per envelope, cut reasons, the sweep) and the notes.

use super::*;

/// Everything [`report`] turns into the report.
pub(super) struct Measured<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) raw: RawLimits,
    pub(super) opts: &'a Options,
    pub(super) leader: u64,
    pub(super) lanes: usize,
    pub(super) warm_rate: f64,
    pub(super) in_flight: usize,
    pub(super) steps: Vec<sweep::Step>,
    pub(super) stop: Option<sweep::Stop>,
    /// Envelopes pre-signed, whether all were sent early, stats, cost.
    pub(super) full: (usize, bool, PhaseStats, Cost),
    /// Target rate, stats, cost.
    pub(super) half: (f64, PhaseStats, Cost),
    /// Stats and cost at [`super::LOW_RATE`].
    pub(super) low: (PhaseStats, Cost),
    pub(super) foreign: u64,
}

pub(super) fn report(m: Measured) -> anyhow::Result<Report> {
    let Measured {
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
    } = m;
    let bound = raw.cores as f64 * raw.verify_per_s_per_core;
    let rss = cluster.peak_rss_mib()?;
    let cost_note = |name: &str, c: &Cost| {
        let top: Vec<String> = c
            .threads
            .iter()
            .take(6)
            .map(|(n, s)| format!("{n} {s:.2}s"))
            .collect();
        let per_env = |v: f64| v / c.envelopes.max(1) as f64;
        let procs: Vec<String> = c
            .processes
            .iter()
            .map(|(n, busy, bytes)| {
                format!("{n} {busy:.2} cores, {:.1} MiB", *bytes as f64 / 1048576.0)
            })
            .collect();
        format!(
            "{name}: CPU {:.2} of {} cores busy ({}; this process by thread: {}); {} Raft \
             entries ({:.1} envelopes/entry); storage writes {:.1} MiB = {:.1} KiB/envelope \
             (3 nodes), {:.2} KiB per KiB of envelope ({:.0} bytes encoded); {:.1} Broadcast \
             signatures per verified batch; when sending stopped: block heights {:?}, \
             subscriber at {}",
            c.cores_busy,
            raw.cores,
            procs.join(", "),
            top.join(", "),
            c.raft_entries,
            c.envelopes as f64 / c.raft_entries.max(1) as f64,
            c.storage_bytes as f64 / (1024.0 * 1024.0),
            per_env(c.storage_bytes as f64) / 1024.0,
            c.storage_per_envelope_kib(),
            c.envelope_bytes,
            c.signatures_per_batch(),
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
    let write_extra = |phase: &str, c: &Cost| -> Vec<(String, String, f64)> {
        let label = phase.replace('_', " ");
        vec![
            (
                format!("{phase}_storage_bytes_per_envelope"),
                format!("storage bytes written per envelope, 3 nodes, {label}"),
                c.storage_per_envelope(),
            ),
            (
                format!("{phase}_storage_kib_per_envelope_kib"),
                format!("storage KiB written per KiB of envelope, 3 nodes, {label}"),
                c.storage_per_envelope_kib(),
            ),
            (
                format!("{phase}_signatures_per_batch"),
                format!("Broadcast signatures per verified batch, {label}"),
                c.signatures_per_batch(),
            ),
        ]
    };
    let mut notes: Vec<String> = steps.iter().map(sweep::line).collect();
    if let Some(stop) = stop {
        notes.push(format!(
            "sweep stopped: {}; peak at in-flight {in_flight}",
            stop.as_str()
        ));
    }
    notes.extend([
        format!("full rate: blocks cut by {}", cuts(&full_cost)),
        format!("half rate: blocks cut by {}", cuts(&half_cost)),
        format!("low rate: blocks cut by {}", cuts(&low_cost)),
        format!(
            "full rate: {} blocks, {:.1} envelopes/block on average (cut at {} or after {} ms)",
            full_stats.blocks,
            full_stats.tx_per_block,
            opts.batch().message_count_max,
            opts.batch().timeout_ms
        ),
        format!(
            "half rate: {} blocks, {:.1} envelopes/block; target {half_rate:.0} tx/s",
            half_stats.blocks, half_stats.tx_per_block
        ),
        format!(
            "low rate: {} blocks, {:.1} envelopes/block; target {LOW_RATE:.0} tx/s",
            low_stats.blocks, low_stats.tx_per_block
        ),
        cost_note("full rate", &full_cost),
        cost_note("half rate", &half_cost),
        cost_note("low rate", &low_cost),
    ]);
    let little = in_flight as f64 / (full_stats.ack_latency.p50 / 1e3).max(1e-6);
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
            in_flight, full_stats.ack_latency.p50
        ));
    }
    if exhausted {
        notes.push("full rate: every pre-signed envelope was sent before --seconds ended; the phase was shorter".into());
    }
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
                "latency_low_rate_ms".into(),
                format!("broadcast→delivered, low rate ({LOW_RATE:.0}/s),"),
                low_stats.delivered_latency,
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
        peak_rss_mib: rss,
        rss_note: if cluster.processes() {
            "peak RSS per process: the bench (clients + pre-signed envelopes), each orderer".into()
        } else {
            "peak RSS of the whole process: 3 orderers + clients + pre-signed envelopes".into()
        },
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
            (
                "full_rate_envelopes_per_block".into(),
                "envelopes per block, full rate".into(),
                full_stats.tx_per_block,
            ),
            (
                "half_rate_envelopes_per_block".into(),
                "envelopes per block, half rate".into(),
                half_stats.tx_per_block,
            ),
            (
                "low_rate_envelopes_per_block".into(),
                "envelopes per block, low rate".into(),
                low_stats.tx_per_block,
            ),
        ]
        .into_iter()
        .chain(cut_extra("full_rate", &full_cost))
        .chain(cut_extra("half_rate", &half_cost))
        .chain(cut_extra("low_rate", &low_cost))
        .chain(write_extra("full_rate", &full_cost))
        .chain(write_extra("half_rate", &half_cost))
        .chain([(
            "envelope_encoded_bytes".into(),
            "envelope size, encoded bytes".into(),
            full_cost.envelope_bytes,
        )])
        .collect(),
        series: if steps.is_empty() {
            Vec::new()
        } else {
            vec![("sweep".into(), sweep::json(&steps, stop, in_flight))]
        },
        config: json!({
            "orderers": cluster.len(),
            "orderers_as": if cluster.processes() { "processes" } else { "in process" },
            "leader": leader,
            "deliver_subscriber": format!("orderer{}", SUBSCRIBER + 1),
            "batch": {
                "message_count_max": opts.batch().message_count_max,
                "bytes_preferred_max": opts.batch().bytes_preferred_max,
                "timeout_ms": opts.batch().timeout_ms,
            },
            "envelope_body_bytes": opts.body_bytes,
            "in_flight": in_flight,
            "in_flight_from": if opts.in_flight.is_some() { "--in-flight" } else { "sweep peak" },
            "broadcast_streams": lanes,
            "cores": raw.cores,
            "seconds": opts.seconds,
            "warmup_tx_per_s": warm_rate,
            "full_rate_envelopes_presigned": full_count,
            "half_rate_target_tx_per_s": half_rate,
            "low_rate_target_tx_per_s": LOW_RATE,
            "steady_window": "phase minus its first 10 % (0.1 to 1 s)",
        }),
        notes,
    })
}
