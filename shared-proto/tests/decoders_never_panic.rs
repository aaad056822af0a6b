//! Every decoder shared-proto exposes returns a typed error on arbitrary bytes; none panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use prost::Message as _;
use shared_proto::channel;
use shared_proto::channel::Channel;
use shared_proto::material::NetworkSpec;
use shared_proto::msp;
use shared_proto::msp::CertificateAuthority;
use shared_proto::msp::Msp;
use shared_proto::msp::MspManager;
use shared_proto::msp::Validity;
use shared_proto::pb;
use shared_proto::policy::Policy;
use shared_proto::signing;
use shared_proto::signing::Domain;

fn manager() -> &'static MspManager {
    use std::sync::OnceLock;
    static M: OnceLock<MspManager> = OnceLock::new();
    M.get_or_init(|| {
        let ca = CertificateAuthority::generate("ca", "Org1", Validity::days_from(0, 1)).unwrap();
        MspManager::new([Msp::new("Org1MSP", &[ca.cert_der().to_vec()], None).unwrap()])
    })
}

fn decode_all_messages(bytes: &[u8]) {
    let _ = pb::common::Envelope::decode(bytes);
    let _ = pb::common::Payload::decode(bytes);
    let _ = pb::common::Block::decode(bytes);
    let _ = pb::msp::SerializedIdentity::decode(bytes);
    let _ = pb::tx::SignedProposal::decode(bytes);
    let _ = pb::tx::Proposal::decode(bytes);
    let _ = pb::tx::ProposalResponsePayload::decode(bytes);
    let _ = pb::tx::Transaction::decode(bytes);
    let _ = pb::tx::TxReadWriteSet::decode(bytes);
    let _ = pb::orderer::SeekInfo::decode(bytes);
    let _ = pb::peer::GossipMessage::decode(bytes);
    if let Ok(config) = pb::config::ChannelConfig::decode(bytes) {
        let _ = Channel::from_config(config);
    }
    if let Ok(block) = pb::common::Block::decode(bytes) {
        let _ = channel::config_from_block(&block);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all_messages(&bytes);
        prop_assert!(msp::CertInfo::from_der(&bytes).is_err());
        prop_assert!(manager().deserialize_identity(&bytes, 0).is_err());
        prop_assert!(manager().validate("Org1MSP", &bytes, 0).is_err());
        let text = String::from_utf8_lossy(&bytes);
        let _ = msp::pem_to_der(&text);
        let _ = msp::pem_to_der_all(&text);
        prop_assert!(msp::key_from_pem(&text).is_err());
        let _ = Policy::parse(&text);
        let _ = NetworkSpec::from_toml(&text);
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        prop_assert!(signing::verify(&key, Domain::Envelope, &[b"m"], &bytes).is_err());
    }

    #[test]
    fn corrupted_genesis_block_is_refused_or_still_consistent(flip in 0usize..4096, bit in 0u8..8) {
        let block = genesis();
        let mut bytes = block.encode_to_vec();
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(b) = pb::common::Block::decode(bytes.as_slice()) {
            // Either refused, or (a flip outside the hashed data) it still decodes to a config
            // for the same channel.
            if let Ok(config) = channel::config_from_block(&b) {
                prop_assert_eq!(config.channel_id, "mychannel");
            }
        }
    }
}

fn genesis() -> pb::common::Block {
    use std::sync::OnceLock;
    static B: OnceLock<pb::common::Block> = OnceLock::new();
    B.get_or_init(|| {
        let spec =
            NetworkSpec::from_toml(include_str!("../../deploy/sample-network.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let g =
            shared_proto::material::generate(&spec, &dir.path().join("n"), 1_790_000_000).unwrap();
        pb::common::Block::decode(std::fs::read(&g.channels[0].1).unwrap().as_slice()).unwrap()
    })
    .clone()
}
