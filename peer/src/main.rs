//! `peer`: the validating and committing node.
//!
//! Today it can check a config file; `peer start`, `invoke`, `query` and `blocks` arrive with
//! the ledger, validation and endorsement stages (see README status table).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use shared_proto::node_config::PeerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "peer",
    version,
    about = "Block-validating, committing and endorsing peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate a config file (with WEFT_PEER_* overrides) and print it.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            match PeerConfig::load(&config).and_then(|c| c.validate().map(|()| c)) {
                Ok(cfg) => {
                    println!(
                        "{} is valid: peer {} of {} in network {:?}",
                        config.display(),
                        cfg.name,
                        cfg.msp_id,
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
