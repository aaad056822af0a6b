//! Phase-1 behaviour: envelopes, creators, chaincode, read/write set shape, endorsements.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::msp::CertificateAuthority;
use shared_proto::msp::Role;
use shared_proto::msp::SigningIdentity;
use shared_proto::msp::Usage;
use shared_proto::msp::Validity;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::tx::KvRead;
use shared_proto::pb::tx::NsReadWriteSet;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::pb::tx::TxValidationCode as Code;
use shared_proto::signing::Domain;

use super::testkit::*;
use super::tx::check_rwset;
use super::validate_block;
use super::ValidatedBlock;
use super::MAX_ENDORSEMENTS;
use super::MAX_RWSET_ITEMS;
use crate::ledger::StateWrite;

fn validate(state: &MemState, data: Vec<Vec<u8>>) -> ValidatedBlock {
    validate_block(&kit().channel, state, &block(5, data), NOW).unwrap()
}

/// The code of a lone transaction in a block over empty state.
fn code_of(data: Vec<u8>) -> Code {
    let out = validate(&MemState::default(), vec![data]);
    assert_eq!(out.codes.len(), 1);
    out.codes[0]
}

fn write_a() -> TxReadWriteSet {
    Rw::new("token").write("a", b"1").set()
}

fn leak(identity: SigningIdentity) -> &'static SigningIdentity {
    Box::leak(Box::new(identity))
}

/// A payload signed by `signer` with a hand-made channel header (for malformed headers).
fn signed_payload(signer: &SigningIdentity, header: Option<Header>, data: Vec<u8>) -> Vec<u8> {
    let payload = Payload { header, data }.encode_to_vec();
    let signature = signer.sign(Domain::Envelope, &[&payload]);
    Envelope { payload, signature }.encode_to_vec()
}

#[test]
fn valid_token_tx_is_valid_and_its_writes_carry_block_and_index() {
    let tx0 = TxBuilder::token(Rw::new("token").write("a", b"1").delete("b").set());
    let tx1 = TxBuilder::token(Rw::new("token").read("q", None).write("c", b"3").set());
    let state = MemState::default();
    let out = validate_block(
        &kit().channel,
        &state,
        &block(7, vec![tx0.build(), tx1.build()]),
        NOW,
    )
    .unwrap();
    assert_eq!(out.codes, vec![Code::Valid, Code::Valid]);
    assert_eq!(out.filter_bytes(), vec![0, 0]);
    assert_eq!(out.tx_ids, vec![Some(tx0.tx_id()), Some(tx1.tx_id())]);
    let w = |key: &str, value: Option<&[u8]>, tx_num| StateWrite {
        namespace: "token".to_owned(),
        key: key.to_owned(),
        value: value.map(<[u8]>::to_vec),
        version: v(7, tx_num),
    };
    assert_eq!(
        out.writes,
        vec![
            w("a", Some(b"1"), 0),
            w("b", None, 0),
            w("c", Some(b"3"), 1)
        ]
    );
}

#[test]
fn and_policy_needs_a_peer_of_each_org() {
    let k = kit();
    let with = |endorsers: &[&'static SigningIdentity]| {
        code_of(
            TxBuilder::new("token", write_a())
                .endorsed_by(endorsers)
                .build(),
        )
    };
    assert_eq!(with(&[]), Code::EndorsementPolicyFailure);
    assert_eq!(with(&[&k.org1_peers[0]]), Code::EndorsementPolicyFailure);
    assert_eq!(with(&[&k.org2_peers[1]]), Code::EndorsementPolicyFailure);
    assert_eq!(
        with(&[&k.org1_peers[0], &k.org1_peers[1]]),
        Code::EndorsementPolicyFailure
    );
    // The same endorser twice is one signer.
    assert_eq!(
        with(&[&k.org1_peers[0], &k.org1_peers[0]]),
        Code::EndorsementPolicyFailure
    );
    assert_eq!(with(&[&k.org1_peers[0], &k.org2_peers[0]]), Code::Valid);
    assert_eq!(with(&[&k.org2_peers[1], &k.org1_peers[1]]), Code::Valid);
}

#[test]
fn endorsements_by_clients_or_admins_do_not_count_as_peers() {
    let k = kit();
    let with = |endorsers: &[&'static SigningIdentity]| {
        code_of(
            TxBuilder::new("token", write_a())
                .endorsed_by(endorsers)
                .build(),
        )
    };
    assert_eq!(
        with(&[&k.org1_peers[0], &k.client2]),
        Code::EndorsementPolicyFailure
    );
    assert_eq!(
        with(&[&k.org1_peers[0], &k.admin2]),
        Code::EndorsementPolicyFailure
    );
    assert_eq!(
        with(&[&k.client, &k.org2_peers[0]]),
        Code::EndorsementPolicyFailure
    );
}

#[test]
fn majority_endorsement_of_two_orgs_needs_both() {
    let k = kit();
    let with = |endorsers: &[&'static SigningIdentity]| {
        let rwset = Rw::new("kv").write("x", b"1").set();
        code_of(TxBuilder::new("kv", rwset).endorsed_by(endorsers).build())
    };
    assert_eq!(with(&[&k.org1_peers[0]]), Code::EndorsementPolicyFailure);
    assert_eq!(
        with(&[&k.org1_peers[0], &k.org1_peers[1]]),
        Code::EndorsementPolicyFailure
    );
    assert_eq!(
        with(&[&k.org1_peers[0], &k.client2]),
        Code::EndorsementPolicyFailure
    );
    assert_eq!(with(&[&k.org1_peers[1], &k.org2_peers[1]]), Code::Valid);
}

#[test]
fn forged_endorsement_signature_is_dropped_before_the_policy() {
    let k = kit();
    let b = TxBuilder::new("token", write_a()).endorsed_by(&[
        &k.org1_peers[0],
        &k.org2_peers[0],
        &k.org2_peers[1],
    ]);
    let forge = |index: usize, byte: usize| {
        let mut tx = b.transaction();
        tx.endorsements[index].signature[byte] ^= 0x01;
        b.envelope_of(&tx).encode_to_vec()
    };
    // Org2 still has a valid endorsement: the forged one is ignored (batch fallback).
    assert_eq!(code_of(forge(1, 0)), Code::Valid);
    assert_eq!(code_of(forge(2, 63)), Code::Valid);
    // Org1's only endorsement forged: the policy fails.
    assert_eq!(code_of(forge(0, 17)), Code::EndorsementPolicyFailure);

    // A signature of the wrong length, or over another payload, counts for nothing.
    let mut tx = b.transaction();
    tx.endorsements[0].signature.truncate(63);
    assert_eq!(
        code_of(b.envelope_of(&tx).encode_to_vec()),
        Code::EndorsementPolicyFailure
    );
    let other = TxBuilder::new("token", Rw::new("token").write("a", b"2").set());
    let mut tx = b.transaction();
    tx.endorsements[0] = endorse(&k.org1_peers[0], &other.payload());
    assert_eq!(
        code_of(b.envelope_of(&tx).encode_to_vec()),
        Code::EndorsementPolicyFailure
    );
    // An endorser field that is not an identity of the channel is dropped.
    let mut tx = b.transaction();
    tx.endorsements[0].endorser = b"nobody".to_vec();
    assert_eq!(
        code_of(b.envelope_of(&tx).encode_to_vec()),
        Code::EndorsementPolicyFailure
    );
}

#[test]
fn endorsement_by_a_foreign_ca_peer_is_refused() {
    let ca =
        CertificateAuthority::generate("ca.evil", "Org2MSP", Validity::days_from(NOW, 30)).unwrap();
    let cert = ca
        .issue(
            "peer9",
            Usage::Signing(Role::Peer),
            &[],
            Validity::days_from(NOW, 30),
        )
        .unwrap();
    let evil = leak(SigningIdentity::new("Org2MSP", cert.cert_der, cert.key).unwrap());
    let b = TxBuilder::new("token", write_a()).endorsed_by(&[&kit().org1_peers[0], evil]);
    assert_eq!(code_of(b.build()), Code::EndorsementPolicyFailure);
}

#[test]
fn creator_signature_and_identity_are_checked() {
    let b = TxBuilder::token(write_a());
    let mut env = b.envelope();
    env.signature[5] ^= 0x20;
    assert_eq!(code_of(env.encode_to_vec()), Code::BadCreatorSignature);

    let mut env = b.envelope();
    let last = env.payload.len() - 1;
    env.payload[last] ^= 0x01;
    // The last byte is inside `data` (a bytes field): still decodes, no longer signed.
    assert_eq!(code_of(env.encode_to_vec()), Code::BadCreatorSignature);

    // Another member's signature over the creator's payload.
    let mut env = b.envelope();
    env.signature = kit().client2.sign(Domain::Envelope, &[&env.payload]);
    assert_eq!(code_of(env.encode_to_vec()), Code::BadCreatorSignature);

    // Certificates expired at validation time.
    let later = NOW + 2 * 365 * 86_400;
    let out = validate_block(
        &kit().channel,
        &MemState::default(),
        &block(5, vec![b.build()]),
        later,
    )
    .unwrap();
    assert_eq!(out.codes, vec![Code::BadCreatorSignature]);
    assert_eq!(out.tx_ids, vec![None]);
}

#[test]
fn header_problems_get_their_codes() {
    let k = kit();
    let data = TxBuilder::token(write_a()).transaction().encode_to_vec();
    let env = |channel: &str, kind: HeaderType, nonce: Vec<u8>| {
        create_signed_envelope(&k.client, kind, channel, data.clone(), nonce, 0).encode_to_vec()
    };
    let wrong_channel = env("otherchannel", HeaderType::EndorserTransaction, nonce());
    assert_eq!(code_of(wrong_channel), Code::TargetChainNotFound);
    let short_nonce = env(CHANNEL, HeaderType::EndorserTransaction, vec![7; 8]);
    assert_eq!(code_of(short_nonce), Code::BadCommonHeader);
    assert_eq!(
        code_of(env(CHANNEL, HeaderType::Config, nonce())),
        Code::UnknownTxType
    );
    assert_eq!(
        code_of(env(CHANNEL, HeaderType::Message, nonce())),
        Code::UnknownTxType
    );
    // Config updates are validated as config blocks (channel_config), never as transactions.
    assert_eq!(
        code_of(env(CHANNEL, HeaderType::ConfigUpdate, nonce())),
        Code::InvalidConfigTransaction
    );

    let header = |tx_id: String, kind: i32, n: Vec<u8>| Header {
        channel_header: Some(ChannelHeader {
            r#type: kind,
            channel_id: CHANNEL.to_owned(),
            tx_id,
            timestamp_unix_ms: 0,
        }),
        signature_header: Some(SignatureHeader {
            creator: k.client.serialized().to_vec(),
            nonce: n,
        }),
    };
    let n = nonce();
    let right_id = shared_proto::hash::tx_id(&n, k.client.serialized());
    let endorser = HeaderType::EndorserTransaction as i32;
    // The endorsed proposal must be this envelope's (same nonce, so same tx id).
    let mut same_nonce = TxBuilder::token(write_a());
    same_nonce.nonce = n.clone();
    let ok = signed_payload(
        &k.client,
        Some(header(right_id.clone(), endorser, n.clone())),
        same_nonce.transaction().encode_to_vec(),
    );
    assert_eq!(code_of(ok), Code::Valid);
    let bad_id = signed_payload(
        &k.client,
        Some(header("ab".repeat(32), endorser, n.clone())),
        data.clone(),
    );
    assert_eq!(code_of(bad_id), Code::BadProposalTxid);
    let unknown = signed_payload(&k.client, Some(header(right_id, 42, n)), data.clone());
    assert_eq!(code_of(unknown), Code::UnknownTxType);
    assert_eq!(
        code_of(signed_payload(&k.client, None, data.clone())),
        Code::BadCommonHeader
    );
    let no_sig_header = Header {
        signature_header: None,
        ..header(String::new(), endorser, Vec::new())
    };
    assert_eq!(
        code_of(signed_payload(&k.client, Some(no_sig_header), data)),
        Code::BadCommonHeader
    );
}

#[test]
fn garbage_data_items_are_nil_or_bad_payload_with_no_tx_id() {
    let not_a_payload = Envelope {
        payload: vec![0xFF, 0xFF, 0xFF],
        signature: vec![1; 64],
    };
    let empty_payload = Envelope {
        payload: Vec::new(),
        signature: vec![1; 64],
    };
    let data = vec![
        Vec::new(),
        vec![0xFF; 7],
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
        not_a_payload.encode_to_vec(),
        empty_payload.encode_to_vec(),
    ];
    let out = validate(&MemState::default(), data);
    assert_eq!(
        out.codes,
        vec![
            Code::NilEnvelope,
            Code::BadPayload,
            Code::BadPayload,
            Code::BadPayload,
            Code::BadPayload
        ]
    );
    assert_eq!(out.tx_ids, vec![None; 5]);
    assert!(out.writes.is_empty());
}

#[test]
fn transaction_and_action_problems_get_their_codes() {
    let k = kit();
    let b = TxBuilder::token(write_a());
    let with_data = |data: Vec<u8>| {
        let env = create_signed_envelope(
            &k.client,
            HeaderType::EndorserTransaction,
            CHANNEL,
            data,
            nonce(),
            0,
        );
        code_of(env.encode_to_vec())
    };
    assert_eq!(with_data(vec![0xFF, 0xFF]), Code::BadPayload);
    let bad_prp = Transaction {
        proposal_response_payload: vec![0xFF, 0xFF],
        endorsements: b.transaction().endorsements,
        proposal: Vec::new(),
    };
    assert_eq!(with_data(bad_prp.encode_to_vec()), Code::BadResponsePayload);
    let no_action = ProposalResponsePayload {
        proposal_hash: vec![1; 32],
        action: None,
    }
    .encode_to_vec();
    let no_action = Transaction {
        endorsements: vec![endorse(&k.org1_peers[0], &no_action)],
        proposal_response_payload: no_action,
        proposal: Vec::new(),
    };
    assert_eq!(with_data(no_action.encode_to_vec()), Code::NilTxaction);
    let mut tx = b.transaction();
    tx.endorsements = vec![tx.endorsements[0].clone(); MAX_ENDORSEMENTS + 1];
    assert_eq!(
        with_data(tx.encode_to_vec()),
        Code::InvalidEndorserTransaction
    );

    let endorsed = |b: TxBuilder| b.endorsed_by(&[&k.org1_peers[0], &k.org2_peers[0]]).build();
    let unknown = TxBuilder::new("nosuch", Rw::new("nosuch").write("a", b"1").set());
    assert_eq!(code_of(endorsed(unknown)), Code::InvalidChaincode);
    let mut old = TxBuilder::new("token", write_a());
    old.version = "0.9".to_owned();
    assert_eq!(code_of(endorsed(old)), Code::ChaincodeVersionConflict);
    for (status, code) in [
        (500, Code::EndorsementPolicyFailure),
        (400, Code::EndorsementPolicyFailure),
        (399, Code::Valid),
        (200, Code::Valid),
    ] {
        let mut b = TxBuilder::new("token", write_a());
        b.status = status;
        assert_eq!(code_of(endorsed(b)), code, "status {status}");
    }
}

#[test]
fn writes_outside_the_chaincode_namespace_are_illegal_reads_are_not() {
    let cross = TxReadWriteSet {
        ns_rwset: vec![
            Rw::new("token").write("a", b"1").set().ns_rwset.remove(0),
            Rw::new("kv").write("x", b"1").set().ns_rwset.remove(0),
        ],
    };
    assert_eq!(
        code_of(TxBuilder::token(cross).build()),
        Code::IllegalWriteset
    );
    let read_other = TxReadWriteSet {
        ns_rwset: vec![
            Rw::new("kv").read("x", None).set().ns_rwset.remove(0),
            Rw::new("token").write("a", b"1").set().ns_rwset.remove(0),
        ],
    };
    let out = validate(
        &MemState::default(),
        vec![TxBuilder::token(read_other).build()],
    );
    assert_eq!(out.codes, vec![Code::Valid]);
    assert!(out.writes.iter().all(|w| w.namespace == "token"));
}

#[test]
fn malformed_rwsets_are_bad_rwset() {
    let bad = |rwset: TxReadWriteSet| code_of(TxBuilder::token(rwset).build());
    assert_eq!(bad(Rw::new("token").write("", b"1").set()), Code::BadRwset);
    assert_eq!(
        bad(Rw::new("token").read("a\0b", None).set()),
        Code::BadRwset
    );
    assert_eq!(
        bad(Rw::new("token").write(&"k".repeat(1025), b"1").set()),
        Code::BadRwset
    );
    assert_eq!(
        bad(Rw::new("token").write("a", b"1").write("a", b"2").set()),
        Code::BadRwset
    );
    assert_eq!(
        bad(Rw::new("token")
            .range("a", "c", true, &[("b", v(1, 0)), ("a", v(1, 0))])
            .set()),
        Code::BadRwset
    );
    assert_eq!(
        bad(Rw::new("token")
            .range("a", "c", true, &[("c", v(1, 0))])
            .set()),
        Code::BadRwset
    );
    let twice = TxReadWriteSet {
        ns_rwset: vec![write_a().ns_rwset.remove(0), write_a().ns_rwset.remove(0)],
    };
    assert_eq!(bad(twice), Code::BadRwset);
    assert_eq!(bad(Rw::new("").read("a", None).set()), Code::BadRwset);
}

#[test]
fn rwset_size_is_bounded() {
    let reads = |n: usize| TxReadWriteSet {
        ns_rwset: vec![NsReadWriteSet {
            namespace: "token".to_owned(),
            reads: (0..n)
                .map(|i| KvRead {
                    key: format!("k{i}"),
                    version: None,
                })
                .collect(),
            ..Default::default()
        }],
    };
    assert_eq!(check_rwset("token", &reads(MAX_RWSET_ITEMS)), Ok(()));
    assert_eq!(
        check_rwset("token", &reads(MAX_RWSET_ITEMS + 1)),
        Err(Code::BadRwset)
    );
    assert_eq!(
        code_of(TxBuilder::token(reads(MAX_RWSET_ITEMS + 1)).build()),
        Code::BadRwset
    );
}

#[test]
fn storage_failure_is_an_error_not_a_code() {
    let data = vec![TxBuilder::token(write_a()).build()];
    assert!(validate_block(&kit().channel, &FailingState, &block(5, data), NOW).is_err());
    // A block with nothing to look up needs no storage.
    let out = validate_block(&kit().channel, &FailingState, &block(5, vec![vec![]]), NOW);
    assert_eq!(out.unwrap().codes, vec![Code::NilEnvelope]);
}

#[test]
fn every_single_byte_corruption_of_a_valid_envelope_is_refused() {
    let good = TxBuilder::token(write_a()).build();
    let mut data = Vec::with_capacity(good.len() + 1);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        data.push(bad);
    }
    data.push(good.clone());
    let out = validate(&MemState::default(), data);
    let (last, corrupted) = out.codes.split_last().unwrap();
    assert_eq!(*last, Code::Valid);
    for (i, code) in corrupted.iter().enumerate() {
        assert_ne!(*code, Code::Valid, "flipping byte {i} went unnoticed");
    }
    assert_eq!(out.writes.len(), 1);
}

#[test]
fn endorsed_result_rewrapped_into_another_transaction_is_refused() {
    let original = TxBuilder::token(write_a());
    assert_eq!(code_of(original.build()), Code::Valid);
    // Someone takes the endorsed transaction and wraps it in their own envelope (new nonce,
    // so a new tx id): the proposal inside names the original tx id.
    let mut thief = TxBuilder::token(write_a());
    thief.nonce = nonce();
    let stolen = thief.envelope_of(&original.transaction());
    assert_eq!(code_of(stolen.encode_to_vec()), Code::BadProposalTxid);
    // A proposal that is not the one endorsed (hash mismatch).
    let mut tx = original.transaction();
    tx.proposal = TxBuilder::token(write_a()).proposal();
    assert_eq!(
        code_of(original.envelope_of(&tx).encode_to_vec()),
        Code::InvalidEndorserTransaction
    );
    // No proposal at all.
    let mut tx = original.transaction();
    tx.proposal.clear();
    assert_eq!(
        code_of(original.envelope_of(&tx).encode_to_vec()),
        Code::InvalidEndorserTransaction
    );
}

#[test]
fn bad_signatures_in_a_block_batch_fail_only_their_own_transactions() {
    let k = kit();
    // 120 transactions, 3 signatures each: about six 64-signature batches.
    let txs: Vec<TxBuilder> = (0..120)
        .map(|i| {
            TxBuilder::new(
                "token",
                Rw::new("token").write(&format!("k{i}"), b"1").set(),
            )
            .endorsed_by(&[&k.org1_peers[0], &k.org2_peers[0]])
        })
        .collect();
    let mut data: Vec<Vec<u8>> = txs.iter().map(TxBuilder::build).collect();
    // #7: Org2's endorsement forged (policy fails); #50: creator signature forged;
    // #51 (same batch as #50): untouched and valid; #119: last, lone in its batch, forged.
    let forge_endorsement = |b: &TxBuilder| {
        let mut tx = b.transaction();
        tx.endorsements[1].signature[9] ^= 0x01;
        b.envelope_of(&tx).encode_to_vec()
    };
    data[7] = forge_endorsement(&txs[7]);
    let mut env = txs[50].envelope();
    env.signature[3] ^= 0x10;
    data[50] = env.encode_to_vec();
    data[119] = forge_endorsement(&txs[119]);
    let out = validate(&MemState::default(), data);
    for (i, code) in out.codes.iter().enumerate() {
        let want = match i {
            7 | 119 => Code::EndorsementPolicyFailure,
            50 => Code::BadCreatorSignature,
            _ => Code::Valid,
        };
        assert_eq!(*code, want, "tx #{i}");
    }
    assert_eq!(
        out.tx_ids[50], None,
        "a forged envelope's tx id is not trusted"
    );
    assert!(out.tx_ids[7].is_some());
}
