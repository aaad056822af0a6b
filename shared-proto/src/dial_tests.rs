//! The dialer connects where the override says and still verifies the advertised name, over
//! real sockets: the server's certificate names only `orderer1.example`, never the address the
//! test connects to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use tonic::transport::Server;

use super::AddressBook;
use super::Dialer;
use crate::msp::der_to_pem;
use crate::node_config::AddressOverride;
use crate::node_config::TlsFiles;
use crate::pb::common::Envelope;
use crate::pb::orderer::admin_client::AdminClient;
use crate::pb::orderer::admin_server::AdminServer;
use crate::tls::TlsMaterial;

fn o(from: &str, to: &str) -> AddressOverride {
    AddressOverride {
        from: from.into(),
        to: to.into(),
    }
}

#[test]
fn address_book_dials_the_override_and_passes_other_addresses_through() {
    let book = AddressBook::new(&[
        o("orderer2.example.com:7050", "127.0.0.1:17050"),
        o("peer0.org1:7051", "peer0.org1.svc:7051"),
    ]);
    assert_eq!(book.resolve("orderer2.example.com:7050"), "127.0.0.1:17050");
    assert_eq!(book.resolve("peer0.org1:7051"), "peer0.org1.svc:7051");
    // Another port of the same host, or the same name spelled otherwise, is not overridden.
    assert_eq!(
        book.resolve("orderer2.example.com:7051"),
        "orderer2.example.com:7051"
    );
    assert_eq!(
        book.resolve("ORDERER2.example.com:7050"),
        "ORDERER2.example.com:7050"
    );
    assert_eq!(AddressBook::default().resolve("a:1"), "a:1");
}

/// A CA and a server+client certificate for `name` only, written to `dir`; loaded as TLS
/// material trusting that CA.
fn material_for(name: &str, dir: &Path) -> TlsMaterial {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "tlsca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec![name.into()]).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca_roots: vec![dir.join("ca.pem")],
    };
    std::fs::write(&files.ca_roots[0], der_to_pem("CERTIFICATE", ca_cert.der())).unwrap();
    std::fs::write(&files.cert, der_to_pem("CERTIFICATE", leaf_cert.der())).unwrap();
    std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
    TlsMaterial::load(&files).unwrap()
}

use crate::test_answer::Answer;

async fn ask(dialer: &Dialer, advertised: &str) -> Result<u64, String> {
    let channel = dialer
        .endpoint(advertised)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    AdminClient::new(channel)
        .cluster_status(Envelope::default())
        .await
        .map(|r| r.get_ref().node_id)
        .map_err(|s| format!("{s:?}"))
}

#[test]
fn overridden_link_connects_to_the_override_and_verifies_the_advertised_name() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Arc::new(material_for("orderer1.example", dir.path()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .add_service(AdminServer::new(Answer))
                .serve_with_incoming_shutdown(
                    crate::tls_server::incoming_with_own_roots(listener, &tls, true).unwrap(),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        let dialer = Dialer::new(
            tls.clone(),
            AddressBook::new(&[
                o("orderer1.example:7050", &real),
                o("impostor.example:7050", &real),
            ]),
        );
        // Through the override, verified as orderer1.example, with this node's client
        // certificate presented (mutual TLS).
        assert_eq!(ask(&dialer, "orderer1.example:7050").await, Ok(1));
        // The certificate is still checked: a name it was not issued for fails, and so does
        // the override's own address (the certificate does not name 127.0.0.1).
        let impostor = ask(&dialer, "impostor.example:7050").await;
        assert!(impostor.is_err(), "{impostor:?}");
        let by_address = ask(&Dialer::direct(tls.clone()), &real).await;
        assert!(by_address.is_err(), "{by_address:?}");
        let _ = stop.send(());
        let _ = server.await;
    });
}
