#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::testnet::foreign;
use super::testnet::net;
use super::testnet::LATER;
use super::testnet::NOW;
use super::*;
use crate::block;
use crate::channel::READERS;
use crate::channel::WRITERS;
use crate::msp::Role;

const NOW_MS: u64 = NOW as u64 * 1000;

fn tx(signer: &SigningIdentity, data: &[u8]) -> Envelope {
    create_signed_envelope(
        signer,
        HeaderType::EndorserTransaction,
        "mychannel",
        data.to_vec(),
        new_nonce(),
        NOW_MS,
    )
}

fn verify(envelope: &Envelope) -> Result<VerifiedEnvelope, EnvelopeError> {
    verify_envelope(&net().channel, envelope, NOW)
}

/// An envelope with a hand-built payload, correctly signed by `signer`, so that only the
/// payload's own defect can make verification fail.
fn signed(signer: &SigningIdentity, payload: &Payload) -> Envelope {
    let payload = payload.encode_to_vec();
    let signature = signer.sign(Domain::Envelope, &[&payload]);
    Envelope { payload, signature }
}

/// The payload `create_signed_envelope` would build, for editing.
fn payload_of(envelope: &Envelope) -> Payload {
    Payload::decode(envelope.payload.as_slice()).unwrap()
}

fn headers(payload: &mut Payload) -> (&mut ChannelHeader, &mut SignatureHeader) {
    let header = payload.header.as_mut().unwrap();
    (
        header.channel_header.as_mut().unwrap(),
        header.signature_header.as_mut().unwrap(),
    )
}

#[test]
fn created_envelope_verifies_and_exposes_its_parts() {
    let net = net();
    let nonce = new_nonce();
    assert_eq!(nonce.len(), NONCE_LEN);
    assert_ne!(nonce, new_nonce(), "nonces are random");
    let env = create_signed_envelope(
        &net.client,
        HeaderType::EndorserTransaction,
        "mychannel",
        b"tx bytes".to_vec(),
        nonce.clone(),
        NOW_MS,
    );
    let v = verify(&env).unwrap();
    assert_eq!(v.header_type, HeaderType::EndorserTransaction);
    assert_eq!(v.channel_header.channel_id, "mychannel");
    assert_eq!(v.channel_header.timestamp_unix_ms, NOW_MS);
    assert_eq!(v.tx_id, hash::tx_id(&nonce, net.client.serialized()));
    assert_eq!(v.channel_header.tx_id, v.tx_id);
    assert_eq!(v.signature_header.nonce, nonce);
    assert_eq!(v.signature_header.creator, net.client.serialized());
    assert_eq!(v.data, b"tx bytes");
    assert_eq!(v.payload_len, env.payload.len());
    assert_eq!(v.creator.msp_id, "Org1MSP");
    assert_eq!(v.creator.role, Role::Client);
    let signer = v.signer();
    assert_eq!(signer.id, v.creator.id);
    assert!(net
        .channel
        .evaluate(WRITERS, std::slice::from_ref(&signer))
        .unwrap());
    assert!(net.channel.evaluate(READERS, &[signer]).unwrap());
    // Through bytes, as in a block.
    let decoded = decode_envelope(&env.encode_to_vec()).unwrap();
    assert_eq!(decoded, env);
    verify(&decoded).unwrap();
}

#[test]
fn every_role_of_every_org_can_create_a_valid_envelope() {
    let net = net();
    for who in [&net.client, &net.admin, &net.peer, &net.orderers[2]] {
        let v = verify(&tx(who, b"x")).unwrap();
        assert_eq!(v.creator.msp_id, who.msp_id());
    }
}

#[test]
fn genesis_config_envelope_verifies() {
    let net = net();
    let env = decode_envelope(&block::tx_envelopes(&net.genesis)[0]).unwrap();
    let v = verify(&env).unwrap();
    assert_eq!(v.header_type, HeaderType::Config);
    assert_eq!(v.creator.msp_id, "OrdererMSP");
}

#[test]
fn empty_payload_is_refused() {
    let env = Envelope {
        payload: vec![],
        signature: vec![0; 64],
    };
    let err = verify(&env).unwrap_err();
    assert_eq!(err, EnvelopeError::EmptyPayload);
    assert_eq!(err.refusal(), Refusal::InvalidArgument);
}

#[test]
fn garbage_payload_is_malformed() {
    // Field 1 with wire type 7, which does not exist.
    let env = Envelope {
        payload: vec![0x0f, 0x01, 0x02],
        signature: vec![0; 64],
    };
    let err = verify(&env).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::MalformedPayload { .. }),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::InvalidArgument);
    assert!(matches!(
        decode_envelope(&[0x0f, 0x01]),
        Err(EnvelopeError::MalformedEnvelope { .. })
    ));
}

#[test]
fn missing_headers_are_refused_each_with_its_own_variant() {
    let net = net();
    let good = payload_of(&tx(&net.client, b"x"));

    let mut p = good.clone();
    p.header = None;
    assert_eq!(
        verify(&signed(&net.client, &p)).unwrap_err(),
        EnvelopeError::MissingHeader
    );

    let mut p = good.clone();
    p.header.as_mut().unwrap().channel_header = None;
    assert_eq!(
        verify(&signed(&net.client, &p)).unwrap_err(),
        EnvelopeError::MissingChannelHeader
    );

    let mut p = good;
    p.header.as_mut().unwrap().signature_header = None;
    let err = verify(&signed(&net.client, &p)).unwrap_err();
    assert_eq!(err, EnvelopeError::MissingSignatureHeader);
    assert_eq!(err.refusal(), Refusal::InvalidArgument);
}

#[test]
fn unknown_header_type_is_refused() {
    let net = net();
    let mut p = payload_of(&tx(&net.client, b"x"));
    headers(&mut p).0.r#type = 42;
    assert_eq!(
        verify(&signed(&net.client, &p)).unwrap_err(),
        EnvelopeError::UnknownHeaderType { value: 42 }
    );
}

#[test]
fn envelope_for_another_channel_is_not_found() {
    let net = net();
    let env = create_signed_envelope(
        &net.client,
        HeaderType::EndorserTransaction,
        "other",
        vec![],
        new_nonce(),
        NOW_MS,
    );
    let err = verify(&env).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::WrongChannel {
            expected: "mychannel".into(),
            found: "other".into()
        }
    );
    assert_eq!(err.refusal(), Refusal::NotFound);
}

#[test]
fn empty_or_short_nonce_is_refused() {
    let net = net();
    for len in [0, 1, MIN_NONCE_LEN - 1] {
        let env = create_signed_envelope(
            &net.client,
            HeaderType::EndorserTransaction,
            "mychannel",
            vec![],
            vec![7; len],
            NOW_MS,
        );
        assert_eq!(
            verify(&env).unwrap_err(),
            EnvelopeError::NonceTooShort {
                len,
                min: MIN_NONCE_LEN
            }
        );
    }
    let env = create_signed_envelope(
        &net.client,
        HeaderType::EndorserTransaction,
        "mychannel",
        vec![],
        vec![7; MIN_NONCE_LEN],
        NOW_MS,
    );
    verify(&env).unwrap();
}

#[test]
fn wrong_tx_id_is_refused() {
    let net = net();
    let mut p = payload_of(&tx(&net.client, b"x"));
    let (ch, sh) = headers(&mut p);
    let expected = hash::tx_id(&sh.nonce, &sh.creator);
    ch.tx_id = hash::tx_id(b"another nonce of enough bytes", &sh.creator);
    let found = ch.tx_id.clone();
    let err = verify(&signed(&net.client, &p)).unwrap_err();
    assert_eq!(err, EnvelopeError::BadTxId { expected, found });
    assert_eq!(err.refusal(), Refusal::InvalidArgument);

    // An endorser transaction must carry its tx id.
    let mut p = payload_of(&tx(&net.client, b"x"));
    headers(&mut p).0.tx_id.clear();
    assert!(matches!(
        verify(&signed(&net.client, &p)).unwrap_err(),
        EnvelopeError::BadTxId { found, .. } if found.is_empty()
    ));
}

#[test]
fn deliver_seek_info_may_omit_its_tx_id_but_not_get_it_wrong() {
    let net = net();
    let env = create_signed_envelope(
        &net.client,
        HeaderType::DeliverSeekInfo,
        "mychannel",
        b"seek".to_vec(),
        new_nonce(),
        NOW_MS,
    );
    assert!(!verify(&env).unwrap().tx_id.is_empty());

    let mut p = payload_of(&env);
    headers(&mut p).0.tx_id.clear();
    let v = verify(&signed(&net.client, &p)).unwrap();
    assert_eq!(v.tx_id, "");
    assert_eq!(v.header_type, HeaderType::DeliverSeekInfo);

    headers(&mut p).0.tx_id = "00".repeat(32);
    assert!(matches!(
        verify(&signed(&net.client, &p)).unwrap_err(),
        EnvelopeError::BadTxId { .. }
    ));
}

#[test]
fn creator_of_unknown_org_is_refused() {
    let intruder = foreign("Org9MSP", Role::Client);
    let err = verify(&tx(&intruder, b"x")).unwrap_err();
    assert!(
        matches!(&err, EnvelopeError::Creator(MspError::UnknownMsp { msp_id }) if msp_id == "Org9MSP"),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);
}

#[test]
fn creator_certificate_from_a_foreign_ca_is_refused() {
    let intruder = foreign("Org1MSP", Role::Admin);
    let err = verify(&tx(&intruder, b"x")).unwrap_err();
    assert!(
        matches!(&err, EnvelopeError::Creator(MspError::UntrustedIssuer { msp_id, .. }) if msp_id == "Org1MSP"),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);
}

#[test]
fn expired_or_not_yet_valid_creator_is_refused() {
    let net = net();
    let env = tx(&net.client, b"x");
    let err = verify_envelope(&net.channel, &env, LATER).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::Creator(MspError::Expired { now_unix, .. }) if now_unix == LATER),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);
    let err = verify_envelope(&net.channel, &env, NOW - 86_400).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::Creator(MspError::NotYetValid { .. })),
        "{err:?}"
    );
}

#[test]
fn malformed_creator_is_refused() {
    let net = net();
    let mut p = payload_of(&tx(&net.client, b"x"));
    let (ch, sh) = headers(&mut p);
    sh.creator = vec![0x0f, 0xff];
    ch.tx_id = hash::tx_id(&sh.nonce, &sh.creator);
    let err = verify(&signed(&net.client, &p)).unwrap_err();
    assert!(
        matches!(
            err,
            EnvelopeError::Creator(MspError::MalformedIdentity { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn tampered_payload_is_refused() {
    let net = net();
    let env = tx(&net.client, b"transfer 10 to bob");
    // The data is the payload's last field, so the last byte is inside it: decodes fine.
    let mut tampered = env.clone();
    *tampered.payload.last_mut().unwrap() ^= 0x01;
    let err = verify(&tampered).unwrap_err();
    assert!(
        matches!(
            &err,
            EnvelopeError::BadSignature {
                source: SignatureError::Invalid {
                    domain: Domain::Envelope
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.refusal(), Refusal::PermissionDenied);

    // Re-encoded with new data, old signature.
    let mut p = payload_of(&env);
    p.data = b"transfer 99 to eve".to_vec();
    let forged = Envelope {
        payload: p.encode_to_vec(),
        signature: env.signature,
    };
    assert!(matches!(
        verify(&forged).unwrap_err(),
        EnvelopeError::BadSignature { .. }
    ));
}

#[test]
fn bad_signatures_are_refused() {
    let net = net();
    let env = tx(&net.client, b"x");

    let mut flipped = env.clone();
    flipped.signature[5] ^= 0x40;
    assert!(matches!(
        verify(&flipped).unwrap_err(),
        EnvelopeError::BadSignature {
            source: SignatureError::Invalid { .. },
            ..
        }
    ));

    let mut truncated = env.clone();
    truncated.signature.truncate(63);
    assert!(matches!(
        verify(&truncated).unwrap_err(),
        EnvelopeError::BadSignature {
            source: SignatureError::BadLength { len: 63 },
            ..
        }
    ));

    let mut missing = env.clone();
    missing.signature.clear();
    assert!(matches!(
        verify(&missing).unwrap_err(),
        EnvelopeError::BadSignature {
            source: SignatureError::BadLength { len: 0 },
            ..
        }
    ));

    // Signed by someone else than the creator it names.
    let mut other = env.clone();
    other.signature = net.admin.sign(Domain::Envelope, &[&env.payload]);
    let err = verify(&other).unwrap_err();
    assert!(
        matches!(&err, EnvelopeError::BadSignature { subject, .. } if subject == "User1"),
        "{err:?}"
    );

    // Right key, wrong domain.
    let mut wrong_domain = env.clone();
    wrong_domain.signature = net.client.sign(Domain::Proposal, &[&env.payload]);
    assert!(matches!(
        verify(&wrong_domain).unwrap_err(),
        EnvelopeError::BadSignature { .. }
    ));
}

#[test]
fn refusals_map_to_grpc_codes_and_stream_statuses() {
    assert_eq!(
        Refusal::InvalidArgument.grpc_code_name(),
        "INVALID_ARGUMENT"
    );
    assert_eq!(Refusal::NotFound.grpc_code_name(), "NOT_FOUND");
    assert_eq!(
        Refusal::PermissionDenied.grpc_code_name(),
        "PERMISSION_DENIED"
    );
    assert_eq!(Refusal::InvalidArgument.status(), Status::BadRequest);
    assert_eq!(Refusal::NotFound.status(), Status::NotFound);
    assert_eq!(Refusal::PermissionDenied.status(), Status::Forbidden);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_payload_bytes_never_panic_and_are_refused(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let env = Envelope { payload, signature };
        prop_assert!(verify(&env).is_err());
    }

    #[test]
    fn random_bit_flips_in_a_valid_envelope_are_refused(
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
        in_signature in any::<bool>(),
    ) {
        let net = net();
        let mut env = tx(&net.client, b"some transaction data");
        let target = if in_signature { &mut env.signature } else { &mut env.payload };
        let i = index.index(target.len());
        target[i] ^= 1 << bit;
        prop_assert!(verify(&env).is_err());
    }
}
