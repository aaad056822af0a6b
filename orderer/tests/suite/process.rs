//! The `orderer` binary as an operator runs it: `orderer start --config`, readiness on the ops
//! port, ordering, graceful stop on SIGTERM (exit 0, data kept), restart with the chain intact,
//! and a config error that names the field.

use std::net::TcpListener as StdListener;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::material;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn one_orderer_spec() -> (NetworkSpec, u16, u16) {
    let (port, cluster, ops) = (free_port(), free_port(), free_port());
    let text = format!(
        r#"
name = "proc"
[[orderer_orgs]]
msp_id = "OrdererMSP"
[[orderer_orgs.orderers]]
name = "orderer1"
port = {port}
cluster_port = {cluster}
ops_port = {ops}
[[peer_orgs]]
msp_id = "Org1MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 1
gossip_port = 2
ops_port = 3
[[channels]]
id = "procchannel"
[channels.batch]
timeout_ms = 20
"#
    );
    (NetworkSpec::from_toml(&text).unwrap(), port, ops)
}

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orderer"))
        .args(["start", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

async fn wait_ready(ops: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = http_get(ops, "/readyz").await {
            return;
        }
        assert!(Instant::now() < deadline, "orderer never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "orderer still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_orders_stops_on_sigterm_and_restarts_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, port, ops) = one_orderer_spec();
    let generated = material::generate(&spec, &dir.path().join("net"), now_unix()).unwrap();
    let config = generated.orderers[0].config.clone();
    let user = generated.user("Org1MSP", "User1").unwrap();
    let client_id = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key).unwrap();
    let mut ca = Vec::new();
    for c in &generated.tls_ca_certs {
        ca.extend(std::fs::read(c).unwrap());
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(
            std::fs::read(&user.tls_cert).unwrap(),
            std::fs::read(&user.tls_key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    let mut client = AtomicBroadcastClient::new(channel);

    let mut child = start(&config);
    wait_ready(ops).await;
    let mut tx_ids = Vec::new();
    for i in 0..5 {
        let env = envelope::create_signed_envelope(
            &client_id,
            HeaderType::EndorserTransaction,
            "procchannel",
            format!("tx {i}").into_bytes(),
            envelope::new_nonce(),
            0,
        );
        tx_ids.push(client.submit(env).await.unwrap().into_inner().tx_id);
    }
    let (code, metrics) = http_get(ops, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("weft_orderer_broadcast_total{status=\"SUCCESS\"} 5"),
        "{metrics}"
    );

    // A client follows the chain with a Deliver stream that never ends by itself.
    let follow = SeekInfo {
        start: Some(shared_proto::seek::specified(0)),
        stop: Some(shared_proto::seek::follow()),
        behavior: SeekBehavior::BlockUntilReady as i32,
    };
    let request = envelope::create_signed_envelope(
        &client_id,
        HeaderType::DeliverSeekInfo,
        "procchannel",
        follow.encode_to_vec(),
        envelope::new_nonce(),
        now_unix() as u64 * 1000,
    );
    let mut following = client
        .deliver(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        following.next().await.unwrap().unwrap().r#type,
        Some(Type::Block(_))
    ));

    // SIGTERM with that stream open: graceful stop within the bound, exit status 0, and the
    // client is told the node is stopping.
    let sent = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child);
    let took = sent.elapsed();
    println!("orderer exited {took:?} after SIGTERM with a Deliver stream open");
    assert!(status.success(), "orderer exited with {status}");
    // The bound is 5 s; allow for a loaded box.
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    let ended = loop {
        match following.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("Deliver stream ended without a status"),
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("node is stopping"), "{ended:?}");

    // Restart: every acknowledged envelope is still in the chain. Acked means ordered: an
    // envelope acked just before SIGTERM may be cut into a block only after the restart (by
    // the batch timer), so follow the chain until all are there, with a deadline.
    let mut child = start(&config);
    wait_ready(ops).await;
    let request = envelope::create_signed_envelope(
        &client_id,
        HeaderType::DeliverSeekInfo,
        "procchannel",
        follow.encode_to_vec(),
        envelope::new_nonce(),
        now_unix() as u64 * 1000,
    );
    let mut stream = client
        .deliver(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !tx_ids.iter().all(|id| found.contains(id)) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        if let Some(Type::Block(b)) = msg.unwrap().r#type {
            for env in shared_proto::block::tx_envelopes(&b) {
                if let Some(id) = orderer::block_store::tx_id_of(env) {
                    found.push(id);
                }
            }
        }
    }
    // Block 0's config envelope has a tx id too; every acked one must be there.
    for id in &tx_ids {
        assert!(found.contains(id), "acked tx {id} lost across restart");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(wait_exit(&mut child).success());
}

#[test]
fn invalid_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _, _) = one_orderer_spec();
    let generated = material::generate(&spec, &dir.path().join("net"), now_unix()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orderer"))
        .args(["start", "--config"])
        .arg(&generated.orderers[0].config)
        .env("WEFT_ORDERER_RAFT__ELECTION_TIMEOUT_MIN_MS", "10")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("raft.election_timeout_min_ms"), "{stderr}");
}
