#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

use super::*;
use crate::pb::config::NodeOus;
use crate::pb::msp::SerializedIdentity;
use crate::signing::Domain;

const NOW: i64 = 1_790_000_000;

fn ca(org: &str) -> CertificateAuthority {
    CertificateAuthority::generate(&format!("ca.{org}"), org, Validity::days_from(NOW, 365))
        .unwrap()
}

fn member(ca: &CertificateAuthority, name: &str, role: Role) -> IssuedCert {
    ca.issue(
        name,
        Usage::Signing(role),
        &[],
        Validity::days_from(NOW, 30),
    )
    .unwrap()
}

fn manager(cas: &[(&str, &CertificateAuthority)]) -> MspManager {
    MspManager::new(
        cas.iter()
            .map(|(id, ca)| Msp::new(id, &[ca.cert_der().to_vec()], None).unwrap()),
    )
}

fn serialized(msp_id: &str, cert: &IssuedCert) -> Vec<u8> {
    SerializedIdentity {
        mspid: msp_id.into(),
        id_bytes: cert.cert_der.clone(),
    }
    .encode_to_vec()
}

#[test]
fn member_certificate_chains_to_its_root_and_carries_its_role() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    for role in Role::ALL {
        let cert = member(&ca1, "m1", role);
        let id = mgr.validate("Org1MSP", &cert.cert_der, NOW).unwrap();
        assert_eq!(id.role, role);
        assert_eq!(id.msp_id, "Org1MSP");
        assert_eq!(id.common_name, "m1");
        assert_eq!(id.public_key, cert.key.verifying_key());
        assert_eq!(id.id, crate::hash::sha256(&cert.cert_der));
    }
}

#[test]
fn certificate_from_another_ca_is_untrusted() {
    let ca1 = ca("Org1");
    let ca2 = ca("Org2");
    let mgr = manager(&[("Org1MSP", &ca1), ("Org2MSP", &ca2)]);
    let cert = member(&ca2, "intruder", Role::Peer);
    let err = mgr.validate("Org1MSP", &cert.cert_der, NOW).unwrap_err();
    assert!(matches!(err, MspError::UntrustedIssuer { ref msp_id, .. } if msp_id == "Org1MSP"));
    assert!(err
        .to_string()
        .contains("not issued by a root CA of Org1MSP"));
    // Same org name but a different CA key: still untrusted (names alone prove nothing).
    let impostor = ca("Org1");
    let cert = member(&impostor, "impostor", Role::Admin);
    assert!(matches!(
        mgr.validate("Org1MSP", &cert.cert_der, NOW),
        Err(MspError::UntrustedIssuer { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let expired = ca1
        .issue(
            "old",
            Usage::Signing(Role::Client),
            &[],
            Validity {
                not_before_unix: NOW - 100_000,
                not_after_unix: NOW - 10,
            },
        )
        .unwrap();
    let err = mgr.validate("Org1MSP", &expired.cert_der, NOW).unwrap_err();
    assert!(matches!(err, MspError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("has expired"));
    let future = ca1
        .issue(
            "future",
            Usage::Signing(Role::Client),
            &[],
            Validity {
                not_before_unix: NOW + 1000,
                not_after_unix: NOW + 100_000,
            },
        )
        .unwrap();
    let err = mgr.validate("Org1MSP", &future.cert_der, NOW).unwrap_err();
    assert!(matches!(err, MspError::NotYetValid { .. }), "{err}");
}

#[test]
fn cached_identity_is_still_refused_after_it_expires() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let cert = member(&ca1, "c", Role::Client);
    let bytes = serialized("Org1MSP", &cert);
    assert!(mgr.deserialize_identity(&bytes, NOW).is_ok());
    assert_eq!(mgr.cache_len(), 1);
    let later = NOW + 31 * 86_400;
    assert!(matches!(
        mgr.deserialize_identity(&bytes, later),
        Err(MspError::Expired { .. })
    ));
}

#[test]
fn identity_cache_is_bounded() {
    let ca1 = ca("Org1");
    let mgr = MspManager::with_cache_capacity(
        [Msp::new("Org1MSP", &[ca1.cert_der().to_vec()], None).unwrap()],
        2,
    );
    for i in 0..5 {
        let cert = member(&ca1, &format!("c{i}"), Role::Client);
        mgr.deserialize_identity(&serialized("Org1MSP", &cert), NOW)
            .unwrap();
        assert!(mgr.cache_len() <= 2);
    }
}

#[test]
fn wrong_role_is_named_in_the_error() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let id = mgr
        .validate("Org1MSP", &member(&ca1, "p", Role::Client).cert_der, NOW)
        .unwrap();
    let err = id.require_role(Role::Peer).unwrap_err();
    assert_eq!(
        err,
        MspError::WrongRole {
            subject: "p".into(),
            expected: Role::Peer,
            found: Role::Client
        }
    );
    assert_eq!(err.to_string(), "\"p\" has role client; peer required");
}

#[test]
fn tls_certificate_without_role_ou_is_not_a_member() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let tls = ca1
        .issue(
            "peer0",
            Usage::Tls,
            &["localhost".into(), "127.0.0.1".into()],
            Validity::days_from(NOW, 1),
        )
        .unwrap();
    assert!(matches!(
        mgr.validate("Org1MSP", &tls.cert_der, NOW),
        Err(MspError::NoRole { .. })
    ));
}

#[test]
fn custom_node_ous_map_roles() {
    let ca1 = ca("Org1");
    let ous = NodeOus {
        client_ou: "admin".into(), // deliberately crossed: OU "admin" now means client
        peer_ou: String::new(),
        admin_ou: "boss".into(),
        orderer_ou: String::new(),
    };
    let msp = Msp::new("Org1MSP", &[ca1.cert_der().to_vec()], Some(&ous)).unwrap();
    let id = msp
        .validate(&member(&ca1, "a", Role::Admin).cert_der, NOW)
        .unwrap();
    assert_eq!(id.role, Role::Client);
    let id = msp
        .validate(&member(&ca1, "p", Role::Peer).cert_der, NOW)
        .unwrap();
    assert_eq!(id.role, Role::Peer);
}

#[test]
fn ca_certificate_is_not_a_member_and_member_cannot_be_a_root() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    // The CA's own certificate chains to itself but is a CA: refused.
    assert!(matches!(
        mgr.validate("Org1MSP", ca1.cert_der(), NOW),
        Err(MspError::UntrustedIssuer { .. } | MspError::IsCa { .. })
    ));
    let leaf = member(&ca1, "m", Role::Peer);
    assert!(matches!(
        Msp::new("X", &[leaf.cert_der], None),
        Err(MspError::BadRoot { .. })
    ));
}

#[test]
fn malformed_certificates_and_identities_give_typed_errors() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    assert!(matches!(
        mgr.validate("Org1MSP", b"not a certificate", NOW),
        Err(MspError::Malformed { .. })
    ));
    let mut der = member(&ca1, "m", Role::Peer).cert_der;
    let last = der.len() - 1;
    der[last] ^= 0x55; // inside the signature
    assert!(matches!(
        mgr.validate("Org1MSP", &der, NOW),
        Err(MspError::UntrustedIssuer { .. })
    ));
    assert!(matches!(
        mgr.deserialize_identity(&[0xff, 0xff, 0xff], NOW),
        Err(MspError::MalformedIdentity { .. })
    ));
    let cert = member(&ca1, "m", Role::Peer);
    assert_eq!(
        mgr.deserialize_identity(&serialized("Org9MSP", &cert), NOW),
        Err(MspError::UnknownMsp {
            msp_id: "Org9MSP".into()
        })
    );
}

#[test]
fn tampered_tbs_certificate_fails_chain_check() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let cert = member(&ca1, "honest", Role::Client);
    // Flip a byte of the common name inside the to-be-signed part.
    let mut der = cert.cert_der.clone();
    let pos = der
        .windows(6)
        .position(|w| w == b"honest")
        .expect("cn in der");
    der[pos] = b'H';
    assert!(matches!(
        mgr.validate("Org1MSP", &der, NOW),
        Err(MspError::UntrustedIssuer { .. })
    ));
}

#[test]
fn signing_identity_signs_what_verified_identity_verifies() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let cert = member(&ca1, "client1", Role::Client);
    let me = SigningIdentity::new("Org1MSP", cert.cert_der.clone(), cert.key.clone()).unwrap();
    let sig = me.sign(Domain::Envelope, &[b"payload"]);
    let verified = mgr.deserialize_identity(me.serialized(), NOW).unwrap();
    verified
        .verify(Domain::Envelope, &[b"payload"], &sig)
        .unwrap();
    let err = verified
        .verify(Domain::Envelope, &[b"payloaD"], &sig)
        .unwrap_err();
    assert!(matches!(err, MspError::BadSignature { .. }));
    assert!(err.to_string().contains("client1"));
}

#[test]
fn signing_identity_refuses_a_key_that_does_not_match() {
    let ca1 = ca("Org1");
    let a = member(&ca1, "a", Role::Client);
    let b = member(&ca1, "b", Role::Client);
    assert!(matches!(
        SigningIdentity::new("Org1MSP", a.cert_der, b.key),
        Err(MspError::Malformed { .. })
    ));
}

#[test]
fn pem_round_trip_of_ca_and_keys() {
    let ca1 = ca("Org1");
    let loaded = CertificateAuthority::from_pem(&ca1.cert_pem(), &ca1.key_pem().unwrap()).unwrap();
    assert_eq!(loaded.cert_der(), ca1.cert_der());
    // A CA loaded from PEM issues certificates the original root trusts.
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let cert = member(&loaded, "m", Role::Orderer);
    assert_eq!(
        mgr.validate("Org1MSP", &cert.cert_der, NOW).unwrap().role,
        Role::Orderer
    );
    assert_eq!(key_from_pem(&cert.key_pem().unwrap()).unwrap(), cert.key);
    assert!(key_from_pem("garbage").is_err());
    assert!(matches!(
        pem_to_der("garbage"),
        Err(MspError::Malformed { .. })
    ));
}

#[test]
fn any_time_skips_the_validity_window_but_not_the_chain() {
    let ca1 = ca("Org1");
    let mgr = manager(&[("Org1MSP", &ca1)]);
    let expired = ca1
        .issue(
            "old",
            Usage::Signing(Role::Client),
            &[],
            Validity {
                not_before_unix: NOW - 100_000,
                not_after_unix: NOW - 10,
            },
        )
        .unwrap();
    assert!(mgr.validate("Org1MSP", &expired.cert_der, NOW).is_err());
    assert!(mgr.validate("Org1MSP", &expired.cert_der, ANY_TIME).is_ok());
    let foreign = member(&ca("Org1"), "x", Role::Client);
    assert!(matches!(
        mgr.validate("Org1MSP", &foreign.cert_der, ANY_TIME),
        Err(MspError::UntrustedIssuer { .. })
    ));
}
