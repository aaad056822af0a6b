//! `e2e`: the dev network's topology (3 orderers, 2 orgs × 2 peers, one peer of each org
//! gossip-only), every node a process of its own, SDK clients submitting token transfers.
//!
//! Reported: transfers committed per second *at every peer* (VALID transfers divided by the
//! time from the start of the timed phase until the last peer reached the orderers' height),
//! submit → commit latency at the first endorser, each node's peak RSS and its RSS sampled over
//! the run (flatness). The run is refused if any peer disagrees on the state hash.
//!
//! Bound: per transaction the box must check 3 single signatures (2 endorsers check the
//! proposal, 1 orderer the envelope) and 12 batched ones (4 peers × creator + 2
//! endorsements): `bound = cores / (3 / verify_per_core + 12 / batch_verify_per_core)`. It
//! ignores signing (4 signatures per tx), TLS, chaincode, fsync and the clients' own CPU.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use shared_proto::material;

use super::e2e_stages;
use super::Percentiles;
use super::RawLimits;
use super::Report;
use crate::launcher;
use crate::launcher::Kind;
use crate::launcher::NodeProcess;
use crate::topology;
use crate::topology::Topology;
use crate::topology::CHANNEL;
use crate::workload;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    pub clients: usize,
    /// Total offered tx/s (0: closed loop, as fast as the clients go).
    pub rate: u64,
    /// The channel's batch timeout (the dev network's: 100 ms).
    pub batch_timeout_ms: u64,
}

/// Runs the benchmark with node processes started from `exe` (`exe node <kind> --config`).
pub async fn run(o: &Options, raw: RawLimits, dir: &Path, exe: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(
        o.batch_timeout_ms > 0,
        "--batch-timeout-ms must be at least 1"
    );
    let mut topo = Topology {
        name: "bench-e2e".into(),
        orderers: 3,
        orgs: 2,
        peers_per_org: 2,
        connected_peers_per_org: 1,
        batch_size: 500,
        batch_timeout_ms: o.batch_timeout_ms,
        base_port: 0,
    };
    let ports = 3 * topo.orderers + 3 * topo.orgs * topo.peers_per_org;
    topo.base_port = launcher::free_port_range(ports as u16)?;
    let generated = material::generate(&topo.spec()?, &dir.join("net"), super::now_unix())?;
    let nodes = topology::nodes(&generated);
    let mut procs = Vec::new();
    for v in &nodes {
        let log = dir
            .join("logs")
            .join(format!("{}.log", v.name.replace('/', "-")));
        procs.push(NodeProcess::spawn(exe, v.kind, &v.name, &v.config, &log)?);
    }
    launcher::wait_ready(&nodes, &mut procs, Duration::from_secs(60)).await?;
    let seconds = o.seconds.ceil().max(1.0) as u64;
    let pids: Vec<(String, u32)> = procs
        .iter()
        .filter_map(|p| p.pid().map(|pid| (p.name.clone(), pid)))
        .collect();
    let sample_every = Duration::from_secs((seconds / 60).max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_rss(pids.clone(), sample_every, stop_rx));
    let outcome = workload::run(
        &generated,
        &nodes,
        &workload::Options {
            clients: o.clients,
            seconds,
            rate: o.rate,
            progress: true,
        },
    )
    .await?;
    let (all_at_tip, statuses) = workload::converge(&nodes, Duration::from_secs(60)).await;
    let mut peer_metrics_at_end = Vec::new();
    for v in nodes.iter().filter(|v| v.kind == Kind::Peer) {
        if let Ok((200, text)) = launcher::http_get(&v.ops, "/metrics").await {
            peer_metrics_at_end.push((v.name.clone(), text));
        }
    }
    let _ = stop_tx.send(true);
    let samples = sampler.await.context("RSS sampler")?;
    let peak: Vec<(String, f64)> = pids
        .iter()
        .map(|(name, pid)| {
            (
                name.clone(),
                launcher::rss_mib(*pid).map_or(0.0, |r| r.peak),
            )
        })
        .collect();
    for p in &mut procs {
        if let Some(status) = p.exited() {
            anyhow::bail!(
                "{} exited ({status}) during the run; see {}",
                p.name,
                p.log.display()
            );
        }
    }
    let state_hashes: Vec<&str> = nodes
        .iter()
        .zip(&statuses)
        .filter(|(v, _)| v.kind == Kind::Peer)
        .map(|(_, s)| s["channels"][CHANNEL]["state_hash"].as_str().unwrap_or(""))
        .collect();
    anyhow::ensure!(
        !state_hashes.is_empty()
            && state_hashes
                .windows(2)
                .all(|w| w[0] == w[1] && !w[0].is_empty()),
        "peers disagree on the state hash after the run: {state_hashes:?}"
    );
    drop(procs);
    let started = outcome.started.context("the workload did not start")?;
    let window = all_at_tip
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(0.001);
    let tx_per_s = outcome.committed as f64 / window;
    let cores = raw.cores as f64;
    let per_tx = 3.0 / raw.verify_per_s_per_core + 12.0 / raw.batch_verify_per_s_per_core;
    let bound = cores / per_tx;
    let mut notes = vec![format!(
        "{} VALID transfers, {} invalid, {} failed submits; every peer reached the chain tip {:.1} s after the {} s phase began",
        outcome.committed, outcome.invalid, outcome.failed, window, seconds
    )];
    let mut growth = serde_json::Map::new();
    for (name, series) in &samples {
        // Flatness: the last sample against the first one taken after 10 % of the run.
        let first = series.get(series.len() / 10).copied().unwrap_or(0.0);
        let last = series.last().copied().unwrap_or(0.0);
        growth.insert(
            name.clone(),
            json!({"after_10pct": first, "end": last, "growth": last - first}),
        );
    }
    let total = Percentiles::of(&outcome.latencies);
    let peer_histos =
        e2e_stages::peer_histograms(&outcome.peer_metrics_at_start, &peer_metrics_at_end);
    let (breakdown, breakdown_note) = e2e_stages::breakdown(
        &outcome.stages,
        &total,
        &peer_histos,
        &nodes
            .iter()
            .find(|v| v.kind == Kind::Peer)
            .map(|v| v.name.clone())
            .unwrap_or_default(),
    );
    notes.push(breakdown_note);
    notes.push(format!(
        "RSS sampled every {} s on {} nodes; see rss_mib_samples",
        sample_every.as_secs(),
        samples.len()
    ));
    Ok(Report {
        kind: "e2e",
        tx_per_s,
        tx_per_s_label: "tx/s committed at every peer".into(),
        latency_ms: total,
        latency_label: "submit → commit (first endorser)".into(),
        extra_latencies: vec![
            (
                "endorse_latency_ms".into(),
                "endorse (proposal → envelope signed)".into(),
                Percentiles::of(&outcome.stages.endorse),
            ),
            (
                "order_latency_ms".into(),
                "order (Broadcast → ack)".into(),
                Percentiles::of(&outcome.stages.order),
            ),
            (
                "ack_to_commit_latency_ms".into(),
                "ack → commit status".into(),
                Percentiles::of(&outcome.stages.ack_to_commit),
            ),
        ],
        raw,
        bound_tx_per_s: bound,
        bound_formula: format!(
            "{cores} cores / (3 / {:.0} verify/s + 12 / {:.0} batch-verify/s)",
            raw.verify_per_s_per_core, raw.batch_verify_per_s_per_core
        ),
        peak_rss_mib: peak,
        rss_note: "VmHWM of each node process".into(),
        extra: vec![
            (
                "committed_txs".into(),
                "VALID transfers".into(),
                outcome.committed as f64,
            ),
            (
                "failed_submits".into(),
                "failed submits".into(),
                outcome.failed as f64,
            ),
        ],
        series: vec![
            (
                "rss_mib_samples".into(),
                samples
                    .iter()
                    .map(|(name, s)| (name.clone(), json!(s)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            ),
            ("rss_flatness_mib".into(), growth.into()),
            ("latency_breakdown".into(), breakdown),
        ],
        config: json!({
            "orderers": topo.orderers,
            "orgs": topo.orgs,
            "peers_per_org": topo.peers_per_org,
            "gossip_only_peers_per_org": topo.peers_per_org - topo.connected_peers_per_org,
            "batch": {"max_txs": topo.batch_size, "timeout_ms": topo.batch_timeout_ms},
            "clients": o.clients,
            "rate": o.rate,
            "seconds": seconds,
        }),
        notes,
    })
}

/// RSS (MiB) of each process every `every`, until `stop`.
async fn sample_rss(
    pids: Vec<(String, u32)>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(String, Vec<f64>)> {
    let mut series: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
    let mut next = Instant::now();
    loop {
        for (i, (_, pid)) in pids.iter().enumerate() {
            if let Some(r) = launcher::rss_mib(*pid) {
                series[i].push((r.current * 10.0).round() / 10.0);
            }
        }
        next += every;
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    pids.into_iter()
        .zip(series)
        .map(|((name, _), s)| (name, s))
        .collect()
}
