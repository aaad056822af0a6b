//! A new organisation added by a config update, with real orderers: its peer (material
//! generated, not started, its org on no channel) starts once the config block that adds the
//! org is ordered, pulls the chain from the orderers (which now let it read), endorses a
//! transaction together with Org1 under the channel's MAJORITY endorsement policy (now 2 of
//! 3 orgs), and every peer commits it VALID.

use crate::common;

use std::time::Duration;

use common::workload::*;
use common::*;
use peer::sdk::Gateway;
use shared_proto::msp::pem_to_der;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::config::Policy;
use shared_proto::pb::tx::TxValidationCode;

fn pem_file_der(path: &std::path::Path) -> Vec<u8> {
    pem_to_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn org_added_by_config_update_gets_a_peer_that_joins_endorses_and_commits() {
    let mut net = TestNet::start_with(Topology {
        outsider_org: true,
        outsider_peers: vec![true],
        hold_back: vec![(OUTSIDER_MSP, "peer0")],
        ..Default::default()
    })
    .unwrap();
    let newcomer = net.peer_index(OUTSIDER_MSP, "peer0");
    let rt = runtime();
    rt.block_on(async {
        // Org1's user, endorsed by the running peers of Org1 and Org2 (the gateway of the
        // whole network would also ask Org3's peer, which is not running yet).
        let running: Vec<String> = net
            .running_peers()
            .into_iter()
            .map(|i| net.peer(i).service_addr.to_string())
            .collect();
        let gw = Gateway::from_network_with_endorsers(
            &net.generated,
            "Org1MSP",
            "User1",
            CHANNEL,
            &running,
        )
        .unwrap();
        gw.submit("kv", "put", &[arg("before"), arg("org3")])
            .await
            .unwrap();

        // The update: Org3 defined like Org1 (its own CAs, its own name in its policies).
        let orderer = net.orderer(0);
        let current = orderer.registry.get(CHANNEL).unwrap().config();
        let mut next = current.config().clone();
        next.sequence += 1;
        let mut org3 = next
            .application_orgs
            .iter()
            .find(|o| o.msp_id == "Org1MSP")
            .unwrap()
            .clone();
        let org_dir = net.generated.dir.join("orgs").join(OUTSIDER_MSP);
        org3.msp_id = OUTSIDER_MSP.into();
        org3.root_certs = vec![pem_file_der(&org_dir.join("ca/cert.pem"))];
        org3.tls_root_certs = vec![pem_file_der(&org_dir.join("tlsca/cert.pem"))];
        org3.anchor_peers.clear();
        for p in &mut org3.policies {
            let rule = p
                .policy
                .as_ref()
                .map(|r| r.rule.replace("Org1MSP", OUTSIDER_MSP));
            p.policy = rule.map(|rule| Policy { rule });
        }
        next.application_orgs.push(org3);
        let admin = |msp: &str| {
            let u = net.generated.user(msp, "Admin").unwrap();
            SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
        };
        let (a, b) = (admin("OrdererMSP"), admin("Org1MSP"));
        let update = shared_proto::config_update::build_update(
            &next,
            &[&a, &b],
            &a,
            now_unix() as u64 * 1000,
        );
        orderer::broadcast::order(&orderer.registry, update)
            .await
            .unwrap();
        let height = net.orderer_height();
        net.wait_peers_at(height, Duration::from_secs(60))
            .await
            .unwrap();
    });
    // Org3 was on no channel when the material was generated: its peer joins this one with
    // the channel's genesis block and follows the chain to the config that admits it.
    let genesis = net.generated.channels[0].1.clone();
    net.peer_configs[newcomer]
        .channels
        .push(shared_proto::node_config::ChannelBootstrap {
            genesis_block: genesis,
        });
    eprintln!("config block ordered; starting Org3's peer");
    net.start_peer(newcomer).unwrap();
    rt.block_on(async {
        let height = net.orderer_height();
        net.wait_peers_at(height, Duration::from_secs(60))
            .await
            .unwrap();
        let config = net.peer(newcomer).registry.get(CHANNEL).unwrap().config();
        assert_eq!(config.sequence(), 1);
        assert!(config.application_orgs().iter().any(|o| o == OUTSIDER_MSP));

        eprintln!("Org3's peer caught up at sequence 1");
        // Org3's user, endorsed by Org3's and Org1's peers: 2 of 3 orgs.
        let endorsers = [
            net.peer(newcomer).service_addr.to_string(),
            net.peer(net.peer_index("Org1MSP", "peer0"))
                .service_addr
                .to_string(),
        ];
        let org3 = Gateway::from_network_with_endorsers(
            &net.generated,
            OUTSIDER_MSP,
            "User1",
            CHANNEL,
            &endorsers,
        )
        .unwrap();
        let r = org3
            .submit("kv", "put", &[arg("from"), arg("org3")])
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::Valid);
        eprintln!("Org3's transaction committed VALID");
        let height = net.orderer_height();
        net.wait_peers_at(height, Duration::from_secs(60))
            .await
            .unwrap();
        for i in net.running_peers() {
            let got = net
                .gateway_of_peer(i)
                .evaluate("kv", "get", &[arg("from")])
                .await
                .unwrap();
            assert_eq!(got, b"org3", "peer {i}");
        }
    });
}
