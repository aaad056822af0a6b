//! The token-transfer workload of the dev network and the e2e benchmark: SDK clients mint
//! accounts, then each moves tokens among its own accounts (so clients never contend for a key:
//! no MVCC conflicts by construction) for a while, optionally at a fixed total rate.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use peer::sdk::Gateway;
use shared_proto::material::Generated;
use shared_proto::pb::tx::TxValidationCode;

use crate::launcher;
use crate::launcher::Kind;
use crate::topology::NodeView;
use crate::topology::CHANNEL;

/// How to drive the network.
#[derive(Debug, Clone)]
pub struct Options {
    pub clients: usize,
    pub seconds: u64,
    /// Total transactions per second (0: as fast as the clients go).
    pub rate: u64,
    /// Show a progress bar with committed txs, tx/s and peer heights.
    pub progress: bool,
}

/// What the workload saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub committed: u64,
    pub invalid: u64,
    pub failed: u64,
    /// When the timed transfers started (after minting).
    pub started: Option<Instant>,
    pub elapsed: Duration,
    /// Submit → committed (at the first endorser) of each VALID transfer.
    pub latencies: Vec<Duration>,
    /// The same transfers split where the SDK sees them move on: proposal → endorsements back
    /// and the envelope signed (every endorsement round), Broadcast → orderer ack, ack → the
    /// first endorser answered the commit-status wait.
    pub stages: Stages,
    /// Each peer's `/metrics` text when the timed phase started (after minting), so a caller
    /// can diff the peers' histograms over the timed phase alone.
    pub peer_metrics_at_start: Vec<(String, String)>,
}

/// Per-stage durations of each VALID transfer, as the client saw them.
#[derive(Debug, Default)]
pub struct Stages {
    pub endorse: Vec<Duration>,
    pub order: Vec<Duration>,
    pub ack_to_commit: Vec<Duration>,
}

/// When the SDK last said a transaction went to the orderers and when it was acknowledged.
#[derive(Default)]
struct Stamps {
    ordering: std::sync::Mutex<Option<Instant>>,
    acked: std::sync::Mutex<Option<Instant>>,
}

impl Stamps {
    fn set(slot: &std::sync::Mutex<Option<Instant>>) {
        if let Ok(mut s) = slot.lock() {
            *s = Some(Instant::now());
        }
    }

    fn get(slot: &std::sync::Mutex<Option<Instant>>) -> Option<Instant> {
        slot.lock().ok().and_then(|s| *s)
    }
}

impl peer::sdk::Observe for Stamps {
    fn ordering(&self, _tx_id: &str) {
        Stamps::set(&self.ordering);
    }

    fn acked(&self, _tx_id: &str, _orderer: &str) {
        Stamps::set(&self.acked);
    }
}

/// Mints `clients × 4` accounts, then runs transfers for `o.seconds`.
pub async fn run(g: &Generated, nodes: &[NodeView], o: &Options) -> anyhow::Result<Outcome> {
    let gw = Arc::new(Gateway::from_network(g, "Org1MSP", "User1", CHANNEL)?);
    let clients = o.clients.max(1);
    let accounts = (clients * 4).max(2);
    println!("minting {accounts} accounts...");
    let mut minters = Vec::new();
    for c in 0..clients {
        let gw = gw.clone();
        minters.push(tokio::spawn(async move {
            for a in (c..accounts).step_by(clients) {
                let account = format!("acct{a}").into_bytes();
                let r = gw
                    .submit("token", "mint", &[account, b"1000000".to_vec()])
                    .await?;
                anyhow::ensure!(
                    r.code == TxValidationCode::Valid,
                    "minting acct{a}: {:?}",
                    r.code
                );
            }
            anyhow::Ok(())
        }));
    }
    for m in minters {
        m.await?.context("minting")?;
    }
    let committed = Arc::new(AtomicU64::new(0));
    let mut peer_metrics_at_start = Vec::new();
    for v in nodes.iter().filter(|v| v.kind == Kind::Peer) {
        if let Ok((200, text)) = launcher::http_get(&v.ops, "/metrics").await {
            peer_metrics_at_start.push((v.name.clone(), text));
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(o.seconds);
    let interval = (o.rate > 0).then(|| Duration::from_secs_f64(clients as f64 / o.rate as f64));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (gw, committed) = (gw.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Outcome::default();
            let own = (accounts / clients).max(2);
            let mut k = 0usize;
            while Instant::now() < end {
                let t0 = Instant::now();
                let from = format!("acct{}", (c + clients * (k % own)) % accounts);
                let to = format!("acct{}", (c + clients * ((k + 1) % own)) % accounts);
                k += 1;
                if from == to {
                    continue;
                }
                let args = [from.into_bytes(), to.into_bytes(), b"1".to_vec()];
                let stamps = Stamps::default();
                match gw
                    .submit_observed("token", "transfer", &args, &stamps)
                    .await
                {
                    Ok(s) if s.code == TxValidationCode::Valid => {
                        let done = Instant::now();
                        r.committed += 1;
                        committed.fetch_add(1, Ordering::Relaxed);
                        r.latencies.push(done - t0);
                        if let (Some(ordering), Some(acked)) =
                            (Stamps::get(&stamps.ordering), Stamps::get(&stamps.acked))
                        {
                            r.stages
                                .endorse
                                .push(ordering.saturating_duration_since(t0));
                            r.stages
                                .order
                                .push(acked.saturating_duration_since(ordering));
                            r.stages
                                .ack_to_commit
                                .push(done.saturating_duration_since(acked));
                        }
                    }
                    Ok(_) => r.invalid += 1,
                    Err(_) => r.failed += 1,
                }
                if let Some(iv) = interval {
                    tokio::time::sleep(iv.saturating_sub(t0.elapsed())).await;
                }
            }
            r
        }));
    }
    if o.progress {
        progress(nodes, &committed, start, o.seconds).await;
    }
    let mut outcome = Outcome {
        started: Some(start),
        peer_metrics_at_start,
        ..Outcome::default()
    };
    for t in tasks {
        let r = t.await?;
        outcome.committed += r.committed;
        outcome.invalid += r.invalid;
        outcome.failed += r.failed;
        outcome.latencies.extend(r.latencies);
        outcome.stages.endorse.extend(r.stages.endorse);
        outcome.stages.order.extend(r.stages.order);
        outcome.stages.ack_to_commit.extend(r.stages.ack_to_commit);
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

async fn progress(nodes: &[NodeView], committed: &AtomicU64, start: Instant, seconds: u64) {
    let bar = indicatif::ProgressBar::new(seconds);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let peers: Vec<&NodeView> = nodes.iter().filter(|v| v.kind == Kind::Peer).collect();
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = committed.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let mut heights = Vec::new();
        for p in &peers {
            heights.push(
                height_of(&p.ops)
                    .await
                    .map_or("?".into(), |h| h.to_string()),
            );
        }
        bar.set_position(start.elapsed().as_secs().min(seconds));
        bar.set_message(format!(
            "{n} committed, {:.0} tx/s, peer heights {}",
            n as f64 / secs,
            heights.join("/")
        ));
    }
    bar.finish();
}

/// A node's height on the dev channel, from its `/status`.
pub async fn height_of(ops: &str) -> Option<u64> {
    launcher::status(ops).await.ok()?["channels"][CHANNEL]["height"].as_u64()
}

/// Waits until every node reports the same height (or `timeout` passes); returns when that
/// happened and the statuses.
pub async fn converge(nodes: &[NodeView], timeout: Duration) -> (Instant, Vec<serde_json::Value>) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut statuses = Vec::new();
        for v in nodes {
            statuses.push(launcher::status(&v.ops).await.unwrap_or_default());
        }
        let heights: Vec<u64> = statuses
            .iter()
            .map(|s| s["channels"][CHANNEL]["height"].as_u64().unwrap_or(0))
            .collect();
        if heights.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            return (Instant::now(), statuses);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
