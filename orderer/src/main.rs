//! `orderer`: the ordering-service node.
//!
//! Today it can check a config file; `orderer start` arrives with the consensus, broadcast and
//! deliver stages (see README status table).

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
    /// Load and validate a config file (with WEFT_ORDERER_* overrides) and print it.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            match OrdererConfig::load(&config).and_then(|c| c.validate().map(|()| c)) {
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
            }
        }
    }
}
