//! A running peer follows an orderer endpoint change from a config block, with real orderers
//! and no restart: the channel's `orderer_endpoints` are replaced by one new address (a
//! forwarder to the second orderer, counting bytes); once the config block is committed the
//! peer's Deliver traffic goes through the new address and blocks keep coming, while every
//! orderer keeps running (so the switch is the config block's doing, not a failure's).

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::workload::*;
use common::*;
use shared_proto::msp::SigningIdentity;

#[test]
fn peer_follows_an_orderer_endpoint_change_from_a_config_block_without_a_restart() {
    let net = TestNet::start().unwrap();
    let second = format!(
        "{}:{}",
        net.generated.spec.orderer_orgs[0].orderers[1].host,
        net.generated.spec.orderer_orgs[0].orderers[1].port
    );
    // Outside the test's runtime: the forwarders run (and are dropped) on their own.
    let proxies = forwarders(std::slice::from_ref(&second)).unwrap();
    let proxy = proxies.list[0].clone();
    let new_endpoint = proxy.listen.clone();
    let rt = runtime();
    rt.block_on(async {
        let gw = net.gateway("Org1MSP");
        mint(&gw, 2, 100).await;

        let orderer = net.orderer(0);
        let current = orderer.registry.get(CHANNEL).unwrap().config();
        let mut next = current.config().clone();
        next.sequence += 1;
        next.orderer.as_mut().unwrap().orderer_endpoints = vec![new_endpoint.clone()];
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
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in net.running_peers() {
            while net
                .peer(i)
                .registry
                .get(CHANNEL)
                .unwrap()
                .config()
                .sequence()
                < 1
            {
                assert!(
                    Instant::now() < deadline,
                    "peer {i} never took the config block"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Blocks after the config block reach the peers through the new endpoint only.
        let through_before = proxy.bytes();
        mint(&gw, 2, 100).await;
        let height = net.orderer_height();
        net.wait_peers_at(height, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            proxy.bytes() > through_before,
            "no Deliver traffic through the new endpoint {new_endpoint}"
        );
        assert!(net.orderers_running(), "an orderer stopped");
    });
}
