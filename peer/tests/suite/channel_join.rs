//! Channel participation on a running peer, with real orderers: a peer started with one
//! channel joins a second at run time from its genesis block (a signed request of its org's
//! Admin over mutual TLS; the other org's peer through `peer channel join`), commits blocks of
//! both channels, lists both, and still has both after a crash and restart (the joined block
//! is recorded under DATA_DIR/channels).

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use peer::participation::client::AdminClient;
use peer::sdk::Gateway;
use shared_proto::pb::peer::ChannelInfo;
use shared_proto::pb::tx::TxValidationCode;

/// The channels peer `i` has, by id.
fn channel_ids(net: &TestNet, i: usize) -> Vec<String> {
    net.peer(i).registry.ids()
}

fn service_addr(net: &TestNet, i: usize) -> String {
    let c = &net.peer_configs[i];
    let p = net
        .generated
        .spec
        .peer_orgs
        .iter()
        .filter(|o| o.msp_id == c.msp_id)
        .flat_map(|o| &o.peers)
        .find(|p| p.name == c.name)
        .unwrap();
    format!("{}:{}", p.host, p.port)
}

/// Runs the `peer` CLI to its end (bounded by the command's own deadlines).
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until peer `i` has block `number` of `channel`.
async fn wait_block(net: &TestNet, i: usize, channel: &str, number: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let height = net.ledger_of(i, channel).height();
        if height > number {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peer {i} at height {height} of {channel}, want block {number}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(gateway: &Gateway, key: &str) -> u64 {
    let r = gateway
        .submit("kv", "put", &[key.as_bytes().to_vec(), b"v".to_vec()])
        .await
        .unwrap();
    assert_eq!(r.code, TxValidationCode::Valid);
    r.block_number
}

#[test]
fn peer_joins_a_second_channel_at_run_time_commits_both_and_keeps_it_after_a_restart() {
    let mut net = TestNet::start_with(Topology {
        joinable_channel: true,
        ..Default::default()
    })
    .unwrap();
    let org1 = net.peer_index("Org1MSP", "peer0");
    let org2 = net.peer_index("Org2MSP", "peer0");
    for i in [org1, org2] {
        assert_eq!(channel_ids(&net, i), [CHANNEL]);
    }
    let (_, genesis_path) = net
        .generated
        .channels
        .iter()
        .find(|(id, _)| id == JOINABLE)
        .unwrap()
        .clone();
    let genesis = std::fs::read(&genesis_path).unwrap();
    let rt = runtime();

    // Org1's peer: a request signed by Org1's Admin.
    let _in_runtime = rt.enter();
    let admin = AdminClient::from_network(
        &net.generated,
        "Org1MSP",
        "Admin",
        &service_addr(&net, org1),
    )
    .unwrap();
    let info = rt.block_on(admin.join(genesis.clone())).unwrap();
    assert_eq!(
        info,
        ChannelInfo {
            channel_id: JOINABLE.into(),
            height: 1,
            config_sequence: 0,
        }
    );
    // Org2's peer: the CLI, with Org2's Admin from the network material.
    let network = net.generated.dir.to_str().unwrap().to_owned();
    let out = cli(&[
        "channel",
        "join",
        "--block",
        genesis_path.to_str().unwrap(),
        "--network",
        &network,
        "--org",
        "Org2MSP",
        "--peer",
        "peer0",
    ]);
    assert!(out.contains(&format!("joined channel {JOINABLE}")), "{out}");
    for i in [org1, org2] {
        assert_eq!(channel_ids(&net, i), [CHANNEL, JOINABLE]);
    }

    // Both channels take transactions (kv needs both orgs' endorsements).
    let on_first = net.gateway("Org1MSP");
    let on_joined = Gateway::from_network(&net.generated, "Org1MSP", "User1", JOINABLE).unwrap();
    let joined_block = rt.block_on(async {
        let first_block = put(&on_first, "a").await;
        let joined_block = put(&on_joined, "b").await;
        for i in [org1, org2] {
            wait_block(&net, i, CHANNEL, first_block).await;
            wait_block(&net, i, JOINABLE, joined_block).await;
        }
        joined_block
    });

    // `peer channel list` shows the joined channel.
    let listed: serde_json::Value = serde_json::from_str(&cli(&[
        "channel",
        "list",
        "--json",
        "--network",
        &network,
        "--org",
        "Org1MSP",
        "--peer",
        "peer0",
    ]))
    .unwrap();
    let ids: Vec<&str> = listed["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [CHANNEL, JOINABLE]);

    // A crash and restart: the peer starts the joined channel again, from its ledger.
    net.kill_peer(org1);
    net.start_peer(org1).unwrap();
    assert_eq!(channel_ids(&net, org1), [CHANNEL, JOINABLE]);
    assert!(net.ledger_of(org1, JOINABLE).height() > joined_block);
    rt.block_on(async {
        let again = put(&on_joined, "c").await;
        wait_block(&net, org1, JOINABLE, again).await;
        let first = put(&on_first, "d").await;
        wait_block(&net, org1, CHANNEL, first).await;
        assert_eq!(
            on_joined
                .evaluate("kv", "get", &[b"c".to_vec()])
                .await
                .unwrap(),
            b"v"
        );
    });
    // Joining it again is refused.
    let err = rt.block_on(admin.join(genesis)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err}");
}
