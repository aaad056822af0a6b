//! `devnet`: the local development network.
//!
//! `devnet generate --spec deploy/sample-network.toml --out DIR` writes every node's keys,
//! certificates, config files and each channel's genesis block.

use std::path::PathBuf;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use clap::Parser;
use clap::Subcommand;
use shared_proto::material;
use shared_proto::material::NetworkSpec;

#[derive(Debug, Parser)]
#[command(name = "devnet", version, about = "Local development network")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Generate { spec, out }) => generate(spec, out),
        None => anyhow::bail!(
            "running the dev network needs the orderer and peer nodes, which are not built yet \
             (see README status); `devnet generate` works today"
        ),
    }
}

fn generate(spec_path: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading spec {}", spec_path.display()))?;
    let spec =
        NetworkSpec::from_toml(&text).with_context(|| format!("spec {}", spec_path.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let generated = material::generate(&spec, &out, i64::try_from(now)?)?;
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
