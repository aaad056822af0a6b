//! `chaos`: runs real clusters under faults and checks the invariants (docs/chaos.md).
//!
//! ```text
//! chaos list
//! chaos run --scenario NAME --seed N --duration SECS --out DIR [--backend docker]
//! chaos suite --seeds K --duration SECS --out DIR [--scenarios a,b,...] [--backend docker]
//! chaos mutants --out DIR [--seed N] [--duration SECS] [--only a,b]   (build with --features mutants)
//! chaos node orderer|peer --config FILE      (how the harness starts each node)
//! ```
//!
//! Same seed, same fault schedule. A failed run prints the command that reruns it; `run` and
//! `suite` exit 1 when any check failed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::node_main;
use chaos_tests::report::write_suite;
use chaos_tests::report::RunReport;
use chaos_tests::run;
use chaos_tests::run::RunOptions;
use chaos_tests::scenario;
use clap::Parser;
use clap::Subcommand;

/// Every node process allocates with mimalloc, which returns freed memory to the OS: with
/// glibc's malloc a node's RSS crept for minutes while its live heap stayed flat
/// (docs/performance.md, "Node memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "chaos", about = "Fault-injection runs of real Weft clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the nodes run.
#[derive(Debug, Clone, clap::Args)]
struct BackendArgs {
    /// `process` (child processes of this harness) or `docker` (containers of --image on a
    /// Docker network; skipped with a message when no engine answers).
    #[arg(long, default_value = "process", value_parser = ["process", "docker"])]
    backend: String,
    /// The image the docker backend runs (deploy/build-image.sh builds it).
    #[arg(long, default_value = "weft:dev")]
    image: String,
}

impl BackendArgs {
    fn backend(&self) -> chaos_tests::harness::Backend {
        match self.backend.as_str() {
            "docker" => chaos_tests::harness::Backend::Docker {
                image: self.image.clone(),
            },
            _ => chaos_tests::harness::Backend::Process,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario, with what it does.
    List,
    /// One scenario with one seed.
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds of workload (faults within the first 70%).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value = "chaos-out")]
        out: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Every scenario (or those named) with seeds 1..=K; summary.json and index.html in OUT.
    Suite {
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value = "chaos-out")]
        out: PathBuf,
        /// Comma-separated scenario names (default: all this build can run).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Each planted bug (a build with `--features mutants`) against the scenarios that should
    /// catch it; OUT/mutants.json says which caught it and after how long.
    Mutants {
        #[arg(long, default_value = "chaos-mutants")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Comma-separated mutant names (default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run one node in this process (how the harness starts its nodes).
    Node {
        /// orderer or peer
        kind: String,
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node { kind, config } => node_main::run_node(&kind, &config).map(|()| true),
        Command::List => {
            list();
            Ok(true)
        }
        Command::Run {
            scenario,
            seed,
            duration,
            out,
            backend,
        } => block_on(async move {
            let s = scenario::find(&scenario).with_context(|| {
                format!("no scenario {scenario:?}; `chaos list` names them all")
            })?;
            let backend = backend.backend();
            check_buildable(&s, &backend)?;
            if let Some(why) = s.unavailable_on(&backend) {
                println!("skipped {}: {why}", s.name);
                return Ok(true);
            }
            let o = options(s, seed, duration, out, backend)?;
            let r = run_one(&o, 1, 1).await?;
            Ok(r.passed)
        }),
        Command::Suite {
            seeds,
            duration,
            out,
            scenarios,
            backend,
        } => block_on(suite(seeds, duration, out, scenarios, backend.backend())),
        Command::Mutants {
            out,
            seed,
            duration,
            only,
        } => mutants(out, seed, duration, &only),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

fn list() {
    for s in scenario::all() {
        let mut needs = Vec::new();
        if s.shape.proxied {
            needs.push("proxies");
        }
        if s.shape.failpoints {
            needs.push("--features failpoints");
        }
        let needs = if needs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", needs.join(", "))
        };
        println!("{:<26} {}{needs}", s.name, s.about);
    }
}

/// A crash-point scenario needs nodes built with failpoints (on the process backend: the
/// docker backend skips it).
fn check_buildable(
    s: &scenario::Scenario,
    backend: &chaos_tests::harness::Backend,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !s.shape.failpoints
            || cfg!(feature = "failpoints")
            || *backend != chaos_tests::harness::Backend::Process,
        "scenario {} needs a build with failpoints: cargo run --release -p chaos-tests \
         --features failpoints --bin chaos -- ...",
        s.name
    );
    Ok(())
}

fn options(
    s: scenario::Scenario,
    seed: u64,
    duration: f64,
    dir: PathBuf,
    backend: chaos_tests::harness::Backend,
) -> anyhow::Result<RunOptions> {
    anyhow::ensure!(
        duration.is_finite() && duration >= 10.0,
        "--duration must be at least 10 seconds, got {duration}"
    );
    Ok(RunOptions {
        scenario: s,
        seed,
        duration_s: duration,
        dir,
        exe: node_exe()?,
        load: run::load::Load::default(),
        // Set by `chaos mutants` for its child runs; the nodes read it themselves.
        mutant: std::env::var(shared_proto::mutants::ENV)
            .ok()
            .filter(|m| !m.is_empty()),
        backend,
    })
}

fn mutants(out: PathBuf, seed: u64, duration: f64, only: &[String]) -> anyhow::Result<bool> {
    let only = only
        .iter()
        .map(|n| {
            shared_proto::mutants::Mutant::from_name(n)
                .ok_or_else(|| shared_proto::mutants::UnknownMutant(n.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = chaos_tests::mutants::run_all(&chaos_tests::mutants::MutantsOptions {
        exe: std::env::current_exe().context("finding this executable")?,
        out: out.clone(),
        seed,
        duration_s: duration,
        only,
    })?;
    let caught = report.mutants.iter().filter(|m| m.caught).count();
    println!(
        "mutants: {caught} of {} caught; {}",
        report.mutants.len(),
        out.join(chaos_tests::report::MUTANTS_JSON).display()
    );
    Ok(caught == report.mutants.len())
}

/// The executable the nodes run: this very image (`/proc/self/exe` still runs it when a
/// rebuild replaced the file on disk during a long suite).
fn node_exe() -> anyhow::Result<PathBuf> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe().context("finding this executable")
}

/// Runs one, printing a line before and the outcome after.
async fn run_one(o: &RunOptions, index: usize, total: usize) -> anyhow::Result<RunReport> {
    println!(
        "[{index}/{total}] {} seed {} ({} s of load) in {}",
        o.scenario.name,
        o.seed,
        o.duration_s,
        o.dir.display()
    );
    let started = Instant::now();
    let r = run::run(o).await?;
    let failed = r.failed_checks();
    println!(
        "[{index}/{total}] {} seed {}: {} in {:.0} s; txs {} acked, {} committed valid, {} lost, {} duplicates; live {:.1} s after the last heal",
        o.scenario.name,
        o.seed,
        if r.passed { "PASSED".to_owned() } else { format!("FAILED ({})", failed.join(", ")) },
        started.elapsed().as_secs_f64(),
        r.txs.acked,
        r.txs.committed_valid,
        r.txs.lost_acked,
        r.txs.duplicates,
        r.liveness_after_heal_s
    );
    if !r.passed {
        for (check, detail) in &r.check_details {
            println!("    {check}: {detail}");
        }
        println!("    rerun: {}", r.rerun);
    }
    Ok(r)
}

async fn suite(
    seeds: u64,
    duration: f64,
    out: PathBuf,
    names: Vec<String>,
    backend: chaos_tests::harness::Backend,
) -> anyhow::Result<bool> {
    let chosen: Vec<scenario::Scenario> = if names.is_empty() {
        scenario::all()
            .into_iter()
            .filter(|s| !s.shape.failpoints || cfg!(feature = "failpoints"))
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                scenario::find(n)
                    .with_context(|| format!("no scenario {n:?}; `chaos list` names them all"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for s in &chosen {
        check_buildable(s, &backend)?;
    }
    // A scenario this machine or backend cannot run (no libfaketime, no tmpfs mounts, no
    // Docker engine, a fault the backend does not carry out) is skipped.
    let chosen: Vec<scenario::Scenario> = chosen
        .into_iter()
        .filter(|s| match s.unavailable_on(&backend) {
            Some(why) => {
                println!("skipped {}: {why}", s.name);
                false
            }
            None => true,
        })
        .collect();
    std::fs::create_dir_all(&out)?;
    let total = chosen.len() * usize::try_from(seeds)?;
    let mut index = 0;
    let mut all_passed = true;
    for s in &chosen {
        for seed in 1..=seeds {
            index += 1;
            let dir = run::run_dir(&out, s.name, seed);
            let o = options(s.clone(), seed, duration, dir, backend.clone())?;
            let r = run_one(&o, index, total).await?;
            all_passed &= r.passed;
        }
    }
    let summary = write_suite(&out)?;
    println!(
        "suite: {} of {} runs passed; {} and {}",
        summary.totals.passed,
        summary.totals.runs,
        out.join(chaos_tests::report::SUMMARY_JSON).display(),
        out.join(chaos_tests::report::INDEX_HTML).display()
    );
    Ok(all_passed)
}
