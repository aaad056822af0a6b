//! End to end: 3 orderers + 2 peers of different orgs, transactions through the SDK.
//! Proves both peers commit the same blocks with the same validation codes and reach the same
//! state hash; endorsement policy is enforced; forged blocks are refused; a peer whose runtime
//! is dropped under load restarts and converges with its twin. (That drop lets a blocking
//! commit finish, so it is no crash: the SIGKILL of a peer process in the middle of commits is
//! `chaos-tests/tests/peer_kill.rs`.)

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::workload::*;
use common::*;
use peer::sdk::Gateway;
use shared_proto::block;
use shared_proto::block::BlockError;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::tx::TxValidationCode;

#[test]
fn thousand_token_transfers_commit_identically_on_both_orgs_peers() {
    let net = TestNet::start().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let gw = Arc::new(net.gateway("Org1MSP"));
        mint(&gw, 20, 1_000_000).await;
        let codes: Vec<TxValidationCode> = transfers(gw.clone(), 1000, 20, 32)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let valid = codes
            .iter()
            .filter(|c| **c == TxValidationCode::Valid)
            .count();
        assert!(
            codes.iter().all(|c| matches!(
                c,
                TxValidationCode::Valid | TxValidationCode::MvccReadConflict
            )),
            "unexpected codes: {codes:?}"
        );
        assert!(valid > 0);
        assert_peers_agree(&net).await;
        // Transfers conserve the total supply.
        let mut total = 0u64;
        for a in 0..20 {
            let b = gw
                .evaluate("token", "balance", &[arg(format!("acct{a}"))])
                .await
                .unwrap();
            total += String::from_utf8(b).unwrap().parse::<u64>().unwrap();
        }
        assert_eq!(total, 20 * 1_000_000);
    });
}

#[test]
fn endorsement_policy_and_needs_both_orgs_one_endorsement_fails() {
    let net = TestNet::start().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let both = net.gateway("Org1MSP");
        let r = both
            .submit("token", "mint", &[arg("x"), arg(5)])
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::Valid);
        // Same user, but only Org1's peer endorses: AND('Org1MSP.peer','Org2MSP.peer') fails.
        let p0 = &net.generated.spec.peer_orgs[0].peers[0];
        let org1_only = Gateway::from_network_with_endorsers(
            &net.generated,
            "Org1MSP",
            "User1",
            CHANNEL,
            &[format!("{}:{}", p0.host, p0.port)],
        )
        .unwrap();
        let r = org1_only
            .submit("token", "mint", &[arg("y"), arg(5)])
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::EndorsementPolicyFailure);
        // An invalid tx changes nothing: y has no balance.
        let err = both.evaluate("token", "balance", &[arg("y")]).await;
        assert!(err.is_err() || String::from_utf8(err.unwrap()).unwrap() == "0");
        assert_peers_agree(&net).await;
    });
}

#[test]
fn forged_blocks_are_refused_and_not_committed() {
    let net = TestNet::start().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let gw = net.gateway("Org1MSP");
        gw.submit("kv", "put", &[arg("k"), arg("v")]).await.unwrap();
        net.wait_peers_at(net.orderer_height(), WAIT).await.unwrap();
    });
    let channel = net.peer(0).registry.get(CHANNEL).unwrap().clone();
    let ledger = channel.ledger.clone();
    let height = ledger.height();
    let prev = ledger.last_block_hash().unwrap().unwrap();
    // Signed by a peer, not an orderer: BlockValidation is not satisfied.
    let peer_id = net.peer(0).registry.identity.clone();
    let mut forged = block::new_block(height, prev.to_vec(), vec![b"forged".to_vec()], 0);
    block::sign_block(&mut forged, CHANNEL, &peer_id);
    let err = channel.committer.process(forged).unwrap_err();
    assert!(
        matches!(
            err,
            peer::commit::CommitError::Refused(BlockError::PolicyNotSatisfied { .. })
        ),
        "{err}"
    );
    // Signed by a real orderer, right number, wrong previous hash: the hash link refuses it.
    let orderer = {
        let c = &net.orderer_configs[0];
        SigningIdentity::from_pem_files(&c.msp_id, &c.identity.cert, &c.identity.key).unwrap()
    };
    let mut unlinked = block::new_block(height, vec![7; 32], vec![b"x".to_vec()], 0);
    block::sign_block(&mut unlinked, CHANNEL, &orderer);
    let err = channel.committer.process(unlinked.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            peer::commit::CommitError::Refused(BlockError::WrongPreviousHash { number })
                if number == height
        ),
        "{err}"
    );
    // Signed by a real orderer and linked, but numbered past the next block: the number
    // check refuses it.
    let mut linked = block::new_block(height + 1, prev.to_vec(), vec![b"x".to_vec()], 0);
    block::sign_block(&mut linked, CHANNEL, &orderer);
    let err = channel.committer.process(linked).unwrap_err();
    assert!(
        matches!(
            err,
            peer::commit::CommitError::Refused(BlockError::WrongNumber { .. })
        ),
        "a block numbered ahead is refused by the number check: {err}"
    );
    assert_eq!(
        ledger.height(),
        height,
        "a refused block changed the ledger"
    );
}

#[test]
fn peer_runtime_dropped_under_load_restarts_and_matches_its_twin() {
    let mut net = TestNet::start().unwrap();
    let rt = runtime();
    let gw = {
        let _in = rt.enter();
        Arc::new(net.gateway("Org1MSP"))
    };
    rt.block_on(mint(&gw, 10, 1_000_000));
    let load = rt.spawn(transfers(gw.clone(), 300, 10, 16));
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while net.ledger(1).height() < 8 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    net.kill_peer(1);
    // The load keeps going: Org2's peer is down, so its endorsements fail until it is back.
    net.start_peer(1).unwrap();
    let codes = rt.block_on(load);
    let _ = codes; // endorsement failures while the peer was down are expected
    rt.block_on(async {
        gw.submit("kv", "put", &[arg("after"), arg("restart")])
            .await
            .unwrap();
        assert_peers_agree(&net).await;
    });
}
