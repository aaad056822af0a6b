//! Gossip: peers with no orderer connection get every block from the peers of their org.
//! 3 orderers, Org1 with one or two orderer-connected peers plus gossip-only peers, Org2 with
//! one peer (the token chaincode needs both orgs). Every peer dials the others' gossip through
//! links (chaos_tests::net) the test can cut.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::workload::*;
use common::*;
use peer::sdk::Gateway;
use shared_proto::block;
use shared_proto::block::BlockError;
use shared_proto::block::Expected;
use shared_proto::dial::Dialer;
use shared_proto::hash::sha256;
use shared_proto::msp::SigningIdentity;
use shared_proto::msp::ANY_TIME;
use shared_proto::pb::common::Block;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::AliveInfo;
use shared_proto::pb::peer::GossipMessage;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::tls::TlsMaterial;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Election hand-over bound: a few heartbeats (200 ms in tests) plus the expiry (1 s), with
/// room for a loaded 2-core box.
const HANDOVER: Duration = Duration::from_secs(30);

fn topology(org1: &[bool]) -> Topology {
    Topology {
        org1: org1.to_vec(),
        org2: vec![true],
        gossip_proxies: true,
        hold_back: Vec::new(),
        ..Default::default()
    }
}

fn org1(net: &TestNet, name: &str) -> usize {
    net.peer_index("Org1MSP", name)
}

fn endpoint_of(net: &TestNet, msp: usize, peer: usize) -> String {
    let p = &net.generated.spec.peer_orgs[msp].peers[peer];
    format!("{}:{}", p.host, p.port)
}

fn leaders(net: &TestNet, candidates: &[usize]) -> Vec<usize> {
    candidates
        .iter()
        .copied()
        .filter(|i| net.peer_running(*i) && net.peer(*i).gossip.is_leader(CHANNEL))
        .collect()
}

fn assert_codes_valid_or_conflict(codes: &[Result<TxValidationCode, String>]) {
    let mut valid = 0;
    for c in codes {
        match c {
            Ok(TxValidationCode::Valid) => valid += 1,
            Ok(TxValidationCode::MvccReadConflict) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(valid > 0, "no transfer was valid");
}

#[test]
fn one_connected_and_three_gossip_only_peers_agree_after_2000_txs() {
    let net = TestNet::start_with(topology(&[true, false, false, false])).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let gw = Arc::new(net.gateway("Org1MSP"));
        mint(&gw, 20, 1_000_000).await;
        let codes = transfers(gw.clone(), 2000, 20, 64).await;
        assert_codes_valid_or_conflict(&codes);
        assert_peers_agree(&net).await;
    });
    assert!(net.peer(org1(&net, "peer0")).gossip.is_leader(CHANNEL));
    for name in ["peer1", "peer2", "peer3"] {
        let i = org1(&net, name);
        let node = net.peer(i);
        assert!(!node.gossip.is_leader(CHANNEL), "{name} is gossip-only");
        assert_eq!(
            node.gossip.members_alive(CHANNEL).len(),
            3,
            "{name} members"
        );
        let m = &node.registry.metrics;
        let (push, pull) = (
            m.gossip_received_count("push"),
            m.gossip_received_count("pull"),
        );
        // Every block after genesis came by gossip, each counted once.
        assert_eq!(
            push + pull,
            net.ledger(i).height() - 1,
            "{name}: push {push} pull {pull}"
        );
        assert!(push > 0, "{name} got no block by push");
        assert_eq!(m.blocks_refused.get(), 0, "{name} refused a block");
    }
}

#[test]
fn leader_peer_killed_another_connected_peer_takes_over_and_restart_catches_up() {
    let mut net = TestNet::start_with(topology(&[true, true, false])).unwrap();
    let (p0, p1, p2) = (
        org1(&net, "peer0"),
        org1(&net, "peer1"),
        org1(&net, "peer2"),
    );
    let rt = runtime();
    // Endorse on peers that are never killed.
    let gw = {
        let _in = rt.enter();
        let endorsers = [endpoint_of(&net, 0, 2), endpoint_of(&net, 1, 0)];
        Arc::new(
            Gateway::from_network_with_endorsers(
                &net.generated,
                "Org1MSP",
                "User1",
                CHANNEL,
                &endorsers,
            )
            .unwrap(),
        )
    };
    rt.block_on(async {
        mint(&gw, 10, 1_000_000).await;
        wait_until("one leader in Org1", HANDOVER, || {
            leaders(&net, &[p0, p1]).len() == 1
        })
        .await;
    });
    let leader = leaders(&net, &[p0, p1])[0];
    let other = if leader == p0 { p1 } else { p0 };
    let load = rt.spawn(transfers(gw.clone(), 400, 10, 16));
    let before = net.ledger(p2).height();
    rt.block_on(wait_until("load under way", WAIT, || {
        net.ledger(p2).height() >= before + 5
    }));
    net.kill_peer(leader);
    let at_kill = net.ledger(p2).height();
    rt.block_on(async {
        wait_until("the other connected peer leads", HANDOVER, || {
            net.peer(other).gossip.is_leader(CHANNEL)
        })
        .await;
        wait_until("gossip-only peer keeps up", WAIT, || {
            net.ledger(p2).height() >= at_kill + 5
        })
        .await;
    });
    net.start_peer(leader).unwrap();
    let codes = rt.block_on(load).unwrap();
    assert!(codes.iter().all(|c| c.is_ok()), "submits failed: {codes:?}");
    rt.block_on(async {
        let r = gw
            .submit("kv", "put", &[arg("after"), arg("restart")])
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::Valid);
        assert_peers_agree(&net).await;
    });
    // The restarted peer caught up without taking leadership back.
    assert_eq!(leaders(&net, &[p0, p1]), vec![other]);
}

#[test]
fn late_gossip_only_peer_with_empty_ledger_catches_up_by_pull_in_batches() {
    let mut topo = topology(&[true, false]);
    topo.hold_back = vec![("Org1MSP", "peer1")];
    let mut net = TestNet::start_with(topo).unwrap();
    let late = org1(&net, "peer1");
    let rt = runtime();
    rt.block_on(async {
        let gw = Arc::new(net.gateway("Org1MSP"));
        mint(&gw, 10, 1_000_000).await;
        let codes = transfers(gw.clone(), 600, 10, 8).await;
        assert_codes_valid_or_conflict(&codes);
    });
    let height = net.orderer_height();
    assert!(
        height > 64,
        "want several pull batches, chain has {height} blocks"
    );
    net.start_peer(late).unwrap();
    rt.block_on(assert_peers_agree(&net));
    let m = &net.peer(late).registry.metrics;
    let pulled = m.gossip_received_count("pull");
    let requests = m.gossip_pull_requests.get();
    assert_eq!(pulled, height - 1, "every block came by pull");
    assert!(
        requests * 4 <= pulled,
        "{requests} requests for {pulled} blocks: not batched"
    );
}

/// What an attacker's alive message claims.
struct Claim {
    height: u64,
    sequence: u64,
    leader: bool,
    known: Vec<String>,
}

/// A member of Org1 (the credentials of a peer that never started) turned malicious.
struct Attacker {
    identity: SigningIdentity,
    tls: TlsMaterial,
    dialer: Dialer,
    endpoint: String,
}

impl Attacker {
    fn new(net: &TestNet, index: usize) -> Self {
        let c = &net.peer_configs[index];
        Attacker {
            identity: SigningIdentity::from_pem_files(&c.msp_id, &c.identity.cert, &c.identity.key)
                .unwrap(),
            tls: TlsMaterial::load(&c.tls).unwrap(),
            dialer: Dialer::direct(std::sync::Arc::new(TlsMaterial::load(&c.tls).unwrap())),
            endpoint: c.gossip.external_endpoint.clone(),
        }
    }

    fn alive(&self) -> GossipMessage {
        self.alive_claiming(Claim {
            height: 1,
            sequence: 1,
            leader: false,
            known: vec![],
        })
    }

    /// A correctly signed alive message saying whatever `claim` says.
    fn alive_claiming(&self, claim: Claim) -> GossipMessage {
        let info = AliveInfo {
            endpoint: self.endpoint.clone(),
            identity: self.identity.serialized().to_vec(),
            height: claim.height,
            sequence: claim.sequence,
            can_lead: claim.leader,
            leader: claim.leader,
            tls_cert_hash: sha256(&self.tls.cert_der).to_vec(),
            known: claim.known,
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

    /// Opens a gossip stream to `to`; the result says whether the receiver accepted it.
    async fn open(&self, to: &str) -> Result<mpsc::Sender<GossipMessage>, tonic::Status> {
        let mut client = peer::gossip::transport::connect(to, &self.dialer, None)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4096);
        let mut responses = client
            .gossip_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
        Ok(tx)
    }
}

fn block_message(channel_id: &str, block: Block) -> GossipMessage {
    GossipMessage {
        channel_id: channel_id.into(),
        content: Some(Content::Block(block)),
    }
}

#[test]
fn forged_blocks_from_a_malicious_member_are_refused_by_every_honest_peer() {
    let mut topo = topology(&[true, false, false, false]);
    topo.hold_back = vec![("Org1MSP", "peer3")];
    let net = TestNet::start_with(topo).unwrap();
    let honest: Vec<usize> = ["peer0", "peer1", "peer2"]
        .iter()
        .map(|n| org1(&net, n))
        .collect();
    let attacker = Attacker::new(&net, org1(&net, "peer3"));
    let orderer = {
        let c = &net.orderer_configs[0];
        SigningIdentity::from_pem_files(&c.msp_id, &c.identity.cert, &c.identity.key).unwrap()
    };
    let rt = runtime();
    let gw = Arc::new(rt.block_on(async { net.gateway("Org1MSP") }));
    let mut unlinked = Vec::new();
    rt.block_on(async {
        mint(&gw, 10, 1_000_000).await;
        assert_peers_agree(&net).await;
        for &i in &honest {
            let to = net.peer_configs[i].gossip.external_endpoint.clone();
            let ledger = net.ledger(i);
            let (h, prev) = (ledger.height(), ledger.last_block_hash().unwrap().unwrap());
            let tx = attacker.open(&to).await.unwrap();
            tx.send(attacker.alive()).await.unwrap();
            // Signed by a peer, not by the orderers.
            let mut forged = block::new_block(h, prev.to_vec(), vec![b"forged".to_vec()], 0);
            block::sign_block(&mut forged, CHANNEL, &attacker.identity);
            tx.send(block_message(CHANNEL, forged)).await.unwrap();
            // Signed by a real orderer, but for another channel.
            let mut other = block::new_block(h, prev.to_vec(), vec![b"other".to_vec()], 0);
            block::sign_block(&mut other, "otherchannel", &orderer);
            tx.send(block_message(CHANNEL, other)).await.unwrap();
            // Ahead of the chain, signed by a real orderer, but not linked to it: they wait in
            // the reorder buffer and the previous-hash check refuses them when their turn comes.
            for n in h + 1..h + 3 {
                let mut ahead = block::new_block(n, vec![7; 32], vec![b"ahead".to_vec()], 0);
                block::sign_block(&mut ahead, CHANNEL, &orderer);
                unlinked.push(ahead.clone());
                tx.send(block_message(CHANNEL, ahead)).await.unwrap();
            }
            // A genuine block labelled with a channel this peer does not have.
            let genuine = ledger.block(h - 1).unwrap().unwrap();
            tx.send(block_message("otherchannel", genuine))
                .await
                .unwrap();
        }
        for &i in &honest {
            let m = net.peer(i).registry.metrics.clone();
            wait_until("forged blocks refused", WAIT, || {
                m.blocks_refused.get() >= 2
            })
            .await;
            wait_until("unknown channel dropped", WAIT, || {
                m.gossip_dropped_count("unknown_channel") >= 1
            })
            .await;
        }
        // A flood on a stream of its own: the excess is dropped.
        let (p1, p2) = (honest[1], honest[2]);
        let flood = attacker
            .open(&net.peer_configs[p1].gossip.external_endpoint)
            .await
            .unwrap();
        for _ in 0..3000 {
            if flood.send(attacker.alive()).await.is_err() {
                break;
            }
        }
        let m1 = net.peer(p1).registry.metrics.clone();
        wait_until("flood rate-limited", WAIT, || {
            m1.gossip_dropped_count("rate_limited") > 0
        })
        .await;
        // A message over the size limit ends that stream, nothing else.
        let huge = attacker
            .open(&net.peer_configs[p2].gossip.external_endpoint)
            .await
            .unwrap();
        let big = block::new_block(0, vec![], vec![vec![0; 40 * 1024 * 1024]], 0);
        let _ = huge.send(block_message(CHANNEL, big)).await;
        let m2 = net.peer(p2).registry.metrics.clone();
        wait_until("oversized message refused", WAIT, || {
            m2.gossip_dropped_count("stream_error") > 0
        })
        .await;
        // Honest traffic goes on and every honest peer agrees with the orderers.
        let codes = transfers(gw.clone(), 200, 10, 8).await;
        assert_codes_valid_or_conflict(&codes);
        assert_peers_agree(&net).await;
        // The gossip-only peers reached the buffered forgeries too: third strike, cut off.
        for &i in &honest[1..] {
            let m = net.peer(i).registry.metrics.clone();
            wait_until("third refusal", WAIT, || m.blocks_refused.get() >= 3).await;
            let to = net.peer_configs[i].gossip.external_endpoint.clone();
            let denied = attacker.open(&to).await.unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
        }
    });
    // The unlinked blocks pass every check but the hash link: that is the one refusing them.
    let ledger = net.ledger(honest[0]);
    let channel = net.peer(honest[0]).registry.get(CHANNEL).unwrap().config();
    for b in &unlinked {
        let n = b.header.as_ref().unwrap().number;
        let prev = block::header_hash(&ledger.block(n - 1).unwrap().unwrap()).unwrap();
        let err = block::verify_block(&channel, b, Expected::after(n - 1, prev), ANY_TIME);
        assert!(
            matches!(err, Err(BlockError::WrongPreviousHash { number }) if number == n),
            "{err:?}"
        );
    }
}

/// Keeps telling `to` (each a gossip endpoint) that the attacker leads at `height`, every
/// 100 ms, until the returned sender is dropped.
fn keep_claiming(
    rt: &tokio::runtime::Runtime,
    attacker: Arc<Attacker>,
    to: Vec<String>,
    height: u64,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        let mut streams = Vec::new();
        for t in &to {
            streams.push(attacker.open(t).await.unwrap());
        }
        for sequence in 1u64.. {
            for s in &streams {
                let claim = Claim {
                    height,
                    sequence,
                    leader: true,
                    known: vec![],
                };
                let _ = s.send(attacker.alive_claiming(claim)).await;
            }
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    stop
}

#[test]
fn member_claiming_height_plus_10000_and_leadership_does_not_stop_its_org() {
    let mut topo = topology(&[true, false, false]);
    topo.hold_back = vec![("Org1MSP", "peer2")];
    let net = TestNet::start_with(topo).unwrap();
    let (p0, p1) = (org1(&net, "peer0"), org1(&net, "peer1"));
    let attacker = Arc::new(Attacker::new(&net, org1(&net, "peer2")));
    let rt = runtime();
    // Endorsements from Org2's peer first, so commit status does not depend on Org1.
    let gw = {
        let _in = rt.enter();
        let endorsers = [endpoint_of(&net, 1, 0), endpoint_of(&net, 0, 0)];
        Arc::new(
            Gateway::from_network_with_endorsers(
                &net.generated,
                "Org2MSP",
                "User1",
                CHANNEL,
                &endorsers,
            )
            .unwrap(),
        )
    };
    rt.block_on(async {
        gw.submit("kv", "put", &[arg("k"), arg("v")]).await.unwrap();
        assert_peers_agree(&net).await;
        wait_until("peer0 leads Org1", HANDOVER, || {
            net.peer(p0).gossip.is_leader(CHANNEL)
        })
        .await;
    });
    let claimed = net.ledger(p0).height() + 10_000;
    let to = [p0, p1]
        .iter()
        .map(|i| net.peer_configs[*i].gossip.external_endpoint.clone())
        .collect();
    let _attack = keep_claiming(&rt, attacker, to, claimed);
    rt.block_on(async {
        wait_until("both Org1 peers hear the attacker", WAIT, || {
            [p0, p1]
                .iter()
                .all(|i| net.peer(*i).gossip.members_alive(CHANNEL).len() == 2)
        })
        .await;
        // Blind writes: endorsers at different heights still sign the same result.
        for i in 0..60 {
            let r = gw
                .submit("kv", "put", &[arg(format!("k{i}")), arg("v")])
                .await
                .unwrap();
            assert_eq!(r.code, TxValidationCode::Valid);
        }
        // Org1 keeps committing: its peers reach the orderers' height.
        let height = net.orderer_height();
        net.wait_peers_at(height, Duration::from_secs(60))
            .await
            .unwrap();
        assert_peers_agree(&net).await;
    });
    assert!(
        net.peer(p0).gossip.is_leader(CHANNEL),
        "peer0 ceded leadership to the attacker"
    );
}

#[test]
fn invented_endpoints_in_alive_messages_do_not_lock_out_a_late_newcomer() {
    let mut topo = topology(&[true, false, false]);
    topo.hold_back = vec![("Org1MSP", "peer1"), ("Org1MSP", "peer2")];
    topo.newcomers = vec![("Org1MSP", "peer1")];
    let mut net = TestNet::start_with(topo).unwrap();
    let (p0, late) = (org1(&net, "peer0"), org1(&net, "peer1"));
    let attacker = Attacker::new(&net, org1(&net, "peer2"));
    let rt = runtime();
    let gw = Arc::new(rt.block_on(async { net.gateway("Org1MSP") }));
    rt.block_on(async {
        mint(&gw, 10, 1_000_000).await;
        let to = net.peer_configs[p0].gossip.external_endpoint.clone();
        let stream = attacker.open(&to).await.unwrap();
        // 4 alive messages naming 64 endpoints each that no member owns (nothing listens).
        for batch in 0..4u64 {
            let known = (0..64)
                .map(|i| format!("127.0.0.1:{}", 1 + batch * 64 + i))
                .collect();
            let claim = Claim {
                height: 1,
                sequence: batch + 1,
                leader: false,
                known,
            };
            stream.send(attacker.alive_claiming(claim)).await.unwrap();
        }
        let gossip = net.peer(p0).gossip.clone();
        wait_until("peer0 dialled the invented endpoints", WAIT, || {
            gossip.links() >= peer::gossip::transport::ENDPOINTS_MAX
        })
        .await;
    });
    net.start_peer(late).unwrap();
    rt.block_on(async {
        let codes = transfers(gw.clone(), 50, 10, 8).await;
        assert_codes_valid_or_conflict(&codes);
        assert_peers_agree(&net).await;
    });
    assert!(
        net.peer(late)
            .registry
            .metrics
            .gossip_received_count("pull")
            > 0,
        "the newcomer caught up without pulling"
    );
}

#[test]
fn forged_blocks_buffered_from_a_sender_are_dropped_once_it_is_banned() {
    let mut topo = topology(&[true, false, false]);
    topo.hold_back = vec![("Org1MSP", "peer2")];
    let net = TestNet::start_with(topo).unwrap();
    let gossip_only = org1(&net, "peer1");
    let attacker = Attacker::new(&net, org1(&net, "peer2"));
    let rt = runtime();
    let gw = Arc::new(rt.block_on(async { net.gateway("Org1MSP") }));
    rt.block_on(async {
        mint(&gw, 10, 1_000_000).await;
        assert_peers_agree(&net).await;
        let to = net.peer_configs[gossip_only]
            .gossip
            .external_endpoint
            .clone();
        let ledger = net.ledger(gossip_only);
        let (h, prev) = (ledger.height(), ledger.last_block_hash().unwrap().unwrap());
        let tx = attacker.open(&to).await.unwrap();
        tx.send(attacker.alive()).await.unwrap();
        // Three blocks ahead of the chain: they wait in the reorder buffer.
        for n in h + 1..h + 4 {
            let mut ahead = block::new_block(n, vec![7; 32], vec![b"ahead".to_vec()], 0);
            block::sign_block(&mut ahead, CHANNEL, &attacker.identity);
            tx.send(block_message(CHANNEL, ahead)).await.unwrap();
        }
        // Three forged next blocks, one after the other: three refusals, the sender is banned.
        let m = net.peer(gossip_only).registry.metrics.clone();
        for i in 0..3u64 {
            let mut forged = block::new_block(h, prev.to_vec(), vec![b"forged".to_vec()], 0);
            block::sign_block(&mut forged, CHANNEL, &attacker.identity);
            tx.send(block_message(CHANNEL, forged)).await.unwrap();
            wait_until("forged block refused", WAIT, || m.blocks_refused.get() > i).await;
        }
        // The chain moves on past the buffered forgeries.
        let codes = transfers(gw.clone(), 100, 10, 8).await;
        assert_codes_valid_or_conflict(&codes);
        assert!(net.orderer_height() > h + 4);
        assert_peers_agree(&net).await;
        assert_eq!(
            m.blocks_refused.get(),
            3,
            "blocks of a banned sender were still taken from the reorder buffer"
        );
        assert_eq!(m.gossip_dropped_count("banned_sender_buffered"), 3);
    });
}
