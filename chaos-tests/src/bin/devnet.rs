//! `devnet`: the local development network, in one command.
//!
//! `cargo run --release --bin devnet` generates material for 3 orderers and 2 orgs × 2 peers
//! (or reuses it), starts every node as a process, runs a token-transfer workload through the
//! SDK with a progress bar, prints a summary (throughput, submit→commit latency, every node's
//! height and last block hash, whether the peers agree on the state hash, where the logs are),
//! then keeps the network running until Ctrl-C (or `--duration`).
//!
//! While it runs, `devnet --data-dir DIR add-orderer|add-peer|add-org|create-channel` change it
//! ([`chaos_tests::devnet`]); the nodes they start are stopped with the network.
//!
//! For a network something else runs (deploy/compose, Kubernetes): `devnet extend` and
//! `devnet renew-tls` change only the material; `devnet load` and `devnet verify` drive a
//! recording workload and check that no acknowledged transaction was lost.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chaos_tests::bench::Percentiles;
use chaos_tests::devnet as verbs;
use chaos_tests::devnet::DataDir;
use chaos_tests::launcher;
use chaos_tests::launcher::Kind;
use chaos_tests::launcher::NodeProcess;
use chaos_tests::node_main;
use chaos_tests::topology::nodes;
use chaos_tests::topology::NodeView;
use chaos_tests::topology::Topology;
use chaos_tests::topology::CHANNEL;
use chaos_tests::workload;
use clap::Parser;
use clap::Subcommand;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;

/// Every node process allocates with mimalloc, which returns freed memory to the OS: with
/// glibc's malloc a node's RSS crept for minutes while its live heap stayed flat
/// (docs/performance.md, "Node memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NETWORK: &str = "devnet";

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
    /// Where material, ledgers and logs live. Reused by the next run unless --clean; the
    /// verbs act on the network running here.
    #[arg(long, default_value = "devnet-data", global = true)]
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
    /// Add an orderer of the orderer org to the running network and start it; it follows every
    /// channel until `orderer admin ... consenter add` makes it a consenter (printed).
    AddOrderer {
        #[arg(long)]
        name: String,
    },
    /// Add a peer to an org of the running network and start it; it catches up from its org's
    /// peers and the orderers.
    AddPeer {
        /// The org's MSP id, e.g. Org1MSP.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
    },
    /// Add an application org (CAs, Admin, User1, peer0) to the running network: a config
    /// update adds it to every channel, then its peer starts and catches up.
    AddOrg {
        /// The new org's MSP id, e.g. Org3MSP.
        #[arg(long)]
        name: String,
    },
    /// Create a channel on the running network (orgs, consenters and batch settings of the
    /// first channel) and join every orderer to it.
    CreateChannel {
        #[arg(long)]
        id: String,
    },
    /// Add an orderer to a generated network's material only (nothing is started): its
    /// identity, TLS pair and orderer.toml from the org's CAs. Start it, then make it a
    /// consenter with `orderer admin consenter add`.
    Extend {
        /// The directory `devnet generate` wrote.
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        /// The new orderer's name.
        #[arg(long, value_name = "NAME")]
        add_orderer: String,
        /// The host others reach it by (service or DNS name, or IP): its certificate's SAN and
        /// consenter address.
        #[arg(long)]
        host: String,
        /// Orderer org (default: the first).
        #[arg(long, value_name = "MSP")]
        org: Option<String>,
        #[arg(long, default_value_t = 7050)]
        port: u16,
        #[arg(long, default_value_t = 7150)]
        cluster_port: u16,
        #[arg(long, default_value_t = 8450)]
        ops_port: u16,
        /// Raft node id (default: one more than the highest).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Renew one node's TLS certificate and key from its org's TLS CA (the previous pair is
    /// kept as *.prev). For an orderer, then `orderer admin consenter replace` and a restart.
    RenewTls {
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        /// An orderer's name (orderer2) or MSP/NAME (Org1MSP/peer0).
        #[arg(long)]
        node: String,
    },
    /// Run the chaos workload against a generated network, recording every acked tx id;
    /// paused and stopped through files in --dir (pause, stop; it writes state, acked,
    /// summary).
    Load {
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        /// Work directory (control files and results).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// SDK clients (kv puts, each waited on until committed).
        #[arg(long, default_value_t = 2)]
        clients: usize,
        /// Total SDK transactions per second.
        #[arg(long, default_value_t = 6.0)]
        rate: f64,
        /// Raw Broadcast envelopes per second (0: none).
        #[arg(long, default_value_t = 2.0)]
        raw_rate: f64,
        /// Stop by itself after this long.
        #[arg(long, default_value_t = 1800, value_name = "SECS")]
        max_seconds: u64,
    },
    /// Check that every tx id in an `acked` file (devnet load) is in the chain of the given
    /// orderers and of every peer, and that they agree (heights, hashes, codes, config).
    Verify {
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        /// An acked file (repeat for more).
        #[arg(long, value_name = "FILE", required = true)]
        acked: Vec<PathBuf>,
        /// The orderers serving the channel now, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        orderers: Vec<String>,
        /// Give up after this long.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        timeout: u64,
    },
    /// Send signed envelopes straight to one orderer until it acks each (a follower forwards
    /// them to the leader with its own certificate); append the acked tx ids to --out.
    Broadcast {
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        /// The orderer, by name.
        #[arg(long)]
        orderer: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
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
    let data = DataDir::new(&cli.run.data_dir);
    let result = match cli.command {
        Some(Command::Generate { spec, out }) => generate(&spec, &out),
        Some(Command::Node { kind, config }) => node_main::run_node(&kind, &config),
        Some(Command::AddOrderer { name }) => block_on(verbs::add_orderer(&data, &name)),
        Some(Command::AddPeer { org, name }) => block_on(verbs::add_peer(&data, &org, &name)),
        Some(Command::AddOrg { name }) => block_on(verbs::add_org(&data, &name)),
        Some(Command::CreateChannel { id }) => block_on(verbs::create_channel(&data, &id)),
        Some(Command::Extend {
            network,
            add_orderer,
            host,
            org,
            port,
            cluster_port,
            ops_port,
            id,
        }) => verbs::extend::extend_orderer(
            &network,
            verbs::extend::NewOrderer {
                name: add_orderer,
                host,
                org,
                port,
                cluster_port,
                ops_port,
                id,
            },
        ),
        Some(Command::RenewTls { network, node }) => verbs::extend::renew_tls(&network, &node),
        Some(Command::Load {
            network,
            dir,
            clients,
            rate,
            raw_rate,
            max_seconds,
        }) => block_on(verbs::load::run(verbs::load::LoadOptions {
            network,
            dir,
            load: chaos_tests::run::load::Load {
                sdk_clients: clients,
                sdk_rate: rate,
                raw_rate,
            },
            max_seconds,
        })),
        Some(Command::Broadcast {
            network,
            orderer,
            count,
            timeout,
            out,
        }) => block_on(verbs::broadcast::run(verbs::broadcast::BroadcastOptions {
            network,
            orderer,
            count,
            timeout: Duration::from_secs(timeout),
            out,
        })),
        Some(Command::Verify {
            network,
            acked,
            orderers,
            timeout,
        }) => block_on(verbs::verify::run(verbs::verify::VerifyOptions {
            network,
            acked,
            orderers,
            timeout: Duration::from_secs(timeout),
        })),
        None => block_on(devnet(cli.run)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(f)
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

/// The dev network's topology from the options.
fn topology(o: &RunOptions) -> Topology {
    Topology {
        name: NETWORK.into(),
        orderers: o.orderers,
        orgs: o.orgs,
        peers_per_org: o.peers_per_org,
        connected_peers_per_org: o.connected_peers_per_org,
        batch_size: o.batch_size,
        batch_timeout_ms: o.batch_timeout_ms,
        base_port: o.base_port,
    }
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
    Ok(material::generate(
        &topology(o).spec()?,
        &net_dir,
        now_unix(),
    )?)
}

async fn devnet(o: RunOptions) -> anyhow::Result<()> {
    let generated = material(&o)?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let layout = nodes(&generated);
    for view in &layout {
        for port in &view.ports {
            std::net::TcpListener::bind(("127.0.0.1", *port)).with_context(|| {
                format!(
                    "port {port} of {} is taken; stop what uses it or pass --base-port",
                    view.name
                )
            })?;
        }
    }
    let data = DataDir::new(&o.data_dir);
    verbs::clear_stale(&data);
    let logs = o.data_dir.join("logs");
    let mut procs = Vec::new();
    for view in &layout {
        let log = logs.join(format!("{}.log", view.name.replace('/', "-")));
        procs.push(NodeProcess::spawn(
            &exe,
            view.kind,
            &view.name,
            &view.config,
            &log,
        )?);
    }
    println!("started {} nodes; logs in {}", procs.len(), logs.display());
    launcher::wait_ready(&layout, &mut procs, Duration::from_secs(60)).await?;
    let report = workload::run(
        &generated,
        &layout,
        &workload::Options {
            clients: o.clients,
            seconds: o.workload_seconds,
            rate: o.rate,
            progress: true,
        },
    )
    .await?;
    summary(&layout, &report, &o).await?;
    println!("\nendpoints:");
    for view in &layout {
        println!(
            "  {:<16} service 127.0.0.1:{:<5} ops http://{}/status",
            view.name, view.ports[0], view.ops
        );
    }
    match o.duration {
        // Ctrl-C or SIGTERM stops the nodes in either case (the default action would leave
        // every node process running).
        Some(secs) => {
            println!("\nrunning for {secs} s (--duration)...");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                () = shared_proto::process::terminate() => {}
            }
        }
        None => {
            println!("\nrunning; Ctrl-C stops every node.");
            shared_proto::process::terminate().await;
        }
    }
    println!("stopping...");
    let added = verbs::stop_recorded(&data, Duration::from_secs(10));
    if added > 0 {
        println!("stopped {added} node(s) the verbs started");
    }
    for p in &mut procs {
        p.stop(Duration::from_secs(10));
    }
    Ok(())
}

async fn summary(layout: &[NodeView], r: &workload::Outcome, o: &RunOptions) -> anyhow::Result<()> {
    // Let every node reach the same height before comparing.
    let (_, statuses) = workload::converge(layout, Duration::from_secs(30)).await;
    let lat = Percentiles::of(&r.latencies);
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
        lat.p50, lat.p99
    );
    println!(
        "\n{:<16} {:<12} {:>8}  {:<18} {:<18}",
        "node", "role", "height", "last block hash", "state hash"
    );
    let mut state_hashes = Vec::new();
    for (view, s) in layout.iter().zip(&statuses) {
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
