//! `devnet broadcast`: signed envelopes sent straight to one orderer's Broadcast, each until
//! that orderer acknowledges it (an orderer that is not the leader forwards it to the leader
//! over the cluster port with its own TLS certificate, which the leader accepts only from a
//! pinned consenter; a leader orders it with its followers' acknowledgements). So the acks
//! prove the orderer takes part in ordering, e.g. after its certificate was rotated.
//!
//! The envelopes carry no endorsement (peers mark them invalid): they test ordering only. The
//! acked tx ids are appended to `--out` as `devnet load` writes them, for `devnet verify`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use peer::sdk::ClientTls;
use prost::Message as _;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::Code;

use crate::topology::CHANNEL;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// `devnet broadcast` options.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    pub network: PathBuf,
    /// The orderer to send to, by name.
    pub orderer: String,
    pub count: usize,
    /// Every envelope must be acked within this long (all together).
    pub timeout: Duration,
    /// Where acked tx ids are appended.
    pub out: Option<PathBuf>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sends `count` envelopes to the orderer, each retried (same tx id) while the orderer is
/// unavailable or has no leader yet; fails at the first refusal or at the deadline.
pub async fn run(o: BroadcastOptions) -> anyhow::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let g = Generated::load(&o.network)
        .with_context(|| format!("{} holds no generated network", o.network.display()))?;
    let spec = g
        .spec
        .orderer_orgs
        .iter()
        .flat_map(|org| &org.orderers)
        .find(|s| s.name == o.orderer)
        .with_context(|| format!("no orderer {:?} in {}", o.orderer, o.network.display()))?;
    let addr = format!("{}:{}", spec.host, spec.port);
    let org = &g
        .spec
        .peer_orgs
        .first()
        .context("the network has no peer org")?
        .msp_id;
    let user = g
        .user(org, "User1")
        .with_context(|| format!("no User1 in {org}"))?;
    let identity = SigningIdentity::from_pem_files(org, &user.cert, &user.key)?;
    let tls = ClientTls::from_network(&g, org, "User1")?;
    let client = AtomicBroadcastClient::new(peer::sdk::channel_to(&addr, &tls)?);
    let mut acked = Vec::new();
    for i in 0..o.count {
        let env = create_signed_envelope(
            &identity,
            HeaderType::EndorserTransaction,
            CHANNEL,
            format!("devnet broadcast {i} to {}", o.orderer).into_bytes(),
            shared_proto::envelope::new_nonce(),
            now_ms(),
        );
        let tx_id = peer::commit::tx_id_of(&env.encode_to_vec()).unwrap_or_default();
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = tonic::Request::new(env.clone());
            request.set_timeout(CALL_TIMEOUT);
            match client.clone().submit(request).await {
                Ok(_) => break,
                Err(s) if s.code() == Code::AlreadyExists => break,
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Unknown
                            | Code::Cancelled
                    ) && Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(s) => anyhow::bail!(
                    "{} ({addr}) did not ack tx {tx_id} after {tries} tries: {} {}",
                    o.orderer,
                    s.code(),
                    s.message()
                ),
            }
        }
        println!("tx {tx_id} acked by {} ({addr})", o.orderer);
        acked.push(format!("{tx_id} {addr}\n"));
    }
    if let Some(out) = &o.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        f.write_all(acked.concat().as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{} envelopes sent to {} acked", acked.len(), o.orderer);
    Ok(())
}
