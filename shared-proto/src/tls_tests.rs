//! Node TLS accepts every key type a client or a CA (cert-manager) may bring: ECDSA P-256 and
//! P-384, RSA and Ed25519, as server and as client certificates, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use tonic::transport::Endpoint;
use tonic::transport::Server;

use super::TlsMaterial;
use crate::msp::der_to_pem;
use crate::node_config::TlsFiles;
use crate::pb::common::Envelope;
use crate::pb::orderer::admin_client::AdminClient;
use crate::pb::orderer::admin_server::AdminServer;

/// Fixed RSA-2048 test keys (ring verifies and signs RSA but cannot generate it). Test only.
const RSA_CA_KEY: &str = include_str!("testdata/rsa2048-ca.key.pem");
const RSA_LEAF_KEY: &str = include_str!("testdata/rsa2048-leaf.key.pem");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

const ALL: [Alg; 4] = [Alg::EcdsaP256, Alg::EcdsaP384, Alg::Rsa2048, Alg::Ed25519];

fn key(alg: Alg, ca: bool) -> KeyPair {
    match alg {
        Alg::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        Alg::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        Alg::Rsa2048 => KeyPair::from_pem_and_sign_algo(
            if ca { RSA_CA_KEY } else { RSA_LEAF_KEY },
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap(),
    }
}

/// A TLS CA of `alg` and a server+client certificate it issued for 127.0.0.1, written to `dir`:
/// (`ca.pem`, `cert.pem`, `key.pem`).
pub(crate) fn material(alg: Alg, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = key(alg, true);
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("tlsca {alg:?}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = key(alg, false);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("node {alg:?}"));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, der_to_pem("CERTIFICATE", ca_cert.der())).unwrap();
    std::fs::write(&paths.1, der_to_pem("CERTIFICATE", leaf_cert.der())).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

use crate::test_answer::Answer;

#[test]
fn node_tls_accepts_ecdsa_p256_p384_rsa_and_ed25519_as_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let made: Vec<(Alg, (PathBuf, PathBuf, PathBuf))> = ALL
        .iter()
        .map(|alg| (*alg, material(*alg, &dir.path().join(format!("{alg:?}")))))
        .collect();
    let ca_roots: Vec<PathBuf> = made.iter().map(|(_, (ca, _, _))| ca.clone()).collect();
    let load = |alg: Alg| {
        let (_, (_, cert, key)) = made.iter().find(|(a, _)| *a == alg).unwrap();
        TlsMaterial::load(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca_roots: ca_roots.clone(),
        })
        .unwrap()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    rt.block_on(async {
        for server_alg in ALL {
            let server_tls = load(server_alg);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(
                Server::builder()
                    .add_service(AdminServer::new(Answer))
                    .serve_with_incoming_shutdown(
                        crate::tls_server::incoming_with_own_roots(listener, &server_tls, true)
                            .unwrap(),
                        async {
                            let _ = stopped.await;
                        },
                    ),
            );
            for client_alg in ALL {
                let channel = Endpoint::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(load(client_alg).client("127.0.0.1"))
                    .unwrap()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .timeout(std::time::Duration::from_secs(20))
                    .connect_lazy();
                let answer = AdminClient::new(channel)
                    .cluster_status(Envelope::default())
                    .await;
                match answer {
                    Ok(r) if r.get_ref().node_id == 1 => {}
                    other => failures.push(format!(
                        "server {server_alg:?}, client {client_alg:?}: {other:?}"
                    )),
                }
            }
            let _ = stop.send(());
            let _ = server.await;
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
