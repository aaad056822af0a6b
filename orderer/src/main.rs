//! `orderer`: the ordering-service node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use shared_proto::node_config::OrdererConfig;

/// Every node process allocates with mimalloc, which returns freed memory to the OS: with
/// glibc's malloc a node's RSS crept for minutes while its live heap stayed flat
/// (docs/performance.md, "Node memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "orderer",
    version,
    about = "Raft-replicated block ordering node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node until SIGTERM or Ctrl-C (then stop gracefully).
    Start {
        /// Config file (TOML); WEFT_ORDERER_* variables override fields, e.g.
        /// WEFT_ORDERER_RAFT__HEARTBEAT_INTERVAL_MS=50.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Load and validate a config file (with WEFT_ORDERER_* overrides), then exit.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Exit 0 when the node's ops endpoint answers 200 on /healthz (or /readyz with --ready);
    /// for container health checks (the image has no shell or curl).
    Health {
        /// The node's ops address, host:port.
        #[arg(long, value_name = "ADDR")]
        ops: String,
        /// Check /readyz (ready to serve) instead of /healthz (the process serves).
        #[arg(long)]
        ready: bool,
    },
    /// Operate a running network over the Admin API and config updates: status, channel
    /// list|join|remove, consenter add|remove|replace, config show|update.
    Admin(orderer::cli::AdminArgs),
}

fn load(path: &std::path::Path) -> Result<OrdererConfig, String> {
    orderer::process::load_config(path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => orderer::cli::run_admin(args),
        Command::Health { ops, ready } => match shared_proto::process::probe_ops(&ops, ready) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config } => match load(&config) {
            Ok(cfg) => {
                println!(
                    "{} is valid: node {} of network {:?}",
                    config.display(),
                    cfg.node_id,
                    cfg.network
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Start { config } => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            match orderer::process::run_from_file(&config, ansi) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
