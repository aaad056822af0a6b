//! Address overrides on a peer (issue 11, "Addresses"): the orderer endpoints of the channel
//! config and the gossip endpoints peers advertise are dialled where the peer's
//! `address_overrides` say. Each override here names a byte-counting forwarder, one per
//! directed link, so the test sees which links carried the blocks.

use crate::common;

use common::workload::*;
use common::*;
use shared_proto::node_config::AddressOverride;

#[test]
fn org_peers_pull_from_orderers_and_gossip_only_through_address_overrides() {
    // Org1: peer0 pulls from the orderers, peer1 is gossip-only; both start once their
    // overrides are in place.
    let mut net = TestNet::start_with(Topology {
        org1: vec![true, false],
        hold_back: vec![("Org1MSP", "peer0"), ("Org1MSP", "peer1")],
        ..Topology::default()
    })
    .unwrap();
    let (p0, p1) = (
        net.peer_index("Org1MSP", "peer0"),
        net.peer_index("Org1MSP", "peer1"),
    );
    // The advertised addresses: orderer client endpoints (as in the channel config) and the
    // two peers' gossip endpoints.
    let orderers: Vec<String> = net
        .orderer_configs
        .iter()
        .map(|c| c.listen_address.clone())
        .collect();
    let gossip = |i: usize| net.peer_configs[i].gossip.external_endpoint.clone();
    let (g0, g1) = (gossip(p0), gossip(p1));
    let real_gossip = |i: usize| net.peer_configs[i].gossip_listen_address.clone();
    let mut targets = orderers.clone();
    targets.extend([real_gossip(p1), real_gossip(p0)]);
    let forwarders = forwarders(&targets).unwrap();
    let via = |k: usize| forwarders.list[k].listen.clone();
    let n = orderers.len();
    let overrides = |pairs: Vec<(String, String)>| -> Vec<AddressOverride> {
        pairs
            .into_iter()
            .map(|(from, to)| AddressOverride { from, to })
            .collect()
    };
    let mut to_orderers: Vec<(String, String)> = orderers
        .iter()
        .enumerate()
        .map(|(k, o)| (o.clone(), via(k)))
        .collect();
    to_orderers.push((g1.clone(), via(n)));
    net.peer_configs[p0].address_overrides = overrides(to_orderers);
    net.peer_configs[p1].address_overrides = overrides(vec![(g0.clone(), via(n + 1))]);
    for i in [p0, p1] {
        net.peer_configs[i].validate().unwrap();
        net.start_peer(i).unwrap();
    }
    let rt = runtime();
    rt.block_on(async {
        let gw = net.gateway("Org1MSP");
        for k in 0..5 {
            gw.submit("kv", "put", &[arg(format!("k{k}")), arg("v")])
                .await
                .unwrap();
        }
        net.wait_peers_at(net.orderer_height(), WAIT).await.unwrap();
    });
    let height = net.orderer_height();
    assert!(height > 5, "orderer height {height}");
    assert_eq!(net.ledger(p1).height(), height, "gossip-only peer");
    let bytes: Vec<u64> = forwarders.list.iter().map(|f| f.bytes()).collect();
    println!("height {height}; bytes through forwarders (orderers.., peer0->peer1, peer1->peer0): {bytes:?}");
    assert!(
        bytes[..n].iter().sum::<u64>() > 0,
        "peer0 pulled blocks without dialling its orderer overrides: {bytes:?}"
    );
    assert!(bytes[n] > 0, "peer0 -> peer1 gossip bypassed the override");
    assert!(
        bytes[n + 1] > 0,
        "peer1 -> peer0 gossip bypassed the override"
    );
}
