//! The load side of the `ordering` benchmark: pre-signed envelopes, Broadcast lanes (closed or
//! open loop), the Deliver subscriber, and per-envelope send / answer / delivery times.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use rayon::prelude::*;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tonic::transport::Channel as GrpcChannel;

use super::ordering::Cluster;
use super::Percentiles;
use super::CHANNEL;

/// Nonce = this 16-byte prefix ‖ the envelope's index (u64 BE): 24 bytes, as clients send.
const NONCE_PREFIX: &[u8; 16] = b"weft-bench-order";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Times of every envelope of every phase, as nanoseconds since `epoch` + 1 (0: not yet).
pub(super) struct Tracker {
    pub(super) epoch: Instant,
    pub(super) phases: Mutex<Vec<Arc<Phase>>>,
    /// (arrival, envelopes) of each delivered block.
    pub(super) blocks: Mutex<Vec<(Instant, usize)>>,
    pub(super) foreign: AtomicU64,
    /// Number of the last block the subscriber received.
    pub(super) last_block: AtomicU64,
}

pub(super) struct Phase {
    pub(super) base: u64,
    pub(super) sent: Vec<AtomicU64>,
    pub(super) acked: Vec<AtomicU64>,
    pub(super) delivered: Vec<AtomicU64>,
    pub(super) failures: AtomicU64,
    pub(super) first_failure: Mutex<Option<String>>,
}

impl Phase {
    fn new(base: u64, len: usize) -> Self {
        let zeros = || (0..len).map(|_| AtomicU64::new(0)).collect();
        Phase {
            base,
            sent: zeros(),
            acked: zeros(),
            delivered: zeros(),
            failures: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        }
    }
}

impl Tracker {
    pub(super) fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    pub(super) fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp - 1)
    }

    pub(super) fn add_phase(&self, len: usize) -> Arc<Phase> {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let base = phases.last().map_or(0, |p| p.base + p.sent.len() as u64);
        let phase = Arc::new(Phase::new(base, len));
        phases.push(phase.clone());
        phase
    }

    /// Records that the envelope with `index` was delivered `at`.
    pub(super) fn delivered(&self, index: u64, at: Instant) {
        let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let slot = phases.iter().find_map(|p| {
            let i = index.checked_sub(p.base)? as usize;
            p.delivered.get(i)
        });
        match slot {
            Some(slot) => slot.store(self.stamp(at), Ordering::Relaxed),
            None => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The bench index of an encoded envelope, from its nonce.
pub(super) fn index_of(envelope: &[u8]) -> Option<u64> {
    let env = Envelope::decode(envelope).ok()?;
    let payload = Payload::decode(env.payload.as_slice()).ok()?;
    let nonce = payload.header?.signature_header?.nonce;
    let index = nonce.strip_prefix(NONCE_PREFIX.as_slice())?;
    Some(u64::from_be_bytes(index.try_into().ok()?))
}

/// Signs envelopes `base..base + count` (in parallel; before timing).
pub(super) fn presign(
    cluster: &Cluster,
    base: u64,
    count: usize,
    body_bytes: usize,
) -> Vec<Envelope> {
    let timestamp_ms = super::now_unix() as u64 * 1000;
    (0..count as u64)
        .into_par_iter()
        .map(|i| {
            let index = base + i;
            let mut nonce = NONCE_PREFIX.to_vec();
            nonce.extend_from_slice(&index.to_be_bytes());
            let body = incompressible(index, body_bytes);
            create_signed_envelope(
                &cluster.client,
                HeaderType::EndorserTransaction,
                CHANNEL,
                body,
                nonce,
                timestamp_ms,
            )
        })
        .collect()
}

/// `len` pseudo-random bytes derived from `seed` (splitmix64): transaction bodies are mostly
/// hashes, signatures and certificates, so a compressible filler would flatter storage.
fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How a phase paces its sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    /// At most this many outstanding (acknowledgement not yet received), for `duration`.
    Closed {
        in_flight: usize,
        duration: Duration,
    },
    /// Envelope `i` scheduled at `start + i / rate`.
    Open { rate: f64 },
}

/// Sends `envelopes` (indices `phase.base..`) over `lanes.len()` Broadcast streams, round-robin,
/// and waits for every answer. Returns the phase start.
pub(super) async fn send_phase(
    tracker: &Arc<Tracker>,
    phase: &Arc<Phase>,
    lanes: &[AtomicBroadcastClient<GrpcChannel>],
    envelopes: Vec<Envelope>,
    pace: Pace,
) -> anyhow::Result<Instant> {
    let n = lanes.len();
    let mut per_lane: Vec<Vec<(usize, Envelope)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, e) in envelopes.into_iter().enumerate() {
        per_lane[i % n].push((i, e));
    }
    let permits = match pace {
        Pace::Closed { in_flight, .. } => Some(Arc::new(Semaphore::new(in_flight.max(1)))),
        Pace::Open { .. } => None,
    };
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (lane, client) in per_lane.into_iter().zip(lanes) {
        let (tracker, phase, permits, mut client) = (
            tracker.clone(),
            phase.clone(),
            permits.clone(),
            client.clone(),
        );
        let (s_tracker, s_phase) = (tracker.clone(), phase.clone());
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel::<Envelope>(1024);
            let requests =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
                );
            let mut responses = client
                .broadcast(requests)
                .await
                .context("opening a Broadcast stream")?
                .into_inner();
            let (pending_tx, mut pending_rx) = mpsc::unbounded_channel();
            let sender = async move {
                tokio::time::sleep_until(start.into()).await;
                for (i, envelope) in lane {
                    let permit = match (&permits, pace) {
                        (Some(p), Pace::Closed { duration, .. }) => {
                            let permit = p.clone().acquire_owned().await?;
                            if start.elapsed() >= duration {
                                break;
                            }
                            tracker_sent(&s_tracker, &s_phase, i, Instant::now());
                            Some(permit)
                        }
                        (_, Pace::Open { rate }) => {
                            let at = start + Duration::from_secs_f64(i as f64 / rate);
                            tokio::time::sleep_until(at.into()).await;
                            tracker_sent(&s_tracker, &s_phase, i, at);
                            None
                        }
                        _ => None,
                    };
                    if pending_tx.send((i, permit)).is_err() || tx.send(envelope).await.is_err() {
                        break;
                    }
                }
                anyhow::Ok(())
            };
            let receiver = async {
                while let Some(answer) = responses.next().await {
                    let answer = answer.context("Broadcast stream failed")?;
                    let Some((i, permit)) = pending_rx.recv().await else {
                        anyhow::bail!("Broadcast answered more envelopes than were sent");
                    };
                    if answer.status == Status::Success as i32 {
                        phase.acked[i].store(tracker.stamp(Instant::now()), Ordering::Relaxed);
                    } else if phase.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        *phase
                            .first_failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("status {} {}", answer.status, answer.info));
                    }
                    drop(permit);
                }
                anyhow::Ok(())
            };
            let (sent, received) = tokio::join!(sender, receiver);
            sent.and(received)
        }));
    }
    for task in tasks {
        task.await.context("Broadcast lane panicked")??;
    }
    let failures = phase.failures.load(Ordering::Relaxed);
    if failures > 0 {
        let first = phase
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        anyhow::bail!(
            "{failures} envelopes were refused (first: {}); a benchmark of failures is meaningless",
            first.unwrap_or_default()
        );
    }
    Ok(start)
}

pub(super) fn tracker_sent(tracker: &Tracker, phase: &Phase, i: usize, at: Instant) {
    phase.sent[i].store(tracker.stamp(at), Ordering::Relaxed);
}

/// Readiness: one envelope submitted to each orderer (`Submit`, retried while the answer is
/// UNAVAILABLE, e.g. before every node knows the leader) must be ordered.
pub(super) async fn probe(
    tracker: &Tracker,
    cluster: &Cluster,
    body_bytes: usize,
) -> anyhow::Result<Arc<Phase>> {
    let phase = tracker.add_phase(cluster.len());
    let envelopes = presign(cluster, phase.base, cluster.len(), body_bytes);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, envelope) in envelopes.into_iter().enumerate() {
        let mut client = cluster.client(node).await?;
        loop {
            let sent = Instant::now();
            match client.submit(envelope.clone()).await {
                Ok(_) => {
                    phase.sent[node].store(tracker.stamp(sent), Ordering::Relaxed);
                    phase.acked[node].store(tracker.stamp(Instant::now()), Ordering::Relaxed);
                    break;
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => {
                    anyhow::bail!("orderer{} is not ready: {status}", node + 1)
                }
            }
        }
    }
    Ok(phase)
}

/// Waits until every acknowledged envelope of `phase` has been delivered.
pub(super) async fn drain(phase: &Phase) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let missing = phase
            .acked
            .iter()
            .zip(&phase.delivered)
            .filter(|(a, d)| a.load(Ordering::Relaxed) != 0 && d.load(Ordering::Relaxed) == 0)
            .count();
        if missing == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{missing} acknowledged envelopes were not delivered within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one phase measured over its steady window `[from, to)`.
#[derive(Debug)]
pub(super) struct PhaseStats {
    pub(super) ordered_per_s: f64,
    pub(super) delivered_per_s: f64,
    /// Broadcast send → block delivered, envelopes sent in the window.
    pub(super) delivered_latency: Percentiles,
    /// Broadcast send → SUCCESS answer, envelopes sent in the window.
    pub(super) ack_latency: Percentiles,
    pub(super) blocks: usize,
    pub(super) tx_per_block: f64,
}

pub(super) fn stats(tracker: &Tracker, phase: &Phase, from: Instant, to: Instant) -> PhaseStats {
    let (lo, hi) = (tracker.stamp(from), tracker.stamp(to));
    let window = to.saturating_duration_since(from).as_secs_f64().max(1e-9);
    let in_window = |v: &AtomicU64| {
        let s = v.load(Ordering::Relaxed);
        s != 0 && s >= lo && s < hi
    };
    let ordered = phase.acked.iter().filter(|a| in_window(a)).count();
    let delivered = phase.delivered.iter().filter(|d| in_window(d)).count();
    let mut to_delivery = Vec::new();
    let mut to_ack = Vec::new();
    for i in 0..phase.sent.len() {
        if !in_window(&phase.sent[i]) {
            continue;
        }
        let sent = tracker.instant(phase.sent[i].load(Ordering::Relaxed));
        for (times, out) in [
            (&phase.delivered, &mut to_delivery),
            (&phase.acked, &mut to_ack),
        ] {
            let t = times[i].load(Ordering::Relaxed);
            if t != 0 {
                out.push(tracker.instant(t).saturating_duration_since(sent));
            }
        }
    }
    let blocks = tracker.blocks.lock().unwrap_or_else(|e| e.into_inner());
    let in_blocks: Vec<usize> = blocks
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, n)| *n)
        .collect();
    PhaseStats {
        ordered_per_s: ordered as f64 / window,
        delivered_per_s: delivered as f64 / window,
        delivered_latency: Percentiles::of(&to_delivery),
        ack_latency: Percentiles::of(&to_ack),
        blocks: in_blocks.len(),
        tx_per_block: in_blocks.iter().sum::<usize>() as f64 / in_blocks.len().max(1) as f64,
    }
}

/// Follows orderer `node`'s blocks from `start` on, recording deliveries in `tracker`.
pub(super) async fn subscribe(
    cluster: &Cluster,
    node: usize,
    start: u64,
    tracker: Arc<Tracker>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let seek = SeekInfo {
        start: Some(shared_proto::seek::specified(start)),
        stop: Some(shared_proto::seek::follow()),
        behavior: SeekBehavior::BlockUntilReady as i32,
    };
    let request = create_signed_envelope(
        &cluster.client,
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        shared_proto::envelope::new_nonce(),
        super::now_unix() as u64 * 1000,
    );
    let mut client = cluster.client(node).await?;
    let mut stream = client
        .deliver(futures::stream::iter([request]))
        .await
        .context("opening Deliver")?
        .into_inner();
    Ok(tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg.context("Deliver stream failed")?.r#type {
                Some(Type::Block(block)) => {
                    let at = Instant::now();
                    let envelopes = shared_proto::block::tx_envelopes(&block);
                    for e in envelopes {
                        match index_of(e) {
                            Some(index) => tracker.delivered(index, at),
                            None => {
                                tracker.foreign.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let mut blocks = tracker.blocks.lock().unwrap_or_else(|e| e.into_inner());
                    blocks.push((at, envelopes.len()));
                    let number = block.header.as_ref().map_or(0, |h| h.number);
                    tracker.last_block.store(number, Ordering::Relaxed);
                }
                Some(Type::Status(s)) => anyhow::bail!("Deliver ended with status {s}"),
                None => anyhow::bail!("empty Deliver response"),
            }
        }
        anyhow::bail!("Deliver stream closed")
    }))
}
