#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use super::tests::assert_tls_ecdsa_p256_issued_by;
use super::tests::load_channel;
use super::tests::NOW;
use super::tests::SAMPLE;
use super::*;
use crate::node_config::OrdererConfig;
use crate::node_config::PeerConfig;
use crate::tls::TlsMaterial;

/// Thirty days after the network was generated.
const LATER: i64 = NOW + 30 * 86_400;

fn sample(dir: &Path) -> Generated {
    generate(&NetworkSpec::from_toml(SAMPLE).unwrap(), dir, NOW).unwrap()
}

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

fn der(path: &Path) -> Vec<u8> {
    crate::msp::pem_to_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The TLS material at `files` loads, its key matches its certificate (a server config builds)
/// and the certificate chains to the org's TLS CA at `now`.
fn assert_usable(tls: &crate::node_config::TlsFiles, now: i64) {
    let m = TlsMaterial::load(tls).unwrap();
    let trust = crate::tls_server::Trust::new(m.ca_roots_der().to_vec()).unwrap();
    crate::tls_server::server_config(&m, &trust, true).unwrap();
    crate::tls::verify_issued(&der(&tls.cert), m.ca_roots_der(), now).unwrap();
}

#[test]
fn renewing_an_orderer_replaces_only_its_tls_pair_keeps_the_old_one_and_unpins_the_consenter() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let g = sample(&net);
    let node = g.orderers.iter().find(|n| n.name == "orderer2").unwrap();
    let tls = node.dir.join("tls");
    let before = files(&net);
    let old_cert = std::fs::read(tls.join("cert.pem")).unwrap();
    let old_key = std::fs::read(tls.join("key.pem")).unwrap();

    let r = renew_tls(&net, &node.msp_id, "orderer2", LATER).unwrap();

    assert_eq!(r.kind, "orderer");
    assert_eq!(r.cert, tls.join("cert.pem"));
    assert_ne!(r.sha256, r.previous_sha256);
    assert_eq!(
        r.previous_sha256,
        hex_of(&crate::hash::sha256(&der_of(&old_cert)))
    );
    let new_cert = std::fs::read(tls.join("cert.pem")).unwrap();
    assert_ne!(new_cert, old_cert);
    assert_ne!(std::fs::read(tls.join("key.pem")).unwrap(), old_key);
    assert_eq!(std::fs::read(tls.join("cert.pem.prev")).unwrap(), old_cert);
    assert_eq!(std::fs::read(tls.join("key.pem.prev")).unwrap(), old_key);
    assert!(!tls.join("next").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(tls.join("key.pem"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    // Valid from the renewal on, for the validity the spec gives (the CA lasts as long from
    // NOW, so the CA's end caps it).
    assert!(r.not_after_unix > LATER);
    let cfg = OrdererConfig::load(&node.config).unwrap();
    assert_usable(&cfg.tls, LATER);

    // Issued by the same org TLS CA, for the same host; no other file changed.
    let channel = load_channel(&g.channels[0].1);
    let tls_ca = &channel.config().orderer_orgs[0].tls_root_certs[0];
    assert_tls_ecdsa_p256_issued_by(&der(&tls.join("cert.pem")), tls_ca);
    let after = files(&net);
    for (path, bytes) in &before {
        if path.starts_with(&tls) {
            continue;
        }
        assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
    }
    assert_eq!(
        after.len(),
        before.len() + 2,
        "only the two .prev files are new"
    );

    // The genesis block still pins the old certificate: the consenter entry is now stale
    // (what `orderer admin consenter replace` then changes).
    let pinned = channel.consenters().iter().find(|c| c.id == 2).unwrap();
    assert_eq!(pinned.server_tls_cert, der_of(&old_cert));
    assert_ne!(pinned.server_tls_cert, der(&tls.join("cert.pem")));
}

#[test]
fn renewing_a_peer_works_and_a_second_renewal_keeps_the_first_as_prev() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let g = sample(&net);
    let node = g.peers.iter().find(|n| n.msp_id == "Org2MSP").unwrap();
    let first = renew_tls(&net, "Org2MSP", &node.name, LATER).unwrap();
    assert_eq!(first.kind, "peer");
    let second = renew_tls(&net, "Org2MSP", &node.name, LATER + 60).unwrap();
    assert_eq!(second.previous_sha256, first.sha256);
    assert_ne!(second.sha256, first.sha256);
    let cfg = PeerConfig::load(&node.config).unwrap();
    assert_usable(&cfg.tls, LATER + 60);
}

#[test]
fn an_unknown_node_is_refused_naming_the_nodes_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    sample(&net);
    let before = files(&net);
    let err = renew_tls(&net, "OrdererMSP", "orderer9", LATER).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("orderer9"), "{text}");
    assert!(text.contains("OrdererMSP/orderer1"), "{text}");
    // A peer's name under the orderer org is not that peer.
    assert!(renew_tls(&net, "OrdererMSP", "peer0", LATER).is_err());
    assert_eq!(files(&net), before);
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    crate::msp::pem_to_der(&String::from_utf8_lossy(pem)).unwrap()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
