//! Catch-up verifies historical blocks as peers verify them: a block signed by an orderer
//! whose certificate has since expired still verifies.

use prost::Message as _;
use shared_proto::block;
use shared_proto::block::BlockError;
use shared_proto::block::Expected;
use shared_proto::channel::Channel;
use shared_proto::material;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;

const SPEC: &str = r#"
name = "history"
validity_days = 30
[[orderer_orgs]]
msp_id = "OrdererMSP"
[[orderer_orgs.orderers]]
name = "orderer1"
port = 7050
cluster_port = 7051
ops_port = 7052
[[peer_orgs]]
msp_id = "Org1MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7060
gossip_port = 7061
ops_port = 7062
[[channels]]
id = "historychannel"
"#;

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Before the fix catch-up verified pulled blocks against the wall clock, so once the
/// certificate that signed a block expired, a lagging orderer refused that block from every
/// other orderer and never closed its gap.
#[test]
fn block_signed_by_a_since_expired_orderer_certificate_still_verifies_in_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    // Material issued 60 days ago with 30-day certificates: expired for a month now.
    let issued = now_unix() - 60 * 86_400;
    let spec = NetworkSpec::from_toml(SPEC).unwrap();
    let generated = material::generate(&spec, &dir.path().join("net"), issued).unwrap();
    let genesis =
        Block::decode(std::fs::read(&generated.channels[0].1).unwrap().as_slice()).unwrap();
    let channel = Channel::from_config_block(&genesis).unwrap();
    let o = &generated.orderers[0];
    let signer = SigningIdentity::from_pem_files(
        &o.msp_id,
        &o.dir.join("msp/cert.pem"),
        &o.dir.join("msp/key.pem"),
    )
    .unwrap();
    let genesis_hash = block::header_hash(&genesis).unwrap();
    // Block 1, cut and signed while the certificate was valid.
    let mut b = block::new_block(1, genesis_hash.to_vec(), vec![b"tx".to_vec()], 0);
    block::sign_block(&mut b, channel.id(), &signer);
    let expected = Expected {
        number: 1,
        previous_hash: Some(genesis_hash),
    };

    // What catch-up did: the signature is refused because the certificate has expired now.
    let at_wall_clock = block::verify_block(&channel, &b, expected, now_unix());
    assert!(
        matches!(at_wall_clock, Err(BlockError::BadSignature { .. })),
        "{at_wall_clock:?}"
    );
    // What it does: verified as peers verify it.
    orderer::catchup::verify_pulled(&channel, &b, expected).unwrap();
    // And a forged block is still refused.
    let mut forged = b.clone();
    forged
        .data
        .as_mut()
        .unwrap()
        .data
        .push(b"smuggled".to_vec());
    assert!(matches!(
        orderer::catchup::verify_pulled(&channel, &forged, expected),
        Err(BlockError::DataHashMismatch { .. })
    ));
}
