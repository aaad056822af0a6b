//! `devnet`: the local development network, in one command.
//!
//! `cargo run --release --bin devnet` generates material for 3 orderers and 2 orgs × 2 peers
//! (or reuses it), starts every node as a process, runs a token-transfer workload through the
//! SDK with a progress bar, prints a summary (throughput, submit→commit latency, every node's
//! height and last block hash, whether the peers agree on the state hash, where the logs are),
//! then keeps the network running until Ctrl-C (or `--duration`).

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::launcher;
use chaos_tests::launcher::Kind;
use chaos_tests::launcher::NodeProcess;
use clap::Parser;
use clap::Subcommand;
use peer::sdk::Gateway;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::pb::tx::TxValidationCode;

const NETWORK: &str = "devnet";
const CHANNEL: &str = "mychannel";

#[derive(Debug, Parser)]
#[command(
    name = "devnet",
    version,
    about = "Local development network: generate, run, drive a workload"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunOptions,
}

#[derive(Debug, clap::Args)]
struct RunOptions {
    /// Where material, ledgers and logs live. Reused by the next run unless --clean.
    #[arg(long, default_value = "devnet-data")]
    data_dir: PathBuf,
    /// Delete the data dir first (a fresh network and an empty chain).
    #[arg(long)]
    clean: bool,
    /// Exit after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// How long the workload runs.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    workload_seconds: u64,
    /// Concurrent clients submitting transfers.
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// Target transactions per second (0: as fast as the clients go).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Orderer nodes.
    #[arg(long, default_value_t = 3)]
    orderers: usize,
    /// Application orgs.
    #[arg(long, default_value_t = 2)]
    orgs: usize,
    /// Peers per org.
    #[arg(long, default_value_t = 2)]
    peers_per_org: usize,
    /// Of each org's peers, how many may connect to the orderers (the elected leader pulls);
    /// the rest are gossip-only.
    #[arg(long, default_value_t = 1)]
    connected_peers_per_org: usize,
    /// Block cutting: envelopes per block.
    #[arg(long, default_value_t = 500)]
    batch_size: u32,
    /// Block cutting: timeout in milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_timeout_ms: u64,
    /// First port; nodes use consecutive ports from here.
    #[arg(long, default_value_t = 7050)]
    base_port: u16,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a network's material (keys, certificates, TLS, node configs, genesis blocks).
    Generate {
        /// The network spec (TOML); see deploy/sample-network.toml.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "deploy/sample-network.toml"
        )]
        spec: PathBuf,
        /// Output directory; must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run one node in this process (used by the dev network to start its nodes).
    #[command(hide = true)]
    Node {
        kind: String,
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Generate { spec, out }) => generate(&spec, &out),
        Some(Command::Node { kind, config }) => run_node(&kind, &config),
        None => tokio::runtime::Runtime::new()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(devnet(cli.run))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn generate(spec_path: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading spec {}", spec_path.display()))?;
    let spec =
        NetworkSpec::from_toml(&text).with_context(|| format!("spec {}", spec_path.display()))?;
    let generated = material::generate(&spec, out, now_unix())?;
    println!("network {:?} written to {}", spec.name, out.display());
    for node in generated.orderers.iter().chain(&generated.peers) {
        println!(
            "  {:<10} {:<8} {}",
            node.msp_id,
            node.name,
            node.config.display()
        );
    }
    for user in &generated.users {
        println!(
            "  {:<10} {:<8} {} ({})",
            user.msp_id,
            user.name,
            user.cert.display(),
            user.role
        );
    }
    for (id, path) in &generated.channels {
        println!("  channel {id}: {}", path.display());
    }
    Ok(())
}

/// Runs an orderer or a peer in this process until SIGTERM.
fn run_node(kind: &str, config: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match kind {
        "orderer" => {
            let cfg = shared_proto::node_config::OrdererConfig::load(config)?;
            cfg.validate()?;
            init_tracing(&cfg.log.level);
            rt.block_on(async {
                let listeners = orderer::Listeners::bind(&cfg).await?;
                orderer::run(cfg, listeners, terminate()).await?;
                anyhow::Ok(())
            })
        }
        "peer" => {
            let cfg = shared_proto::node_config::PeerConfig::load(config)?;
            cfg.validate()?;
            init_tracing(&cfg.log.level);
            let chaincodes = peer::chaincode::ChaincodeRegistry::with_samples();
            rt.block_on(async {
                let listeners = peer::Listeners::bind(&cfg).await?;
                peer::run(cfg, listeners, chaincodes, terminate()).await?;
                anyhow::Ok(())
            })
        }
        other => anyhow::bail!("unknown node kind {other:?}; expected orderer or peer"),
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .init();
}

async fn terminate() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The dev network's spec: ports consecutive from `base_port`.
fn spec(o: &RunOptions) -> anyhow::Result<NetworkSpec> {
    let mut port = o.base_port;
    let mut next = || {
        let p = port;
        port = port.checked_add(1).unwrap_or(port);
        p
    };
    let mut text = format!("name = \"{NETWORK}\"\n[[orderer_orgs]]\nmsp_id = \"OrdererMSP\"\n");
    for i in 1..=o.orderers {
        text += &format!(
            "[[orderer_orgs.orderers]]\nname = \"orderer{i}\"\nport = {}\ncluster_port = {}\nops_port = {}\n",
            next(),
            next(),
            next()
        );
    }
    let mut orgs = Vec::new();
    for org in 1..=o.orgs {
        orgs.push(format!("'Org{org}MSP.peer'"));
        text += &format!("[[peer_orgs]]\nmsp_id = \"Org{org}MSP\"\nusers = [\"User1\"]\n");
        for p in 0..o.peers_per_org {
            text += &format!(
                "[[peer_orgs.peers]]\nname = \"peer{p}\"\nport = {}\ngossip_port = {}\nops_port = {}\norderer_connected = {}\n",
                next(),
                next(),
                next(),
                p < o.connected_peers_per_org
            );
        }
    }
    text += &format!(
        "[[channels]]\nid = \"{CHANNEL}\"\n[channels.batch]\nmessage_count_max = {}\ntimeout_ms = {}\n\
         [[channels.chaincodes]]\nname = \"token\"\nendorsement_policy = \"AND({})\"\n\
         [[channels.chaincodes]]\nname = \"kv\"\n",
        o.batch_size,
        o.batch_timeout_ms,
        orgs.join(", ")
    );
    Ok(NetworkSpec::from_toml(&text)?)
}

/// Material in the data dir: reused when it belongs to the dev network, generated otherwise.
fn material(o: &RunOptions) -> anyhow::Result<Generated> {
    let net_dir = o.data_dir.join("net");
    if o.clean && o.data_dir.exists() {
        std::fs::remove_dir_all(&o.data_dir)
            .with_context(|| format!("cleaning {}", o.data_dir.display()))?;
    }
    if net_dir.join("network.toml").is_file() {
        let g = Generated::load(&net_dir).context("reading the existing network")?;
        anyhow::ensure!(
            g.spec.name == NETWORK,
            "{} holds network {:?}, not a dev network; pass --clean to replace it or choose another --data-dir",
            o.data_dir.display(),
            g.spec.name
        );
        println!(
            "reusing the network in {} (pass --clean for a fresh one)",
            o.data_dir.display()
        );
        return Ok(g);
    }
    if o.data_dir.exists() && std::fs::read_dir(&o.data_dir)?.next().is_some() {
        anyhow::bail!(
            "{} exists and is not a dev network's data dir; pass --clean or choose another --data-dir",
            o.data_dir.display()
        );
    }
    Ok(material::generate(&spec(o)?, &net_dir, now_unix())?)
}

struct NodeView {
    name: String,
    ops: String,
    kind: Kind,
}

fn nodes(g: &Generated) -> Vec<(NodeView, PathBuf, Vec<u16>)> {
    let mut out = Vec::new();
    for (n, s) in g
        .orderers
        .iter()
        .zip(g.spec.orderer_orgs.iter().flat_map(|o| &o.orderers))
    {
        let view = NodeView {
            name: n.name.clone(),
            ops: format!("{}:{}", s.host, s.ops_port),
            kind: Kind::Orderer,
        };
        out.push((
            view,
            n.config.clone(),
            vec![s.port, s.cluster_port, s.ops_port],
        ));
    }
    let peers = g
        .spec
        .peer_orgs
        .iter()
        .flat_map(|o| o.peers.iter().map(move |p| (o, p)));
    for (n, (o, s)) in g.peers.iter().zip(peers) {
        let view = NodeView {
            name: format!("{}/{}", o.msp_id, n.name),
            ops: format!("{}:{}", s.host, s.ops_port),
            kind: Kind::Peer,
        };
        out.push((
            view,
            n.config.clone(),
            vec![s.port, s.ops_port, s.gossip_port],
        ));
    }
    out
}

async fn devnet(o: RunOptions) -> anyhow::Result<()> {
    let generated = material(&o)?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let layout = nodes(&generated);
    for (view, _, ports) in &layout {
        for port in ports {
            std::net::TcpListener::bind(("127.0.0.1", *port)).with_context(|| {
                format!(
                    "port {port} of {} is taken; stop what uses it or pass --base-port",
                    view.name
                )
            })?;
        }
    }
    let logs = o.data_dir.join("logs");
    let mut procs = Vec::new();
    for (view, config, _) in &layout {
        let log = logs.join(format!("{}.log", view.name.replace('/', "-")));
        procs.push(NodeProcess::spawn(
            &exe, view.kind, &view.name, config, &log,
        )?);
    }
    println!("started {} nodes; logs in {}", procs.len(), logs.display());
    wait_ready(&layout, &mut procs).await?;
    let report = workload(&generated, &o, &layout).await?;
    summary(&layout, &report, &o).await?;
    println!("\nendpoints:");
    for (view, _, ports) in &layout {
        println!(
            "  {:<16} service 127.0.0.1:{:<5} ops http://{}/status",
            view.name, ports[0], view.ops
        );
    }
    match o.duration {
        Some(secs) => {
            println!("\nrunning for {secs} s (--duration)...");
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
        None => {
            println!("\nrunning; Ctrl-C stops every node.");
            tokio::signal::ctrl_c().await?;
        }
    }
    println!("stopping...");
    for p in &mut procs {
        p.stop(Duration::from_secs(10));
    }
    Ok(())
}

async fn wait_ready(
    layout: &[(NodeView, PathBuf, Vec<u16>)],
    procs: &mut [NodeProcess],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                anyhow::bail!("{} exited ({status}); see {}", p.name, p.log.display());
            }
        }
        let mut ready = 0;
        for (view, _, _) in layout {
            if let Ok((200, _)) = launcher::http_get(&view.ops, "/readyz").await {
                ready += 1;
            }
        }
        if ready == layout.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {} nodes became ready",
            layout.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, Default)]
struct Report {
    committed: u64,
    invalid: u64,
    failed: u64,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

async fn workload(
    g: &Generated,
    o: &RunOptions,
    layout: &[(NodeView, PathBuf, Vec<u16>)],
) -> anyhow::Result<Report> {
    let gw = Arc::new(Gateway::from_network(g, "Org1MSP", "User1", CHANNEL)?);
    let accounts = (o.clients * 16).max(2);
    println!("minting {accounts} accounts...");
    // Mint from every client at once; each account is minted by exactly one client.
    let mut minters = Vec::new();
    for c in 0..o.clients {
        let gw = gw.clone();
        let clients = o.clients;
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
    let bar = indicatif::ProgressBar::new(o.workload_seconds);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let committed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(o.workload_seconds);
    let per_client_interval =
        (o.rate > 0).then(|| Duration::from_secs_f64(o.clients as f64 / o.rate as f64));
    let mut tasks = Vec::new();
    let clients = o.clients;
    for c in 0..o.clients {
        let (gw, committed) = (gw.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Report::default();
            // Each client moves tokens around its own accounts (c, c + clients, ...), one
            // transfer at a time, so clients never contend for a key (no MVCC conflicts by
            // construction; contention is what the chaos workloads are for).
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
                match gw
                    .submit(
                        "token",
                        "transfer",
                        &[from.into_bytes(), to.into_bytes(), b"1".to_vec()],
                    )
                    .await
                {
                    Ok(s) if s.code == TxValidationCode::Valid => {
                        r.committed += 1;
                        committed.fetch_add(1, Ordering::Relaxed);
                        r.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(_) => r.invalid += 1,
                    Err(_) => r.failed += 1,
                }
                if let Some(iv) = per_client_interval {
                    tokio::time::sleep(iv.saturating_sub(t0.elapsed())).await;
                }
            }
            r
        }));
    }
    let peers: Vec<&NodeView> = layout
        .iter()
        .map(|(v, _, _)| v)
        .filter(|v| v.kind == Kind::Peer)
        .collect();
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
        bar.set_position(start.elapsed().as_secs().min(o.workload_seconds));
        bar.set_message(format!(
            "{n} committed, {:.0} tx/s, peer heights {}",
            n as f64 / secs,
            heights.join("/")
        ));
    }
    bar.finish();
    let mut report = Report::default();
    for t in tasks {
        let r = t.await?;
        report.committed += r.committed;
        report.invalid += r.invalid;
        report.failed += r.failed;
        report.latencies_ms.extend(r.latencies_ms);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

async fn height_of(ops: &str) -> Option<u64> {
    launcher::status(ops).await.ok()?["channels"][CHANNEL]["height"].as_u64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn summary(
    layout: &[(NodeView, PathBuf, Vec<u16>)],
    r: &Report,
    o: &RunOptions,
) -> anyhow::Result<()> {
    // Let every node reach the same height before comparing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut statuses;
    loop {
        statuses = Vec::new();
        for (view, _, _) in layout {
            statuses.push(launcher::status(&view.ops).await.unwrap_or_default());
        }
        let heights: Vec<u64> = statuses
            .iter()
            .map(|s| s["channels"][CHANNEL]["height"].as_u64().unwrap_or(0))
            .collect();
        if heights.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut lat = r.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let secs = r.elapsed.as_secs_f64().max(0.001);
    println!("\n== summary ==========================================================");
    println!("committed (VALID)        {}", r.committed);
    println!("invalid (e.g. MVCC)      {}", r.invalid);
    println!("failed submits           {}", r.failed);
    println!(
        "throughput               {:.0} tx/s over {:.1} s",
        r.committed as f64 / secs,
        secs
    );
    println!(
        "submit->commit latency   p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "\n{:<16} {:<12} {:>8}  {:<18} {:<18}",
        "node", "role", "height", "last block hash", "state hash"
    );
    let mut state_hashes = Vec::new();
    for ((view, _, _), s) in layout.iter().zip(&statuses) {
        let ch = &s["channels"][CHANNEL];
        let short = |k: &str| {
            ch[k]
                .as_str()
                .map(|h| h.chars().take(16).collect::<String>())
                .unwrap_or_default()
        };
        let role = match view.kind {
            Kind::Orderer => "orderer",
            Kind::Peer if ch["gossip"]["leader"].as_bool() == Some(true) => "peer, leader",
            Kind::Peer => "peer, gossip",
        };
        if view.kind == Kind::Peer {
            state_hashes.push(ch["state_hash"].as_str().unwrap_or_default().to_owned());
        }
        println!(
            "{:<16} {:<12} {:>8}  {:<18} {:<18}",
            view.name,
            role,
            ch["height"].as_u64().unwrap_or(0),
            short("last_block_hash"),
            short("state_hash")
        );
    }
    let agree = !state_hashes.is_empty() && state_hashes.windows(2).all(|w| w[0] == w[1]);
    println!(
        "\nall peers agree on the state hash: {}",
        if agree { "yes" } else { "NO" }
    );
    println!("data and logs: {}", o.data_dir.display());
    Ok(())
}
