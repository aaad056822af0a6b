#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

use super::*;
use crate::envelope::create_signed_envelope;
use crate::envelope::new_nonce;
use crate::envelope::testnet::foreign;
use crate::envelope::testnet::net;
use crate::envelope::testnet::LATER;
use crate::envelope::testnet::NOW;
use crate::msp::Role;
use crate::pb::common::HeaderType;

const CHANNEL: &str = "mychannel";

fn envelopes(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            create_signed_envelope(
                &net().client,
                HeaderType::EndorserTransaction,
                CHANNEL,
                format!("tx {i}").into_bytes(),
                new_nonce(),
                1_000,
            )
            .encode_to_vec()
        })
        .collect()
}

/// Block `number` after `previous`, cut and signed by orderer1.
fn signed_block(number: u64, previous: &Hash) -> Block {
    let mut block = new_block(number, previous.to_vec(), envelopes(2), 0);
    sign_block(&mut block, CHANNEL, &net().orderers[0]);
    block
}

fn genesis_hash() -> Hash {
    header_hash(&net().genesis).unwrap()
}

fn verify(block: &Block, expected: Expected) -> Result<Hash, BlockError> {
    verify_block(&net().channel, block, expected, NOW)
}

fn after_genesis() -> Expected {
    Expected::after(0, genesis_hash())
}

#[test]
fn new_block_has_header_data_hash_and_metadata_but_no_signatures() {
    let data = envelopes(3);
    let block = new_block(7, vec![0xaa; 32], data.clone(), 4);
    let header = block.header.as_ref().unwrap();
    assert_eq!(header.number, 7);
    assert_eq!(header.previous_hash, vec![0xaa; 32]);
    assert_eq!(header.data_hash, hash::block_data_hash(&data).to_vec());
    assert_eq!(tx_envelopes(&block), data.as_slice());
    assert_eq!(last_config_index(&block), 4);
    let metadata = block.metadata.as_ref().unwrap();
    assert!(metadata.signatures.is_empty());
    assert_eq!(metadata.last_config_index, 4);
    assert!(validation_codes(&block).is_empty());
    assert_eq!(
        header_hash(&block).unwrap(),
        hash::block_header_hash(header)
    );
    assert!(tx_envelopes(&Block::default()).is_empty());
    assert!(validation_codes(&Block::default()).is_empty());
}

#[test]
fn block_signed_by_an_orderer_verifies_and_returns_its_header_hash() {
    let block = signed_block(1, &genesis_hash());
    let h = verify(&block, after_genesis()).unwrap();
    assert_eq!(h, header_hash(&block).unwrap());
    // Also when the previous hash is not known, and after an encode/decode round trip.
    let decoded = Block::decode(block.encode_to_vec().as_slice()).unwrap();
    let unknown = Expected {
        number: 1,
        previous_hash: None,
    };
    assert_eq!(verify(&decoded, unknown).unwrap(), h);
}

#[test]
fn chain_of_three_blocks_verifies_link_by_link() {
    let net = net();
    let mut previous = genesis_hash();
    for number in 1..=3 {
        let mut block = new_block(number, previous.to_vec(), envelopes(1), 0);
        // Each orderer signs its own copy; any of them is enough for ANY BlockValidation.
        let orderer = &net.orderers[(number as usize) % net.orderers.len()];
        sign_block(&mut block, CHANNEL, orderer);
        let h = verify(&block, Expected::after(number - 1, previous)).unwrap();
        assert_ne!(h, previous);
        previous = h;
    }
}

#[test]
fn block_signed_by_every_orderer_verifies() {
    let net = net();
    let mut block = new_block(1, genesis_hash().to_vec(), envelopes(1), 0);
    for orderer in &net.orderers {
        sign_block(&mut block, CHANNEL, orderer);
    }
    assert_eq!(block.metadata.as_ref().unwrap().signatures.len(), 3);
    verify(&block, after_genesis()).unwrap();
}

#[test]
fn wrong_number_is_refused() {
    let block = signed_block(2, &genesis_hash());
    let err = verify(&block, after_genesis()).unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::WrongNumber {
                expected: 1,
                found: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::InvalidArgument);
}

#[test]
fn wrong_previous_hash_is_refused() {
    let block = signed_block(1, &[0x55; 32]);
    let err = verify(&block, after_genesis()).unwrap_err();
    assert!(
        matches!(err, BlockError::WrongPreviousHash { number: 1 }),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::InvalidArgument);

    // Unknown previous hash: still must be a hash.
    let mut short = new_block(1, vec![1, 2, 3], envelopes(1), 0);
    sign_block(&mut short, CHANNEL, &net().orderers[0]);
    let unknown = Expected {
        number: 1,
        previous_hash: None,
    };
    assert!(matches!(
        verify(&short, unknown),
        Err(BlockError::WrongPreviousHash { number: 1 })
    ));

    // Block 0 has no previous block.
    let mut zero = new_block(0, vec![0; 32], envelopes(1), 0);
    sign_block(&mut zero, CHANNEL, &net().orderers[0]);
    let expected = Expected {
        number: 0,
        previous_hash: Some([0; 32]),
    };
    assert!(matches!(
        verify(&zero, expected),
        Err(BlockError::WrongPreviousHash { number: 0 })
    ));
}

#[test]
fn tampered_data_is_refused() {
    let mut block = signed_block(1, &genesis_hash());
    block.data.as_mut().unwrap().data[1][10] ^= 0x01;
    let err = verify(&block, after_genesis()).unwrap_err();
    assert!(
        matches!(err, BlockError::DataHashMismatch { number: 1 }),
        "{err:?}"
    );

    // Dropped or added transactions too.
    let mut block = signed_block(1, &genesis_hash());
    block.data.as_mut().unwrap().data.pop();
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::DataHashMismatch { .. })
    ));
    let mut block = signed_block(1, &genesis_hash());
    block.data.as_mut().unwrap().data.push(b"extra".to_vec());
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::DataHashMismatch { .. })
    ));
}

#[test]
fn signatures_by_non_orderers_do_not_satisfy_block_validation() {
    let net = net();
    for who in [&net.client, &net.peer, &net.admin] {
        let mut block = new_block(1, genesis_hash().to_vec(), envelopes(1), 0);
        sign_block(&mut block, CHANNEL, who);
        let err = verify(&block, after_genesis()).unwrap_err();
        assert!(
            matches!(err, BlockError::PolicyNotSatisfied { number: 1 }),
            "{err:?}"
        );
        assert_eq!(err.refusal(), Refusal::PermissionDenied);
    }
    // A valid extra signature by a member does not spoil an orderer's.
    let mut block = signed_block(1, &genesis_hash());
    sign_block(&mut block, CHANNEL, &net.client);
    verify(&block, after_genesis()).unwrap();
}

#[test]
fn header_changed_after_signing_is_refused() {
    let mut block = signed_block(1, &genesis_hash());
    block.header.as_mut().unwrap().previous_hash = vec![0x77; 32];
    let unknown = Expected {
        number: 1,
        previous_hash: None,
    };
    let err = verify(&block, unknown).unwrap_err();
    assert!(
        matches!(
            &err,
            BlockError::BadSignature { number: 1, index: 0, signer, reason: MspError::BadSignature { .. } }
                if signer == "OrdererMSP/orderer1"
        ),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);
}

#[test]
fn last_config_index_changed_after_signing_is_refused() {
    let mut block = signed_block(1, &genesis_hash());
    block.metadata.as_mut().unwrap().last_config_index = 1;
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::BadSignature { .. })
    ));
}

#[test]
fn validation_codes_do_not_affect_verification() {
    let mut block = signed_block(1, &genesis_hash());
    let h = verify(&block, after_genesis()).unwrap();
    set_validation_codes(&mut block, &[0, 11]);
    assert_eq!(validation_codes(&block), &[0, 11]);
    assert_eq!(verify(&block, after_genesis()).unwrap(), h);
    let mut bare = Block::default();
    set_validation_codes(&mut bare, &[3]);
    assert_eq!(validation_codes(&bare), &[3]);
}

#[test]
fn unsigned_block_is_refused() {
    let block = new_block(1, genesis_hash().to_vec(), envelopes(1), 0);
    let err = verify(&block, after_genesis()).unwrap_err();
    assert!(
        matches!(err, BlockError::NoSignatures { number: 1 }),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);
}

#[test]
fn signature_made_for_another_channel_is_refused() {
    let mut block = new_block(1, genesis_hash().to_vec(), envelopes(1), 0);
    sign_block(&mut block, "other", &net().orderers[0]);
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::BadSignature { number: 1, .. })
    ));
}

#[test]
fn one_bad_entry_refuses_the_block_even_beside_a_good_one() {
    let net = net();
    // Garbage identity.
    let mut block = signed_block(1, &genesis_hash());
    block
        .metadata
        .as_mut()
        .unwrap()
        .signatures
        .push(MetadataSignature {
            signer: vec![0x0f, 0xff],
            signature: vec![0; 64],
        });
    let err = verify(&block, after_genesis()).unwrap_err();
    assert!(
        matches!(&err, BlockError::BadSignature { index: 1, signer, reason: MspError::MalformedIdentity { .. }, .. } if signer == "#1"),
        "{err:?}"
    );
    // An orderer of a foreign CA.
    let mut block = signed_block(1, &genesis_hash());
    sign_block(&mut block, CHANNEL, &foreign("OrdererMSP", Role::Orderer));
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::BadSignature {
            index: 1,
            reason: MspError::UntrustedIssuer { .. },
            ..
        })
    ));
    // A good orderer's signature entry with a truncated signature.
    let mut block = signed_block(1, &genesis_hash());
    sign_block(&mut block, CHANNEL, &net.orderers[1]);
    block.metadata.as_mut().unwrap().signatures[1]
        .signature
        .truncate(32);
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::BadSignature { index: 1, .. })
    ));
}

#[test]
fn expired_orderer_certificate_is_refused() {
    let block = signed_block(1, &genesis_hash());
    let err = verify_block(&net().channel, &block, after_genesis(), LATER).unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::BadSignature {
                reason: MspError::Expired { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn too_many_signatures_are_refused_before_any_is_checked() {
    let mut block = signed_block(1, &genesis_hash());
    let entry = block.metadata.as_ref().unwrap().signatures[0].clone();
    block.metadata.as_mut().unwrap().signatures = vec![entry; MAX_BLOCK_SIGNATURES + 1];
    assert!(matches!(
        verify(&block, after_genesis()),
        Err(BlockError::TooManySignatures { count, .. }) if count == MAX_BLOCK_SIGNATURES + 1
    ));
}

#[test]
fn missing_parts_are_malformed() {
    let good = signed_block(1, &genesis_hash());
    for strip in 0..3 {
        let mut block = good.clone();
        match strip {
            0 => block.header = None,
            1 => block.data = None,
            _ => block.metadata = None,
        }
        let err = verify(&block, after_genesis()).unwrap_err();
        assert!(matches!(err, BlockError::Malformed { .. }), "{err:?}");
        assert_eq!(err.refusal(), Refusal::InvalidArgument);
    }
    assert!(matches!(
        header_hash(&Block::default()),
        Err(BlockError::Malformed { .. })
    ));
    // Signing a headerless block adds nothing.
    let mut headerless = Block::default();
    sign_block(&mut headerless, CHANNEL, &net().orderers[0]);
    assert!(headerless.metadata.is_none());
}

#[test]
fn genesis_block_is_checked_by_verify_genesis_not_verify_block() {
    let net = net();
    let (channel, h) = verify_genesis(&net.genesis).unwrap();
    assert_eq!(channel.id(), CHANNEL);
    assert_eq!(h, genesis_hash());
    // The full rules want signatures, which a genesis block does not have.
    let zero = Expected {
        number: 0,
        previous_hash: None,
    };
    assert!(matches!(
        verify(&net.genesis, zero),
        Err(BlockError::NoSignatures { number: 0 })
    ));

    let mut tampered = net.genesis.clone();
    tampered.data.as_mut().unwrap().data[0][20] ^= 0x01;
    assert!(matches!(
        verify_genesis(&tampered),
        Err(BlockError::DataHashMismatch { number: 0 })
    ));

    let mut numbered = net.genesis.clone();
    numbered.header.as_mut().unwrap().number = 1;
    assert!(matches!(
        verify_genesis(&numbered),
        Err(BlockError::WrongNumber {
            expected: 0,
            found: 1
        })
    ));

    // A block 0 that is not a config block.
    let not_config = new_block(0, vec![], envelopes(1), 0);
    let err = verify_genesis(&not_config).unwrap_err();
    assert!(
        matches!(err, BlockError::Config { number: 0, .. }),
        "{err:?}"
    );

    assert!(matches!(
        verify_genesis(&Block::default()),
        Err(BlockError::Malformed { .. })
    ));
}
