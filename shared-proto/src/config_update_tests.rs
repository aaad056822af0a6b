#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

use super::*;
use crate::envelope::testnet::net;
use crate::envelope::testnet::NOW;
use crate::msp::Validity;
use crate::pb::common::Payload;

fn next_config() -> ChannelConfig {
    let mut next = net().channel.config().clone();
    next.sequence += 1;
    next
}

/// The payload data of the CONFIG_UPDATE envelope `build_update` makes.
fn data_of(next: &ChannelConfig, admins: &[&SigningIdentity]) -> Vec<u8> {
    let env = build_update(next, admins, &net().admins[0], 1);
    Payload::decode(env.payload.as_slice()).unwrap().data
}

fn two_admins() -> Vec<&'static SigningIdentity> {
    vec![&net().admins[0], &net().admins[1]]
}

#[test]
fn batch_size_change_signed_by_a_majority_of_org_admins_is_accepted_now_and_at_any_time() {
    let mut next = next_config();
    next.orderer
        .as_mut()
        .unwrap()
        .batch_size
        .as_mut()
        .unwrap()
        .message_count_max = 7;
    let data = data_of(&next, &two_admins());
    for at in [NOW, ANY_TIME] {
        let checked = check_update(&net().channel, &data, at).unwrap();
        assert_eq!(checked.channel.sequence(), 1);
        assert_eq!(checked.channel.batch_size().message_count_max, 7);
        assert_eq!(checked.consenters, ConsenterChange::None);
    }
}

#[test]
fn one_admin_of_three_orgs_does_not_satisfy_majority_admins() {
    let data = data_of(&next_config(), &[&net().admins[1]]);
    let err = check_update(&net().channel, &data, NOW).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::NotEnoughAdmins { signers: 1 }),
        "{err}"
    );
    assert_eq!(err.grpc_code_name(), "PERMISSION_DENIED");
}

#[test]
fn the_same_admin_signing_twice_counts_once() {
    let a = &net().admins[1];
    let data = data_of(&next_config(), &[a, a]);
    let err = check_update(&net().channel, &data, NOW).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::NotEnoughAdmins { signers: 1 }),
        "{err}"
    );
}

#[test]
fn stale_and_skipped_sequences_are_refused_naming_the_current_one() {
    for sequence in [0, 2] {
        let mut next = next_config();
        next.sequence = sequence;
        let err = check_update(&net().channel, &data_of(&next, &two_admins()), NOW).unwrap_err();
        assert!(
            matches!(err, ConfigUpdateError::StaleSequence { current: 0, found } if found == sequence),
            "{err}"
        );
        assert!(
            err.to_string().contains("channel is at sequence 0"),
            "{err}"
        );
        assert_eq!(err.grpc_code_name(), "FAILED_PRECONDITION");
    }
}

#[test]
fn removing_the_last_consenter_is_refused() {
    let mut next = next_config();
    next.orderer.as_mut().unwrap().consenters.clear();
    let err = check_update(&net().channel, &data_of(&next, &two_admins()), NOW).unwrap_err();
    assert!(matches!(err, ConfigUpdateError::LastConsenter(_)), "{err}");
}

#[test]
fn changing_two_consenters_at_once_is_refused_naming_both() {
    let mut next = next_config();
    let consenters = &mut next.orderer.as_mut().unwrap().consenters;
    consenters.remove(2);
    consenters.remove(1);
    let err = check_update(&net().channel, &data_of(&next, &two_admins()), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigUpdateError::SeveralConsenterChanges { count: 2, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("remove 2, remove 3"), "{err}");
}

fn new_consenter(tls: &crate::msp::TlsCert) -> Consenter {
    let mut c = net().channel.consenters()[0].clone();
    c.id = 4;
    c.host = "orderer4.example.com".into();
    c.client_tls_cert = tls.cert_der.clone();
    c.server_tls_cert = tls.cert_der.clone();
    c
}

#[test]
fn adding_a_consenter_with_certificates_of_the_org_tls_ca_is_one_change() {
    let tls = net()
        .orderer_tlsca
        .issue(
            "orderer4.example.com",
            &["orderer4.example.com".into()],
            Validity::days_from(NOW, 30),
        )
        .unwrap();
    let mut next = next_config();
    next.orderer
        .as_mut()
        .unwrap()
        .consenters
        .push(new_consenter(&tls));
    for at in [NOW, ANY_TIME] {
        let checked = check_update(&net().channel, &data_of(&next, &two_admins()), at).unwrap();
        assert!(
            matches!(&checked.consenters, ConsenterChange::Add(c) if c.id == 4),
            "{:?}",
            checked.consenters
        );
        assert_eq!(checked.channel.consenters().len(), 4);
    }
}

#[test]
fn adding_a_consenter_whose_certificate_no_trusted_ca_issued_is_refused() {
    let foreign = crate::msp::TlsCertificateAuthority::generate(
        "tlsca.foreign",
        "OrdererMSP",
        crate::msp::TlsKeyAlgorithm::EcdsaP256,
        Validity::days_from(NOW, 365),
    )
    .unwrap();
    let tls = foreign
        .issue(
            "orderer4.example.com",
            &["orderer4.example.com".into()],
            Validity::days_from(NOW, 30),
        )
        .unwrap();
    let mut next = next_config();
    next.orderer
        .as_mut()
        .unwrap()
        .consenters
        .push(new_consenter(&tls));
    for at in [NOW, ANY_TIME] {
        let err = check_update(&net().channel, &data_of(&next, &two_admins()), at).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigUpdateError::UntrustedConsenterCert {
                    id: 4,
                    field: "client_tls_cert",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn a_signature_by_an_identity_of_a_foreign_ca_is_refused() {
    let intruder = crate::envelope::testnet::foreign("Org1MSP", crate::msp::Role::Admin);
    let data = data_of(&next_config(), &[&net().admins[0], &intruder]);
    let err = check_update(&net().channel, &data, NOW).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::BadSignature { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_signature_over_other_bytes_is_refused() {
    let next = next_config();
    let env = build_update(&next, &two_admins(), &net().admins[0], 1);
    let mut update = ConfigUpdate::decode(
        Payload::decode(env.payload.as_slice())
            .unwrap()
            .data
            .as_slice(),
    )
    .unwrap();
    let mut other = next.clone();
    other.orderer.as_mut().unwrap().batch_timeout_ms += 1;
    update.config = other.encode_to_vec();
    let err = check_update(&net().channel, &update.encode_to_vec(), NOW).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::BadSignature { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn an_update_for_another_channel_or_garbage_is_malformed() {
    let mut next = next_config();
    next.channel_id = "other".into();
    let err = check_update(&net().channel, &data_of(&next, &two_admins()), NOW).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::WrongChannel { .. }),
        "{err}"
    );
    for garbage in [&b"\xff\xff\xff"[..], b"", &[0x0a, 0x05, 1, 2]] {
        match check_update(&net().channel, garbage, NOW) {
            Err(ConfigUpdateError::Malformed(_)) | Err(ConfigUpdateError::WrongChannel { .. }) => {}
            other => panic!("{garbage:?}: {other:?}"),
        }
    }
}

#[test]
fn a_config_block_holding_the_update_yields_the_new_config() {
    let mut next = next_config();
    next.orderer.as_mut().unwrap().batch_timeout_ms = 123;
    let env = build_update(&next, &two_admins(), &net().admins[0], 1);
    let block = crate::block::new_block(5, vec![0; 32], vec![env.encode_to_vec()], 5);
    let channel = Channel::from_config_block(&block).unwrap();
    assert_eq!(channel.sequence(), 1);
    assert_eq!(channel.batch_timeout_ms(), 123);
}
