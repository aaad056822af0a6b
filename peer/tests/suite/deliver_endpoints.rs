//! The deliver client follows the channel's `orderer_endpoints` without a restart: when a
//! config block drops the orderer it is pulling from, it switches to one the new list names
//! and never returns to the dropped one.
//!
//! The orderers here are stand-ins: two TLS Deliver servers on the generated orderers'
//! addresses and certificates, serving one chain of blocks built and signed in the test (the
//! real orderers order config updates once the lead's orderer work lands; the end-to-end run
//! with them is theirs).

use crate::common;

use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use peer::deliver_client::IDLE_SWITCH;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update::build_update;
use shared_proto::node_config::OrdererConfig;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Payload;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcast;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcastServer;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_position;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::DeliverResponse;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::tls::TlsMaterial;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::live_config::generate;
use crate::live_config::genesis_of;
use crate::live_config::node_identity;
use crate::live_config::start;
use crate::live_config::user;

const WAIT: Duration = Duration::from_secs(30);

/// A Deliver server streaming `chain` from the requested block on; counts its sessions.
#[derive(Clone)]
struct StandIn {
    chain: Arc<watch::Sender<Vec<Block>>>,
    sessions: Arc<AtomicUsize>,
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AtomicBroadcast for StandIn {
    type BroadcastStream = Stream<BroadcastResponse>;

    async fn broadcast(
        &self,
        _: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        Err(Status::unimplemented("stand-in orderer"))
    }

    async fn submit(&self, _: Request<Envelope>) -> Result<Response<BroadcastResponse>, Status> {
        Err(Status::unimplemented("stand-in orderer"))
    }

    type DeliverStream = Stream<DeliverResponse>;

    async fn deliver(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        let envelope = request
            .into_inner()
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no seek"))?;
        let data = Payload::decode(envelope.payload.as_slice())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .data;
        let seek = SeekInfo::decode(data.as_slice())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut next = match seek.start.and_then(|p| p.r#type) {
            Some(seek_position::Type::Specified(s)) => s.number as usize,
            _ => 0,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut chain = self.chain.subscribe();
        tokio::spawn(async move {
            loop {
                let ready: Vec<Block> = chain
                    .borrow_and_update()
                    .iter()
                    .skip(next)
                    .cloned()
                    .collect();
                for b in ready {
                    let response = DeliverResponse {
                        r#type: Some(Type::Block(b)),
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                tokio::select! {
                    changed = chain.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves `stand_in` on the orderer's reserved address with the orderer's TLS certificate.
async fn serve(config: &OrdererConfig, stand_in: StandIn) {
    let tls = TlsMaterial::load(&config.tls).unwrap();
    let listener = listen(&config.listen_address).await.unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(AtomicBroadcastServer::new(stand_in))
        .serve_with_incoming(
            shared_proto::tls_server::incoming_with_own_roots(listener, &tls, true).unwrap(),
        );
    tokio::spawn(server);
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_within(WAIT, what, done).await
}

async fn wait_within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The block after `prev` holding `data`, signed by `orderer`.
fn after(
    prev: &Block,
    data: Vec<u8>,
    lci: u64,
    orderer: &shared_proto::msp::SigningIdentity,
) -> Block {
    let number = prev.header.as_ref().unwrap().number + 1;
    let prev_hash = block::header_hash(prev).unwrap();
    let mut b = block::new_block(number, prev_hash.to_vec(), vec![data], lci);
    block::sign_block(&mut b, CHANNEL, orderer);
    b
}

#[test]
fn deliver_client_leaves_an_orderer_a_config_block_drops_for_one_the_new_list_names() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate(dir.path(), 2);
    let orderer_configs: Vec<OrdererConfig> = g
        .orderers
        .iter()
        .map(|o| OrdererConfig::load(&o.config).unwrap())
        .collect();
    let p = g.peers.iter().find(|p| p.msp_id == "Org1MSP").unwrap();
    let mut config = PeerConfig::load(&p.config).unwrap();
    config.log.level = "warn".into();
    config.gossip.heartbeat_ms = 100;
    config.gossip.alive_expiry_ms = 500;
    // Only this channel: the stand-ins serve no other.
    config.channels.retain(|c| {
        c.genesis_block
            .parent()
            .is_some_and(|d| d.ends_with(CHANNEL))
    });
    assert_eq!(config.channels.len(), 1);
    let signer = node_identity("OrdererMSP", &g.orderers[0].dir);
    let genesis = genesis_of(&g, CHANNEL);
    let channel = Channel::from_config_block(&genesis).unwrap();
    let [first, second] = [0, 1].map(|i| orderer_configs[i].listen_address.clone());
    assert_eq!(channel.orderer_endpoints(), [first.clone(), second.clone()]);
    let rt = runtime();
    rt.block_on(async {
        let chain = Arc::new(watch::Sender::new(vec![genesis.clone()]));
        let stand_ins: Vec<StandIn> = (0..2)
            .map(|_| StandIn {
                chain: chain.clone(),
                sessions: Arc::default(),
            })
            .collect();
        for (c, s) in orderer_configs.iter().zip(&stand_ins) {
            serve(c, s.clone()).await;
        }
        let sessions = |i: usize| stand_ins[i].sessions.load(Ordering::SeqCst);
        let node = start(&config).await;
        let ledger = node.registry.get(CHANNEL).unwrap().ledger.clone();
        wait_for("the peer pulling from the first orderer", || {
            sessions(0) == 1
        })
        .await;
        assert_eq!(sessions(1), 0);

        // Config block 1: only the second orderer is left.
        let mut next = channel.config().clone();
        next.sequence += 1;
        next.orderer.as_mut().unwrap().orderer_endpoints = vec![second.clone()];
        let admins = [user(&g, "Org1MSP", "Admin"), user(&g, "Org2MSP", "Admin")];
        let update = build_update(&next, &[&admins[0], &admins[1]], &admins[0], 0);
        let config_block = after(&genesis, update.encode_to_vec(), 1, &signer);
        chain.send_modify(|c| c.push(config_block.clone()));
        wait_for("the config block committed", || ledger.height() == 2).await;
        let stored = ledger.block(1).unwrap().unwrap();
        assert_eq!(
            block::validation_codes(&stored),
            &[TxValidationCode::Valid as u8]
        );
        let endpoints = node
            .registry
            .get(CHANNEL)
            .unwrap()
            .config()
            .orderer_endpoints()
            .to_vec();
        assert_eq!(endpoints, next.orderer.as_ref().unwrap().orderer_endpoints);
        // Well before the first orderer's silence would make the peer leave it anyway.
        wait_within(
            IDLE_SWITCH / 4,
            "the peer pulling from the second orderer",
            || sessions(1) >= 1,
        )
        .await;

        // The next block arrives through the second orderer; the first is not asked again.
        chain.send_modify(|c| {
            c.push(after(
                &config_block,
                b"not an envelope".to_vec(),
                1,
                &signer,
            ))
        });
        wait_for("block 2 committed", || ledger.height() == 3).await;
        assert_eq!(sessions(0), 1, "the dropped orderer was asked again");
        node.shutdown().await.unwrap();
    });
}
