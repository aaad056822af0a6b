//! `bench`: benchmarks of the real components, with the box's raw limits measured in the same
//! run. See `chaos_tests::bench` for what each kind measures and how.
//!
//! ```sh
//! cargo run --release -p chaos-tests --bin bench -- validation --out validation.json
//! cargo run --release -p chaos-tests --bin bench -- ordering --out ordering.json --seconds 5
//! cargo run --release -p chaos-tests --bin bench -- e2e --out e2e.json --seconds 20
//! cargo run --release -p chaos-tests --bin bench -- recovery --out recovery.json --blocks 100000
//! cargo run --release -p chaos-tests --bin bench -- plot --out chart.svg ordering.json e2e.json
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use chaos_tests::bench;
use chaos_tests::bench::RawLimits;
use clap::Parser;
use clap::ValueEnum;

/// Every node process allocates with mimalloc, which returns freed memory to the OS: with
/// glibc's malloc a node's RSS crept for minutes while its live heap stayed flat
/// (docs/performance.md, "Node memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks a Weft component and compares the result with the box's raw limits (Ed25519
/// verify and batch-verify rates per core, fsync rate), measured in the same run. Prints a
/// table and writes a JSON report. Build with --release: debug numbers mean nothing.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// What to benchmark: `validation` (one peer's verify → validate → commit path over
    /// pre-built blocks of endorsed transactions), `ordering` (3 in-process orderers under
    /// Broadcast load, Deliver latency at full and half rate) or `e2e` (the dev network's
    /// topology as processes, SDK clients, committed at every peer, RSS per node) or
    /// `recovery` (3 in-process orderers and a peer build `--blocks` blocks, are stopped or
    /// killed, and restarted: time until each is ready). `plot`
    /// draws a throughput/latency SVG from the JSON reports given as INPUTS.
    kind: Kind,
    /// Where to write the JSON report (the SVG for `plot`).
    #[arg(long)]
    out: PathBuf,
    /// plot: the JSON reports to draw.
    inputs: Vec<PathBuf>,
    /// plot: the chart's title.
    #[arg(long, default_value = "Weft: throughput vs latency")]
    title: String,
    /// e2e: concurrent SDK clients.
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// e2e: total offered tx/s (0: closed loop, as fast as the clients go).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Length of each timed phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// validation: transactions per block.
    #[arg(long, default_value_t = 500)]
    block_size: usize,
    /// ordering: envelopes outstanding at once in the full-rate (closed-loop) phase; without
    /// it a sweep of short steps (64, 128, 256, … in flight) finds the peak and uses that.
    #[arg(long)]
    in_flight: Option<usize>,
    /// ordering: the 3 orderers as processes of their own (`bench node orderer`), as they are
    /// deployed, instead of in this process.
    #[arg(long)]
    processes: bool,
    /// ordering: Broadcast streams per orderer (answers on a stream come in order).
    #[arg(long, default_value_t = 2)]
    streams_per_node: usize,
    /// ordering: size of each envelope's body, bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// ordering, e2e: the channel's batch timeout in ms (the sample network's is 100), to see
    /// what it changes.
    #[arg(long, default_value_t = 100)]
    batch_timeout_ms: u64,
    /// recovery: chain height to build before the restarts.
    #[arg(long, default_value_t = 100_000)]
    blocks: u64,
    /// recovery: restart rounds (each a clean stop, then a kill); the slowest is reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Directory under which the temporary data directory is created (default: the system
    /// temp dir). The fsync rate is measured there, so put it on the disk you care about.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep the temporary data directory (node logs, ledgers) instead of deleting it; its path
    /// is printed. For reading the nodes' logs of a run, e.g. with `RUST_LOG` set.
    #[arg(long)]
    keep_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Validation,
    Ordering,
    E2e,
    Recovery,
    Plot,
}

fn main() -> anyhow::Result<()> {
    // `bench node <kind> --config FILE`: a node process of the e2e benchmark.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("node") && argv.len() == 5 && argv[3] == "--config" {
        return chaos_tests::node_main::run_node(&argv[2], std::path::Path::new(&argv[4]));
    }
    let args = Args::parse();
    if args.kind == Kind::Plot {
        bench::plot::plot(&args.inputs, &args.out, &args.title)?;
        println!("chart written to {}", args.out.display());
        return Ok(());
    }
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be a positive number"
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    if cfg!(debug_assertions) {
        eprintln!("bench: WARNING: debug build; use --release for meaningful numbers");
    }
    let dir = match &args.data_root {
        Some(root) => tempfile::Builder::new()
            .prefix("weft-bench-")
            .tempdir_in(root),
        None => tempfile::Builder::new().prefix("weft-bench-").tempdir(),
    }
    .context("creating the bench's temp dir")?;
    eprintln!("bench: measuring raw limits in {}", dir.path().display());
    let raw = RawLimits::measure(&dir.path().join("raw")).context("measuring raw limits")?;
    let report = match args.kind {
        Kind::Validation => bench::validation::run(
            &bench::validation::Options {
                seconds: args.seconds,
                block_size: args.block_size,
            },
            raw,
            dir.path(),
        )
        .context("validation benchmark")?,
        Kind::Ordering => bench::ordering::run(
            &bench::ordering::Options {
                seconds: args.seconds,
                in_flight: args.in_flight,
                streams_per_node: args.streams_per_node,
                body_bytes: args.body_bytes,
                batch_timeout_ms: args.batch_timeout_ms,
                processes: if args.processes {
                    Some(std::env::current_exe().context("locating this executable")?)
                } else {
                    None
                },
            },
            raw,
            dir.path(),
        )
        .context("ordering benchmark")?,
        Kind::E2e => {
            let exe = std::env::current_exe().context("locating this executable")?;
            tokio::runtime::Runtime::new()?
                .block_on(bench::e2e::run(
                    &bench::e2e::Options {
                        seconds: args.seconds,
                        clients: args.clients,
                        rate: args.rate,
                        batch_timeout_ms: args.batch_timeout_ms,
                    },
                    raw,
                    dir.path(),
                    &exe,
                ))
                .context("e2e benchmark")?
        }
        Kind::Recovery => bench::recovery::run(
            &bench::recovery::Options {
                blocks: args.blocks,
                streams_per_node: args.streams_per_node.max(8),
                in_flight_per_stream: 64,
                rounds: args.rounds,
            },
            raw,
            dir.path(),
        )
        .context("recovery benchmark")?,
        Kind::Plot => anyhow::bail!("plot is handled before the benchmarks"),
    };
    if args.keep_data {
        eprintln!("bench: data kept in {}", dir.keep().display());
    }
    report.emit(&args.out)
}
