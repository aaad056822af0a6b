#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

use super::*;
use crate::channel::Channel;
use crate::msp::CertInfo;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::node_config::OrdererConfig;
use crate::node_config::PeerConfig;
use crate::pb::common::Block;
use crate::policy::Signer;
use crate::signing::Domain;

pub(super) const NOW: i64 = 1_790_000_000;
pub(super) const SAMPLE: &str = include_str!("../../../deploy/sample-network.toml");

pub(super) fn signer_of(channel: &Channel, identity: &SigningIdentity) -> Signer {
    signer_at(channel, identity, NOW)
}

/// `identity` as `channel`'s MSPs see it at `now_unix`.
pub(super) fn signer_at(channel: &Channel, identity: &SigningIdentity, now_unix: i64) -> Signer {
    let v = channel
        .msps()
        .deserialize_identity(identity.serialized(), now_unix)
        .unwrap();
    Signer {
        id: v.id,
        msp_id: v.msp_id,
        role: v.role,
    }
}

pub(super) fn load_channel(path: &std::path::Path) -> Channel {
    let block = Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    Channel::from_config_block(&block).unwrap()
}

#[test]
fn sample_spec_generates_material_that_loads_back_and_verifies() {
    let spec = NetworkSpec::from_toml(SAMPLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net");
    let generated = generate(&spec, &out, NOW).unwrap();
    assert_eq!(generated.orderers.len(), 3);
    assert_eq!(generated.peers.len(), 4);
    assert_eq!(generated.channels.len(), 1);

    let channel = load_channel(&generated.channels[0].1);
    assert_eq!(channel.id(), "mychannel");
    assert_eq!(channel.consenters().len(), 3);
    assert_eq!(channel.batch_size().message_count_max, 500);
    assert_eq!(channel.batch_timeout_ms(), 100);
    assert_eq!(channel.application_orgs(), ["Org1MSP", "Org2MSP"]);
    assert_eq!(channel.orderer_orgs(), ["OrdererMSP"]);

    // Every orderer: config validates, identity is an orderer of its org, TLS chains to its
    // org's TLS CA and is pinned as a consenter; BlockValidation accepts its signature.
    for (node, id) in generated.orderers.iter().zip(1u64..) {
        let cfg = OrdererConfig::load(&node.config).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.node_id, id);
        assert_eq!(cfg.network, "sample");
        let me =
            SigningIdentity::from_pem_files(&cfg.msp_id, &cfg.identity.cert, &cfg.identity.key)
                .unwrap();
        let signer = signer_of(&channel, &me);
        assert_eq!(signer.role, Role::Orderer);
        assert!(channel
            .evaluate("BlockValidation", std::slice::from_ref(&signer))
            .unwrap());
        assert!(!channel.evaluate("Writers", &[signer]).unwrap() || cfg.msp_id.is_empty());
        let tls_der =
            crate::msp::pem_to_der(&std::fs::read_to_string(&cfg.tls.cert).unwrap()).unwrap();
        let tls_ca_der = &channel.config().orderer_orgs[0].tls_root_certs[0];
        assert_tls_ecdsa_p256_issued_by(&tls_der, tls_ca_der);
        let consenter = channel.consenters().iter().find(|c| c.id == id).unwrap();
        assert_eq!(
            crate::msp::pem_to_der(&std::fs::read_to_string(&cfg.tls.cert).unwrap()).unwrap(),
            consenter.server_tls_cert
        );
        assert_eq!(me.cert_der(), consenter.identity.as_slice());
        assert_eq!(cfg.tls.ca_roots.len(), 3);
        assert!(cfg.channels[0].genesis_block.is_file());
    }

    // Every peer: config validates, peer role, gossip bootstrap points at its org's other peer.
    for node in &generated.peers {
        let cfg = PeerConfig::load(&node.config).unwrap();
        cfg.validate().unwrap();
        let me =
            SigningIdentity::from_pem_files(&cfg.msp_id, &cfg.identity.cert, &cfg.identity.key)
                .unwrap();
        assert_eq!(signer_of(&channel, &me).role, Role::Peer);
        assert_eq!(cfg.gossip.bootstrap.len(), 1);
        assert_eq!(cfg.gossip.orderer_connected, node.name == "peer0");
    }

    // Users: clients may write, both orgs' peers satisfy the token endorsement policy, one
    // org's peer alone does not.
    let user = generated.user("Org1MSP", "User1").unwrap();
    let client = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key).unwrap();
    let client_signer = signer_of(&channel, &client);
    assert_eq!(client_signer.role, Role::Client);
    assert!(channel
        .evaluate("Writers", std::slice::from_ref(&client_signer))
        .unwrap());
    assert!(channel
        .evaluate("Readers", std::slice::from_ref(&client_signer))
        .unwrap());
    assert!(!channel
        .evaluate("BlockValidation", &[client_signer])
        .unwrap());
    let peers: Vec<Signer> = generated
        .peers
        .iter()
        .filter(|p| p.name == "peer0")
        .map(|p| {
            let cfg = PeerConfig::load(&p.config).unwrap();
            signer_of(
                &channel,
                &SigningIdentity::from_pem_files(
                    &cfg.msp_id,
                    &cfg.identity.cert,
                    &cfg.identity.key,
                )
                .unwrap(),
            )
        })
        .collect();
    assert!(channel.evaluate_endorsement("token", &peers).unwrap());
    assert!(!channel.evaluate_endorsement("token", &peers[..1]).unwrap());
    // MAJORITY of 2 application orgs needs both.
    assert!(channel.evaluate_endorsement("kv", &peers).unwrap());
    assert!(!channel.evaluate_endorsement("kv", &peers[1..]).unwrap());

    // An Admin's signature verifies through the channel's MSPs.
    let admin = generated.user("Org2MSP", "Admin").unwrap();
    let admin = SigningIdentity::from_pem_files("Org2MSP", &admin.cert, &admin.key).unwrap();
    let sig = admin.sign(Domain::Envelope, &[b"x"]);
    let verified = channel
        .msps()
        .deserialize_identity(admin.serialized(), NOW)
        .unwrap();
    verified.verify(Domain::Envelope, &[b"x"], &sig).unwrap();
    assert_eq!(verified.role, Role::Admin);

    // The layout can be recomputed from the directory alone.
    let loaded = Generated::load(&out).unwrap();
    assert_eq!(loaded.orderers, generated.orderers);
    assert_eq!(loaded.peers, generated.peers);
}

/// The TLS certificate is ECDSA P-256 (the default) and names the TLS CA, ECDSA P-256 too, as
/// issuer. (That the chain verifies is what every TLS test's handshake shows.)
pub(super) fn assert_tls_ecdsa_p256_issued_by(cert_der: &[u8], ca_der: &[u8]) {
    use x509_parser::oid_registry::OID_EC_P256;
    use x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY;
    use x509_parser::prelude::FromDer as _;
    use x509_parser::prelude::X509Certificate;
    let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    for c in [&cert, &ca] {
        let alg = &c.tbs_certificate.subject_pki.algorithm;
        assert_eq!(alg.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
        let curve = alg.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve, OID_EC_P256);
    }
    assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
    assert!(ca.is_ca() && !cert.is_ca());
    // No role OU: a TLS certificate never passes as a signing identity.
    assert_eq!(cert.subject().iter_organizational_unit().count(), 0);
    assert!(CertInfo::from_der(cert_der).is_err());
}

#[test]
fn tls_key_algorithm_is_ecdsa_p256_by_default_and_ed25519_on_request() {
    let spec = NetworkSpec::from_toml(SAMPLE).unwrap();
    assert_eq!(
        spec.tls_key_algorithm,
        crate::msp::TlsKeyAlgorithm::EcdsaP256
    );
    let ed = NetworkSpec::from_toml(&format!("tls_key_algorithm = \"ed25519\"\n{SAMPLE}")).unwrap();
    assert_eq!(ed.tls_key_algorithm, crate::msp::TlsKeyAlgorithm::Ed25519);
    let dir = tempfile::tempdir().unwrap();
    let generated = generate(&ed, &dir.path().join("net"), NOW).unwrap();
    let tls = std::fs::read_to_string(generated.orderers[0].dir.join("tls/cert.pem")).unwrap();
    let tls = CertInfo::from_der(&crate::msp::pem_to_der(&tls).unwrap()).unwrap();
    let ca = std::fs::read(&generated.tls_ca_certs[0]).unwrap();
    let ca = CertInfo::from_der(&crate::msp::pem_to_der(&String::from_utf8(ca).unwrap()).unwrap())
        .unwrap();
    assert!(tls.is_signed_by(&ca));
    let err =
        NetworkSpec::from_toml(&format!("tls_key_algorithm = \"rsa\"\n{SAMPLE}")).unwrap_err();
    assert!(err.to_string().contains("tls_key_algorithm"), "{err}");
}

#[test]
fn generating_into_a_non_empty_directory_is_refused() {
    let spec = NetworkSpec::from_toml(SAMPLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    assert!(matches!(
        generate(&spec, dir.path(), NOW),
        Err(MaterialError::NotEmpty { .. })
    ));
}

#[test]
fn spec_errors_name_the_field() {
    let err =
        NetworkSpec::from_toml("name = \"x\"\norderer_orgs = []\nchannels = []\n").unwrap_err();
    assert!(err.to_string().contains("`orderer_orgs`"), "{err}");
    let bad_org = SAMPLE.replace(
        "# orgs = [\"Org1MSP\", \"Org2MSP\"]",
        "orgs = [\"Org1MSP\", \"Org3MSP\"]",
    );
    let err = NetworkSpec::from_toml(&bad_org).unwrap_err();
    assert!(err.to_string().contains("channels[0].orgs"), "{err}");
    let err = NetworkSpec::from_toml(&SAMPLE.replace("name = \"peer1\"", "name = \"peer0\""))
        .unwrap_err();
    assert!(err.to_string().contains("not unique"), "{err}");
    let err = NetworkSpec::from_toml(&SAMPLE.replace("timeout_ms = 100", "timeout_msec = 100"))
        .unwrap_err();
    assert!(err.to_string().contains("timeout_msec"), "{err}");
    // An org whose peers all are gossip-only would never get a block.
    let err = NetworkSpec::from_toml(&SAMPLE.replacen(
        "ops_port = 8460\norderer_connected = true",
        "ops_port = 8460\norderer_connected = false",
        1,
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("Org1MSP peers.orderer_connected"),
        "{err}"
    );
}

#[test]
fn malformed_policy_in_spec_fails_generation_naming_the_policy() {
    let spec = NetworkSpec::from_toml(&SAMPLE.replace(
        "AND('Org1MSP.peer', 'Org2MSP.peer')",
        "AND('Org1MSP.peer', 'Org9MSP.peer')",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = generate(&spec, dir.path(), NOW).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, MaterialError::Channel { .. }), "{msg}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("chaincode token"), "{source}");
}
