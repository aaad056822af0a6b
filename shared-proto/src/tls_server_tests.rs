//! Client trust follows the channels: a client of a CA the node's files do not name is refused
//! until a channel config names that CA, and refused again once that channel is gone; the
//! node's own CAs stay trusted throughout. Real sockets, real handshakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic::transport::Server;

use super::incoming;
use super::server_config;
use super::Trust;
use crate::msp::pem_to_der;
use crate::node_config::TlsFiles;
use crate::pb::common::Envelope;
use crate::pb::orderer::admin_client::AdminClient;
use crate::pb::orderer::admin_server::AdminServer;
use crate::test_answer::Answer;
use crate::tls::tests::material;
use crate::tls::tests::Alg;
use crate::tls::TlsMaterial;

fn load(paths: &(PathBuf, PathBuf, PathBuf), roots: &[&PathBuf]) -> TlsMaterial {
    TlsMaterial::load(&TlsFiles {
        cert: paths.1.clone(),
        key: paths.2.clone(),
        ca_roots: roots.iter().map(|p| (*p).clone()).collect(),
    })
    .unwrap()
}

/// How many client certificates the server saw, or the error text.
async fn call(addr: std::net::SocketAddr, client: &TlsMaterial) -> Result<u64, String> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client.client("127.0.0.1"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    AdminClient::new(channel)
        .cluster_status(Envelope::default())
        .await
        .map(|r| r.get_ref().node_id)
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn client_of_a_ca_named_only_in_a_channel_config_is_accepted_while_that_channel_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = material(Alg::EcdsaP256, &dir.path().join("node"));
    let newcomer = material(Alg::EcdsaP256, &dir.path().join("neworg"));
    // The server trusts its own CA only; the newcomer trusts the server's CA.
    let server_tls = load(&node, &[&node.0]);
    let own_client = load(&node, &[&node.0]);
    let new_client = load(&newcomer, &[&node.0]);
    let new_ca_der = pem_to_der(&std::fs::read_to_string(&newcomer.0).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let trust = Trust::new(server_tls.ca_roots_der().to_vec()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(&server_tls, &trust, true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .add_service(AdminServer::new(Answer))
                .serve_with_incoming_shutdown(incoming(listener, config), async {
                    let _ = stopped.await;
                }),
        );
        assert_eq!(call(addr, &own_client).await, Ok(1), "own CA");
        let refused = call(addr, &new_client).await;
        assert!(refused.is_err(), "unknown CA accepted: {refused:?}");
        assert!(!trust.accepts(&new_client.cert_der));

        trust.set_channel("neworg-channel", vec![new_ca_der.clone()]);
        assert_eq!(
            call(addr, &new_client).await,
            Ok(1),
            "CA named by a channel"
        );
        assert_eq!(call(addr, &own_client).await, Ok(1), "own CA still trusted");

        trust.remove_channel("neworg-channel");
        let refused = call(addr, &new_client).await;
        assert!(refused.is_err(), "CA of a removed channel: {refused:?}");
        assert_eq!(call(addr, &own_client).await, Ok(1));
        let _ = stop.send(());
        let _ = server.await;
    });
}

#[test]
fn a_channel_root_that_does_not_parse_leaves_the_others_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let node = material(Alg::EcdsaP256, &dir.path().join("node"));
    let other = material(Alg::Ed25519, &dir.path().join("other"));
    let tls = load(&node, &[&node.0]);
    let other_client = load(&other, &[&node.0]);
    let other_ca = pem_to_der(&std::fs::read_to_string(&other.0).unwrap()).unwrap();
    let trust: Arc<Trust> = Trust::new(tls.ca_roots_der().to_vec()).unwrap();
    trust.set_channel("c", vec![b"not a certificate".to_vec(), other_ca]);
    assert!(trust.accepts(&other_client.cert_der));
    assert!(trust.accepts(&tls.cert_der));
}

#[test]
fn a_silent_client_does_not_hold_up_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let node = material(Alg::EcdsaP256, &dir.path().join("node"));
    let tls = load(&node, &[&node.0]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let trust = Trust::new(tls.ca_roots_der().to_vec()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(&tls, &trust, true).unwrap();
        let server = tokio::spawn(
            Server::builder()
                .add_service(AdminServer::new(Answer))
                .serve_with_incoming(incoming(listener, config)),
        );
        // Connected, never says a word: the handshake deadline is 10 s, the call's is 20 s
        // and only passes if this connection is handshaken on its own task.
        let _silent: Vec<tokio::net::TcpStream> = vec![
            tokio::net::TcpStream::connect(addr).await.unwrap(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        ];
        assert_eq!(call(addr, &tls).await, Ok(1));
        server.abort();
    });
}
