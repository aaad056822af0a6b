//! `orderer`: the ordering-service node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use shared_proto::node_config::OrdererConfig;

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
    /// Operate a running network over the Admin API and config updates: status, channel
    /// list|join|remove, consenter add|remove|replace, config show|update.
    Admin(orderer::cli::AdminArgs),
}

fn load(path: &std::path::Path) -> Result<OrdererConfig, String> {
    let cfg = OrdererConfig::load(path).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn init_tracing(cfg: &OrdererConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => orderer::cli::run_admin(args),
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
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_tracing(&cfg);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let listeners = orderer::Listeners::bind(&cfg).await?;
                orderer::run(cfg, listeners, shutdown_signal()).await
            });
            // Storage is durable by now; a task still running (a blocking read, a connection
            // being torn down) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "orderer stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
