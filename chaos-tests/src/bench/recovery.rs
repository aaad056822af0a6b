//! `recovery`: how long an orderer and a peer holding `--blocks` blocks take to be ready again
//! after a restart.
//!
//! 1. **build**: three orderers and one peer (Org1MSP peer0, which pulls blocks from the
//!    orderers) in this process (the harness's in-process backend: `orderer::Node::start`,
//!    `peer::Node::start`, what the binaries' `run` calls). The channel cuts a block per
//!    envelope (`message_count_max = 1`), and Broadcast streams to every orderer send small
//!    signed envelopes until the chain has `--blocks` blocks and the peer has committed them
//!    all. Real ordering: Raft log, snapshots, signed hash-chained blocks, the peer's block
//!    verification and commit. The envelopes carry a random body, so the peer commits each
//!    transaction as invalid (its world state stays empty; the blocks, codes and tx index are
//!    all there).
//! 2. **restart after a clean stop**: every node stopped gracefully (`Node::shutdown`), then
//!    all started again at once, each through the same startup path.
//! 3. **restart after a kill**: every node's runtime dropped where it stands (no shutdown path
//!    runs; storage is what was fsynced), then all started again at once. The kill is followed
//!    by a 1 s pause so the dropped runtimes release the storage (a process that dies releases
//!    it at once); the pause is not counted.
//!
//! `--rounds N` repeats steps 2 and 3 N times on the same chain (the first restart after the
//! build replays what the build left in the journals; later ones show the steady state); the
//! figures are the slowest of all rounds.
//!
//! Per node and restart: `start_ms` (until `Node::start` returned: storage opened, Raft and
//! servers started) and `ready_ms` (until its ops `/readyz` answers 200 and it holds every
//! block it held before; an orderer's readiness needs a Raft leader, so it includes an
//! election). The target (issue 14) is ready in ≤ 2000 ms at 100 000 blocks;
//! `ready_ratio_to_target` is the slowest node's `ready_ms` / 2000.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::json;
use serde_json::Value;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::material::BatchSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tokio::sync::mpsc;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

use super::Percentiles;
use super::RawLimits;
use super::Report;
use super::CHANNEL;
use crate::harness::inprocess;
use crate::harness::inprocess::Config;
use crate::harness::NodeHandle as _;
use crate::launcher::Kind;

/// The readiness target of issue 14.
pub const TARGET_READY_MS: f64 = 2000.0;
/// The one peer the benchmark runs.
const PEER: &str = "Org1MSP/peer0";
/// Longest a restarted node may take to be ready before the run fails.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chain height to build (the genesis block included).
    pub blocks: u64,
    /// Broadcast streams per orderer.
    pub streams_per_node: usize,
    /// Envelopes outstanding per stream.
    pub in_flight_per_stream: usize,
    /// Restart rounds (each a clean stop then a kill); the slowest of each kind is reported.
    pub rounds: usize,
}

/// A block per envelope: the fastest way to many blocks through real ordering.
fn batch() -> BatchSpec {
    BatchSpec {
        message_count_max: 1,
        bytes_preferred_max: 1024 * 1024,
        bytes_absolute_max: 10 * 1024 * 1024,
        timeout_ms: 100,
        retry_window_txs: 0,
    }
}

/// One node's restart.
#[derive(Debug, Clone)]
struct Restart {
    round: usize,
    name: String,
    kind: Kind,
    start_ms: f64,
    ready_ms: f64,
    blocks: u64,
    bytes: u64,
}

impl Restart {
    fn json(&self) -> Value {
        json!({
            "round": self.round,
            "node": self.name,
            "kind": format!("{:?}", self.kind).to_lowercase(),
            "start_ms": round1(self.start_ms),
            "ready_ms": round1(self.ready_ms),
            "blocks": self.blocks,
            "bytes_on_disk": self.bytes,
        })
    }
}

/// Runs the benchmark in `dir` (material, node storage).
pub fn run(opts: &Options, raw: RawLimits, dir: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.blocks >= 2, "--blocks must be at least 2");
    anyhow::ensure!(opts.streams_per_node > 0 && opts.in_flight_per_stream > 0);
    anyhow::ensure!(opts.rounds > 0, "--rounds must be at least 1");
    let mut spec = super::sample_spec()?;
    for o in spec.orderer_orgs.iter_mut().flat_map(|o| &mut o.orderers) {
        o.host = "127.0.0.1".into();
        (o.port, o.cluster_port, o.ops_port) = (0, 0, 0);
    }
    for org in &mut spec.peer_orgs {
        org.peers.retain(|p| p.orderer_connected);
        for p in &mut org.peers {
            p.host = "127.0.0.1".into();
            (p.port, p.gossip_port, p.ops_port) = (0, 0, 0);
        }
    }
    for ch in &mut spec.channels {
        ch.batch = batch();
    }
    let mut cluster =
        inprocess::Cluster::create(spec, dir, inprocess::Ports::default(), |config| {
            match config {
                Config::Orderer(c) => {
                    c.log.level = "warn".into();
                    c.validate()?;
                }
                Config::Peer(c) => c.log.level = "warn".into(),
            }
            Ok(())
        })?;
    let client = cluster.identity("Org1MSP", "User1")?;
    let tls = cluster.client_tls("Org1MSP", "User1")?;
    // Only the orderers and one peer run; the other org's peer is not started.
    cluster
        .nodes
        .retain(|n| n.kind() == Kind::Orderer || n.name() == PEER);
    for node in &mut cluster.nodes {
        node.start()?;
    }
    let rt = super::client_runtime(raw.cores)?;
    let built = build(&cluster, &rt, &client, &tls, opts);
    rt.shutdown_timeout(Duration::from_secs(2));
    let build_secs = built?;
    let blocks_before: Vec<u64> = cluster.nodes.iter().map(height).collect();
    eprintln!("recovery: built {blocks_before:?} blocks in {build_secs:.1} s; clean stop");

    let (mut clean, mut killed) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        cluster.stop_all();
        let restarted = restart_all(&mut cluster, &blocks_before, round)?;
        print_restart("clean stop", &restarted);
        clean.extend(restarted);
        eprintln!("recovery: round {round}: killing every node");
        for node in cluster.nodes.iter_mut().rev() {
            node.kill();
        }
        std::thread::sleep(Duration::from_secs(1));
        let restarted = restart_all(&mut cluster, &blocks_before, round)?;
        print_restart("kill", &restarted);
        killed.extend(restarted);
    }
    cluster.stop_all();
    Ok(report(opts, raw, build_secs, &clean, &killed))
}

/// Sends envelopes until the chain is `opts.blocks` high and the peer has committed it all;
/// the seconds that took.
fn build(
    cluster: &inprocess::Cluster,
    rt: &tokio::runtime::Runtime,
    client: &SigningIdentity,
    tls: &ClientTlsConfig,
    opts: &Options,
) -> anyhow::Result<f64> {
    rt.block_on(cluster.wait_leader(CHANNEL, Duration::from_secs(30)))?;
    let start = Instant::now();
    let have = cluster.nodes.first().map_or(0, height);
    let envelopes = opts.blocks.saturating_sub(have);
    let orderers: Vec<String> = cluster.orderers().map(|n| n.addresses().service).collect();
    let lanes = orderers.len() * opts.streams_per_node;
    let acked = Arc::new(AtomicU64::new(0));
    let mut sending = Some(rt.spawn({
        let (client, tls, acked) = (client.clone(), tls.clone(), acked.clone());
        let in_flight = opts.in_flight_per_stream;
        async move {
            let mut tasks = Vec::new();
            for lane in 0..lanes {
                let addr = &orderers[lane % orderers.len()];
                let grpc = connect(addr, &tls).await?;
                // Lane `lane` sends the envelopes whose index is `lane` modulo `lanes`.
                let count = (envelopes + (lanes - 1 - lane) as u64) / lanes as u64;
                let (client, acked) = (client.clone(), acked.clone());
                tasks.push(tokio::spawn(async move {
                    send_lane(grpc, &client, lane as u64, count, in_flight, &acked).await
                }));
            }
            for task in tasks {
                task.await.context("a Broadcast lane panicked")??;
            }
            anyhow::Ok(())
        }
    }));
    let mut last_print = Instant::now();
    loop {
        let peer_height = cluster
            .nodes
            .iter()
            .find(|n| n.name() == PEER)
            .map_or(0, height);
        if peer_height >= opts.blocks {
            break;
        }
        // Every lane done: a lane's failure ends the run; otherwise wait for the peer.
        if let Some(done) = sending.take_if(|s| s.is_finished()) {
            rt.block_on(done).context("the sender panicked")??;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let heights: Vec<u64> = cluster.nodes.iter().map(height).collect();
            eprintln!(
                "recovery: {:.0} s: {} envelopes ordered, heights {heights:?} (target {})",
                start.elapsed().as_secs_f64(),
                acked.load(Ordering::Relaxed),
                opts.blocks
            );
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(3600),
            "the chain did not reach {} blocks at the peer within an hour",
            opts.blocks
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(sending) = sending {
        rt.block_on(sending).context("the sender panicked")??;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn connect(
    addr: &str,
    tls: &ClientTlsConfig,
) -> anyhow::Result<AtomicBroadcastClient<GrpcChannel>> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(AtomicBroadcastClient::new(channel))
}

/// One Broadcast stream: `count` envelopes signed as they go, at most `in_flight` unanswered.
async fn send_lane(
    mut grpc: AtomicBroadcastClient<GrpcChannel>,
    client: &SigningIdentity,
    lane: u64,
    count: u64,
    in_flight: usize,
    acked: &AtomicU64,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Envelope>(in_flight);
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let mut answers = grpc
        .broadcast(requests)
        .await
        .context("opening a Broadcast stream")?
        .into_inner();
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let sender = {
        let (client, permits) = (client.clone(), permits.clone());
        async move {
            let timestamp_ms = super::now_unix() as u64 * 1000;
            for i in 0..count {
                permits.acquire().await?.forget();
                let mut nonce = b"weft-bench-recov".to_vec();
                nonce.extend_from_slice(&lane.to_be_bytes());
                nonce.extend_from_slice(&i.to_be_bytes());
                let body = nonce.repeat(4);
                let envelope = create_signed_envelope(
                    &client,
                    HeaderType::EndorserTransaction,
                    CHANNEL,
                    body,
                    nonce,
                    timestamp_ms,
                );
                if tx.send(envelope).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }
    };
    let receiver = async {
        for _ in 0..count {
            let answer = answers
                .next()
                .await
                .context("the Broadcast stream ended early")?
                .context("Broadcast stream failed")?;
            anyhow::ensure!(
                answer.status == Status::Success as i32,
                "an envelope was refused: status {} {}",
                answer.status,
                answer.info
            );
            acked.fetch_add(1, Ordering::Relaxed);
            permits.add_permits(1);
        }
        anyhow::Ok(())
    };
    let (sent, received) = tokio::join!(sender, receiver);
    sent.and(received)
}

/// The channel height a node holds (0 when stopped).
fn height(node: &inprocess::InProcessNode) -> u64 {
    if let Some(o) = node.orderer() {
        return o.registry.get(CHANNEL).map_or(0, |ch| ch.store.height());
    }
    node.peer()
        .and_then(|p| p.registry.get(CHANNEL))
        .map_or(0, |ch| ch.ledger.height())
}

/// Bytes allocated on disk to the files under `dir` (as `du` counts them: the journal is
/// preallocated sparse, so its length says little).
fn bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Starts every node at once, each on a thread of its own, and times it until ready.
fn restart_all(
    cluster: &mut inprocess::Cluster,
    blocks_before: &[u64],
    round: usize,
) -> anyhow::Result<Vec<Restart>> {
    let results: Vec<anyhow::Result<Restart>> = std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter_mut()
            .zip(blocks_before)
            .map(|(node, &before)| s.spawn(move || restart_one(node, before, round)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a restart thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

fn restart_one(
    node: &mut inprocess::InProcessNode,
    before: u64,
    round: usize,
) -> anyhow::Result<Restart> {
    let bytes = bytes_under(node.data_dir());
    let t0 = Instant::now();
    node.start()?;
    let start_ms = ms(t0.elapsed());
    let ops = node.addresses().ops;
    loop {
        let held = height(node);
        if held >= before && shared_proto::process::probe_ops(&ops, true).is_ok() {
            return Ok(Restart {
                round,
                name: node.name().to_owned(),
                kind: node.kind(),
                start_ms,
                ready_ms: ms(t0.elapsed()),
                blocks: held,
                bytes,
            });
        }
        anyhow::ensure!(
            t0.elapsed() < READY_DEADLINE,
            "{} not ready within {READY_DEADLINE:?} of its start (holds {held} of {before} blocks): {}",
            node.name(),
            shared_proto::process::probe_ops(&ops, true).unwrap_or_else(|e| e)
        );
        std::thread::sleep(POLL);
    }
}

fn print_restart(what: &str, restarts: &[Restart]) {
    for r in restarts {
        eprintln!(
            "recovery: round {} after {what}: {:<14} start {:>8.1} ms, ready {:>8.1} ms, {} blocks, {:.1} MiB",
            r.round,
            r.name,
            r.start_ms,
            r.ready_ms,
            r.blocks,
            r.bytes as f64 / (1024.0 * 1024.0)
        );
    }
}

fn report(
    opts: &Options,
    raw: RawLimits,
    build_secs: f64,
    clean: &[Restart],
    killed: &[Restart],
) -> Report {
    let ready = |rs: &[Restart]| {
        Percentiles::of(
            &rs.iter()
                .map(|r| Duration::from_secs_f64(r.ready_ms / 1e3))
                .collect::<Vec<_>>(),
        )
    };
    let slowest = |rs: &[Restart], kind: Kind| {
        rs.iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.ready_ms)
            .fold(0.0, f64::max)
    };
    let worst = clean
        .iter()
        .chain(killed)
        .map(|r| r.ready_ms)
        .fold(0.0, f64::max);
    let built = opts.blocks as f64;
    let mut extra = vec![
        (
            "build_seconds".into(),
            format!("seconds to build {} blocks", opts.blocks),
            build_secs,
        ),
        (
            "orderer_ready_ms".into(),
            "orderer ready ms, slowest, clean stop".into(),
            slowest(clean, Kind::Orderer),
        ),
        (
            "peer_ready_ms".into(),
            "peer ready ms, clean stop".into(),
            slowest(clean, Kind::Peer),
        ),
        (
            "orderer_ready_ms_after_kill".into(),
            "orderer ready ms, slowest, after kill".into(),
            slowest(killed, Kind::Orderer),
        ),
        (
            "peer_ready_ms_after_kill".into(),
            "peer ready ms, after kill".into(),
            slowest(killed, Kind::Peer),
        ),
        (
            "target_ready_ms".into(),
            "target ready ms (issue 14)".into(),
            TARGET_READY_MS,
        ),
        (
            "ready_ratio_to_target".into(),
            "slowest ready / target (≤ 1 meets it)".into(),
            worst / TARGET_READY_MS,
        ),
    ];
    for r in clean.iter().filter(|r| r.round == 0) {
        let key = r.name.replace('/', "_").to_lowercase();
        extra.push((
            format!("{key}_blocks"),
            format!("blocks on disk [{}]", r.name),
            r.blocks as f64,
        ));
        extra.push((
            format!("{key}_mib_on_disk"),
            format!("MiB on disk [{}]", r.name),
            r.bytes as f64 / (1024.0 * 1024.0),
        ));
    }
    let rows = |rs: &[Restart]| Value::Array(rs.iter().map(Restart::json).collect());
    let notes = vec![
        format!(
            "built {} blocks (one envelope each) in {build_secs:.1} s = {:.0} blocks/s through \
             3-orderer Raft and the peer's commit",
            opts.blocks,
            built / build_secs.max(1e-9)
        ),
        "ready_ms counts from the start call until /readyz answers 200 with every block held \
         before; an orderer's includes a Raft election (every orderer restarts at once)"
            .into(),
        "the peer's transactions are all invalid (random bodies): its world state is empty; \
         blocks, codes and the tx index are real"
            .into(),
    ];
    Report {
        kind: "recovery",
        tx_per_s: built / build_secs.max(1e-9),
        tx_per_s_label: "blocks/s built (setup, 1 envelope per block)".into(),
        latency_ms: ready(clean),
        latency_label: "start→ready after clean stop, all nodes,".into(),
        extra_latencies: vec![(
            "latency_after_kill_ms".into(),
            "start→ready after kill, all nodes,".into(),
            ready(killed),
        )],
        raw,
        bound_tx_per_s: 0.0,
        bound_formula: format!(
            "none for the build rate; recovery is compared with the {TARGET_READY_MS} ms \
             target: ready_ratio_to_target"
        ),
        peak_rss_mib: vec![(
            "orderers+peer+clients".into(),
            super::peak_rss_mib().unwrap_or(0.0),
        )],
        rss_note: "peak RSS of the whole process: 3 orderers, 1 peer and the clients".into(),
        extra,
        series: vec![
            ("restart_clean".into(), rows(clean)),
            ("restart_kill".into(), rows(killed)),
        ],
        config: json!({
            "blocks": opts.blocks,
            "rounds": opts.rounds,
            "orderers": 3,
            "peers": 1,
            "batch": { "message_count_max": batch().message_count_max },
            "broadcast_streams": 3 * opts.streams_per_node,
            "in_flight_per_stream": opts.in_flight_per_stream,
            "cores": raw.cores,
            "target_ready_ms": TARGET_READY_MS,
        }),
        notes,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
