//! Live configuration on a real peer (TLS, its own data dir): a config block that adds an org
//! and a chaincode, committed through the peer's commit path (the one deliver and gossip feed),
//! switches what every service uses (the endorser's MSPs and chaincode definitions, validation
//! of the next block), and the peer keeps that config when it is stopped and started again on
//! the same data dir. No orderer runs: the blocks are built and signed here with an orderer's
//! identity, as the orderers would cut them.

use crate::common;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use peer::chaincode::kv::KvChaincode;
use peer::chaincode::ChaincodeRegistry;
use peer::sdk::Gateway;
use peer::sdk::SdkError;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update::build_update;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::envelope::new_nonce;
use shared_proto::hash;
use shared_proto::material;
use shared_proto::material::ChaincodeSpec;
use shared_proto::material::ChannelSpec;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::material::OrdererOrgSpec;
use shared_proto::material::OrdererSpec;
use shared_proto::material::PeerOrgSpec;
use shared_proto::material::PeerSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::PeerConfig;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::config::ChaincodeDefinition;
use shared_proto::pb::config::Policy;
use shared_proto::pb::tx::ChaincodeAction;
use shared_proto::pb::tx::ChaincodeId;
use shared_proto::pb::tx::Endorsement;
use shared_proto::pb::tx::KvWrite;
use shared_proto::pb::tx::NsReadWriteSet;
use shared_proto::pb::tx::Proposal;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::Response;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::signing::Domain;

/// The chaincode the config block defines (the kv contract, installed under this name).
const NOTES: &str = "notes";
const WIDE: &str = "widechannel";

fn peer_org(msp: &str) -> PeerOrgSpec {
    PeerOrgSpec {
        msp_id: msp.into(),
        peers: vec![PeerSpec {
            name: "peer0".into(),
            host: "127.0.0.1".into(),
            port: port(),
            gossip_port: port(),
            ops_port: port(),
            orderer_connected: true,
        }],
        users: vec!["User1".into()],
    }
}

/// `orderers` orderers (all in the genesis `orderer_endpoints`, in order); Org1 and Org2 on
/// [`CHANNEL`]; Org3 in the network (and in `widechannel`, where its definition is taken from)
/// but not on the channel.
pub(crate) fn generate(dir: &std::path::Path, orderers: usize) -> Generated {
    let spec = NetworkSpec {
        name: "live-config".into(),
        validity_days: 30,
        tls_key_algorithm: Default::default(),
        orderer_orgs: vec![OrdererOrgSpec {
            msp_id: "OrdererMSP".into(),
            orderers: (1..=orderers)
                .map(|i| OrdererSpec {
                    name: format!("orderer{i}"),
                    id: None,
                    host: "127.0.0.1".into(),
                    port: port(),
                    cluster_port: port(),
                    ops_port: port(),
                })
                .collect(),
        }],
        peer_orgs: vec![
            peer_org("Org1MSP"),
            peer_org("Org2MSP"),
            peer_org("Org3MSP"),
        ],
        channels: vec![
            ChannelSpec {
                id: CHANNEL.into(),
                orgs: Some(vec!["Org1MSP".into(), "Org2MSP".into()]),
                batch: Default::default(),
                policies: Default::default(),
                chaincodes: vec![ChaincodeSpec {
                    name: "kv".into(),
                    version: "1.0".into(),
                    endorsement_policy: "MAJORITY Endorsement".into(),
                }],
            },
            ChannelSpec {
                id: WIDE.into(),
                orgs: None,
                batch: material::BatchSpec::default(),
                policies: Default::default(),
                chaincodes: Vec::new(),
            },
        ],
    };
    material::generate(&spec, &dir.join("net"), now_unix()).unwrap()
}

pub(crate) fn genesis_of(g: &Generated, id: &str) -> Block {
    let (_, path) = g.channels.iter().find(|(c, _)| c == id).unwrap();
    Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

pub(crate) fn user(g: &Generated, msp: &str, name: &str) -> SigningIdentity {
    let u = g.user(msp, name).unwrap();
    SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
}

pub(crate) fn node_identity(msp: &str, dir: &std::path::Path) -> SigningIdentity {
    SigningIdentity::from_pem_files(msp, &dir.join("msp/cert.pem"), &dir.join("msp/key.pem"))
        .unwrap()
}

/// Starts the peer on fresh port-0 listeners, retrying while its predecessor's storage is
/// still being released.
pub(crate) async fn start(config: &PeerConfig) -> peer::Node {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listeners = peer::Listeners {
            service: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            gossip: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ops: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let chaincodes = ChaincodeRegistry::with_samples();
        chaincodes.register(NOTES, "1.0", Arc::new(KvChaincode));
        match peer::Node::start(config, listeners, chaincodes).await {
            Ok(node) => return node,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("peer did not start: {e}"),
        }
    }
}

/// The next block of `node`'s channel holding `data`, signed by `orderer`, with the
/// `last_config_index` the orderers give it (its own number for a config block).
fn next_block(
    node: &peer::Node,
    orderer: &SigningIdentity,
    data: Vec<u8>,
    lci: Option<u64>,
) -> Block {
    let committer = &node.registry.get(CHANNEL).unwrap().committer;
    let number = committer.ledger.height();
    let prev = committer.ledger.last_block_hash().unwrap().unwrap();
    let lci = lci.unwrap_or_else(|| {
        committer
            .live_config()
            .expected_last_config_index(number, false)
    });
    let mut b = block::new_block(number, prev.to_vec(), vec![data], lci);
    block::sign_block(&mut b, CHANNEL, orderer);
    b
}

/// Commits `block` through the peer's commit path; returns its codes.
fn commit(node: &peer::Node, block: Block) -> Vec<TxValidationCode> {
    let committer = node.registry.get(CHANNEL).unwrap().committer.clone();
    committer.process(block).unwrap().codes
}

/// A `notes` put of `key` created by `creator` and endorsed by `endorser`, built as the SDK
/// and an endorser would.
fn notes_put(creator: &SigningIdentity, endorser: &SigningIdentity, key: &str) -> Vec<u8> {
    let nonce = new_nonce();
    let creator_bytes = creator.serialized().to_vec();
    let tx_id = hash::tx_id(&nonce, &creator_bytes);
    let now_ms = (now_unix() as u64) * 1000;
    let proposal = Proposal {
        header: Some(Header {
            channel_header: Some(ChannelHeader {
                r#type: HeaderType::EndorserTransaction as i32,
                channel_id: CHANNEL.into(),
                tx_id,
                timestamp_unix_ms: now_ms,
            }),
            signature_header: Some(SignatureHeader {
                creator: creator_bytes,
                nonce: nonce.clone(),
            }),
        }),
        invocation: None,
    }
    .encode_to_vec();
    let payload = ProposalResponsePayload {
        proposal_hash: hash::proposal_hash(&proposal).to_vec(),
        action: Some(ChaincodeAction {
            chaincode_id: Some(ChaincodeId {
                name: NOTES.into(),
                version: "1.0".into(),
            }),
            results: Some(TxReadWriteSet {
                ns_rwset: vec![NsReadWriteSet {
                    namespace: NOTES.into(),
                    writes: vec![KvWrite {
                        key: key.into(),
                        is_delete: false,
                        value: b"v".to_vec(),
                    }],
                    ..Default::default()
                }],
            }),
            response: Some(Response {
                status: 200,
                ..Default::default()
            }),
            events: Vec::new(),
        }),
    }
    .encode_to_vec();
    let endorser_bytes = endorser.serialized().to_vec();
    let signature = endorser.sign(Domain::Endorsement, &[&payload, &endorser_bytes]);
    let tx = Transaction {
        proposal_response_payload: payload,
        endorsements: vec![Endorsement {
            endorser: endorser_bytes,
            signature,
        }],
        proposal,
    };
    create_signed_envelope(
        creator,
        HeaderType::EndorserTransaction,
        CHANNEL,
        tx.encode_to_vec(),
        nonce,
        now_ms,
    )
    .encode_to_vec()
}

fn range_all() -> [Vec<u8>; 2] {
    [Vec::new(), Vec::new()]
}

#[test]
fn peer_follows_a_config_block_in_every_service_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate(dir.path(), 1);
    let p = g.peers.iter().find(|p| p.msp_id == "Org1MSP").unwrap();
    let mut config = PeerConfig::load(&p.config).unwrap();
    config.log.level = "warn".into();
    let orderer = node_identity("OrdererMSP", &g.orderers[0].dir);
    let org3_peer = node_identity(
        "Org3MSP",
        &g.peers.iter().find(|p| p.msp_id == "Org3MSP").unwrap().dir,
    );
    let org3_client = user(&g, "Org3MSP", "User1");
    let rt = runtime();
    rt.block_on(async {
        let node = start(&config).await;
        let addr = node.service_addr.to_string();
        let gateway = |msp: &str| {
            Gateway::from_network_with_endorsers(&g, msp, "User1", CHANNEL, std::slice::from_ref(&addr)).unwrap()
        };
        let (org1, org3) = (gateway("Org1MSP"), gateway("Org3MSP"));
        // Before: `notes` is not defined on the channel, Org3's users are nobody there, and
        // a `notes` transaction endorsed by Org3's peer is invalid.
        let err = org1.evaluate(NOTES, "range", &range_all()).await.unwrap_err();
        assert!(
            matches!(&err, SdkError::Chaincode { status: 404, message } if message.contains("not defined")),
            "{err}"
        );
        let err = org3.evaluate("kv", "range", &range_all()).await.unwrap_err();
        assert!(
            matches!(&err, SdkError::Endorser { status, .. } if status.code() == tonic::Code::PermissionDenied),
            "{err}"
        );
        let before = next_block(&node, &orderer, notes_put(&org3_client, &org3_peer, "a"), None);
        assert_eq!(commit(&node, before), vec![TxValidationCode::BadCreatorSignature]);

        // The config block: Org3 and `notes` (endorsed by an Org3 peer), approved by the
        // admins of Org1 and Org2 (MAJORITY of Org1, Org2 and OrdererMSP).
        let current = node.registry.get(CHANNEL).unwrap().config();
        let org3_def = Channel::from_config_block(&genesis_of(&g, WIDE))
            .unwrap()
            .config()
            .application_orgs
            .iter()
            .find(|o| o.msp_id == "Org3MSP")
            .unwrap()
            .clone();
        let mut next = current.config().clone();
        next.sequence += 1;
        next.application_orgs.push(org3_def);
        next.chaincodes.push(ChaincodeDefinition {
            name: NOTES.into(),
            version: "1.0".into(),
            endorsement_policy: Some(Policy {
                rule: "OR('Org3MSP.peer')".into(),
            }),
        });
        let admins = [user(&g, "Org1MSP", "Admin"), user(&g, "Org2MSP", "Admin")];
        let update = build_update(&next, &[&admins[0], &admins[1]], &admins[0], (now_unix() as u64) * 1000);
        let number = node.registry.get(CHANNEL).unwrap().ledger.height();
        let config_block = next_block(&node, &orderer, update.encode_to_vec(), Some(number));
        assert_eq!(commit(&node, config_block), vec![TxValidationCode::Valid]);
        assert_eq!(node.registry.get(CHANNEL).unwrap().config().sequence(), 1);

        // After: the endorser knows `notes` and Org3, and the next block validates under
        // the new config.
        assert_eq!(org1.evaluate(NOTES, "range", &range_all()).await.unwrap(), b"[]");
        assert_eq!(org3.evaluate("kv", "range", &range_all()).await.unwrap(), b"[]");
        let after = next_block(&node, &orderer, notes_put(&org3_client, &org3_peer, "b"), None);
        assert_eq!(commit(&node, after), vec![TxValidationCode::Valid]);
        node.shutdown().await.unwrap();

        // Restarted on the same data dir, it reads its config from the config block.
        let node = start(&config).await;
        let channel = node.registry.get(CHANNEL).unwrap();
        assert_eq!(channel.config().sequence(), 1);
        assert_eq!(channel.ledger.height(), 4);
        assert_eq!(channel.committer.live_config().in_force_block(), 2);
        let addr = node.service_addr.to_string();
        let org3 =
            Gateway::from_network_with_endorsers(&g, "Org3MSP", "User1", CHANNEL, &[addr]).unwrap();
        assert_eq!(org3.evaluate(NOTES, "get", &[b"b".to_vec()]).await.unwrap(), b"v");
        let again = next_block(&node, &orderer, notes_put(&org3_client, &org3_peer, "c"), None);
        assert_eq!(commit(&node, again), vec![TxValidationCode::Valid]);

        // `peer channel list` shows it (from the peer's ops endpoint).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(["channel", "list", "--json", "--ops"])
            .arg(node.ops_addr.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e2e = listed["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == CHANNEL)
            .unwrap()
            .clone();
        assert_eq!(
            e2e,
            serde_json::json!({"id": CHANNEL, "height": 5, "config_sequence": 1, "config_block": 2})
        );
        node.shutdown().await.unwrap();
    });
}

/// A gossip-only peer gets the config block from its org's leader and commits it through the
/// same path: same code, same config in force.
#[test]
fn gossip_only_peer_takes_a_config_block_from_its_org_and_switches_too() {
    let net = TestNet::start_with(Topology {
        org1: vec![true, false],
        ..Default::default()
    })
    .unwrap();
    let (leader, member) = (
        net.peer_index("Org1MSP", "peer0"),
        net.peer_index("Org1MSP", "peer1"),
    );
    let orderer = {
        let c = &net.orderer_configs[0];
        SigningIdentity::from_pem_files(&c.msp_id, &c.identity.cert, &c.identity.key).unwrap()
    };
    let current = net.peer(leader).registry.get(CHANNEL).unwrap().config();
    let mut next = current.config().clone();
    next.sequence += 1;
    next.chaincodes.push(ChaincodeDefinition {
        name: NOTES.into(),
        version: "1.0".into(),
        endorsement_policy: Some(Policy {
            rule: "OR('Org1MSP.peer')".into(),
        }),
    });
    let admins = [
        user(&net.generated, "Org1MSP", "Admin"),
        user(&net.generated, "Org2MSP", "Admin"),
    ];
    let update = build_update(&next, &[&admins[0], &admins[1]], &admins[0], 0);
    let rt = runtime();
    rt.block_on(async {
        net.wait_peers_at(1, Duration::from_secs(30)).await.unwrap();
        // Only the leader is handed the block (as if its orderer delivered it).
        let number = net.ledger(leader).height();
        let config_block = next_block(
            net.peer(leader),
            &orderer,
            update.encode_to_vec(),
            Some(number),
        );
        assert_eq!(
            commit(net.peer(leader), config_block),
            vec![TxValidationCode::Valid]
        );
        workload::wait_until(
            "the member has the config block",
            Duration::from_secs(30),
            || net.ledger(member).height() > number,
        )
        .await;
    });
    let stored = net.ledger(member).block(1).unwrap().unwrap();
    assert_eq!(
        block::validation_codes(&stored),
        &[TxValidationCode::Valid as u8]
    );
    let config = net.peer(member).registry.get(CHANNEL).unwrap().config();
    assert_eq!(config.sequence(), 1);
    assert!(config.chaincode(NOTES).is_ok());
}
