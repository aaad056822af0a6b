//! `peer`: the validating, committing and endorsing node, and a command-line client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use clap::Parser;
use clap::Subcommand;
use futures::StreamExt as _;
use peer::sdk::Gateway;
use prost::Message as _;
use shared_proto::block;
use shared_proto::material::Generated;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::peer::deliver_client::DeliverClient;
use shared_proto::pb::peer::deliver_response::Type;
use shared_proto::pb::tx::TxValidationCode;

/// Every node process allocates with mimalloc, which returns freed memory to the OS: with
/// glibc's malloc a node's RSS crept for minutes while its live heap stayed flat
/// (docs/performance.md, "Node memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the peer until SIGTERM or Ctrl-C.
    Start {
        /// Config file (TOML); WEFT_PEER_* variables override fields.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Load and validate a config file (with WEFT_PEER_* overrides), then exit.
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
    /// Endorse, order and commit one transaction; prints its tx id, block and validation code.
    Invoke(Call),
    /// Run a chaincode function read-only on a peer; prints its result.
    Query(Call),
    /// Print a committed transaction's block and validation code (a signed query).
    Tx {
        #[command(flatten)]
        who: Client,
        /// The transaction id (hex).
        tx_id: String,
    },
    /// Print committed blocks (number, hash, transactions with their validation codes).
    Blocks {
        #[command(flatten)]
        who: Client,
        /// First block.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last block (default: the newest).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Channels of a running peer.
    #[command(subcommand)]
    Channel(ChannelCommand),
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// The channels a running peer has joined, with their height and the config in force
    /// (read from the peer's ops endpoint, `/status`).
    List {
        /// Directory written by `devnet generate` (the peer's ops address comes from it).
        #[arg(long, value_name = "DIR", required_unless_present = "ops")]
        network: Option<PathBuf>,
        #[arg(long, default_value = "Org1MSP")]
        org: String,
        #[arg(long, default_value = "peer0")]
        peer: String,
        /// The peer's ops address (host:port) instead of the one in `--network`.
        #[arg(long, value_name = "ADDR")]
        ops: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Join a running peer to a channel with the channel's genesis block, as the Admin of the
    /// peer's org (signing and TLS material from `--network`). The peer keeps the channel
    /// across restarts.
    Join {
        /// The channel's genesis block (block 0), e.g. `channels/ID/genesis.block` of a
        /// generated network.
        #[arg(long, value_name = "FILE")]
        block: PathBuf,
        /// Directory written by `devnet generate` (the peer's address and the admin's
        /// material come from it).
        #[arg(long, value_name = "DIR")]
        network: PathBuf,
        #[arg(long, default_value = "Org1MSP")]
        org: String,
        #[arg(long, default_value = "peer0")]
        peer: String,
        /// The user of `--org` who signs (an admin of the peer's org).
        #[arg(long, default_value = "Admin")]
        user: String,
        /// The peer's service address (host:port) instead of the one in `--network`.
        #[arg(long, value_name = "ADDR")]
        address: Option<String>,
    },
}

/// Who the client is: a user of a generated network (see `devnet generate`).
#[derive(Debug, Args)]
struct Client {
    /// Directory written by `devnet generate`.
    #[arg(long, value_name = "DIR")]
    network: PathBuf,
    #[arg(long, default_value = "Org1MSP")]
    org: String,
    #[arg(long, default_value = "User1")]
    user: String,
    #[arg(long, default_value = "mychannel")]
    channel: String,
}

#[derive(Debug, Args)]
struct Call {
    #[command(flatten)]
    who: Client,
    #[arg(long, short = 'c')]
    chaincode: String,
    #[arg(long, short = 'f')]
    function: String,
    /// Arguments, as UTF-8 strings.
    args: Vec<String>,
}

fn load(path: &std::path::Path) -> anyhow::Result<PeerConfig> {
    Ok(peer::process::load_config(path)?)
}

fn gateway(who: &Client) -> anyhow::Result<Gateway> {
    let net = Generated::load(&who.network)?;
    Ok(Gateway::from_network(
        &net,
        &who.org,
        &who.user,
        &who.channel,
    )?)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig { .. } | Command::Start { .. } | Command::Health { .. } => {
            unreachable_command()
        }
        Command::Invoke(call) => {
            let gw = gateway(&call.who)?;
            let args: Vec<Vec<u8>> = call.args.iter().map(|a| a.clone().into_bytes()).collect();
            let r = gw.submit(&call.chaincode, &call.function, &args).await?;
            println!(
                "tx {} committed in block {}: {}",
                r.tx_id,
                r.block_number,
                r.code.as_str_name()
            );
            if !r.payload.is_empty() {
                println!("result: {}", String::from_utf8_lossy(&r.payload));
            }
            anyhow::ensure!(r.code == TxValidationCode::Valid, "transaction invalid");
            Ok(())
        }
        Command::Query(call) => {
            let gw = gateway(&call.who)?;
            let args: Vec<Vec<u8>> = call.args.iter().map(|a| a.clone().into_bytes()).collect();
            let out = gw.evaluate(&call.chaincode, &call.function, &args).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Tx { who, tx_id } => {
            let tx = gateway(&who)?.transaction_by_id(&tx_id).await?;
            let code = TxValidationCode::try_from(tx.validation_code)
                .map(|c| c.as_str_name())
                .unwrap_or("?");
            println!("tx {tx_id} in block {}: {code}", tx.block_number);
            Ok(())
        }
        Command::Blocks { who, from, to } => print_blocks(&who, from, to).await,
        Command::Channel(ChannelCommand::List {
            network,
            org,
            peer,
            ops,
            json,
        }) => {
            let addr = match ops {
                Some(addr) => addr,
                None => ops_address(network.as_deref(), &org, &peer)?,
            };
            list_channels(&addr, json).await
        }
        Command::Channel(ChannelCommand::Join {
            block,
            network,
            org,
            peer,
            user,
            address,
        }) => {
            let net = Generated::load(&network)?;
            let addr = match address {
                Some(addr) => addr,
                None => {
                    let p = peer_spec(&net, &org, &peer)?;
                    format!("{}:{}", p.host, p.port)
                }
            };
            let bytes =
                std::fs::read(&block).with_context(|| format!("reading {}", block.display()))?;
            let admin =
                peer::participation::client::AdminClient::from_network(&net, &org, &user, &addr)?;
            let info = admin
                .join(bytes)
                .await
                .with_context(|| format!("peer {addr} refused to join {}", block.display()))?;
            println!(
                "joined channel {}: height {}, config sequence {}",
                info.channel_id, info.height, info.config_sequence
            );
            Ok(())
        }
    }
}

/// Peer `peer` of org `org` in a generated network.
fn peer_spec<'n>(
    net: &'n Generated,
    org: &str,
    peer: &str,
) -> anyhow::Result<&'n shared_proto::material::PeerSpec> {
    net.spec
        .peer_orgs
        .iter()
        .filter(|o| o.msp_id == org)
        .flat_map(|o| &o.peers)
        .find(|p| p.name == peer)
        .with_context(|| format!("no peer {peer} of {org} in {}", net.dir.display()))
}

/// The ops address (host:port) of peer `peer` of org `org` in a generated network.
fn ops_address(network: Option<&std::path::Path>, org: &str, peer: &str) -> anyhow::Result<String> {
    let dir = network.context("--network or --ops is required")?;
    let net = Generated::load(dir)?;
    let p = peer_spec(&net, org, peer)?;
    Ok(format!("{}:{}", p.host, p.ops_port))
}

/// Prints the channels of the peer whose ops endpoint is `addr`: id, height, config sequence
/// and the block that set the config in force.
async fn list_channels(addr: &str, json: bool) -> anyhow::Result<()> {
    let status: serde_json::Value = serde_json::from_str(&http_get(addr, "/status").await?)
        .with_context(|| format!("{addr}/status is not JSON"))?;
    let channels: Vec<serde_json::Value> = status["channels"]
        .as_object()
        .context("/status has no channels")?
        .iter()
        .map(|(id, ch)| {
            serde_json::json!({
                "id": id,
                "height": ch["height"],
                "config_sequence": ch["config"]["sequence"],
                "config_block": ch["config"]["block"],
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::json!({ "channels": channels }));
        return Ok(());
    }
    println!(
        "{:<24} {:>10} {:>16} {:>13}",
        "CHANNEL", "HEIGHT", "CONFIG SEQUENCE", "CONFIG BLOCK"
    );
    for c in &channels {
        // serde_json's Display ignores widths: format the numbers as strings.
        let cell = |field: &str| c[field].to_string();
        println!(
            "{:<24} {:>10} {:>16} {:>13}",
            c["id"].as_str().unwrap_or_default(),
            cell("height"),
            cell("config_sequence"),
            cell("config_block")
        );
    }
    Ok(())
}

/// The body of `GET path` from the plain-HTTP ops endpoint at `addr` (bounded in time).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    let limit = Duration::from_secs(5);
    let mut stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = Vec::new();
    tokio::time::timeout(limit, async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut response).await
    })
    .await
    .with_context(|| format!("{addr}{path}: timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}{path}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.contains(" 200 "), "{addr}{path} answered {status:?}");
    Ok(body.to_owned())
}

fn unreachable_command() -> anyhow::Result<()> {
    anyhow::bail!("handled before the runtime starts")
}

async fn print_blocks(who: &Client, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    let net = Generated::load(&who.network)?;
    let u = net
        .user(&who.org, &who.user)
        .with_context(|| format!("no user {} in {}", who.user, who.org))?;
    let identity = shared_proto::msp::SigningIdentity::from_pem_files(&who.org, &u.cert, &u.key)?;
    let org = net
        .spec
        .peer_orgs
        .iter()
        .find(|o| o.msp_id == who.org)
        .context("org has no peers")?;
    let p = org.peers.first().context("org has no peers")?;
    let addr = format!("{}:{}", p.host, p.port);
    let mut ca = Vec::new();
    for c in &net.tls_ca_certs {
        ca.extend(std::fs::read(c)?);
    }
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&u.tls_cert)?,
            std::fs::read(&u.tls_key)?,
        ))
        .domain_name(shared_proto::tls::host_of(&addr).to_owned());
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connecting to peer {addr}"))?;
    let seek = SeekInfo {
        start: Some(shared_proto::seek::specified(from)),
        stop: to.map(shared_proto::seek::specified),
        behavior: SeekBehavior::FailIfNotReady as i32,
    };
    let request = shared_proto::envelope::create_signed_envelope(
        &identity,
        HeaderType::DeliverSeekInfo,
        &who.channel,
        seek.encode_to_vec(),
        shared_proto::envelope::new_nonce(),
        0,
    );
    let mut stream = DeliverClient::new(channel)
        .max_decoding_message_size(peer::node::MESSAGE_BYTES_MAX)
        .deliver(futures::stream::iter([request]))
        .await?
        .into_inner();
    while let Some(msg) = stream.next().await {
        match msg?.r#type {
            Some(Type::Block(b)) => {
                let f = peer::events::filter(&who.channel, &b);
                let hash = block::header_hash(&b).map(hex::encode).unwrap_or_default();
                println!(
                    "block {} {} ({} txs)",
                    f.number,
                    &hash[..16.min(hash.len())],
                    f.filtered_transactions.len()
                );
                for t in f.filtered_transactions {
                    let code = TxValidationCode::try_from(t.tx_validation_code)
                        .map(|c| c.as_str_name())
                        .unwrap_or("?");
                    println!("  {} {}", t.tx_id, code);
                }
            }
            Some(Type::Status(s)) => {
                let status = shared_proto::pb::common::Status::try_from(s)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                anyhow::ensure!(
                    s == shared_proto::pb::common::Status::Success as i32
                        || (to.is_none() && s == shared_proto::pb::common::Status::NotFound as i32),
                    "peer answered {status}"
                );
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Health { ops, ready } => shared_proto::process::probe_ops(&ops, ready)
            .map(|body| println!("{body}"))
            .map_err(|e| anyhow::anyhow!("unhealthy: {e}")),
        Command::CheckConfig { config } => load(&config).map(|cfg| {
            println!(
                "{} is valid: peer {} of {} in network {:?}",
                config.display(),
                cfg.name,
                cfg.msp_id,
                cfg.network
            );
        }),
        Command::Start { config } => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            peer::process::run_from_file(&config, ansi).map_err(anyhow::Error::from)
        }
        other => runtime.block_on(run(other)),
    };
    // The node has stopped (storage durable); a task still running must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
