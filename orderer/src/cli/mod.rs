//! `orderer admin`: the operator's command line over [`crate::admin_client`]. Readable text by
//! default, `--json` for scripts; an error goes to stderr, names what is wrong, and makes the
//! exit code non-zero.

mod print;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use clap::Subcommand;
use prost::Message as _;
use shared_proto::pb::common::Block;

use crate::admin_client::config_view;
use crate::admin_client::config_view::ConfigView;
use crate::admin_client::AdminClientError;
use crate::admin_client::ConsenterOp;
use crate::admin_client::Network;
use crate::admin_client::StatusView;

/// `orderer admin ...`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Network material: the directory `devnet generate` wrote (network.toml, orgs/, channels/).
    #[arg(long, value_name = "NETDIR")]
    pub network: PathBuf,
    /// The orderer to ask (for status, channel and config show), by its name in the material,
    /// e.g. orderer1.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long a change may take to be ordered and carried out, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// A channel's Raft: leader, voters, learners, height, config sequence (node names).
    Status {
        #[arg(long, value_name = "CH")]
        channel: String,
    },
    /// Channel participation on the orderer named by --node.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Add, remove or replace one consenter by a config update (signed by every org admin of
    /// the material), and wait until it is carried out.
    #[command(subcommand)]
    Consenter(ConsenterCommand),
    /// A channel's config in force as JSON, and config updates from an edited copy.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// The channels the orderer serves: height, role, status, config sequence.
    List,
    /// Join the channel a genesis block configures.
    Join {
        #[arg(long, value_name = "FILE")]
        block: PathBuf,
    },
    /// Remove a channel from the orderer (its Raft state and blocks are deleted there).
    Remove {
        #[arg(long, value_name = "CH")]
        channel: String,
    },
}

#[derive(Debug, Args)]
pub struct ConsenterArgs {
    #[arg(long, value_name = "CH")]
    pub channel: String,
    /// The orderer to add, remove or replace (its name in the material).
    #[arg(long, value_name = "NAME")]
    pub node: String,
}

#[derive(Debug, Subcommand)]
pub enum ConsenterCommand {
    /// Add the node (its entry built from its material); waits until it is a voter.
    Add(ConsenterArgs),
    /// Remove the node; waits until the leader no longer counts it.
    Remove(ConsenterArgs),
    /// Rebuild the node's entry from its current files (renewed certificate, new address).
    Replace(ConsenterArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config in force (the highest sequence any orderer delivers, or --node's).
    Show {
        #[arg(long, value_name = "CH")]
        channel: String,
    },
    /// Submit the config a file describes (`config show --json` output, edited) as the next
    /// config, and wait for its block.
    Update {
        #[arg(long, value_name = "CH")]
        channel: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// Why `orderer admin` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] AdminClientError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Runs `orderer admin`; the exit code is 0 only on success.
pub fn run_admin(args: AdminArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))
        .and_then(|rt| rt.block_on(admin(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

async fn admin(args: AdminArgs) -> Result<(), CliError> {
    let net = Network::load(&args.network)?;
    let timeout = Duration::from_secs(args.timeout);
    let json = args.json;
    let asked = |verb: &str| -> Result<String, CliError> {
        args.node.clone().ok_or_else(|| {
            CliError::Usage(format!(
                "{verb} needs --node NAME before the verb (the orderer to ask), one of: {}",
                net.names()
            ))
        })
    };
    match &args.command {
        AdminCommand::Status { channel } => status(&net, args.node.as_deref(), channel, json).await,
        AdminCommand::Channel(ChannelCommand::List) => {
            let node = net.orderer(&asked("channel list")?)?;
            let channels = net.list_channels(node).await?;
            print::channel_list(&node.name, &channels, json);
            Ok(())
        }
        AdminCommand::Channel(ChannelCommand::Join { block }) => {
            let node = net.orderer(&asked("channel join")?)?;
            let bytes = read_file(block)?;
            let channel_id = Block::decode(bytes.as_slice())
                .ok()
                .and_then(|b| shared_proto::channel::config_from_block(&b).ok())
                .map(|c| c.channel_id)
                .ok_or_else(|| CliError::File {
                    path: block.display().to_string(),
                    reason: "not a config block (a channel's genesis block is)".into(),
                })?;
            let info = net.join_channel(node, &channel_id, bytes).await?;
            print::channel_info("joined", &node.name, &info, json);
            Ok(())
        }
        AdminCommand::Channel(ChannelCommand::Remove { channel }) => {
            let node = net.orderer(&asked("channel remove")?)?;
            let info = net.remove_channel(node, channel).await?;
            print::channel_info("removed", &node.name, &info, json);
            Ok(())
        }
        AdminCommand::Consenter(c) => {
            if let Some(n) = &args.node {
                return Err(CliError::Usage(format!(
                    "consenter takes the node to change after the verb (consenter add --channel CH \
                     --node NAME), not --node {n} before it"
                )));
            }
            let (op, a) = match c {
                ConsenterCommand::Add(a) => (ConsenterOp::Add, a),
                ConsenterCommand::Remove(a) => (ConsenterOp::Remove, a),
                ConsenterCommand::Replace(a) => (ConsenterOp::Replace, a),
            };
            let node = net.orderer(&a.node)?;
            let current = net.current_config(&a.channel).await?;
            let next = net.consenter_change(&current.channel, op, &a.node)?;
            let joining = (op == ConsenterOp::Add).then_some(a.node.as_str());
            let applied = net.apply(&current, &next, joining, timeout).await?;
            print::consenter(op, node, &applied, json);
            Ok(())
        }
        AdminCommand::Config(ConfigCommand::Show { channel }) => {
            let current = match &args.node {
                Some(name) => net.latest_config(net.orderer(name)?, channel).await?,
                None => net.current_config(channel).await?,
            };
            print::config(&current, |id| net.name_of(id), json);
            Ok(())
        }
        AdminCommand::Config(ConfigCommand::Update { channel, file }) => {
            config_update(&net, channel, file, timeout, json).await
        }
    }
}

async fn status(
    net: &Network,
    node: Option<&str>,
    channel: &str,
    json: bool,
) -> Result<(), CliError> {
    let (name, status) = match node {
        Some(name) => {
            let node = net.orderer(name)?;
            (node.name.clone(), net.cluster_status(node, channel).await?)
        }
        None => {
            // Every orderer at once; the leader's answer if one leads, else the first.
            let answers = futures::future::join_all(
                net.orderers.iter().map(|o| net.cluster_status(o, channel)),
            )
            .await;
            let mut tried = Vec::new();
            let mut found = Vec::new();
            for (o, a) in net.orderers.iter().zip(answers) {
                match a {
                    Ok(s) => found.push((o.name.clone(), s)),
                    Err(e) => tried.push(format!("{}: {e}", o.name)),
                }
            }
            let pick = found
                .iter()
                .position(|(_, s)| s.leader_id != 0 && s.leader_id == s.node_id)
                .unwrap_or(0);
            if found.is_empty() {
                return Err(AdminClientError::NoneAnswered {
                    what: format!("ClusterStatus of channel {channel:?}"),
                    tried: tried.join("\n  "),
                }
                .into());
            }
            found.swap_remove(pick)
        }
    };
    print::status(&name, &status.role, &StatusView::new(net, &status), json);
    Ok(())
}

async fn config_update(
    net: &Network,
    channel: &str,
    file: &std::path::Path,
    timeout: Duration,
    json: bool,
) -> Result<(), CliError> {
    let text = read_file(file)?;
    let view =
        ConfigView::from_json(&String::from_utf8_lossy(&text)).map_err(|e| CliError::File {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
    if view.channel_id != channel {
        return Err(CliError::Usage(format!(
            "{} describes channel {:?}, not {channel:?}",
            file.display(),
            view.channel_id
        )));
    }
    let current = net.current_config(channel).await?;
    let mut next = view
        .to_config(current.channel.config())
        .map_err(|e| CliError::File {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
    let changes = config_view::diff(
        &ConfigView::of(current.channel.config()),
        &ConfigView::of(&next),
    );
    if changes.is_empty() && view.sequence == current.channel.sequence() {
        return Err(CliError::Usage(format!(
            "{} changes nothing in channel {channel:?}'s config in force (sequence {})",
            file.display(),
            view.sequence
        )));
    }
    // The file names the config it was edited from; the update builds on that one, so an
    // update edited from an older config is refused as stale by the orderers.
    next.sequence = view.sequence + 1;
    shared_proto::channel::Channel::from_config(next.clone()).map_err(|e| CliError::File {
        path: file.display().to_string(),
        reason: format!("the edited config is invalid: {e}"),
    })?;
    let applied = net.apply(&current, &next, None, timeout).await?;
    print::config_update(&changes, &applied, json);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::CommandFactory as _;
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Admin {
        #[command(flatten)]
        args: AdminArgs,
    }

    fn parse(words: &str) -> Result<AdminArgs, clap::Error> {
        Admin::try_parse_from(std::iter::once("admin").chain(words.split_whitespace()))
            .map(|a| a.args)
    }

    #[test]
    fn node_before_the_verb_is_who_is_asked_and_after_consenter_is_who_changes() {
        Admin::command().debug_assert();
        let a = parse("--network n --node orderer1 status --channel ch --json").unwrap();
        assert_eq!(a.node.as_deref(), Some("orderer1"));
        assert!(a.json);
        assert!(matches!(a.command, AdminCommand::Status { .. }));
        let a =
            parse("--network n consenter add --channel ch --node orderer4 --timeout 5").unwrap();
        assert_eq!(a.node, None);
        assert_eq!(a.timeout, 5);
        match a.command {
            AdminCommand::Consenter(ConsenterCommand::Add(c)) => assert_eq!(c.node, "orderer4"),
            other => panic!("{other:?}"),
        }
        assert!(parse("--network n consenter add --channel ch").is_err());
    }
}
