//! The forged-gossip fault: a member of the target peer's org turned malicious (a peer
//! identity issued by the org's CAs, never started) opens gossip streams to the target and
//! pushes blocks it signed itself, at the target's next height, for as long as the fault
//! holds. A correct target refuses each (bad orderer signature), strikes the sender and cuts
//! it off; no other peer ever sees them (`forged_contained`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared_proto::dial::Dialer;
use shared_proto::hash::sha256;
use shared_proto::material::PeerSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::AliveInfo;
use shared_proto::pb::peer::GossipMessage;
use shared_proto::tls::TlsMaterial;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::harness::Cluster;
use crate::topology::CHANNEL;

/// The malicious member's name in the org's material.
const ROGUE: &str = "rogue";
/// Pause between two forged blocks (and between attempts while the target refuses it).
const EVERY: Duration = Duration::from_millis(700);

/// The malicious member's credentials.
struct Rogue {
    identity: SigningIdentity,
    tls: Vec<u8>,
    dialer: Dialer,
    endpoint: String,
}

impl Rogue {
    /// Issues (once per run dir) peer `rogue` of `msp_id` from the org's CAs; it is never
    /// started, and its advertised endpoint serves nothing.
    fn issue(c: &Cluster, msp_id: &str) -> anyhow::Result<Rogue> {
        let net = c.dir.join("net");
        let generated = match shared_proto::material::Generated::load(&net)?
            .peers
            .into_iter()
            .find(|p| p.msp_id == msp_id && p.name == ROGUE)
        {
            Some(found) => found,
            None => {
                let port = |n: u16| -> anyhow::Result<u16> {
                    // Advertised only: nothing listens there.
                    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                        .local_addr()?
                        .port()
                        ^ n)
                };
                let spec = PeerSpec {
                    name: ROGUE.into(),
                    host: "127.0.0.1".into(),
                    port: port(0)?,
                    gossip_port: port(1)?,
                    ops_port: port(2)?,
                    orderer_connected: false,
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                shared_proto::material::add_peer(&net, msp_id, spec, i64::try_from(now)?)?
                    .peers
                    .into_iter()
                    .find(|p| p.msp_id == msp_id && p.name == ROGUE)
                    .context("rogue peer not in the extended material")?
            }
        };
        let config = PeerConfig::load(&generated.config)?;
        let tls = TlsMaterial::load(&config.tls)?;
        let tls_cert = tls.cert_der.clone();
        Ok(Rogue {
            identity: SigningIdentity::from_pem_files(
                msp_id,
                &config.identity.cert,
                &config.identity.key,
            )?,
            tls: tls_cert,
            dialer: Dialer::direct(Arc::new(tls)),
            endpoint: config.gossip.external_endpoint.clone(),
        })
    }

    fn alive(&self) -> GossipMessage {
        let info = AliveInfo {
            endpoint: self.endpoint.clone(),
            identity: self.identity.serialized().to_vec(),
            height: 1,
            sequence: 1,
            can_lead: false,
            leader: false,
            tls_cert_hash: sha256(&self.tls).to_vec(),
            known: vec![],
            channel_id: CHANNEL.into(),
        };
        GossipMessage {
            channel_id: CHANNEL.into(),
            content: Some(Content::Alive(peer::gossip::alive::sign_alive(
                &self.identity,
                &info,
            ))),
        }
    }

    /// A block at `number` signed by this peer, not by the orderers.
    fn forged(&self, number: u64) -> GossipMessage {
        let mut block = shared_proto::block::new_block(
            number,
            vec![0xf0; 32],
            vec![format!("forged {number}").into_bytes()],
            0,
        );
        shared_proto::block::sign_block(&mut block, CHANNEL, &self.identity);
        GossipMessage {
            channel_id: CHANNEL.into(),
            content: Some(Content::Block(block)),
        }
    }

    /// Opens a gossip stream to `to`: `None` when the target refuses it (cut off).
    async fn open(&self, to: &str) -> Option<mpsc::Sender<GossipMessage>> {
        let mut client = peer::gossip::transport::connect(to, &self.dialer, None)
            .await
            .ok()?;
        let (tx, rx) = mpsc::channel(16);
        let mut answers = client
            .gossip_stream(ReceiverStream::new(rx))
            .await
            .ok()?
            .into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = answers.message().await {} });
        Some(tx)
    }
}

/// Starts forging blocks at peer `target` (`MSP/name`); the handle stops it.
pub async fn start(c: &Cluster, target: &str) -> anyhow::Result<AbortHandle> {
    let (msp_id, _) = target
        .split_once('/')
        .with_context(|| format!("{target} is not a peer"))?;
    let rogue = Rogue::issue(c, msp_id)?;
    let node = c
        .nodes
        .iter()
        .find(|n| n.name() == target)
        .with_context(|| format!("no node {target}"))?;
    let config = PeerConfig::load(&node.view.config)?;
    let to = config.gossip.external_endpoint.clone();
    let ops = node.view.ops.clone();
    let task = tokio::spawn(async move {
        let mut stream: Option<mpsc::Sender<GossipMessage>> = None;
        loop {
            if stream.as_ref().is_none_or(mpsc::Sender::is_closed) {
                stream = rogue.open(&to).await;
                if let Some(s) = &stream {
                    let _ = s.send(rogue.alive()).await;
                }
            }
            let height = crate::launcher::status(&ops)
                .await
                .ok()
                .and_then(|s| s["channels"][CHANNEL]["height"].as_u64());
            if let (Some(s), Some(h)) = (&stream, height) {
                let _ = s.send(rogue.alive()).await;
                if s.send(rogue.forged(h)).await.is_err() {
                    stream = None;
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    Ok(task.abort_handle())
}
