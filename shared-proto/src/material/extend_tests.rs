#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use prost::Message as _;

use super::tests::assert_tls_ecdsa_p256_issued_by;
use super::tests::load_channel;
use super::tests::signer_at;
use super::tests::NOW;
use super::tests::SAMPLE;
use super::*;
use crate::msp::CertInfo;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::node_config::OrdererConfig;
use crate::node_config::PeerConfig;
use crate::pb::common::Block;
use crate::policy::Signer;

/// A day after the network was generated.
const LATER: i64 = NOW + 86_400;

/// `identity` as `channel`'s MSPs see it at `LATER`.
fn signer_of(channel: &crate::channel::Channel, identity: &SigningIdentity) -> Signer {
    signer_at(channel, identity, LATER)
}

fn sample(dir: &Path) -> Generated {
    generate(&NetworkSpec::from_toml(SAMPLE).unwrap(), dir, NOW).unwrap()
}

/// Every file under `dir`, by path, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Every file that existed `before` still has the same bytes, except `network.toml`.
fn assert_untouched(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = files(dir);
    for (path, bytes) in before {
        if path.ends_with("network.toml") {
            continue;
        }
        assert!(
            after.get(path) == Some(bytes),
            "{} changed or vanished",
            path.display()
        );
    }
}

fn cert_of(path: &Path) -> CertInfo {
    let pem = std::fs::read_to_string(path).unwrap();
    CertInfo::from_der(&crate::msp::pem_to_der(&pem).unwrap()).unwrap()
}

fn der_of(path: &Path) -> Vec<u8> {
    crate::msp::pem_to_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn orderer4() -> OrdererSpec {
    OrdererSpec {
        name: "orderer4".into(),
        id: None,
        host: "127.0.0.1".into(),
        port: 7053,
        cluster_port: 7153,
        ops_port: 8453,
    }
}

#[test]
fn orderer_added_chains_to_the_orgs_existing_cas_is_listed_and_leaves_existing_files_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let before_gen = sample(&dir);
    let before = files(&dir);

    let after = add_orderer(&dir, "OrdererMSP", orderer4(), LATER).unwrap();

    // Listed: Generated::load finds it, with the next free node id, and the others keep theirs.
    let loaded = Generated::load(&dir).unwrap();
    assert_eq!(loaded.orderers, after.orderers);
    assert_eq!(loaded.orderers.len(), 4);
    assert_eq!(&loaded.orderers[..3], &before_gen.orderers[..]);
    assert_eq!(loaded.peers, before_gen.peers);
    assert_eq!(loaded.spec.orderer_ids(), [1, 2, 3, 4]);
    let node = &loaded.orderers[3];
    assert_eq!(
        (node.name.as_str(), node.msp_id.as_str()),
        ("orderer4", "OrdererMSP")
    );

    // Its config validates and names every channel's genesis block.
    let cfg = OrdererConfig::load(&node.config).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.node_id, 4);
    assert_eq!(cfg.network, "sample");
    assert_eq!(cfg.listen_address, "127.0.0.1:7053");
    assert_eq!(cfg.channels.len(), 1);
    assert_eq!(
        cfg.channels[0].genesis_block.canonicalize().unwrap(),
        loaded.channels[0].1.canonicalize().unwrap()
    );
    assert_eq!(cfg.tls.ca_roots.len(), 3);

    // Its identity is an orderer of the org by the org's existing CA; its TLS certificate is
    // the existing TLS CA's.
    let ca_dir = dir.join("orgs/OrdererMSP");
    let identity = cert_of(&cfg.identity.cert);
    assert!(identity.is_signed_by(&cert_of(&ca_dir.join("ca/cert.pem"))));
    let channel = load_channel(&loaded.channels[0].1);
    let me = SigningIdentity::from_pem_files(&cfg.msp_id, &cfg.identity.cert, &cfg.identity.key)
        .unwrap();
    assert_eq!(signer_of(&channel, &me).role, Role::Orderer);
    assert_tls_ecdsa_p256_issued_by(
        &der_of(&cfg.tls.cert),
        &der_of(&ca_dir.join("tlsca/cert.pem")),
    );
    // Issued as of `LATER`, not as of the network's generation.
    assert!(identity.not_before_unix > NOW);

    // Nothing that existed changed, byte for byte.
    assert_untouched(&dir, &before);
}

#[test]
fn peer_added_to_an_org_is_issued_by_its_cas_and_bootstraps_gossip_from_the_orgs_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    sample(&dir);
    let before = files(&dir);
    let peer = PeerSpec {
        name: "peer2".into(),
        host: "127.0.0.1".into(),
        port: 7062,
        gossip_port: 7162,
        ops_port: 8462,
        orderer_connected: true,
    };

    let after = add_peer(&dir, "Org1MSP", peer, LATER).unwrap();

    assert_eq!(Generated::load(&dir).unwrap().peers, after.peers);
    let node = after
        .peers
        .iter()
        .find(|p| p.msp_id == "Org1MSP" && p.name == "peer2")
        .unwrap();
    let cfg = PeerConfig::load(&node.config).unwrap();
    cfg.validate().unwrap();
    let mut bootstrap = cfg.gossip.bootstrap.clone();
    bootstrap.sort();
    assert_eq!(bootstrap, ["127.0.0.1:7160", "127.0.0.1:7161"]);
    assert!(cfg.gossip.orderer_connected);
    assert_eq!(cfg.channels.len(), 1);
    let channel = load_channel(&after.channels[0].1);
    let me = SigningIdentity::from_pem_files(&cfg.msp_id, &cfg.identity.cert, &cfg.identity.key)
        .unwrap();
    assert_eq!(signer_of(&channel, &me).role, Role::Peer);
    assert_tls_ecdsa_p256_issued_by(
        &der_of(&cfg.tls.cert),
        &der_of(&dir.join("orgs/Org1MSP/tlsca/cert.pem")),
    );
    assert_untouched(&dir, &before);
}

#[test]
fn org_added_gets_its_own_cas_admin_user_and_peer_and_the_organization_entry_a_config_update_needs()
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    sample(&dir);
    let before = files(&dir);
    let org = PeerOrgSpec {
        msp_id: "Org3MSP".into(),
        peers: vec![PeerSpec {
            name: "peer0".into(),
            host: "127.0.0.1".into(),
            port: 7080,
            gossip_port: 7180,
            ops_port: 8480,
            orderer_connected: true,
        }],
        users: vec!["User1".into()],
    };

    let (after, entry) = add_peer_org(&dir, org, LATER).unwrap();

    let org_dir = dir.join("orgs/Org3MSP");
    assert_eq!(entry.msp_id, "Org3MSP");
    assert_eq!(entry.root_certs, [der_of(&org_dir.join("ca/cert.pem"))]);
    assert_eq!(
        entry.tls_root_certs,
        [der_of(&org_dir.join("tlsca/cert.pem"))]
    );
    assert_eq!(entry.anchor_peers, ["127.0.0.1:7180"]);
    assert!(entry.policies.iter().any(|p| p.name == "Admins"));
    // A channel config that holds the entry accepts the new org's Admin as an admin.
    let mut config = load_channel(&after.channels[0].1).config().clone();
    config.application_orgs.push(entry);
    let channel = crate::channel::Channel::from_config(config).unwrap();
    let admin = after.user("Org3MSP", "Admin").unwrap();
    let admin = SigningIdentity::from_pem_files("Org3MSP", &admin.cert, &admin.key).unwrap();
    assert_eq!(signer_of(&channel, &admin).role, Role::Admin);
    assert!(after.user("Org3MSP", "User1").is_some());
    assert_eq!(after.tls_ca_certs.len(), 4);

    // Its peer trusts every org's TLS CA and joins every channel with the genesis block.
    let node = after.peers.iter().find(|p| p.msp_id == "Org3MSP").unwrap();
    let cfg = PeerConfig::load(&node.config).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.tls.ca_roots.len(), 4);
    assert_eq!(cfg.channels.len(), 1);
    assert!(cfg.gossip.bootstrap.is_empty());
    assert_ne!(
        der_of(&org_dir.join("ca/cert.pem")),
        der_of(&dir.join("orgs/Org1MSP/ca/cert.pem"))
    );
    assert_untouched(&dir, &before);
}

#[test]
fn channel_added_has_a_genesis_block_with_every_org_and_the_consenters_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let g = sample(&dir);
    let before = files(&dir);
    let first = load_channel(&g.channels[0].1);
    // The consenters in force: here orderer1 and orderer2 only.
    let consenters = first.consenters()[..2].to_vec();
    let endpoints = first.orderer_endpoints()[..2].to_vec();
    let mut spec = g.spec.channels[0].clone();
    spec.id = "second".into();
    spec.batch.message_count_max = 7;

    let after = add_channel(&dir, spec, &consenters, &endpoints, LATER).unwrap();

    let (id, path) = after.channels.last().unwrap();
    assert_eq!(id, "second");
    assert_eq!(Generated::load(&dir).unwrap().channels, after.channels);
    let block = Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let channel = crate::channel::Channel::from_config_block(&block).unwrap();
    assert_eq!(channel.id(), "second");
    assert_eq!(channel.consenters(), &consenters[..]);
    assert_eq!(channel.orderer_endpoints(), &endpoints[..]);
    assert_eq!(channel.application_orgs(), first.application_orgs());
    assert_eq!(channel.orderer_orgs(), first.orderer_orgs());
    assert_eq!(channel.batch_size().message_count_max, 7);
    assert_eq!(
        channel.config().application_orgs,
        first.config().application_orgs
    );
    assert_untouched(&dir, &before);
}

#[test]
fn extending_with_a_taken_name_an_unknown_org_or_a_taken_channel_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let g = sample(&dir);
    let before = files(&dir);
    let taken = OrdererSpec {
        name: "orderer2".into(),
        ..orderer4()
    };
    let err = add_orderer(&dir, "OrdererMSP", taken, LATER).unwrap_err();
    assert!(err.to_string().contains("\"orderer2\""), "{err}");
    let err = add_orderer(&dir, "NoSuchMSP", orderer4(), LATER).unwrap_err();
    assert!(err.to_string().contains("NoSuchMSP"), "{err}");
    let err = add_orderer(&dir, "Org1MSP", orderer4(), LATER).unwrap_err();
    assert!(err.to_string().contains("Org1MSP"), "{err}");
    let first = load_channel(&g.channels[0].1);
    let err = add_channel(
        &dir,
        g.spec.channels[0].clone(),
        first.consenters(),
        first.orderer_endpoints(),
        LATER,
    )
    .unwrap_err();
    assert!(err.to_string().contains("mychannel"), "{err}");
    let org1 = g.spec.peer_orgs[0].clone();
    let err = add_peer_org(&dir, org1, LATER).unwrap_err();
    assert!(err.to_string().contains("Org1MSP"), "{err}");
    assert_eq!(
        files(&dir),
        before,
        "a refused extension changed the material"
    );
}
