//! Refused joins (a peer on its own: no orderer is needed to refuse): each refusal has its
//! code, and leaves the peer's channels and its DATA_DIR/channels record as they were.
//!
//! The network: Org1, Org2, Org3, one peer each; `e2echannel` and `second` (Org1, Org2),
//! `others` (Org2, Org3). The peer under test is Org1's, started with `e2echannel` only. A
//! second network generated from the same spec (same org names, other CAs) supplies a block of
//! "another network".

use crate::common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use peer::participation::client::join_request;
use peer::participation::client::join_request_for;
use peer::participation::client::AdminClient;
use peer::sdk::ClientTls;
use prost::Message as _;
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
use tonic::Code;

const SECOND: &str = "second";
const OTHERS: &str = "others";

fn spec() -> NetworkSpec {
    let org = |msp: &str| PeerOrgSpec {
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
    };
    let channel = |id: &str, orgs: &[&str]| ChannelSpec {
        id: id.into(),
        orgs: Some(orgs.iter().map(|o| (*o).to_owned()).collect()),
        batch: Default::default(),
        policies: Default::default(),
        chaincodes: vec![ChaincodeSpec {
            name: "kv".into(),
            version: "1.0".into(),
            endorsement_policy: "MAJORITY Endorsement".into(),
        }],
    };
    NetworkSpec {
        name: "join-refusals".into(),
        validity_days: 30,
        tls_key_algorithm: Default::default(),
        orderer_orgs: vec![OrdererOrgSpec {
            msp_id: "OrdererMSP".into(),
            orderers: vec![OrdererSpec {
                name: "orderer1".into(),
                id: None,
                host: "127.0.0.1".into(),
                port: port(),
                cluster_port: port(),
                ops_port: port(),
            }],
        }],
        peer_orgs: vec![org("Org1MSP"), org("Org2MSP"), org("Org3MSP")],
        channels: vec![
            channel(CHANNEL, &["Org1MSP", "Org2MSP"]),
            channel(SECOND, &["Org1MSP", "Org2MSP"]),
            channel(OTHERS, &["Org2MSP", "Org3MSP"]),
        ],
    }
}

/// The material (generated once; each test runs its own peer on its own data dir).
struct Material {
    _dir: tempfile::TempDir,
    net: Generated,
    /// The same spec generated again: other CAs under the same org names.
    foreign: Generated,
}

fn material() -> &'static Material {
    static M: OnceLock<Material> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec();
        let net = material::generate(&spec, &dir.path().join("net"), now_unix()).unwrap();
        let foreign = material::generate(&spec, &dir.path().join("foreign"), now_unix()).unwrap();
        Material {
            _dir: dir,
            net,
            foreign,
        }
    })
}

fn genesis(net: &Generated, id: &str) -> Vec<u8> {
    let (_, path) = net.channels.iter().find(|(c, _)| c == id).unwrap();
    std::fs::read(path).unwrap()
}

fn identity(net: &Generated, msp: &str, user: &str) -> SigningIdentity {
    let u = net.user(msp, user).unwrap();
    SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
}

/// What a refusal must leave as it was: the channels the peer runs and its join records.
#[derive(Debug, PartialEq, Eq)]
struct Joined {
    channels: Vec<String>,
    records: Vec<PathBuf>,
}

fn joined(node: &peer::Node, data_dir: &std::path::Path) -> Joined {
    let mut records: Vec<PathBuf> = std::fs::read_dir(data_dir.join("channels"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    records.sort();
    Joined {
        channels: node.registry.ids(),
        records,
    }
}

/// Starts Org1's peer (with `e2echannel` only) on a fresh data dir, sends `request` over TLS
/// as `tls_user` of `tls_org`, and checks the refusal's code and message and that nothing
/// changed.
fn assert_refused(
    tls_org: &str,
    tls_user: &str,
    request: shared_proto::pb::common::Envelope,
    code: Code,
    message: &str,
) {
    let m = material();
    let data = tempfile::tempdir().unwrap();
    let p = m.net.peers.iter().find(|p| p.msp_id == "Org1MSP").unwrap();
    let mut config = PeerConfig::load(&p.config).unwrap();
    config.log.level = "warn".into();
    config.data_dir = data.path().to_path_buf();
    config
        .channels
        .retain(|b| b.genesis_block.parent().and_then(|d| d.file_name()) == Some(CHANNEL.as_ref()));
    runtime().block_on(async {
        let node = crate::live_config::start(&config).await;
        let before = joined(&node, data.path());
        assert_eq!(before.channels, [CHANNEL]);
        let tls = ClientTls::from_network(&m.net, tls_org, tls_user).unwrap();
        let client = AdminClient::new(
            identity(&m.net, tls_org, tls_user),
            &node.service_addr.to_string(),
            &tls,
        )
        .unwrap();
        let err = client.send(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert!(
            err.message().contains(message),
            "{:?} does not say {message:?}",
            err.message()
        );
        assert_eq!(joined(&node, data.path()), before);
        node.shutdown().await.unwrap();
    });
}

fn admin_request(block: Vec<u8>) -> shared_proto::pb::common::Envelope {
    let admin = identity(&material().net, "Org1MSP", "Admin");
    join_request(&admin, block, now_ms())
}

fn now_ms() -> u64 {
    peer::query::now_unix_ms()
}

#[test]
fn join_with_bytes_that_are_no_block_is_invalid_argument() {
    let admin = identity(&material().net, "Org1MSP", "Admin");
    let request = join_request_for(&admin, SECOND, b"not a block".to_vec(), now_ms());
    assert_refused("Org1MSP", "Admin", request, Code::InvalidArgument, "decode");
}

#[test]
fn join_with_a_block_that_is_not_block_0_is_failed_precondition() {
    let mut block = Block::decode(genesis(&material().net, SECOND).as_slice()).unwrap();
    block.header.as_mut().unwrap().number = 1;
    let request = admin_request(block.encode_to_vec());
    assert_refused(
        "Org1MSP",
        "Admin",
        request,
        Code::FailedPrecondition,
        "block 0",
    );
}

#[test]
fn join_of_a_channel_already_joined_is_already_exists() {
    let request = admin_request(genesis(&material().net, CHANNEL));
    assert_refused("Org1MSP", "Admin", request, Code::AlreadyExists, "already");
}

#[test]
fn join_with_a_block_of_another_network_is_failed_precondition() {
    let request = admin_request(genesis(&material().foreign, SECOND));
    assert_refused(
        "Org1MSP",
        "Admin",
        request,
        Code::FailedPrecondition,
        "another network",
    );
}

#[test]
fn join_of_a_channel_without_this_peers_org_is_failed_precondition() {
    let request = admin_request(genesis(&material().net, OTHERS));
    assert_refused(
        "Org1MSP",
        "Admin",
        request,
        Code::FailedPrecondition,
        "Org1MSP",
    );
}

#[test]
fn join_signed_by_a_client_of_the_peers_org_is_permission_denied() {
    let user = identity(&material().net, "Org1MSP", "User1");
    let request = join_request(&user, genesis(&material().net, SECOND), now_ms());
    assert_refused("Org1MSP", "User1", request, Code::PermissionDenied, "admin");
}

#[test]
fn join_signed_by_an_admin_of_another_org_is_permission_denied() {
    let other = identity(&material().net, "Org2MSP", "Admin");
    let request = join_request(&other, genesis(&material().net, SECOND), now_ms());
    assert_refused(
        "Org2MSP",
        "Admin",
        request,
        Code::PermissionDenied,
        "Org1MSP",
    );
}

#[test]
fn join_over_a_tls_certificate_of_another_org_is_permission_denied() {
    let request = admin_request(genesis(&material().net, SECOND));
    assert_refused("Org2MSP", "User1", request, Code::PermissionDenied, "TLS");
}

#[test]
fn join_signed_twenty_minutes_ago_is_permission_denied() {
    let admin = identity(&material().net, "Org1MSP", "Admin");
    let stale = now_ms() - 20 * 60 * 1000;
    let request = join_request(&admin, genesis(&material().net, SECOND), stale);
    assert_refused(
        "Org1MSP",
        "Admin",
        request,
        Code::PermissionDenied,
        "timestamp",
    );
}

/// The control: the same peer and material accept a proper request and record the block; the
/// channel owns its tasks (stopping it ends them) and starts again with the peer.
#[test]
fn join_by_the_peers_org_admin_records_the_block_and_starts_the_channel() {
    let m = material();
    let data = tempfile::tempdir().unwrap();
    let p = m.net.peers.iter().find(|p| p.msp_id == "Org1MSP").unwrap();
    let mut config = PeerConfig::load(&p.config).unwrap();
    config.log.level = "warn".into();
    config.data_dir = data.path().to_path_buf();
    config
        .channels
        .retain(|b| b.genesis_block.parent().and_then(|d| d.file_name()) == Some(CHANNEL.as_ref()));
    runtime().block_on(async {
        let node = crate::live_config::start(&config).await;
        let client =
            AdminClient::from_network(&m.net, "Org1MSP", "Admin", &node.service_addr.to_string())
                .unwrap();
        let info = client.join(genesis(&m.net, SECOND)).await.unwrap();
        assert_eq!((info.channel_id.as_str(), info.height), (SECOND, 1));
        let after = joined(&node, data.path());
        assert_eq!(after.channels, [CHANNEL, SECOND]);
        assert_eq!(after.records, [data.path().join("channels/second.block")]);
        assert_eq!(
            std::fs::read(&after.records[0]).unwrap(),
            genesis(&m.net, SECOND)
        );
        // Stopped, it is served no more and its tasks (gossip, deliver client) end: nothing
        // but this test holds its committer then.
        let channel = node.registry.get(SECOND).unwrap();
        peer::runtime::stop(&node.channels, SECOND);
        assert_eq!(node.registry.ids(), [CHANNEL]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::sync::Arc::strong_count(&channel.committer) > 1 {
            assert!(std::time::Instant::now() < deadline, "its tasks still run");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(channel); // its ledger holds the data dir's storage open
        node.shutdown().await.unwrap();
        // Restarted: the recorded channel starts again.
        let node = crate::live_config::start(&config).await;
        assert_eq!(node.registry.ids(), [CHANNEL, SECOND]);
        assert_eq!(node.registry.get(SECOND).unwrap().ledger.height(), 1);
        node.shutdown().await.unwrap();
    });
}
